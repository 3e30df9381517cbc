"""Decoding by timestamps into upright RGB tensors, checked against FFmpeg's own decoder."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.clips import ffmpeg_frames, make_clip
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
    peer = ffmpeg_frames(clip.path, width, height)
    assert len(peer) == len(frames)
    ours = np.stack([(f.image[0].permute(1, 2, 0) * 255).round().numpy() for f in frames])
    # Same matrix, range and orientation as FFmpeg: only rounding and chroma filtering differ.
    assert np.abs(ours - peer).mean() < 2.0


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
