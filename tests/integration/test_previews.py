"""Previews and the quality report through the service: a stretch restored ahead of the
films waiting, the whole film restored from it afterwards, and what the workers measured."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np

from tests.clips import PLANTED_CUT, PLANTED_OCCLUSION, decoded_frames, make_clip, make_planted_clip
from tests.conftest import wait_job
from worker.report import LOW_CONFIDENCE

OFF = {part: "off" for part in ("degrain", "deflicker", "dust", "stabilise", "deinterlace")}
SETTINGS = {
    "upscaler": "lanczos",
    "interpolator": "motion",
    "scale": "1",
    "fps": "48",
    "codec": "ffv1",
    "chunk_seconds": "1",
    **OFF,
}


def download(client: httpx.Client, job_id: str, path: Path) -> Path:
    url = client.get(f"/v1/jobs/{job_id}/result?redirect=false").json()["url"]
    path.write_bytes(httpx.get(url, timeout=60).content)
    return path


def submit(client: httpx.Client, clip: Path, **fields: str) -> str:
    with clip.open("rb") as film:
        created = client.post("/v1/jobs", files={"file": (clip.name, film)}, data=fields)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_a_preview_its_report_and_then_the_whole_film(client: httpx.Client, tmp_path: Path) -> None:
    clip = make_planted_clip(tmp_path / "planted.mp4")
    preview_id = submit(client, clip, **SETTINGS, preview_start="0.25", preview_seconds="1")
    early = client.get(f"/v1/jobs/{preview_id}/report")
    preview = wait_job(client, preview_id)
    assert preview["status"] == "succeeded", preview["error"]
    if early.status_code != 200:  # asked before the job ended: not yet
        assert early.status_code == 409
    assert preview["input"]["probe"]["preview"] == {"start": 0.25, "seconds": 1.0}
    short = decoded_frames(download(client, preview_id, tmp_path / "preview.mkv"))
    assert len(short) == 48  # one second at 48 fps

    report = client.get(f"/v1/jobs/{preview_id}/report").json()
    assert len(report["cuts"]) == 1 and abs(report["cuts"][0] - PLANTED_CUT) < 1 / 48
    assert report["cadence"]["patterns"] == ["2:1"]
    assert all(0.25 <= t < 1.25 for t in report["cadence"]["repeats_dropped"])
    (moment,) = report["low_confidence"]
    assert PLANTED_OCCLUSION[0] <= moment["time"] <= PLANTED_OCCLUSION[1]
    assert moment["confidence"] < LOW_CONFIDENCE
    assert httpx.get(moment["thumbnail"], timeout=30).content[:3] == b"\xff\xd8\xff"

    # The whole film with the same settings, from the preview's upload: the preview's
    # frames are its frames.
    created = client.post("/v1/jobs", json={"source_job": preview_id, **SETTINGS})
    assert created.status_code == 201, created.text
    full = wait_job(client, created.json()["id"])
    assert full["status"] == "succeeded", full["error"]
    assert full["input"]["filename"] == "planted.mp4"
    whole = decoded_frames(download(client, full["id"], tmp_path / "full.mkv"))
    assert len(whole) == 96
    assert all(np.array_equal(a, b) for a, b in zip(short, whole[12:], strict=False))


def test_a_preview_runs_ahead_of_the_films_waiting(client: httpx.Client, tmp_path: Path) -> None:
    long_clip = make_clip(tmp_path / "long.mp4", width=160, height=120, seconds=8, fps=24).path
    long_id = submit(
        client,
        long_clip,
        upscaler="lanczos",
        interpolator="motion",
        fps="60",
        scale="2",
        chunk_seconds="1",
        **OFF,
    )
    wait_job(client, long_id, ("running",), timeout=60)
    short = make_clip(tmp_path / "short.mp4", seconds=3, fps=24).path
    preview_id = submit(
        client,
        short,
        upscaler="lanczos",
        interpolator="blend",
        scale="1",
        preview_seconds="1",
        **OFF,
    )
    preview = wait_job(client, preview_id)
    assert preview["status"] == "succeeded", preview["error"]
    # The film's later chunks were still waiting when the preview was done.
    film = client.get(f"/v1/jobs/{long_id}").json()
    assert film["status"] == "running" and film["chunks_done"] < film["chunks_total"], film
    client.post(f"/v1/jobs/{long_id}/cancel")
    wait_job(client, long_id)


def test_a_film_from_someone_elses_job_is_not_found(
    client: httpx.Client, other_key: str, api_url: str, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "mine.mp4", seconds=1).path
    mine = submit(client, clip, upscaler="lanczos", scale="1", **OFF)
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {other_key}"}) as other:
        answer = other.post("/v1/jobs", json={"source_job": mine, "upscaler": "lanczos"})
    assert answer.status_code == 404, answer.text
    both = client.post("/v1/jobs", json={"source_job": mine, "upload_id": mine})
    assert both.status_code == 422 and "one of them" in both.text
    wait_job(client, mine)
    time.sleep(0)  # the job above is left to finish; nothing more to check
