"""Faults survived for real: a worker process killed mid-chunk loses no work."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import av
import httpx
from sqlalchemy import select

from shared.config import Settings
from shared.db import session_scope
from shared.models import Chunk, ChunkStatus
from tests.clips import make_clip
from tests.conftest import wait_job

FAST = {"upscaler": "lanczos", "interpolator": "blend"}


def _frames(data: bytes, tmp: Path) -> list[int]:
    tmp.write_bytes(data)
    with av.open(str(tmp)) as container:
        return [f.pts for f in container.decode(container.streams.video[0])]


def test_sigkill_mid_chunk_is_taken_over_and_done_chunks_are_kept(
    client: httpx.Client, settings: Settings, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "long.mp4", width=96, height=72, fps=24, seconds=4)
    fields = {**FAST, "scale": "4", "fps": "60", "chunk_seconds": "1", "codec": "ffv1"}
    with clip.path.open("rb") as f:
        job_id = client.post("/v1/jobs", files={"file": ("long.mp4", f)}, data=fields).json()["id"]

    # Wait for a chunk to be done and another to be running, then SIGKILL its process.
    deadline = time.monotonic() + 120
    victim = None
    while time.monotonic() < deadline and victim is None:
        with session_scope(settings.database_url) as session:
            chunks = session.scalars(select(Chunk).where(Chunk.job_id == job_id)).all()
            done = [c for c in chunks if c.status == ChunkStatus.DONE]
            running = [c for c in chunks if c.status == ChunkStatus.RUNNING and c.frames_done]
            if done and running:
                victim = running[0]
        time.sleep(0.05)
    assert victim is not None and victim.worker, "never saw a chunk running after one was done"
    pid = int(victim.worker.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    done_before = {c.index for c in done}

    job = wait_job(client, job_id, timeout=180)
    assert job["status"] == "succeeded", job["error"]
    with session_scope(settings.database_url) as session:
        attempts = {
            c.index: c.attempts
            for c in session.scalars(select(Chunk).where(Chunk.job_id == job_id))
        }
    assert attempts[victim.index] == 2, "the killed chunk was not picked up again"
    for index in done_before:
        assert attempts[index] == 1, f"finished chunk {index} was redone"

    # Same output as an undisturbed run of the same job.
    with clip.path.open("rb") as f:
        clean_id = client.post("/v1/jobs", files={"file": ("long.mp4", f)}, data=fields).json()[
            "id"
        ]
    assert wait_job(client, clean_id, timeout=180)["status"] == "succeeded"
    outputs = []
    for jid in (job_id, clean_id):
        url = client.get(f"/v1/jobs/{jid}/result").headers["location"]
        outputs.append(httpx.get(url, timeout=60).content)
    assert _frames(outputs[0], tmp_path / "a.mkv") == _frames(outputs[1], tmp_path / "b.mkv")
    # FFV1 is lossless and deterministic: the restored pictures are identical too.
    with av.open(str(tmp_path / "a.mkv")) as a, av.open(str(tmp_path / "b.mkv")) as b:
        for fa, fb in zip(a.decode(video=0), b.decode(video=0), strict=True):
            assert (fa.to_ndarray() == fb.to_ndarray()).all()
