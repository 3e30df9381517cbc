"""Indexes for cheap polls and lists: a customer's jobs newest first (with or without a
status filter) and the chunks finished lately, which pace the ETAs; the index on the key
alone is the new one's first column, so it goes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_api_key_id_created_at", "jobs", ["api_key_id", "created_at", "id"], unique=False
    )
    op.create_index(
        "ix_jobs_api_key_id_status_created_at",
        "jobs",
        ["api_key_id", "status", "created_at", "id"],
        unique=False,
    )
    op.drop_index("ix_jobs_api_key_id", table_name="jobs")
    op.create_index(
        "ix_chunks_status_finished_at", "chunks", ["status", "finished_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_chunks_status_finished_at", table_name="chunks")
    op.create_index("ix_jobs_api_key_id", "jobs", ["api_key_id"], unique=False)
    op.drop_index("ix_jobs_api_key_id_status_created_at", table_name="jobs")
    op.drop_index("ix_jobs_api_key_id_created_at", table_name="jobs")
