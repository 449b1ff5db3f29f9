"""Deletions a replication group made at its members: each member's store notifies them back
as its own users' deletions, which the group must recognise as echoes.

Revision ID: 0009_group_deletions
Revises: 0008_written_as
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009_group_deletions"
down_revision: str | None = "0008_written_as"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "group_deletions",
        sa.Column(
            "url",
            sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("url", "deleted_at", name="pk_group_deletions"),
    )


def downgrade() -> None:
    op.drop_table("group_deletions")
