"""The Celery application shared by the API (which only sends) and the workers.

Chunk work is long and idempotent: late acks, prefetch 1, and a Redis visibility timeout
longer than the longest chunk, so a worker that dies mid-chunk gives it back.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from shared.config import Settings, get_settings

CONTROL_QUEUE = "control"  # planning, joining, webhooks: light, CPU
CHUNK_QUEUE = "chunks"  # upscale + interpolate + encode: heavy, GPU when present
# Message priorities (Redis: 0 is served first). A preview's chunks go ahead of the films'
# waiting in the same queue: someone is watching for them.
PREVIEW_PRIORITY = 0
FILM_PRIORITY = 6


def create_celery(settings: Settings | None = None) -> Celery:
    """A Celery app on the configured Redis, with Lumière's routing and reliability settings."""
    s = settings or get_settings()
    app = Celery(
        "lumiere", broker=s.redis_url or None, backend=s.redis_url or None, include=["worker.tasks"]
    )
    app.conf.update(
        task_queues=[Queue(CONTROL_QUEUE), Queue(CHUNK_QUEUE)],
        task_default_queue=CONTROL_QUEUE,
        task_routes={"lumiere.chunk.*": {"queue": CHUNK_QUEUE}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_priority=FILM_PRIORITY,
        task_track_started=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=24 * 3600,
        # Progress and results live in Postgres; Redis only carries messages.
        task_ignore_result=True,
        # Fail fast when the broker is down: the sweeper re-sends what could not be sent.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 6 * 3600},
        result_backend_transport_options={"retry_policy": {"timeout": 5.0}},
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
    )
    return app


app = create_celery()
