"""Decode a range of video frames, by timestamps, into upright float RGB tensors."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import numpy as np
import torch

from shared.errors import UnsupportedMedia
from worker.devices import to_device
from worker.media.colors import coding_for, planar_format, planes_to_rgb, read_planes
from worker.media.probe import MediaInfo, ffmpeg_reason, open_input, video_stream


@dataclass(frozen=True)
class SourceFrame:
    """One decoded frame: its pts in the source time base and its pixels (1, 3, H, W)."""

    pts: int
    image: torch.Tensor


def decode_range(
    path: str | Path,
    info: MediaInfo,
    start_pts: int | None = None,
    stop_pts: int | None = None,
    device: torch.device | None = None,
) -> Iterator[SourceFrame]:
    """Frames with ``start_pts <= pts <= stop_pts`` in presentation order, rotated upright."""
    name = Path(path).name
    seek = start_pts is not None and start_pts > info.start / info.time_base
    with open_input(path) as container:
        stream = video_stream(container)
        stream.thread_type = "AUTO"
        if seek and start_pts is not None:
            # Seeking lands on the keyframe at or before start_pts; earlier frames are skipped.
            container.seek(start_pts, stream=stream, backward=True, any_frame=False)
        frames = _decoded(container, stream, name, info)
        first = next(frames, None)
        if seek and first is not None and start_pts is not None and first[0] > start_pts:
            # A broken index put us past the start: decode from the top instead.
            container.seek(0, stream=stream, backward=True)
            frames = _decoded(container, stream, name, info)
            first = next(frames, None)
        if first is None:
            return
        last: int | None = None
        for pts, frame in itertools.chain([first], frames):
            # Frames without a time, or out of order (broken files), cannot be placed.
            if last is not None and pts <= last:
                continue
            if start_pts is not None and pts < start_pts:
                continue
            if stop_pts is not None and pts > stop_pts:
                break
            last = pts
            yield SourceFrame(pts, _to_tensor(frame, info, device))


def _decoded(
    container: av.container.InputContainer, stream: av.VideoStream, name: str, info: MediaInfo
) -> Iterator[tuple[int, av.VideoFrame]]:
    """(pts, frame) in decode output order, with decoding errors named."""
    pts: int | None = None
    try:
        for frame in container.decode(stream):
            if frame.pts is not None:
                pts = frame.pts
                yield pts, frame
    except av.error.FFmpegError as err:
        where = float((pts or 0) * info.time_base)
        raise UnsupportedMedia(
            f"{name}: decoding failed near {where:.2f} s, the file is truncated or corrupt "
            f"({ffmpeg_reason(err)})"
        ) from None


def _to_tensor(frame: av.VideoFrame, info: MediaInfo, device: torch.device | None) -> torch.Tensor:
    """Float RGB (1, 3, H, W), nominally in [0, 1] and unclipped, with the source's own
    matrix, range and chroma siting (worker.media.colors)."""
    planar = planar_format(frame.format.name)
    if planar is None:
        image = torch.from_numpy(_rgb(frame))
        image = to_device(image, device) if device is not None else image
    else:
        coding = coding_for(planar, info.color, info.height)
        if planar != frame.format.name:
            frame = frame.reformat(format=planar)  # a re-layout (NV12 -> planar), no maths
        if device is not None and device.type != "cpu":
            # 8-bit planes travel as bytes, a quarter of float32's traffic; exact either way.
            raw = [p if p.dtype == np.uint8 else p.astype(np.float32) for p in read_planes(frame)]
            planes = [to_device(torch.from_numpy(p), device).float() for p in raw]
        else:
            planes = [torch.from_numpy(p.astype(np.float32)) for p in read_planes(frame)]
        image = planes_to_rgb(planes, coding)
    image = image.unsqueeze(0)
    if info.rotation:
        # The display matrix turns the stored picture counter-clockwise by `rotation`.
        image = torch.rot90(image, k=info.rotation // 90, dims=(2, 3))
    return image


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """Float RGB (3, H, W) in [0, 1] of an RGB or palette frame, without rounding: 8-bit
    sources are re-laid to rgb24 (a shuffle), planar GBR is read as it is stored, and only
    other deep RGB goes through swscale's 16-bit RGB (whose 8 -> 16-bit step is inexact)."""
    fmt = frame.format
    bits = int(fmt.components[0].bits)
    if bits <= 8:
        return frame.to_ndarray(format="rgb24").transpose(2, 0, 1).astype(np.float32) / 255
    if fmt.name.startswith("gbrp") and len(fmt.components) == 3:
        g, b, r = read_planes(frame)
        return np.stack([r, g, b]).astype(np.float32) / (2**bits - 1)
    rgb = frame.reformat(format="rgb48le").to_ndarray()
    return rgb.transpose(2, 0, 1).astype(np.float32) / 65535
