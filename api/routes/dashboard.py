"""The dashboard at `/`: server-rendered HTML and a little JavaScript, no build step."""

from __future__ import annotations

from functools import lru_cache
from html import escape
from pathlib import Path
from string import Template

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from shared.options import DEFAULT_SCALE, JobOptions, bounds, choices, number_type

router = APIRouter(include_in_schema=False)
HERE = Path(__file__).resolve().parent.parent
STATIC = {"app.js": "text/javascript", "report.js": "text/javascript", "app.css": "text/css"}


# The form's fields, all from the options model: the usual ones in sight, the rest folded.
MAIN_FIELDS = ("scale", "fps", "upscaler", "interpolator", "repeats", "output_preset", "audio")
MORE_FIELDS = tuple(
    n for n in JobOptions.model_fields if n not in MAIN_FIELDS and not n.startswith("webhook_")
)


def _input(name: str) -> str:
    """One option as a form control, with its choices or bounds and its help."""
    field = JobOptions.model_fields[name]
    listed = choices(name)
    if listed:
        default = "" if field.default is None else str(field.default)
        options = "" if field.default is not None else '<option value="">default</option>'
        options += "".join(
            f'<option value="{escape(v)}"{" selected" if v == default else ""}>{escape(v)}</option>'
            for v in listed
        )
        return f'<select name="{name}">{options}</select>'
    kind = number_type(name)
    placeholder = "default" if field.default is None else str(field.default)
    if name == "scale":
        placeholder = f"{DEFAULT_SCALE:g}"
    if kind is None:
        return f'<input name="{name}" placeholder="{escape(placeholder)}">'
    low, high = bounds(name)
    step = "1" if kind is int else "any"
    limits = "".join(f' {k}="{v}"' for k, v in (("min", low), ("max", high)) if v is not None)
    return (
        f'<input name="{name}" type="number" step="{step}"{limits} '
        f'placeholder="{escape(placeholder)}" inputmode="decimal">'
    )


def _label(name: str) -> str:
    field = JobOptions.model_fields[name]
    title = field.title or name.replace("_", " ").capitalize()
    return f'<label title="{escape(field.description or "")}">{title} {_input(name)}</label>'


@lru_cache(maxsize=1)
def _page() -> str:
    template = Template((HERE / "templates" / "index.html").read_text())
    return template.substitute(
        main_fields="\n".join(_label(n) for n in MAIN_FIELDS),
        more_fields="\n".join(_label(n) for n in MORE_FIELDS),
    )


@router.get("/", response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    """The status dashboard."""
    return HTMLResponse(_page())


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    """The dashboard's script and style sheet."""
    if name not in STATIC:
        from shared.errors import NotFound

        raise NotFound(f"no static file {name}")
    return FileResponse(HERE / "static" / name, media_type=STATIC[name])
