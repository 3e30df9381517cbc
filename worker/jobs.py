"""What the Celery tasks do: plan a job, run one chunk, join the chunks. Plain functions.

Each takes IDs, re-reads the rows, checks the state first and returns early when the work
is done or no longer wanted, so a task delivered twice does no harm.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from shared import queue
from shared.config import get_settings
from shared.db import session_scope
from shared.errors import InvalidInput, LumiereError
from shared.jobs import ACTIVE, move_chunk, move_job, notify, progress_of, set_job
from shared.logs import get_logger
from shared.models import Chunk, ChunkStatus, Job, JobStatus, Upload, UploadStatus, utcnow
from shared.schemas import public_meta
from shared.storage import Storage, analysis_key, chunk_key, report_key, result_key
from worker.cancel import Cancelled
from worker.plan import ChunkPlan

if TYPE_CHECKING:
    from worker.pipeline import ChunkResult
    from worker.stages.repair import RepairPlan

log = get_logger(__name__)

PROGRESS_EVERY_S = 0.5
# Running work (a chunk, a plan, a join) renews its lease (Settings.chunk_lease_s) from a
# thread of its own, so a slow first frame does not look dead; one not renewed in time is
# taken over. Work that no one holds — not running under a live lease, not waiting in the
# broker, not just delivered to a worker — is sent again (see `reconcile`): its message was
# lost (the broker was down when it was sent, restarted without its data, or the worker that
# had it died). Sending twice does no harm: every task checks the rows first.
# Rows younger than this are left alone: their message may be on its way.
SEND_GRACE = timedelta(seconds=10)
RECONCILE_LOCK = "lumiere:reconcile"


def work_dir() -> Path:
    """This worker's scratch space for inputs and chunk files."""
    settings = get_settings()
    path = settings.work_dir or settings.data_dir / "work"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def jsonable(value: Any) -> Any:
    """Dataclasses, fractions and tuples made JSON-ready (fractions as floats + exact text)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Fraction):
        return float(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def local_copy(storage: Storage, key: str, job_id: str, name: str) -> Path:
    """A local copy of ``key`` for this job, downloaded once per machine (atomically)."""
    folder = work_dir() / job_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.exists():
        part = folder / f".{name}.{os.getpid()}.part"
        storage.download_file(key, part)
        os.replace(part, path)
    return path


def pipeline_options(job: Job, audio_path: Path | None) -> Any:
    """The pipeline's options for this job."""
    return pipeline_options_from(dict(job.options), audio_path)


def pipeline_options_from(values: dict[str, Any], audio_path: Path | None) -> Any:
    """The pipeline's options from a job's stored options and its local soundtrack."""
    from worker.pipeline import Options

    return Options.from_dict({**values, "audio_file": str(audio_path) if audio_path else None})


def resource_error(err: BaseException) -> str | None:
    """A reason users can act on when this worker ran out of disk or memory, else ``None``."""
    # torch reports a failed CPU allocation as a RuntimeError, and a CUDA one (after the
    # upscaler's smaller-tile retries) as torch.cuda.OutOfMemoryError, a RuntimeError too.
    out_of_memory = isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError)
        and ("can't allocate memory" in str(err) or "out of memory" in str(err).lower())
    )
    if out_of_memory:
        return "the worker ran out of memory: try a smaller scale, or a machine with more memory"
    if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (
            f"the worker's disk is full ({work_dir()}): free space there or point "
            "LUMIERE_WORK_DIR at a bigger disk, then retry the job"
        )
    return None


def fail_job(job_id: str, reason: str, retryable: bool = True) -> None:
    """Mark a job failed with a reason users can act on; ``retryable=False`` when the film or
    its options caused it, so running it again cannot help."""
    event = None
    with session_scope() as session:
        failed = move_job(
            session, job_id, ACTIVE, JobStatus.FAILED, error=reason[:2000], retryable=retryable
        )
        if failed:
            log.warning("job.failed", job_id=job_id, reason=reason)
            event = notify(session, job_id, "job.failed")
    queue.enqueue_webhooks([event])


