"""The job service end to end: real API process, real worker, real Postgres, Redis and S3."""

from __future__ import annotations

import json
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import httpx
import pytest
from sqlalchemy import select

from shared.config import Settings
from shared.db import session_scope
from shared.models import Chunk, ChunkStatus
from shared.storage import Storage
from tests.clips import make_clip
from tests.conftest import run_cli, wait_job
from tests.models_fixture import real_models_dir

FAST = {"upscaler": "lanczos", "interpolator": "blend"}


def _probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        info = {
            "width": video.width,
            "height": video.height,
            "rate": video.average_rate,
            "audio": len(container.streams.audio),
            "duration": float(container.duration or 0) / av.time_base,
        }
        info["frames"] = sum(1 for _ in container.decode(video))
    return info


def _download(client: httpx.Client, job_id: str, path: Path) -> Path:
    redirect = client.get(f"/v1/jobs/{job_id}/result")
    assert redirect.status_code == 307, redirect.text
    response = httpx.get(redirect.headers["location"], timeout=60)
    assert response.status_code == 200
    path.write_bytes(response.content)
    return path


def _objects(settings: Settings, prefix: str) -> list[str]:
    storage = Storage(settings)
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_curl_multipart_job_runs_in_chunks_and_keeps_sound(
    client: httpx.Client, api_url: str, api_key: str, tmp_path: Path, settings: Settings
) -> None:
    clip = make_clip(tmp_path / "train.mp4", width=64, height=48, fps=24, seconds=3, audio="aac")
    # Exactly what the README tells users to run.
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "-H",
            f"Authorization: Bearer {api_key}",
            "-F",
            f"file=@{clip.path}",
            "-F",
            "scale=2",
            "-F",
            "fps=30",
            "-F",
            "upscaler=lanczos",
            "-F",
            "interpolator=blend",
            "-F",
            "chunk_seconds=1",
            f"{api_url}/v1/jobs",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    created = json.loads(done.stdout)
    assert created["status"] == "queued"
    assert created["options"]["scale"] == 2 and created["options"]["fps"] == "30"

    seen_progress = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{created['id']}").json()
        seen_progress.append(job["progress"])
        if job["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert job["status"] == "succeeded", job["error"]
    assert job["chunks_total"] == 3 and job["chunks_done"] == 3
    assert job["frames_total"] == 90 and job["frames_done"] == 90
    assert job["progress"] == 1.0
    assert seen_progress == sorted(seen_progress), "progress went backwards"
    assert {"decode", "upscale", "interpolate", "encode", "join"} <= set(job["timings"])
    assert job["input"]["probe"]["width"] == 64
    assert job["output"]["width"] == 128
    # No worker's local paths in what users see.
    assert "path" not in job["input"]["probe"] and "path" not in job["output"]
    assert "/tmp" not in json.dumps(job) and str(Path.home()) not in json.dumps(job)

    result = _probe(_download(client, job["id"], tmp_path / "out.mp4"))
    assert result["frames"] == 90
    assert (result["width"], result["height"]) == (128, 96)
    assert result["rate"] == Fraction(30)
    assert result["audio"] == 1
    assert abs(result["duration"] - 3.0) < 0.1
    # Chunks were stored at their fixed keys, next to the input and the result, each with
    # what it measured for the report.
    keys = _objects(settings, f"jobs/{job['id']}/")
    assert sum(k.startswith(f"jobs/{job['id']}/chunks/") for k in keys) == 3
    assert sum(k.startswith(f"jobs/{job['id']}/report/chunks/") for k in keys) == 3
    assert f"jobs/{job['id']}/report/report.json" in keys


def test_presigned_multipart_upload_then_job(
    client: httpx.Client, tmp_path: Path, settings: Settings
) -> None:
    clip = make_clip(tmp_path / "noise.mkv", codec="ffv1", width=64, height=48, fps=24, seconds=2)
    data = clip.path.read_bytes()
    upload = client.post("/v1/uploads", json={"filename": "noise.mkv", "size": len(data)})
    assert upload.status_code == 201, upload.text
    body = upload.json()
    parts = []
    for part in body["parts"]:
        start = (part["part_number"] - 1) * body["part_size"]
        put = httpx.put(part["url"], content=data[start : start + part["size"]], timeout=60)
        assert put.status_code == 200, put.text
        parts.append({"part_number": part["part_number"], "etag": put.headers["etag"]})
    completed = client.post(f"/v1/uploads/{body['id']}/complete", json={"parts": parts})
    assert completed.status_code == 200, completed.text
    assert completed.json()["status"] == "completed"

    created = client.post("/v1/jobs", json={"upload_id": body["id"], "scale": 2, **FAST})
    assert created.status_code == 201, created.text
    job = wait_job(client, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    result = _probe(_download(client, job["id"], tmp_path / "out.mp4"))
    assert result["frames"] == clip.frames
    assert (result["width"], result["height"]) == (128, 96)
    # An upload becomes one job's input, once.
    again = client.post("/v1/jobs", json={"upload_id": body["id"], **FAST})
    assert again.status_code == 409


def test_presigned_upload_with_a_lying_size_is_refused(client: httpx.Client) -> None:
    upload = client.post("/v1/uploads", json={"filename": "x.mp4", "size": 1000}).json()
    put = httpx.put(upload["parts"][0]["url"], content=b"\0" * 10, timeout=30)
    completed = client.post(
        f"/v1/uploads/{upload['id']}/complete",
        json={"parts": [{"part_number": 1, "etag": put.headers["etag"]}]},
    )
    assert completed.status_code == 422
    assert "declared" in completed.json()["detail"]


def test_list_with_status_filter_and_cursor(client: httpx.Client, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "a.mp4", seconds=0.5)
    ids = []
    for _ in range(3):
        with clip.path.open("rb") as f:
            response = client.post("/v1/jobs", files={"file": ("a.mp4", f)}, data=FAST)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    for job_id in ids:
        assert wait_job(client, job_id)["status"] == "succeeded"

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, "status": "succeeded"} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["data"]]
        assert all(j["status"] == "succeeded" for j in page["data"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert set(ids) <= set(seen)
    assert len(seen) == len(set(seen)), "a job appeared on two pages"
    newest_first = [i for i in seen if i in ids]
    assert newest_first == ids[::-1]
    assert client.get("/v1/jobs", params={"status": "failed"}).json()["data"] == [] or all(
        j["status"] == "failed"
        for j in client.get("/v1/jobs", params={"status": "failed"}).json()["data"]
    )


def test_cancel_stops_running_chunks_and_retry_keeps_done_ones(
    client: httpx.Client, tmp_path: Path, settings: Settings
) -> None:
    clip = make_clip(tmp_path / "long.mp4", width=96, height=72, fps=24, seconds=4)
    with clip.path.open("rb") as f:
        created = client.post(
            "/v1/jobs",
            files={"file": ("long.mp4", f)},
            data={**FAST, "scale": "4", "fps": "60", "chunk_seconds": "1"},
        )
    job_id = created.json()["id"]
    # Wait until the first chunk is done and the second has started.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["chunks_done"] >= 1:
            break
        time.sleep(0.1)
    assert job["chunks_done"] >= 1, job
    cancelled = client.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 409

    # Running chunks notice within a second or so and give their chunk back.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with session_scope(settings.database_url) as session:
            running = session.scalars(
                select(Chunk).where(Chunk.job_id == job_id, Chunk.status == ChunkStatus.RUNNING)
            ).all()
        if not running:
            break
        time.sleep(0.2)
    assert not running, "a chunk kept running after the job was cancelled"
    with session_scope(settings.database_url) as session:
        done_before = {
            c.index: c.attempts
            for c in session.scalars(
                select(Chunk).where(Chunk.job_id == job_id, Chunk.status == ChunkStatus.DONE)
            )
        }
    assert done_before

    retried = client.post(f"/v1/jobs/{job_id}/retry")
    assert retried.status_code == 200 and retried.json()["status"] in ("queued", "running")
    job = wait_job(client, job_id)
    assert job["status"] == "succeeded", job["error"]
    with session_scope(settings.database_url) as session:
        chunks = {
            c.index: c.attempts
            for c in session.scalars(select(Chunk).where(Chunk.job_id == job_id))
        }
    for index, attempts in done_before.items():
        assert chunks[index] == attempts, f"chunk {index} was redone"
    result = _probe(_download(client, job_id, tmp_path / "out.mp4"))
    assert result["frames"] == 240


def _chunks(settings: Settings, job_id: str) -> list[Chunk]:
    with session_scope(settings.database_url) as session:
        found = session.scalars(select(Chunk).where(Chunk.job_id == job_id)).all()
        session.expunge_all()
        return list(found)


def test_cancel_stops_a_chunk_mid_frame_within_a_second(
    client: httpx.Client, tmp_path: Path, settings: Settings
) -> None:
    # Real-ESRGAN ×4 spends about two seconds on one 160×120 frame on a CPU, all of it
    # in one tile: a cancel noticed only between output frames would wait for it.
    real_models_dir()
    clip = make_clip(tmp_path / "slow.mp4", width=160, height=120, fps=24, seconds=2)
    with clip.path.open("rb") as f:
        created = client.post(
            "/v1/jobs",
            files={"file": ("slow.mp4", f)},
            data={"upscaler": "detailed", "interpolator": "blend", "scale": "4"},
        )
    job_id = created.json()["id"]
    # Wait until a chunk has written a frame: the network is loaded and compiled, and the
    # next frames are plain work.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if any(
            c.status == ChunkStatus.RUNNING and c.frames_done for c in _chunks(settings, job_id)
        ):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"no chunk got going: {client.get(f'/v1/jobs/{job_id}').json()}")
    time.sleep(0.3)  # into the next frame

    asked = time.monotonic()
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    while time.monotonic() - asked < 30:
        chunks = _chunks(settings, job_id)
        if all(c.status != ChunkStatus.RUNNING for c in chunks):
            break
        time.sleep(0.02)
    stopped = time.monotonic() - asked
    assert all(c.status == ChunkStatus.PENDING and c.frames_done == 0 for c in chunks)
    assert stopped < 1.0, f"the chunk stopped {stopped:.2f} s after the cancel"

    # The worker is free at once: the next job starts without waiting for the frame.
    small = make_clip(tmp_path / "next.mp4", width=64, height=48, fps=24, seconds=0.5)
    with small.path.open("rb") as f:
        queued = time.monotonic()
        after = client.post("/v1/jobs", files={"file": ("next.mp4", f)}, data=FAST).json()
    started = wait_job(client, after["id"], ("running", "succeeded", "failed"), timeout=30)
    assert time.monotonic() - queued < 2.0, "the worker was still busy with the cancelled chunk"
    assert wait_job(client, after["id"])["status"] == "succeeded", started


