"""Cost accounting: requests, bytes and estimated cost per day, route, destination and store.

Revision ID: 0006_costs
Revises: 0004_controls
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_costs"
down_revision: str | None = "0004_controls"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

COUNTS = (
    "get_requests",
    "put_requests",
    "list_requests",
    "head_requests",
    "delete_requests",
    "copy_requests",
    "bytes_read",
    "bytes_written",
    "egress_bytes",
)


def _exact() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "route_costs",
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("route", _exact(), nullable=False),
        sa.Column("destination", _exact(), nullable=False),
        sa.Column("store", _exact(), nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in COUNTS),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("day", "route", "destination", "store", name="pk_route_costs"),
    )


def downgrade() -> None:
    op.drop_table("route_costs")