def plan_job(job_id: str) -> None:
    """Probe the film, write one row per chunk, enqueue the chunks that are not done."""
    if not start_planning(job_id):
        return
    with control_try(job_id, "planning") as mine:
        if mine and write_chunks(job_id) and send_chunks(job_id):
            # Every chunk may already be done (a re-plan, or chunks faster than this).
            maybe_join(job_id)


def start_planning(job_id: str) -> bool:
    """Move a queued job to running (announcing ``job.started``); ``True`` if it is planning."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            return False
        started_event = None
        if move_job(
            session,
            job_id,
            [JobStatus.QUEUED],
            JobStatus.RUNNING,
            stage="planning",
            attempts=0,
            started_at=job.started_at or utcnow(),
        ):
            started_event = notify(session, job_id, "job.started")
        planning = session.scalar(
            select(
                exists().where(
                    Job.id == job_id, Job.status == JobStatus.RUNNING, Job.stage == "planning"
                )
            )
        )
    queue.enqueue_webhooks([started_event])
    return bool(planning)


def write_chunks(job_id: str) -> bool:
    """Probe the film and write its chunk rows (once); ``False`` if the job failed instead."""
    from worker.media.probe import probe
    from worker.pipeline import expected_frames, pick_device, plan_file, resolve_target

    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            return False
        if session.scalar(select(exists().where(Chunk.job_id == job_id))):
            return True
        options = pipeline_options(job, None)
        input_key = job.input_key
    started = time.perf_counter()
    storage = Storage()
    try:
        source = local_copy(storage, input_key, job_id, "input")
        info = probe(source)
        resolve_target(info, options)
        plans = plan_file(source, options.chunk_length(), info, options.preview())
        cadence = sample_cadence(source, info)
        # Say whether the chunks will drop the repeats (they judge their own frames).
        cadence["repeats_dropped"] = bool(
            options.target_fps()
            and options.repeats == "drop"
            and cadence["original_fps"] != round(float(info.fps), 3)
        )
        # Decided once for the film, from a sample of it: every chunk repairs alike.
        device = pick_device(get_settings().device)
        with structlog.contextvars.bound_contextvars(job_id=job_id):
            repair = repair_plan(storage, input_key, source, info, options, device)
    except InvalidInput as err:
        fail_job(job_id, str(err), retryable=False)
        return False
    fps = options.target_fps()
    with session_scope() as session:
        # Another delivery of this task may have planned meanwhile: the unique
        # (job_id, index) constraint would refuse a second set; check first.
        if session.scalar(select(exists().where(Chunk.job_id == job_id))):
            return True
        for plan in plans:
            session.add(
                Chunk(
                    job_id=job_id,
                    index=plan.index,
                    plan=plan.to_dict(),
                    frames_total=chunk_output_frames(plan, fps),
                )
            )
        return set_job(
            session,
            job_id,
            ACTIVE,
            probe={
                **public_meta(jsonable(info)),
                "cadence": cadence,
                "repair": repair.to_dict(),
                **stretch(options, plans),
            },
            chunks_total=len(plans),
            frames_total=expected_frames(plans, fps),
            timings={"plan": round(time.perf_counter() - started, 3)},
        )


def repair_plan(
    storage: Storage, input_key: str, source: Path, info: Any, options: Any, device: Any
) -> RepairPlan:
    """The film's repair plan, from findings measured once per film and kept beside its
    input: a preview, a re-run and (the API copies them with the input) a ``source_job``'s
    job find them there. Kept findings missing, unreadable or of other bytes or other code
    are measured again, and kept."""
    from worker.film_repair import findings_name, kept_findings, plan_repair, read_findings
    from worker.models.store import sha256_file
    from worker.stages.repair import wanted_parts

    parts = wanted_parts(options)
    if not parts:
        return plan_repair(source, info, options, device)
    key = analysis_key(input_key, findings_name(parts))
    checksum = sha256_file(source)
    data = storage.find_bytes(key)
    known = None
    if data is not None:
        try:
            known = read_findings(data, checksum)
        except ValueError as err:
            log.warning("repair.findings_unusable", key=key, reason=str(err)[:200])
    plan = plan_repair(source, info, options, device, known)
    if known is None:
        storage.put_bytes(key, kept_findings(plan.found, checksum), "application/json")
    return plan


def stretch(options: Any, plans: list[ChunkPlan]) -> dict[str, Any]:
    """For a preview, the stretch of the film it shows (seconds; ``auto`` chose the start)."""
    if options.preview() is None:
        return {}
    start, stop = plans[0].start, plans[-1].stop
    return {"preview": {"start": round(float(start), 3), "seconds": round(float(stop - start), 3)}}


def send_chunks(job_id: str) -> bool:
    """Enqueue the chunks that are not done and move the job on to "processing"."""
    with session_scope() as session:
        todo = list(
            session.scalars(
                select(Chunk.index)
                .where(Chunk.job_id == job_id, Chunk.status != ChunkStatus.DONE)
                .order_by(Chunk.index)
            )
        )
        job = session.get(Job, job_id)
        preview = job is not None and pipeline_options(job, None).preview() is not None
    if not all([queue.enqueue_chunk(job_id, index, preview) for index in todo]):
        # The broker is down: stay in "planning"; the reconciler plans again (which sends
        # the chunks that are not done) once this try's lease has run out.
        return False
    with session_scope() as session:
        return set_job(session, job_id, [JobStatus.RUNNING], stage="processing")


CADENCE_SAMPLE_FRAMES = 240


def sample_cadence(source: Path, info: Any) -> dict[str, Any]:
    """The film's original cadence, from repeated frames in its first few seconds (old films
    transferred at 24/25/30 fps repeat frames of a 16–18 fps original)."""
    from itertools import islice

    from worker.media.decode import decode_range
    from worker.stages.cadence import detect_cadence, thumbnail

    thumbs = [thumbnail(f.image) for f in islice(decode_range(source, info), CADENCE_SAMPLE_FRAMES)]
    found = detect_cadence(thumbs, float(info.fps))
    return {
        "original_fps": round(found.original_fps, 3),
        "pattern": found.pattern,
        "repeated_frames": sum(found.repeats),
        "sampled_frames": len(thumbs),
    }


def chunk_output_frames(plan: ChunkPlan, fps: Fraction | None) -> int:
    """Output frames a chunk owns: its source frames, or those timed in [start, stop)."""
    from worker.retime import output_count

    if fps is None:
        return plan.frames
    return output_count(plan.stop, fps) - output_count(plan.start, fps)


def upload_previews(
    storage: Storage, job_id: str, source: Path, result: Path, seconds: float
) -> dict[str, Any]:
    """Store a source frame and the same restored frame for the dashboard's before/after."""
    from worker.media.stills import still_at

    keys = {}
    for name, path in (("before", source), ("after", result)):
        keys[name] = f"jobs/{job_id}/preview-{name}.jpg"
        storage.put_bytes(keys[name], still_at(path, seconds), "image/jpeg")
    return {**keys, "seconds": round(seconds, 3)}


