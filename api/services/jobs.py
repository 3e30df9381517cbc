"""Jobs: create (commit, then enqueue), read with live progress, list, cancel, retry, delete."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from pydantic import ValidationError
from sqlalchemy import bindparam, func, select, true, tuple_, update
from sqlalchemy.orm import Session

from api.reads import Compiled, compiled, fetch
from api.services.eta import Standing, standings, standings_on_loop
from api.upload_stream import CONTROL_CHARS
from shared import queue
from shared.config import get_settings
from shared.errors import Conflict, InvalidInput, NotFound
from shared.jobs import ACTIVE, chunk_counts, move_job, notify, progress_of
from shared.models import (
    ApiKey,
    Chunk,
    ChunkStatus,
    Job,
    JobStatus,
    Upload,
    UploadStatus,
    new_id,
)
from shared.schemas import JobCreate, JobOptions, JobPublic, JobReport, JobsPublic, public_meta
from shared.storage import Storage, analysis_prefix, job_prefix, report_key
from shared.storage import input_key as input_key_of
from shared.webhooks import check_url

# A job as a poll reads it (a row of ``_READ``: api.reads), with its (chunks done, frames done).
ShownJob = tuple[Any, tuple[int, int]]


def is_id(value: object) -> bool:
    """Whether ``value`` can be one of our ids (a UUID as ``new_id`` writes it): anything
    else names nothing, and needs no database to say so."""
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


def refuse_control_characters(values: Mapping[str, object]) -> None:
    """``InvalidInput`` naming the first option whose name or text holds a control character."""
    for name, value in values.items():
        if CONTROL_CHARS.search(name) or (isinstance(value, str) and CONTROL_CHARS.search(value)):
            raise InvalidInput(f"{name!r}: control characters (such as NUL) are not allowed")


def parse_form_options(fields: dict[str, str]) -> JobOptions:
    """Validate multipart form fields as job options (same names as the JSON body)."""
    refuse_control_characters(fields)
    values = {k: v for k, v in fields.items() if v != ""}
    try:
        return JobOptions.model_validate(values)
    except ValidationError as err:
        raise InvalidInput(
            "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in err.errors()
            )
        ) from None


def create_job(
    session: Session,
    key: ApiKey,
    job_id: str,
    options: JobOptions,
    *,
    input_key: str,
    filename: str,
    size: int,
    audio_key: str | None,
) -> Job:
    """Write the job row, commit, then enqueue its planning (never the other way round)."""
    if options.audio in ("replace", "add") and audio_key is None:
        raise InvalidInput(f"audio={options.audio} needs a soundtrack: send it as 'audio'")
    if options.audio not in ("replace", "add") and audio_key is not None:
        raise InvalidInput("a soundtrack was sent: set audio=replace or audio=add to use it")
    if options.webhook_url:
        check_url(options.webhook_url, get_settings().webhook_allow_private)
    hooks = {"webhook_url", "webhook_events", "webhook_progress_step"}
    stored = {
        **options.model_dump(exclude_none=True, exclude=hooks),
        "container": options.output_container,
    }
    job = Job(
        id=job_id,
        api_key_id=key.id,
        options=stored,
        webhook_url=options.webhook_url,
        webhook_events=options.webhook_events,
        webhook_progress_step=options.webhook_progress_step,
        input_key=input_key,
        input_filename=filename,
        input_size=size,
        audio_key=audio_key,
    )
    session.add(job)
    session.commit()
    queue.enqueue_plan(job.id)
    return job


def _take_upload(session: Session, key: ApiKey, upload_id: str, storage: Storage) -> Upload:
    upload = session.get(Upload, upload_id) if is_id(upload_id) else None
    if upload is None or upload.api_key_id != key.id:
        raise NotFound(f"no upload {upload_id}")
    if upload.status != UploadStatus.COMPLETED:
        raise Conflict(f"upload {upload_id} is {upload.status.value}; complete it first")
    upload.status = UploadStatus.USED
    return upload


def create_job_from_uploads(
    session: Session, key: ApiKey, body: JobCreate, storage: Storage
) -> Job:
    """A job whose film (and soundtrack) were uploaded earlier with presigned URLs, or are
    an earlier job's (copied: deleting that job leaves this one whole)."""
    refuse_control_characters(body.model_dump())
    names = {"upload_id", "audio_upload_id", "source_job"}
    options = JobOptions.model_validate(body.model_dump(exclude=names))
    audio = (
        _take_upload(session, key, body.audio_upload_id, storage) if body.audio_upload_id else None
    )
    audio_key = audio.key if audio else None
    job_id = new_id()
    if body.source_job is not None:
        source = get_job(session, key, body.source_job)
        input_key, filename, size = input_key_of(job_id), source.input_filename, source.input_size
        storage.copy(source.input_key, input_key)
        # What the workers measured of the film comes with it, so it is not measured again.
        storage.copy_prefix(analysis_prefix(source.input_key), analysis_prefix(input_key))
        if audio_key is None and source.audio_key and options.audio in ("replace", "add"):
            audio_key = f"jobs/{job_id}/audio"
            storage.copy(source.audio_key, audio_key)
    else:
        upload = _take_upload(session, key, body.upload_id or "", storage)
        input_key, filename, size = upload.key, upload.filename, upload.size
    return create_job(
        session,
        key,
        job_id,
        options,
        input_key=input_key,
        filename=filename,
        size=size,
        audio_key=audio_key,
    )


