"""Signed webhooks delivered to a real local receiver, retries, the SSRF guard, and SSE."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.clips import make_clip
from tests.conftest import Processes, extra_api, wait_job
from tests.receiver import Receiver

FAST = {"upscaler": "lanczos", "interpolator": "blend"}


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


def _submit(client: httpx.Client, tmp_path: Path, seconds: float = 1, **fields: str) -> str:
    clip = make_clip(tmp_path / "a.mp4", seconds=seconds)
    with clip.path.open("rb") as f:
        response = client.post("/v1/jobs", files={"file": ("a.mp4", f)}, data={**FAST, **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_deliveries_are_signed_per_standard_webhooks(
    client: httpx.Client, receiver: Receiver, tmp_path: Path
) -> None:
    secret = client.get("/v1/webhooks/secret").json()["secret"]
    assert secret.startswith("whsec_")
    job_id = _submit(
        client, tmp_path, webhook_url=receiver.url, webhook_events="job.started,job.succeeded"
    )
    assert wait_job(client, job_id)["status"] == "succeeded"
    events = receiver.wait_for(job_id, 2)
    assert [e["type"] for e in events] == ["job.started", "job.succeeded"]
    verifier = Webhook(secret)
    for headers, body in receiver.received:
        verified = verifier.verify(body, headers)  # raises on a bad signature
        assert verified["data"]["job_id"] == job_id
    # A tampered body does not verify.
    headers, body = receiver.received[0]
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body.replace(b"job.started", b"job.hacked!"), headers)
    assert events[1]["data"]["output"]["width"] == 128


def test_network_errors_and_5xx_are_retried_with_every_attempt_stored(
    client: httpx.Client, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.script = [503, 502]
    job_id = _submit(client, tmp_path, webhook_url=receiver.url, webhook_events="job.succeeded")
    assert wait_job(client, job_id)["status"] == "succeeded"
    receiver.wait_for(job_id, 3)
    ids = {headers["webhook-id"] for headers, _ in receiver.received}
    assert len(ids) == 1, "a retry must keep the same webhook-id"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log = client.get(f"/v1/jobs/{job_id}/webhooks").json()
        if log and log[0]["status"] == "delivered":
            break
        time.sleep(0.2)
    assert [a["status_code"] for a in log[0]["attempts"]] == [503, 502, 200]
    assert all(a["latency_ms"] >= 0 for a in log[0]["attempts"])

    # Redelivery sends the same event again.
    again = client.post(f"/v1/jobs/{job_id}/webhooks/{log[0]['id']}/redeliver")
    assert again.status_code == 200
    receiver.wait_for(job_id, 4)
    assert receiver.received[-1][0]["webhook-id"] == log[0]["id"]


def test_4xx_is_not_retried(client: httpx.Client, receiver: Receiver, tmp_path: Path) -> None:
    receiver.script = [410]
    job_id = _submit(client, tmp_path, webhook_url=receiver.url, webhook_events="job.succeeded")
    assert wait_job(client, job_id)["status"] == "succeeded"
    receiver.wait_for(job_id, 1)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        log = client.get(f"/v1/jobs/{job_id}/webhooks").json()
        if log and log[0]["status"] == "failed":
            break
        time.sleep(0.2)
    assert log[0]["status"] == "failed"
    time.sleep(1.5)  # longer than the retry backoff: no second attempt comes
    assert len(receiver.events(job_id)) == 1


def test_progress_events_at_the_chosen_step_and_key_default(
    client: httpx.Client, receiver: Receiver, tmp_path: Path
) -> None:
    put = client.put(
        "/v1/webhooks", json={"url": receiver.url, "events": "job.progress,job.succeeded"}
    )
    assert put.status_code == 200
    try:
        job_id = _submit(
            client, tmp_path, seconds=4, webhook_progress_step="0.25", chunk_seconds="1"
        )
        assert wait_job(client, job_id)["status"] == "succeeded"
        events = receiver.wait_for(job_id, 2)
        time.sleep(1)
        events = receiver.events(job_id)
    finally:
        client.put("/v1/webhooks", json={"url": None})
    progress = [e["data"]["progress"] for e in events if e["type"] == "job.progress"]
    assert progress and progress == sorted(set(progress))
    assert set(progress) <= {0.25, 0.5, 0.75}
    assert events[-1]["type"] == "job.succeeded"


def test_private_addresses_are_refused_unless_allowed(
    api_key: str, service_env: dict[str, str], processes: Processes, tmp_path: Path
) -> None:
    # Checked by resolving the address only: nothing is ever sent to these hosts.
    env = {**service_env, "LUMIERE_WEBHOOK_ALLOW_PRIVATE": "0"}
    with extra_api(processes, env, "api-strict.log") as base:
        auth = {"Authorization": f"Bearer {api_key}"}
        clip = make_clip(tmp_path / "a.mp4", seconds=0.2)
        for url in ("http://127.0.0.1:9/hook", "http://10.1.2.3/x", "http://169.254.169.254/"):
            with clip.path.open("rb") as f:
                response = httpx.post(
                    f"{base}/v1/jobs",
                    headers=auth,
                    data={"webhook_url": url},
                    files={"file": ("a.mp4", f)},
                )
            assert response.status_code == 422, url
            assert "private" in response.json()["detail"]
        refused = httpx.put(f"{base}/v1/webhooks", headers=auth, json={"url": "http://[::1]/"})
        assert refused.status_code == 422
        not_http = httpx.put(f"{base}/v1/webhooks", headers=auth, json={"url": "ftp://x.org/"})
        assert not_http.status_code == 422


def test_secret_rotation(client: httpx.Client) -> None:
    before = client.get("/v1/webhooks/secret").json()["secret"]
    rotated = client.post("/v1/webhooks/secret").json()["secret"]
    assert rotated != before and rotated.startswith("whsec_")
    assert client.get("/v1/webhooks/secret").json()["secret"] == rotated


def test_server_sent_events_follow_the_job_in_order(
    client: httpx.Client, api_url: str, api_key: str, tmp_path: Path
) -> None:
    # Long enough (a few seconds of work) for the stream to see it move, not just start and end.
    job_id = _submit(client, tmp_path, seconds=4, chunk_seconds="1", fps="60", scale="4")
    events = []
    with httpx.stream(
        "GET",
        f"{api_url}/v1/jobs/{job_id}/events",
        timeout=120,
        headers={"Authorization": f"Bearer {api_key}"},
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        current: dict[str, str] = {}
        for line in stream.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                field, _, value = line.partition(":")
                current[field] = value.strip()
            elif line == "" and current:
                events.append(current)
                current = {}
    assert all(e["event"] == "job" for e in events)
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    jobs = [json.loads(e["data"]) for e in events]
    order = {"queued": 0, "running": 1, "succeeded": 2}
    ranks = [order[j["status"]] for j in jobs]
    assert ranks == sorted(ranks)
    assert jobs[-1]["status"] == "succeeded" and jobs[-1]["progress"] == 1.0
    progress = [j["progress"] for j in jobs]
    assert progress == sorted(progress)
    assert len(jobs) >= 3
