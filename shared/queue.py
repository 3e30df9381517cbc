"""Enqueueing work: the API and the workers send tasks by name (the API never imports torch).

Sending happens after the database commit. If the broker is down at that moment the work is
not lost: the row is already written, and the workers' sweeper (worker.jobs.sweep_stale)
enqueues whatever has waited too long once Redis is back.
"""

from __future__ import annotations

from typing import Any

from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from shared.celery_app import CHUNK_QUEUE, CONTROL_QUEUE, app
from shared.logs import get_logger

log = get_logger(__name__)

PLAN = "lumiere.control.plan_job"
CHUNK = "lumiere.chunk.process"
JOIN = "lumiere.control.join_job"
WEBHOOK = "lumiere.control.deliver_webhook"


def _send(name: str, args: list[Any], queue: str) -> bool:
    """Send a task; ``False`` (logged) when the broker cannot be reached right now."""
    try:
        app.send_task(name, args=args, queue=queue)
    except (BrokerError, RedisError, ConnectionError, TimeoutError) as err:
        log.warning("enqueue.deferred", task=name, args=args, error=str(err)[:200])
        return False
    return True


def enqueue_plan(job_id: str) -> bool:
    """Plan a job: probe its film, write its chunks, enqueue them."""
    return _send(PLAN, [job_id], CONTROL_QUEUE)


def enqueue_chunk(job_id: str, index: int) -> bool:
    """Process one chunk: upscale, interpolate, encode, upload."""
    return _send(CHUNK, [job_id, index], CHUNK_QUEUE)


def enqueue_join(job_id: str) -> bool:
    """Join a job's chunks, mux its sound and upload the result."""
    return _send(JOIN, [job_id], CONTROL_QUEUE)


def enqueue_webhooks(event_ids: list[str | None]) -> None:
    """Deliver recorded webhook events (call after the transaction that recorded them)."""
    for event_id in event_ids:
        if event_id:
            _send(WEBHOOK, [event_id], CONTROL_QUEUE)
