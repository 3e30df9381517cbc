"""Stabilise gate weave: the whole picture's jitter removed, the camera's own moves kept.

A film that does not sit still in the gate moves by a pixel or a few from one frame to the
next, all of it at once. The translation between consecutive frames is measured by phase
correlation on luma (grain and flicker barely move its peak), chained into each frame's
position relative to its neighbours ``RADIUS`` either side in the same shot, and a robust
straight line through those positions gives where the frame would be without the jitter:
a steady pan is a straight line, so it is kept. The frame is moved there (bicubic).

Borders: the strip a moved frame uncovers (the weave's few pixels) repeats the frame's edge
pixels. Cropping would have to scale every frame up by the largest weave of the film (a
softer picture, everywhere) or change the film's size; filling from other frames would put
another moment's picture at the edge. Repeating the edge touches only those pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from worker.stages.splat import backwarp
from worker.stages.temporal import (
    luma,
    residuals,
    shot_change,
    shot_span,
    step_correlation,
    thumb,
    trends_at,
    windows,
)

# 15 frames: weave is random from frame to frame, so the longer the line, the less of the
# jitter stays in it; a pan changing speed over half a second is still close to a line.
RADIUS = 7
# Correlation is measured on luma at most this wide (shifts are scaled back).
MEASURE_WIDTH = 512
# A correlation peak weaker than this is no measurement (a flash, a frame of noise).
MIN_RESPONSE = 0.02
# A step this far from the others (in robust deviations, and px) is a failed measurement.
OUTLIER_SIGMAS = 4.0
OUTLIER_PX = 4.0
# Positions are measured to ~1/20 px; moves below this are not made (a resample softens).
SHIFT_FLOOR = 0.05
# A gate moves the whole picture as one: a step is weave evidence only where the frame's
# quarters (at least RIGID_VOTES of them with a clear peak) each moved as the whole did,
# within RIGID_PX plus RIGID_SHARE of the move. Something moving in a still shot drags a
# whole-frame correlation by a pixel but moves one quarter only. Half the measured steps
# must be rigid before a sample shows weave at all.
RIGID_VOTES = 3
RIGID_PX = 0.5
RIGID_SHARE = 0.25
RIGID_STEPS = 0.5


@dataclass(frozen=True, eq=False)
class Step:
    """How a frame's picture moved from the previous frame's (px, x and y), whether that is
    a measurement (same shot, a clear peak), and the frame's own measuring images."""

    dx: float
    dy: float
    reliable: bool
    grey: np.ndarray
    small: np.ndarray
    # The frame's px per measuring image px.
    scale: float = 1.0


def _hann(shape: tuple[int, int]) -> np.ndarray:
    return cv2.createHanningWindow((shape[1], shape[0]), cv2.CV_64F)


def phase_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """How the picture moved from ``a`` to ``b`` (dx, dy in px) and the peak's strength.

    The whole-pixel part first, then the fraction on the overlap of the two (a window over
    the whole frame pulls a large shift towards zero by a few per cent)."""
    (dx, dy), response = cv2.phaseCorrelate(a, b, _hann(a.shape))
    ix, iy = round(dx), round(dy)
    h, w = a.shape
    if (ix or iy) and abs(ix) < w // 2 and abs(iy) < h // 2:
        a = a[max(0, -iy) : h - max(0, iy), max(0, -ix) : w - max(0, ix)]
        b = b[max(0, iy) : h - max(0, -iy), max(0, ix) : w - max(0, -ix)]
        (fx, fy), _ = cv2.phaseCorrelate(
            np.ascontiguousarray(a), np.ascontiguousarray(b), _hann(a.shape)
        )
        dx, dy = ix + fx, iy + fy
    return float(dx), float(dy), float(response)


def measuring_image(frame: torch.Tensor) -> tuple[np.ndarray, float]:
    """Luma at most MEASURE_WIDTH wide (float64) and its scale to the frame's pixels."""
    grey = luma(frame.to(torch.float32))
    w = grey.shape[-1]
    scale = 1.0
    if w > MEASURE_WIDTH:
        scale = w / MEASURE_WIDTH
        size = (max(1, round(grey.shape[-2] / scale)), MEASURE_WIDTH)
        grey = F.interpolate(grey, size=size, mode="area")
    return grey[0, 0].to("cpu", torch.float64).numpy(), scale


def steps(frames: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, Step]]:
    """Each frame with how it moved from the previous one."""
    before: Step | None = None
    for frame in frames:
        grey, scale = measuring_image(frame)
        small = thumb(frame)
        if before is None or before.grey.shape != grey.shape:
            step = Step(0.0, 0.0, False, grey, small)
        else:
            dx, dy, response = phase_shift(before.grey, grey)
            ok = response >= MIN_RESPONSE and not shot_change(before.small, small)
            step = Step(dx * scale, dy * scale, ok, grey, small, scale)
        yield frame, step
        before = step


