"""Output timeline maths: where output frames fall and between which source frames.

With a target rate, output frame k is shown at k/fps seconds from the film's first frame.
Without one, the output keeps the source's own frame times (a variable frame rate stays
variable): every source frame is shown once, nothing is interpolated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Slot:
    """One output frame: its time and its place between two source frames."""

    time: Fraction
    # 0 is the left source frame itself; (0, 1) asks the interpolator for an in-between.
    t: Fraction


def output_count(duration: Fraction, fps: Fraction) -> int:
    """Output frames of a film of ``duration`` seconds at ``fps``: those shown before its end."""
    return math.ceil(duration * fps)


def first_output_time(start: Fraction, fps: Fraction | None) -> Fraction:
    """Time of the first output frame at or after ``start`` (a chunk's time origin)."""
    if fps is None:
        return start
    return math.ceil(start * fps) / fps


def slots(
    left: Fraction,
    right: Fraction | None,
    lo: Fraction,
    hi: Fraction,
    fps: Fraction | None,
) -> list[Slot]:
    """Output frames in [left, right) ∩ [lo, hi) for source frames at ``left`` and ``right``.

    ``right`` is None after the film's last frame: that frame is held until ``hi``.
    """
    if fps is None:
        return [Slot(left, Fraction(0))] if lo <= left < hi else []
    begin = max(left, lo)
    end = hi if right is None else min(right, hi)
    out = []
    k = math.ceil(begin * fps)
    while k / fps < end:
        time = k / fps
        t = Fraction(0) if right is None else (time - left) / (right - left)
        out.append(Slot(time, t))
        k += 1
    return out
