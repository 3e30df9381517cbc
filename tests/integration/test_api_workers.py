"""An API of two processes (uvicorn workers, as `lumiere up` and the image run it) serves
requests from both, counts them in /metrics as one, and streams events that follow a change
made through either process."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cli.local_services import free_port
from cli.stack import api_argv, metrics_env
from shared.config import Settings
from shared.db import session_scope
from shared.models import Job, JobStatus, new_id
from tests.conftest import Processes, make_key, wait_http

REQUESTS = 200


def _servers(pid: int) -> list[int]:
    """The server processes uvicorn's process ``pid`` started (not multiprocessing's
    resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"--multiprocessing-fork" in argv:
                found.append(int(entry.name))
    return found


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ok_responses(base: str) -> float:
    """The 2xx count /metrics reports (a fresh connection: any process may answer)."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "lumiere_http_responses_total" and sample.labels["class"] == "2xx":
                return sample.value
    raise AssertionError("no 2xx count in /metrics")


def _running_job(settings: Settings, key: str) -> str:
    """A job row that is running elsewhere (no chunks to send, so no worker touches it)."""
    from shared.keys import authenticate

    job_id = new_id()
    with session_scope(settings.database_url) as session:
        owner = authenticate(session, key)
        assert owner is not None
        session.add(
            Job(
                id=job_id,
                api_key_id=owner.id,
                status=JobStatus.RUNNING,
                stage="processing",
                input_key=f"jobs/{job_id}/input",
                options={},
            )
        )
    return job_id


def test_two_api_processes_serve_count_together_and_stream_changes(
    service_env: dict[str, str], processes: Processes, settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = {**service_env, **metrics_env(tmp_path / "metrics")}
    proc = processes.start(api_argv("127.0.0.1", port, 2), env, "api-two-workers.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz")
        deadline = time.monotonic() + 20
        while len(workers := _servers(proc.pid)) < 2:
            assert time.monotonic() < deadline, "uvicorn did not start two processes"
            time.sleep(0.2)
        key = make_key(settings, "two-workers")
        auth = {"Authorization": f"Bearer {key}"}
        job_id = _running_job(settings, key)

        # Every request on a connection of its own, ten at a time: both processes take some.
        before_cpu = {pid: _cpu(pid) for pid in workers}
        before = _ok_responses(base)

        def poll(_: int) -> int:
            return httpx.get(f"{base}/v1/jobs/{job_id}", headers=auth, timeout=30).status_code

        with ThreadPoolExecutor(10) as pool:
            codes = list(pool.map(poll, range(REQUESTS)))
        assert codes == [200] * REQUESTS
        busy = {pid: _cpu(pid) - before_cpu[pid] for pid in workers}
        assert all(seconds > 0 for seconds in busy.values()), f"a process served nothing: {busy}"

        # Whichever process answers, /metrics counts what both did: the scrape before, the
        # polls, then one more for each scrape after.
        seen = [_ok_responses(base) for _ in range(6)]
        assert seen == [before + 1 + REQUESTS + n for n in range(6)], (before, seen)

        # A stream follows the job as it changes, whichever process made the change.
        with httpx.stream(
            "GET", f"{base}/v1/jobs/{job_id}/events", headers=auth, timeout=30
        ) as stream:
            events = stream.iter_lines()
            first = next(line for line in events if line.startswith("data: "))
            assert json.loads(first[6:])["status"] == "running"
            for _ in range(4):  # on fresh connections, so either process may take them
                httpx.get(f"{base}/v1/jobs/{job_id}", headers=auth, timeout=30)
            cancelled = httpx.post(f"{base}/v1/jobs/{job_id}/cancel", headers=auth, timeout=30)
            assert cancelled.status_code == 200, cancelled.text
            last = next(line for line in events if line.startswith("data: "))
            assert json.loads(last[6:])["status"] == "cancelled"
    finally:
        proc.terminate()
        proc.wait(20)
