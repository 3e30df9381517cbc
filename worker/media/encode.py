"""Encode RGB float tensors to a video file: H.264, H.265, FFV1 or ProRes."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
import torch

from shared.errors import InvalidInput, ProcessingError
from shared.logs import get_logger
from worker.media.colors import (
    LEFT,
    Coding,
    guessed_matrix,
    planar_format,
    rgb_to_planes,
    write_planes,
)
from worker.media.probe import ColorTags

log = get_logger(__name__)

# Our codec names -> FFmpeg encoders.
ENCODERS = {"h264": "libx264", "h265": "libx265", "ffv1": "ffv1", "prores": "prores_ks"}
# Our container names -> FFmpeg muxers.
MUXERS = {"mp4": "mp4", "mkv": "matroska", "mov": "mov"}
SUFFIXES = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "mkv", ".mov": "mov"}
# Which containers each codec may go in (FFV1 belongs in Matroska; ProRes is a MOV codec).
CONTAINERS_FOR = {
    "h264": ("mp4", "mkv", "mov"),
    "h265": ("mp4", "mkv", "mov"),
    "ffv1": ("mkv",),
    "prores": ("mov", "mkv"),
}
DEFAULT_CONTAINER = {"h264": "mp4", "h265": "mp4", "ffv1": "mkv", "prores": "mov"}
DEFAULT_CRF = {"h264": 18, "h265": 20}
# Hardware encoders tried before the software ones, where FFmpeg has them and they open
# (NVENC needs an NVIDIA GPU that has encoders, and its driver: H100s and A100s have none).
HARDWARE_ENCODERS = {"h264": "h264_nvenc", "h265": "hevc_nvenc"}
# What NVENC is fed for each of our pixel formats (it takes 10-bit as P010; PyAV repacks).
NVENC_FORMATS = {"yuv420p": "yuv420p", "yuv420p10le": "p010le"}
# x264/x265 presets mapped to NVENC's p1 (fastest) … p7 (best); p5 when none is asked for.
NVENC_PRESETS = {
    "ultrafast": "p1",
    "superfast": "p2",
    "veryfast": "p3",
    "faster": "p3",
    "fast": "p4",
    "medium": "p5",
    "slow": "p6",
    "slower": "p7",
    "veryslow": "p7",
    "placebo": "p7",
}
# The x264/x265 preset when none is asked for: medium up to 1080p; above, faster. At 1080p on
# two cores x264 medium encoded 2.8 frames/s, faster 10.6 and veryfast 19.3 (x265: 3.2, 6.5
# and 6.8) for files within 12 % of each other at the same CRF: a 4K frame has 4x the
# pixels, and at medium the encoder, not the GPU, would set the pace.
FULL_HD_PIXELS = 1920 * 1088
LARGE_PRESET = "faster"


# Chunk files keep exact time bases (Matroska rounds to milliseconds) and accept the codec.
def chunk_muxer(codec: str | None) -> str:
    """The muxer of a job's chunk files: MOV for ProRes (only ever chosen by name), MP4 for
    every other codec (``None``: the output preset's)."""
    return "mov" if codec == "prores" else "mp4"


def container_for(path: str | Path, container: str | None, codec: str) -> str:
    """The output container: as asked, else from the suffix; checked against the codec."""
    if codec not in ENCODERS:
        raise InvalidInput(f"unknown codec {codec!r}; choose one of {sorted(ENCODERS)}")
    if container is None:
        suffix = Path(path).suffix.lower()
        if suffix not in SUFFIXES:
            raise InvalidInput(
                f"cannot tell the container from {Path(path).name!r}; "
                f"use a {', '.join(sorted(SUFFIXES))} name or pass a container"
            )
        container = SUFFIXES[suffix]
    if container not in MUXERS:
        raise InvalidInput(f"unknown container {container!r}; choose one of {sorted(MUXERS)}")
    if container not in CONTAINERS_FOR[codec]:
        raise InvalidInput(
            f"{codec} does not go in {container}; use {' or '.join(CONTAINERS_FOR[codec])}"
        )
    return container


def pixel_format(codec: str, source: str = "yuv420p", web: bool = False) -> str:
    """The output pixel format for a source of pixel format ``source``: its own layout and
    depth where the codec has them (FFV1, ProRes 4:4:4), else the codec's usual one; H.264
    (and anything for the ``web``) is 8-bit 4:2:0, which every player decodes."""
    planar = planar_format(source)
    deep = av.VideoFormat(source).components[0].bits > 8
    if codec == "h264" or web:
        return "yuv420p"
    if codec == "h265":
        return "yuv420p10le" if deep else "yuv420p"
    if codec == "prores":
        full_chroma = planar is None or planar.startswith(("yuv444", "yuvj444", "yuva444"))
        return "yuv444p10le" if full_chroma else "yuv422p10le"
    if planar is None:
        return "yuv444p16le" if deep else "yuv444p"
    # FFV1 codes every planar layout; JPEG names are plain formats with a full-range tag.
    planar = planar.replace("yuvj", "yuv").replace("yuva", "yuv")
    return planar if planar in FFV1_FORMATS else "yuv444p16le"


# The pixel formats FFV1 encodes, as this FFmpeg build says.
FFV1_FORMATS = frozenset(f.name for f in av.codec.Codec("ffv1", "w").video_formats or ())


def even_size(codec: str, pix_fmt: str, width: int, height: int) -> tuple[int, int]:
    """Round a size down to what the codec allows for the pixel format's chroma
    subsampling (FFV1 codes odd sizes, with a last chroma sample for the odd luma one)."""
    if codec == "ffv1":
        return width, height
    wstep = 2 if "420" in pix_fmt or "422" in pix_fmt else 1
    hstep = 2 if "420" in pix_fmt or "440" in pix_fmt else 1
    return max(wstep, width - width % wstep), max(hstep, height - height % hstep)


@dataclass(frozen=True)
class VideoSpec:
    """How to encode: codec, size, timing and tags."""

    codec: str
    width: int
    height: int
    time_base: Fraction
    rate: Fraction
    pix_fmt: str = "yuv420p"
    crf: int | None = None
    preset: str | None = None  # None: from the size (see LARGE_PRESET)
    color: ColorTags = field(default_factory=ColorTags)
    sar: Fraction = Fraction(1)


@dataclass(frozen=True)
class Encoder:
    """The FFmpeg encoder a spec is written with, the pixel format it is fed, its options."""

    name: str
    pix_fmt: str
    options: dict[str, str]


def software_preset(spec: VideoSpec) -> str:
    """The x264/x265 preset: as asked, else by the picture's size (see LARGE_PRESET)."""
    if spec.preset is not None:
        return spec.preset
    return "medium" if spec.width * spec.height <= FULL_HD_PIXELS else LARGE_PRESET


@functools.cache
def hardware_unusable(name: str, pix_fmt: str, width: int, height: int) -> str | None:
    """Why the hardware encoder ``name`` cannot encode ``pix_fmt`` at this size here, or
    ``None`` when it opens: tried once per process (a few milliseconds), then remembered."""
    try:
        ctx = av.CodecContext.create(name, "w")
    except ValueError:
        return "not in this FFmpeg build"
    if not isinstance(ctx, av.VideoCodecContext):
        return "not a video encoder"
    ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
    ctx.time_base, ctx.framerate = Fraction(1, 25), Fraction(25)
    try:
        ctx.open()
    except av.error.FFmpegError as err:
        # No NVIDIA driver, no GPU with encoders, too many sessions, a size out of range.
        return f"it does not open here ({err.strerror or err})"
    return None


def choose_encoder(spec: VideoSpec) -> Encoder:
    """NVENC for H.264/H.265 where it opens, else x264/x265; FFV1 and ProRes in software.

    Falling back is logged (once per process and size), never silent."""
    crf = str(spec.crf if spec.crf is not None else DEFAULT_CRF.get(spec.codec, 0))
    hardware = HARDWARE_ENCODERS.get(spec.codec)
    if hardware is not None:
        fed = NVENC_FORMATS.get(spec.pix_fmt)
        if fed is None:
            reason: str | None = f"it takes no {spec.pix_fmt}"
        else:
            reason = hardware_unusable(hardware, fed, spec.width, spec.height)
        if fed is not None and reason is None:
            preset = NVENC_PRESETS.get(spec.preset or "medium", "p5")
            # Constant quality (VBR at a CQ level, no bitrate cap): what x264's CRF does.
            return Encoder(hardware, fed, {"preset": preset, "tune": "hq", "rc": "vbr", "cq": crf})
        _log_fallback(hardware, ENCODERS[spec.codec], str(reason), spec.width, spec.height)
    if spec.codec == "h264":
        return Encoder("libx264", spec.pix_fmt, {"crf": crf, "preset": software_preset(spec)})
    if spec.codec == "h265":
        options = {"crf": crf, "preset": software_preset(spec), "x265-params": "log-level=error"}
        return Encoder("libx265", spec.pix_fmt, options)
    if spec.codec == "ffv1":
        # Archival FFV1: version 3 with per-slice CRCs, every frame a keyframe (gop_size 1).
        return Encoder("ffv1", spec.pix_fmt, {"level": "3", "slicecrc": "1"})
    return Encoder(ENCODERS[spec.codec], spec.pix_fmt, {"profile": "3"})  # ProRes 422 HQ


@functools.cache
def _log_fallback(hardware: str, software: str, reason: str, width: int, height: int) -> None:
    log.info(
        "encoder.fallback", hardware=hardware, used=software, reason=reason, size=(width, height)
    )


class VideoWriter:
    """Writes frames with explicit pts to a file; use as a context manager so it flushes."""

    def __init__(self, path: str | Path, spec: VideoSpec, muxer: str) -> None:
        self.spec = spec
        self.encoder = choose_encoder(spec)
        self.frames = 0
        self._coding = Coding(
            pix_fmt=spec.pix_fmt,
            matrix=guessed_matrix(spec.color.matrix, spec.height),
            full_range=spec.color.range == 2,
            chroma_location=spec.color.chroma_location or LEFT,
        )
        self._dtype = np.uint16 if self._coding.bits > 8 else np.uint8
        self._out = av.open(str(path), "w", format=muxer)
        try:
            self._stream = self._open_stream()
        except Exception:
            self._out.close()
            raise

    def _open_stream(self) -> av.VideoStream:
        spec, encoder = self.spec, self.encoder
        stream = self._out.add_stream(encoder.name, rate=spec.rate)
        if not isinstance(stream, av.VideoStream):
            raise ProcessingError(f"{encoder.name} is not a video encoder")
        stream.width, stream.height = spec.width, spec.height
        stream.pix_fmt = encoder.pix_fmt
        stream.time_base = spec.time_base
        ctx = stream.codec_context
        ctx.time_base = spec.time_base
        ctx.sample_aspect_ratio = spec.sar
        ctx.color_primaries = spec.color.primaries
        ctx.color_trc = spec.color.transfer
        ctx.colorspace = spec.color.matrix
        ctx.color_range = spec.color.range
        if spec.codec == "ffv1":
            ctx.gop_size = 1
        stream.options = {**encoder.options}
        return stream

    def write(self, image: torch.Tensor, pts: int, duration: int = 0) -> None:
        """Encode one frame (1, 3, H, W) or (3, H, W) in [0, 1] at ``pts`` (time base ticks)."""
        if image.dim() == 4:
            image = image[0]
        # The colour maths where the frame is (a GPU sends 1.5 bytes a pixel, not 12).
        planes = rgb_to_planes(image.detach().float(), self._coding)
        spec = self.spec
        arrays = [p.to(torch.int32).cpu().numpy().astype(self._dtype) for p in planes]
        frame = write_planes(arrays, spec.pix_fmt)
        # Some encoders (ProRes) take the colour tags from the frame, not the context.
        frame.colorspace, frame.color_range = spec.color.matrix, spec.color.range
        frame.color_primaries, frame.color_trc = spec.color.primaries, spec.color.transfer
        frame.pts = pts
        frame.time_base = spec.time_base
        if duration:
            # Containers need the last frame's duration to know when the picture ends.
            frame.duration = duration
        self._out.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        try:
            self._out.mux(self._stream.encode(None))
        finally:
            self._out.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            # The file is thrown away by the caller; don't flush into a failing encoder.
            self._out.close()