def store_report(
    storage: Storage, job_id: str, indices: list[int], upscaler: str, repair: Any
) -> None:
    """Merge the chunks' measurements into the film's report (``GET /v1/jobs/{id}/report``);
    a chunk done before reports existed has none, and is left out (logged)."""
    from worker.report import merge
    from worker.stages.upscale import model_facts

    parts = []
    for index in indices:
        key = report_key(job_id, f"chunks/{index:05d}.json")
        if storage.size(key) is None:
            log.warning("report.chunk_missing", job_id=job_id, chunk=index)
            continue
        parts.append(json.loads(storage.get_bytes(key)))
    report = merge(parts, model_facts(upscaler), repair)
    storage.put_bytes(report_key(job_id), json.dumps(report).encode(), "application/json")


def upload_chunk_report(storage: Storage, job_id: str, index: int, result: ChunkResult) -> None:
    """Store what a chunk measured, and the pictures of its least confident moments."""
    for name, jpeg in result.report.thumbnails().items():
        storage.put_bytes(report_key(job_id, f"moments/{name}"), jpeg, "image/jpeg")
    data = json.dumps(result.report_dict()).encode()
    storage.put_bytes(report_key(job_id, f"chunks/{index:05d}.json"), data, "application/json")


class Lease(threading.Thread):
    """Runs ``renew`` every lease/6 s until stopped; dies with the process on SIGKILL."""

    def __init__(self, name: str, renew: Callable[[Session], object]) -> None:
        super().__init__(name=f"lease-{name}", daemon=True)
        self.renew = renew
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(get_settings().chunk_lease_s / 6):
            try:
                with session_scope() as session:
                    self.renew(session)
            except Exception as err:  # database briefly down: try again next period
                log.warning("lease.renew_failed", lease=self.name, error=str(err))

    def stop(self) -> None:
        self.done.set()