def get_job(session: Session, key: ApiKey, job_id: str) -> Job:
    """The caller's job, or ``NotFound`` (also for another key's job: its existence is private)."""
    job = session.get(Job, job_id) if is_id(job_id) else None
    if job is None or job.api_key_id != key.id:
        raise NotFound(f"no job {job_id}")
    return job


def to_public(
    job: Job | Any, counts: tuple[int, int], standing: Standing, base_url: str
) -> JobPublic:
    """A job (its ORM object, or a row of ``_READ``, whose status is its text) with its
    progress (from its chunks' frame counters) and its place in the queue."""
    chunks_done, frames_done = counts
    frames_total = job.frames_total
    status = JobStatus(job.status)
    progress = progress_of(status, frames_done, frames_total)
    return JobPublic(
        id=job.id,
        status=status.value,
        stage=job.stage,
        progress=round(progress, 4),
        chunks_done=chunks_done,
        chunks_total=job.chunks_total,
        frames_done=frames_done,
        frames_total=frames_total,
        eta_seconds=standing.eta_seconds,
        queue_position=standing.position,
        timings=job.timings or {},
        error=job.error,
        retryable=job.retryable and status != JobStatus.SUCCEEDED,
        options=job.options,
        input={
            "filename": job.input_filename,
            "size": job.input_size,
            "probe": public_meta(job.probe) if job.probe else job.probe,
        },
        output=public_meta(job.output_meta) if job.output_meta else job.output_meta,
        result_url=f"{base_url}/v1/jobs/{job.id}/result" if job.output_key else None,
        has_preview=bool(job.preview_keys),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def public(session: Session, job: Job, base_url: str) -> JobPublic:
    """One job as clients see it."""
    counts = chunk_counts(session, [job.id]).get(job.id, (0, 0))
    place = standings(session, [(job, counts[0])]).get(job.id, Standing())
    return to_public(job, counts, place, base_url)


# What a poll or the list reads of a job: the columns ``to_public`` shows, as plain rows
# (no ORM objects: building those was most of a poll's CPU), read on the event loop.
_SHOWN = [
    Job.__table__.c[name]
    for name in (
        "id", "api_key_id", "status", "stage", "options", "input_filename", "input_size",
        "probe", "output_key", "output_meta", "error", "retryable", "chunks_total",
        "frames_total", "timings", "preview_keys", "created_at", "started_at", "finished_at",
    )
]  # fmt: skip
_DONE = func.count().filter(Chunk.status == ChunkStatus.DONE)
_COUNTS = (
    select(_DONE.label("done"), func.coalesce(func.sum(Chunk.frames_done), 0).label("frames"))
    .where(Chunk.job_id == Job.id)
    .lateral("counts")
)
_READ = select(*_SHOWN, _COUNTS.c.done, _COUNTS.c.frames).join(_COUNTS, true())


def _page(status: bool, cursor: bool) -> Compiled:
    """A page of one key's jobs, newest first: filtered by status or not, after a cursor or
    not (keyset pagination)."""
    query = _READ.where(Job.api_key_id == bindparam("key_id"))
    if status:
        query = query.where(Job.status == bindparam("status"))
    if cursor:
        after = tuple_(bindparam("created"), bindparam("after"))
        query = query.where(tuple_(Job.created_at, Job.id) < after)
    return compiled(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(bindparam("limit")))


_POLL = compiled(_READ.where(Job.id == bindparam("job_id")))
_PAGES = {
    (status, cursor): _page(status, cursor) for status in (False, True) for cursor in (False, True)
}


def _counted(row: Any) -> ShownJob:
    """A row of ``_READ`` with its (chunks done, frames done)."""
    return row, (int(row.done), int(row.frames))


async def read_job(
    conn: AsyncConnection[Any], key_id: str, job_id: str, base_url: str
) -> JobPublic:
    """The caller's job ``job_id`` as clients see it, with its chunks counted in the same
    query (``NotFound`` as ``get_job``)."""
    found = await fetch(conn, _POLL, job_id=job_id) if is_id(job_id) else []
    if not found or found[0].api_key_id != key_id:
        raise NotFound(f"no job {job_id}")
    job, counts = _counted(found[0])
    place = (await standings_on_loop(conn, [(job, counts[0])])).get(job.id, Standing())
    return to_public(job, counts, place, base_url)


def _encode_cursor(job: Job | Any) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not is_id(job_id):
            raise ValueError("not a job id")
        return datetime.fromisoformat(created), str(job_id)
    except (ValueError, TypeError) as err:
        raise InvalidInput("cursor: not a cursor this API returned") from err


async def read_jobs(
    conn: AsyncConnection[Any],
    key_id: str,
    base_url: str,
    status: JobStatus | None,
    cursor: str | None,
    limit: int,
) -> JobsPublic:
    """The caller's jobs, newest first, ``limit`` per page: one query a page."""
    params: dict[str, object] = {"key_id": key_id, "limit": limit + 1}
    if status is not None:
        params["status"] = status.value
    if cursor:
        params["created"], params["after"] = _decode_cursor(cursor)
    rows = await fetch(conn, _PAGES[status is not None, bool(cursor)], **params)
    found = [_counted(row) for row in rows[:limit]]
    places = await standings_on_loop(conn, [(job, counts[0]) for job, counts in found])
    return JobsPublic(
        data=[
            to_public(job, counts, places.get(job.id, Standing()), base_url)
            for job, counts in found
        ],
        next_cursor=_encode_cursor(found[-1][0]) if len(rows) > limit and found else None,
    )


def cancel_job(session: Session, key: ApiKey, job_id: str) -> Job:
    """Stop a queued or running job; running chunks see it within a second and stop."""
    job = get_job(session, key, job_id)
    if not move_job(
        session,
        job.id,
        ACTIVE,
        JobStatus.CANCELLED,
        stage="cancelled",
        error="cancelled by the user",
    ):
        raise Conflict(f"job {job_id} is {job.status.value}; only queued or running jobs cancel")
    event = notify(session, job.id, "job.cancelled")
    session.commit()
    queue.enqueue_webhooks([event])
    session.refresh(job)
    return job


def retry_job(session: Session, key: ApiKey, job_id: str) -> Job:
    """Run a failed or cancelled job again, keeping every chunk that is already done."""
    job = get_job(session, key, job_id)
    if not move_job(
        session,
        job.id,
        (JobStatus.FAILED, JobStatus.CANCELLED),
        JobStatus.QUEUED,
        stage="queued",
        error=None,
        finished_at=None,
        retryable=True,
    ):
        raise Conflict(f"job {job_id} is {job.status.value}; only failed or cancelled jobs retry")
    session.execute(
        update(Chunk)
        .where(Chunk.job_id == job.id, Chunk.status != ChunkStatus.DONE)
        .values(status=ChunkStatus.PENDING, error=None, frames_done=0, attempts=0)
    )
    session.commit()
    # Planning is idempotent: it keeps existing chunk rows and enqueues what is not done.
    queue.enqueue_plan(job.id)
    session.refresh(job)
    return job


def delete_job(session: Session, key: ApiKey, job_id: str, storage: Storage) -> None:
    """Remove a job, its chunks and every object it stored (input, chunks, result)."""
    job = get_job(session, key, job_id)
    move_job(session, job.id, ACTIVE, JobStatus.CANCELLED, stage="cancelled")
    keys = [k for k in (job.input_key, job.audio_key, job.output_key) if k]
    session.delete(job)
    session.commit()
    storage.delete_prefix(job_prefix(job.id))
    for object_key in keys:
        if not object_key.startswith(job_prefix(job.id)):
            storage.delete_prefix(object_key)


def result_url(session: Session, key: ApiKey, job_id: str, storage: Storage, expires: int) -> str:
    """A presigned download URL of a finished job's result."""
    job = get_job(session, key, job_id)
    if job.status != JobStatus.SUCCEEDED or not job.output_key:
        raise Conflict(f"job {job_id} is {job.status.value}; the result exists once it succeeds")
    stem = job.input_filename.rsplit(".", 1)[0] or "film"
    ext = job.output_key.rsplit(".", 1)[-1]
    return storage.presigned_get(job.output_key, expires, filename=f"{stem}-restored.{ext}")


def job_report(
    session: Session, key: ApiKey, job_id: str, storage: Storage, expires: int
) -> JobReport:
    """A finished job's quality report, its moments' pictures as presigned URLs."""
    job = get_job(session, key, job_id)
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(f"job {job_id} is {job.status.value}; its report is made when it succeeds")
    stored = report_key(job_id)
    if storage.size(stored) is None:
        raise NotFound(f"job {job_id} has no report: it finished before reports were made")
    report = json.loads(storage.get_bytes(stored))
    for moment in report["low_confidence"]:
        picture = report_key(job_id, f"moments/{moment['thumbnail']}")
        moment["thumbnail"] = storage.presigned_get(picture, expires)
    return JobReport.model_validate(report)


def preview_url(
    session: Session, key: ApiKey, job_id: str, which: str, storage: Storage, expires: int
) -> str:
    """A presigned URL of the job's before or after still."""
    job = get_job(session, key, job_id)
    if not job.preview_keys or which not in job.preview_keys:
        raise Conflict(f"job {job_id} has no preview yet; it is made when the job succeeds")
    return storage.presigned_get(str(job.preview_keys[which]), expires)
