"""The dashboard at `/`: server-rendered HTML and a little JavaScript, no build step."""

from __future__ import annotations

from functools import lru_cache
from html import escape
from pathlib import Path
from string import Template

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from shared.schemas import INTERPOLATORS, UPSCALERS

router = APIRouter(include_in_schema=False)
HERE = Path(__file__).resolve().parent.parent
STATIC = {"app.js": "text/javascript", "app.css": "text/css"}


def _options(values: tuple[str, ...], default: str) -> str:
    return "".join(
        f'<option value="{escape(v)}"{" selected" if v == default else ""}>{escape(v)}</option>'
        for v in values
    )


@lru_cache(maxsize=1)
def _page() -> str:
    template = Template((HERE / "templates" / "index.html").read_text())
    return template.substitute(
        upscalers=_options(UPSCALERS, "faithful"),
        interpolators=_options(INTERPOLATORS, "motion"),
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
