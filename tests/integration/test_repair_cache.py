"""A film is measured for repair once: the preview's planning keeps what the sample showed
beside the film's input, and the whole film after it (a ``source_job``, whose input is a
copy) plans from that; kept findings that cannot be read are measured again."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from shared.config import Settings
from shared.storage import Storage, analysis_prefix, input_key
from tests.clips import make_clip
from tests.conftest import wait_job

FAST = {"upscaler": "lanczos", "interpolator": "blend", "scale": "1", "chunk_seconds": "1"}


def kept(storage: Storage, job_id: str) -> dict[str, bytes]:
    """The objects beside a job's input (its kept measures), by key."""
    prefix = analysis_prefix(input_key(job_id))
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=prefix)
    return {o["Key"]: storage.get_bytes(o["Key"]) for o in listed.get("Contents", [])}


def whole_film(client: httpx.Client, source_job: str) -> dict:
    """The whole film, from an earlier job's input, restored; returns the job."""
    created = client.post("/v1/jobs", json={"source_job": source_job, **FAST})
    assert created.status_code == 201, created.text
    job = wait_job(client, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return job


def test_a_preview_measures_the_film_and_the_whole_film_plans_from_that(
    client: httpx.Client, settings: Settings, tmp_path: Path
) -> None:
    storage = Storage(settings)
    clip = make_clip(tmp_path / "film.mp4", width=64, height=48, fps=24, seconds=2)
    with clip.path.open("rb") as film:
        data = FAST | {"preview_start": "0", "preview_seconds": "0.5"}
        created = client.post("/v1/jobs", files={"file": ("film.mp4", film)}, data=data)
    assert created.status_code == 201, created.text
    preview = wait_job(client, created.json()["id"])
    assert preview["status"] == "succeeded", preview["error"]
    measured = preview["input"]["probe"]["repair"]["found"]
    # The whole film's sample, kept beside the preview's input, exactly (not rounded).
    ((key, entry),) = kept(storage, preview["id"]).items()
    found = json.loads(entry)["found"]
    assert found["frames"] == clip.frames
    assert {k: round(v, 3) if isinstance(v, float) else v for k, v in found.items()} == measured

    # Planted in what is kept (still below every threshold): a plan made from the kept
    # findings shows it, one measured again would not.
    planted = json.loads(entry)
    planted["found"]["flicker"] = 1.25
    storage.put_bytes(key, json.dumps(planted).encode(), "application/json")
    full = whole_film(client, preview["id"])
    assert full["input"]["probe"]["repair"]["found"] == measured | {"flicker": 1.25}
    assert full["input"]["probe"]["repair"]["deflicker"] is False
    assert list(kept(storage, full["id"]).values()) == [json.dumps(planted).encode()]

    # Kept findings that cannot be read are measured again, and kept again.
    ((key, _),) = kept(storage, full["id"]).items()
    storage.put_bytes(key, b'{"found": ', "application/json")
    again = whole_film(client, full["id"])
    assert again["input"]["probe"]["repair"]["found"] == measured
    assert json.loads(next(iter(kept(storage, again["id"]).values())))["found"] == found

    # Deleting a job deletes what was kept of its film.
    assert client.delete(f"/v1/jobs/{again['id']}").status_code == 204
    assert kept(storage, again["id"]) == {}
