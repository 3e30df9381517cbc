"""What a job can ask for — the one definition of every option: its name, type, bounds,
default and help. Torch-free: the API's schema (and so its OpenAPI and error messages), the
dashboard's form, the flags of `lumiere process` and `lumiere submit`, and the workers'
options all come from `JobOptions` (tests/unit/test_options.py checks that they agree).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Literal, get_args, get_origin

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.errors import InvalidInput

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

MAX_WIDTH, MAX_HEIGHT = 7680, 4320
ENCODER_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
# A restoration upscales unless told a size.
DEFAULT_SCALE = 2.0
SIZES = ("scale", "width", "height")

# Decimal spellings of the NTSC-family rates mean n*1000/1001, as every tool reads them.
_NTSC_TOLERANCE = Fraction(1, 100)


def parse_fps(text: str | float | Fraction) -> Fraction:
    """Read a frame rate: ``60``, ``59.94`` (= 60000/1001), ``30000/1001``, ``23.976``…"""
    try:
        rate = Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        raise InvalidInput(f"not a frame rate: {text!r} (try 60, 59.94 or 30000/1001)") from None
    if not 1 <= rate <= 1000:
        raise InvalidInput(f"frame rate {text} is out of range (1 to 1000 fps)")
    if rate.denominator != 1 and "/" not in str(text):
        ntsc = Fraction(round(rate * Fraction(1001, 1000)) * 1000, 1001)
        if abs(ntsc - rate) < _NTSC_TOLERANCE:
            return ntsc
    return rate


class JobOptions(BaseModel):
    """How to restore a film; every field is optional and has a sensible default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: float | None = Field(
        None,
        ge=0.25,
        le=8,
        description=f"Resize by this factor (default {DEFAULT_SCALE:g} unless a width or height "
        "is given).",
    )
    width: int | None = Field(
        None, ge=16, le=MAX_WIDTH, description="Output width (alone: the aspect is kept)."
    )
    height: int | None = Field(
        None, ge=16, le=MAX_HEIGHT, description="Output height (alone: the aspect is kept)."
    )
    fps: str | None = Field(
        None,
        title="Frame rate",
        max_length=32,
        description="Target frame rate: 60, 59.94, 30000/1001… (default: the source's timing).",
        examples=["60"],
    )
    upscaler: str = Field(
        "faithful",
        description="faithful (waifu2x photo), detailed (Real-ESRGAN x4plus), basicvsr (video "
        "SR from neighbouring frames; best on a GPU), another model, or lanczos (classical).",
        json_schema_extra={"enum": list(UPSCALERS)},
    )
    interpolator: str = Field(
        "motion",
        description="motion (flow + occlusion-aware splatting; dain is its alias), or blend / "
        "repeat (classical baselines).",
        json_schema_extra={"enum": list(INTERPOLATORS)},
    )
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
        title="Repeated frames",
        description="With fps: drop frames the transfer repeated on a cycle (a 16 fps film "
        "at 24 fps) and interpolate from the unique ones at their original times (drop), "
        "or keep every frame (keep).",
    )
    codec: Literal["h264", "h265", "ffv1", "prores"] = Field(
        "h264", description="Video codec of the result (ffv1: lossless, keeps the bit depth)."
    )
    container: Literal["mp4", "mkv", "mov"] | None = Field(
        None, description="Output container (default: mp4, mkv for ffv1, mov for prores)."
    )
    crf: int | None = Field(
        None, ge=0, le=51, description="Quality for h264/h265 (lower is better; default 18/20)."
    )
    audio: Literal["keep", "replace", "add", "none"] = Field(
        "keep",
        title="Sound",
        description="keep the source's tracks, replace them with / add a soundtrack, or none.",
        json_schema_extra={"flag": "audio-mode"},  # `--audio FILE` is the soundtrack itself
    )
    chunk_seconds: float | None = Field(
        None, ge=1, le=600, description="Length of the chunks workers share (default: settings)."
    )
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

    @model_validator(mode="before")
    @classmethod
    def _default_scale(cls, values: Any) -> Any:
        if isinstance(values, dict) and all(values.get(k) in (None, "") for k in SIZES):
            return {**values, "scale": DEFAULT_SCALE}
        return values

    @model_validator(mode="after")
    def _size(self) -> JobOptions:
        if self.scale is not None and (self.width is not None or self.height is not None):
            raise ValueError("give either scale or width/height, not both")
        if self.crf is not None and self.codec not in ("h264", "h265"):
            raise ValueError("crf applies to h264 and h265 only")
        if self.codec == "prores" and self.container == "mp4":
            raise ValueError("prores goes in mov or mkv, not mp4")
        return self

    @property
    def output_container(self) -> str:
        """The container the result is written in."""
        if self.container:
            return self.container
        return {"ffv1": "mkv", "prores": "mov"}.get(self.codec, "mp4")


def bounds(name: str, model: type[BaseModel] = JobOptions) -> tuple[Any, Any]:
    """The lowest and highest value option ``name`` takes (``None`` where unbounded)."""
    metadata = model.model_fields[name].metadata
    low = next((m.ge for m in metadata if isinstance(m, Ge)), None)
    high = next((m.le for m in metadata if isinstance(m, Le)), None)
    return low, high


def number_type(name: str, model: type[BaseModel] = JobOptions) -> type | None:
    """``int`` or ``float`` for a numeric option, else ``None``."""
    annotation = model.model_fields[name].annotation
    return next((k for k in (annotation, *get_args(annotation)) if k in (int, float)), None)


def choices(name: str, model: type[BaseModel] = JobOptions) -> tuple[str, ...] | None:
    """The values option ``name`` takes, when it is one of a list (a Literal or a registry)."""
    field = model.model_fields[name]
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "enum" in extra:
        return tuple(str(v) for v in extra["enum"])  # type: ignore[union-attr]
    for arg in (field.annotation, *get_args(field.annotation)):
        if get_origin(arg) is Literal:
            return tuple(str(v) for v in get_args(arg))
    return None


class Options(JobOptions):
    """A job's options plus how a worker (or `lumiere process`) runs them; these extra fields
    never come from the API. What the pipeline receives."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    preset: str = Field(
        "medium",
        description="x264/x265 speed preset (slower is smaller at the same quality).",
        json_schema_extra={"enum": list(ENCODER_PRESETS)},
    )
    batch: int = Field(
        4, ge=1, le=64, description="Frames upscaled at once (faster on a GPU; costs memory)."
    )
    audio_file: str | None = Field(
        None,
        description="The soundtrack for audio replace or add (a local file).",
        json_schema_extra={"flag": "audio"},
    )

    def target_fps(self) -> Fraction | None:
        """The output frame rate, or None to keep the source's frame times."""
        return None if self.fps is None else parse_fps(self.fps)

    def chunk_length(self) -> float:
        """Seconds per chunk: this job's choice, else the settings'."""
        from shared.config import get_settings

        return self.chunk_seconds or get_settings().chunk_seconds

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Options:
        """Rebuild options from ``to_dict``'s output (or a job's stored options)."""
        return cls.model_validate(data)
