"""Output timeline maths: target rates, slots between source frames, seams."""

from __future__ import annotations

import random
from fractions import Fraction
from itertools import pairwise

import pytest

from shared.errors import InvalidInput
from shared.options import parse_fps
from worker.retime import first_output_time, output_count, slots


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("60", Fraction(60)),
        ("50", Fraction(50)),
        ("59.94", Fraction(60000, 1001)),
        ("29.97", Fraction(30000, 1001)),
        ("23.976", Fraction(24000, 1001)),
        ("30000/1001", Fraction(30000, 1001)),
        ("12.5", Fraction(25, 2)),
        ("48", Fraction(48)),
    ],
)
def test_parse_fps(text: str, rate: Fraction) -> None:
    assert parse_fps(text) == rate


@pytest.mark.parametrize("text", ["fast", "0", "-24", "1/0", "5000"])
def test_parse_fps_refuses_nonsense(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_fps(text)


def run(sources: list[Fraction], lo: Fraction, hi: Fraction, fps: Fraction | None) -> list:
    """All slots of the output range [lo, hi), pair by pair, as the pipeline walks them."""
    out = []
    for i, left in enumerate(sources):
        right = sources[i + 1] if i + 1 < len(sources) else None
        out += [(s.time, left, s.t) for s in slots(left, right, lo, hi, fps)]
    return out


def test_cfr_conversion_puts_frames_every_1_over_fps() -> None:
    sources = [Fraction(i, 24) for i in range(48)]
    out = run(sources, Fraction(0), Fraction(2), Fraction(60))
    assert [time for time, _, _ in out] == [Fraction(k, 60) for k in range(120)]
    assert output_count(Fraction(2), Fraction(60)) == 120
    for time, left, t in out:
        assert 0 <= t < 1
        if left < sources[-1]:
            assert time == left + t * Fraction(1, 24)
        else:
            assert t == 0  # past the last frame: held
    # 24 -> 60: every other source frame lands on an output frame (2 held after the last).
    assert sum(1 for _, _, t in out if t == 0) == 24 + 2


def test_ntsc_rates_are_exact_over_an_hour() -> None:
    fps = Fraction(30000, 1001)
    assert output_count(Fraction(3600), fps) == 107893
    start = first_output_time(Fraction(1800), fps)
    assert start >= 1800 and start - Fraction(1, 1) / fps < 1800


def test_after_the_last_frame_it_is_held() -> None:
    out = slots(Fraction(1), None, Fraction(0), Fraction(11, 10), Fraction(30))
    assert [s.t for s in out] == [0, 0, 0]
    assert [s.time for s in out] == [Fraction(30, 30), Fraction(31, 30), Fraction(32, 30)]


def test_source_timing_keeps_every_frame_once() -> None:
    sources = [Fraction(0), Fraction(1, 10), Fraction(3, 10), Fraction(7, 20)]
    out = run(sources, Fraction(0), Fraction(1), None)
    assert [time for time, _, _ in out] == sources
    assert all(t == 0 for _, _, t in out)


@pytest.mark.parametrize("fps", [Fraction(60), Fraction(30000, 1001), Fraction(25), None])
def test_chunked_slots_equal_the_unchunked_run(fps: Fraction | None) -> None:
    rng = random.Random(7)
    sources, t = [], Fraction(0)
    for _ in range(300):
        sources.append(t)
        t += Fraction(rng.choice([1, 2, 3]), 48)
    end = t
    whole = run(sources, Fraction(0), end, fps)
    cuts = sorted(rng.sample(range(1, 299), 6))
    bounds = [0, *cuts, len(sources)]
    chunked = []
    for a, b in pairwise(bounds):
        lo = sources[a]
        hi = sources[b] if b < len(sources) else end
        # A chunk decodes its own frames plus the next chunk's first one.
        chunked += (
            run(sources[a : b + 1], lo, hi, fps)
            if b < len(sources)
            else run(sources[a:], lo, hi, fps)
        )
        assert not chunked or chunked[-1][0] < hi
    assert chunked == whole
    if fps is not None:
        assert len(whole) == output_count(end, fps)
