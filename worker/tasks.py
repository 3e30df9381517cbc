"""Celery tasks: thin wrappers that receive IDs, re-read rows and call plain functions."""

from __future__ import annotations

import socket

from shared.celery_app import app
from worker import heartbeat  # noqa: F401  (connects the heartbeat to worker start/stop)


@app.task(name="lumiere.control.ping")
def ping() -> str:
    """Answer with this worker's host name (health checks and tests)."""
    return socket.gethostname()
