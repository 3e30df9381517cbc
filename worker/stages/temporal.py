"""What the repair filters that look along time share: a sliding window over a stream of
frames, a robust straight-line trend through a window's measurements, luma, and shot cuts
that a change of brightness does not fake.

A filter with radius ``r`` makes each output frame from the frames at most ``r`` away, in the
same shot: a chunk that decodes ``r`` frames beyond either edge (the film's own ends
excepted) therefore makes the same frames as an unchunked run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

T = TypeVar("T")

# BT.601 weights, as the cadence thumbnails use: a measure of brightness, not a colour space.
LUMA = (0.299, 0.587, 0.114)
# Width of the thumbnails brightness and cuts are measured on: averaging ~100 pixels into
# one cancels grain, so what is left is picture.
THUMB_WIDTH = 64
# Tukey's bisquare constant (95% efficiency on Gaussian residuals).
BISQUARE = 4.685
# Cuts are judged on 32-px-wide thumbnails that may move CUT_SHIFT px (10% of the width, a
# fast pan) and still be the same shot if they correlate by CUT_CORRELATION; a thumbnail
# flatter than CUT_FLAT has no layout to judge.
CUT_WIDTH = 32
CUT_SHIFT = 3
CUT_CORRELATION = 0.5
CUT_FLAT = 2.0 / 255


def luma(frames: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB to (N, 1, H, W) luma; one channel is taken as luma already."""
    if frames.shape[1] == 1:
        return frames
    weights = frames.new_tensor(LUMA).view(1, 3, 1, 1)
    return (frames * weights).sum(1, keepdim=True)


def thumb(frame: torch.Tensor, width: int = THUMB_WIDTH) -> np.ndarray:
    """An area-averaged luma thumbnail (h, ``width``) of a (1, C, H, W) frame, float64."""
    grey = luma(frame.to(torch.float32))
    h, w = grey.shape[-2:]
    if w > width:
        grey = F.adaptive_avg_pool2d(grey, (max(1, round(h * width / w)), width))
    return grey[0, 0].to("cpu", torch.float64).numpy()


