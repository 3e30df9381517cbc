"""Bad input, end to end: every broken film or request gets a clear 4xx or a failed job with a
readable reason — never a 500, a traceback or a job stuck forever — and nothing else is disturbed.

The corpus is generated here (tiny files); each case goes through the real API and worker.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from cli.local_services import free_port
from cli.stack import api_argv
from shared.config import Settings
from shared.storage import Storage
from tests.clips import make_audio, make_clip, make_empty_video, make_odd_stream
from tests.conftest import wait_http, wait_job

FAST = {"upscaler": "lanczos", "interpolator": "blend", "scale": "1"}
FINAL = ("succeeded", "failed", "cancelled")
JOB_TIMEOUT = 90  # a tiny film is planned in a second or two; longer means stuck
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _objects(settings: Settings, prefix: str) -> list[str]:
    storage = Storage(settings)
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def _assert_problem(response: httpx.Response, status: int, needle: str) -> dict:
    """A refusal is the expected 4xx, as problem+json whose detail names the problem."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body = response.json()
    assert needle.lower() in body["detail"].lower(), body
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body


def _assert_readable_reason(job: dict, needle: str) -> None:
    """A failed job says why in a sentence a user can act on, not a stack trace."""
    error = job["error"]
    assert error, job
    assert needle.lower() in error.lower(), error
    assert "Traceback" not in error and 'File "' not in error, error
    assert not error.startswith("internal error"), error
    assert "/tmp/" not in error and "/work/" not in error, f"a server path leaked: {error}"
    assert len(error) < 500, error


def _submit(client: httpx.Client, path: Path, name: str | None = None, **fields: str) -> dict:
    with path.open("rb") as f:
        response = client.post(
            "/v1/jobs", files={"file": (name or path.name, f)}, data={**FAST, **fields}
        )
    assert response.status_code == 201, response.text
    return response.json()


# --- the corpus: films that are not films -------------------------------------------------


def _text(path: Path) -> Path:
    path.write_bytes(b"hello, this is not a film at all\n" * 20)
    return path


def _png(path: Path) -> Path:
    path = path.with_suffix(".png")
    cv2.imwrite(str(path), np.full((48, 64, 3), 128, np.uint8))
    return path


def _jpeg(path: Path) -> Path:
    path = path.with_suffix(".jpg")
    cv2.imwrite(str(path), np.full((48, 64, 3), 200, np.uint8))
    return path


def _audio_only(path: Path) -> Path:
    return make_audio(path.with_suffix(".wav"), seconds=0.5)


