"""Where a job stands in the queue, and when it will be done — the wait included.

Chunks are served first come, first served across all jobs, so a job waits for the
unfinished chunks of every active job whose chunks were sent before its own (in the order of
their rows, which are written just before they are sent; jobs not planned yet come last).
Work is counted in worker-seconds: the frames a job has still to make, times its seconds per
frame — the median over its own finished chunks (else the one running), else over the chunks
any job finished in the last hour — shared among the chunks running now. Where nothing has
been measured yet there is no ETA: `None` is honest, a guess is not.

Each API process reads the queue at most once a second (``QueueView``), however many clients
poll: positions are at most that old and ETAs count down by the snapshot's age. It is read
again at once when a chunk was done since (one indexed lookup tells), or when a job asked
about was seen otherwise (just submitted, planned since): no API process answers with an ETA
older than the progress another one shows.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection
from sqlalchemy import Select, bindparam, case, func, or_, select
from sqlalchemy.orm import Session

from api.reads import compiled, fetch
from shared.jobs import ACTIVE
from shared.models import Chunk, ChunkStatus, Job, utcnow

RECENT = timedelta(hours=1)
SNAPSHOT_S = 1.0


@dataclass(frozen=True)
class Standing:
    """``position``: 1 when the job's chunks are next, 2 with one waiting job ahead…; ``None``
    once its chunks have started (or it is done). ``eta_seconds``: until its last chunk is
    done."""

    position: int | None = None
    eta_seconds: float | None = None


# A job as the poll that asks about it read it: status, stage, chunks done.
Seen = tuple[str, str, int]


@dataclass(frozen=True)
class Work:
    """An active job's chunk work: frames left, and what its chunks have measured."""

    job_id: str
    frames_left: int | None  # None: not planned yet
    running: int  # its chunks running now
    started: bool  # some of its chunks ran or run
    seconds_per_frame: float | None
    seen: Seen = ("", "", 0)  # its status, stage and chunks done when this was read

    def seconds(self, fallback: float | None) -> float | None:
        """Worker-seconds of chunk work left; ``None`` when it cannot be known yet."""
        per_frame = self.seconds_per_frame or fallback
        if self.frames_left is None or (self.frames_left and per_frame is None):
            return None
        return self.frames_left * (per_frame or 0.0)


def _epoch(interval: Any) -> Any:
    """Seconds in an SQL interval."""
    return func.extract("epoch", interval)


def _per_frame() -> Any:
    """A finished chunk's seconds per frame (SQL)."""
    return _epoch(Chunk.finished_at - Chunk.started_at) / func.nullif(Chunk.frames_done, 0)


def _median(value: Any) -> Any:
    """The median of ``value`` over the group: a worker's first chunk, slowed by loading its
    networks, does not set the pace once a few chunks are done."""
    return func.percentile_cont(0.5).within_group(value)


def _active_work() -> Select[Any]:
    """Every active job's chunk work (a row each), in the order the queue serves it, as of
    the parameter ``now``."""
    done = Chunk.status == ChunkStatus.DONE
    running = Chunk.status == ChunkStatus.RUNNING
    now = bindparam("now", type_=Chunk.started_at.type)
    return (
        select(
            Job.id,
            Job.frames_total,
            Job.stage,
            Job.status,
            func.count(Chunk.id).filter(done),
            func.coalesce(func.sum(Chunk.frames_done), 0),
            func.count(Chunk.id).filter(running),
            _median(case((done, _per_frame()))),
            func.sum(case((running, Chunk.frames_done))),
            func.sum(case((running, _epoch(now - Chunk.started_at)))),
        )
        .outerjoin(Chunk, Chunk.job_id == Job.id)
        # Not IN: its list is bound as the statement runs, which SQL compiled once cannot be.
        .where(or_(*(Job.status == status for status in ACTIVE)))
        .group_by(Job.id)
        # Chunk rows are written and sent together, so their ids give the queue's order.
        .order_by(func.min(Chunk.id).asc().nulls_last(), Job.created_at, Job.id)
    )


