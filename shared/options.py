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
# A repair part: decided from the film (auto), always, or never.
Repair = Literal["auto", "on", "off"]
# A preview's length unless told.
PREVIEW_SECONDS = 3.0
# The codec each output preset writes for an 8-bit film, and the codecs it lets a user pick.
PRESET_CODECS = {"auto": "h264", "web": "h264", "archive": "ffv1"}
PRESET_ALLOWS = {
    "auto": ("h264", "h265", "ffv1", "prores"),
    "web": ("h264", "h265"),
    "archive": ("ffv1", "prores"),
}

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
    # Film repair, on the source frames before upscaling (worker/stages/repair.py). `auto`
    # is decided once per film from a sample of it, and only on clear evidence.
    degrain: Literal["auto", "off", "1", "2", "3"] = Field(
        "auto",
        description="Remove grain and noise before upscaling (FFDNet): auto (when the film "
        "is grainy), off, or a strength from 1 (light) to 3 (strong).",
    )
    deflicker: Repair = Field(
        "auto",
        description="Even out brightness that flickers from frame to frame (fades and cuts "
        "are kept): auto (when the film flickers), on, off.",
    )
    dust: Repair = Field(
        "auto",
        title="Dust and scratches",
        description="Replace dust, dirt and scratches that last one frame from the frames "
        "either side (moving things are kept): auto (when the film has them), on, off.",
    )
    stabilise: Repair = Field(
        "auto",
        description="Remove gate weave (the whole picture jittering by a pixel or a few), "
        "keeping the camera's own moves: auto (when the film weaves), on, off.",
    )
    deinterlace: Repair = Field(
        "auto",
        description="Deinterlace a video transfer, one frame per frame (bwdif-like): auto "
        "(when the picture shows combing), on, off.",
    )
    grain: int = Field(
        0,
        ge=0,
        le=3,
        title="Grain back",
        description="Film grain added after upscaling so a large result does not look waxy: "
        "0 (none) to 3 (heavy).",
    )
    repeats: Literal["drop", "keep"] = Field(
        "drop",
        title="Repeated frames",
        description="With fps: drop frames the transfer repeated on a cycle (a 16 fps film "
        "at 24 fps) and interpolate from the unique ones at their original times (drop), "
        "or keep every frame (keep).",
    )
    output_preset: Literal["auto", "web", "archive"] = Field(
        "auto",
        title="Output",
        description="What the file is for: auto (H.264, or 10-bit H.265 for a film of more "
        "than 8 bits: the depth is kept), web (8-bit 4:2:0 H.264 and AAC sound: plays "
        "everywhere), archive (lossless FFV1 in MKV at the source's depth and chroma, "
        "lossless sound kept lossless). codec, container and crf override it.",
    )
    codec: Literal["h264", "h265", "ffv1", "prores"] | None = Field(
        None,
        description="Video codec of the result (default: from output_preset; ffv1 is "
        "lossless and keeps the bit depth).",
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
    audio_offset: float = Field(
        0,
        ge=-3600,
        le=3600,
        title="Sound offset",
        description="Seconds to move the sound by: positive starts it later, negative cuts "
        "its start. Moves the soundtrack (replace, add), else the film's own tracks; a "
        "soundtrack is padded with silence or trimmed to the picture's length.",
    )
    chunk_seconds: float | None = Field(
        None, ge=1, le=600, description="Length of the chunks workers share (default: settings)."
    )
    preview_start: str | None = Field(
        None,
        max_length=32,
        description="Restore only a stretch of the film, to judge the settings: from these "
        "seconds, or auto (a busy moment). Runs ahead of full jobs.",
        examples=["auto", "12.5"],
    )
    preview_seconds: float | None = Field(
        None,
        ge=0.5,
        le=60,
        description=f"How long a preview is (default {PREVIEW_SECONDS:g} s when preview_start "
        "is given; giving this alone previews from auto).",
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

    @field_validator("preview_start", mode="before")
    @classmethod
    def _preview_start(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        text = str(value).strip().lower()
        if text != "auto":
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError("preview_start is seconds (e.g. 12.5) or auto") from None
            if not 0 <= seconds < 10**6:
                raise ValueError("preview_start must be 0 seconds or more")
        return text

    def preview(self) -> tuple[str, float] | None:
        """Where a preview starts (seconds as text, or ``auto``) and how long it lasts;
        ``None`` for a whole film."""
        if self.preview_start is None and self.preview_seconds is None:
            return None
        return self.preview_start or "auto", self.preview_seconds or PREVIEW_SECONDS

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
        codec = self.codec or PRESET_CODECS[self.output_preset]
        if self.codec is not None and self.codec not in PRESET_ALLOWS[self.output_preset]:
            allowed = " or ".join(PRESET_ALLOWS[self.output_preset])
            raise ValueError(f"output_preset {self.output_preset} writes {allowed}, not {codec}")
        if self.crf is not None and codec not in ("h264", "h265"):
            raise ValueError("crf applies to h264 and h265 only")
        if codec == "prores" and self.container == "mp4":
            raise ValueError("prores goes in mov or mkv, not mp4")
        return self

    def codec_for(self, bit_depth: int) -> str:
        """The video codec for a film of ``bit_depth`` bits: as asked, else the preset's (auto
        keeps a deep film deep with 10-bit H.265, which every current player decodes)."""
        if self.codec is not None:
            return self.codec
        if self.output_preset == "auto" and bit_depth > 8:
            return "h265"
        return PRESET_CODECS[self.output_preset]

    @property
    def output_container(self) -> str:
        """The container the result is written in (the same for any bit depth)."""
        if self.container:
            return self.container
        return {"ffv1": "mkv", "prores": "mov"}.get(self.codec_for(8), "mp4")


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

    preset: str | None = Field(
        None,
        description="x264/x265 speed preset (slower is smaller at the same quality; default: "
        "medium up to 1080p, faster above, where medium would hold the GPU up).",
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
