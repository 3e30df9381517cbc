"""Dependencies that go away and come back: Redis restarted, Postgres restarted, the store
unreachable for a while. Jobs resume and finish; the API answers 503 (never 500) meanwhile
and /readyz names what is down. These tests run on a stack of their own, so restarting its
servers disturbs no other test."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import update

from cli.local_services import LocalStack, free_port
from cli.stack import api_argv, prepare, worker_argv
from shared.config import Settings
from shared.db import dispose_engines, session_scope
from shared.models import Job, JobStatus, utcnow
from shared.storage import Storage
from tests.clips import make_clip
from tests.conftest import Processes, make_key, wait_http, wait_job


@dataclass
class Private:
    """A stack, an API, a worker and a key of this module's own."""

    stack: LocalStack
    client: httpx.Client
    api_url: str
    env: dict[str, str]
    processes: Processes


@pytest.fixture(scope="module")
def private() -> Iterator[Private]:
    root = Path(tempfile.mkdtemp(prefix="lumiere-restart-"))
    root.chmod(0o755)
    stack = LocalStack(root)
    stack.start()
    procs = Processes()
    try:
        settings = Settings(**stack.settings())
        prepare(settings)
        key = make_key(settings, "restarts")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUMIERE_")}
        env.update(stack.env(), LUMIERE_CHUNK_LEASE_S="6", LUMIERE_DATA_DIR=str(root / "work"))
        port = free_port()
        procs.start(api_argv("127.0.0.1", port), env, "restarts-api.log")
        procs.start(
            worker_argv("control,chunks", 1, "restarts@localhost"), env, "restarts-worker.log"
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            yield Private(stack, client, base, env, procs)
    finally:
        procs.stop_all()
        dispose_engines()
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


def _submit(private: Private, tmp_path: Path, seconds: float = 3) -> str:
    clip = make_clip(tmp_path / "a.mp4", width=64, height=48, seconds=seconds)
    with clip.path.open("rb") as f:
        response = private.client.post(
            "/v1/jobs",
            files={"file": ("a.mp4", f)},
            data={
                "upscaler": "lanczos",
                "interpolator": "blend",
                "scale": "4",
                "fps": "60",
                "chunk_seconds": "1",
            },
        )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _wait_running(private: Private, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = private.client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] == "running" and job["frames_done"] > 0:
            return
        time.sleep(0.1)
    raise TimeoutError("the job never started running")


def test_redis_restart_while_jobs_are_queued_and_running(private: Private, tmp_path: Path) -> None:
    running = _submit(private, tmp_path)
    _wait_running(private, running)
    queued = _submit(private, tmp_path, seconds=1)
    private.stack.redis.stop()
    try:
        ready = httpx.get(f"{private.api_url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["down"] == ["redis"]
        # Reads still work without the broker; a new job is accepted and waits for it.
        assert private.client.get(f"/v1/jobs/{running}").status_code == 200
        during = _submit(private, tmp_path, seconds=1)
        time.sleep(2)
    finally:
        private.stack.redis.start()
    for job_id in (running, queued, during):
        job = wait_job(private.client, job_id, timeout=240)
        assert job["status"] == "succeeded", (job_id, job["error"])
    assert httpx.get(f"{private.api_url}/readyz", timeout=10).status_code == 200


def test_postgres_restart_while_a_job_runs(private: Private, tmp_path: Path) -> None:
    job_id = _submit(private, tmp_path)
    _wait_running(private, job_id)
    private.stack.postgres.stop()
    try:
        response = private.client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        ready = httpx.get(f"{private.api_url}/readyz", timeout=15)
        assert ready.status_code == 503 and "database" in ready.json()["down"]
        time.sleep(2)
    finally:
        private.stack.postgres.start()
    job = wait_job(private.client, job_id, timeout=240)
    assert job["status"] == "succeeded", job["error"]


def test_polls_right_after_a_database_restart_are_answered(
    private: Private, tmp_path: Path
) -> None:
    # The API's pooled read connections die with the database, unnoticed until used: the
    # first polls once it is back must be answered, not refused for a dead connection.
    job_id = _submit(private, tmp_path, seconds=1)
    assert private.client.get(f"/v1/jobs/{job_id}").status_code == 200  # connections open
    private.stack.postgres.stop()
    private.stack.postgres.start()
    for _ in range(3):
        response = private.client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        assert response.json()["id"] == job_id
    assert private.client.get("/v1/jobs", params={"limit": 5}).status_code == 200
    job = wait_job(private.client, job_id, timeout=240)
    assert job["status"] == "succeeded", job["error"]


def test_store_unreachable_for_a_while(private: Private, tmp_path: Path) -> None:
    job_id = _submit(private, tmp_path)
    _wait_running(private, job_id)
    private.stack.s3.stop()
    try:
        ready = httpx.get(f"{private.api_url}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["down"] == ["storage"]
        clip = make_clip(tmp_path / "b.mp4", seconds=0.3)
        with clip.path.open("rb") as f:
            refused = private.client.post("/v1/jobs", files={"file": ("b.mp4", f)})
        assert refused.status_code == 503
        time.sleep(3)
    finally:
        private.stack.s3.start()
    job = wait_job(private.client, job_id, timeout=240)
    assert job["status"] == "succeeded", job["error"]


def test_a_worker_machine_that_vanishes_for_good_is_replaced(
    private: Private, tmp_path: Path
) -> None:
    job_id = _submit(private, tmp_path)
    _wait_running(private, job_id)
    # The whole worker goes at once (main process and its pool), as when a machine dies:
    # nothing is acked, nothing is released; only the chunk's lease runs out.
    for proc in private.processes.procs:
        if "worker" in proc.args and proc.poll() is None:
            subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
            proc.kill()
            proc.wait(10)
    private.processes.start(
        worker_argv("control,chunks", 1, "replacement@localhost"),
        private.env,
        "replacement-worker.log",
    )
    job = wait_job(private.client, job_id, timeout=240)
    assert job["status"] == "succeeded", job["error"]


def test_api_killed_during_an_upload_leaves_no_input_and_the_client_can_retry(
    private: Private, tmp_path: Path
) -> None:
    storage = Storage(Settings(**private.stack.settings()))
    before_jobs = private.client.get("/v1/jobs").json()["data"]
    before_objects = _objects(storage)
    port = free_port()
    api = private.processes.start(api_argv("127.0.0.1", port), private.env, "doomed-api.log")
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz")
    boundary = "lumiere-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="big.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
    ).encode()

    def body() -> Iterator[bytes]:
        yield head
        block = os.urandom(1024 * 1024)
        for sent in range(64):
            if sent == 24:  # 24 MB in: more than one S3 part is already stored
                api.send_signal(signal.SIGKILL)
                api.wait(10)
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    with pytest.raises(httpx.TransportError):
        httpx.post(
            f"{base}/v1/jobs",
            content=body(),
            timeout=30,
            headers={
                **private.client.headers,
                "content-type": f"multipart/form-data; boundary={boundary}",
            },
        )
    # No job was created and no object became anyone's input.
    assert private.client.get("/v1/jobs").json()["data"] == before_jobs
    assert _objects(storage) == before_objects
    # The client retries against the restarted API and succeeds.
    api = private.processes.start(api_argv("127.0.0.1", port), private.env, "reborn-api.log")
    wait_http(f"{base}/healthz")
    clip = make_clip(tmp_path / "a.mp4", seconds=0.5)
    with clip.path.open("rb") as f:
        retried = httpx.post(
            f"{base}/v1/jobs",
            headers=private.client.headers,
            files={"file": ("a.mp4", f)},
            data={"upscaler": "lanczos", "interpolator": "blend"},
        )
    assert retried.status_code == 201
    assert wait_job(private.client, retried.json()["id"])["status"] == "succeeded"
    api.terminate()
    api.wait(10)


def _objects(storage: Storage) -> list[str]:
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix="jobs/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_a_full_disk_fails_the_chunk_with_a_clear_reason(private: Private, tmp_path: Path) -> None:
    # A real full disk: the worker's scratch space on a 2 MB tmpfs (this suite runs as root).
    scratch = Path(tempfile.mkdtemp(prefix="lumiere-tiny-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(scratch)], check=True)
    try:
        for proc in private.processes.procs:  # the module's worker: this one replaces it
            if "worker" in proc.args:
                proc.terminate()
                proc.wait(30)
        env = {**private.env, "LUMIERE_WORK_DIR": str(scratch)}
        small = private.processes.start(
            worker_argv("control,chunks", 1, "tiny-disk@localhost"), env, "tiny-disk-worker.log"
        )
        clip = make_clip(tmp_path / "a.mp4", width=160, height=120, seconds=2)
        with clip.path.open("rb") as f:
            response = private.client.post(
                "/v1/jobs",
                files={"file": ("a.mp4", f)},
                data={"upscaler": "lanczos", "scale": "4", "codec": "ffv1"},
            )
        job = wait_job(private.client, response.json()["id"], timeout=120)
        assert job["status"] == "failed"
        assert "disk is full" in job["error"] and "LUMIERE_WORK_DIR" in job["error"]
        small.terminate()
        small.wait(30)
    finally:
        subprocess.run(["umount", "-l", str(scratch)], check=False)
        shutil.rmtree(scratch, ignore_errors=True)
        # Leave the module as it was: a worker with a normal disk for the tests after this.
        private.processes.start(
            worker_argv("control,chunks", 1, "restored@localhost"), private.env, "restored.log"
        )


def test_a_job_whose_queued_messages_are_lost_finishes_by_itself(
    private: Private, tmp_path: Path
) -> None:
    job_id = _submit(private, tmp_path, seconds=4)
    _wait_running(private, job_id)
    # Redis restarted without its data: every queued chunk message is gone.
    redis.Redis(port=private.stack.redis.port).flushall()
    job = wait_job(private.client, job_id, timeout=120)
    assert job["status"] == "succeeded", job["error"]


def _rewind_to_a_dead_join(private: Private, job_id: str, attempts: int) -> None:
    """Put a finished job back where a join killed with its worker leaves it: joining, its
    try counted, its lease long run out, its message gone with the dead worker."""
    with session_scope(private.stack.postgres.url) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status=JobStatus.RUNNING,
                stage="joining",
                attempts=attempts,
                output_key=None,
                finished_at=None,
                updated_at=utcnow() - timedelta(hours=1),
            )
        )


def test_a_join_that_died_is_run_again_and_one_that_always_dies_fails_with_a_reason(
    private: Private, tmp_path: Path
) -> None:
    job_id = _submit(private, tmp_path, seconds=1)
    first = wait_job(private.client, job_id)
    assert first["status"] == "succeeded", first["error"]
    _rewind_to_a_dead_join(private, job_id, attempts=1)
    again = wait_job(private.client, job_id, timeout=60)
    assert again["status"] == "succeeded", again["error"]
    assert again["output"] == first["output"]
    # Every try so far died: the job fails with the reason instead of killing more workers.
    attempts = Settings().chunk_max_attempts
    _rewind_to_a_dead_join(private, job_id, attempts=attempts)
    failed = wait_job(private.client, job_id, timeout=60)
    assert failed["status"] == "failed"
    assert f"died {attempts} times while joining" in failed["error"]
