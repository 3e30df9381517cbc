"""Repeat and cadence detection on grainy synthetic transfers, and scene-cut detection."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from worker.stages.cadence import cut_score, detect_cadence, is_scene_cut

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


def transfer(runs: list[int], frames: int, grain: float, seed: int = 0) -> list[np.ndarray]:
    """Show original frames per the run-length cycle ``runs``, each copy with its own grain."""
    rng = np.random.default_rng(seed)
    shown: list[np.ndarray] = []
    k = 0
    while len(shown) < frames:
        for run in runs:
            for _ in range(run):
                noisy = original_frame(k) + rng.normal(0.0, grain, (H, W, 3)).astype(np.float32)
                shown.append((np.clip(noisy, 0, 1) * 255 + 0.5).astype(np.uint8))
            k += 1
    return shown[:frames]


@pytest.mark.parametrize(
    ("runs", "fps", "original", "pattern"),
    [
        ([2, 1, 1], 24.0, 18.0, "2:1:1"),
        ([2, 1], 24.0, 16.0, "2:1"),
        ([2, 1, 1, 1], 30.0, 24.0, "2:1:1:1"),
        ([2, 2], 25.0, 12.5, "2"),
    ],
)
def test_repeats_and_cadence_under_grain(
    runs: list[int], fps: float, original: float, pattern: str
) -> None:
    frames = transfer(runs, 48, grain=0.05)
    cadence = detect_cadence(frames, fps)
    expected = [i > 0 and frames_equal_source(runs, i) for i in range(48)]
    assert cadence.repeats == expected
    assert cadence.original_fps == pytest.approx(original)
    assert cadence.pattern == pattern
    assert cadence.unique == [i for i, r in enumerate(expected) if not r]


def frames_equal_source(runs: list[int], index: int) -> bool:
    """True when displayed frame ``index`` shows the same original frame as ``index - 1``."""
    cycle = [k for k, run in enumerate(runs) for _ in range(run)]
    period = len(cycle)
    source = (index // period) * len(runs) + cycle[index % period]
    prev = ((index - 1) // period) * len(runs) + cycle[(index - 1) % period]
    return source == prev


def test_unique_times_follow_the_original_clock() -> None:
    frames = transfer([2, 1, 1], 48, grain=0.05)
    cadence = detect_cadence(frames, 24.0)
    steps = np.diff(cadence.unique_times)
    assert np.allclose(steps, 1 / 18)
    # Centred on when the unique frames are shown: never more than one output frame off.
    shown = np.array(cadence.unique) / 24.0
    assert np.abs(np.array(cadence.unique_times) - shown).max() < 1 / 24.0


def test_grainy_native_footage_has_no_repeats() -> None:
    frames = transfer([1], 48, grain=0.05)
    cadence = detect_cadence(frames, 24.0)
    assert not cadence.has_repeats
    assert cadence.original_fps == 24.0
    assert cadence.unique == list(range(48))


def test_exact_duplicates_are_repeats_even_without_clusters() -> None:
    frames = [np.full((H, W, 3), 100, np.uint8)] * 5
    cadence = detect_cadence(frames, 24.0)
    assert cadence.repeats == [False, True, True, True, True]


def test_cut_detected_and_motion_is_not_a_cut() -> None:
    rng = np.random.default_rng(9)
    other = smooth_texture(rng, H, W)[..., ::-1] * 0.7
    assert is_scene_cut(original_frame(0), other)
    # A fast pan (a sixth of the width per frame) with grain stays one shot.
    noise = rng.normal(0.0, 0.05, (H, W, 3)).astype(np.float32)
    assert not is_scene_cut(original_frame(0), np.clip(original_frame(2) + noise, 0, 1))
    assert cut_score(original_frame(0), original_frame(0)) < 0.05


def test_works_on_thumbnails_the_planner_already_made() -> None:
    frames = transfer([2, 1, 1], 48, grain=0.05)
    thumbs = [cv2.resize(f, (64, 36), interpolation=cv2.INTER_AREA) for f in frames]
    assert detect_cadence(thumbs, 24.0).repeats == detect_cadence(frames, 24.0).repeats


def test_one_repeat_a_second_is_24_fps_shown_at_25() -> None:
    frames = transfer([2, *[1] * 23], 100, grain=0.03)
    cadence = detect_cadence(frames, 25.0)
    assert [i for i, r in enumerate(cadence.repeats) if r] == [1, 26, 51, 76]
    assert cadence.original_fps == 24.0
    assert cadence.pattern == "2:1x23"


def test_slowing_motion_is_not_a_repeat() -> None:
    # A pan slowing from 12 to 2 px a frame: differences shrink smoothly, none is a repeat.
    rng = np.random.default_rng(4)
    positions = np.cumsum(np.linspace(12.0, 2.0, 40)).round().astype(int)
    frames = [
        np.clip(BACKGROUND[:, x : x + W] + rng.normal(0, 0.02, (H, W, 3)), 0, 1) for x in positions
    ]
    assert not detect_cadence(frames, 24.0).has_repeats
