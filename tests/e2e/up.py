"""A real `lumiere up` for end-to-end tests: on a data directory and port of its own."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from cli.local_services import free_port


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "lumiere up exited early"
        try:
            body = httpx.get(url, timeout=5).json()
            if body["dependencies"]["workers"]["count"] >= 1:
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the stack did not come up")


@dataclass
class Up:
    """A running `lumiere up`: its URL, data directory, process and an authorised client."""

    base: str
    port: int
    data: Path
    proc: subprocess.Popen[bytes]
    client: httpx.Client


@contextlib.contextmanager
def lumiere_up(tmp_path: Path, **env_vars: str) -> Iterator[Up]:
    """`lumiere up` on a data directory and port of its own (``env_vars`` added to its
    environment), until the test is done; its output goes to ``tmp_path / "up.log"``."""
    data = Path(tempfile.mkdtemp(prefix="lumiere-up-"))
    data.chmod(0o755)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMIERE_")}
    # A short lease: a killed worker's chunk is taken back within seconds.
    env.update(
        LUMIERE_DATA_DIR=str(data / "data"), LUMIERE_PORT=str(port), LUMIERE_CHUNK_LEASE_S="6"
    )
    env.update(env_vars)
    base = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).parent / "lumiere"
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen([str(exe), "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_ready(f"{base}/healthz", proc, 120)
        except (TimeoutError, AssertionError):
            print((tmp_path / "up.log").read_text(errors="replace")[-5000:])
            raise
        key = (data / "data" / "api-key").read_text().strip()
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
            yield Up(base, port, data / "data", proc, client)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)
