"""Stages that overlap: a generator run in its own thread, a bounded queue ahead of its reader.

A chunk's stages spend their time in PyAV, torch and OpenCV, which release the GIL, so a
thread per stage lets decode, upscale, interpolate and encode run at once; the queue between
two stages holds at most ``depth`` items, so memory stays bounded whatever the film's length.

    with Overlap() as overlap:
        for frame in overlap.ahead(decode(), depth=8):
            ...

The producer's exception is raised in the reader (the same object, its traceback kept) after
the items made before it. Leaving the ``with`` block, however it is left, stops every thread
started in it and waits for them: a stage blocked on a queue wakes at once, one inside its
work stops at its next item. Closing one ``ahead`` iterator early stops its producer alone.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")


class Stopped(Exception):
    """A stage read from a queue that was shut down under it (its ``Overlap`` was left)."""


class _Failed:
    """The producer's exception, queued after its last item."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class _Channel:
    """A bounded FIFO whose ``close`` wakes both sides: a closed put is refused, a closed get
    raises ``Stopped`` once nothing is left to read."""

    def __init__(self, depth: int) -> None:
        self._items: deque[object] = deque()
        self._depth = depth
        self._closed = False
        self._changed = threading.Condition()

    def put(self, item: object) -> bool:
        """Queue ``item`` when there is room; False (dropped) once closed."""
        with self._changed:
            while len(self._items) >= self._depth and not self._closed:
                self._changed.wait()
            if self._closed:
                return False
            self._items.append(item)
            self._changed.notify_all()
            return True

    def get(self) -> object:
        """The oldest item, waiting for one; ``Stopped`` once closed."""
        with self._changed:
            while not self._items and not self._closed:
                self._changed.wait()
            if self._closed:
                raise Stopped("the stage before this one was stopped")
            item = self._items.popleft()
            self._changed.notify_all()
            return item

    def close(self) -> None:
        """Refuse further items, drop the queued ones and wake whoever waits."""
        with self._changed:
            self._closed = True
            self._items.clear()
            self._changed.notify_all()


class _Lane(Generic[T]):
    """One producer thread and the channel it fills."""

    def __init__(self, items: Iterable[T], depth: int, name: str) -> None:
        self.channel = _Channel(depth)
        # Copied context: log fields bound for the job (structlog contextvars) follow.
        context = contextvars.copy_context()
        self.thread = threading.Thread(
            target=context.run,
            args=(self._produce, iter(items)),
            name=f"overlap-{name}",
            daemon=True,
        )
        self.thread.start()

    def _produce(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self.channel.put(item):
                    return  # the reader has gone
            self.channel.put(_END)
        except BaseException as error:  # handed to the reader, raised there
            self.channel.put(_Failed(error))
        finally:
            # Stops a generator left suspended (the reader went early), running its
            # ``finally`` blocks, and with them the stages it reads from, in this thread.
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def read(self) -> Iterator[T]:
        """The items in order, then the producer's end or its exception."""
        try:
            while True:
                item = self.channel.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item  # type: ignore[misc]
        finally:
            self.stop()

    def stop(self) -> None:
        """Close the channel and wait for the thread (not from the thread itself)."""
        self.channel.close()
        if self.thread is not threading.current_thread():
            self.thread.join()


class Overlap:
    """The threads of one run of stages; ``enabled=False`` runs each stage in its reader's
    thread instead, one after another, as plain generators do."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._lanes: list[_Lane[object]] = []
        self._lock = threading.Lock()

    def ahead(self, items: Iterable[T], depth: int, name: str = "stage") -> Iterator[T]:
        """``items``, made in a new thread up to ``depth`` (≥ 1) items ahead of the reader."""
        if not self.enabled:
            return iter(items)
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        lane = _Lane(items, depth, name)
        with self._lock:
            self._lanes.append(lane)  # type: ignore[arg-type]
        return lane.read()

    def close(self) -> None:
        """Stop every thread started here and wait for them: all channels first, so no
        stage waits on another that is already stopping."""
        with self._lock:
            lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.channel.close()
        for lane in lanes:
            lane.stop()

    def __enter__(self) -> Overlap:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def timed(items: Iterable[T], clock: dict[str, float], key: str) -> Iterator[T]:
    """``items``, adding the seconds spent making each to ``clock[key]``: a stage's busy
    time when ``items`` is the stage (not a queue it waits on)."""
    source = iter(items)
    try:
        while True:
            started = time.perf_counter()
            item = next(source, _END)
            clock[key] += time.perf_counter() - started
            if item is _END:
                return
            yield item  # type: ignore[misc]
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
