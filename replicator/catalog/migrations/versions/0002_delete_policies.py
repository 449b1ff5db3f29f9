"""Delete policies: replicas retained by a route that never deletes, and deletions a route
delays until a due time.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

OLD_STATES = "state IN ('pending', 'replicated', 'failed', 'stale', 'deleted')"
STATES = (
    "state IN ('pending', 'replicated', 'failed', 'stale', 'deleted', 'retained', "
    "'delete_scheduled')"
)


def upgrade() -> None:
    # Batch mode: SQLite changes a CHECK constraint only by rebuilding the table.
    with op.batch_alter_table("replicas") as batch:
        batch.add_column(sa.Column("delete_due", sa.DateTime(timezone=True)))
        batch.drop_constraint("ck_replicas_state", type_="check")
        batch.create_check_constraint("ck_replicas_state", STATES)
    op.create_index("ix_replicas_state_due", "replicas", ["state", "delete_due"])


def downgrade() -> None:
    op.drop_index("ix_replicas_state_due", table_name="replicas")
    op.execute(
        "UPDATE replicas SET state = 'stale' WHERE state IN ('retained', 'delete_scheduled')"
    )
    with op.batch_alter_table("replicas") as batch:
        batch.drop_constraint("ck_replicas_state", type_="check")
        batch.create_check_constraint("ck_replicas_state", OLD_STATES)
        batch.drop_column("delete_due")