# The queue's two statements, for a session and (compiled) for the event loop's reads.
_ACTIVE_WORK = _active_work()
_RECENT_RATE = select(_median(_per_frame())).where(
    Chunk.status == ChunkStatus.DONE,
    Chunk.finished_at > bindparam("since", type_=Chunk.finished_at.type),
)
_ACTIVE_WORK_SQL, _RECENT_RATE_SQL = compiled(_ACTIVE_WORK), compiled(_RECENT_RATE)


def _works(rows: Sequence[Sequence[Any]]) -> list[Work]:
    """``_ACTIVE_WORK``'s rows as ``Work``."""
    found = []
    for job_id, total, stage, status, n_done, made, n_running, d_rate, r_frames, r_secs in rows:
        planned = bool(total) and stage not in ("queued", "planning")
        found.append(
            Work(
                job_id,
                max(0, int(total) - int(made)) if planned else None,
                int(n_running),
                bool(n_running or d_rate is not None or made),
                _positive(d_rate) or _rate(r_frames, r_secs),
                (str(status), str(stage), int(n_done)),
            )
        )
    return found


def active_work(session: Session) -> list[Work]:
    """Every active job's chunk work, in the order the queue serves it."""
    return _works(session.execute(_ACTIVE_WORK, {"now": utcnow()}).all())


def _rate(frames: object, seconds: object) -> float | None:
    """Seconds per frame, when some frames were made."""
    if not frames or seconds is None or float(str(frames)) <= 0:
        return None
    return max(0.0, float(str(seconds))) / float(str(frames))


def _positive(rate: object) -> float | None:
    return float(str(rate)) if rate is not None and float(str(rate)) > 0 else None


def recent_seconds_per_frame(session: Session) -> float | None:
    """Median seconds per frame of the chunks any job finished in the last hour."""
    return _positive(session.scalar(_RECENT_RATE, {"since": utcnow() - RECENT}))


def queue_standings(session: Session) -> tuple[dict[str, Standing], dict[str, Seen]]:
    """Queue position and ETA of every active job, read afresh (two queries), and what
    was read of each."""
    return _placed(active_work(session), recent_seconds_per_frame(session))


async def queue_standings_on_loop(
    conn: AsyncConnection[Any],
) -> tuple[dict[str, Standing], dict[str, Seen]]:
    """``queue_standings`` read on the event loop (``api.reads``)."""
    now = utcnow()
    work = _works(await fetch(conn, _ACTIVE_WORK_SQL, now=now))
    rate = await fetch(conn, _RECENT_RATE_SQL, since=now - RECENT)
    return _placed(work, _positive(rate[0][0]))


def _placed(
    work: list[Work], fallback: float | None
) -> tuple[dict[str, Standing], dict[str, Seen]]:
    """Each job of ``work`` (in the queue's order) placed, and what was read of each."""
    sharing = max(1, sum(w.running for w in work))  # chunks running now, in parallel
    found: dict[str, Standing] = {}
    ahead: float | None = 0.0  # worker-seconds of chunk work queued before this job
    waiting = 0  # jobs ahead that have not started yet
    for item in work:
        left = item.seconds(fallback)
        position = None if item.started or item.frames_left == 0 else waiting + 1
        eta = None
        if ahead is not None and left is not None and item.frames_left:
            eta = (ahead + left) / sharing
        found[item.job_id] = Standing(position, eta)
        if item.frames_left != 0 and not item.started:
            waiting += 1
        ahead = None if ahead is None or left is None else ahead + left
    return found, {item.job_id: item.seen for item in work}


@dataclass(frozen=True)
class Snapshot:
    """Every active job's standing as of ``taken`` (``time.monotonic()``)."""

    places: dict[str, Standing]
    seen: dict[str, Seen]
    taken: float

    def knows(self, wanted: dict[str, Seen]) -> bool:
        """Whether it saw each of ``wanted`` as its caller did, or later (more chunks done)."""
        for job_id, (status, stage, done) in wanted.items():
            seen = self.seen.get(job_id)
            if seen is None or seen[:2] != (status, stage) or seen[2] < done:
                return False
        return True


