"""Settings: the one place that reads the environment (variables prefixed ``LUMIERE_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of a Lumière process; see the README's Configuration table."""

    model_config = SettingsConfigDict(env_prefix="LUMIERE_", extra="ignore")

    # Where `lumiere up` keeps its database, queue and object store, and where models live.
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8000

    # External services. Empty means "start a local one" (only `lumiere up` does that).
    database_url: str = ""
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

    def resolved_models_dir(self) -> Path:
        """Models directory, relative paths taken from the current directory."""
        return self.models_dir.expanduser().resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