def chunk_lease(job_id: str, index: int) -> Lease:
    """The lease of a running chunk: its heartbeat."""
    return Lease(
        f"{job_id}-{index}",
        lambda session: session.execute(
            update(Chunk)
            .where(
                Chunk.job_id == job_id, Chunk.index == index, Chunk.status == ChunkStatus.RUNNING
            )
            .values(heartbeat_at=utcnow())
        ),
    )


@contextlib.contextmanager
def control_try(job_id: str, stage: str) -> Iterator[bool]:
    """One try at planning or joining a job, under a lease (the job's ``updated_at``).

    Yields ``False`` when the job is not at ``stage`` or has used up its tries: those are
    counted like a chunk's attempts, and a try that ends — well, or with an error that is
    handled — gives its attempt back, so only a worker that died counts. A film that kills
    the worker every time fails after ``chunk_max_attempts`` instead of killing the next."""
    at_stage = (Job.id == job_id, Job.status == JobStatus.RUNNING, Job.stage == stage)
    tries = get_settings().chunk_max_attempts
    with session_scope() as session:
        won = session.execute(
            update(Job)
            .where(*at_stage, Job.attempts < tries)
            .values(attempts=Job.attempts + 1, updated_at=utcnow())
            .returning(Job.id)
        ).first()
        exhausted = not won and session.scalar(select(exists().where(*at_stage)))
    if exhausted:
        fail_job(
            job_id,
            f"the worker process died {tries} times while {stage} this film: it may be "
            "damaged, or need more memory than the workers have",
        )
    if not won:
        yield False
        return
    log.info("control.start", job_id=job_id, stage=stage)
    lease = Lease(
        f"{job_id}-{stage}",
        lambda session: session.execute(update(Job).where(*at_stage).values(updated_at=utcnow())),
    )
    lease.start()
    try:
        yield True
    finally:
        lease.stop()
        # The database down: the attempt stays counted.
        with contextlib.suppress(Exception), session_scope() as session:
            session.execute(
                update(Job).where(*at_stage, Job.attempts > 0).values(attempts=Job.attempts - 1)
            )


def sweep_stale() -> int:
    """Take back chunks whose lease ran out, then re-send the work no one holds. Safe to run
    on every worker at once (guarded updates, and one reconciler at a time)."""
    stale = utcnow() - timedelta(seconds=get_settings().chunk_lease_s)
    with session_scope() as session:
        expired = session.execute(
            update(Chunk)
            .where(
                Chunk.status == ChunkStatus.RUNNING,
                Chunk.heartbeat_at < stale,
                Chunk.job_id.in_(select(Job.id).where(Job.status == JobStatus.RUNNING)),
            )
            .values(status=ChunkStatus.PENDING, frames_done=0)
            .returning(Chunk.job_id, Chunk.index)
        ).all()
    for job_id, index in expired:
        log.warning("chunk.lease_expired", job_id=job_id, chunk=index)
    return reconcile()


def reconcile() -> int:
    """Compare the active jobs with what the broker and the leases hold; send again what no
    one holds. Returns the number of tasks sent."""
    from shared.health import redis_client

    settings = get_settings()
    client = redis_client(settings)
    if not client.set(RECONCILE_LOCK, socket.gethostname(), nx=True, ex=5):
        return 0  # another worker is reconciling right now
    queue.declare_queues()
    held = queue.held_tasks(client, fresh_s=settings.chunk_lease_s)
    lost = [task for task in unheld_work(settings.chunk_lease_s) if task not in held]
    for task in lost:
        log.warning("work.resent", task=task[0], args=list(task[1]), reason="no one holds it")
        queue.send_again(task)
    return len(lost)


