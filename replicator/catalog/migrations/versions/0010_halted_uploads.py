"""Uploads a daemon stopped for the whole fleet (``uploads.halted``, ``uploads.halted_because``):
a striped upload's parts are copied by every daemon of the group, and the one whose part finds
the source changed, or fails for good, says so here for the daemon completing it.

Revision ID: 0010_halted_uploads
Revises: 0009_group_deletions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_halted_uploads"
down_revision: str | None = "0009_group_deletions"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    op.add_column("uploads", sa.Column("halted", sa.Text))
    op.add_column("uploads", sa.Column("halted_because", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("halted_because")
        batch.drop_column("halted")
