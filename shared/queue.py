"""Enqueueing work: the API and the workers send tasks by name (the API never imports torch)."""

from __future__ import annotations

from shared.celery_app import CHUNK_QUEUE, CONTROL_QUEUE, app

PLAN = "lumiere.control.plan_job"
CHUNK = "lumiere.chunk.process"
JOIN = "lumiere.control.join_job"
WEBHOOK = "lumiere.control.deliver_webhook"


def enqueue_plan(job_id: str) -> None:
    """Plan a job: probe its film, write its chunks, enqueue them."""
    app.send_task(PLAN, args=[job_id], queue=CONTROL_QUEUE)


def enqueue_chunk(job_id: str, index: int) -> None:
    """Process one chunk: upscale, interpolate, encode, upload."""
    app.send_task(CHUNK, args=[job_id, index], queue=CHUNK_QUEUE)


def enqueue_join(job_id: str) -> None:
    """Join a job's chunks, mux its sound and upload the result."""
    app.send_task(JOIN, args=[job_id], queue=CONTROL_QUEUE)


def enqueue_webhooks(event_ids: list[str | None]) -> None:
    """Deliver recorded webhook events (call after the transaction that recorded them)."""
    for event_id in event_ids:
        if event_id:
            app.send_task(WEBHOOK, args=[event_id], queue=CONTROL_QUEUE)
