"""Reconciliation: leases (one daemon of the group reconciles at a time) and the findings of
every reconciliation run.

Revision ID: 0004_reconcile
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_reconcile"
down_revision: str | None = "0003"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

COUNTS = ("compared", "in_sync", "missing", "different", "extra", "repairs", "failed")


def _exact() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", _exact(), nullable=False),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("expires_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )
    op.create_table(
        "reconcile_runs",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("route", _exact(), nullable=False),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("started_at", _time(), nullable=False),
        sa.Column("finished_at", _time(), nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in COUNTS),
        sa.Column("error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_reconcile_runs"),
    )
    op.create_index("ix_reconcile_runs_route", "reconcile_runs", ["route", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_reconcile_runs_route", table_name="reconcile_runs")
    op.drop_table("reconcile_runs")
    op.drop_table("leases")
