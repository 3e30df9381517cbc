"""One options model, offered alike everywhere: the API's schema, `lumiere process`,
`lumiere submit` and the dashboard's form take the same options with the same choices and
bounds, because all of them are made from `shared.options`."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import click
import pytest

from api.main import create_app
from api.routes.dashboard import _page
from cli.process import process
from cli.submit import submit
from shared.options import JobOptions, Options, bounds, choices, number_type

SERVICE_ONLY = {n for n in JobOptions.model_fields if n.startswith("webhook_")}


def expected(name: str, model: type = JobOptions) -> tuple[Any, ...]:
    """What every surface must say of an option: its choices, or its kind and bounds."""
    listed = choices(name, model)
    if listed:
        return ("choice", listed)
    return ("number", *bounds(name, model)) if number_type(name, model) else ("text",)


def click_offer(command: click.Command) -> dict[str, tuple[Any, ...]]:
    offer: dict[str, tuple[Any, ...]] = {}
    for param in command.params:
        kind = param.type
        if isinstance(kind, click.Choice):
            offer[str(param.name)] = ("choice", tuple(kind.choices))
        elif isinstance(kind, click.IntRange | click.FloatRange):
            offer[str(param.name)] = ("number", kind.min, kind.max)
        else:
            offer[str(param.name)] = ("text",)
    return offer


class FormFields(HTMLParser):
    """The named controls of the dashboard's form, with their choices or bounds."""

    def __init__(self) -> None:
        super().__init__()
        self.offer: dict[str, tuple[Any, ...]] = {}
        self.select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        name = a.get("name")
        if tag == "select" and name:
            self.select = name
            self.offer[name] = ("choice", ())
        elif tag == "option" and self.select and a.get("value"):
            kind, values = self.offer[self.select]
            self.offer[self.select] = (kind, (*values, a["value"]))
        elif tag == "input" and name and a.get("type") == "number":
            low, high = (float(a[k]) if a.get(k) else None for k in ("min", "max"))
            self.offer[name] = ("number", low, high)
        elif tag == "input" and name and a.get("type") != "file":
            self.offer[name] = ("text",)

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self.select = None


def test_the_api_schema_is_the_model() -> None:
    body = create_app().openapi()["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    form = body["multipart/form-data"]["schema"]["properties"]
    as_json = body["application/json"]["schema"]["properties"]
    assert set(form) == {*JobOptions.model_fields, "file", "audio"}
    assert set(as_json) == {*JobOptions.model_fields, "upload_id", "audio_upload_id", "source_job"}
    for name in JobOptions.model_fields:
        prop = form[name]
        assert prop == as_json[name], name
        kinds = [prop, *prop.get("anyOf", [])]
        numbers = [k for k in kinds if k.get("type") in ("integer", "number")]
        if numbers:
            assert (numbers[0].get("minimum"), numbers[0].get("maximum")) == bounds(name), name
        if choices(name):
            listed = prop.get("enum") or next(
                (p["enum"] for p in prop.get("anyOf", []) if "enum" in p), None
            )
            assert tuple(listed) == choices(name), name


@pytest.mark.parametrize(
    ("command", "offered", "model"),
    [
        (process, set(Options.model_fields) - SERVICE_ONLY, Options),
        (submit, {*JobOptions.model_fields, "audio_file"}, Options),
    ],
    ids=["process", "submit"],
)
def test_both_clis_offer_the_options_with_the_same_bounds(
    command: click.Command, offered: set[str], model: type
) -> None:
    offer = click_offer(command)
    assert offered <= set(offer), offered - set(offer)
    for name in offered - {"audio_file"}:
        assert offer[name] == expected(name, model), name


def test_the_dashboard_form_offers_the_options_with_the_same_bounds() -> None:
    form = FormFields()
    form.feed(_page())
    offered = set(JobOptions.model_fields) - SERVICE_ONLY
    assert set(form.offer) - {"file"} == offered
    for name in offered:
        want = expected(name)
        got = form.offer[name]
        if want[0] == "number":
            want = ("number", *(None if v is None else float(v) for v in want[1:]))
        assert got == want, name
