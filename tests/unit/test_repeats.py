"""Repeated frames of old transfers: dropped, and the motion rebuilt on the original clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.clips import decoded_frames, decoded_pts, make_clip
from worker.media.probe import probe
from worker.pipeline import Options, original_times, plan_file, process_file

# A 16 fps film transferred at 24 fps (2:1 pulldown), raised to 48 fps, in two chunks.
FILM = {"width": 160, "height": 64, "fps": 24, "seconds": 1.5, "shot_fps": 16}
STAGES = {
    "scale": 1,
    "upscaler": "lanczos",
    "interpolator": "blend",
    "fps": "48",
    "chunk_seconds": 1.0,
}


def square_x(frame: np.ndarray) -> float:
    """Horizontal centre of the clip's white square (its blue stands out of a blue-64 field).

    Measured on the square's rows with the field subtracted, so a cross-fade of two squares
    centres between them in proportion (the blend interpolator's frames are measured fairly).
    """
    band = frame[24:40, :, 2].astype(np.float64)
    columns = np.clip(band - 70.0, 0.0, None).sum(axis=0)
    return float((columns * np.arange(len(columns))).sum() / columns.sum())


def jerk(path: Path) -> tuple[int, float]:
    """Frames, and the largest distance of the square from a steady-speed line (pixels)."""
    xs = np.array([square_x(f) for f in decoded_frames(path)])
    # Skip the first and last few frames, held at the film's ends.
    body = xs[4:-4]
    k = np.arange(len(body))
    line = np.polyval(np.polyfit(k, body, 1), k)
    return len(xs), float(np.abs(body - line).max())


@pytest.mark.parametrize("chunk_seconds", [1.0, 10.0])
def test_dropping_repeats_makes_motion_steady(tmp_path: Path, chunk_seconds: float) -> None:
    clip = make_clip(tmp_path / "transfer.mp4", **FILM)  # type: ignore[arg-type]
    stages = {**STAGES, "chunk_seconds": chunk_seconds}
    dropped = process_file(clip.path, tmp_path / "drop.mp4", Options(**stages))  # type: ignore[arg-type]
    kept = process_file(
        clip.path,
        tmp_path / "keep.mp4",
        Options(**stages, repeats="keep"),  # type: ignore[arg-type]
    )
    frames_drop, jerk_drop = jerk(Path(dropped.path))
    frames_keep, jerk_keep = jerk(Path(kept.path))
    # Same timeline either way: 1.5 s at 48 fps, in step with the sound.
    assert frames_drop == frames_keep == 72
    assert decoded_pts(Path(dropped.path))[0] == decoded_pts(Path(kept.path))[0]
    # Keeping the repeats stutters (the square stops every third frame of 24, then jumps);
    # dropping them moves it at one speed across the chunk boundary too.
    assert jerk_keep > 1.0
    assert jerk_drop < 0.5 * jerk_keep
    assert jerk_drop < 0.6
    # Repeats are not upscaled: a third fewer frames went through the stages.
    assert dropped.frames_in < kept.frames_in


def test_native_footage_keeps_every_frame(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "native.mp4", width=160, height=64, fps=24, seconds=1.0)
    info = probe(clip.path)
    # Nothing repeats on a cycle: the chunk is decoded and timed as it is.
    assert all(original_times(clip.path, info, plan) is None for plan in plan_file(clip.path, 1.0))
    dropped = process_file(clip.path, tmp_path / "a.mp4", Options(**STAGES))  # type: ignore[arg-type]
    assert dropped.frames_in == clip.frames
    assert len(decoded_frames(Path(dropped.path))) == 48


def test_a_freeze_frame_is_the_film_not_the_transfer(tmp_path: Path) -> None:
    """A held shot (the same frame for half a second) is not a cadence: it is kept."""
    clip = make_clip(tmp_path / "freeze.mp4", width=160, height=64, fps=24, seconds=2.0, shot_fps=1)
    info = probe(clip.path)
    assert all(original_times(clip.path, info, plan) is None for plan in plan_file(clip.path, 1.0))


def test_a_variable_rate_keeps_its_frames(tmp_path: Path) -> None:
    """The original clock is counted in frames; uneven frame times would put it off time."""
    clip = make_clip(
        tmp_path / "vfr.mkv", width=160, height=64, fps=24, seconds=2.0, shot_fps=16, vfr=True
    )
    info = probe(clip.path)
    assert all(original_times(clip.path, info, plan) is None for plan in plan_file(clip.path, 1.0))
