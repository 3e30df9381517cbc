"""Upload throughput through the API (streamed multipart → S3) next to a direct S3 upload of
the same file, and the API process's peak memory while the file streams in.

    python bench/bench_upload.py [--size-mb 1024]

Starts its own Postgres, Redis and S3 (SeaweedFS) and an API process, like `lumiere up`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx
from boto3.s3.transfer import TransferConfig

from cli.local_services import LocalStack, free_port
from cli.stack import api_argv, prepare
from shared.config import Settings
from shared.db import session_scope
from shared.keys import create_key
from shared.storage import Storage


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()

    import subprocess

    root = Path(tempfile.mkdtemp(prefix="lumiere-bench-"))
    root.chmod(0o755)
    stack = LocalStack(root / "services")
    stack.start()
    api = None
    try:
        settings = Settings(**stack.settings())
        prepare(settings)
        with session_scope(settings.database_url) as session:
            _, key = create_key(session, "bench")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUMIERE_")}
        env.update(stack.env(), LUMIERE_LOG_LEVEL="WARNING")
        api = subprocess.Popen(api_argv("127.0.0.1", port), env=env)
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        idle_mb = peak_rss_mb(api.pid)

        film = root / "film.bin"
        block = os.urandom(1024 * 1024)
        with film.open("wb") as f:
            for _ in range(args.size_mb):
                f.write(block)
        size = film.stat().st_size

        start = time.perf_counter()
        with film.open("rb") as f:
            response = httpx.post(
                f"{base}/v1/jobs",
                headers={"Authorization": f"Bearer {key}"},
                files={"file": ("film.bin", f)},
                data={"upscaler": "lanczos"},
                timeout=600,
            )
        api_s = time.perf_counter() - start
        assert response.status_code == 201, response.text
        peak_mb = peak_rss_mb(api.pid)

        storage = Storage(settings)
        single = TransferConfig(max_concurrency=1, multipart_chunksize=16 * 1024**2)
        start = time.perf_counter()
        storage.client.upload_file(str(film), storage.bucket, "bench/direct-1", Config=single)
        direct1_s = time.perf_counter() - start
        start = time.perf_counter()
        storage.client.upload_file(str(film), storage.bucket, "bench/direct-10")
        direct10_s = time.perf_counter() - start

        mb = size / 1024**2
        print(f"\nUpload of {mb:.0f} MiB on loopback (SeaweedFS S3, this machine)")
        print(f"{'path':<44}{'seconds':>10}{'MiB/s':>10}")
        rows = [
            ("API: curl -F file=@… (streamed to S3)", api_s),
            ("direct S3, boto3, 1 stream", direct1_s),
            ("direct S3, boto3, 10 streams (default)", direct10_s),
        ]
        for name, seconds in rows:
            print(f"{name:<44}{seconds:>10.2f}{mb / seconds:>10.1f}")
        print(
            f"\nAPI peak memory: {peak_mb:.0f} MiB while {mb:.0f} MiB streamed in "
            f"(idle after start: {idle_mb:.0f} MiB)"
        )
    finally:
        if api is not None:
            api.terminate()
            api.wait(10)
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
