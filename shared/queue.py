"""Enqueueing work: the API and the workers send tasks by name (the API never imports torch).

Sending happens after the database commit. If the broker is down at that moment the work is
not lost: the row is already written, and the workers' sweeper (worker.jobs.sweep_stale)
enqueues whatever has waited too long once Redis is back.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, cast

from kombu.exceptions import OperationalError as BrokerError
from redis import Redis
from redis.exceptions import RedisError

from shared.celery_app import CHUNK_QUEUE, CONTROL_QUEUE, FILM_PRIORITY, PREVIEW_PRIORITY, app
from shared.logs import get_logger

log = get_logger(__name__)

PLAN = "lumiere.control.plan_job"
CHUNK = "lumiere.chunk.process"
JOIN = "lumiere.control.join_job"
WEBHOOK = "lumiere.control.deliver_webhook"
Task = tuple[str, tuple[Any, ...]]  # (task name, args), as a message carries them


def _send(name: str, args: list[Any], queue: str, priority: int = FILM_PRIORITY) -> bool:
    """Send a task; ``False`` (logged) when the broker cannot be reached right now."""
    try:
        app.send_task(name, args=args, queue=queue, priority=priority)
    except (BrokerError, RedisError, ConnectionError, TimeoutError) as err:
        log.warning("enqueue.deferred", task=name, args=args, error=str(err)[:200])
        return False
    return True


def enqueue_plan(job_id: str) -> bool:
    """Plan a job: probe its film, write its chunks, enqueue them."""
    return _send(PLAN, [job_id], CONTROL_QUEUE)


def enqueue_chunk(job_id: str, index: int, preview: bool = False) -> bool:
    """Process one chunk: upscale, interpolate, encode, upload (a preview's first)."""
    priority = PREVIEW_PRIORITY if preview else FILM_PRIORITY
    return _send(CHUNK, [job_id, index], CHUNK_QUEUE, priority)


def enqueue_join(job_id: str) -> bool:
    """Join a job's chunks, mux its sound and upload the result."""
    return _send(JOIN, [job_id], CONTROL_QUEUE)


def send_again(task: Task) -> bool:
    """Send a task whose message was lost (see worker.jobs.reconcile)."""
    name, args = task
    return _send(name, list(args), CHUNK_QUEUE if name == CHUNK else CONTROL_QUEUE)


def enqueue_webhooks(event_ids: list[str | None]) -> None:
    """Deliver recorded webhook events (call after the transaction that recorded them)."""
    for event_id in event_ids:
        if event_id:
            _send(WEBHOOK, [event_id], CONTROL_QUEUE)


# What the broker holds, read from Redis the way kombu's Redis transport stores it: each
# queue is a list (priority levels as "<queue>\x06\x16<n>"), and messages delivered to a
# worker but not yet acknowledged sit in the "unacked" hash, timed in "unacked_index".
QUEUES = (CONTROL_QUEUE, CHUNK_QUEUE)
PRIORITY_SEP = "\x06\x16"
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"


def task_of(message: Any) -> Task | None:
    """The task name and arguments of a kombu message (a decoded dict); ``None`` if unreadable."""
    try:
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return str(message["headers"]["task"]), tuple(json.loads(body)[0])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def queue_keys(client: Redis) -> list[str]:
    """The Redis lists that hold Lumière's queued messages, priority levels included."""
    keys = list(QUEUES)
    for name in QUEUES:
        keys += [k.decode() for k in client.scan_iter(f"{name}{PRIORITY_SEP}*")]
    return keys


def held_tasks(client: Redis, fresh_s: float) -> set[Task]:
    """Tasks someone holds: waiting in a queue, or delivered to a worker less than
    ``fresh_s`` ago (an older delivery may belong to a worker that died)."""
    messages = [json.loads(raw) for key in queue_keys(client) for raw in client.lrange(key, 0, -1)]
    recent = cast(list[bytes], client.zrangebyscore(UNACKED_INDEX, time.time() - fresh_s, "+inf"))
    for raw in client.hmget(UNACKED, recent) if recent else []:
        if raw:  # [message, exchange, routing key]
            messages.append(json.loads(raw)[0])
    return {task for task in map(task_of, messages) if task}


def declare_queues() -> None:
    """Declare the queues and their bindings again. Redis keeps bindings as keys, so a broker
    restarted without its data drops every message sent to it until they are back."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for declared in app.conf.task_queues:
            declared.bind(channel).declare()
