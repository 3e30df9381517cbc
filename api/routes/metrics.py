"""/metrics: Prometheus counters of requests and gauges of jobs by status."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import func, select

from api.deps import SessionDep
from shared.models import Job

router = APIRouter(tags=["health"])
registry = CollectorRegistry()
REQUESTS = Counter(
    "lumiere_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
)
LATENCY = Histogram(
    "lumiere_http_request_seconds", "HTTP request latency", ["route"], registry=registry
)
JOBS = Gauge("lumiere_jobs", "Jobs by status", ["status"], registry=registry)


async def record(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Middleware: count and time every request by its route template (not its raw path)."""
    start = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    template = getattr(route, "path", "unmatched")
    REQUESTS.labels(request.method, template, str(response.status_code)).inc()
    LATENCY.labels(template).observe(time.perf_counter() - start)
    return response


@router.get("/metrics", include_in_schema=False)
def metrics(session: SessionDep) -> Response:
    """Prometheus text format."""
    for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
        JOBS.labels(status.value).set(count)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
