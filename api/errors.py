"""Map Lumière's error tree (shared.errors) to RFC 9457 problem+json responses, and refuse
requests whose head is hostile (oversized, control bytes) before any route sees them.

Statuses of refusals: a request head that is malformed gets 400 (431 when too large); a
body that is malformed or holds invalid values gets 422, as every other invalid input; an
error of ours gets a 500 without a traceback in the body (the server log has it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_plus

import psycopg
import psycopg_pool
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import RateLimited, Unauthorized
from api.upload_stream import CONTROL_CHARS, PayloadTooLarge
from shared import errors
from shared.logs import get_logger

log = get_logger(__name__)

# Store errors that mean "down or unreachable, retry later" (the rest are 502s).
STORE_DOWN = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)

STATUS: dict[type[errors.LumiereError], int] = {
    PayloadTooLarge: 413,
    Unauthorized: 401,
    RateLimited: 429,
    errors.UnsupportedMedia: 415,
    errors.InvalidInput: 422,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.ServiceUnavailable: 503,
}


def problem(status: int, title: str, detail: str | None = None, **extra: object) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, object] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse(
        jsonable_encoder(body),
        status_code=status,
        headers=headers,
        media_type="application/problem+json",
    )


# Header limits of common servers: at most 100 header fields (Apache's LimitRequestFields,
# gunicorn's limit_request_fields), each at most 8 KiB (nginx's large_client_header_buffers,
# Apache's and gunicorn's 8190-byte field limit), 16 KiB in all (Node.js's default, and the
# buffer of h11, which uvicorn parses with).
MAX_HEADERS = 100
MAX_HEADER_BYTES = 8 * 1024
MAX_HEAD_BYTES = 16 * 1024


def head_refusal(scope: Scope) -> JSONResponse | None:
    """The answer to a request whose head must go no further, or ``None`` if it may."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    sizes = [len(name) + len(value) + 4 for name, value in headers]  # "name: value\r\n"
    if len(headers) > MAX_HEADERS or max(sizes, default=0) > MAX_HEADER_BYTES:
        return problem(
            431,
            "Request header fields too large",
            f"at most {MAX_HEADERS} header fields of at most {MAX_HEADER_BYTES} bytes each",
        )
    if sum(sizes) > MAX_HEAD_BYTES:
        return problem(
            431, "Request header fields too large", f"at most {MAX_HEAD_BYTES} bytes of headers"
        )
    query = unquote_plus(scope["query_string"].decode("latin-1"))
    if CONTROL_CHARS.search(scope["path"]) or CONTROL_CHARS.search(query):
        return problem(
            400, "Bad request", "the URL holds control characters (such as NUL); remove them"
        )
    return None


class HeadGuard:
    """Pure-ASGI middleware that answers ``head_refusal`` instead of calling the app; being
    part of the app, it holds however the app is served."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = head_refusal(scope) if scope["type"] == "http" else None
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await refusal(scope, receive, send)


async def lumiere_error(request: Request, err: errors.LumiereError) -> JSONResponse:
    """Our domain errors, at the status ``STATUS`` gives their class (else 500)."""
    status = next((code for cls, code in STATUS.items() if isinstance(err, cls)), 500)
    response = problem(status, type(err).__name__, str(err))
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    if isinstance(err, RateLimited):
        response.headers["Retry-After"] = str(err.retry_after)
    return response


async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    """A request FastAPI could not validate: 422, each issue listed."""
    issues = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in err.errors()
    ]
    return problem(
        422,
        "Invalid request",
        "; ".join(f"{'.'.join(map(str, i['loc']))}: {i['msg']}" for i in issues),
        errors=issues,
    )


async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own refusals (404, 405, a body that does not parse)."""
    # Starlette's own (404, 405) say no more than their phrase; FastAPI's say what went
    # wrong ("There was an error parsing the body"), which belongs in the detail.
    title = HTTPStatus(err.status_code).phrase
    detail = str(err.detail)
    return problem(err.status_code, title, None if detail == title else detail)


async def store_error(request: Request, err: BotoCoreError) -> JSONResponse:
    """The object store down (503, retry) or failing (502)."""
    if isinstance(err, STORE_DOWN):
        log.warning("storage.unavailable", error=str(err)[:200])
        return problem(503, "Service unavailable", "the object store is unreachable; retry")
    log.error("storage.error", error=str(err)[:300])
    return problem(502, "Bad gateway", "the object store could not handle the request")


async def store_refused(request: Request, err: ClientError) -> JSONResponse:
    """The object store refused the request: 502, with its error code."""
    code = err.response.get("Error", {}).get("Code", "")
    log.error("storage.refused", code=code)
    return problem(502, "Bad gateway", f"the object store refused the request ({code})")


async def pool_exhausted(
    request: Request, err: PoolTimeout | psycopg_pool.PoolTimeout
) -> JSONResponse:
    """No database connection free in time: 503, retry shortly."""
    log.warning("database.busy", error=str(err)[:200])
    return problem(503, "Service unavailable", "the database is busy; retry shortly")


async def database_down(
    request: Request, err: OperationalError | psycopg.OperationalError
) -> JSONResponse:
    """The database unreachable (through SQLAlchemy, or the polled reads' own connections):
    503, retry shortly."""
    log.warning("database.unavailable", error=str(getattr(err, "orig", err))[:200])
    return problem(503, "Service unavailable", "the database is unreachable; retry shortly")


async def unstorable_value(request: Request, err: DataError) -> JSONResponse:
    """A value the database cannot store: 422."""
    # A value the database refuses (a NUL byte, a number out of range) came from the
    # request: validation should have refused it first, so this is logged to be fixed.
    log.warning("database.refused_value", path=request.url.path, error=str(err.orig)[:200])
    return problem(422, "InvalidInput", "a value in the request cannot be stored (a NUL byte?)")


async def client_gone(request: Request, err: ClientDisconnect) -> JSONResponse:
    """The client left mid-request: 499."""
    # The client left before the end of its body (an abandoned upload, whose parts are
    # already aborted): nothing is wrong here, and nobody reads this answer. 499 is
    # nginx's "client closed request", so it is counted apart from real refusals.
    log.info("request.abandoned", method=request.method, path=request.url.path)
    return problem(499, "Client closed request")


async def unexpected(request: Request, err: Exception) -> JSONResponse:
    """Anything else: 500, without a traceback."""
    # Starlette raises the error again once this answer is sent, and uvicorn logs it
    # with its traceback; the client gets no traceback.
    log.error(
        "request.failed",
        method=request.method,
        path=request.url.path,
        error=f"{type(err).__name__}: {err}"[:300],
    )
    return problem(500, "Internal server error", "an unexpected error on our side; it is logged")


# Each error's handler: Starlette takes the one of the nearest class in the error's MRO;
# ``Exception``'s goes in its ServerErrorMiddleware, for whatever none of the others take.
Handler = Callable[[Request, Any], Awaitable[JSONResponse]]
HANDLERS: dict[type[Exception], Handler] = {
    errors.LumiereError: lumiere_error,
    RequestValidationError: validation_error,
    StarletteHTTPException: http_error,
    BotoCoreError: store_error,
    ClientError: store_refused,
    PoolTimeout: pool_exhausted,
    psycopg_pool.PoolTimeout: pool_exhausted,
    OperationalError: database_down,
    psycopg.OperationalError: database_down,
    DataError: unstorable_value,
    ClientDisconnect: client_gone,
    Exception: unexpected,
}


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    for kind, handler in HANDLERS.items():
        app.add_exception_handler(kind, handler)
