"""Pure helpers over small thumbnails: scene cuts, repeated frames and the original cadence.

Thumbnails are area-averaged grey images a few dozen pixels wide: averaging hundreds of
pixels into one cancels film grain and compression noise, so what is left is picture
content. Frames may be torch tensors ((1, 3, H, W) or (3, H, W), RGB in [0, 1]) or numpy
arrays ((H, W, 3) or (H, W), uint8 or float in [0, 1]).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby

import cv2
import numpy as np
import torch

Frame = torch.Tensor | np.ndarray

# Frame rates that films were shot or transferred at; a measured cadence snaps to these.
KNOWN_RATES = (8.0, 12.0, 15.0, 16.0, 18.0, 20.0, 22.0, 24.0, 25.0, 30.0)


def thumbnail(frame: Frame, width: int = 64) -> np.ndarray:
    """Area-averaged grey thumbnail (float32 in [0, 1]) ``width`` pixels wide."""
    if isinstance(frame, torch.Tensor):
        image = frame.detach().to("cpu", torch.float32)
        if image.dim() == 4:
            image = image[0]
        array = image.permute(1, 2, 0).numpy() if image.dim() == 3 else image.numpy()
    else:
        array = np.asarray(frame)
        if array.dtype == np.uint8:
            array = array.astype(np.float32) / 255.0
    array = np.asarray(array, dtype=np.float32)
    grey = array @ np.array([0.299, 0.587, 0.114], dtype=np.float32) if array.ndim == 3 else array
    h, w = grey.shape
    if w <= width:
        return np.ascontiguousarray(grey)
    size = (width, max(1, round(h * width / w)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _colour_histogram(frame: Frame, bins: int = 16) -> np.ndarray:
    if isinstance(frame, torch.Tensor):
        image = frame.detach().to("cpu", torch.float32)
        image = image[0] if image.dim() == 4 else image
        array = image.permute(1, 2, 0).numpy()
    else:
        array = np.asarray(frame)
        array = array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        array = array[..., None]
    h, w = array.shape[:2]
    if w > 128:
        array = cv2.resize(array, (128, max(1, round(h * 128 / w))), interpolation=cv2.INTER_AREA)
        array = array.reshape(array.shape[0], array.shape[1], -1)
    # bincount on quantised values: several times faster than np.histogram per channel.
    quantised = np.clip((array * bins).astype(np.int64), 0, bins - 1)
    hist = np.stack(
        [np.bincount(quantised[..., c].ravel(), minlength=bins) for c in range(array.shape[2])]
    ).astype(np.float64)
    return hist / hist.sum(axis=1, keepdims=True)


def cut_score(frame0: Frame, frame1: Frame, max_shift: int = 3) -> float:
    """How unlike two frames are, in [0, ~2]: motion-tolerant, ~0 within a shot, > 1 at a cut."""
    a, b = thumbnail(frame0, 32), thumbnail(frame1, 32)
    # Allow the content to move a few thumbnail pixels (about 10% of the width) so a fast pan
    # is not a cut; the best aligned difference is then compared with the picture contrast.
    best = np.inf
    h, w = a.shape
    s = min(max_shift, h // 4, w // 4)
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            pa = a[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
            pb = b[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
            best = min(best, float(np.abs(pa - pb).mean()))
    contrast = 0.5 * (float(a.std()) + float(b.std())) + 0.02
    structure = best / contrast
    hist = 0.5 * float(np.abs(_colour_histogram(frame0) - _colour_histogram(frame1)).sum(1).mean())
    # A cut changes both the layout and the colours; motion changes at most the layout.
    return structure * 0.5 + hist * 1.5


def is_scene_cut(frame0: Frame, frame1: Frame, threshold: float = 0.62) -> bool:
    """True when ``frame1`` starts a new shot rather than continuing ``frame0``'s."""
    # On the sample footage cuts score 0.73-1.83 (even across a dropped frame), motion at
    # most 0.52 with a frame dropped between the pair; 0.62 sits between.
    return cut_score(frame0, frame1) > threshold


@dataclass(frozen=True)
class Cadence:
    """Which frames repeat their predecessor, and the frame rate of the original they imply."""

    repeats: list[bool]
    unique: list[int]
    fps: float
    original_fps: float
    pattern: str
    # Estimated true times (seconds from frame 0) of the unique frames on the original clock.
    unique_times: list[float] = field(default_factory=list)

    @property
    def has_repeats(self) -> bool:
        """True when at least one frame repeats its predecessor."""
        return any(self.repeats)


def _snap_rate(rate: float) -> float:
    for known in KNOWN_RATES:
        if abs(rate - known) <= 0.03 * known:
            return known
    return round(rate, 3)


