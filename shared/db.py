"""Database engine and sessions (SQLAlchemy 2, psycopg 3, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from shared.config import get_settings

_ENGINES: dict[str, Engine] = {}
_MAKERS: dict[str, sessionmaker[Session]] = {}


def get_engine(url: str | None = None) -> Engine:
    """One pooled engine per URL and process (``pool_pre_ping`` survives a database restart)."""
    settings = get_settings()
    url = url or settings.database_url
    if not url:
        raise RuntimeError("LUMIERE_DATABASE_URL is not set (`lumiere up` sets it for you)")
    # By default room for every request thread of an API process (anyio's limit is 40).
    if url not in _ENGINES:
        _ENGINES[url] = create_engine(
            url,
            pool_pre_ping=True,
            # The connection given back last is taken next: a few warm ones serve a steady
            # load, and the rest of the pool stays idle instead of taking turns.
            pool_use_lifo=True,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            connect_args={"connect_timeout": 5},
        )
    return _ENGINES[url]


def dispose_engines() -> None:
    """Close every pooled connection of this process (at shutdown)."""
    _MAKERS.clear()
    while _ENGINES:
        _ENGINES.popitem()[1].dispose()


def forget_inherited_connections() -> None:
    """In a forked child: drop the parent's pooled connections without closing them (they
    are the parent's sockets); the child opens its own."""
    for engine in _ENGINES.values():
        engine.dispose(close=False)


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    """The session maker bound to the engine for ``url`` (default: the configured database),
    made once: a sessionmaker defines a class of its own, too dear to make per request."""
    url = url or get_settings().database_url
    if url not in _MAKERS:
        _MAKERS[url] = sessionmaker(get_engine(url), expire_on_commit=False)
    return _MAKERS[url]


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
