"""Split a film into chunks at frame boundaries so that each can be processed on its own.

Chunk k owns the output times in [start_k, start_{k+1}) (seconds from the film's first
frame) and decodes the source frames from start_k up to and including start_{k+1}, the
first frame of the next chunk: interpolating the last gap of a chunk needs it. Outputs of
consecutive chunks therefore meet without a missing or duplicated frame.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from itertools import pairwise
from typing import Any

from shared.errors import InvalidInput


@dataclass(frozen=True)
class ChunkPlan:
    """One chunk, in source-stream timestamps; plain ints so it travels as JSON."""

    index: int
    count: int
    time_base_num: int
    time_base_den: int
    # pts of the film's first frame: output time zero.
    film_start_pts: int
    # First source frame the chunk owns (a frame boundary).
    start_pts: int
    # Output times before this belong to the chunk: the next chunk's first frame (decoded
    # too, for interpolation) or, for the last chunk, the end of the film's last frame.
    stop_pts: int
    # Source frames owned (start_pts up to, not including, stop_pts).
    frames: int
    # 1 when the film goes on after the job's last chunk (a preview of a stretch of it):
    # that chunk then reads past its end like any other, so its frames come out the same.
    more_after: int = 0

    @property
    def time_base(self) -> Fraction:
        """The source video stream's time base."""
        return Fraction(self.time_base_num, self.time_base_den)

    @property
    def last(self) -> bool:
        """Whether this is the film's final chunk (nothing to decode after ``stop_pts``)."""
        return self.index == self.count - 1 and not self.more_after

    @property
    def start(self) -> Fraction:
        """Start of the owned output times, in seconds from the film start."""
        return (self.start_pts - self.film_start_pts) * self.time_base

    @property
    def stop(self) -> Fraction:
        """End (exclusive) of the owned output times, in seconds from the film start."""
        return (self.stop_pts - self.film_start_pts) * self.time_base

    def to_dict(self) -> dict[str, int]:
        """A JSON-ready dict (same as ``dataclasses.asdict``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChunkPlan:
        """Rebuild a plan from ``to_dict``'s output (plans stored before ``more_after``
        existed have none: they cover the whole film)."""
        fields = [name for name in cls.__dataclass_fields__ if name in data or name != "more_after"]
        return cls(**{name: int(data[name]) for name in fields})


def plan_chunks(
    pts: Sequence[int],
    end_pts: int,
    time_base: Fraction,
    chunk_seconds: float,
    keyframes: frozenset[int] = frozenset(),
    film_start_pts: int | None = None,
    more_after: bool = False,
) -> list[ChunkPlan]:
    """Cut the frames at ``pts`` (sorted) into chunks of about ``chunk_seconds`` each.

    A preview plans a stretch of a film: ``pts`` are its frames, ``film_start_pts`` the
    film's first (times stay the film's), ``end_pts`` the next frame's and ``more_after``
    says that one exists."""
    if chunk_seconds <= 0:
        raise InvalidInput(f"chunk length must be positive, got {chunk_seconds} s")
    if not pts:
        raise InvalidInput("the film has zero frames")
    if end_pts <= pts[-1]:
        raise ValueError("end_pts must follow the last frame")
    target = Fraction(chunk_seconds) / time_base
    starts = [0]
    while True:
        want = pts[starts[-1]] + target
        j = bisect_left(pts, want)
        if j >= len(pts):
            break
        # A keyframe start shortens the decode that seeking needs; look a quarter chunk on.
        limit = bisect_left(pts, want + target / 4)
        j = next((k for k in range(j, min(limit, len(pts))) if pts[k] in keyframes), j)
        # Fold a tail shorter than half a chunk into the previous chunk.
        if end_pts - pts[j] < target / 2:
            break
        starts.append(j)
    bounds = [*starts, len(pts)]
    return [
        ChunkPlan(
            index=k,
            count=len(starts),
            time_base_num=time_base.numerator,
            time_base_den=time_base.denominator,
            film_start_pts=pts[0] if film_start_pts is None else film_start_pts,
            start_pts=pts[a],
            stop_pts=pts[b] if b < len(pts) else end_pts,
            frames=b - a,
            more_after=int(more_after),
        )
        for k, (a, b) in enumerate(pairwise(bounds))
    ]
