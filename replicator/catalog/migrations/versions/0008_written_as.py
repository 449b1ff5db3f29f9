"""How each replica was written (``replicas.written_as``): server-side, a single put, parts
joined by the store (a GCS composite) or parts in order into one upload (an ordinary object).

Revision ID: 0008_written_as
Revises: 0007_conflicts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_written_as"
down_revision: str | None = "0007_conflicts"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    op.add_column("replicas", sa.Column("written_as", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.drop_column("written_as")
