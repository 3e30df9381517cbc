"""Job and chunk state changes shared by the API and the workers.

Each change is one guarded ``UPDATE … WHERE status IN (…) RETURNING``: whoever's update
matches wins, everyone else sees ``False`` and backs off.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.models import Chunk, ChunkStatus, Job, JobStatus, utcnow

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
FINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def move_job(
    session: Session, job_id: str, allowed: Iterable[JobStatus], to: JobStatus, **values: Any
) -> bool:
    """Set a job's status to ``to`` if it is in ``allowed``; ``True`` if this call did it."""
    if to in FINAL:
        values.setdefault("finished_at", utcnow())
    row = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(list(allowed)))
        .values(status=to, updated_at=utcnow(), **values)
        .returning(Job.id)
    ).first()
    return row is not None


def set_job(session: Session, job_id: str, allowed: Iterable[JobStatus], **values: Any) -> bool:
    """Update fields of a job while it is in one of ``allowed`` states."""
    row = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(list(allowed)))
        .values(updated_at=utcnow(), **values)
        .returning(Job.id)
    ).first()
    return row is not None


def move_chunk(
    session: Session,
    job_id: str,
    index: int,
    allowed: Iterable[ChunkStatus],
    to: ChunkStatus,
    **values: Any,
) -> bool:
    """Set a chunk's status to ``to`` if it is in ``allowed``; ``True`` if this call did it."""
    row = session.execute(
        update(Chunk)
        .where(Chunk.job_id == job_id, Chunk.index == index, Chunk.status.in_(list(allowed)))
        .values(status=to, **values)
        .returning(Chunk.id)
    ).first()
    return row is not None


def progress_of(status: JobStatus, frames_done: int, frames_total: int) -> float:
    """Progress 0–1: frames processed make the first 98 %, joining the rest."""
    if status == JobStatus.SUCCEEDED:
        return 1.0
    if not frames_total:
        return 0.0
    return min(0.98, 0.98 * frames_done / frames_total)


def chunk_counts(session: Session, job_ids: list[str]) -> dict[str, tuple[int, int]]:
    """Per job: (chunks done, frames done), summed in the database."""
    if not job_ids:
        return {}
    done = func.count().filter(Chunk.status == ChunkStatus.DONE)
    rows = session.execute(
        select(Chunk.job_id, done, func.coalesce(func.sum(Chunk.frames_done), 0))
        .where(Chunk.job_id.in_(job_ids))
        .group_by(Chunk.job_id)
    ).all()
    return {job_id: (int(n), int(frames)) for job_id, n, frames in rows}


def notify(session: Session, job_id: str, event: str, **data: Any) -> str | None:
    """Record a webhook event for the job if it wants it; enqueue the id after committing."""
    from shared.webhooks import record

    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return None
    payload = {"status": job.status.value, "stage": job.stage, "error": job.error, **data}
    return record(session, job, event, payload)
