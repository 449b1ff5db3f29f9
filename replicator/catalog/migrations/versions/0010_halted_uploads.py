"""Striped uploads, whose parts every daemon of the group copies: whether their part tasks
were published (``uploads.parts_published``: a coordinator resuming one does not publish them
again), and whether a daemon stopped one for the whole group (``uploads.halted``,
``uploads.halted_because``: a part found the source changed, or failed for good).

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
    op.add_column(
        "uploads",
        sa.Column("parts_published", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.add_column("uploads", sa.Column("halted", sa.Text))
    op.add_column("uploads", sa.Column("halted_because", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("halted_because")
        batch.drop_column("halted")
        batch.drop_column("parts_published")