def unheld_work(lease_s: float) -> list[queue.Task]:
    """The tasks active jobs need that no lease covers: pending chunks of processing jobs,
    plans of queued jobs and of stalled planning, stalled joins."""
    now = utcnow()
    settled, stale = now - SEND_GRACE, now - timedelta(seconds=lease_s)
    running = Job.status == JobStatus.RUNNING
    with session_scope() as session:
        chunks = session.execute(
            select(Chunk.job_id, Chunk.index)
            .join(Job, Job.id == Chunk.job_id)
            .where(
                running,
                Job.stage == "processing",
                Job.updated_at < settled,
                Chunk.status == ChunkStatus.PENDING,
                (Chunk.heartbeat_at.is_(None)) | (Chunk.heartbeat_at < settled),
            )
        ).all()
        plans = session.scalars(
            select(Job.id).where(
                ((Job.status == JobStatus.QUEUED) & (Job.updated_at < settled))
                | (running & (Job.stage == "planning") & (Job.updated_at < stale))
            )
        ).all()
        joins = session.scalars(
            select(Job.id).where(running, Job.stage == "joining", Job.updated_at < stale)
        ).all()
    return [
        *((queue.CHUNK, (job_id, index)) for job_id, index in chunks),
        *((queue.PLAN, (job_id,)) for job_id in plans),
        *((queue.JOIN, (job_id,)) for job_id in joins),
    ]


