"""Worker heartbeats in Redis: who is up, on which device, with which models.

The API's /healthz lists them; a key expires on its own when its worker dies.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

from celery.signals import worker_process_init, worker_ready, worker_shutdown

from shared.config import get_settings
from shared.db import forget_inherited_connections
from shared.health import WORKER_KEY_PREFIX, redis_client
from shared.logs import get_logger

log = get_logger(__name__)

INTERVAL_S = 10
TTL_S = 30
CLEANUP_EVERY_S = 3600
_stop = threading.Event()


def describe_worker(hostname: str) -> dict[str, Any]:
    """What this worker tells the world about itself."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "hostname": hostname,
        "models": models_state(),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "device": "cuda" if cuda and get_settings().device != "cpu" else "cpu",
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "torch": torch.__version__,
        "started_at": datetime.now(UTC).isoformat(),
    }


def models_state() -> dict[str, Any]:
    """Whether the default networks' weights are installed and intact on this worker."""
    from shared.errors import ModelUnavailable
    from worker.stages.upscale import check_models

    try:
        check_models(get_settings().resolved_models_dir())
    except ModelUnavailable as err:
        log.error("models.unavailable", error=str(err))
        return {"ok": False, "error": str(err)}
    return {"ok": True, "error": None}


def _beat(hostname: str) -> None:
    from worker.jobs import abort_abandoned_uploads, sweep_stale

    settings = get_settings()
    info = describe_worker(hostname)
    key = f"{WORKER_KEY_PREFIX}{hostname}"
    # Sweep for work whose worker vanished (worker.jobs.sweep_stale) a few times per lease.
    interval = min(INTERVAL_S, settings.chunk_lease_s / 3)
    next_cleanup = time.monotonic() + CLEANUP_EVERY_S
    while not _stop.is_set():
        try:
            redis_client(settings).set(key, json.dumps(info), ex=TTL_S)
        except Exception as err:  # Redis down: keep beating, the key comes back with it
            log.warning("heartbeat.failed", error=str(err))
        try:
            sweep_stale()
            if time.monotonic() >= next_cleanup:
                next_cleanup = time.monotonic() + CLEANUP_EVERY_S
                abort_abandoned_uploads()
        except Exception as err:  # database or store down: the next sweep will do it
            log.warning("sweep.failed", error=str(err))
        _stop.wait(interval)


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # The main process sweeps with its own connections; a pool child must not share them.
    forget_inherited_connections()


@worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    hostname = getattr(sender, "hostname", socket.gethostname())
    threading.Thread(target=_beat, args=(hostname,), name="heartbeat", daemon=True).start()


@worker_shutdown.connect
def _stop_beating(sender: Any = None, **_: Any) -> None:
    _stop.set()
    hostname = getattr(sender, "hostname", None)
    if hostname:
        try:
            redis_client(get_settings()).delete(f"{WORKER_KEY_PREFIX}{hostname}")
        except Exception as err:  # shutting down anyway; the key will expire
            log.warning("heartbeat.cleanup_failed", error=str(err))
