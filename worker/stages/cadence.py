"""Pure helpers over small thumbnails: scene cuts, repeated frames and the original cadence.

Thumbnails are area-averaged grey images a few dozen pixels wide: averaging hundreds of
pixels into one cancels film grain and compression noise, so what is left is picture
content. Frames may be torch tensors ((1, 3, H, W) or (3, H, W), RGB in [0, 1]) or numpy
arrays ((H, W, 3) or (H, W), uint8 or float in [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby

import cv2
import numpy as np
import torch

Frame = torch.Tensor | np.ndarray

# Frame rates that films were shot or transferred at (12.5: drawn on twos for PAL); a cycle
# of repeats is a cadence only when its original rate is one of these.
KNOWN_RATES = (8.0, 12.0, 12.5, 15.0, 16.0, 18.0, 20.0, 22.0, 24.0, 25.0, 30.0)
# A cycle's rate is an exact fraction of the shown rate: it must match a known rate to
# rounding (a loose match would let 24 fps * 12/23 = 12.52 pass for 12.5).
RATE_TOLERANCE = 0.0005
# Longest cycle tried (24 fps shown at 25 repeats once in 25 frames), and how many periods
# of it the window must hold.
MAX_PERIOD = 30
MIN_CYCLES = 3
# Motion below this (mean thumbnail difference, 3/4 of a grey level) is a still picture:
# there the encoder's own frame pattern (B-frames every fourth frame) makes differences
# rise and fall threefold on a cycle (measured 0.12-0.8 on a slow pan at CRF 28), so
# nothing in it is judged a repeat or a new frame.
MIN_MOTION = 0.75 / 255
# Judged repeats a cycle needs, and the share of them that may look like motion (noise:
# on footage that repeats nothing, the quietest phase of any cycle fails two thirds).
MIN_JUDGED = 3
MAX_FAILED = 0.15


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


@dataclass(frozen=True)
class _Cycle:
    """A hypothesis: the shown frames repeat on a ``period`` with these repeat ``phases``."""

    period: int
    phases: frozenset[int]
    original_fps: float
    # Per phase: frames whose neighbours move enough to judge them, and those of them that
    # disagree with the phase (a repeat that looks like motion, a new frame like a duplicate).
    judged: tuple[int, ...]
    failed: tuple[int, ...]

    @property
    def errors(self) -> float:
        """Share of the judged frames the cycle calls wrong."""
        return sum(self.failed) / max(sum(self.judged), 1)

    @property
    def fits(self) -> bool:
        """Whether the cycle explains the window: its duplicates, and only them."""
        judged = sum(self.judged[p] for p in self.phases)
        failed = sum(self.failed[p] for p in self.phases)
        # A phase too many would show motion on a repeat phase, a phase too few duplicates
        # on a new-frame phase: each phase must hold to its kind for two thirds of its
        # frames at least.
        consistent = all(3 * f <= j for f, j in zip(self.failed, self.judged, strict=True))
        # Enough evidence: each repeat of the cycle judged in three periods at least (a
        # cycle that calls moving frames repeats raises its own noise floor and would
        # otherwise excuse them by judging almost nothing).
        enough = judged >= MIN_JUDGED and all(self.judged[p] >= MIN_CYCLES for p in self.phases)
        return enough and failed <= MAX_FAILED * judged and consistent


def _known(rate: float) -> bool:
    """Whether a rate is a film rate, or one slowed by NTSC's 1000/1001 (23.976 for 24)."""
    return any(
        abs(rate - known * slow) <= RATE_TOLERANCE * known
        for known in KNOWN_RATES
        for slow in (1.0, 1000 / 1001)
    )