def abort_abandoned_uploads(max_age: timedelta = timedelta(days=1)) -> int:
    """Abort multipart uploads nobody finished (a client gone, an API killed mid-stream), so
    their parts stop taking space; presigned uploads past their expiry are marked aborted."""
    storage = Storage()
    cutoff = utcnow() - max_age
    aborted = 0
    listed = storage.client.list_multipart_uploads(Bucket=storage.bucket)
    for upload in listed.get("Uploads", []):
        if upload["Initiated"] < cutoff:
            storage.client.abort_multipart_upload(
                Bucket=storage.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
            aborted += 1
    with session_scope() as session:
        session.execute(
            update(Upload)
            .where(Upload.status == UploadStatus.PENDING, Upload.expires_at < cutoff)
            .values(status=UploadStatus.ABORTED)
        )
    if aborted:
        log.info("uploads.aborted", count=aborted)
    return aborted


def _claim_chunk(session: Session, job_id: str, index: int) -> Chunk | None:
    """Take a chunk to work on; ``None`` when it is done or someone else is on it."""
    job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.RUNNING:
        return None
    stale = utcnow() - timedelta(seconds=get_settings().chunk_lease_s)
    claimed = session.execute(
        update(Chunk)
        .where(
            Chunk.job_id == job_id,
            Chunk.index == index,
            (Chunk.status.in_([ChunkStatus.PENDING, ChunkStatus.FAILED]))
            | ((Chunk.status == ChunkStatus.RUNNING) & (Chunk.heartbeat_at < stale)),
            Chunk.attempts < get_settings().chunk_max_attempts,
        )
        .values(
            status=ChunkStatus.RUNNING,
            attempts=Chunk.attempts + 1,
            frames_done=0,
            worker=f"{socket.gethostname()}:{os.getpid()}",
            heartbeat_at=utcnow(),
            started_at=utcnow(),
            error=None,
        )
        .returning(Chunk.id)
    ).first()
    if claimed is None:
        return None
    return session.get(Chunk, claimed[0])


def _exhausted(job_id: str, index: int) -> bool:
    """Whether a chunk that could not be claimed has used up its attempts."""
    with session_scope() as session:
        chunk = session.scalar(select(Chunk).where(Chunk.job_id == job_id, Chunk.index == index))
        return bool(
            chunk
            and chunk.status != ChunkStatus.DONE
            and chunk.attempts >= get_settings().chunk_max_attempts
        )


# How often a running chunk asks whether its job still runs: the README promises that a
# cancel stops running chunks within a second, and the stages check between tiles and layers.
CANCEL_POLL_S = 0.2


class CancelWatch(threading.Thread):
    """Asks every CANCEL_POLL_S whether a chunk's job still runs; sets ``cancelled`` (and
    ``reason``) once it does not, so the stages stop mid-frame instead of at the next one."""

    def __init__(self, job_id: str, index: int) -> None:
        super().__init__(name=f"cancel-watch-{job_id}-{index}", daemon=True)
        self.job_id = job_id
        self.cancelled = threading.Event()
        self.reason = ""
        self.done = threading.Event()

    def run(self) -> None:
        failing = False
        while not self.done.wait(CANCEL_POLL_S):
            try:
                with session_scope() as session:
                    status = session.scalar(select(Job.status).where(Job.id == self.job_id))
            except Exception as err:  # database briefly down: the chunk goes on; ask again
                if not failing:
                    log.warning("cancel_watch.failed", job_id=self.job_id, error=str(err))
                failing = True
                continue
            failing = False
            if status != JobStatus.RUNNING:
                self.reason = f"job is {status.value if status else 'deleted'}"
                self.cancelled.set()
                return

    def stop(self) -> None:
        """Stop watching; wait a moment for the thread (a poll under way times out by itself)."""
        self.done.set()
        self.join(timeout=1)


def run_chunk(job_id: str, index: int) -> None:
    """Upscale, interpolate and encode one chunk, then upload it to its fixed key."""
    storage = Storage()
    claimed = _start_chunk(job_id, index)
    if claimed is None:
        return
    log.info("chunk.start", job_id=job_id, chunk=index)
    done = _process_chunk(storage, job_id, index, *claimed)
    if done is None:
        return
    result, key = done
    with session_scope() as session:
        move_chunk(
            session,
            job_id,
            index,
            [ChunkStatus.RUNNING],
            ChunkStatus.DONE,
            output_key=key,
            frames_done=result.frames_out,
            finished_at=utcnow(),
            timings={k: round(v, 3) for k, v in result.seconds.items()},
        )
    log.info(
        "chunk.done", job_id=job_id, chunk=index, frames=result.frames_out, seconds=result.seconds
    )
    maybe_join(job_id)


def _start_chunk(job_id: str, index: int) -> tuple[ChunkPlan, Any, str, Any] | None:
    """Claim the chunk: its plan, options, input key and the film's repair plan; ``None``
    when it is not ours to run."""
    with session_scope() as session:
        chunk = _claim_chunk(session, job_id, index)
        if chunk is None:
            if _exhausted(job_id, index):
                # Each attempt died without a word (killed for memory, or the machine went):
                # stop instead of killing worker after worker.
                attempts = get_settings().chunk_max_attempts
                fail_chunk(
                    job_id,
                    index,
                    f"gave up after {attempts} attempts: the worker died "
                    "each time (out of memory? try a smaller scale or a bigger machine)",
                )
            return None
        job = session.get(Job, job_id)
        assert job is not None
        repair = (job.probe or {}).get("repair")
        return ChunkPlan.from_dict(chunk.plan), pipeline_options(job, None), job.input_key, repair


def _process_chunk(
    storage: Storage,
    job_id: str,
    index: int,
    plan: ChunkPlan,
    options: Any,
    input_key: str,
    repair: dict[str, Any] | None = None,
) -> tuple[ChunkResult, str] | None:
    """Run the chunk under its lease, stopping on a cancel, and upload it: the result and
    its key, or ``None`` when it ended otherwise (recorded). Errors a retry may cure give
    the chunk back and are raised again. ``repair``: the plan the film's planning stored
    (a job planned before repair existed has none: the chunk plans it, as every one does)."""
    from worker.media.encode import chunk_muxer
    from worker.pipeline import pick_device, process_chunk
    from worker.stages.repair import RepairPlan

    ext = chunk_muxer(options.codec)
    out = Path(tempfile.mkdtemp(prefix=f"chunk-{index:05d}-", dir=work_dir())) / f"c.{ext}"
    lease = chunk_lease(job_id, index)
    lease.start()
    watch = CancelWatch(job_id, index)
    watch.start()
    try:
        source = local_copy(storage, input_key, job_id, "input")
        result = process_chunk(
            source,
            plan,
            options,
            out,
            on_progress=_progress_recorder(job_id, index),
            should_stop=watch.cancelled.is_set,
            device=pick_device(get_settings().device),
            repair=RepairPlan.from_dict(repair) if repair else None,
        )
        key = chunk_key(job_id, index, ext)
        storage.upload_file(out, key)
        upload_chunk_report(storage, job_id, index, result)
    except Exception as err:
        if not _settle(job_id, index, err, watch.reason):
            # Unexpected or transient: give the chunk back so the task's retry can claim it.
            release_chunk(job_id, index)
            raise
        return None
    finally:
        watch.stop()
        lease.stop()
        shutil.rmtree(out.parent, ignore_errors=True)
    return result, key


def _progress_recorder(job_id: str, index: int) -> Callable[[int], None]:
    """A chunk's progress callback: every PROGRESS_EVERY_S at most, record the frames done
    (a heartbeat too) and send the job's progress webhook when it crosses a step."""
    last = [0.0]

    def on_progress(frames: int) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        with session_scope() as session:
            session.execute(
                update(Chunk)
                .where(Chunk.job_id == job_id, Chunk.index == index)
                .values(frames_done=frames, heartbeat_at=utcnow())
            )
            event = announce_progress(session, job_id)
        queue.enqueue_webhooks([event])

    return on_progress


def _settle(job_id: str, index: int, err: Exception, cancel_reason: str) -> bool:
    """Record how a chunk's try ended in ``err``: cancelled (pending again), or failed with
    a reason the user can act on. False when neither: the error is unexpected or transient."""
    if isinstance(err, Cancelled):
        log.info("chunk.cancelled", job_id=job_id, chunk=index, reason=cancel_reason)
        with session_scope() as session:
            move_chunk(
                session, job_id, index, [ChunkStatus.RUNNING], ChunkStatus.PENDING, frames_done=0
            )
        return True
    if isinstance(err, LumiereError):
        fail_chunk(job_id, index, str(err), retryable=not isinstance(err, InvalidInput))
        return True
    reason = resource_error(err) if isinstance(err, OSError | MemoryError | RuntimeError) else None
    if reason is None:
        return False
    fail_chunk(job_id, index, reason)
    return True


def announce_progress(session: Session, job_id: str) -> str | None:
    """Record a ``job.progress`` event when the job crosses its next progress step (once)."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or not job.frames_total or job.webhook_progress_step <= 0:
        return None
    frames = session.scalar(
        select(func.coalesce(func.sum(Chunk.frames_done), 0)).where(Chunk.job_id == job_id)
    )
    step = job.webhook_progress_step
    reached = math.floor(progress_of(job.status, int(frames or 0), job.frames_total) / step)
    level = round(reached * step, 6)
    if level <= 0:
        return None
    won = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.progress_notified < level)
        .values(progress_notified=level)
        .returning(Job.id)
    ).first()
    return notify(session, job_id, "job.progress", progress=level) if won else None


def fail_chunk(job_id: str, index: int, reason: str, retryable: bool = True) -> None:
    """Mark a chunk failed, and its job with it (retry re-runs only the failed chunks)."""
    log.warning("chunk.failed", job_id=job_id, chunk=index, error=reason)
    with session_scope() as session:
        move_chunk(
            session,
            job_id,
            index,
            [ChunkStatus.RUNNING, ChunkStatus.PENDING],
            ChunkStatus.FAILED,
            error=reason[:2000],
        )
    fail_job(job_id, f"chunk {index}: {reason}", retryable)


def release_chunk(job_id: str, index: int) -> None:
    """Put a running chunk back to pending; if the database is down, it goes stale instead.

    The attempt is handed back too: ``attempts`` counts tries that ended without a word (the
    process died), so that an outage of the store or the database, which ends each try
    cleanly, never exhausts a chunk's budget."""
    try:
        with session_scope() as session:
            move_chunk(
                session,
                job_id,
                index,
                [ChunkStatus.RUNNING],
                ChunkStatus.PENDING,
                frames_done=0,
                attempts=Chunk.attempts - 1,
            )
    except Exception as err:  # the chunk's heartbeat goes stale and it is taken over later
        log.warning("chunk.release_failed", job_id=job_id, chunk=index, error=str(err))


def maybe_join(job_id: str) -> None:
    """Enqueue the join once, when the last chunk is done (a guarded stage change)."""
    with session_scope() as session:
        not_done = exists().where(Chunk.job_id == job_id, Chunk.status != ChunkStatus.DONE)
        won = session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == JobStatus.RUNNING,
                Job.stage == "processing",
                ~not_done,
            )
            .values(stage="joining", attempts=0, updated_at=utcnow())
            .returning(Job.id)
        ).first()
    if won:
        queue.enqueue_join(job_id)


