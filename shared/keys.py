"""API keys: random secrets shown once; only their SHA-256 digest is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import ApiKey
from shared.webhooks import new_secret

PREFIX = "lum_"


def digest(secret: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """Make a key called ``name``; returns the row and the secret (never stored)."""
    secret = PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(name=name, digest=digest(secret), prefix=secret[:10], webhook_secret=new_secret())
    session.add(key)
    session.flush()
    return key, secret


def is_live(key: ApiKey | Any, wanted: str) -> bool:
    """Whether ``key`` (its row or ORM object), found by the digest ``wanted``, is not revoked."""
    # The lookup is by digest of a high-entropy secret; compare again in constant time anyway.
    return key.revoked_at is None and hmac.compare_digest(key.digest, wanted)


def authenticate(session: Session, secret: str) -> ApiKey | None:
    """The live key whose secret this is, or ``None``."""
    wanted = digest(secret)
    key = session.scalar(select(ApiKey).where(ApiKey.digest == wanted))
    return key if key is not None and is_live(key, wanted) else None
