"""Polls and the list read plain rows of the columns they show (api/services/jobs.py), on the
event loop with the API's own async connections (api/reads.py), not ORM objects through a
session: what they answer must be what the job's ORM object gives, field for field."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from api.reads import ReadPool
from api.services import jobs as service
from shared.config import Settings
from shared.db import session_scope
from shared.keys import create_key
from shared.models import Chunk, ChunkStatus, Job, JobStatus, new_id, utcnow
from shared.schemas import JobPublic

BASE = "http://testserver"


def _job(key_id: str, status: JobStatus, **fields: object) -> Job:
    created = utcnow() - timedelta(minutes=5)
    job_id = new_id()
    return Job(
        id=job_id,
        api_key_id=key_id,
        status=status,
        stage="done" if status == JobStatus.SUCCEEDED else "processing",
        options={"scale": 2, "container": "mp4"},
        input_key=f"jobs/{job_id}/input",
        input_filename="ciotat.mp4",
        input_size=1234,
        probe={"width": 720, "height": 540, "fps": "16", "codec": "h264"},
        chunks_total=2,
        frames_total=400,
        timings={"plan": 1.5},
        created_at=created,
        started_at=created,
        **fields,
    )


def test_poll_and_list_rows_answer_as_the_orm_job_does(settings: Settings) -> None:
    with session_scope(settings.database_url) as session:
        key, _ = create_key(session, "reads")
        finished = _job(
            key.id,
            JobStatus.SUCCEEDED,
            output_key="jobs/x/result.mp4",
            output_meta={"width": 1440, "height": 1080, "fps": "16", "codec": "h264"},
            preview_keys={"before": "a.png", "after": "b.png"},
            finished_at=utcnow(),
        )
        running = _job(key.id, JobStatus.RUNNING)
        session.add_all([finished, running])
        session.flush()
        session.add_all(
            [
                Chunk(job_id=running.id, index=0, status=ChunkStatus.DONE, frames_done=200),
                Chunk(job_id=running.id, index=1, status=ChunkStatus.RUNNING, frames_done=37),
            ]
        )
        session.commit()  # the reads see it on connections of their own

        def poll(job_id: str) -> JobPublic:
            return _on_loop(settings, service.read_job, key.id, job_id, BASE)

        for job in (finished, running):
            _same(poll(job.id), service.public(session, job, BASE))
        assert poll(running.id).frames_done == 237
        assert poll(finished.id).has_preview
        assert poll(running.id).status == "running"

        listed = _on_loop(settings, service.read_jobs, key.id, BASE, None, None, 10)
        assert [j.id for j in listed.data] == [running.id, finished.id]
        for shown, job in zip(listed.data, (running, finished), strict=True):
            _same(shown, service.public(session, job, BASE))
        # Filtered by status, and a page after a cursor.
        only = _on_loop(settings, service.read_jobs, key.id, BASE, JobStatus.SUCCEEDED, None, 10)
        assert [j.id for j in only.data] == [finished.id]
        first = _on_loop(settings, service.read_jobs, key.id, BASE, None, None, 1)
        assert [j.id for j in first.data] == [running.id] and first.next_cursor
        rest = _on_loop(settings, service.read_jobs, key.id, BASE, None, first.next_cursor, 1)
        assert [j.id for j in rest.data] == [finished.id] and rest.next_cursor is None


def _on_loop(settings: Settings, work: Callable[..., Awaitable[Any]], *args: object) -> Any:
    """``await work(conn, *args)`` on a connection of a read pool of its own."""

    async def run() -> Any:
        pool = ReadPool(settings.database_url, 1)
        await pool.open()
        try:
            return await pool.run(lambda conn: work(conn, *args))
        finally:
            await pool.close()

    return asyncio.run(run())


def _same(read: JobPublic, expected: JobPublic) -> None:
    """Equal field for field; an ETA may have counted down between the two reads."""
    assert read.model_dump(exclude={"eta_seconds"}) == expected.model_dump(exclude={"eta_seconds"})
    assert (read.eta_seconds is None) == (expected.eta_seconds is None)
    assert abs((read.eta_seconds or 0) - (expected.eta_seconds or 0)) < 1
