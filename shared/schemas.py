"""API schemas: what clients send (``JobCreate``, ``UploadCreate``) and get (``JobPublic``…).

Option names are the same as ``lumiere process`` flags, in forms, JSON and the CLI alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.options import JobOptions


def public_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """A probe result as users may see it: without the worker's local file path (rows
    written before workers left it out still hold one)."""
    return {k: v for k, v in meta.items() if k != "path"}


class JobCreate(JobOptions):
    """JSON body of ``POST /v1/jobs`` for a film uploaded earlier through ``/v1/uploads``, or
    the film of an earlier job (a preview, say) restored again with these options."""

    upload_id: str | None = Field(None, description="A completed upload (see POST /v1/uploads).")
    audio_upload_id: str | None = Field(None, description="A completed upload of a soundtrack.")
    source_job: str | None = Field(
        None,
        description="Restore the film of this earlier job of yours (e.g. the whole film after "
        "a preview): its film, and its soundtrack when this job's audio uses one, are copied.",
    )

    @model_validator(mode="after")
    def _one_film(self) -> JobCreate:
        if (self.upload_id is None) == (self.source_job is None):
            raise ValueError("name the film: give upload_id or source_job (one of them)")
        return self


class JobPublic(BaseModel):
    """A job as clients see it."""

    id: str
    status: str
    stage: str
    progress: float = Field(description="0 to 1.")
    chunks_done: int
    chunks_total: int
    frames_done: int
    frames_total: int
    eta_seconds: float | None = Field(
        description="Seconds until the last chunk is done, the wait in the queue included; "
        "null until something has been measured to base it on."
    )
    queue_position: int | None = Field(
        description="1 when this job's chunks are next in the queue, 2 with one waiting job "
        "ahead…; null once its chunks have started, or when it is done."
    )
    timings: dict[str, Any]
    error: str | None
    retryable: bool = Field(
        description="Whether retrying can help: false when the film or its options caused the "
        "failure."
    )
    options: dict[str, Any]
    input: dict[str, Any]
    output: dict[str, Any] | None
    result_url: str | None
    has_preview: bool = Field(description="Whether /preview/before and /preview/after exist.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ReportMoment(BaseModel):
    """A made frame the interpolator was unsure of."""

    time: float = Field(description="Seconds from the film's start.")
    confidence: float = Field(
        description="Share of the picture (0-1) where the two source frames, warped to this "
        "moment, agree."
    )
    thumbnail: str = Field(description="A short-lived URL of the frame, as JPEG.")


class ReportCadence(BaseModel):
    """Repeats a transfer put in, and what the workers did with them."""

    patterns: list[str] = Field(description="Cadences found, e.g. 2:1 (16 fps at 24).")
    original_fps: list[float] = Field(description="The frame rates they came from.")
    repeats_dropped: list[float] = Field(description="Seconds of every repeat dropped.")


class ReportPoint(BaseModel):
    """One made frame's confidence."""

    time: float
    confidence: float


class ReportShot(BaseModel):
    """One shot of the film, as the workers measured it."""

    start: float = Field(description="Its first source frame's time (s).")
    end: float = Field(description="Its last source frame's time (s).")
    frames: int = Field(description="Source frames in it (repeats dropped not counted).")
    repeats_dropped: int
    flicker_before: float = Field(
        description="Frame-to-frame brightness flicker as decoded, before repair: 8-bit grey "
        "levels RMS of each frame's brightness against its neighbours' median; about 0 when "
        "steady or fading."
    )
    flicker: float = Field(description="The same, as upscaled (after repair).")
    confidence: float | None = Field(description="Mean confidence of its interpolated frames.")
    least_confidence: float | None


class JobReport(BaseModel):
    """What the workers measured of a film while restoring it (nothing in it is claimed)."""

    cuts: list[float] = Field(description="Seconds where a shot starts.")
    shots: list[ReportShot] = Field([], description="The film shot by shot.")
    cadence: ReportCadence
    stages: dict[str, Any] = Field(
        description="Per stage: seconds and frames per second; the upscaler's model and its "
        "files' sha256; the devices and encoders used."
    )
    confidence: list[ReportPoint] = Field(description="Every interpolated frame's confidence.")
    low_confidence: list[ReportMoment] = Field(
        description="The least confident moments (below 0.85, half a second apart), to check "
        "or re-run with interpolator=blend."
    )
    brightness: list[dict[str, float]] = Field(
        [],
        description="Each source frame's brightness (0-1, after repair: the median of its "
        "4×4 cells' means, so a thing passing barely moves it): flicker.",
    )
    repair: dict[str, Any] | None = Field(
        None, description="What repair found in the film (from a sample) and chose to do."
    )


class JobsPublic(BaseModel):
    """A page of jobs, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    data: list[JobPublic]
    next_cursor: str | None


class UploadCreate(BaseModel):
    """Start a presigned multipart upload of a large file straight to the store."""

    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=255)
    size: int = Field(gt=0, description="Exact size in bytes.")
    content_type: str = Field(
        "application/octet-stream",
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$",
        description="A MIME type such as video/mp4.",
    )


class UploadPart(BaseModel):
    """One part to PUT: its number and a presigned URL."""

    part_number: int
    url: str
    size: int


class UploadPublic(BaseModel):
    """An upload session; PUT each part to its URL, then POST the ETags to ``complete``."""

    id: str
    status: str
    filename: str
    size: int
    part_size: int
    parts: list[UploadPart]
    expires_at: datetime


class CompletedPart(BaseModel):
    """A part the client uploaded, with the ETag the store returned."""

    part_number: int = Field(ge=1, le=10000)
    etag: str = Field(min_length=1, max_length=200)


class UploadComplete(BaseModel):
    """Body of ``POST /v1/uploads/{id}/complete``."""

    model_config = ConfigDict(extra="forbid")

    parts: list[CompletedPart] = Field(min_length=1, max_length=10000)


class ApiKeyCreated(BaseModel):
    """A new API key; the secret is shown once."""

    id: str
    name: str
    key: str


class WebhookSettings(BaseModel):
    """The key's default webhook, used by jobs that name none of their own."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, max_length=2048)
    events: str | None = Field(None, max_length=256)


class WebhookSecret(BaseModel):
    """The key's signing secret (verify deliveries with any Standard Webhooks library)."""

    secret: str


class WebhookAttemptPublic(BaseModel):
    """One delivery attempt."""

    status_code: int | None
    latency_ms: float
    error: str | None
    created_at: datetime


class WebhookEventPublic(BaseModel):
    """An event of a job and every attempt to deliver it."""

    id: str
    type: str
    url: str
    status: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: list[WebhookAttemptPublic]
