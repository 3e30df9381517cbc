"""The repair options reach a job through the API; what ``auto`` chose is stored with the
job at planning (every chunk runs that plan) and comes back with the job and its result."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.clips import make_clip
from tests.conftest import wait_job

FAST = {"upscaler": "lanczos", "interpolator": "blend", "scale": "1", "chunk_seconds": "1"}


def test_repair_options_reach_the_job_and_its_plan_is_reported(
    client: httpx.Client, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "film.mp4", width=64, height=48, fps=24, seconds=2)
    repair = {"deflicker": "on", "dust": "off", "stabilise": "auto", "degrain": "off", "grain": "1"}
    with clip.path.open("rb") as f:
        created = client.post("/v1/jobs", files={"file": ("film.mp4", f)}, data=FAST | repair)
    assert created.status_code == 201, created.text
    job = wait_job(client, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["chunks_total"] >= 2
    options = job["options"]
    assert (options["deflicker"], options["dust"], options["grain"]) == ("on", "off", 1)
    plan = job["input"]["probe"]["repair"]
    assert plan["deflicker"] is True and plan["dust"] is False and plan["degrain"] == 0
    # The clean clip gives auto nothing to do; the sample spanned the film.
    assert plan["stabilise"] is False and plan["deinterlace"] is None
    assert plan["found"]["frames"] == clip.frames
    assert job["output"]["repair"] == plan
