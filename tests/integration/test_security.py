"""Isolation between keys, secrets kept out of logs, unguessable ids, expiring presigned URLs."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.config import Settings
from shared.storage import Storage
from tests.clips import make_clip
from tests.conftest import OUTPUT, wait_job
from tests.receiver import Receiver

FAST = {"upscaler": "lanczos", "interpolator": "blend", "scale": "1"}


@pytest.fixture(scope="module")
def owned(
    api_url: str, api_key: str, worker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    """A finished job of ``api_key`` (with webhook events and previews) and a pending upload."""
    hook = Receiver()
    folder = tmp_path_factory.mktemp("owned")
    clip = make_clip(folder / "mine.mp4", seconds=0.5)
    with httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60
    ) as owner:
        with clip.path.open("rb") as f:
            created = owner.post(
                "/v1/jobs",
                files={"file": ("mine.mp4", f)},
                data={**FAST, "webhook_url": hook.url, "webhook_events": "job.succeeded"},
            )
        assert created.status_code == 201, created.text
        job = wait_job(owner, created.json()["id"])
        assert job["status"] == "succeeded", job["error"]
        deadline = time.monotonic() + 30
        events: list = []
        while time.monotonic() < deadline and not events:
            events = owner.get(f"/v1/jobs/{job['id']}/webhooks").json()
            time.sleep(0.2)
        assert events, "the job has no webhook event"
        upload = owner.post("/v1/uploads", json={"filename": "mine.mkv", "size": 5}).json()
        put = httpx.put(upload["parts"][0]["url"], content=b"12345", timeout=30)
        assert put.status_code == 200
        yield {
            "job": job,
            "event_id": events[0]["id"],
            "upload": upload,
            "etag": put.headers["etag"],
        }
    hook.server.shutdown()
    hook.server.server_close()


@pytest.fixture()
def other(api_url: str, other_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {other_key}"}, timeout=30
    ) as http:
        yield http


def _assert_not_found(response: httpx.Response, what: str) -> None:
    assert response.status_code == 404, f"{what}: {response.status_code} {response.text}"
    assert response.headers["content-type"] == "application/problem+json", what


def test_another_key_gets_404_on_every_endpoint_that_takes_a_job_id(
    client: httpx.Client, other: httpx.Client, owned: dict
) -> None:
    job_id = owned["job"]["id"]
    event_id = owned["event_id"]
    attempts = {
        "read": other.get(f"/v1/jobs/{job_id}"),
        "result": other.get(f"/v1/jobs/{job_id}/result"),
        "result-json": other.get(f"/v1/jobs/{job_id}/result", params={"redirect": "false"}),
        "preview-before": other.get(f"/v1/jobs/{job_id}/preview/before"),
        "preview-after": other.get(f"/v1/jobs/{job_id}/preview/after"),
        "events": other.get(f"/v1/jobs/{job_id}/events"),
        "webhooks": other.get(f"/v1/jobs/{job_id}/webhooks"),
        "redeliver": other.post(f"/v1/jobs/{job_id}/webhooks/{event_id}/redeliver"),
        "cancel": other.post(f"/v1/jobs/{job_id}/cancel"),
        "retry": other.post(f"/v1/jobs/{job_id}/retry"),
        "delete": other.delete(f"/v1/jobs/{job_id}"),
    }
    for what, response in attempts.items():
        _assert_not_found(response, what)
        # The same answer as for a job that does not exist: no way to probe for ids.
        assert response.json()["title"] == "NotFound", what
        assert "mine.mp4" not in response.text and "result" not in response.json()["detail"]

    # Nor does it appear in any list, filtered or not, on any page.
    for params in ({}, {"status": "succeeded"}, {"limit": 200}):
        listed = other.get("/v1/jobs", params=params)
        assert listed.status_code == 200
        assert job_id not in listed.text, params

    # A missing id answers exactly the same way.
    missing = str(uuid.uuid4())
    for path in (f"/v1/jobs/{missing}", f"/v1/jobs/{missing}/webhooks"):
        assert other.get(path).status_code == 404

    # The owner's job is untouched: still there, still succeeded, its event not redelivered.
    mine = client.get(f"/v1/jobs/{job_id}")
    assert mine.status_code == 200 and mine.json()["status"] == "succeeded"
    log = client.get(f"/v1/jobs/{job_id}/webhooks").json()
    assert [e["id"] for e in log] == [event_id]
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 307


def test_the_owner_gets_the_same_endpoints(client: httpx.Client, owned: dict) -> None:
    # The control for the test above: each endpoint answers its owner (so 404 means refused).
    job_id = owned["job"]["id"]
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 307
    assert client.get(f"/v1/jobs/{job_id}/preview/before").status_code == 307
    assert client.get(f"/v1/jobs/{job_id}/preview/after").status_code == 307
    assert client.get(f"/v1/jobs/{job_id}/events").status_code == 200
    assert client.get(f"/v1/jobs/{job_id}/webhooks").status_code == 200
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 409  # exists, but finished
    assert client.post(f"/v1/jobs/{job_id}/retry").status_code == 409


def test_another_key_can_neither_complete_nor_use_an_upload(
    client: httpx.Client, other: httpx.Client, owned: dict
) -> None:
    upload = owned["upload"]
    parts = [{"part_number": 1, "etag": owned["etag"]}]
    _assert_not_found(
        other.post(f"/v1/uploads/{upload['id']}/complete", json={"parts": parts}), "complete"
    )
    _assert_not_found(
        other.post("/v1/jobs", json={"upload_id": upload["id"], **FAST}), "use as film"
    )
    # Nor smuggle it in as the soundtrack of a job on its own upload.
    own = other.post("/v1/uploads", json={"filename": "theirs.mp4", "size": 3}).json()
    put = httpx.put(own["parts"][0]["url"], content=b"abc", timeout=30)
    done = other.post(
        f"/v1/uploads/{own['id']}/complete",
        json={"parts": [{"part_number": 1, "etag": put.headers["etag"]}]},
    )
    assert done.status_code == 200, done.text
    smuggled = other.post(
        "/v1/jobs",
        json={
            "upload_id": own["id"],
            "audio_upload_id": upload["id"],
            "audio": "add",
            **FAST,
        },
    )
    _assert_not_found(smuggled, "use as soundtrack")

    # The owner's upload was not consumed by any of that: it completes and becomes a job.
    completed = client.post(f"/v1/uploads/{upload['id']}/complete", json={"parts": parts})
    assert completed.status_code == 200, completed.text
    created = client.post("/v1/jobs", json={"upload_id": upload["id"], **FAST})
    assert created.status_code == 201, created.text
    # Five bytes are not a film; what matters here is that the owner could use the upload.
    assert wait_job(client, created.json()["id"])["status"] == "failed"


def _log_text(name: str) -> str:
    path = OUTPUT / name
    assert path.exists(), f"{path} is missing: the harness writes it"
    return path.read_bytes().decode(errors="replace")


def test_no_secret_appears_in_the_logs(
    client: httpx.Client,
    api_key: str,
    other_key: str,
    owned: dict,
    settings: Settings,
) -> None:
    # Make the API hand out presigned URLs and the worker run a whole job first.
    job_id = owned["job"]["id"]
    for path in (f"/v1/jobs/{job_id}/result", f"/v1/jobs/{job_id}/preview/after"):
        assert "X-Amz-Signature" in client.get(path).headers["location"]
    assert "X-Amz-Signature" in owned["upload"]["parts"][0]["url"]
    webhook_secret = client.get("/v1/webhooks/secret").json()["secret"]
    time.sleep(1)  # let the processes flush what they log
    for name in ("api.log", "worker.log"):
        text = _log_text(name)
        assert text.strip(), f"{name} is empty: nothing was checked"
        assert api_key not in text, f"an API key is in {name}"
        assert other_key not in text, f"an API key is in {name}"
        assert api_key.split("_", 1)[-1][:16] not in text, f"part of an API key is in {name}"
        assert "X-Amz-Signature" not in text, f"a presigned URL is in {name}"
        assert "X-Amz-Credential" not in text, f"a presigned URL is in {name}"
        assert settings.s3_secret_key not in text, f"the S3 secret key is in {name}"
        assert webhook_secret not in text, f"a webhook signing secret is in {name}"


def test_ids_are_random_uuid4(client: httpx.Client, owned: dict, tmp_path: Path) -> None:
    # Webhook event ids are the Standard Webhooks "msg_" form: 96 bits from `secrets`.
    assert re.fullmatch(r"msg_[0-9a-f]{24}", owned["event_id"]), owned["event_id"]
    ids = [owned["job"]["id"], owned["upload"]["id"]]
    for _ in range(16):
        upload = client.post("/v1/uploads", json={"filename": "x.mp4", "size": 1})
        assert upload.status_code == 201
        ids.append(upload.json()["id"])
    clip = make_clip(tmp_path / "a.mp4", seconds=0.2)
    for _ in range(3):
        with clip.path.open("rb") as f:
            job = client.post("/v1/jobs", files={"file": ("a.mp4", f)}, data=FAST)
        assert job.status_code == 201
        ids.append(job.json()["id"])
        wait_job(client, job.json()["id"])
    parsed = [uuid.UUID(i) for i in ids]
    assert all(str(u) == i for u, i in zip(parsed, ids, strict=True)), "not canonical UUIDs"
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in parsed), ids
    assert len(set(ids)) == len(ids)
    # 122 random bits each: about half of them set, and no two ids sharing a long prefix
    # (a counter or a timestamp would).
    bits = "".join(f"{u.int:0128b}" for u in parsed)
    ones = bits.count("1") / len(bits)
    assert 0.4 < ones < 0.6, ones
    prefixes = {i[:6] for i in ids}
    assert len(prefixes) >= len(ids) - 1, "ids share prefixes: not random"
    # Object keys are built from those ids, so they are as unguessable as the ids.
    assert owned["job"]["result_url"].endswith(f"/v1/jobs/{owned['job']['id']}/result")


def test_presigned_urls_expire_and_cannot_be_altered(
    client: httpx.Client, owned: dict, settings: Settings
) -> None:
    storage = Storage(settings)
    job_id = owned["job"]["id"]
    key = f"jobs/{job_id}/input"
    assert httpx.get(storage.presigned_get(key, expires=60), timeout=30).status_code == 200
    # Without a signature, or with a tampered one, or for another key: refused.
    unsigned = storage.presigned_get(key, expires=60).split("?", 1)[0]
    assert httpx.get(unsigned, timeout=30).status_code == 403
    signed = storage.presigned_get(key, expires=60)
    sig_at = signed.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    flipped = "0" if signed[sig_at] != "0" else "1"
    tampered = signed[:sig_at] + flipped + signed[sig_at + 1 :]
    assert httpx.get(tampered, timeout=30).status_code == 403
    result_link = client.get(f"/v1/jobs/{job_id}/result").headers["location"]
    other_object = result_link.replace(f"/jobs/{job_id}/result", f"/jobs/{job_id}/input", 1)
    assert other_object != result_link
    assert httpx.get(other_object, timeout=30).status_code == 403

    short = storage.presigned_get(key, expires=1)
    time.sleep(2.5)
    expired = httpx.get(short, timeout=30)
    assert expired.status_code == 403, expired.status_code
    assert b"ccess" in expired.content or b"xpired" in expired.content