def trusted(measured: list[Step]) -> list[bool]:
    """Which steps to trust: measured, and within OUTLIER_SIGMAS robust deviations (or
    OUTLIER_PX) of the others' median: a correlation peak can jump to a repeating pattern or
    a flat region's noise, and one wrong step would move every position after it."""
    ok = [s.reliable for s in measured]
    found = np.array([[s.dx, s.dy] for s, k in zip(measured, ok, strict=True) if k])
    if len(found) < 3:
        return ok
    middle = np.median(found, axis=0)
    spread = 1.4826 * np.median(np.abs(found - middle), axis=0)
    limit = np.maximum(OUTLIER_SIGMAS * spread, OUTLIER_PX)
    return [
        k and bool(np.all(np.abs(np.array([s.dx, s.dy]) - middle) <= limit))
        for s, k in zip(measured, ok, strict=True)
    ]


def positions(window: list[Step], at: int) -> tuple[list[int], list[float], list[float]]:
    """Offsets and x, y positions of the window's frames relative to ``window[at]``'s, over
    the stretch joined to it by trusted measurements."""
    first, last = shot_span([not k for k in trusted(window)], at)
    xs, ys = [0.0] * len(window), [0.0] * len(window)
    for i in range(at + 1, last + 1):
        xs[i], ys[i] = xs[i - 1] + window[i].dx, ys[i - 1] + window[i].dy
    for i in range(at - 1, first - 1, -1):
        xs[i], ys[i] = xs[i + 1] - window[i + 1].dx, ys[i + 1] - window[i + 1].dy
    span = range(first, last + 1)
    return [i - at for i in span], [xs[i] for i in span], [ys[i] for i in span]


def shift(frame: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """The picture moved by (dx, dy) px, bicubic; the uncovered strip repeats the edge."""
    if abs(dx) < SHIFT_FLOOR and abs(dy) < SHIFT_FLOOR:
        return frame
    h, w = frame.shape[-2:]
    flow = frame.new_empty((1, 2, h, w), dtype=torch.float32)
    flow[:, 0], flow[:, 1] = -dx, -dy
    return backwarp(frame, flow, "bicubic")


def stabilised(frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """The frames (1, C, H, W) of a stretch of film with the gate weave taken out."""
    for window, at in windows(steps(frames), RADIUS):
        offsets, xs, ys = positions([s for _, s in window], at)
        dx, dy = trends_at(offsets, np.array([xs, ys]), SHIFT_FLOOR)
        yield shift(window[at][0], float(dx), float(dy))


def stabilise(frames: torch.Tensor) -> torch.Tensor:
    """Stabilise (T, C, H, W) consecutive frames."""
    return torch.cat(list(stabilised(frames.split(1))))


def quarters(image: np.ndarray) -> list[np.ndarray]:
    """The image's four quarters."""
    h, w = image.shape[0] // 2, image.shape[1] // 2
    return [image[y : y + h, x : x + w] for y in (0, h) for x in (0, w)]


def moved_as_one(before: np.ndarray, after: np.ndarray, dx: float, dy: float) -> bool:
    """Whether every quarter of the picture with a clear correlation peak (RIGID_VOTES at
    least) moved from ``before`` to ``after`` as the whole did (``dx``, ``dy``, in the
    measuring images' px)."""
    tolerance = RIGID_PX + RIGID_SHARE * math.hypot(dx, dy)
    votes = 0
    for a, b in zip(quarters(before), quarters(after), strict=True):
        qx, qy, response = phase_shift(np.ascontiguousarray(a), np.ascontiguousarray(b))
        if response < MIN_RESPONSE:
            continue
        if math.hypot(qx - dx, qy - dy) > tolerance:
            return False
        votes += 1
    return votes >= RIGID_VOTES


def rigid(measured: list[Step], ok: list[bool]) -> list[bool]:
    """Which of the ``ok`` steps moved the whole picture as one (``moved_as_one``)."""
    rigid = [False] * len(measured)
    for i in range(1, len(measured)):
        if ok[i]:
            before, step = measured[i - 1], measured[i]
            dx, dy = step.dx / step.scale, step.dy / step.scale
            rigid[i] = moved_as_one(before.grey, step.grey, dx, dy)
    return rigid


def weave_signature(frames: Iterable[torch.Tensor]) -> tuple[float, float]:
    """Gate weave in px (the RMS over measured frames of their position less its trend) and
    how the position steps from frame to frame (``step_correlation``: about -0.5 for a gate
    that puts each frame anywhere, 0 or more for a hand-held camera's sway). Only steps
    that moved the whole picture as one count (``rigid``); where fewer than RIGID_STEPS of
    the measured steps did, the picture is not weaving: things in it are moving."""
    measured = [s for _, s in steps(frames)]
    ok = trusted(measured)
    whole = rigid(measured, ok)
    if sum(whole) < max(3, RIGID_STEPS * sum(ok)):
        return 0.0, 0.0
    breaks = [not k for k in whole]
    moves = [[0.0, 0.0] if b else [s.dx, s.dy] for s, b in zip(measured, breaks, strict=True)]
    track = np.cumsum(np.array(moves).T, axis=1)
    jitter = residuals(track, breaks, RADIUS, SHIFT_FLOOR)
    rms = float(np.sqrt(np.mean(np.hypot(*jitter) ** 2)))
    return rms, step_correlation(jitter, breaks)


def weave(frames: Iterable[torch.Tensor]) -> float:
    """Gate weave in px (see ``weave_signature``)."""
    return weave_signature(frames)[0]
