"""/metrics: Prometheus counters of requests and responses, gauges of the work in the system.

Counters (``registry``) count every process of the API together: launched by `lumiere api`
or `lumiere up`, each process keeps them in files of one directory (prometheus_client's
multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``), and a scrape, whichever process answers it,
adds them all up; a process that was restarted keeps its counts there. Started any other way
(a bare ``uvicorn``), they are the answering process's own. Gauges (jobs, chunks, queues,
workers) are read afresh at each scrape into a registry of their own, so a status nobody is
in any more reads 0 and a gauge that could not be read (Redis down) is left out, not stale.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import SessionDep, SettingsDep
from shared.config import Settings
from shared.health import list_workers, queue_depths
from shared.jobs import ACTIVE
from shared.logs import get_logger
from shared.models import Chunk, ChunkStatus, Job, JobStatus

log = get_logger(__name__)

router = APIRouter(tags=["health"])
# prometheus_client chose where values live when it was imported: in files shared by the
# API's processes when the launcher named a directory, else in this process's memory.
SHARED = values.ValueClass is not values.MutexValue
registry = CollectorRegistry()
REQUESTS = Counter(
    "lumiere_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
)
RESPONSES = Counter(
    "lumiere_http_responses", "HTTP responses by status class", ["class"], registry=registry
)
LATENCY = Histogram(
    "lumiere_http_request_seconds", "HTTP request latency", ["route"], registry=registry
)
CLASSES = ("2xx", "3xx", "4xx", "5xx")
for _class in CLASSES:  # every class is reported from the start, 5xx at 0 included
    RESPONSES.labels(_class)
# Methods are counted by name only when HTTP defines them: any other token a client sends
# would otherwise make one more time series each.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe(scope: Scope, status: int, seconds: float) -> None:
    """Count one response by its route template (not its raw path) and time it."""
    template = getattr(scope.get("route"), "path", "unmatched")
    method = scope["method"] if scope["method"] in METHODS else "other"
    REQUESTS.labels(method, template, str(status)).inc()
    RESPONSES.labels(f"{status // 100}xx").inc()
    LATENCY.labels(template).observe(seconds)


class Recorder:
    """Pure-ASGI middleware: count every response when it starts (the time to its headers).

    An exception that escapes the app is counted as the 500 it becomes: the catch-all
    handler answers it further out (Starlette's ServerErrorMiddleware), past this one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                observe(scope, message["status"], time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            if not started:
                observe(scope, 500, time.perf_counter() - start)
            raise


def _status_gauge(
    fresh: CollectorRegistry,
    name: str,
    doc: str,
    statuses: type[StrEnum],
    rows: Iterable[tuple[Any, int]],
) -> None:
    """A gauge with one series per status, 0 for a status that has no row."""
    counts = {str(status): count for status, count in rows}
    gauge = Gauge(name, doc, ["status"], registry=fresh)
    for status in statuses:
        gauge.labels(status.value).set(counts.get(status.value, 0))


def _work_gauges(fresh: CollectorRegistry, session: Session) -> None:
    """Jobs by status, and chunks by status of the jobs still queued or running."""
    jobs = session.execute(select(Job.status, func.count()).group_by(Job.status)).tuples()
    _status_gauge(fresh, "lumiere_jobs", "Jobs by status", JobStatus, jobs)
    chunks = (
        select(Chunk.status, func.count())
        .join(Job, Job.id == Chunk.job_id)
        .where(Job.status.in_(ACTIVE))
        .group_by(Chunk.status)
    )
    _status_gauge(
        fresh,
        "lumiere_chunks",
        "Chunks of queued or running jobs by status",
        ChunkStatus,
        session.execute(chunks).tuples(),
    )


def _broker_gauges(fresh: CollectorRegistry, settings: Settings) -> None:
    """Messages waiting per Celery queue and live workers; left out while Redis is down."""
    try:
        depths = queue_depths(settings)
        workers = len(list_workers(settings))
    except RedisError as err:
        log.warning("metrics.redis_unavailable", error=str(err)[:200])
        return
    queued = Gauge(
        "lumiere_queue_messages", "Messages waiting in a Celery queue", ["queue"], registry=fresh
    )
    for queue, depth in depths.items():
        queued.labels(queue).set(depth)
    alive = Gauge("lumiere_workers_alive", "Workers with a live heartbeat", registry=fresh)
    alive.set(workers)


@router.get("/metrics", include_in_schema=False)
def metrics(session: SessionDep, settings: SettingsDep) -> Response:
    """Prometheus text format."""
    fresh = CollectorRegistry()
    _work_gauges(fresh, session)
    _broker_gauges(fresh, settings)
    return Response(counters() + generate_latest(fresh), media_type=CONTENT_TYPE_LATEST)


def counters() -> bytes:
    """The request counters of every API process (of this one, outside multiprocess mode)."""
    if not SHARED:
        return generate_latest(registry)
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)
    return generate_latest(merged)
