"""FastAPI dependencies: settings, a database session, the store, the caller's API key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Annotated, Any, ParamSpec, TypeVar, cast

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from api.reads import ReadPool, compiled, fetch
from shared.config import Settings, get_settings
from shared.db import session_factory
from shared.errors import LumiereError
from shared.keys import authenticate, digest, is_live
from shared.logs import get_logger
from shared.models import ApiKey
from shared.storage import Storage

log = get_logger(__name__)


class Unauthorized(LumiereError):
    """No API key, or one we don't know."""


async def get_db() -> AsyncIterator[Session]:
    """A session per request, committed by the service functions that write.

    Async so that closing it needs no worker thread: with every thread busy waiting for a
    pooled connection, a teardown that waits for a thread would never give one back."""
    session = session_factory()()
    try:
        yield session
    finally:
        session.close()


P = ParamSpec("P")
T = TypeVar("T")


# Database work gets a few threads of its own: its calls are short, and more threads would
# only take turns at the interpreter lock (anyio's 40 stay for slow calls: the store).
DB_THREADS = 8
_DB_LIMITER: RunVar[CapacityLimiter] = RunVar("lumiere_db_threads")


async def in_db_thread(work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``work(*args)`` in one of this event loop's ``DB_THREADS`` database threads."""
    try:
        limiter = _DB_LIMITER.get()
    except LookupError:
        limiter = CapacityLimiter(DB_THREADS)
        _DB_LIMITER.set(limiter)
    return await anyio.to_thread.run_sync(partial(work, *args, **kwargs), limiter=limiter)


def read(session: Session, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Read-only ``work(*args)`` on ``session``, each statement committing itself (a poll is
    its queries alone, without BEGIN and ROLLBACK around them); its connection given back."""
    try:
        _autocommit(session)
        return work(*args, **kwargs)
    finally:
        session.close()


async def read_in_thread(
    session: Session, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``read`` in a worker thread, the connection given back there too (no round trip on
    the event loop at the request's end)."""
    return await in_db_thread(partial(read, session, work, *args, **kwargs))


def _autocommit(session: Session) -> None:
    """Start ``session`` on a connection without transactions (reset when given back)."""
    session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def get_storage() -> Storage:
    """The object store."""
    return Storage()


_bearer = HTTPBearer(auto_error=False, description="An API key: `lumiere keys create NAME`.")


class RateLimited(LumiereError):
    """Too many requests for this key in the current minute."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_RATE_CLIENTS: dict[tuple[str, asyncio.AbstractEventLoop], Redis] = {}


def _rate_client(url: str) -> Redis:
    """One Redis client (and its pool of connections) per URL and event loop, kept: a new
    one per request would open a connection per request."""
    loop = asyncio.get_running_loop()
    client = _RATE_CLIENTS.get((url, loop))
    if client is None:
        client = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        _RATE_CLIENTS[(url, loop)] = client
    return client


async def check_rate(key_id: str, settings: Settings) -> None:
    """Count the request in this minute's window (in Redis, shared by every API process);
    refuse past the key's limit."""
    limit = settings.rate_limit_per_minute
    if not limit:
        return
    now = time.time()
    window = int(now // 60)
    counter = f"lumiere:rate:{key_id}:{window}"
    try:
        # No MULTI/EXEC: INCR alone is atomic, and the EXPIRE after it is the same for all.
        pipe = _rate_client(settings.redis_url).pipeline(transaction=False)
        pipe.incr(counter)
        pipe.expire(counter, 120)
        count = int((await pipe.execute())[0])
    except RedisError as err:
        # Failing open: a broker outage must not lock every client out of reading its jobs.
        log.warning("rate_limit.unavailable", error=str(err)[:200])
        return
    if count > limit:
        raise RateLimited(
            f"more than {limit} requests this minute; slow down", retry_after=int(60 - now % 60) + 1
        )


async def settings_dep() -> Settings:
    """The process-wide settings (a coroutine, so reading them takes no worker thread)."""
    return get_settings()


def _authenticate(session: Session, secret: str) -> ApiKey | None:
    _autocommit(session)
    key = authenticate(session, secret)
    # Give the connection back now, in this thread: a long upload must not hold one for its
    # whole length, and no request may hold one while it waits for a thread (with every
    # thread waiting for a connection, none would ever be given back).
    session.commit()
    return key


def _secret(credentials: HTTPAuthorizationCredentials | None) -> str:
    """The API key's secret from the Authorization header; 401 without one."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("send your API key as 'Authorization: Bearer <key>'")
    return credentials.credentials


async def _admitted(request: Request, key_id: str | None, settings: Settings) -> None:
    """Nothing if ``key_id`` is a key's and within its rate; 401 / 429 otherwise."""
    if key_id is None:
        raise Unauthorized("unknown or revoked API key")
    request.state.api_key_id = key_id
    await check_rate(key_id, settings)


async def get_api_key(
    settings: Annotated[Settings, Depends(settings_dep)],
    session: Annotated[Session, Depends(get_db)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    request: Request,
) -> ApiKey:
    """The API key the request is signed with; 401 without a valid one. The lookup runs in a
    worker thread, the rate count on the event loop."""
    secret = _secret(credentials)
    key = await in_db_thread(_authenticate, session, secret)
    await _admitted(request, key.id if key else None, settings)
    return cast(ApiKey, key)


async def get_secret(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The API key's secret, not looked up yet (``read_as_caller`` does that)."""
    return _secret(credentials)


# The key a poll is signed with: what ``is_live`` needs of it.
_KEY = compiled(
    select(ApiKey.id, ApiKey.digest, ApiKey.revoked_at).where(ApiKey.digest == bindparam("digest"))
)


async def _caller(conn: AsyncConnection[Any], secret: str) -> str | None:
    """The id of the live key whose secret this is, or ``None``."""
    wanted = digest(secret)
    found = await fetch(conn, _KEY, digest=wanted)
    return found[0].id if found and is_live(found[0], wanted) else None


def read_pool(request: Request) -> ReadPool:
    """This API process's async connections (opened with the app: ``api.main``)."""
    return cast(ReadPool, request.app.state.reads)


async def read_as_caller(
    request: Request,
    secret: str,
    settings: Settings,
    work: Callable[..., Awaitable[T]],
    *args: object,
) -> T:
    """Read-only ``await work(conn, key_id, *args)`` for the key ``secret`` is, the key
    looked up on the same connection, on the event loop (``api.reads``: what the routes
    clients poll use); 401 / 429 as ``get_api_key`` gives them. The read is made before the
    rate is counted, and its answer is withheld when the count is over."""

    async def as_caller(conn: AsyncConnection[Any]) -> tuple[str | None, T | LumiereError | None]:
        key_id = await _caller(conn, secret)
        if key_id is None:
            return None, None
        try:
            return key_id, await work(conn, key_id, *args)
        except LumiereError as err:  # an answer like any other, given once counted
            return key_id, err

    key_id, result = await read_pool(request).run(as_caller)
    await _admitted(request, key_id, settings)
    if isinstance(result, LumiereError):
        raise result
    return cast(T, result)


SettingsDep = Annotated[Settings, Depends(settings_dep)]
SessionDep = Annotated[Session, Depends(get_db)]
StorageDep = Annotated[Storage, Depends(get_storage)]
KeyDep = Annotated[ApiKey, Depends(get_api_key)]
SecretDep = Annotated[str, Depends(get_secret)]
