"""Previews: a few seconds of a film restored with the job's settings, to judge them before
the long job. A preview is planned like a film, on the frames of its stretch only, and its
chunks read past its ends as the film's own chunks would, so its frames are the full job's.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from shared.errors import InvalidInput
from worker.media.decode import decode_range
from worker.media.probe import FrameIndex, MediaInfo
from worker.plan import ChunkPlan, plan_chunks
from worker.stages.cadence import is_scene_cut, thumbnail

# ``auto`` looks at this many evenly spaced moments, a few frames each.
CANDIDATES = 12
FRAMES_EACH = 4


def preview_plans(
    index: FrameIndex, start: Fraction, seconds: Fraction, chunk_seconds: float
) -> list[ChunkPlan]:
    """The chunks of the stretch shown from ``start`` (seconds from the film's first frame)
    for ``seconds``: its frames, timed as in the film, ending where the next frame starts."""
    pts, tb = index.pts, index.time_base
    film_start = pts[0]
    first = bisect_left(pts, film_start + start / tb)
    stop = bisect_left(pts, film_start + (start + seconds) / tb)
    if first >= len(pts):
        duration = float((index.end_pts - film_start) * tb)
        raise InvalidInput(
            f"preview_start {float(start):g} s is past the film's end ({duration:.2f} s)"
        )
    stop = max(stop, first + 1)
    end_pts = pts[stop] if stop < len(pts) else index.end_pts
    return plan_chunks(
        pts[first:stop],
        end_pts,
        tb,
        chunk_seconds,
        index.keyframes,
        film_start_pts=film_start,
        more_after=stop < len(pts),
    )


def busy_moment(
    source: str | Path, info: MediaInfo, index: FrameIndex, seconds: Fraction
) -> Fraction:
    """Where a preview of ``seconds`` shows the most: of evenly spaced moments, the one whose
    frames change most from one to the next without a cut (motion is what a restoration's
    interpolation and upscaling are judged on). Seconds from the film's first frame."""
    pts, tb = index.pts, index.time_base
    duration = (index.end_pts - pts[0]) * tb
    latest = max(duration - seconds, Fraction(0))
    starts = (
        sorted({latest * k / (CANDIDATES - 1) for k in range(CANDIDATES)})
        if latest
        else [Fraction(0)]
    )
    scored = [(_motion(source, info, pts, tb, at), -float(at), at) for at in starts]
    return max(scored)[2]


def _motion(
    source: str | Path, info: MediaInfo, pts: Sequence[int], tb: Fraction, at: Fraction
) -> float:
    """How much consecutive frames from ``at`` differ (mean absolute thumbnail difference),
    cuts left out."""
    first = bisect_left(pts, pts[0] + at / tb)
    last = pts[min(first + FRAMES_EACH - 1, len(pts) - 1)]
    # The decoder (a generator holding the file open) is closed when it goes out of scope.
    frames = decode_range(source, info, pts[first], last, torch.device("cpu"))
    pictures = [f.image for f in itertools.islice(frames, FRAMES_EACH)]
    changes = [
        float(np.abs(thumbnail(a) - thumbnail(b)).mean())
        for a, b in itertools.pairwise(pictures)
        if not is_scene_cut(a, b)
    ]
    return float(np.mean(changes)) if changes else 0.0
