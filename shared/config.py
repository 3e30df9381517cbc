"""Settings: the one place that reads the environment (variables prefixed ``LUMIERE_``)."""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Past this many the database's connections, not the cores, run out first: more API
# processes than that are a choice to make with the pool sizes (docs/deploy.md).
DEFAULT_MAX_API_WORKERS = 4


class Settings(BaseSettings):
    """Every knob of a Lumière process; see the README's Configuration table."""

    model_config = SettingsConfigDict(env_prefix="LUMIERE_", extra="ignore")

    # Where `lumiere up` keeps its database, queue and object store, and where models live.
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8000
    # API processes (uvicorn workers) behind that port; 0: one per CPU core this machine or
    # container lets the API use, at most 4 (each holds up to pool + overflow database
    # connections). Where their Prometheus counters meet (default: a directory of their
    # own per launch, see cli/stack.py).
    api_workers: int = Field(0, ge=0)
    metrics_dir: Path | None = None

    # External services. Empty means "start a local one" (only `lumiere up` does that).
    database_url: str = ""
    # Connections each process keeps open, and how many more it may open at a peak (closed
    # once given back, so a steady load beyond the pool opens one per request). Together
    # they should exceed an API process's 40 request threads; an API of N processes may hold
    # N × (pool + overflow + read connections), which must fit the server's max_connections
    # (100 by default).
    database_pool_size: int = Field(20, ge=1)
    database_max_overflow: int = Field(30, ge=0)
    # Each API process's async connections for the reads clients poll (a job, the list):
    # held only while a query runs, so a few serve hundreds of clients.
    database_read_connections: int = Field(8, ge=1)
    redis_url: str = ""
    s3_endpoint_url: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str = "us-east-1"
    s3_bucket: str = "lumiere"
    # Base URL clients use to reach S3 (presigned URLs); defaults to s3_endpoint_url.
    s3_public_endpoint_url: str = ""

    # Uploads: the largest film accepted, the part size of multipart uploads to S3, and how
    # long presigned URLs (upload parts, result downloads) stay valid.
    max_upload_bytes: int = Field(50 * 1024**3, gt=0)
    upload_part_bytes: int = Field(16 * 1024**2, ge=5 * 1024**2)
    presign_expiry_s: int = Field(3600, ge=60, le=7 * 24 * 3600)
    # Requests per minute one API key may make (0 turns the limit off).
    rate_limit_per_minute: int = Field(600, ge=0)

    # Processing.
    models_dir: Path = Path("models")
    # Where workers keep inputs and chunk files while they work (default: data_dir/work).
    work_dir: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    chunk_seconds: float = Field(10.0, gt=0)
    worker_concurrency: int = Field(1, ge=1)
    # Running work (a chunk, a plan, a join) holds a lease renewed every lease/6 s; when a
    # worker dies (even by SIGKILL) its work is handed to another once the lease expires.
    # A chunk, plan or join whose worker died this many times fails the job with a reason.
    chunk_lease_s: float = Field(60.0, ge=3)
    chunk_max_attempts: int = Field(3, ge=1)

    # Webhooks: refuse URLs that resolve to private, loopback or link-local addresses (SSRF)
    # unless the operator allows them; per-attempt timeout and the number of retries.
    webhook_allow_private: bool = False
    webhook_timeout_s: float = Field(10.0, gt=0)
    webhook_max_attempts: int = Field(8, ge=1)
    webhook_retry_base_s: float = Field(5.0, gt=0)  # waits base, 2×base, 4×base… (max 1 h)

    # Client side (`lumiere submit`): which API to talk to, with which key.
    api_url: str = ""
    api_key: str = ""

    # Logging.
    log_level: str = "INFO"
    log_json: bool = False

    def resolved_api_workers(self) -> int:
        """How many API processes to run: ``api_workers``, or one per usable core (at most
        ``DEFAULT_MAX_API_WORKERS``)."""
        return self.api_workers or min(usable_cores(), DEFAULT_MAX_API_WORKERS)

    def resolved_models_dir(self) -> Path:
        """Models directory, relative paths taken from the current directory."""
        return self.models_dir.expanduser().resolve()


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPU cores this process may run on: its affinity, capped by a cgroup v2 CPU quota
    (a container limited to 2 CPUs on a 64-core host counts 2)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup.read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota: the affinity is the limit
    return cores


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
