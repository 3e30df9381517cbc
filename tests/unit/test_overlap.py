"""Stages that overlap (worker.overlap): order, errors, early stops and bounded queues."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Iterator

import pytest

from worker.overlap import Overlap, Stopped, timed


def stage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("overlap-")]


def counting(made: list[int], stop: int | None = None) -> Iterator[int]:
    """0, 1, 2…, each noted in ``made`` as it is made; forever unless ``stop``."""
    n = 0
    while stop is None or n < stop:
        made.append(n)
        yield n
        n += 1


def failing_after(items: Iterator[int], n: int) -> Iterator[int]:
    for i, item in enumerate(items):
        if i == n:
            raise ValueError(f"broke at {n}")
        yield item


def noting_threads(seen: set[int], count: int) -> Iterator[int]:
    """0 … count-1, noting in ``seen`` the threads that made them."""
    for i in range(count):
        seen.add(threading.get_ident())
        yield i


def test_items_come_in_order_from_another_thread() -> None:
    seen: set[int] = set()
    with Overlap() as overlap:
        items = overlap.ahead(noting_threads(seen, 500), 3, "test-stage")
        assert list(items) == list(range(500))
    assert seen and threading.get_ident() not in seen
    assert stage_threads() == []


def test_disabled_runs_in_the_readers_thread() -> None:
    seen: set[int] = set()
    with Overlap(enabled=False) as overlap:
        items = overlap.ahead(noting_threads(seen, 5), 3, "test-stage")
        assert list(items) == [0, 1, 2, 3, 4]
    assert seen == {threading.get_ident()}


def test_the_producers_exception_comes_after_its_items_with_its_traceback() -> None:
    got: list[int] = []
    with Overlap() as overlap, pytest.raises(ValueError, match="broke at 5") as caught:
        for item in overlap.ahead(failing_after(iter(range(10)), 5), 2, "test-stage"):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]
    # The same exception, raised where it happened: its traceback runs into the producer.
    names = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert "failing_after" in names
    assert stage_threads() == []


def test_a_reader_that_stops_early_stops_the_producer() -> None:
    made: list[int] = []
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            yield from counting(made)
        finally:
            closed.set()

    with Overlap() as overlap:
        items = overlap.ahead(endless(), 4, "test-stage")
        assert [next(items) for _ in range(3)] == [0, 1, 2]
        items.close()  # what a for loop's break and a garbage-collected reader do
        # Gone before close returns: the producer's generator was closed in its thread.
        assert closed.is_set() and stage_threads() == []
        stopped_at = len(made)
        time.sleep(0.05)
        assert len(made) == stopped_at


def test_leaving_the_block_stops_every_stage_even_when_an_error_holds_them() -> None:
    """A failing middle stage: its traceback holds the generator that reads the first stage,
    which would keep that thread waiting; leaving the block stops it all the same."""
    made: list[int] = []
    with pytest.raises(ValueError), Overlap() as overlap:
        first = overlap.ahead(counting(made), 2, "test-stage-first")
        second = overlap.ahead(failing_after(first, 3), 2, "test-stage-second")
        for _ in second:
            pass
    assert stage_threads() == []


def test_a_stage_waiting_on_a_closed_queue_is_told_so() -> None:
    overlap = Overlap()
    release = threading.Event()

    def slow() -> Iterator[int]:
        release.wait(5)
        yield 1

    first = overlap.ahead(slow(), 1, "test-stage-slow")
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            next(first)
        except Stopped as stopped:
            outcome.append(stopped)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.05)
    release.set()  # lets the slow stage finish its item and notice the close
    overlap.close()
    reader.join(2)
    assert not reader.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Stopped)
    assert stage_threads() == []


def test_the_producer_runs_at_most_depth_items_ahead() -> None:
    made: list[int] = []
    depth = 3
    with Overlap() as overlap:
        items = overlap.ahead(counting(made, stop=50), depth, "test-stage")
        leads = []
        for read, item in enumerate(items, start=1):
            assert item == read - 1
            time.sleep(0.002)  # a slow reader: the producer fills the queue meanwhile
            # Queued (depth) plus the one it holds, waiting for room.
            leads.append(len(made) - read)
        assert max(leads) <= depth + 1
        assert max(leads) >= depth - 1  # it did run ahead


def test_depth_must_be_positive() -> None:
    with Overlap() as overlap, pytest.raises(ValueError):
        overlap.ahead(iter([1]), 0)


def test_timed_counts_the_time_spent_making_items() -> None:
    def slow() -> Iterator[int]:
        for i in range(3):
            time.sleep(0.02)
            yield i

    clock = {"made": 0.0}
    for _ in timed(slow(), clock, "made"):
        time.sleep(0.05)  # the reader's time is not the producer's
    assert 0.06 <= clock["made"] < 0.12