def _cycles(n: int, fps: float) -> list[tuple[int, int]]:
    """(period, unique frames per period) whose original rate is a known one, with three
    periods in ``n`` frames."""
    out = []
    for period in range(2, min(MAX_PERIOD, n // MIN_CYCLES) + 1):
        for unique in range(1, period):
            # Reduced fractions only: (4, 2) is the (2, 1) cycle seen twice.
            if math.gcd(unique, period) == 1 and _known(fps * unique / period):
                out.append((period, unique))
    return out


def _judge(diffs: np.ndarray, period: int, unique: int, fps: float, min_ratio: float) -> _Cycle:
    """Judge every frame against the cycle whose repeat phases are its quietest ones."""
    m = len(diffs)
    phase = np.arange(m) % period
    quiet = np.argsort([np.median(diffs[p::period]) for p in range(period)], kind="stable")
    phases = frozenset(int(p) for p in quiet[: period - unique])
    on = np.isin(phase, list(phases))
    new = np.flatnonzero(~on)
    # What a repeat differs by (grain, compression): a picture moving less than a few times
    # this, or barely at all, is still, and there repeats cannot be told from new frames.
    still = max(MIN_MOTION, min_ratio * float(np.median(diffs[on])))
    judged, failed = [0] * period, [0] * period
    for i in range(m):
        # The motion around a frame: the nearest new-frame differences, two either side.
        at = int(np.searchsorted(new, i))
        after = at if on[i] else at + 1
        near = np.concatenate([new[max(at - 2, 0) : at], new[after : after + 2]])
        motion = float(np.median(diffs[near])) if len(near) else 0.0
        if motion < still:
            continue
        duplicate = bool(diffs[i] * min_ratio <= motion)
        judged[phase[i]] += 1
        failed[phase[i]] += duplicate != bool(on[i])
    return _Cycle(period, phases, fps * unique / period, tuple(judged), tuple(failed))


def _find_cycle(diffs: np.ndarray, fps: float, min_ratio: float) -> _Cycle | None:
    """The cycle that explains the differences best, or None when none explains them."""
    fitting = [
        cycle
        for period, unique in _cycles(len(diffs) + 1, fps)
        if (cycle := _judge(diffs, period, unique, fps, min_ratio)).fits
    ]
    # Fewest frames called wrong; on a tie the shortest period (they come in that order).
    return min(fitting, key=lambda c: c.errors, default=None)


def _pattern(cycle: _Cycle) -> str:
    """The cycle's run lengths: '2:1:1' for 18 fps at 24, '2:1x23' for 24 at 25."""
    # Frame f repeats its predecessor when difference f - 1 is on a repeat phase.
    unique = [f for f in range(1, cycle.period + 1) if (f - 1) % cycle.period not in cycle.phases]
    runs = [b - a for a, b in zip(unique, [*unique[1:], unique[0] + cycle.period], strict=True)]
    # The greatest rotation (it starts with the longest run): one name per cadence.
    runs = max(runs[i:] + runs[:i] for i in range(len(runs)))
    if len(runs) <= 6:
        return ":".join(str(r) for r in runs)
    groups = [(r, len(list(g))) for r, g in groupby(runs)]
    return ":".join(str(r) if k == 1 else f"{r}x{k}" for r, k in groups)


def detect_cadence(
    frames: Sequence[Frame],
    fps: float,
    min_ratio: float = 3.0,
) -> Cadence:
    """Find frames that repeat their predecessor on a transfer's cycle, and the original rate.

    A transfer repeat is a duplicate: it differs from its predecessor by grain and
    compression alone, a new frame by motion too; and transfers repeat on a fixed cycle
    whose original rate (``fps`` times unique frames per period) is a film rate. So every
    cycle of a known rate that fits three times in the window is tried over all of it, its
    repeat phases being its quietest ones. Each frame where the picture moves is judged: a
    duplicate differs ``min_ratio`` times less than the nearest new frames. A cycle fits
    when its repeats are duplicates (a few noisy exceptions aside), each of its phases holds
    to its kind, and each repeat phase was judged in three periods. Where nothing moves
    nothing is judged, so a still shot, a freeze, a fade or a slow moment has no cadence; nor
    does stray slow motion, which keeps no cycle of a film rate. Of the cycles that fit, the
    one that calls fewest frames wrong decides every frame; with none, every frame is kept.
    """
    n = len(frames)
    thumbs = [thumbnail(f) for f in frames]
    diffs = np.array(
        [float(np.abs(thumbs[i] - thumbs[i - 1]).mean()) for i in range(1, n)], dtype=np.float64
    )
    cycle = _find_cycle(diffs, fps, min_ratio)
    shown = np.arange(n, dtype=np.float64) / fps
    if cycle is None:
        return Cadence(
            repeats=[False] * n,
            unique=list(range(n)),
            fps=fps,
            original_fps=fps,
            pattern="1" if n else "",
            unique_times=[float(t) for t in shown],
        )
    repeats = [False, *((i % cycle.period) in cycle.phases for i in range(n - 1))]
    unique = [i for i in range(n) if not repeats[i]]
    # Unique frames are shown late by up to a repeat; centre them on the original clock so
    # the output stays in sync with the sound.
    ideal = np.arange(len(unique), dtype=np.float64) / cycle.original_fps
    offset = float(np.median(shown[unique] - ideal))
    return Cadence(
        repeats=repeats,
        unique=unique,
        fps=fps,
        original_fps=cycle.original_fps,
        pattern=_pattern(cycle),
        unique_times=[offset + float(t) for t in ideal],
    )
