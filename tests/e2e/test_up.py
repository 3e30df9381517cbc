"""`lumiere up` (what `make run` calls) brings the whole stack up and takes it down on Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from shared.local_services import free_port


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> dict:
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
        health = _wait_ready(f"http://127.0.0.1:{port}/healthz", proc, 120)
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
        shutil.rmtree(data, ignore_errors=True)
