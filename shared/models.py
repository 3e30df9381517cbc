"""Database tables: API keys, jobs and their chunks.

A job goes ``queued → running → succeeded | failed | cancelled``; its chunks go
``pending → running → done | failed``. Every status change is a guarded
``UPDATE … WHERE status IN (…)`` so that two workers can never both win.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


def new_id() -> str:
    """A random, unguessable identifier (UUID4, 122 random bits)."""
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONB,
        datetime: DateTime(timezone=True),
    }


class JobStatus(enum.StrEnum):
    """Lifecycle of a job."""

    QUEUED = "queued"  # row written, planning task enqueued
    RUNNING = "running"  # planned; chunks are being processed or joined
    SUCCEEDED = "succeeded"  # result uploaded
    FAILED = "failed"  # ``error`` says why; retry re-runs only what failed
    CANCELLED = "cancelled"  # stopped by the user


class ChunkStatus(enum.StrEnum):
    """Lifecycle of one chunk of a job."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        values_callable=lambda e: [m.value for m in e],
        native_enum=False,
        length=16,
        validate_strings=True,
    )


class ApiKey(Base):
    """A client's API key; only its SHA-256 digest is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell keys apart
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    # Standard Webhooks signing secret ("whsec_" + base64), and the key's default webhook.
    webhook_secret: Mapped[str] = mapped_column(String(64))
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_events: Mapped[str | None] = mapped_column(String(256))


class UploadStatus(enum.StrEnum):
    """Lifecycle of a presigned multipart upload."""

    PENDING = "pending"  # parts are being PUT by the client
    COMPLETED = "completed"  # the object exists and can become a job's input
    USED = "used"  # a job took it as its input
    ABORTED = "aborted"


class Upload(Base):
    """A large file uploaded by the client straight to the store (presigned parts)."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    status: Mapped[UploadStatus] = mapped_column(
        _enum(UploadStatus, "upload_status"), default=UploadStatus.PENDING
    )
    key: Mapped[str] = mapped_column(String(512))
    s3_upload_id: Mapped[str] = mapped_column(String(1024))
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    part_size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class Job(Base):
    """One film to restore: its options, input, progress and result."""

    __tablename__ = "jobs"
    # A customer's jobs newest first (the list, its cursor), with or without a status filter:
    # read straight off an index, however long the history (migration 0003).
    __table_args__ = (
        Index("ix_jobs_api_key_id_created_at", "api_key_id", "created_at", "id"),
        Index("ix_jobs_api_key_id_status_created_at", "api_key_id", "status", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    status: Mapped[JobStatus] = mapped_column(
        _enum(JobStatus, "job_status"), index=True, default=JobStatus.QUEUED
    )
    stage: Mapped[str] = mapped_column(String(32), default="queued")
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    input_key: Mapped[str] = mapped_column(String(512))
    input_filename: Mapped[str] = mapped_column(String(255), default="")
    input_size: Mapped[int] = mapped_column(BigInteger, default=0)
    audio_key: Mapped[str | None] = mapped_column(String(512))
    probe: Mapped[dict[str, Any] | None]
    output_key: Mapped[str | None] = mapped_column(String(512))
    output_meta: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    # False when the job failed because of its film or options: running it again cannot help.
    retryable: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    chunks_total: Mapped[int] = mapped_column(Integer, default=0)
    frames_total: Mapped[int] = mapped_column(BigInteger, default=0)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Tries at the current control step (planning or joining) that ended without a word:
    # the worker died. Like a chunk's attempts, they stop a crash that repeats itself.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Webhook for this job (else the key's default), the events wanted, and the last
    # progress step announced (so each step is sent once, whichever worker crosses it).
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_events: Mapped[str | None] = mapped_column(String(256))
    webhook_progress_step: Mapped[float] = mapped_column(Float, default=0.1)
    progress_notified: Mapped[float] = mapped_column(Float, default=0.0)
    # A source frame and the same restored frame, for the dashboard's before/after.
    preview_keys: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    chunks: Mapped[list[Chunk]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="Chunk.index"
    )


class Chunk(Base):
    """A slice of a job's film that one worker processes independently."""

    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("job_id", "index"),
        # The chunks done in the last hour, which pace the ETAs (api/services/eta.py).
        Index("ix_chunks_status_finished_at", "status", "finished_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[ChunkStatus] = mapped_column(
        _enum(ChunkStatus, "chunk_status"), default=ChunkStatus.PENDING
    )
    plan: Mapped[dict[str, Any]] = mapped_column(default=dict)  # source range, output times
    frames_total: Mapped[int] = mapped_column(Integer, default=0)
    frames_done: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None]
    output_key: Mapped[str | None] = mapped_column(String(512))
    error: Mapped[str | None] = mapped_column(Text)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # seconds per stage
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    job: Mapped[Job] = relationship(back_populates="chunks")


class WebhookEvent(Base):
    """One event to deliver to a webhook URL; its ``id`` is the ``webhook-id`` header."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[dict[str, Any]]
    # pending → delivered | failed (after the last retry); redeliver sets it pending again.
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    attempts: Mapped[list[WebhookAttempt]] = relationship(
        back_populates="event", cascade="all, delete-orphan", order_by="WebhookAttempt.id"
    )


class WebhookAttempt(Base):
    """One try at delivering an event: what the receiver answered, or what went wrong."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True
    )
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    event: Mapped[WebhookEvent] = relationship(back_populates="attempts")