def _pattern(runs: list[int]) -> str:
    """Shortest repeating run-length cycle: '2:1:1' for 18 fps at 24, '2:1x23' for 24 at 25."""
    if not runs:
        return ""
    # Ignore the first and last runs, which the chunk edges may have cut short.
    body = runs[1:-1] if len(runs) > 4 else runs
    mean_run = float(np.mean(body))
    best: tuple[float, int] | None = None
    for period in range(1, min(30, len(body)) + 1):
        cycle = body[:period]
        # The cycle must also keep the average run: a plain '1' is not 24 fps shown at 25.
        if abs(float(np.mean(cycle)) - mean_run) > 0.01:
            continue
        match = sum(body[i] == cycle[i % period] for i in range(len(body))) / len(body)
        if match >= 0.9 and (best is None or match > best[0]):
            best = (match, period)
    if best is None:
        return ":".join(str(r) for r, _ in Counter(body).most_common())
    cycle = body[: best[1]]
    # Rotate so the cycle starts with its longest run: one canonical name per cadence.
    start = int(np.argmax(cycle))
    cycle = cycle[start:] + cycle[:start]
    if len(cycle) <= 6:
        return ":".join(str(r) for r in cycle)
    groups = [(r, len(list(g))) for r, g in groupby(cycle)]
    return ":".join(str(r) if k == 1 else f"{r}x{k}" for r, k in groups)


def _periodic_phases(flags: np.ndarray, max_period: int = 30) -> tuple[int, np.ndarray] | None:
    """Shortest period whose phases explain >= 90% of the flags, with its repeat phases."""
    n = len(flags)
    for period in range(2, min(max_period, n // 2) + 1):
        rates = np.array([flags[phase::period].mean() for phase in range(period)])
        phases = rates >= 0.5
        if not phases.any():
            continue
        expected = phases[np.arange(n) % period]
        if (expected == flags).mean() >= 0.9:
            return period, phases
    return None


def detect_cadence(
    frames: Sequence[Frame],
    fps: float,
    min_ratio: float = 3.0,
    window: int = 6,
    exact: float = 1e-4,
) -> Cadence:
    """Find frames that repeat their predecessor (robust to grain) and the original cadence.

    A repeat differs from its predecessor by noise alone, a new frame by motion too. Motion
    changes from shot to shot, so each difference is compared with the motion around it: the
    75th percentile of the differences within ``window`` frames either side, which is a
    new-frame difference for every usual cadence (even 2:2, where half are repeats). A
    candidate is ``min_ratio`` times smaller than that. Transfers repeat on a fixed cycle, so
    when the candidates follow one, the cycle decides (slowing motion off the cycle is not a
    repeat; a grainy repeat on it is); otherwise only clear candidates count. In a still shot
    all differences are alike and none is a repeat. Differences below ``exact`` are repeats
    whatever their neighbours.
    """
    n = len(frames)
    if n == 0:
        return Cadence(repeats=[], unique=[], fps=fps, original_fps=fps, pattern="")
    thumbs = [thumbnail(f) for f in frames]
    diffs = np.array(
        [float(np.abs(thumbs[i] - thumbs[i - 1]).mean()) for i in range(1, n)], dtype=np.float64
    )
    # Too few neighbours to judge (clips of under four frames): nothing is a repeat.
    ratios = np.zeros(len(diffs))
    for i, diff in enumerate(diffs):
        around = diffs[max(0, i - window) : i + window + 1]
        if len(around) >= 3:
            ratios[i] = np.percentile(around, 75) / max(diff, 1e-9)
    candidates = ratios > min_ratio
    cycle = _periodic_phases(candidates) if candidates.any() else None
    if cycle is not None:
        period, phases = cycle
        on_cycle = phases[np.arange(len(diffs)) % period]
        repeat_diff = on_cycle & (ratios > min_ratio / 2)
    else:
        repeat_diff = ratios > 2 * min_ratio
    repeat_diff |= diffs < exact
    repeats = [False, *(bool(r) for r in repeat_diff)]
    unique = [i for i in range(n) if not repeats[i]]

    runs = [b - a for a, b in zip(unique, [*unique[1:], n], strict=True)]
    # Only a cycle of repeats is a cadence; stray repeats (a freeze, a glitch) leave the rate.
    original = _snap_rate(fps * len(unique) / n) if cycle is not None else fps
    shown = np.array(unique, dtype=np.float64) / fps
    if cycle is None:
        times = [float(t) for t in shown]
    else:
        # Unique frames are shown late by up to a repeat; centre them on the original clock
        # so the output stays in sync with the sound.
        ideal = np.arange(len(unique), dtype=np.float64) / original
        offset = float(np.median(shown - ideal))
        times = [offset + float(t) for t in ideal]
    return Cadence(
        repeats=repeats,
        unique=unique,
        fps=fps,
        original_fps=original,
        pattern=_pattern(runs),
        unique_times=times,
    )
