"""Hostile requests: NUL and control bytes wherever a client can put them, oversized heads,
malformed multipart bodies, invalid UTF-8 and lying lengths. Each gets a 4xx problem+json —
never a 5xx, nor a traceback in the answer or the API's log — and the API goes on serving.

The requests are written byte for byte on a socket (httpx would refuse or escape most of
them) and the answers read back with h11.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from dataclasses import dataclass

import h11
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.config import Settings
from shared.storage import Storage
from tests.conftest import OUTPUT
from tests.integration.test_bad_input import FAST, _assert_problem, _raw_multipart

API_LOG = OUTPUT / "api.log"  # the session API's log (tests/conftest.py: api_url)
SOME_ID = "00000000-0000-4000-8000-000000000000"


def _send(api_url: str, data: bytes, half_close: bool = False) -> httpx.Response | None:
    """Write ``data`` on a new connection and read the answer; ``None`` when the server
    closed the connection without answering."""
    url = httpx.URL(api_url)
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        conn = h11.Connection(h11.CLIENT)
        # h11 reads a response only to a request of its own; this one never goes out.
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "lumiere")]))
        conn.send(h11.EndOfMessage())
        response: h11.Response | None = None
        body = b""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                if response is None:
                    return None
                raise
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
    assert response is not None
    headers = [(k.decode(), v.decode("latin-1")) for k, v in response.headers]
    return httpx.Response(response.status_code, headers=headers, content=body)


def _request(
    key: str,
    method: str,
    target: bytes,
    body: bytes = b"",
    content_type: bytes | None = None,
    headers: tuple[bytes, ...] = (),
    length: int | None = None,
) -> bytes:
    """An HTTP/1.1 request as bytes; ``length`` (a lie, if it differs) is its Content-Length."""
    head = [
        method.encode() + b" " + target + b" HTTP/1.1",
        b"Host: lumiere",
        f"Authorization: Bearer {key}".encode(),
        b"Connection: close",
    ]
    if content_type is not None:
        head.append(b"Content-Type: " + content_type)
    if body or length is not None or method in ("POST", "PUT"):
        head.append(b"Content-Length: %d" % (len(body) if length is None else length))
    return b"\r\n".join([*head, *headers, b"", b""]) + body


@dataclass(frozen=True)
class Hostile:
    """One hostile request and the refusal it must get (``needle``: a word of its detail)."""

    name: str
    method: str
    target: bytes
    status: int
    needle: str
    body: bytes = b""
    content_type: bytes | None = None
    headers: tuple[bytes, ...] = ()
    length: int | None = None


JSON = b"application/json"
CONTROL = "control characters"
MALFORMED = "malformed"
FORM, _FORM_TYPE = _raw_multipart(b"a.mp4", b"x" * 1000, {**FAST, "fps": "MARK"})
FORM_TYPE = _FORM_TYPE.encode()


def _url(name: str, target: bytes, status: int = 400, needle: str = CONTROL) -> Hostile:
    return Hostile(name, "GET", target, status, needle)


def _cursor(name: str, raw: bytes) -> Hostile:
    """A cursor that is valid base64 of ``raw``."""
    target = b"/v1/jobs?cursor=" + base64.urlsafe_b64encode(raw).rstrip(b"=")
    return _url(name, target, 422, "cursor")


def _head(name: str, *headers: bytes) -> Hostile:
    return Hostile(name, "GET", b"/v1/jobs", 431, "header", headers=headers)


def _json(name: str, path: bytes, body: bytes, status: int, needle: str) -> Hostile:
    return Hostile(
        name, "PUT" if path == b"/v1/webhooks" else "POST", path, status, needle, body, JSON
    )


def _job(name: str, fields: str, status: int = 422, needle: str = CONTROL) -> Hostile:
    """A JSON job naming an upload, with ``fields`` (JSON text) added."""
    body = f'{{"upload_id": "{SOME_ID}", {fields}}}'.encode()
    return _json(name, b"/v1/jobs", body, status, needle)


def _form(
    name: str,
    body: bytes,
    needle: str = MALFORMED,
    content_type: bytes = FORM_TYPE,
    length: int | None = None,
) -> Hostile:
    return Hostile(name, "POST", b"/v1/jobs", 422, needle, body, content_type, length=length)


def _edited(old: bytes, new: bytes) -> bytes:
    """The well-formed multipart body with ``old`` replaced by ``new``."""
    assert old in FORM
    return FORM.replace(old, new)


def _fields(**fields: str) -> bytes:
    """A multipart body with a film and these (hostile) fields."""
    return _raw_multipart(b"a.mp4", b"x" * 1000, {**FAST, **fields})[0]


PADDED = b"Content-Type: application/octet-stream"  # a part header line to replace
CORPUS = [
    # The URL: ids, cursors and filters.
    _url("path-nul", b"/v1/jobs/%00abc"),
    _url("path-control", b"/v1/jobs/ab%01%1b%7f"),
    _url("path-not-a-uuid", b"/v1/jobs/not-a-job", 404, "no job"),
    _url("events-nul", b"/v1/jobs/%00/events"),
    _url("deliveries-nul", b"/v1/jobs/%00/webhooks"),
    Hostile(
        "redeliver-nul", "POST", f"/v1/jobs/{SOME_ID}/webhooks/%00/redeliver".encode(), 400, CONTROL
    ),
    _json("upload-path-nul", b"/v1/uploads/%00/complete", b'{"parts": []}', 400, CONTROL),
    _url("cursor-nul", b"/v1/jobs?cursor=%00"),
    _cursor("cursor-to-nul-id", json.dumps(["2020-01-01T00:00:00+00:00", "\0"]).encode()),
    _cursor("cursor-to-number-id", b'["2020-01-01T00:00:00+00:00", 7]'),
    _cursor("cursor-to-nul-bytes", b"\0\0\0\0"),
    _url("cursor-10k", b"/v1/jobs?cursor=" + b"A" * 10_000, 422, "cursor"),
    _url("status-nul", b"/v1/jobs?status=%00"),
    _url("status-crlf", b"/v1/jobs?status=queued%0d%0aX-Injected:%201"),
    _url("limit-nul", b"/v1/jobs?limit=1%00"),
    # The head.
    _head("header-100k", b"X-Big: " + b"a" * 100_000),
    _head("header-10k", b"X-Big: " + b"a" * 10_000),
    _head("headers-3000", *(b"X-H%d: v" % i for i in range(3000))),
    _head("headers-101", *(b"X-H%d: v" % i for i in range(101))),
    _head("headers-20k-in-all", *(b"X-H%d: " % i + b"v" * 1000 for i in range(20))),
    # JSON bodies.
    _job("job-key-nul", '"sc\\u0000ale": 2', needle="not permitted"),
    _json("job-id-nul", b"/v1/jobs", b'{"upload_id": "\\u0000"}', 422, CONTROL),
    _job("job-webhook-nul", '"webhook_url": "http://a\\u0000b/"'),
    _job("job-upscaler-escape", '"upscaler": "lanczos\\u001b"', needle="upscaler"),
    _json("job-invalid-utf8", b"/v1/jobs", b'{"upload_id": "\xff\xfe"}', 422, "json"),
    _json("job-100k", b"/v1/jobs", b'{"upload_id": "' + b"a" * 100_000 + b'"}', 413, "larger"),
    _json(
        "upload-key-nul",
        b"/v1/uploads",
        b'{"filename": "a", "size": 1, "\\u0000": 1}',
        422,
        "not permitted",
    ),
    _json(
        "upload-type-nul",
        b"/v1/uploads",
        b'{"filename": "a", "size": 1, "content_type": "a/\\u0000"}',
        422,
        "content_type",
    ),
    _json("upload-size-nul", b"/v1/uploads", b'{"filename": "a", "size": "\\u0000"}', 422, "size"),
    _json(
        "upload-invalid-utf8",
        b"/v1/uploads",
        b'{"filename": "\xff\xfe", "size": 1}',
        400,
        "parsing the body",
    ),
    # The key's default webhook: refused by the database (api/errors.py), if not before.
    _json("webhook-url-nul", b"/v1/webhooks", b'{"url": "http://a\\u0000b/"}', 422, ""),
    # Multipart bodies: form fields, filenames, part headers, the boundary, the length.
    _form("form-name-nul", _fields(**{"sc\0ale": "2"}), CONTROL),
    _form("form-value-nul", _fields(webhook_url="http://a\0b/"), CONTROL),
    _form("form-value-escape", _fields(webhook_events="job.failed\x1b[2J"), CONTROL),
    _form("form-value-invalid-utf8", _edited(b"MARK", b"\xff\xfe"), "utf-8"),
    _form("form-name-invalid-utf8", _edited(b'name="fps"', b'name="\xc3("'), "utf-8"),
    _form("file-name-nul", _edited(b'name="file"', b'name="fi\x00le"'), "unexpected file field"),
    _form("part-header-name-control", _edited(b"Content-Type:", b"Content-\x01Type:")),
    _form("part-header-value-nul", _edited(b'name="fps"', b'name="f\x00ps"'), CONTROL),
    _form("part-header-line-100k", _edited(PADDED, b"X-Pad: " + b"a" * 100_000)),
    _form("part-headers-50", _edited(PADDED, b"\r\n".join(b"X-%d: v" % i for i in range(50)))),
    _form("bogus-boundary", FORM, content_type=b"multipart/form-data; boundary=not-this-one"),
    _form("no-boundary", FORM, "multipart/form-data", content_type=b"multipart/form-data"),
    _form("not-multipart-at-all", b"\0\x01\x02garbage" * 100),
    _form("content-length-short", FORM, "cut off", length=len(FORM) // 2),
]


@dataclass
class Tally:
    """The API's response counts before the corpus, its log's length, and cases sent."""

    before: dict[str, float]
    log_offset: int
    sent: int = 0


def _responses_by_class(api_url: str) -> dict[str, float]:
    text = httpx.get(f"{api_url}/metrics", timeout=30).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "lumiere_http_responses":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["class"]] = sample.value
    return counts


@pytest.fixture(scope="module")
def tally(api_url: str) -> Tally:
    """Taken before the first case of this module runs."""
    return Tally(_responses_by_class(api_url), API_LOG.stat().st_size)


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_a_hostile_request_gets_a_4xx_problem(
    api_url: str, api_key: str, tally: Tally, case: Hostile
) -> None:
    data = _request(
        api_key, case.method, case.target, case.body, case.content_type, case.headers, case.length
    )
    response = _send(api_url, data)
    tally.sent += 1
    assert response is not None, "the connection was closed without an answer"
    _assert_problem(response, case.status, case.needle)


def test_the_http_parser_refuses_what_never_reaches_the_app(api_url: str, api_key: str) -> None:
    # uvicorn's parser (h11) answers these itself, a plain 400: no route ever sees them.
    for data in (
        _request(api_key, "GET", b"/v1/jobs/\x00abc"),
        _request(api_key, "GET", b"/v1/jobs", headers=(b"X-Nul: a\x00b",)),
        _request(api_key, "GET", b"/v1/jobs", headers=(b"X-Bad\x01Name: v",)),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS on a plain HTTP port
    ):
        response = _send(api_url, data)
        assert response is not None and response.status_code == 400, response


def _log_since(tally: Tally) -> str:
    with API_LOG.open("rb") as log:
        log.seek(tally.log_offset)
        return log.read().decode(errors="replace")


def _open_uploads(settings: Settings) -> set[str]:
    storage = Storage(settings)
    listed = storage.client.list_multipart_uploads(Bucket=storage.bucket, Prefix="jobs/")
    return {u["UploadId"] for u in listed.get("Uploads", [])}


def test_an_upload_abandoned_mid_body_is_quietly_aborted(
    api_url: str, api_key: str, settings: Settings, tally: Tally
) -> None:
    # Content-Length promises 400 KB; 100 KB come, then the client goes away.
    before = _open_uploads(settings)
    body, content_type = _raw_multipart(b"a.mp4", b"x" * 400_000, FAST)
    data = _request(
        api_key, "POST", b"/v1/jobs", body[:100_000], content_type.encode(), length=len(body)
    )
    abandoned = _log_since(tally).count("request.abandoned")
    response = _send(api_url, data, half_close=True)
    assert response is None or response.status_code < 500, response
    # Logged (at info, without a traceback) once its upload to the store is aborted.
    deadline = time.monotonic() + 10
    while _log_since(tally).count("request.abandoned") == abandoned:
        assert time.monotonic() < deadline, "the API never noticed the client leave"
        time.sleep(0.1)
    assert not _open_uploads(settings) - before, "the abandoned upload's parts were kept"


def test_a_filename_with_nul_is_cleaned_not_refused(api_url: str, api_key: str) -> None:
    # Filenames lose their control characters (test_bad_input.py): NUL is one of them.
    body, content_type = _raw_multipart(b"fi\x00lm\x00.mp4", b"x" * 1000, FAST)
    auth = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=api_url, headers=auth, timeout=30) as http:
        created = http.post("/v1/jobs", content=body, headers={"content-type": content_type})
        assert created.status_code == 201, created.text
        assert created.json()["input"]["filename"] == "film.mp4"
        assert http.delete(f"/v1/jobs/{created.json()['id']}").status_code == 204


def test_after_the_corpus_no_5xx_no_traceback_and_the_api_still_serves(
    api_url: str, api_key: str, tally: Tally
) -> None:
    # Runs last in this file.
    after = _responses_by_class(api_url)
    assert set(after) == {"2xx", "3xx", "4xx", "5xx"}, after
    assert after["5xx"] == tally.before.get("5xx", 0), "a hostile request got a 5xx"
    assert after["4xx"] - tally.before.get("4xx", 0) >= tally.sent, (tally, after)
    log = _log_since(tally)
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    auth = {"Authorization": f"Bearer {api_key}"}
    listed = httpx.get(f"{api_url}/v1/jobs", headers=auth, timeout=30)
    assert listed.status_code == 200, listed.text
    body, content_type = _raw_multipart(b"a.mp4", b"x" * 1000, FAST)
    created = httpx.post(
        f"{api_url}/v1/jobs",
        content=body,
        headers={**auth, "content-type": content_type},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    deleted = httpx.delete(f"{api_url}/v1/jobs/{created.json()['id']}", headers=auth, timeout=30)
    assert deleted.status_code == 204
