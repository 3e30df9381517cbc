"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from api import errors
from api.reads import ReadPool
from api.routes import dashboard, events, health, jobs, metrics, uploads, webhooks
from shared.config import get_settings
from shared.logs import configure_logging


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """This process's async connections for the polled reads, open while it serves."""
    settings = get_settings()
    if not settings.database_url:
        raise RuntimeError("LUMIERE_DATABASE_URL is not set (`lumiere up` sets it for you)")
    app.state.reads = ReadPool(settings.database_url, settings.database_read_connections)
    await app.state.reads.open()
    try:
        yield
    finally:
        await app.state.reads.close()


def create_app() -> FastAPI:
    """Build the API: routes, error handlers, logging."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    # /docs with its scripts served from the package, not a CDN. No /redoc: the ReDoc that
    # package bundles cannot read OpenAPI 3.1 ("Something went wrong" in a browser test).
    app = FastAPIOffline(
        # No OpenTelemetry here (/metrics is Prometheus): FastAPI would otherwise look for
        # tracer, meter and logger providers in the environment on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        redoc_url=None,
        lifespan=lifespan,
        title="Lumière",
        version="0.1.0",
        summary="Restore old films: AI super-resolution, motion-aware frame interpolation, sound.",
    )
    errors.install(app)
    # The last added runs first: every response is counted, the guard's refusals and the
    # catch-all's 500s included (that handler answers outside every middleware).
    app.add_middleware(errors.HeadGuard)
    app.add_middleware(metrics.Recorder)
    for module in (health, metrics, jobs, events, uploads, webhooks, dashboard):
        app.include_router(module.router)
    return app