def _truncated(path: Path) -> Path:
    # MP4 keeps its index (moov) at the end: half a file has no index at all.
    whole = make_clip(path.with_name("whole.mp4"), seconds=1)
    data = whole.path.read_bytes()
    path = path.with_suffix(".mp4")
    path.write_bytes(data[: len(data) // 2])
    return path


def _zero_frames(path: Path) -> Path:
    return make_empty_video(path.with_suffix(".avi"))


def _absurd_size(path: Path) -> Path:
    # FFV1 encodes a real 100000×2 picture (a few KB), so its header honestly says 100000×2.
    clip = make_clip(path.with_suffix(".mkv"), codec="ffv1", width=100000, height=2, seconds=0.1)
    return clip.path


def _unsupported_codec(path: Path) -> Path:
    # EVC has a codec id but no decoder in FFmpeg's build: a film nobody here can decode.
    return make_odd_stream(path.with_suffix(".mp4"), "evc", 64, 48)


CORPUS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("not-a-video", _text, "not a video file"),
    # A photo is not a film: restoring it as a one-frame "film" is not what the user meant.
    ("png-image", _png, "image"),
    ("jpeg-image", _jpeg, "image"),
    ("audio-only", _audio_only, "no video stream"),
    ("truncated", _truncated, "truncated"),
    ("zero-frames", _zero_frames, "zero frames"),
    ("absurd-size", _absurd_size, "absurd picture size"),
    ("unsupported-codec", _unsupported_codec, "unsupported video codec"),
]


@pytest.mark.parametrize(("make", "needle"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_a_file_that_is_not_a_film_fails_its_job_with_a_reason(
    client: httpx.Client, tmp_path: Path, make: Callable[[Path], Path], needle: str
) -> None:
    path = make(tmp_path / "bad")
    created = _submit(client, path)
    assert created["status"] == "queued"
    job = wait_job(client, created["id"], FINAL, timeout=JOB_TIMEOUT)
    assert job["status"] == "failed", job
    _assert_readable_reason(job, needle)
    assert job["result_url"] is None
    assert job["retryable"] is False  # the dashboard offers no Retry: it cannot help


def _corrupt_middle(path: Path, seconds: float = 1) -> bytes:
    """A clip whose middle 400 bytes are overwritten with 0xFF."""
    clip = make_clip(path, width=64, height=48, seconds=seconds)
    data = bytearray(clip.path.read_bytes())
    middle = len(data) // 2
    data[middle - 200 : middle + 200] = b"\xff" * 400
    return bytes(data)


def test_an_mp4_with_a_corrupt_middle_fails_with_a_reason(
    client: httpx.Client, tmp_path: Path
) -> None:
    # The damage lands inside the H.264 data; the index (at the end) is intact, so planning
    # finds every frame, and the chunk's decoder then stops at the damaged frame. What
    # happens today, and a fine outcome: the job fails, saying where and why.
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(_corrupt_middle(tmp_path / "whole.mp4"))
    job = wait_job(client, _submit(client, path)["id"], FINAL, timeout=JOB_TIMEOUT)
    assert job["status"] == "failed", job
    _assert_readable_reason(job, "corrupt")


def test_an_mkv_with_a_corrupt_middle_ends_with_a_reason_and_does_not_hang(
    client: httpx.Client, tmp_path: Path
) -> None:
    # Damage in Matroska's cluster leaves a single readable frame: the job must fail saying
    # the file is damaged — within the timeout, not hang.
    # (Found here: with one frame, worker/media/probe.py:scan_frames reads the stream after
    # closing its container, the worker process segfaults, and with acks_late +
    # reject_on_worker_lost the planning task is redelivered and crashes again, forever.)
    path = tmp_path / "corrupt.mkv"
    path.write_bytes(_corrupt_middle(tmp_path / "whole.mkv"))
    job_id = _submit(client, path)["id"]
    try:
        job = wait_job(client, job_id, FINAL, timeout=JOB_TIMEOUT)
    finally:
        # If it hangs, cancel it: a redelivered task then stops at its status check instead
        # of crashing the worker again for the rest of the session.
        client.post(f"/v1/jobs/{job_id}/cancel")
    # Its video stops long before the length its header announces: refused as damaged.
    assert job["status"] == "failed", job
    _assert_readable_reason(job, "truncated")


# --- requests the API refuses -------------------------------------------------------------


def test_a_presigned_upload_whose_size_lies_is_refused(client: httpx.Client) -> None:
    upload = client.post("/v1/uploads", json={"filename": "x.mp4", "size": 1000})
    assert upload.status_code == 201, upload.text
    body = upload.json()
    put = httpx.put(body["parts"][0]["url"], content=b"\0" * 10, timeout=30)
    assert put.status_code == 200
    completed = client.post(
        f"/v1/uploads/{body['id']}/complete",
        json={"parts": [{"part_number": 1, "etag": put.headers["etag"]}]},
    )
    _assert_problem(completed, 422, "declared")
    # The short upload cannot become a job.
    job = client.post("/v1/jobs", json={"upload_id": body["id"], **FAST})
    assert job.status_code == 409, job.text


def test_empty_uploads_are_refused(client: httpx.Client, settings: Settings) -> None:
    before = _objects(settings, "jobs/")
    empty = client.post("/v1/jobs", files={"file": ("empty.mp4", b"")}, data=FAST)
    _assert_problem(empty, 422, "empty")
    assert _objects(settings, "jobs/") == before, "a refused upload left an object"
    presigned = client.post("/v1/uploads", json={"filename": "empty.mp4", "size": 0})
    _assert_problem(presigned, 422, "size")


def test_an_upload_over_the_size_limit_gets_413_and_leaves_nothing(
    api_key: str,
    service_env: dict[str, str],
    processes,
    settings: Settings,
    worker: str,
) -> None:
    limit = 64 * 1024
    port = free_port()
    env = {**service_env, "LUMIERE_MAX_UPLOAD_BYTES": str(limit)}
    proc = processes.start(api_argv("127.0.0.1", port), env, "api-small-limit.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        auth = {"Authorization": f"Bearer {api_key}"}
        before = _objects(settings, "jobs/")
        big = np.random.default_rng(0).bytes(limit * 3)
        response = httpx.post(
            f"{base}/v1/jobs",
            headers=auth,
            files={"file": ("big.mp4", big)},
            data=FAST,
            timeout=60,
        )
        _assert_problem(response, 413, "limit")
        assert _objects(settings, "jobs/") == before, "a refused upload left an object"
        # Declaring a size over the limit is refused before a byte is sent.
        declared = httpx.post(
            f"{base}/v1/uploads",
            headers=auth,
            json={"filename": "big.mp4", "size": limit + 1},
            timeout=30,
        )
        assert declared.status_code in (413, 422), declared.text
        assert "limit" in declared.json()["detail"]
        # Under the limit, the same API still takes films.
        small = httpx.post(
            f"{base}/v1/jobs",
            headers=auth,
            files={"file": ("small.bin", b"x" * 1000)},
            data=FAST,
            timeout=60,
        )
        assert small.status_code == 201, small.text
    finally:
        proc.terminate()
        proc.wait(10)


def _raw_multipart(filename: bytes, content: bytes, fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart body written by hand, so the filename reaches the server byte for byte
    (httpx would percent-escape control characters)."""
    boundary = "lumiereboundary7MA4YWxkTrZu0gW"
    out = b""
    for name, value in fields.items():
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    out += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="'.encode()
        + filename
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return out, f"multipart/form-data; boundary={boundary}"


def _assert_clean_name(name: str) -> None:
    assert name, "the filename was dropped entirely"
    assert "/" not in name and "\\" not in name, name
    assert not _CONTROL.search(name), repr(name)


@pytest.mark.parametrize(
    "filename",
    [
        b"../../etc/passwd.mp4",
        b"..\\..\\windows\\system32\\evil.mp4",
        b"/abs/path/film.mp4",
        b"film\x01\x07\x1b[31mred\x7f.mp4",
        b"tab\there.mp4",
        'caf\u00e9 "quoted" \u6620\u753b.mp4'.encode(),
    ],
    ids=["dotdot-slash", "dotdot-backslash", "absolute", "control-chars", "tab", "quotes-utf8"],
)
def test_filenames_are_sanitised(
    client: httpx.Client, tmp_path: Path, settings: Settings, filename: bytes
) -> None:
    clip = make_clip(tmp_path / "a.mp4", seconds=0.2)
    body, content_type = _raw_multipart(filename, clip.path.read_bytes(), FAST)
    response = client.post("/v1/jobs", content=body, headers={"content-type": content_type})
    assert response.status_code == 201, response.text
    job = response.json()
    _assert_clean_name(job["input"]["filename"])
    # The name never reaches the store: the object key is fixed per job.
    assert _objects(settings, f"jobs/{job['id']}/") == [f"jobs/{job['id']}/input"]
    assert not _objects(settings, "etc/") and not _objects(settings, "../")
    done = wait_job(client, job["id"], FINAL, timeout=JOB_TIMEOUT)
    assert done["status"] == "succeeded", done["error"]
    _assert_clean_name(done["input"]["filename"])
    # The name goes into the download's Content-Disposition: the download must still work.
    location = client.get(f"/v1/jobs/{job['id']}/result").headers["location"]
    download = httpx.get(location, timeout=30)
    assert download.status_code == 200, download.text[:300]
    assert "\n" not in download.headers.get("content-disposition", "")


def test_presigned_upload_filenames_are_sanitised(client: httpx.Client) -> None:
    upload = client.post("/v1/uploads", json={"filename": "../a\\b/\x00c\x1fd\n.mp4", "size": 10})
    assert upload.status_code == 201, upload.text
    _assert_clean_name(upload.json()["filename"])


# (field, form value, JSON value): JSON sends numbers as numbers where the schema says so.
OUT_OF_RANGE: list[tuple[str, str, object]] = [
    ("scale", "0", 0),
    ("scale", "9", 9),
    ("scale", "-3", -3),
    ("scale", "two", "two"),
    ("fps", "-1", "-1"),
    ("fps", "0", "0"),
    ("fps", "10000", "10000"),
    ("fps", "nan", "nan"),
    ("fps", "1/0", "1/0"),
    ("width", "100000", 100000),
    ("height", "1", 1),
    ("crf", "52", 52),
    ("chunk_seconds", "0", 0),
    ("webhook_progress_step", "0", 0),
    ("codec", "divx", "divx"),
    ("interpolator", "magic", "magic"),
]


@pytest.mark.parametrize(
    ("field", "form_value", "json_value"),
    OUT_OF_RANGE,
    ids=[f"{f}={v}" for f, v, _ in OUT_OF_RANGE],
)
def test_options_out_of_range_are_refused_in_forms_and_json(
    client: httpx.Client, settings: Settings, field: str, form_value: str, json_value: object
) -> None:
    before = _objects(settings, "jobs/")
    form = client.post(
        "/v1/jobs", files={"file": ("a.mp4", b"not checked")}, data={**FAST, field: form_value}
    )
    _assert_problem(form, 422, field)
    assert _objects(settings, "jobs/") == before, "a refused upload left an object"
    as_json = client.post(
        "/v1/jobs", json={"upload_id": "00000000-0000-4000-8000-000000000000", field: json_value}
    )
    _assert_problem(as_json, 422, field)


def test_unknown_fields_are_refused_in_forms_and_json(client: httpx.Client) -> None:
    form = client.post(
        "/v1/jobs", files={"file": ("a.mp4", b"not checked")}, data={**FAST, "colour": "yes"}
    )
    _assert_problem(form, 422, "colour")
    as_json = client.post(
        "/v1/jobs",
        json={"upload_id": "00000000-0000-4000-8000-000000000000", "colour": "yes"},
    )
    _assert_problem(as_json, 422, "colour")
    upload = client.post("/v1/uploads", json={"filename": "a.mp4", "size": 10, "colour": 1})
    _assert_problem(upload, 422, "colour")
    hook = client.put("/v1/webhooks", json={"url": None, "colour": 1})
    _assert_problem(hook, 422, "colour")
    # An unexpected file field is named too.
    extra_file = client.post(
        "/v1/jobs",
        files={"file": ("a.mp4", b"x"), "poster": ("p.png", b"y")},
        data=FAST,
    )
    _assert_problem(extra_file, 422, "poster")


@pytest.mark.parametrize(
    "url",
    ["ftp://example.org/hook", "file:///etc/passwd", "javascript:alert(1)", "gopher://x/", "x"],
)
def test_a_webhook_url_that_is_not_http_is_refused(client: httpx.Client, url: str) -> None:
    form = client.post(
        "/v1/jobs", files={"file": ("a.mp4", b"not checked")}, data={**FAST, "webhook_url": url}
    )
    _assert_problem(form, 422, "webhook_url")
    as_json = client.post(
        "/v1/jobs", json={"upload_id": "00000000-0000-4000-8000-000000000000", "webhook_url": url}
    )
    _assert_problem(as_json, 422, "webhook_url")
    default = client.put("/v1/webhooks", json={"url": url})
    assert default.status_code == 422, default.text
    assert client.get("/v1/webhooks").json()["url"] != url


def test_malformed_requests_are_refused(client: httpx.Client) -> None:
    _assert_problem(
        client.post("/v1/jobs", content=b"scale=2", headers={"content-type": "text/plain"}),
        422,
        "multipart/form-data",
    )
    _assert_problem(
        client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}),
        422,
        "json",
    )
    _assert_problem(client.post("/v1/jobs", data=FAST, files={"x": ("", b"")}), 422, "")
    _assert_problem(client.post("/v1/jobs", files={"audio": ("a.wav", b"x")}, data=FAST), 422, "")
    # A body cut off before its closing boundary.
    body, content_type = _raw_multipart(b"a.mp4", b"x" * 1000, FAST)
    cut = client.post("/v1/jobs", content=body[:-40], headers={"content-type": content_type})
    _assert_problem(cut, 422, "cut off")
    # A cursor that this API did not hand out.
    _assert_problem(client.get("/v1/jobs", params={"cursor": "!!nope"}), 422, "cursor")
    _assert_problem(client.get("/v1/jobs", params={"limit": "0"}), 422, "limit")
    _assert_problem(client.get("/v1/jobs", params={"status": "sleeping"}), 422, "status")


@pytest.mark.parametrize(
    "content_type",
    ["video/mp4\r\nX-Injected: 1", "video/\x00mp4", "\ud83c"],
    ids=["crlf", "nul", "lone-surrogate"],
)
def test_a_presigned_upload_with_a_bad_content_type_is_refused(
    client: httpx.Client, content_type: str
) -> None:
    # Found by test_schemathesis.py: the value goes to the store as a header; the HTTP client
    # refuses CR/LF (answered 503 "the object store is unreachable", a lie that invites
    # retries) and the store refuses NUL (an unhandled ClientError: a bare 500).
    response = client.post(
        "/v1/uploads",
        content=json.dumps({"filename": "a.mp4", "size": 10, "content_type": content_type}),
        headers={"content-type": "application/json"},
    )
    _assert_problem(response, 422, "content_type")


def test_a_good_job_after_the_corpus_still_succeeds(client: httpx.Client, tmp_path: Path) -> None:
    # Runs last in this file: the bad films above must not have broken the worker.
    clip = make_clip(tmp_path / "good.mp4", seconds=0.5, audio="aac")
    started = time.monotonic()
    job = wait_job(client, _submit(client, clip.path, scale="2")["id"], FINAL, timeout=120)
    assert job["status"] == "succeeded", job["error"]
    assert job["output"]["width"] == 128 and job["frames_done"] == clip.frames
    assert time.monotonic() - started < 120
    health = client.get("/healthz").json()
    assert health["dependencies"]["workers"]["workers"], "no live worker after the corpus"
