"""Dependency checks shared by the API's /healthz and /readyz and the worker's health command.

Checks run in parallel threads with one deadline (``CHECK_DEADLINE_S``): a frozen server is
reported down in time instead of hanging the caller. At most one check per server is ever
in flight: while one is still hung, later calls report that server down without starting
another, so a server that never answers cannot pile up threads.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import Any

import redis
from kombu.transport.redis import PRIORITY_STEPS, Channel
from sqlalchemy import text

from shared.celery_app import CHUNK_QUEUE, CONTROL_QUEUE
from shared.config import Settings
from shared.db import get_engine
from shared.storage import Storage

WORKER_KEY_PREFIX = "lumiere:workers:"
CHECK_DEADLINE_S = 2.0
NO_ANSWER = f"no answer within {CHECK_DEADLINE_S:g} s"


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


def check_workers(settings: Settings) -> dict[str, Any]:
    """Live workers: ok when one at least sends heartbeats and every one has its weights."""
    found = _timed(lambda: {"workers": list_workers(settings)})
    workers = found.get("workers", [])
    # A worker without its model weights cannot restore anything: it is reported, by name.
    broken = [str(w.get("hostname")) for w in workers if not w.get("models", {}).get("ok", True)]
    result = {**found, "workers": workers, "count": len(workers)}
    result["ok"] = bool(found["ok"] and workers and not broken)
    if broken:
        result["error"] = f"workers without their model weights: {', '.join(broken)}"
    return result


def queue_depths(settings: Settings) -> dict[str, int]:
    """Messages waiting in each Celery queue: kombu keeps a queue as a Redis list named after
    it, plus one list per priority level (``<name>\\x06\\x16<n>``)."""
    queues = (CONTROL_QUEUE, CHUNK_QUEUE)
    pipe = redis_client(settings).pipeline(transaction=False)
    for name in queues:
        for step in PRIORITY_STEPS:
            pipe.llen(f"{name}{Channel.sep}{step}" if step else name)
    lengths = iter(pipe.execute())
    return {name: sum(next(lengths) for _ in PRIORITY_STEPS) for name in queues}


CHECKS: dict[str, Callable[[Settings], dict[str, Any]]] = {
    "database": check_database,
    "redis": check_redis,
    "storage": check_storage,
    "workers": check_workers,
}

# The check of each server that is running now (at most one: see _start).
_in_flight: dict[tuple[str, str], tuple[float, threading.Thread, Future[dict[str, Any]]]] = {}
_lock = threading.Lock()


def _target(name: str, settings: Settings) -> str:
    """What a check talks to: a hung check only holds back later checks of the same server."""
    if name == "database":
        return settings.database_url
    if name == "storage":
        return f"{settings.s3_endpoint_url}/{settings.s3_bucket}"
    return settings.redis_url


def _run(name: str, settings: Settings) -> tuple[threading.Thread, Future[dict[str, Any]]]:
    """Start one check in a daemon thread (a hung one must not hold up the process's exit)."""
    future: Future[dict[str, Any]] = Future()

    def run() -> None:
        try:
            future.set_result(CHECKS[name](settings))
        except BaseException as err:  # handed to the caller, or the check would seem hung
            future.set_exception(err)

    thread = threading.Thread(target=run, name=f"health-{name}", daemon=True)
    thread.start()
    return thread, future


def _start(name: str, settings: Settings) -> tuple[float, Future[dict[str, Any]], bool]:
    """When the check started, its future, and whether it is a previous one still hung (then
    no new one is started: a server that never answers costs one thread, not one a call)."""
    key = (name, _target(name, settings))
    with _lock:
        previous = _in_flight.get(key)
        # After a fork the parent's threads are gone (is_alive() is False): a check starts.
        if previous is not None and previous[1].is_alive() and not previous[2].done():
            return previous[0], previous[2], True
        started = time.perf_counter()
        thread, future = _run(name, settings)
        _in_flight[key] = (started, thread, future)
        return started, future, False


def _outcome(future: Future[dict[str, Any]]) -> dict[str, Any]:
    """A finished check's result; an unexpected error is a failed check, not a crash."""
    err = future.exception()
    if err is None:
        return future.result()
    return {"ok": False, "error": f"{type(err).__name__}: {err}"[:300]}


def dependencies(settings: Settings) -> dict[str, dict[str, Any]]:
    """The state of every dependency, each with ``ok`` and a latency or an error, within
    ``CHECK_DEADLINE_S`` whatever the dependencies do: the checks run in parallel."""
    started = {name: _start(name, settings) for name in CHECKS}
    wait([future for _, future, hung in started.values() if not hung], timeout=CHECK_DEADLINE_S)
    deps: dict[str, dict[str, Any]] = {}
    for name, (since, future, hung) in started.items():
        if future.done():  # a hung one that has just answered says how things are now
            deps[name] = _outcome(future)
            continue
        waited = round((time.perf_counter() - since) * 1000, 1)
        deps[name] = {"ok": False, "error": NO_ANSWER, "latency_ms": waited}
        if hung:
            deps[name]["error"] += " (its previous check is still waiting)"
    deps["workers"] = {"count": 0, "workers": [], **deps["workers"]}
    return deps
