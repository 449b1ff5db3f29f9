"""The initial catalog: datasets, locations, objects, replicas, high-water marks, uploads,
checkpoints.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision: str | None = None
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

STATES = "state IN ('pending', 'replicated', 'failed', 'stale', 'deleted')"
ROLES = "role IN ('source', 'replica')"


def _exact() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("name", _exact(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.UniqueConstraint("name", name="uq_datasets_name"),
    )
    op.create_table(
        "locations",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("dataset_id", sa.Integer, nullable=False),
        sa.Column("url", _exact(), nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("region", sa.Text),
        sa.Column("created_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_locations"),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name="fk_locations_dataset_id_datasets"
        ),
        sa.UniqueConstraint("url", name="uq_locations_url"),
        sa.CheckConstraint(ROLES, name="ck_locations_role"),
    )
    op.create_index("ix_locations_dataset_id", "locations", ["dataset_id"])
    op.create_table(
        "objects",
        sa.Column("dataset_id", sa.Integer, nullable=False),
        sa.Column("key", _exact(), nullable=False),
        sa.Column("source_location_id", sa.Integer, nullable=False),
        sa.Column("source_sequencer", _exact(), nullable=False),
        sa.Column("source_version", sa.Text),
        sa.Column("source_event_time", _time(), nullable=False),
        sa.Column("size", sa.BigInteger),
        sa.Column("etag", sa.Text),
        sa.Column("fingerprint", sa.Text),
        sa.Column("content_type", sa.Text),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("dataset_id", "key", name="pk_objects"),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name="fk_objects_dataset_id_datasets"
        ),
        sa.ForeignKeyConstraint(
            ["source_location_id"], ["locations.id"], name="fk_objects_source_location_id_locations"
        ),
    )
    op.create_table(
        "replicas",
        sa.Column("dataset_id", sa.Integer, nullable=False),
        sa.Column("key", _exact(), nullable=False),
        sa.Column("location_id", sa.Integer, nullable=False),
        sa.Column("source_location_id", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("source_sequencer", _exact(), nullable=False),
        sa.Column("source_version", sa.Text),
        sa.Column("source_event_time", _time(), nullable=False),
        sa.Column("source_size", sa.BigInteger),
        sa.Column("pending_since", _time()),
        sa.Column("version", sa.Text),
        sa.Column("etag", sa.Text),
        sa.Column("size", sa.BigInteger),
        sa.Column("fingerprint", sa.Text),
        sa.Column("checksums", sa.JSON),
        sa.Column("replicated_at", _time()),
        sa.Column("lag_seconds", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("dataset_id", "key", "location_id", name="pk_replicas"),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name="fk_replicas_dataset_id_datasets"
        ),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name="fk_replicas_location_id_locations"
        ),
        sa.ForeignKeyConstraint(
            ["source_location_id"],
            ["locations.id"],
            name="fk_replicas_source_location_id_locations",
        ),
        sa.CheckConstraint(STATES, name="ck_replicas_state"),
    )
    op.create_index(
        "ix_replicas_route_state", "replicas", ["location_id", "source_location_id", "state"]
    )
    op.create_index("ix_replicas_state_pending", "replicas", ["state", "pending_since"])
    op.create_index("ix_replicas_location_lag", "replicas", ["location_id", "state", "lag_seconds"])
    op.create_table(
        "high_water",
        sa.Column("source_url", _exact(), nullable=False),
        sa.Column("sequencer", _exact(), nullable=False),
        sa.Column("version", sa.Text),
        sa.Column("event_time", _time(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("source_url", name="pk_high_water"),
    )
    op.create_table(
        "uploads",
        sa.Column("dest_url", _exact(), nullable=False),
        sa.Column("upload_id", sa.Text, nullable=False),
        sa.Column("source_url", _exact(), nullable=False),
        sa.Column("source_version", sa.Text, nullable=False),
        sa.Column("part_size", sa.BigInteger, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("started_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("dest_url", name="pk_uploads"),
    )
    op.create_table(
        "upload_parts",
        sa.Column("dest_url", _exact(), nullable=False),
        sa.Column("upload_id", sa.Text, nullable=False),
        sa.Column("part_number", sa.Integer, nullable=False),
        sa.Column("token", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("checksums", sa.JSON, nullable=False),
        sa.Column("crc32c", sa.BigInteger, nullable=False),
        sa.Column("block_digests", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("dest_url", "upload_id", "part_number", name="pk_upload_parts"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("name", _exact(), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_checkpoints"),
    )


def downgrade() -> None:
    for table in (
        "checkpoints",
        "upload_parts",
        "uploads",
        "high_water",
        "replicas",
        "objects",
        "locations",
        "datasets",
    ):
        op.drop_table(table)
