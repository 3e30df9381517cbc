"""Dependency checks shared by the API's /healthz and /readyz and the worker's health command."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis
from sqlalchemy import text

from shared.config import Settings
from shared.db import get_engine
from shared.storage import Storage

WORKER_KEY_PREFIX = "lumiere:workers:"


def _timed(check: Callable[[], Any]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        detail = check()
    except Exception as err:  # a health check reports every failure instead of raising
        return {
            "ok": False,
            "error": f"{type(err).__name__}: {err}"[:300],
            "latency_ms": round((time.perf_counter() - start) * 1000, 1),
        }
    result: dict[str, Any] = {
        "ok": True,
        "latency_ms": round((time.perf_counter() - start) * 1000, 1),
    }
    if detail is not None:
        result.update(detail)
    return result


def redis_client(settings: Settings) -> redis.Redis:
    """A Redis client with short timeouts, for checks and small bookkeeping."""
    return redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)


def check_database(settings: Settings) -> dict[str, Any]:
    """Can we run a query?"""

    def check() -> None:
        with get_engine(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))

    return _timed(check)


def check_redis(settings: Settings) -> dict[str, Any]:
    """Does the broker answer PING?"""

    def check() -> None:
        if not redis_client(settings).ping():
            raise ConnectionError("PING was not answered")

    return _timed(check)


def check_storage(settings: Settings) -> dict[str, Any]:
    """Can we reach the bucket?"""
    return _timed(lambda: Storage(settings).ping())


def list_workers(settings: Settings) -> list[dict[str, Any]]:
    """Workers that sent a heartbeat recently (they expire from Redis on their own)."""
    client = redis_client(settings)
    workers = []
    for key in client.scan_iter(f"{WORKER_KEY_PREFIX}*"):
        raw = client.get(key)
        if raw:
            workers.append(json.loads(raw))
    return sorted(workers, key=lambda w: str(w.get("hostname")))


def dependencies(settings: Settings) -> dict[str, dict[str, Any]]:
    """The state of every dependency, each with ``ok`` and a latency or an error."""
    deps = {
        "database": check_database(settings),
        "redis": check_redis(settings),
        "storage": check_storage(settings),
    }
    workers: dict[str, Any] = {"ok": False, "count": 0, "workers": []}
    if deps["redis"]["ok"]:
        found = _timed(lambda: {"workers": list_workers(settings)})
        workers = {**found, "count": len(found.get("workers", []))}
        # A worker without its model weights cannot restore anything: it is reported, by name.
        broken = [
            w["hostname"]
            for w in workers.get("workers", [])
            if not w.get("models", {}).get("ok", True)
        ]
        workers["ok"] = bool(found["ok"] and workers["count"] > 0 and not broken)
        if broken:
            workers["error"] = f"workers without their model weights: {', '.join(broken)}"
    deps["workers"] = workers
    return deps
