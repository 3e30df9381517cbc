"""FastAPI dependencies: settings, a database session, the store, the caller's API key."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from shared.config import Settings, get_settings
from shared.db import session_factory
from shared.errors import LumiereError
from shared.health import redis_client
from shared.keys import authenticate
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


def get_storage() -> Storage:
    """The object store."""
    return Storage()


_bearer = HTTPBearer(auto_error=False, description="An API key: `lumiere keys create NAME`.")


class RateLimited(LumiereError):
    """Too many requests for this key in the current minute."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def check_rate(key_id: str, settings: Settings) -> None:
    """Count the request in this minute's window (in Redis); refuse past the key's limit."""
    limit = settings.rate_limit_per_minute
    if not limit:
        return
    now = time.time()
    window = int(now // 60)
    counter = f"lumiere:rate:{key_id}:{window}"
    try:
        client = redis_client(settings)
        pipe = client.pipeline()
        pipe.incr(counter)
        pipe.expire(counter, 120)
        count = int(pipe.execute()[0])
    except RedisError as err:
        # Failing open: a broker outage must not lock every client out of reading its jobs.
        log.warning("rate_limit.unavailable", error=str(err)[:200])
        return
    if count > limit:
        raise RateLimited(
            f"more than {limit} requests this minute; slow down", retry_after=int(60 - now % 60) + 1
        )


def get_api_key(
    settings: Annotated[Settings, Depends(get_settings)],
    session: Annotated[Session, Depends(get_db)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    request: Request,
) -> ApiKey:
    """The API key the request is signed with; 401 without a valid one."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("send your API key as 'Authorization: Bearer <key>'")
    key = authenticate(session, credentials.credentials)
    # Give the connection back now: a long upload must not hold one for its whole length.
    session.commit()
    if key is None:
        raise Unauthorized("unknown or revoked API key")
    request.state.api_key_id = key.id
    check_rate(key.id, settings)
    return key


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_db)]
StorageDep = Annotated[Storage, Depends(get_storage)]
KeyDep = Annotated[ApiKey, Depends(get_api_key)]
