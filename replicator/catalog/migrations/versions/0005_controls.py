"""Operator controls: pauses of a route's (or one destination's) replication, changes held in
the catalog to apply from there (paused, or sent back from the failed list), with a lease and
the first failure of a change.

Revision ID: 0004_controls
Revises: 0004_reconcile
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_controls"
down_revision: str | None = "0004_reconcile"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

OLD_STATES = (
    "state IN ('pending', 'replicated', 'failed', 'stale', 'deleted', 'retained', "
    "'delete_scheduled', 'delete_paused')"
)
STATES = (
    "state IN ('pending', 'replicated', 'failed', 'stale', 'deleted', 'retained', "
    "'delete_scheduled', 'delete_paused', 'held')"
)
OLD_SCOPES = "scope IN ('deletes')"
SCOPES = "scope IN ('deletes', 'replication')"


def upgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.drop_constraint("ck_replicas_state", type_="check")
        batch.create_check_constraint("ck_replicas_state", STATES)
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("first_failed_at", sa.DateTime(timezone=True)))
    with op.batch_alter_table("pauses") as batch:
        batch.drop_constraint("ck_pauses_scope", type_="check")
        batch.create_check_constraint("ck_pauses_scope", SCOPES)


def downgrade() -> None:
    op.execute("DELETE FROM pauses WHERE scope = 'replication'")
    with op.batch_alter_table("pauses") as batch:
        batch.drop_constraint("ck_pauses_scope", type_="check")
        batch.create_check_constraint("ck_pauses_scope", OLD_SCOPES)
    # A held change is pending work that Kafka no longer carries: a reconciliation finds it.
    op.execute("UPDATE replicas SET state = 'stale' WHERE state = 'held'")
    with op.batch_alter_table("replicas") as batch:
        batch.drop_column("first_failed_at")
        batch.drop_column("claimed_until")
        batch.drop_constraint("ck_replicas_state", type_="check")
        batch.create_check_constraint("ck_replicas_state", OLD_STATES)