def test_delete_removes_the_job_and_its_objects(
    client: httpx.Client, tmp_path: Path, settings: Settings
) -> None:
    clip = make_clip(tmp_path / "a.mp4", seconds=0.5)
    with clip.path.open("rb") as f:
        job_id = client.post("/v1/jobs", files={"file": ("a.mp4", f)}, data=FAST).json()["id"]
    assert wait_job(client, job_id)["status"] == "succeeded"
    assert _objects(settings, f"jobs/{job_id}/")
    # The result link serves byte ranges (players seek; downloads resume).
    location = client.get(f"/v1/jobs/{job_id}/result").headers["location"]
    ranged = httpx.get(location, headers={"Range": "bytes=0-99"}, timeout=30)
    assert ranged.status_code == 206 and len(ranged.content) == 100
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert _objects(settings, f"jobs/{job_id}/") == []


def test_another_key_sees_nothing(
    client: httpx.Client, api_url: str, other_key: str, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "a.mp4", seconds=0.5)
    with clip.path.open("rb") as f:
        job_id = client.post("/v1/jobs", files={"file": ("a.mp4", f)}, data=FAST).json()["id"]
    assert wait_job(client, job_id)["status"] == "succeeded"
    with httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {other_key}"}, timeout=30
    ) as other:
        assert other.get(f"/v1/jobs/{job_id}").status_code == 404
        assert other.get(f"/v1/jobs/{job_id}/result").status_code == 404
        assert other.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
        assert other.post(f"/v1/jobs/{job_id}/retry").status_code == 404
        assert other.delete(f"/v1/jobs/{job_id}").status_code == 404
        assert job_id not in [j["id"] for j in other.get("/v1/jobs").json()["data"]]
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"scale": "0"}, "scale"),
        ({"fps": "-1"}, "fps"),
        ({"fps": "10000"}, "fps"),
        ({"upscaler": "magic"}, "upscaler"),
        ({"colour": "yes"}, "colour"),
        ({"scale": "2", "width": "640"}, "either scale"),
    ],
)
def test_bad_options_get_a_clear_422(
    client: httpx.Client, tmp_path: Path, fields: dict, needle: str, settings: Settings
) -> None:
    clip = make_clip(tmp_path / "a.mp4", seconds=0.2)
    before = len(_objects(settings, "jobs/"))
    with clip.path.open("rb") as f:
        response = client.post("/v1/jobs", files={"file": ("a.mp4", f)}, data=fields)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert needle in response.json()["detail"]
    assert len(_objects(settings, "jobs/")) == before, "a refused upload left an object"


