"""Repeat and cadence detection on grainy synthetic transfers, and scene-cut detection.

Footage that repeats nothing (pans, stills, fades, grain, slow or jerky motion) must keep
every frame; a transfer cadence must have every repeat found, even where each copy of a
frame carries its own noise, as after compression.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from worker.stages.cadence import Cadence, cut_score, detect_cadence, is_scene_cut

H, W = 144, 256


def smooth_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A colour texture with structure at several scales, (h, w, 3) in [0, 1]."""
    image = np.zeros((h, w, 3), np.float32)
    for cells, gain in ((3, 0.5), (9, 0.3), (27, 0.2)):
        noise = rng.random((cells, cells * w // h, 3), dtype=np.float32)
        image += gain * cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(image, 0.0, 1.0)


BACKGROUND = smooth_texture(np.random.default_rng(3), H, W + 800)


def original_frame(k: int, speed: float = 8.0) -> np.ndarray:
    """Frame ``k`` of an original shot: a slow pan across the background."""
    x = round(k * speed)
    return BACKGROUND[:, x : x + W]


def at(x: float) -> np.ndarray:
    """The background seen from ``x`` pixels in, sub-pixel positions interpolated."""
    shift = np.array([[1, 0, x], [0, 1, 0]], np.float32)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(BACKGROUND, shift, (W, H), flags=flags)


def noisy(image: np.ndarray, rng: np.random.Generator, grain: float) -> np.ndarray:
    """``image`` with its own grain, as uint8."""
    frame = image + rng.normal(0.0, grain, image.shape).astype(np.float32)
    return (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)


def transfer(runs: list[int], frames: int, grain: float, seed: int = 0) -> list[np.ndarray]:
    """Show original frames per the run-length cycle ``runs``, each copy with its own grain."""
    rng = np.random.default_rng(seed)
    shown: list[np.ndarray] = []
    k = 0
    while len(shown) < frames:
        for run in runs:
            shown += [noisy(original_frame(k), rng, grain) for _ in range(run)]
            k += 1
    return shown[:frames]


def frames_equal_source(runs: list[int], index: int) -> bool:
    """True when displayed frame ``index`` shows the same original frame as ``index - 1``."""
    cycle = [k for k, run in enumerate(runs) for _ in range(run)]
    period = len(cycle)
    source = (index // period) * len(runs) + cycle[index % period]
    prev = ((index - 1) // period) * len(runs) + cycle[(index - 1) % period]
    return source == prev


def kept_all(cadence: Cadence, fps: float) -> bool:
    """No frame dropped and the clock left alone, as the pipeline reads a cadence."""
    return not cadence.has_repeats and cadence.original_fps == fps


CADENCES = [
    # runs, shown fps, frames, original fps, pattern
    ([2, 1], 24.0, 48, 16.0, "2:1"),
    ([2, 1, 1], 24.0, 48, 18.0, "2:1:1"),
    ([2, 1, 1, 1], 30.0, 48, 24.0, "2:1:1:1"),
    ([2, *[1] * 23], 25.0, 100, 24.0, "2:1x23"),
    ([2], 24.0, 48, 12.0, "2"),
    ([2], 25.0, 48, 12.5, "2"),
    ([3], 24.0, 48, 8.0, "3"),
]


@pytest.mark.parametrize(("runs", "fps", "n", "original", "pattern"), CADENCES)
def test_every_repeat_of_a_cadence_is_found_under_grain(
    runs: list[int], fps: float, n: int, original: float, pattern: str
) -> None:
    frames = transfer(runs, n, grain=0.05)
    cadence = detect_cadence(frames, fps)
    expected = [i > 0 and frames_equal_source(runs, i) for i in range(n)]
    assert cadence.repeats == expected
    assert cadence.original_fps == pytest.approx(original)
    assert cadence.pattern == pattern
    assert cadence.unique == [i for i, r in enumerate(expected) if not r]


@pytest.mark.parametrize(("runs", "fps", "n", "original", "pattern"), CADENCES)
def test_every_repeat_is_found_where_the_picture_slows_and_stops(
    runs: list[int], fps: float, n: int, original: float, pattern: str
) -> None:
    # The original pan slows to a stop for the last third: there repeats and new frames look
    # alike, and the cycle seen where the picture moves decides them.
    originals = n  # enough for any cycle
    speed = np.r_[np.full(originals // 2, 6.0), np.linspace(6.0, 0.0, originals // 6)]
    positions = np.cumsum(np.r_[speed, np.zeros(originals)])
    rng = np.random.default_rng(1)
    cycle = [k for k, run in enumerate(runs) for _ in range(run)]
    source = [(i // len(cycle)) * len(runs) + cycle[i % len(cycle)] for i in range(n)]
    frames = [noisy(at(positions[k]), rng, 0.01) for k in source]
    cadence = detect_cadence(frames, fps)
    assert cadence.repeats == [i > 0 and source[i] == source[i - 1] for i in range(n)]
    assert cadence.original_fps == pytest.approx(original)


def test_ntsc_pulldown_keeps_the_exact_original_rate() -> None:
    frames = transfer([2, 1, 1, 1], 60, grain=0.02)
    cadence = detect_cadence(frames, 30000 / 1001)
    assert cadence.original_fps == pytest.approx(24000 / 1001)
    assert sum(cadence.repeats) == 12


def test_unique_times_follow_the_original_clock() -> None:
    frames = transfer([2, 1, 1], 48, grain=0.05)
    cadence = detect_cadence(frames, 24.0)
    steps = np.diff(cadence.unique_times)
    assert np.allclose(steps, 1 / 18)
    # Centred on when the unique frames are shown: never more than one output frame off.
    shown = np.array(cadence.unique) / 24.0
    assert np.abs(np.array(cadence.unique_times) - shown).max() < 1 / 24.0


def test_works_on_thumbnails_the_planner_already_made() -> None:
    frames = transfer([2, 1, 1], 48, grain=0.05)
    thumbs = [cv2.resize(f, (64, 36), interpolation=cv2.INTER_AREA) for f in frames]
    assert detect_cadence(thumbs, 24.0).repeats == detect_cadence(frames, 24.0).repeats


def shot(positions: np.ndarray, grain: float, seed: int = 4) -> list[np.ndarray]:
    """A shot that repeats nothing: the background at each position, each with its grain."""
    rng = np.random.default_rng(seed)
    return [noisy(at(x), rng, grain) for x in positions]


NO_REPEATS = {
    "pan": lambda: shot(np.arange(48) * 8.0, 0.02),
    # Half rate: every other frame of the pan, twice the motion per frame.
    "pan at half rate": lambda: shot(np.arange(48) * 16.0, 0.02),
    "slow pan": lambda: shot(np.arange(48) * 0.5, 0.01),
    "slowing pan": lambda: shot(np.cumsum(np.linspace(12.0, 0.5, 48)), 0.02),
    "pan that stops": lambda: shot(np.cumsum(np.r_[np.full(24, 6.0), np.zeros(24)]), 0.02),
    # Motion that starts and stops at random, like a face talking.
    "jerky": lambda: shot(
        np.cumsum(np.random.default_rng(7).choice([0.0, 0.3, 1.0, 3.0, 6.0], 72)), 0.01
    ),
    "still with grain": lambda: shot(np.zeros(48), 0.05),
    "still, clean": lambda: shot(np.zeros(48), 0.0),
    "fade": lambda: [
        noisy(at(0.0) * (1 - k / 48), np.random.default_rng(k), 0.01) for k in range(48)
    ],
    "grain only": lambda: [
        noisy(np.full((H, W, 3), 0.5, np.float32), np.random.default_rng(k), 0.05)
        for k in range(48)
    ],
}


@pytest.mark.parametrize("name", list(NO_REPEATS))
@pytest.mark.parametrize("fps", [24.0, 25.0, 30.0])
def test_footage_that_repeats_nothing_keeps_every_frame(name: str, fps: float) -> None:
    frames = NO_REPEATS[name]()
    cadence = detect_cadence(frames, fps)
    assert kept_all(cadence, fps)
    assert cadence.unique == list(range(len(frames)))
    assert cadence.unique_times == pytest.approx([i / fps for i in range(len(frames))])


def test_a_freeze_is_not_a_cadence() -> None:
    frames = [np.full((H, W, 3), 100, np.uint8)] * 5 + transfer([1], 40, grain=0.02)
    assert kept_all(detect_cadence(frames, 24.0), 24.0)


def test_repeats_on_a_cycle_of_no_film_rate_are_kept() -> None:
    # One repeat in seven frames at 24 fps would be a 20.57 fps original: no film's rate.
    frames = transfer([2, 1, 1, 1, 1, 1], 70, grain=0.02)
    assert kept_all(detect_cadence(frames, 24.0), 24.0)


def test_fewer_than_three_periods_are_not_enough() -> None:
    # Two repeats 25 frames apart (24 fps at 25) in 60 frames: it could be chance.
    frames = transfer([2, *[1] * 23], 60, grain=0.02)
    assert kept_all(detect_cadence(frames, 25.0), 25.0)


def test_a_cadence_that_changes_phase_is_kept() -> None:
    # A 3:2 cadence whose phase jumps halfway (cut after the transfer): no single cycle
    # explains the window, so nothing is dropped rather than the wrong frames.
    frames = transfer([2, 1, 1, 1], 30, grain=0.02) + transfer([1, 1, 2, 1], 30, 0.02, seed=1)
    assert kept_all(detect_cadence(frames, 30.0), 30.0)


def test_stray_slow_frames_off_the_cycle_are_not_repeats() -> None:
    # A 2:1 transfer whose original stops moving for one frame now and then: those new
    # frames look like repeats but fall off the cycle, and stay.
    rng = np.random.default_rng(5)
    speed = np.full(40, 6.0)
    speed[[7, 18, 29]] = 0.0
    positions = np.cumsum(speed)
    source = [(i // 3) * 2 + (0, 0, 1)[i % 3] for i in range(60)]
    frames = [noisy(at(positions[k]), rng, 0.01) for k in source]
    cadence = detect_cadence(frames, 24.0)
    assert cadence.original_fps == 16.0
    assert cadence.repeats == [i > 0 and source[i] == source[i - 1] for i in range(60)]


def test_short_and_empty_clips() -> None:
    assert detect_cadence([], 24.0).repeats == []
    assert kept_all(detect_cadence(transfer([2, 1], 4, grain=0.02), 24.0), 24.0)


def test_cut_detected_and_motion_is_not_a_cut() -> None:
    rng = np.random.default_rng(9)
    other = smooth_texture(rng, H, W)[..., ::-1] * 0.7
    assert is_scene_cut(original_frame(0), other)
    # A fast pan (a sixth of the width per frame) with grain stays one shot.
    noise = rng.normal(0.0, 0.05, (H, W, 3)).astype(np.float32)
    assert not is_scene_cut(original_frame(0), np.clip(original_frame(2) + noise, 0, 1))
    assert cut_score(original_frame(0), original_frame(0)) < 0.05
