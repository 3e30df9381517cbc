"""Jobs count the tries of planning and joining that died, as chunks count theirs, and say
whether a failure can be retried

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 03:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.add_column(
        "jobs",
        sa.Column("retryable", sa.Boolean(), nullable=False, server_default=sa.text("true")),
    )


def downgrade() -> None:
    op.drop_column("jobs", "retryable")
    op.drop_column("jobs", "attempts")
