"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from api import errors
from api.routes import dashboard, events, health, jobs, metrics, uploads, webhooks
from shared.config import get_settings
from shared.logs import configure_logging


def create_app() -> FastAPI:
    """Build the API: routes, error handlers, logging."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    app = FastAPI(
        title="Lumière",
        version="0.1.0",
        summary="Restore old films: AI super-resolution, motion-aware frame interpolation, sound.",
    )
    errors.install(app)
    app.middleware("http")(metrics.record)
    for module in (health, metrics, jobs, events, uploads, webhooks, dashboard):
        app.include_router(module.router)
    return app
