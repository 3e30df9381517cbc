"""Celery tasks: thin wrappers that receive IDs and call the plain functions in worker.jobs.

Transient failures (the database, the broker or the store briefly unreachable) are retried
with backoff; the functions are idempotent, so a retry or a redelivery does no harm.
"""

from __future__ import annotations

import socket
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery import Task
from sqlalchemy.exc import OperationalError

from shared import queue
from shared.celery_app import app
from worker import (
    delivery,
    heartbeat,  # noqa: F401  (connects the heartbeat to worker start/stop)
    jobs,
)

TRANSIENT = (OperationalError, BotoCoreError, ClientError, ConnectionError, TimeoutError)
RETRY = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 20,
}


class JobTask(Task):
    """A job task whose final failure fails the job with the reason, never leaving it stuck."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        job_id = args[0]
        reason = f"internal error: {type(exc).__name__}: {exc}"
        if self.name == queue.CHUNK:
            jobs.fail_chunk(job_id, args[1], reason)
        else:
            jobs.fail_job(job_id, reason)


@app.task(name="lumiere.control.ping", ignore_result=False)
def ping() -> str:
    """Answer with this worker's host name (health checks and tests)."""
    return socket.gethostname()


# A pool process that dies inside a task (killed, or a crash on a damaged file) puts the
# message back (task_reject_on_worker_lost): the next try runs it again, and each task
# counts its tries, so one that kills the worker every time fails with a reason
# (worker.jobs.control_try, and a chunk's attempts) instead of killing worker after worker.
@app.task(name=queue.PLAN, base=JobTask, **RETRY)
def plan_job(job_id: str) -> None:
    """Probe a job's film and split it into chunk tasks."""
    jobs.plan_job(job_id)


@app.task(name=queue.CHUNK, base=JobTask, **RETRY)
def process_chunk(job_id: str, index: int) -> None:
    """Process one chunk of a job."""
    jobs.run_chunk(job_id, index)


@app.task(name=queue.JOIN, base=JobTask, **RETRY)
def join_job(job_id: str) -> None:
    """Join a job's chunks into the result."""
    jobs.join_job(job_id)


@app.task(name=queue.WEBHOOK, bind=True, max_retries=None)
def deliver_webhook(self: Task, event_id: str) -> str:
    """Deliver a webhook event; retried with exponential backoff on network errors and 5xx."""
    outcome = delivery.deliver(event_id)
    if outcome == delivery.Outcome.RETRY:
        raise self.retry(countdown=delivery.backoff(self.request.retries + 1))
    return outcome.value
