"""/v1/jobs: submit a film, follow it, fetch the result, cancel, retry, delete."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import (
    KeyDep,
    SecretDep,
    SessionDep,
    SettingsDep,
    StorageDep,
    read_as_caller,
)
from api.services import jobs as service
from api.upload_stream import StreamedForm, read_small_body, stream_form_to_s3
from shared.errors import InvalidInput
from shared.models import ApiKey, JobStatus, new_id
from shared.schemas import JobCreate, JobOptions, JobPublic, JobReport, JobsPublic
from shared.storage import Storage, input_key

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "The film."},
        "audio": {
            "type": "string",
            "format": "binary",
            "description": "A soundtrack, with audio=replace or audio=add.",
        },
        **JobOptions.model_json_schema()["properties"],
    },
}

_CREATE_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _FORM_SCHEMA},
            "application/json": {"schema": JobCreate.model_json_schema()},
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobPublic,
    openapi_extra=_CREATE_DOC,
    responses={
        413: {"description": "Upload over the size limit"},
        422: {"description": "Invalid options or upload"},
    },
)
async def create_job(
    request: Request, key: KeyDep, session: SessionDep, storage: StorageDep, settings: SettingsDep
) -> JobPublic:
    """Submit a film: multipart (`curl -F file=@film.mp4 -F scale=2`), streamed to the store,
    or JSON naming a completed upload (`{"upload_id": …, "scale": 2}`)."""
    # Database and store calls are blocking: they run in the threadpool, never on the event
    # loop (one blocked loop would stall every request of this process).
    base = _base(request)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = JobCreate.model_validate_json(await read_small_body(request))
        except ValidationError as err:
            raise InvalidInput(
                "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in err.errors()
                )
            ) from None
        return await run_in_threadpool(_from_uploads, session, key, body, storage, base)

    job_id = new_id()
    keys = {"file": input_key(job_id), "audio": f"jobs/{job_id}/audio"}
    form = await stream_form_to_s3(
        request, storage, keys, settings.upload_part_bytes, settings.max_upload_bytes
    )
    try:
        return await run_in_threadpool(_from_form, session, key, job_id, form, base)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(storage.delete_prefix, f"jobs/{job_id}/")
        raise


def _from_uploads(
    session: Session, key: ApiKey, body: JobCreate, storage: Storage, base: str
) -> JobPublic:
    job = service.create_job_from_uploads(session, key, body, storage)
    return service.public(session, job, base)


def _from_form(
    session: Session, key: ApiKey, job_id: str, form: StreamedForm, base: str
) -> JobPublic:
    film = form.files.get("file")
    if film is None:
        raise InvalidInput("no film: send it as the 'file' field (curl -F file=@film.mp4)")
    options = service.parse_form_options(form.fields)
    audio = form.files.get("audio")
    job = service.create_job(
        session,
        key,
        job_id,
        options,
        input_key=film.key,
        filename=film.filename,
        size=film.size,
        audio_key=audio.key if audio else None,
    )
    return service.public(session, job, base)


# The two routes clients poll read on the event loop, the key's lookup included, with no
# worker thread and no ORM session (api/reads.py).
@router.get("", response_model=JobsPublic)
async def list_jobs(
    request: Request,
    secret: SecretDep,
    settings: SettingsDep,
    status: JobStatus | None = None,
    cursor: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobsPublic:
    """Your jobs, newest first; filter by status; follow `next_cursor` for more."""
    return await read_as_caller(
        request, secret, settings, service.read_jobs, _base(request), status, cursor, limit
    )


@router.get("/{job_id}", response_model=JobPublic)
async def get_job(
    job_id: str, request: Request, secret: SecretDep, settings: SettingsDep
) -> JobPublic:
    """Status, stage, progress, ETA, timings, error, input and output metadata."""
    return await read_as_caller(request, secret, settings, service.read_job, job_id, _base(request))


_URL_BODY: dict[str, Any] = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["url"],
                "properties": {"url": {"type": "string"}},
            }
        }
    },
}


_REDIRECT_DOCS: dict[int | str, dict[str, Any]] = {
    307: {"description": "Redirect to the presigned URL (Location header)"},
    200: {"description": "With redirect=false: the URL as JSON", **_URL_BODY},
}


def _to(url: str, redirect: bool) -> Response:
    """A 307 to a presigned URL, or (for pages that fetch with a key) the URL as JSON."""
    return RedirectResponse(url, status_code=307) if redirect else JSONResponse({"url": url})


@router.get(
    "/{job_id}/result",
    status_code=307,
    response_class=RedirectResponse,
    responses=_REDIRECT_DOCS,
)
def get_result(
    job_id: str,
    key: KeyDep,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    redirect: bool = True,
) -> Response:
    """Redirect to a short-lived download URL of the restored film (ranges supported);
    `?redirect=false` returns the URL as JSON instead."""
    url = service.result_url(session, key, job_id, storage, settings.presign_expiry_s)
    return _to(url, redirect)


@router.get(
    "/{job_id}/preview/{which}",
    status_code=307,
    response_class=RedirectResponse,
    responses=_REDIRECT_DOCS,
)
def get_preview(
    job_id: str,
    which: Literal["before", "after"],
    key: KeyDep,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    redirect: bool = True,
) -> Response:
    """A source frame (`before`) or the same restored frame (`after`) of a finished job."""
    url = service.preview_url(session, key, job_id, which, storage, settings.presign_expiry_s)
    return _to(url, redirect)


@router.get("/{job_id}/report", response_model=JobReport)
def get_report(
    job_id: str, key: KeyDep, session: SessionDep, storage: StorageDep, settings: SettingsDep
) -> JobReport:
    """What the workers measured of a finished job's film: the cuts, the cadence and the
    repeats dropped, each stage's time, speed, device and model (with its checksum), every
    interpolated frame's confidence and the least confident moments, with pictures."""
    return service.job_report(session, key, job_id, storage, settings.presign_expiry_s)


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: str, request: Request, key: KeyDep, session: SessionDep) -> JobPublic:
    """Stop a queued or running job."""
    job = service.cancel_job(session, key, job_id)
    return service.public(session, job, _base(request))


@router.post("/{job_id}/retry", response_model=JobPublic)
def retry_job(job_id: str, request: Request, key: KeyDep, session: SessionDep) -> JobPublic:
    """Run a failed or cancelled job again; chunks already done are kept."""
    job = service.retry_job(session, key, job_id)
    return service.public(session, job, _base(request))


@router.delete("/{job_id}", status_code=204, response_class=Response)
def delete_job(job_id: str, key: KeyDep, session: SessionDep, storage: StorageDep) -> Response:
    """Delete a job and every object it stored."""
    service.delete_job(session, key, job_id, storage)
    return Response(status_code=204)
