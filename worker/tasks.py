"""Celery tasks: thin wrappers that receive IDs and call the plain functions in worker.jobs.

Transient failures (the database, the broker or the store briefly unreachable) are retried
with backoff; the functions are idempotent, so a retry or a redelivery does no harm.
"""

from __future__ import annotations

import socket
from typing import Any

from billiard.exceptions import WorkerLostError
from botocore.exceptions import BotoCoreError, ClientError
from celery import Task
from celery.signals import task_failure
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


@task_failure.connect
def _worker_lost(
    sender: Any = None,
    task_id: str | None = None,
    exception: Any = None,
    args: Any = None,
    **_: Any,
) -> None:
    """A pool process died inside planning or joining (a crash on a damaged file, or killed):
    fail the job with the reason instead of running the same crash again and again.

    Chunks are different: they are requeued and give up after their attempts
    (worker.jobs._exhausted), because a machine going away is their normal hazard."""
    name = getattr(sender, "name", None)
    if isinstance(exception, WorkerLostError) and name in (queue.PLAN, queue.JOIN) and args:
        stage = "planning" if name == queue.PLAN else "joining"
        jobs.fail_job(
            args[0],
            f"the worker process died while {stage} this film ({exception}); "
            "the file may be damaged",
        )


@app.task(name="lumiere.control.ping", ignore_result=False)
def ping() -> str:
    """Answer with this worker's host name (health checks and tests)."""
    return socket.gethostname()


@app.task(name=queue.PLAN, base=JobTask, reject_on_worker_lost=False, **RETRY)
def plan_job(job_id: str) -> None:
    """Probe a job's film and split it into chunk tasks."""
    jobs.plan_job(job_id)


@app.task(name=queue.CHUNK, base=JobTask, **RETRY)
def process_chunk(job_id: str, index: int) -> None:
    """Process one chunk of a job."""
    jobs.run_chunk(job_id, index)


@app.task(name=queue.JOIN, base=JobTask, reject_on_worker_lost=False, **RETRY)
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
