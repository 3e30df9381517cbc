"""Deflicker: each frame's brightness brought to the smooth trend of its shot.

A hand-cranked shutter and uneven printing make whole frames brighter or darker than their
neighbours. Each frame is measured as the mean luma of the cells of a GRID × GRID split (on
a thumbnail, so grain does not count), and each cell's value compared with a robust
straight line through that cell's values in the frames ``RADIUS`` either side, in the same
shot. The frame is then multiplied by the median of its cells' ratios to their trends: a
cell that something crossed disagrees with the others and has no say, so motion is not
taken for the lamp. A fade is a trend, so it is kept; a cut ends the window, so the shot
after it is not pulled towards the one before. (Measured on the benchmark's clips, this one
gain beat a gain and an offset fitted over the cells, and a contrast match: a second
parameter follows motion, not light.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from worker.stages.temporal import (
    residuals,
    shot_change,
    shot_span,
    step_correlation,
    thumb,
    trends_at,
    windows,
)

# 9 frames: the 7-frame average measured in shared/notes/weights.md, a frame wider each side
# because the bisquare gives an outlying frame no weight in its own trend.
RADIUS = 4
# Cell means are measured to ~1/4 grey level; a trend is not trusted finer.
LEVEL_FLOOR = 0.25 / 255
# Brightness is corrected within these gains (a flash or a fade to black is not "flicker");
# a cell darker than DARK is taken as that dark (its ratio would be noise).
MAX_GAIN = 1.25
DARK = 4.0 / 255
GRID = 4


@dataclass(frozen=True, eq=False)
class Level:
    """A frame's cell means (GRID × GRID, row by row) and thumbnail, and whether a cut
    parts it from the previous frame."""

    cells: np.ndarray
    cut: bool
    small: np.ndarray


def level(frame: torch.Tensor, before: Level | None) -> Level:
    """The measures of one (1, C, H, W) frame; ``before`` is the previous frame's."""
    small = thumb(frame)
    h, w = small.shape
    cells = np.array(
        [
            small[h * i // GRID : h * (i + 1) // GRID, w * j // GRID : w * (j + 1) // GRID].mean()
            for i in range(GRID)
            for j in range(GRID)
        ]
    )
    cut = before is None or shot_change(before.small, small)
    return Level(cells, cut, small)


def levels(frames: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, Level]]:
    """Each frame with its measures."""
    before = None
    for frame in frames:
        before = level(frame, before)
        yield frame, before


def gain_to(own: np.ndarray, target: np.ndarray) -> float:
    """The gain taking ``own`` cell values to ``target`` ones: the median of the cells'
    ratios, so cells that something crossed (whose ratio is off) have no say. A gain is what
    a shutter or an exposure changes: light times a factor, and a power-law (gamma-coded)
    value times a factor too."""
    ratios = np.log(np.maximum(target, DARK) / np.maximum(own, DARK))
    return float(np.clip(np.exp(np.median(ratios)), 1 / MAX_GAIN, MAX_GAIN))


def corrected(frame: torch.Tensor, window: list[Level], at: int) -> torch.Tensor:
    """``window[at]``'s frame with its brightness moved onto its shot's trend."""
    first, last = shot_span([lv.cut for lv in window], at)
    offsets = [i - at for i in range(first, last + 1)]
    cells = np.array([lv.cells for lv in window[first : last + 1]]).T  # (cells, frames)
    gain = gain_to(window[at].cells, trends_at(offsets, cells, LEVEL_FLOOR))
    return frame if abs(gain - 1.0) < 1e-4 else frame * gain


def deflickered(frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """The frames (1, C, H, W) of a stretch of film, deflickered, in order."""
    for window, at in windows(levels(frames), RADIUS):
        frame, _ = window[at]
        yield corrected(frame, [lv for _, lv in window], at)


def deflicker(frames: torch.Tensor) -> torch.Tensor:
    """Deflicker (T, C, H, W) consecutive frames."""
    return torch.cat(list(deflickered(frames.split(1))))


def flicker_signature(frames: Iterable[torch.Tensor]) -> tuple[float, float]:
    """Flicker amplitude in 8-bit grey levels (the RMS over frames of the median over the
    cells of each cell's value less its trend: 0 on a steady picture or a fade), and how
    the brightness steps from frame to frame (``step_correlation``: about -0.5 when each
    frame's exposure is new, as a shutter's is; 0 or more for a camera's exposure drifting)."""
    measured = [lv for _, lv in levels(frames)]
    if len(measured) < 3:
        return 0.0, 0.0
    cuts = [lv.cut for lv in measured]
    cells = np.array([lv.cells for lv in measured]).T  # (cells, frames)
    common = np.median(residuals(cells, cuts, RADIUS, LEVEL_FLOOR), axis=0)
    return float(np.sqrt(np.mean(common**2)) * 255), step_correlation(common[None], cuts)


def flicker(frames: Iterable[torch.Tensor]) -> float:
    """Flicker amplitude in 8-bit grey levels (see ``flicker_signature``)."""
    return flicker_signature(frames)[0]
