"""`lumiere up` (what `make run` calls) brings the whole stack up and takes it down on Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from cli.local_services import free_port
from shared.db import session_scope
from shared.models import Chunk, Job
from tests.clips import decoded_frames, make_clip
from tests.conftest import wait_job
from tests.e2e.up import lumiere_up, wait_ready

# Jobs that run in seconds on a CPU, in chunks of a second.
QUICK = {
    "upscaler": "lanczos",
    "interpolator": "blend",
    "scale": "4",
    "fps": "50",
    "chunk_seconds": "1",
}


def test_up_serves_health_with_every_dependency_and_stops_cleanly() -> None:
    data = Path(tempfile.mkdtemp(prefix="lumiere-up-"))
    data.chmod(0o755)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMIERE_")}
    env.update(LUMIERE_DATA_DIR=str(data / "data"), LUMIERE_PORT=str(port))
    exe = Path(sys.executable).parent / "lumiere"
    proc = subprocess.Popen(
        [str(exe), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        health = wait_ready(f"http://127.0.0.1:{port}/healthz", proc, 120)
        assert health["status"] == "ok"
        assert all(health["dependencies"][d]["ok"] for d in ("database", "redis", "storage"))
        # Everything it stores lives under LUMIERE_DATA_DIR.
        assert (data / "data" / "services" / "postgres" / "data" / "PG_VERSION").exists()
        assert (data / "data" / "services" / "s3" / "data").is_dir()
        # A second shell, told nothing but the data directory, finds the running stack.
        made = subprocess.run(
            [str(exe), "keys", "create", "bob"], env=env, capture_output=True, text=True
        )
        assert made.returncode == 0, made.stderr
        bob = made.stdout.strip().splitlines()[-1]
        listed = httpx.get(
            f"http://127.0.0.1:{port}/v1/jobs", headers={"Authorization": f"Bearer {bob}"}
        )
        assert listed.status_code == 200, listed.text
        assert oct((data / "data" / "stack.json").stat().st_mode & 0o777) == "0o600"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output.decode(errors="replace")[-3000:]
        assert b"Lumi\xc3\xa8re is up" in output
        # Postgres was shut down (its pid file goes away on a clean stop).
        assert not (data / "data" / "services" / "postgres" / "data" / "postmaster.pid").exists()
        assert not (data / "data" / "stack.json").exists()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(data, ignore_errors=True)


def _pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _kill_and_wait_back(
    client: httpx.Client, pattern: str, ready: Callable[[], bool], timeout: float = 90
) -> None:
    """SIGKILL every process matching ``pattern`` and wait until the stack serves again."""
    victims = _pids(pattern)
    assert victims, f"no process matches {pattern!r}"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        back = [pid for pid in _pids(pattern) if pid not in victims]
        if back and ready():
            return
        time.sleep(0.3)
    raise TimeoutError(f"{pattern!r} was not restarted within {timeout:.0f} s")


def _result_frames(client: httpx.Client, job_id: str, path: Path) -> list[bytes]:
    location = client.get(f"/v1/jobs/{job_id}/result").headers["location"]
    path.write_bytes(httpx.get(location).content)
    return [frame.tobytes() for frame in decoded_frames(path)]


def test_up_restarts_whatever_is_killed_and_the_job_finishes_the_same(tmp_path: Path) -> None:
    with lumiere_up(tmp_path) as up:
        client, base, port, proc = up.client, up.base, up.port, up.proc
        clip = make_clip(tmp_path / "a.mp4", width=96, height=72, seconds=6)
        fields = {**QUICK, "codec": "ffv1"}  # lossless: frames compare exactly

        def submit() -> str:
            with clip.path.open("rb") as f:
                response = client.post("/v1/jobs", files={"file": ("a.mp4", f)}, data=fields)
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        began = time.monotonic()
        undisturbed = wait_job(client, submit(), timeout=180)
        print(f"undisturbed job: {time.monotonic() - began:.1f} s")
        assert undisturbed["status"] == "succeeded", undisturbed["error"]
        expected = _result_frames(client, undisturbed["id"], tmp_path / "expected.mkv")

        disturbed = submit()
        started = time.monotonic()
        wait_job(client, disturbed, ("running",), timeout=60)

        def serving() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        def worker_back() -> bool:
            workers = httpx.get(f"{base}/healthz", timeout=5).json()["dependencies"]["workers"]
            return bool(workers["count"])

        services = up.data / "services"
        _kill_and_wait_back(client, "shared.celery_app worker.*local@%h", worker_back)
        redis_port = json.loads((up.data / "stack.json").read_text())["redis_url"]
        redis_port = redis_port.rsplit(":", 1)[1].split("/")[0]  # valkey names itself so
        _kill_and_wait_back(client, f"valkey-server 127.0.0.1:{redis_port}$", serving)
        _kill_and_wait_back(client, f"-dir={services / 's3' / 'data'}", serving)
        _kill_and_wait_back(client, f"postgres -D {services / 'postgres' / 'data'}", serving)
        _kill_and_wait_back(client, f"uvicorn api.main:create_app .*--port {port}", serving)
        status = client.get(f"/v1/jobs/{disturbed}").json()["status"]
        print(f"disturbed job still {status} after the kills")
        job = wait_job(client, disturbed, timeout=120)
        assert job["status"] == "succeeded", job["error"]
        assert time.monotonic() - started < 150
        assert _result_frames(client, disturbed, tmp_path / "disturbed.mkv") == expected
        assert proc.poll() is None, "lumiere up stopped"
        said = (tmp_path / "up.log").read_text(errors="replace")
        for child in ("worker", "redis", "s3", "postgres", "api"):
            assert f"child={child}" in said and "child.restarted" in said, said[-3000:]


def test_up_joins_a_short_job_at_once_behind_long_ones_and_says_where_it_stands(
    tmp_path: Path,
) -> None:
    fields = QUICK
    long_clip = make_clip(tmp_path / "long.mp4", width=96, height=72, seconds=8)
    short_clip = make_clip(tmp_path / "short.mp4", width=96, height=72, seconds=1)
    with lumiere_up(tmp_path) as up:

        def submit(path: Path) -> str:
            with path.open("rb") as f:
                response = up.client.post("/v1/jobs", files={"file": (path.name, f)}, data=fields)
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        def sent(job_id: str) -> str:
            """Wait until a job's chunks are all in the queue (two plans at once would
            interleave their chunks there), so the line's order is known."""
            wait_job(up.client, job_id, ("running",), timeout=60)
            for _ in range(300):
                if up.client.get(f"/v1/jobs/{job_id}").json()["stage"] != "planning":
                    return job_id
                time.sleep(0.1)
            raise TimeoutError(f"job {job_id} is still planning")

        first, second, short = (
            sent(submit(p)) for p in (long_clip.path, long_clip.path, short_clip.path)
        )
        # Once chunks of the first job are measured, every job knows its place and its ETA.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            jobs = {i: up.client.get(f"/v1/jobs/{i}").json() for i in (first, second, short)}
            # Three chunks done: the median pace no longer counts the first, which loads
            # the stages.
            if jobs[first]["chunks_done"] >= 3 and jobs[short]["eta_seconds"] is not None:
                break
            time.sleep(0.2)
        asked = time.monotonic()
        assert jobs[first]["queue_position"] is None, jobs[first]
        # The two others wait in line, the later one with the later ETA.
        assert (jobs[second]["queue_position"], jobs[short]["queue_position"]) == (1, 2), jobs
        etas = [jobs[i]["eta_seconds"] for i in (first, second, short)]
        assert etas == sorted(etas), etas
        done = wait_job(up.client, short, timeout=180)
        took = time.monotonic() - asked
        assert done["status"] == "succeeded", done["error"]
        predicted = jobs[short]["eta_seconds"]
        print(f"short job: predicted {predicted:.1f} s, took {took:.1f} s to its end")
        assert predicted / 3 < took < predicted * 3 + 10, (predicted, took)
        # Its join ran as soon as its last chunk was done, not behind other work.
        url = json.loads((up.data / "stack.json").read_text())["database_url"]
        with session_scope(url) as session:
            last_chunk = session.scalar(
                select(func.max(Chunk.finished_at)).where(Chunk.job_id == short)
            )
            finished = session.scalar(select(Job.finished_at).where(Job.id == short))
        assert last_chunk and finished and (finished - last_chunk).total_seconds() < 5
        assert wait_job(up.client, second, timeout=180)["status"] == "succeeded"
