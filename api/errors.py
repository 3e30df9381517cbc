"""Map Lumière's error tree (shared.errors) to RFC 9457 problem+json responses."""

from __future__ import annotations

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
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import RateLimited, Unauthorized
from api.upload_stream import PayloadTooLarge
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


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(errors.LumiereError)
    async def lumiere_error(request: Request, err: errors.LumiereError) -> JSONResponse:
        status = next((code for cls, code in STATUS.items() if isinstance(err, cls)), 500)
        response = problem(status, type(err).__name__, str(err))
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        if isinstance(err, RateLimited):
            response.headers["Retry-After"] = str(err.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
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

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return problem(err.status_code, str(err.detail))

    @app.exception_handler(BotoCoreError)
    async def store_error(request: Request, err: BotoCoreError) -> JSONResponse:
        if isinstance(err, STORE_DOWN):
            log.warning("storage.unavailable", error=str(err)[:200])
            return problem(503, "Service unavailable", "the object store is unreachable; retry")
        log.error("storage.error", error=str(err)[:300])
        return problem(502, "Bad gateway", "the object store could not handle the request")

    @app.exception_handler(ClientError)
    async def store_refused(request: Request, err: ClientError) -> JSONResponse:
        code = err.response.get("Error", {}).get("Code", "")
        log.error("storage.refused", code=code)
        return problem(502, "Bad gateway", f"the object store refused the request ({code})")

    @app.exception_handler(PoolTimeout)
    async def pool_exhausted(request: Request, err: PoolTimeout) -> JSONResponse:
        log.warning("database.busy", error=str(err)[:200])
        return problem(503, "Service unavailable", "the database is busy; retry shortly")

    @app.exception_handler(OperationalError)
    async def database_down(request: Request, err: OperationalError) -> JSONResponse:
        log.warning("database.unavailable", error=str(err.orig)[:200])
        return problem(503, "Service unavailable", "the database is unreachable; retry shortly")
