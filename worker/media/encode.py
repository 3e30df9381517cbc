"""Encode RGB float tensors to a video file: H.264, H.265, FFV1 or ProRes."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
import torch

from shared.errors import InvalidInput, ProcessingError
from worker.media.colors import (
    LEFT,
    Coding,
    guessed_matrix,
    planar_format,
    rgb_to_planes,
    write_planes,
)
from worker.media.probe import ColorTags

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
# Chunk files keep exact time bases (Matroska rounds to milliseconds) and accept the codec.
CHUNK_MUXER = {"h264": "mp4", "h265": "mp4", "ffv1": "mp4", "prores": "mov"}


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


def pixel_format(codec: str, source: str = "yuv420p") -> str:
    """The output pixel format for a source of pixel format ``source``: its own layout and
    depth where the codec has them (FFV1, ProRes 4:4:4), else the codec's usual one; H.264
    stays 8-bit 4:2:0, which every player decodes."""
    planar = planar_format(source)
    deep = av.VideoFormat(source).components[0].bits > 8
    if codec == "h264":
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
    preset: str = "medium"
    color: ColorTags = field(default_factory=ColorTags)
    sar: Fraction = Fraction(1)


class VideoWriter:
    """Writes frames with explicit pts to a file; use as a context manager so it flushes."""

    def __init__(self, path: str | Path, spec: VideoSpec, muxer: str) -> None:
        self.spec = spec
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
        spec = self.spec
        stream = self._out.add_stream(ENCODERS[spec.codec], rate=spec.rate)
        if not isinstance(stream, av.VideoStream):
            raise ProcessingError(f"{ENCODERS[spec.codec]} is not a video encoder")
        stream.width, stream.height = spec.width, spec.height
        stream.pix_fmt = spec.pix_fmt
        stream.time_base = spec.time_base
        ctx = stream.codec_context
        ctx.time_base = spec.time_base
        ctx.sample_aspect_ratio = spec.sar
        ctx.color_primaries = spec.color.primaries
        ctx.color_trc = spec.color.transfer
        ctx.colorspace = spec.color.matrix
        ctx.color_range = spec.color.range
        crf = spec.crf if spec.crf is not None else DEFAULT_CRF.get(spec.codec, 0)
        if spec.codec == "h264":
            stream.options = {"crf": str(crf), "preset": spec.preset}
        elif spec.codec == "h265":
            stream.options = {
                "crf": str(crf),
                "preset": spec.preset,
                "x265-params": "log-level=error",
            }
        elif spec.codec == "ffv1":
            # Archival FFV1: version 3 with per-slice CRCs, every frame a keyframe.
            ctx.gop_size = 1
            stream.options = {"level": "3", "slicecrc": "1"}
        else:
            stream.options = {"profile": "3"}  # ProRes 422 HQ
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