class QueueView:
    """The queue as this process last read it, read again once it is ``max_age_s`` old or
    has not seen what a caller has of its own jobs (a chunk more done, a new stage): a
    thousand polls a second cost two queries a second, a job's own progress shows at once
    in its ETA, and another job's within ``max_age_s``."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()  # the sessions' readers, in threads
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def _usable(self, snapshot: Snapshot, wanted: dict[str, Seen]) -> bool:
        fresh = time.monotonic() - snapshot.taken < self.max_age_s
        return fresh and snapshot.knows(wanted)

    def snapshot(self, session: Session, wanted: dict[str, Seen]) -> Snapshot:
        """A snapshot fresh enough that knows ``wanted`` (unless they just finished)."""
        snapshot = self._snapshot
        if snapshot is not None and self._usable(snapshot, wanted):
            return snapshot
        knows = snapshot is not None and snapshot.knows(wanted)
        # One reader at a time. While it reads, a caller the old snapshot can answer takes
        # that instead of waiting (and holding a database thread) for the new one.
        if not self._lock.acquire(blocking=not knows):
            assert snapshot is not None
            return snapshot
        try:
            snapshot = self._snapshot
            if snapshot is None or not self._usable(snapshot, wanted):
                taken = time.monotonic()
                places, seen = queue_standings(session)
                snapshot = self._snapshot = Snapshot(places, seen, taken)
            return snapshot
        finally:
            self._lock.release()

    async def snapshot_on_loop(
        self, conn: AsyncConnection[Any], wanted: dict[str, Seen]
    ) -> Snapshot:
        """``snapshot`` for a coroutine, read on ``conn``: one coroutine of an event loop
        reads at a time, and while it does, a caller the old snapshot can answer takes that."""
        snapshot = self.kept(wanted)
        if snapshot is not None:
            return snapshot
        lock = self._loop_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        old = self._snapshot
        if lock.locked() and old is not None and old.knows(wanted):
            return old
        async with lock:
            snapshot = self.kept(wanted)
            if snapshot is None:
                taken = time.monotonic()
                places, seen = await queue_standings_on_loop(conn)
                snapshot = self._snapshot = Snapshot(places, seen, taken)
            return snapshot

    def kept(self, wanted: dict[str, Seen]) -> Snapshot | None:
        """The snapshot kept, if it answers ``wanted`` as it is (no database)."""
        snapshot = self._snapshot
        return snapshot if snapshot is not None and self._usable(snapshot, wanted) else None

    def standings(self, session: Session, wanted: dict[str, Seen]) -> dict[str, Standing]:
        """The standings of the ``wanted`` jobs, their ETAs counted from now."""
        return self.answer(self.snapshot(session, wanted), wanted)

    @staticmethod
    def answer(snapshot: Snapshot, wanted: dict[str, Seen]) -> dict[str, Standing]:
        """What ``snapshot`` says of the ``wanted`` jobs, their ETAs counted from now."""
        age = time.monotonic() - snapshot.taken
        found = {}
        for job_id in wanted.keys() & snapshot.places.keys():
            place = snapshot.places[job_id]
            eta = None if place.eta_seconds is None else max(0.0, place.eta_seconds - age)
            found[job_id] = Standing(place.position, None if eta is None else round(eta, 1))
        return found


QUEUE = QueueView(SNAPSHOT_S)


def _wanted(jobs: list[tuple[Job | Any, int]]) -> dict[str, Seen]:
    """The active ones of ``jobs`` (given with their chunks done), as their reader saw them."""
    return {
        job.id: (str(job.status), job.stage, done) for job, done in jobs if job.status in ACTIVE
    }


def standings(session: Session, jobs: list[tuple[Job | Any, int]]) -> dict[str, Standing]:
    """Queue position and ETA of each of ``jobs``, given with their chunks done as the caller
    read them (a default `Standing` for finished ones)."""
    wanted = _wanted(jobs)
    return QUEUE.standings(session, wanted) if wanted else {}


async def standings_on_loop(
    conn: AsyncConnection[Any], jobs: list[tuple[Job | Any, int]]
) -> dict[str, Standing]:
    """``standings`` for a coroutine, the queue read (when it must be) on ``conn``."""
    wanted = _wanted(jobs)
    if not wanted:
        return {}
    return QUEUE.answer(await QUEUE.snapshot_on_loop(conn, wanted), wanted)