def test_not_a_video_fails_the_job_with_a_reason(client: httpx.Client) -> None:
    response = client.post(
        "/v1/jobs", files={"file": ("notes.mp4", b"hello, not a film")}, data=FAST
    )
    assert response.status_code == 201
    job = wait_job(client, response.json()["id"])
    assert job["status"] == "failed"
    assert job["error"] and "Traceback" not in job["error"]


def test_requests_without_a_valid_key_are_refused(api_url: str) -> None:
    assert httpx.get(f"{api_url}/v1/jobs").status_code == 401
    bad = httpx.get(f"{api_url}/v1/jobs", headers={"Authorization": "Bearer lum_nope"})
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == "Bearer"


def test_empty_upload_is_refused(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", files={"file": ("empty.mp4", b"")}, data=FAST)
    assert response.status_code == 422
    assert "empty" in response.json()["detail"]


def test_submit_cli_waits_and_downloads(
    api_url: str, api_key: str, worker: str, tmp_path: Path, service_env: dict[str, str]
) -> None:
    clip = make_clip(tmp_path / "a.mp4", seconds=1, audio="aac")
    out = tmp_path / "restored.mp4"
    env = {**service_env, "LUMIERE_API_URL": api_url, "LUMIERE_API_KEY": api_key}
    done = run_cli(
        "submit",
        str(clip.path),
        "--scale",
        "2",
        "--upscaler",
        "lanczos",
        "--interpolator",
        "blend",
        "--wait",
        "-o",
        str(out),
        env=env,
    )
    job_id = done.stdout.strip().splitlines()[-1]
    assert len(job_id) == 36
    result = _probe(out)
    assert result["frames"] == clip.frames and result["width"] == 128 and result["audio"] == 1


def test_keys_create_prints_a_working_key(api_url: str, service_env: dict[str, str]) -> None:
    done = run_cli("keys", "create", "museum", env=service_env)
    key = done.stdout.strip().splitlines()[-1]
    assert key.startswith("lum_")
    response = httpx.get(f"{api_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200 and response.json()["data"] == []


def test_metrics_are_prometheus_text(api_url: str) -> None:
    response = httpx.get(f"{api_url}/metrics")
    assert response.status_code == 200
    assert "lumiere_http_requests_total" in response.text


def test_the_default_ai_stages_run_in_the_workers(client: httpx.Client, tmp_path: Path) -> None:
    # No upscaler or interpolator named: the job runs waifu2x (faithful) and the motion
    # interpolator with the real weights, in the real worker process.
    real_models_dir()
    clip = make_clip(tmp_path / "a.mp4", width=48, height=32, fps=12, seconds=1, audio="aac")
    with clip.path.open("rb") as f:
        created = client.post(
            "/v1/jobs", files={"file": ("a.mp4", f)}, data={"scale": "2", "fps": "24"}
        )
    assert created.json()["options"]["upscaler"] == "faithful"
    job = wait_job(client, created.json()["id"], timeout=240)
    assert job["status"] == "succeeded", job["error"]
    result = _probe(_download(client, job["id"], tmp_path / "out.mp4"))
    assert (result["width"], result["height"], result["frames"]) == (96, 64, 24)
    assert job["input"]["probe"]["cadence"]["sampled_frames"] == 12


def test_an_old_transfer_is_rebuilt_on_its_original_clock(
    client: httpx.Client, tmp_path: Path
) -> None:
    # 16 fps film transferred at 24 fps (every other frame shown twice), raised to 48 fps.
    clip = make_clip(tmp_path / "old.mp4", width=64, height=48, fps=24, seconds=2, shot_fps=16)
    with clip.path.open("rb") as f:
        created = client.post(
            "/v1/jobs",
            files={"file": ("old.mp4", f)},
            data={"fps": "48", "scale": "1", "upscaler": "lanczos", "interpolator": "blend"},
        )
    assert created.status_code == 201, created.text
    assert created.json()["options"]["repeats"] == "drop"
    job = wait_job(client, created.json()["id"], timeout=120)
    assert job["status"] == "succeeded", job["error"]
    cadence = job["input"]["probe"]["cadence"]
    assert cadence["original_fps"] == 16.0
    assert cadence["pattern"] == "2:1"
    assert cadence["repeats_dropped"] is True
    result = _probe(_download(client, job["id"], tmp_path / "out.mp4"))
    assert result["frames"] == 96
