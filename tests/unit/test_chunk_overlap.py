"""A chunk whose stages overlap: the same pixels as one after another, stage threads that
end with the chunk, busy times per stage, and a cancel that still stops it within a second."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from tests.clips import make_clip
from tests.models_fixture import real_models_dir
from worker.cancel import Cancelled
from worker.media.colors import read_planes
from worker.pipeline import Options, plan_file, process_chunk

# Repair measures the film first (seconds); these tests are about the stages after it.
NO_REPAIR = {name: "off" for name in ("degrain", "deflicker", "dust", "stabilise", "deinterlace")}


def stage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("overlap-")]


def planes(path: Path) -> list[list[np.ndarray]]:
    with av.open(str(path)) as container:
        return [[p.copy() for p in read_planes(f)] for f in container.decode(video=0)]


@pytest.mark.parametrize(
    "stages",
    [
        {"upscaler": "lanczos", "interpolator": "blend"},
        {"upscaler": "faithful", "interpolator": "motion"},  # a network; four-frame motion
        {"upscaler": "basicvsr", "interpolator": "blend"},  # windows of frames
    ],
    ids=["classical", "networks", "video-network"],
)
def test_overlapped_stages_write_the_same_frames(tmp_path: Path, stages: dict[str, str]) -> None:
    if stages["upscaler"] != "lanczos":
        real_models_dir()
    clip = make_clip(tmp_path / "in.mp4", width=32, height=24, fps=8, seconds=1.5, gop=4)
    # The middle one of three chunks: it reads frames either side of its own.
    plan = plan_file(clip.path, 0.5)[1]
    options = Options(**stages, **NO_REPAIR, scale=2, fps="16", codec="ffv1")
    runs = {}
    for overlap in (False, True):
        out = tmp_path / f"chunk-{overlap}.mp4"
        result = process_chunk(clip.path, plan, options, out, overlap=overlap)
        runs[overlap] = (planes(out), result)
    (alone, one), (overlapped, other) = runs[False], runs[True]
    assert len(alone) == len(overlapped) == one.frames_out == other.frames_out > 0
    assert one.frames_in == other.frames_in
    for a, b in zip(alone, overlapped, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert other.encoder == "ffv1"
    busy = [other.seconds[s] for s in ("decode", "upscale", "interpolate", "encode")]
    assert min(busy) > 0 and other.seconds["wall"] >= max(busy)
    assert stage_threads() == []  # none outlives its chunk


def test_an_overlapped_chunk_stops_within_a_second_of_a_cancel(tmp_path: Path) -> None:
    real_models_dir()
    # Real-ESRGAN ×4 on 2 CPU cores: tens of milliseconds per frame, busy in every stage.
    clip = make_clip(tmp_path / "in.mp4", width=80, height=60, fps=24, seconds=2.0)
    (plan,) = plan_file(clip.path, 10.0)
    options = Options(upscaler="detailed", interpolator="motion", **NO_REPAIR, scale=2, fps="48")
    asked = threading.Event()
    flipped: list[float] = []

    def stop_once_under_way(done: int) -> None:
        # Once frames reach the encoder every stage has work queued or in hand.
        if done >= 4 and not flipped:
            flipped.append(time.perf_counter())
            asked.set()

    with pytest.raises(Cancelled):
        process_chunk(
            clip.path,
            plan,
            options,
            tmp_path / "chunk.mp4",
            on_progress=stop_once_under_way,
            should_stop=asked.is_set,
        )
    stopped = time.perf_counter() - flipped[0]
    assert stopped < 1.0, f"took {stopped:.2f} s to stop"
    assert stage_threads() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_an_error_in_a_stage_thread_comes_out_unchanged(tmp_path: Path) -> None:
    """The decoder's UnsupportedMedia, raised in its thread, reaches the caller as it was."""
    from shared.errors import UnsupportedMedia

    clip = make_clip(tmp_path / "in.mp4", width=32, height=24, fps=12, seconds=1.0)
    (plan,) = plan_file(clip.path, 10.0)
    data = clip.path.read_bytes()
    # Keep the header and the index (moov at the front? not with PyAV: cut the frames' bytes).
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(data[: len(data) // 2])
    options = Options(upscaler="lanczos", interpolator="blend", **NO_REPAIR, scale=2, fps="24")
    with pytest.raises(UnsupportedMedia):
        process_chunk(damaged, plan, options, tmp_path / "chunk.mp4")
    assert stage_threads() == []
