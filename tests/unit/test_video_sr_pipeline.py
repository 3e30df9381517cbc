"""A video upscaler in the chunk pipeline: chunked output is the unchunked output."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from tests.clips import make_clip
from tests.models_fixture import real_models_dir
from worker.media.colors import read_planes
from worker.pipeline import Options, process_file


def planes(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [read_planes(frame)[0].copy() for frame in container.decode(video=0)]


def test_chunks_of_a_video_upscaler_meet_without_a_seam(tmp_path: Path) -> None:
    real_models_dir()
    # 20 frames in 8-frame chunks: every chunk edge falls inside a BasicVSR window.
    clip = make_clip(tmp_path / "in.mp4", width=32, height=16, fps=8, seconds=2.5, gop=4)
    runs = {}
    for seconds in (1.0, 10.0):
        out = tmp_path / f"out-{seconds}.mkv"
        options = Options(upscaler="basicvsr", scale=2, codec="ffv1", chunk_seconds=seconds)
        result = process_file(clip.path, out, options)
        assert len(result.chunks) == (3 if seconds == 1 else 1)
        runs[seconds] = planes(out)
    chunked, whole = runs[1.0], runs[10.0]
    assert len(chunked) == len(whole) == clip.frames
    assert all(a.shape == (32, 64) for a in whole)
    diffs = [int(np.abs(a.astype(int) - b).max()) for a, b in zip(chunked, whole, strict=True)]
    assert diffs == [0] * len(whole)
