"""The chunk planner: frame-boundary cuts that cover every frame exactly once."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from fractions import Fraction
from itertools import pairwise

import pytest

from shared.errors import InvalidInput
from worker.plan import ChunkPlan, plan_chunks

TB = Fraction(1, 12800)


def cfr(frames: int, fps: int = 24) -> list[int]:
    """Frame pts of a constant-rate film in TB ticks."""
    return [round(i / fps / TB) for i in range(frames)]


def owned(plans: list[ChunkPlan], pts: list[int]) -> list[list[int]]:
    """The source frames each chunk owns."""
    return [[p for p in pts if plan.start_pts <= p < plan.stop_pts] for plan in plans]


def test_chunks_cover_every_frame_once_and_meet_at_frames() -> None:
    pts = cfr(24 * 35)
    end = round(35 / TB)
    plans = plan_chunks(pts, end, TB, 10.0)
    assert [p.index for p in plans] == list(range(len(plans)))
    assert all(p.count == len(plans) for p in plans)
    groups = owned(plans, pts)
    assert [f for g in groups for f in g] == pts
    assert [len(g) for g in groups] == [p.frames for p in plans]
    for a, b in pairwise(plans):
        assert a.stop_pts == b.start_pts and b.start_pts in pts
    assert plans[-1].stop_pts == end and plans[-1].last
    assert plans[0].start == 0 and plans[-1].stop == 35


def test_chunk_lengths_follow_the_setting_and_short_tails_fold() -> None:
    pts = cfr(24 * 34)
    plans = plan_chunks(pts, round(34 / TB), TB, 10.0)
    # 34 s: 10 + 10 + 14 (a 4 s tail is under half a chunk and joins the last one).
    assert [float(p.stop - p.start) for p in plans] == [10.0, 10.0, 14.0]
    plans = plan_chunks(pts, round(34 / TB), TB, 8.0)
    assert [float(p.stop - p.start) for p in plans] == [8.0, 8.0, 8.0, 10.0]


def test_a_keyframe_just_after_the_target_is_preferred() -> None:
    pts = cfr(24 * 30)
    keys = frozenset([*pts[:: 24 * 4][1:], pts[24 * 10 + 5]])
    plans = plan_chunks(pts, round(30 / TB), TB, 10.0, keys)
    assert plans[1].start_pts == pts[24 * 10 + 5]
    # No keyframe within a quarter chunk: cut at the first frame past the target.
    plans = plan_chunks(pts, round(30 / TB), TB, 10.0, frozenset({pts[24 * 13]}))
    assert plans[1].start_pts == pts[24 * 10]


def test_variable_frame_rate_cuts_at_real_frames() -> None:
    rng = random.Random(3)
    pts, t = [], 0
    for _ in range(500):
        pts.append(t)
        t += rng.choice([200, 533, 1000, 1600])
    plans = plan_chunks(pts, t, TB, 2.0)
    assert len(plans) > 3
    assert sum(p.frames for p in plans) == len(pts)
    assert all(p.start_pts in pts for p in plans)
    assert all(p.stop - p.start >= 2 for p in plans[:-1])


def test_a_short_film_is_one_chunk() -> None:
    plans = plan_chunks([0, 512, 1024], 1536, Fraction(1, 12288), 10.0)
    assert len(plans) == 1 and plans[0].frames == 3 and plans[0].last


def test_plan_round_trips_through_json() -> None:
    plans = plan_chunks(cfr(24 * 25), round(25 / TB), TB, 10.0)
    for plan in plans:
        text = json.dumps(asdict(plan))
        assert ChunkPlan.from_dict(json.loads(text)) == plan


def test_bad_plans_are_refused() -> None:
    with pytest.raises(InvalidInput, match="zero frames"):
        plan_chunks([], 10, TB, 10.0)
    with pytest.raises(InvalidInput, match="positive"):
        plan_chunks([0], 10, TB, 0)
