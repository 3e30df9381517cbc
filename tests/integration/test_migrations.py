"""The schema changes only through migrations, which go up, down and up again cleanly."""

from __future__ import annotations

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from cli import migrate
from cli.local_services import LocalStack
from shared.models import Base


def _fresh_database(stack: LocalStack, name: str) -> str:
    dsn = f"host=127.0.0.1 port={stack.postgres.port} user=postgres dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:{stack.postgres.port}/{name}"


def test_upgrade_downgrade_upgrade_and_models_match(stack: LocalStack) -> None:
    url = _fresh_database(stack, "migration_test")
    engine = create_engine(url)
    try:
        migrate.upgrade(url)
        assert {"jobs", "chunks", "api_keys"} <= set(inspect(engine).get_table_names())
        migrate.downgrade(url, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(url)
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == [], f"models and migrations disagree: {diff}"
    finally:
        engine.dispose()