def join_job(job_id: str) -> None:
    """Concatenate the chunks, mux the sound, upload the result, mark the job succeeded."""
    with control_try(job_id, "joining") as mine:
        result = build_result(job_id) if mine else None
    if result is None:
        return
    event = None
    with session_scope() as session:
        if move_job(
            session, job_id, [JobStatus.RUNNING], JobStatus.SUCCEEDED, stage="done", **result
        ):
            event = notify(
                session, job_id, "job.succeeded", progress=1.0, output=result["output_meta"]
            )
    queue.enqueue_webhooks([event])
    shutil.rmtree(work_dir() / job_id, ignore_errors=True)
    log.info("job.succeeded", job_id=job_id, timings=result["timings"])


def build_result(job_id: str) -> dict[str, Any] | None:
    """Join the chunks into the result and upload it; the job's final fields, or ``None`` when
    the job failed (with a reason) instead."""
    from worker.media.probe import probe, reductions
    from worker.pipeline import join_chunks

    storage = Storage()
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        chunks = list(
            session.scalars(select(Chunk).where(Chunk.job_id == job_id).order_by(Chunk.index))
        )
        input_key, audio_key, ext = job.input_key, job.audio_key, job.options["container"]
        timings = dict(job.timings or {})
        job_options = dict(job.options)
        repair = (job.probe or {}).get("repair")
        repair = (job.probe or {}).get("repair")
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="join-", dir=work_dir()))
    try:
        source = local_copy(storage, input_key, job_id, "input")
        audio = local_copy(storage, audio_key, job_id, "audio") if audio_key else None
        files = []
        for chunk in chunks:
            assert chunk.output_key is not None
            files.append(folder / Path(chunk.output_key).name)
            storage.download_file(chunk.output_key, files[-1])
        out = folder / f"result.{ext}"
        plans = [ChunkPlan.from_dict(c.plan) for c in chunks]
        options = pipeline_options_from(job_options, audio)
        join_chunks(source, plans, files, out, options)
        key = result_key(job_id, ext)
        storage.upload_file(out, key)
        result = probe(out)
        meta = public_meta(jsonable(result))
        # What the result keeps less of than the film (bit depth, colour, lossless sound).
        meta["reductions"] = reductions(probe(source), result)
        # What repair found in the film and did to it (decided once, at planning).
        meta["repair"] = repair
        previews = upload_previews(storage, job_id, source, out, float(meta["duration"]) / 2)
        store_report(storage, job_id, [c.index for c in chunks], options.upscaler, repair)
    except LumiereError as err:
        fail_job(job_id, f"joining: {err}", retryable=not isinstance(err, InvalidInput))
        return None
    except (OSError, MemoryError, RuntimeError) as err:
        reason = resource_error(err)
        if reason is None:
            raise
        fail_job(job_id, f"joining: {reason}")
        return None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for chunk in chunks:
        for stage, seconds in (chunk.timings or {}).items():
            timings[stage] = round(timings.get(stage, 0.0) + seconds, 3)
    timings["join"] = round(time.perf_counter() - started, 3)
    meta["size"] = storage.size(key)
    return {"output_key": key, "output_meta": meta, "timings": timings, "preview_keys": previews}
