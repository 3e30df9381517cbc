"""FastAPI dependencies: settings, a database session, the store, the caller's API key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from shared.config import Settings, get_settings
from shared.db import session_factory
from shared.errors import LumiereError
from shared.keys import authenticate
from shared.models import ApiKey
from shared.storage import Storage


class Unauthorized(LumiereError):
    """No API key, or one we don't know."""


def get_db() -> Iterator[Session]:
    """A session per request, committed by the service functions that write."""
    session = session_factory()()
    try:
        yield session
    finally:
        session.close()


def get_storage() -> Storage:
    """The object store."""
    return Storage()


_bearer = HTTPBearer(auto_error=False, description="An API key: `lumiere keys create NAME`.")


def get_api_key(
    session: Annotated[Session, Depends(get_db)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    request: Request,
) -> ApiKey:
    """The API key the request is signed with; 401 without a valid one."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("send your API key as 'Authorization: Bearer <key>'")
    key = authenticate(session, credentials.credentials)
    if key is None:
        raise Unauthorized("unknown or revoked API key")
    request.state.api_key_id = key.id
    return key


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_db)]
StorageDep = Annotated[Storage, Depends(get_storage)]
KeyDep = Annotated[ApiKey, Depends(get_api_key)]
