"""Test harness: throwaway real PostgreSQL, Redis (Valkey) and S3 (SeaweedFS) servers, a real
API process and real worker processes — started once per test session, stopped at the end.

Nothing here mocks the database, the broker or the store, and Celery never runs eagerly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.local_services import LocalStack, free_port
from cli.stack import api_argv, prepare, worker_argv
from shared.config import Settings
from shared.db import dispose_engines

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "test-output"  # screenshots, logs: kept after the run for people to look at


def _world_traversable_tmpdir(prefix: str) -> Path:
    # pytest's tmp_path lives under a 0700 directory the postgres user cannot enter.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    """Real Postgres, Redis and S3 servers on free ports, schema migrated, bucket created."""
    root = _world_traversable_tmpdir("lumiere-test-")
    services = LocalStack(root)
    services.start()
    try:
        prepare(Settings(**services.settings()))
        yield services
    finally:
        dispose_engines()
        services.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(stack: LocalStack) -> Settings:
    """Settings pointing at the harness's servers."""
    return Settings(**stack.settings())


@pytest.fixture(scope="session")
def service_env(stack: LocalStack) -> dict[str, str]:
    """Environment for child processes (API, workers) that use the harness's servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMIERE_")}
    env.update(stack.env())
    env["LUMIERE_LOG_LEVEL"] = "INFO"
    # The tests' webhook receivers listen on loopback, which production refuses by default.
    env["LUMIERE_WEBHOOK_ALLOW_PRIVATE"] = "1"
    env["LUMIERE_WEBHOOK_RETRY_BASE_S"] = "0.2"
    # Short chunk leases, so the fault tests see a killed worker's chunk taken over quickly.
    env["LUMIERE_CHUNK_LEASE_S"] = "6"
    # The load test makes thousands of requests with one key; test_limits checks the limit.
    env["LUMIERE_RATE_LIMIT_PER_MINUTE"] = "100000"
    return env


class Processes:
    """Child processes with their logs in test-output/, stopped at the end of the session."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        OUTPUT.mkdir(exist_ok=True)

    def start(self, argv: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        # The child keeps its own copy of the descriptor; ours can close at once.
        with (OUTPUT / log_name).open("wb") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def processes(stack: LocalStack) -> Iterator[Processes]:
    """Where session-wide child processes are registered (stopped before the servers)."""
    procs = Processes()
    yield procs
    procs.stop_all()


def wait_http(url: str, timeout: float = 60) -> httpx.Response:
    """Poll ``url`` until it answers below 500."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code < 500:
                return response
        except httpx.HTTPError as err:
            last = err
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s: {last}")


@contextlib.contextmanager
def extra_api(processes: Processes, env: dict[str, str], log_name: str) -> Iterator[str]:
    """Another API process with its own settings (``env``) for one test; yields its URL."""
    port = free_port()
    proc = processes.start(api_argv("127.0.0.1", port), env, log_name)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def api_url(processes: Processes, service_env: dict[str, str]) -> str:
    """Base URL of a real API process (uvicorn) on a free port."""
    port = free_port()
    processes.start(api_argv("127.0.0.1", port), service_env, "api.log")
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz")
    return base


@pytest.fixture(scope="session")
def worker(processes: Processes, service_env: dict[str, str], api_url: str) -> str:
    """A real Celery worker process serving both queues; returns its node name."""
    name = f"test-{os.getpid()}@localhost"
    processes.start(worker_argv("control,chunks", 1, name), service_env, "worker.log")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        health = httpx.get(f"{api_url}/healthz", timeout=10).json()
        if any(w["hostname"] == name for w in health["dependencies"]["workers"]["workers"]):
            return name
        time.sleep(0.5)
    raise TimeoutError("the worker did not send a heartbeat within 90 s")


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``lumiere`` command as a user would."""
    exe = Path(sys.executable).parent / "lumiere"
    done = subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )
    if check and done.returncode != 0:
        raise AssertionError(f"lumiere {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def make_key(settings: Settings, name: str) -> str:
    """A fresh API key in the harness's database."""
    from shared.db import session_scope
    from shared.keys import create_key

    with session_scope(settings.database_url) as session:
        _, secret = create_key(session, name)
    return secret


@pytest.fixture(scope="session")
def api_key(settings: Settings) -> str:
    """An API key for the tests' jobs."""
    return make_key(settings, "tests")


@pytest.fixture(scope="session")
def other_key(settings: Settings) -> str:
    """A second client, who must never see the first one's jobs."""
    return make_key(settings, "someone else")


@pytest.fixture()
def client(api_url: str, api_key: str, worker: str) -> Iterator[httpx.Client]:
    """An HTTP client of the real API, signed with ``api_key``, with a real worker behind it."""
    with httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60
    ) as http:
        yield http


def wait_job(
    client: httpx.Client,
    job_id: str,
    statuses: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
    timeout: float = 180,
) -> dict:
    """Poll a job until its status is one of ``statuses``; returns the job."""
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} still {job.get('status')}/{job.get('stage')}: {job}")
