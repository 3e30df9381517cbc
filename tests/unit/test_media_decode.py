"""Decoding by timestamps into upright RGB tensors, checked against FFmpeg's own decoder."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch

from tests.clips import ffmpeg_frames, make_clip
from worker.media.colors import coding_for
from worker.media.decode import decode_range
from worker.media.probe import probe, scan_frames

CASES: dict[str, dict[str, Any]] = {
    "h264.mp4": dict(codec="libx264"),
    "hevc10.mkv": dict(codec="libx265", bit_depth=10),
    "mpeg4.avi": dict(codec="mpeg4"),
    "prores.mov": dict(codec="prores_ks", bit_depth=10),
    "mjpeg.avi": dict(codec="mjpeg"),
    "ffv1odd.mkv": dict(codec="ffv1", width=67, height=37),
    "vfr.mkv": dict(codec="ffv1", vfr=True),
    "bt709.mp4": dict(codec="libx264", color=(1, 1, 1)),
    "rotated.mp4": dict(codec="libx264", rotation=90, width=64, height=48),
    "rotated270.mov": dict(codec="libx264", rotation=-90, width=64, height=48),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_decoded_frames_match_ffmpeg(tmp_path: Path, name: str) -> None:
    clip = make_clip(tmp_path / name, seconds=0.5, **CASES[name])
    info = probe(clip.path)
    frames = list(decode_range(clip.path, info))
    index = scan_frames(clip.path)
    assert [f.pts for f in frames] == list(index.pts)
    width, height = info.upright_size
    assert all(f.image.shape == (1, 3, height, width) for f in frames)
    assert all(f.image.dtype == torch.float32 for f in frames)
    coding = coding_for(info.pix_fmt, info.color, info.height)
    peer = ffmpeg_frames(clip.path, width, height, coding.matrix, coding.full_range, info.rotation)
    assert len(peer) == len(frames)
    ours = np.stack([f.image[0].permute(1, 2, 0).numpy() for f in frames]) * 255
    error = ours - peer * 255
    # Same matrix, range and orientation as zimg: only chroma filtering differs, and
    # nothing darkens or brightens the picture. (Odd sizes reach zimg through swscale's
    # chroma filter, which alone differs from zimg's by ~0.9 codes on even sizes.)
    odd = width % 2 or height % 2
    assert np.abs(error).mean() < (2.5 if odd else 0.5)
    assert abs(error.mean()) < (1.0 if odd else 0.05)


def test_odd_sizes_decode_like_the_even_size_they_crop(tmp_path: Path) -> None:
    # The same chroma planes under a luma one sample narrower and shorter: every pixel
    # they share must decode the same (the chroma upsampling is cut, not shifted).
    from worker.media.colors import write_planes

    rng = np.random.default_rng(1)
    planes = [rng.integers(16, 236, (38, 68), dtype=np.uint8)]
    planes += [rng.integers(16, 241, (19, 34), dtype=np.uint8) for _ in range(2)]
    images = []
    for width, height in ((68, 38), (67, 37)):
        path = tmp_path / f"{width}.mkv"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("ffv1", rate=24)
            assert isinstance(stream, av.VideoStream)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            frame = write_planes([planes[0][:height, :width], *planes[1:]], "yuv420p")
            frame.pts = 0
            out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        images.append(next(decode_range(path, probe(path))).image)
    assert torch.equal(images[1], images[0][..., :37, :67])


def test_a_range_is_chosen_by_timestamps(tmp_path: Path) -> None:
    clip = make_clip(
        tmp_path / "gop.mp4", seconds=2.0, gop=12, vfr=True, time_base=Fraction(1, 90000)
    )
    info = probe(clip.path)
    start, stop = clip.pts[17], clip.pts[31]
    frames = list(decode_range(clip.path, info, start, stop))
    assert [f.pts for f in frames] == clip.pts[17:32]
    whole = {f.pts: f.image for f in decode_range(clip.path, info)}
    # Seeking to a keyframe and skipping gives the very same pixels as decoding from the top.
    assert all(torch.equal(f.image, whole[f.pts]) for f in frames)


def test_ten_bit_sources_keep_their_precision(tmp_path: Path) -> None:
    clip = make_clip(
        tmp_path / "deep.mkv", codec="ffv1", bit_depth=10, seconds=0.2, width=160, height=120
    )
    info = probe(clip.path)
    image = next(decode_range(clip.path, info)).image
    levels = torch.unique((image * 65535).round())
    # An 8-bit path would leave at most 256 levels per channel.
    assert len(levels) > 256
