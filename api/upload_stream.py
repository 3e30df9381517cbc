"""Stream a multipart/form-data request body straight into S3 multipart uploads.

The body is parsed as it arrives (python-multipart's push parser); file parts are cut into
fixed-size S3 parts, so the API holds at most one part per file in memory however large the
film is. Form fields (options) are small and collected as text.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from shared.errors import InvalidInput
from shared.logs import get_logger
from shared.storage import Storage

log = get_logger(__name__)

MAX_FIELD_BYTES = 64 * 1024
MAX_JSON_BYTES = 64 * 1024  # a job's JSON body is options and ids: a few hundred bytes
# C0 control characters and DEL: no name, id or option needs one, and Postgres cannot store
# NUL at all. Filenames lose them; anywhere else they are refused.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class PayloadTooLarge(InvalidInput):
    """The upload is larger than the configured limit."""


def safe_filename(raw: str) -> str:
    """The file's own name: no directories, no control characters, at most 200 characters."""
    name = CONTROL_CHARS.sub("", raw.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return (name or "film")[:200]


async def read_small_body(request: Request, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The whole body of a request that carries no film, refused as it grows past
    ``max_bytes`` (whatever its Content-Length says) instead of held in memory."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"the request body is larger than {max_bytes} bytes")
    return bytes(body)


def _text(data: bytes, what: str) -> str:
    """A form field's name or value as text; ``InvalidInput`` if it is not UTF-8."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} is not UTF-8 text") from None


@dataclass
class S3Part:
    """One file field being written to the store as a multipart upload."""

    storage: Storage
    key: str
    part_size: int
    filename: str
    upload_id: str = ""
    completed: bool = False
    numbered: int = 0
    size: int = 0
    buffer: bytearray = field(default_factory=bytearray)
    parts: list[dict[str, Any]] = field(default_factory=list)
    # One part uploads while the next one is being received: the network and the store
    # work at the same time, and at most two parts are held in memory.
    in_flight: asyncio.Task[None] | None = None

    async def start(self) -> None:
        created = await run_in_threadpool(
            self.storage.client.create_multipart_upload, Bucket=self.storage.bucket, Key=self.key
        )
        self.upload_id = created["UploadId"]

    async def write(self, data: bytes) -> None:
        self.buffer += data
        self.size += len(data)
        while len(self.buffer) >= self.part_size:
            chunk = bytes(self.buffer[: self.part_size])
            del self.buffer[: self.part_size]
            await self._send(chunk)

    async def _send(self, chunk: bytes) -> None:
        number = len(self.parts) + 1
        done = await run_in_threadpool(
            self.storage.client.upload_part,
            Bucket=self.storage.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=chunk,
        )
        self.parts.append({"PartNumber": number, "ETag": done["ETag"]})

    async def finish(self) -> None:
        if self.buffer or not self.parts:
            await self._send(bytes(self.buffer))
            self.buffer.clear()
        await run_in_threadpool(
            self.storage.client.complete_multipart_upload,
            Bucket=self.storage.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )
        self.completed = True

    async def abort(self) -> None:
        """Forget this file: abort the multipart upload, or delete the object if complete."""
        if self.in_flight is not None:
            self.in_flight.cancel()
            with contextlib.suppress(BaseException):  # its outcome no longer matters
                await self.in_flight
        if self.completed:
            await run_in_threadpool(
                self.storage.client.delete_object, Bucket=self.storage.bucket, Key=self.key
            )
        elif self.upload_id:
            await run_in_threadpool(
                self.storage.client.abort_multipart_upload,
                Bucket=self.storage.bucket,
                Key=self.key,
                UploadId=self.upload_id,
            )


async def abort_all(parts: Iterable[S3Part]) -> None:
    """Abort every part, even while the request is being cancelled; log what fails."""
    with anyio.CancelScope(shield=True):
        for part in parts:
            try:
                await part.abort()
            except Exception as err:  # the original error matters more; this one is logged
                log.warning("upload.abort_failed", key=part.key, error=str(err))


@dataclass
class StreamedForm:
    """What a streamed multipart request carried."""

    fields: dict[str, str]
    files: dict[str, S3Part]


def _feed(parser: MultipartParser, data: bytes | None) -> None:
    """Push ``data`` to the parser (``None``: the end); a body that is not valid multipart
    (a wrong boundary, control bytes or an overlong line in a part's headers) is InvalidInput."""
    try:
        if data is None:
            parser.finalize()
        else:
            parser.write(data)
    except MultipartParseError as err:
        raise InvalidInput(f"the multipart body is malformed: {err}") from None


# What the parser reports, in order: ("begin", a part's headers), ("data", bytes), ("end", None).
Event = tuple[str, Any]


def _event_parser(boundary: bytes, events: list[Event]) -> MultipartParser:
    """A push parser that appends what it finds to ``events``: it is synchronous, so they
    are acted on (async) after each write."""
    header: dict[str, bytes] = {"field": b"", "value": b""}
    headers: dict[bytes, bytes] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        headers[header["field"].lower()] = header["value"]
        header["field"] = header["value"] = b""

    def on_headers_finished() -> None:
        events.append(("begin", dict(headers)))
        headers.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        events.append(("data", data[start:end]))

    def on_part_end() -> None:
        events.append(("end", None))

    return MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )


@dataclass
class _FormReader:
    """Acts on the parser's events: text fields are collected, file fields are streamed to
    their S3 keys (``keys``: field name -> key), one part at a time."""

    storage: Storage
    keys: dict[str, str]
    part_size: int
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, S3Part] = field(default_factory=dict)
    # The part being received: its field name, and its upload (a file) or its text.
    name: str = ""
    current: S3Part | None = None
    text: bytearray = field(default_factory=bytearray)

    async def handle(self, kind: str, payload: Any) -> None:
        """Act on one event."""
        if kind == "begin":
            await self.begin(payload)
        elif kind == "data":
            await self.data(payload)
        elif kind == "end":
            await self.end()

    async def begin(self, headers: dict[bytes, bytes]) -> None:
        """A part starts: a file field starts its upload; a text field starts empty."""
        _, opts = parse_options_header(headers.get(b"content-disposition", b""))
        self.name = name = _text(opts.get(b"name", b""), "a form field's name")
        filename = opts.get(b"filename")
        if filename is None:
            self.current, self.text = None, bytearray()
            return
        if name not in self.keys:
            raise InvalidInput(
                f"unexpected file field {name!r}; send the film as 'file'"
                + (" and a soundtrack as 'audio'" if "audio" in self.keys else "")
            )
        if name in self.files:
            raise InvalidInput(f"file field {name!r} was sent twice")
        shown = safe_filename(filename.decode(errors="replace"))
        self.current = S3Part(self.storage, self.keys[name], self.part_size, shown)
        self.files[name] = self.current
        await self.current.start()

    async def data(self, data: bytes) -> None:
        """More of the part: to the store for a file, else to the field's text."""
        if self.current is not None:
            await self.current.write(data)
            return
        self.text += data
        if len(self.text) > MAX_FIELD_BYTES:
            raise InvalidInput(f"form field {self.name!r} is too long")

    async def end(self) -> None:
        """The part is over: a file's upload completes, a field's text is kept."""
        if self.current is not None:
            if self.current.size == 0:
                raise InvalidInput(f"the uploaded {self.name!r} is empty")
            await self.current.finish()
            self.current = None
            return
        if self.name in self.fields:
            raise InvalidInput(f"form field {self.name!r} was sent twice")
        self.fields[self.name] = _text(bytes(self.text), f"form field {self.name!r}")


async def stream_form_to_s3(
    request: Request, storage: Storage, keys: dict[str, str], part_size: int, max_bytes: int
) -> StreamedForm:
    """Parse ``request``'s multipart body; file fields named in ``keys`` go to those S3 keys.

    On any error every started upload is aborted, so no half-written object is left behind.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidInput("send the film as multipart/form-data (curl -F file=@film.mp4)")
    events: list[Event] = []
    parser = _event_parser(boundary, events)
    form = _FormReader(storage, keys, part_size)
    total = 0
    try:
        async for body in request.stream():
            total += len(body)
            if total > max_bytes:
                raise PayloadTooLarge(f"the upload is larger than the limit of {max_bytes} bytes")
            _feed(parser, body)
            for kind, payload in events:
                await form.handle(kind, payload)
            events.clear()
        _feed(parser, None)
        if form.current is not None or (not form.files and not form.fields):
            raise InvalidInput("the upload was cut off before its end; send it again")
    except BaseException:
        await abort_all(form.files.values())
        raise
    return StreamedForm(form.fields, form.files)
