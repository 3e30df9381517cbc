"""The reads clients poll — the key a request is signed with, a job, a page of jobs — made on
the event loop with psycopg's async connections: no worker thread, no ORM session.

Polls and lists are most of the API's traffic, and as ORM reads in a worker thread most of
their CPU went to SQLAlchemy's execution layer and to handing the interpreter lock between
threads. Here the statements are still SQLAlchemy Core ones, defined once beside the services
that show their rows, compiled once to SQL (``compiled``); their rows come back as named
tuples. Everything that writes keeps the sync sessions (``shared.db``).

Each API process opens one ``ReadPool`` with the app (``api.main``) and closes it at shutdown.
A read on a connection the database dropped (it restarted) runs again on a live one; no
connection free within ``TIMEOUT_S`` is a 503, as is the database down.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import make_url
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.sql import ClauseElement

# Waiting for a free connection, or for one to open.
TIMEOUT_S = 5.0
_DIALECT = PGDialect_psycopg()
T = TypeVar("T")


@dataclass(frozen=True)
class Compiled:
    """A statement as the driver runs it: its SQL (``%(name)s`` placeholders) and the
    constants the statement itself binds (a status it filters on), as the database stores
    them."""

    sql: str
    constants: dict[str, Any]


def compiled(statement: ClauseElement) -> Compiled:
    """``statement`` compiled once for psycopg; its free parameters are named ``bindparam``s,
    given to ``fetch`` by name."""
    done = statement.compile(dialect=_DIALECT)
    # Our enums are stored by value (shared.models._enum).
    constants = {
        name: value.value if isinstance(value, enum.Enum) else value
        for name, value in done.params.items()
        if value is not None
    }
    return Compiled(str(done), constants)


async def fetch(conn: AsyncConnection[Any], statement: Compiled, **params: object) -> list[Any]:
    """The rows ``statement`` finds with ``params``, as named tuples of its columns."""
    cursor = await conn.execute(statement.sql, {**statement.constants, **params})
    return await cursor.fetchall()


def conninfo(database_url: str) -> str:
    """libpq's connection string for a SQLAlchemy URL (``postgresql+psycopg://…``)."""
    url = make_url(database_url)
    return make_conninfo(
        host=url.host or "",
        port=url.port or "",
        user=url.username or "",
        password=url.password or "",
        dbname=url.database or "",
        **{k: str(v) for k, v in url.query.items()},
    )


class ReadPool:
    """An API process's async connections for the polled reads (autocommit: a read is its
    statements alone, without BEGIN and ROLLBACK around them)."""

    def __init__(self, database_url: str, size: int) -> None:
        self._pool = AsyncConnectionPool(
            conninfo(database_url),
            min_size=1,
            max_size=size,
            open=False,
            timeout=TIMEOUT_S,
            kwargs={"autocommit": True, "connect_timeout": int(TIMEOUT_S)},
            configure=_configure,
            name="lumiere-reads",
        )

    async def open(self) -> None:
        """Start connecting; the API starts even while the database is down."""
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    async def run(self, work: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """``await work(conn)`` on a pooled connection. Connections are not checked before
        they are lent (a round trip a request); one found dead instead (the database
        restarted since it opened) makes the pool check its idle ones, and ``work`` runs
        once more on a live one."""
        lent: AsyncConnection[Any] | None = None
        try:
            async with self._pool.connection() as lent:
                return await work(lent)
        except psycopg.OperationalError:
            if lent is None or not lent.broken:
                raise
        await self._pool.check()
        async with self._pool.connection() as conn:
            return await work(conn)


async def _configure(conn: AsyncConnection[Any]) -> None:
    """A new connection's rows come as named tuples (``row.status``)."""
    conn.row_factory = namedtuple_row
