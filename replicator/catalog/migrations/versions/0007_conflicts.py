"""Conflicts of replication groups: a key written (or deleted) at two members before either
change was replicated; the loser of the group's conflict rule is recorded, never dropped
silently.

Revision ID: 0007_conflicts
Revises: 0006_costs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_conflicts"
down_revision: str | None = "0006_costs"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def _exact() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "conflicts",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("group_name", _exact(), nullable=False),
        sa.Column("key", _exact(), nullable=False),
        sa.Column("winner_member", _exact(), nullable=False),
        sa.Column("winner_version", _exact(), nullable=False),
        sa.Column("winner_time", _time(), nullable=False),
        sa.Column("loser_member", _exact(), nullable=False),
        sa.Column("loser_version", _exact(), nullable=False),
        sa.Column("loser_time", _time(), nullable=False),
        sa.Column("detected_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conflicts"),
        sa.UniqueConstraint(
            "group_name",
            "key",
            "winner_member",
            "winner_version",
            "loser_member",
            "loser_version",
            name="uq_conflicts_sides",
        ),
    )
    op.create_index("ix_conflicts_group", "conflicts", ["group_name", "detected_at"])


def downgrade() -> None:
    op.drop_index("ix_conflicts_group", table_name="conflicts")
    op.drop_table("conflicts")
