"""Route controls: pauses (a route's deletions held back by its delete limit or an operator),
the fleet-wide count of deletions per route and minute, and the replica state of a deletion
held back by a pause.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision: str | None = "0002"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

OLD_STATES = (
    "state IN ('pending', 'replicated', 'failed', 'stale', 'deleted', 'retained', "
    "'delete_scheduled')"
)
STATES = (
    "state IN ('pending', 'replicated', 'failed', 'stale', 'deleted', 'retained', "
    "'delete_scheduled', 'delete_paused')"
)


def _exact() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.drop_constraint("ck_replicas_state", type_="check")
        batch.create_check_constraint("ck_replicas_state", STATES)
    op.create_table(
        "pauses",
        sa.Column("route", _exact(), nullable=False),
        sa.Column("destination", _exact(), nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("paused_by", sa.Text, nullable=False),
        sa.Column("paused_at", _time(), nullable=False),
        sa.Column("until", _time()),
        sa.CheckConstraint("scope IN ('deletes')", name="ck_pauses_scope"),
        sa.PrimaryKeyConstraint("route", "destination", "scope", name="pk_pauses"),
    )
    op.create_table(
        "delete_windows",
        sa.Column("route", _exact(), nullable=False),
        sa.Column("window_start", _time(), nullable=False),
        sa.Column("used", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("route", name="pk_delete_windows"),
    )


def downgrade() -> None:
    op.drop_table("delete_windows")
    op.drop_table("pauses")
    op.execute("UPDATE replicas SET state = 'stale' WHERE state = 'delete_paused'")
    with op.batch_alter_table("replicas") as batch:
        batch.drop_constraint("ck_replicas_state", type_="check")
        batch.create_check_constraint("ck_replicas_state", OLD_STATES)
