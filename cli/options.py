"""Click flags made from the options model (shared/options.py), so `lumiere process` and
`lumiere submit` offer what the API takes: the same names, choices, bounds and help."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from shared.options import JobOptions, Options, bounds, choices, number_type

F = TypeVar("F", bound=Callable[..., Any])

# What each command offers: a job's options (webhooks only make sense for the service), and
# how `process` runs them on this machine; `submit` also sends a soundtrack file.
PROCESS_FIELDS = tuple(n for n in Options.model_fields if not n.startswith("webhook_"))
SUBMIT_FIELDS = (*JobOptions.model_fields, "audio_file")


def flag(name: str, model: type[BaseModel] = Options) -> str:
    """The command-line flag of option ``name``: its name with dashes, unless it says else."""
    extra = model.model_fields[name].json_schema_extra
    custom = extra.get("flag") if isinstance(extra, dict) else None
    return f"--{custom or name.replace('_', '-')}"


def click_type(name: str, model: type[BaseModel] = Options) -> Any:
    """A Click type that refuses what the model refuses: a choice, or a number in bounds."""
    if name == "audio_file":
        return click.Path(exists=True, dir_okay=False)
    listed = choices(name, model)
    if listed:
        return click.Choice(listed)
    low, high = bounds(name, model)
    kind = number_type(name, model)
    if kind is int:
        return click.IntRange(low, high)
    if kind is float:
        return click.FloatRange(low, high)
    return str


def _help(field: FieldInfo) -> str:
    text = field.description or ""
    return f"{text} [default: {field.default}]" if field.default is not None else text


def option_flags(names: Sequence[str], model: type[BaseModel] = Options) -> Callable[[F], F]:
    """Decorate a command with a flag per option; each is passed under the option's name,
    ``None`` when not given (then the model's default applies)."""

    def decorate(command: F) -> F:
        for name in reversed(names):
            option = click.option(
                flag(name, model),
                name,
                type=click_type(name, model),
                default=None,
                help=_help(model.model_fields[name]),
            )
            command = option(command)
        return command

    return decorate


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The options a user gave, with the soundtrack's mode implied by a soundtrack file."""
    found = {k: v for k, v in values.items() if v is not None}
    if found.get("audio_file") and "audio" not in found:
        found["audio"] = "replace"
    return found
