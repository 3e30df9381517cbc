"""API schemas: what clients send (``JobCreate``, ``UploadCreate``) and get (``JobPublic``…).

Option names are the same as ``lumiere process`` flags, in forms, JSON and the CLI alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.errors import InvalidInput
from shared.options import parse_fps

# Names the API accepts without importing torch; tests/unit/test_registries.py checks that
# they match the worker's registries exactly.
UPSCALERS = (
    "lanczos",
    "faithful",
    "detailed",
    "waifu2x-photo",
    "waifu2x-anime",
    "waifu2x-cunet",
    "realcugan",
    "realesrgan-x4plus",
    "realesrgan-x4plus-anime",
    "realesr-animevideov3",
    "basicvsr",
    "basicvsr-vimeo90k-bi",
    "basicvsr-vimeo90k-bd",
    "basicvsr-reds",
)
INTERPOLATORS = ("motion", "dain", "blend", "repeat")
CODECS = ("h264", "h265", "ffv1", "prores")
CONTAINERS = ("mp4", "mkv", "mov")

MAX_WIDTH, MAX_HEIGHT = 7680, 4320


def public_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """A probe result as users may see it: without the worker's local file path (rows
    written before workers left it out still hold one)."""
    return {k: v for k, v in meta.items() if k != "path"}


class JobOptions(BaseModel):
    """How to restore a film; every field is optional and has a sensible default."""

    model_config = ConfigDict(extra="forbid")

    scale: int | None = Field(
        None, ge=1, le=8, description="Upscale factor (default 2 unless width/height given)."
    )
    width: int | None = Field(
        None, ge=16, le=MAX_WIDTH, description="Output width (alone: the aspect is kept)."
    )
    height: int | None = Field(
        None, ge=16, le=MAX_HEIGHT, description="Output height (alone: the aspect is kept)."
    )
    fps: str | None = Field(
        None,
        max_length=32,
        description="Target frame rate: 60, 59.94, 30000/1001… (default: the source's).",
        examples=["60"],
    )
    upscaler: str = Field("faithful", description=f"One of: {', '.join(UPSCALERS)}.")
    interpolator: str = Field("motion", description=f"One of: {', '.join(INTERPOLATORS)}.")
    fit: Literal["sar", "pad", "crop"] = Field(
        "sar",
        description="With width and height of another shape: keep the shape in the "
        "sample aspect (sar), letterbox (pad), or fill and trim (crop).",
    )
    denoise: int | None = Field(
        None, ge=-1, le=3, description="Upscaler denoise level, -1 (none) to 3 (strong)."
    )
    repeats: Literal["drop", "keep"] = Field(
        "drop",
        description="With fps: drop frames the transfer repeated on a cycle (a 16 fps film "
        "at 24 fps) and interpolate from the unique ones at their original times (drop), "
        "or keep every frame (keep).",
    )
    codec: Literal["h264", "h265", "ffv1", "prores"] = "h264"
    container: Literal["mp4", "mkv", "mov"] | None = Field(
        None, description="Output container (default: mp4, or mkv for ffv1)."
    )
    crf: int | None = Field(None, ge=0, le=51, description="Quality for h264/h265 (lower=better).")
    audio: Literal["keep", "replace", "add", "none"] = Field(
        "keep",
        description="keep the source's tracks, replace them with / add an uploaded "
        "soundtrack, or none.",
    )
    chunk_seconds: float | None = Field(None, ge=1, le=600, description="Chunk length.")
    webhook_url: str | None = Field(
        None, max_length=2048, description="Where to POST signed job events (http/https)."
    )
    webhook_events: str | None = Field(
        None,
        max_length=256,
        description="Comma-separated: job.started, job.progress, "
        "job.succeeded, job.failed, job.cancelled (default: all but job.progress).",
    )
    webhook_progress_step: float = Field(
        0.1,
        ge=0.01,
        le=1,
        description="job.progress is sent each time progress crosses a multiple of this.",
    )

    @field_validator("webhook_events")
    @classmethod
    def _events(cls, value: str | None) -> str | None:
        from shared.webhooks import parse_events

        if value is None or value == "":
            return None
        try:
            return ",".join(parse_events(value))
        except InvalidInput as err:
            raise ValueError(str(err)) from None

    @field_validator("webhook_url")
    @classmethod
    def _webhook_scheme(cls, value: str | None) -> str | None:
        if value and not value.lower().startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http:// or https:// URL")
        return value or None

    @field_validator("fps", mode="before")
    @classmethod
    def _fps(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        try:
            parse_fps(value)
        except InvalidInput as err:
            raise ValueError(str(err)) from None
        return str(value).strip()

    @field_validator("upscaler")
    @classmethod
    def _upscaler(cls, value: str) -> str:
        if value not in UPSCALERS:
            raise ValueError(f"unknown upscaler {value!r}; choose one of {', '.join(UPSCALERS)}")
        return value

    @field_validator("interpolator")
    @classmethod
    def _interpolator(cls, value: str) -> str:
        if value not in INTERPOLATORS:
            raise ValueError(
                f"unknown interpolator {value!r}; choose one of {', '.join(INTERPOLATORS)}"
            )
        return value

    @model_validator(mode="after")
    def _size(self) -> JobOptions:
        if self.scale is not None and (self.width is not None or self.height is not None):
            raise ValueError("give either scale or width/height, not both")
        if self.crf is not None and self.codec not in ("h264", "h265"):
            raise ValueError("crf applies to h264 and h265 only")
        if self.codec == "prores" and self.container == "mp4":
            raise ValueError("prores goes in mov or mkv, not mp4")
        if self.scale is None and self.width is None and self.height is None:
            self.scale = 2  # a restoration upscales unless told otherwise
        return self

    @property
    def output_container(self) -> str:
        """The container the result is written in."""
        if self.container:
            return self.container
        return {"ffv1": "mkv", "prores": "mov"}.get(self.codec, "mp4")


class JobCreate(JobOptions):
    """JSON body of ``POST /v1/jobs`` for a film uploaded earlier through ``/v1/uploads``."""

    upload_id: str = Field(description="A completed upload (see POST /v1/uploads).")
    audio_upload_id: str | None = Field(None, description="A completed upload of a soundtrack.")


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
    options: dict[str, Any]
    input: dict[str, Any]
    output: dict[str, Any] | None
    result_url: str | None
    has_preview: bool = Field(description="Whether /preview/before and /preview/after exist.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


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