def shot_change(before: np.ndarray, after: np.ndarray) -> bool:
    """Whether two thumbnails are of different shots: their layouts no longer correlate,
    allowing the picture to move a few pixels. A correlation does not see brightness or
    contrast, so flicker or a fade is not taken for a cut; a frame with no picture (black)
    is taken for part of a fade."""
    a, b = (_cut_thumb(t) for t in (before, after))
    h, w = a.shape
    s = min(CUT_SHIFT, h // 4, w // 4)
    if min(a.std(), b.std()) < CUT_FLAT or s < 1:
        return False
    scores = cv2.matchTemplate(b, a[s : h - s, s : w - s], cv2.TM_CCOEFF_NORMED)
    return float(np.nan_to_num(scores, nan=1.0).max()) < CUT_CORRELATION


def _cut_thumb(image: np.ndarray) -> np.ndarray:
    h, w = image.shape
    small: np.ndarray = image.astype(np.float32)
    if w > CUT_WIDTH:
        size = (CUT_WIDTH, max(1, round(h * CUT_WIDTH / w)))
        small = cv2.resize(small, size, interpolation=cv2.INTER_AREA)
    return small


def windows(items: Iterable[T], radius: int) -> Iterator[tuple[list[T], int]]:
    """Each item with up to ``radius`` items either side (fewer at the stream's ends), in
    order: (the window, the item's place in it). Holds ``2 * radius + 1`` items at most."""
    held: list[T] = []
    offset = 0  # stream index of held[0]
    centre = 0  # stream index of the next item to yield

    def window() -> tuple[list[T], int]:
        low = max(centre - radius - offset, 0)
        return held[low : centre + radius + 1 - offset], centre - offset - low

    for item in items:
        held.append(item)
        if offset + len(held) - 1 - centre >= radius:
            yield window()
            centre += 1
            drop = centre - radius - offset
            if drop > 0:
                del held[:drop]
                offset += drop
    while centre < offset + len(held):
        yield window()
        centre += 1


def shot_span(breaks: Sequence[bool], at: int) -> tuple[int, int]:
    """The stretch (first, last) of a window around ``at`` that holds no break;
    ``breaks[i]`` says whether item ``i`` is cut off from item ``i - 1``."""
    first = at
    while first > 0 and not breaks[first]:
        first -= 1
    last = at
    while last + 1 < len(breaks) and not breaks[last + 1]:
        last += 1
    return first, last


def trends_at(
    offsets: Sequence[float] | np.ndarray, values: np.ndarray, floor: float
) -> np.ndarray:
    """For each row of ``values`` (k, n), measured at ``offsets`` (n), the value at offset 0
    of a robust straight line through it: least squares reweighted by Tukey's bisquare, so
    an outlier does not bend it. A linear trend (a fade, a pan) passes unchanged; fewer
    than four points get a robust level. ``floor`` is the smallest residual scale trusted
    (the measurement's own noise)."""
    x = np.asarray(offsets, dtype=np.float64)
    y = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if y.shape[1] == 1:
        return y[:, 0].copy()
    line = y.shape[1] >= 4
    weights = np.ones_like(y)
    level = y.mean(axis=1)
    for _ in range(4):
        level, slope = weighted_line(x, y, weights) if line else (_weighted_mean(y, weights), 0)
        residual = y - level[:, None] - np.asarray(slope)[..., None] * x
        scale = np.maximum(1.4826 * np.median(np.abs(residual), axis=1), floor)
        new = np.clip(1.0 - (residual / (BISQUARE * scale[:, None])) ** 2, 0.0, None) ** 2
        # A row left with too few weighted points keeps its last fit.
        enough = new.sum(axis=1) >= (2 if line else 1)
        weights = np.where(enough[:, None], new, weights)
    return level


def _weighted_mean(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (w * y).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12)


def weighted_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intercept and slope of each row of ``y`` (k, n) against ``x`` (n), by weighted least
    squares (a level where the weights leave one point in x)."""
    sw, sx, sxx = w.sum(axis=1), (w * x).sum(axis=1), (w * x * x).sum(axis=1)
    sy, sxy = (w * y).sum(axis=1), (w * x * y).sum(axis=1)
    det = sw * sxx - sx * sx
    ok = det > 1e-9 * np.maximum(sw * sxx, 1e-12)
    safe = np.where(ok, det, 1.0)
    intercept = np.where(ok, (sy * sxx - sx * sxy) / safe, sy / np.maximum(sw, 1e-12))
    slope = np.where(ok, (sw * sxy - sx * sy) / safe, 0.0)
    return intercept, slope


def trend_at(offsets: Sequence[float], values: Sequence[float], floor: float) -> float:
    """``trends_at`` of one row of values."""
    return float(trends_at(offsets, np.asarray(values, dtype=np.float64)[None], floor)[0])


def residuals(values: np.ndarray, breaks: Sequence[bool], radius: int, floor: float) -> np.ndarray:
    """Each row of ``values`` (k, n: k measures of n frames) less its trend at each frame
    (``trends_at`` over ``radius`` either side, within the frame's shot): what a smooth
    change of the measure does not explain."""
    y = np.atleast_2d(np.asarray(values, dtype=np.float64))
    n = y.shape[1]
    out = np.empty_like(y)
    for i in range(n):
        lo, hi = max(i - radius, 0), min(i + radius, n - 1)
        first, last = shot_span(breaks[lo : hi + 1], i - lo)
        span = np.arange(lo + first, lo + last + 1)
        out[:, i] = y[:, i] - trends_at(span - i, y[:, span], floor)
    return out


def step_correlation(values: np.ndarray, breaks: Sequence[bool]) -> float:
    """How each frame-to-frame step of the rows of ``values`` (k, n) follows the one before,
    within shots: the correlation of consecutive steps, pooled. Damage new in every frame
    (a shutter's flicker, a gate's weave) has uncorrelated values, whose steps correlate
    at -0.5; a motion or a drift that lasts a few frames steps alike, at 0 or above."""
    y = np.atleast_2d(np.asarray(values, dtype=np.float64))
    steps = np.diff(y, axis=1)
    ok = np.array([not breaks[i + 1] for i in range(steps.shape[1])])
    pair = ok[:-1] & ok[1:]
    a, b = steps[:, :-1][:, pair], steps[:, 1:][:, pair]
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / norm if norm > 0 else 0.0
