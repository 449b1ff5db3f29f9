"""The catalog's tables (SQLAlchemy Core), one schema for SQLite and PostgreSQL.

Keys, URLs and sequencers are compared byte for byte: on PostgreSQL their columns use the "C"
collation so that ordering, prefix ranges and sequencer comparisons agree with SQLite's binary
comparison. Times are timezone-aware UTC on the way in and out of both databases.

Rows are identified by natural keys (dataset id + object key + location id) so that every write
is one upsert, without looking an id up first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects import postgresql

from replicator.catalog.model import PauseScope, ReplicaState, Role

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


def exact_text() -> Text:
    """Text compared byte for byte on both databases."""
    return Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


class Timestamp(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime. SQLite keeps no zone, so it is stored as naive UTC there
    (in one fixed text format, so that text comparison is time comparison)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: catalog times must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {value!r}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


datasets = Table(
    "datasets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", exact_text(), nullable=False, unique=True),
    Column("created_at", Timestamp, nullable=False),
)

locations = Table(
    "locations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False, index=True),
    Column("url", exact_text(), nullable=False, unique=True),
    Column("role", Text, nullable=False),
    Column("region", Text),
    Column("created_at", Timestamp, nullable=False),
    CheckConstraint(_one_of("role", tuple(r.value for r in Role)), name="role"),
)

objects = Table(
    "objects",
    metadata,
    Column("dataset_id", Integer, ForeignKey("datasets.id"), primary_key=True),
    Column("key", exact_text(), primary_key=True),
    # Where the newest known change happened, and what it was.
    Column("source_location_id", Integer, ForeignKey("locations.id"), nullable=False),
    Column("source_sequencer", exact_text(), nullable=False),
    Column("source_version", Text),
    Column("source_event_time", Timestamp, nullable=False),
    Column("size", BigInteger),
    Column("etag", Text),
    Column("fingerprint", Text),
    Column("content_type", Text),
    Column("deleted", Boolean, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

replicas = Table(
    "replicas",
    metadata,
    Column("dataset_id", Integer, ForeignKey("datasets.id"), primary_key=True),
    Column("key", exact_text(), primary_key=True),
    Column("location_id", Integer, ForeignKey("locations.id"), primary_key=True),
    Column("source_location_id", Integer, ForeignKey("locations.id"), nullable=False),
    Column("state", Text, nullable=False),
    # The source change this row is about: the one replicated, or the one still to replicate.
    Column("source_sequencer", exact_text(), nullable=False),
    Column("source_version", Text),
    Column("source_event_time", Timestamp, nullable=False),
    Column("source_size", BigInteger),
    # Event time of the oldest source change not yet applied here (NULL once applied): a
    # change superseded before it was replicated keeps the watermark from passing it.
    Column("pending_since", Timestamp),
    # What the destination holds, as reported by the store after a verified write.
    Column("version", Text),
    Column("etag", Text),
    Column("size", BigInteger),
    Column("fingerprint", Text),
    Column("checksums", JSON),
    # How the copy wrote it: server_side, single, multipart (parts joined by the store:
    # a GCS composite) or ordered_upload (parts in order into one upload: an ordinary object).
    Column("written_as", Text),
    Column("replicated_at", Timestamp),
    Column("lag_seconds", Float),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("updated_at", Timestamp, nullable=False),
    # When a delayed deletion falls due (state delete_scheduled only).
    Column("delete_due", Timestamp),
    # A held change is taken by one daemon until then (a lease: one that dies leaves it to
    # the others), or, after a failed try, not taken again before then (backoff).
    Column("claimed_until", Timestamp),
    # The first failed attempt at the row's change (NULL once applied, or before any failure).
    Column("first_failed_at", Timestamp),
    CheckConstraint(_one_of("state", tuple(s.value for s in ReplicaState)), name="state"),
    Index("ix_replicas_route_state", "location_id", "source_location_id", "state"),
    Index("ix_replicas_state_pending", "state", "pending_since"),
    Index("ix_replicas_location_lag", "location_id", "state", "lag_seconds"),
    Index("ix_replicas_state_due", "state", "delete_due"),
)

high_water = Table(
    "high_water",
    metadata,
    Column("source_url", exact_text(), primary_key=True),
    Column("sequencer", exact_text(), nullable=False),
    Column("version", Text),
    Column("event_time", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

uploads = Table(
    "uploads",
    metadata,
    Column("dest_url", exact_text(), primary_key=True),
    Column("upload_id", Text, nullable=False),
    Column("source_url", exact_text(), nullable=False),
    Column("source_version", Text, nullable=False),
    Column("part_size", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("started_at", Timestamp, nullable=False),
    # A striped upload whose part tasks are on the parts topic (never published twice).
    Column("parts_published", Boolean, nullable=False, default=False, server_default=false()),
    # Set when the upload was stopped for every daemon working on it (``Halt``): why, in words.
    Column("halted", Text),
    Column("halted_because", Text),
)

upload_parts = Table(
    "upload_parts",
    metadata,
    Column("dest_url", exact_text(), primary_key=True),
    Column("upload_id", Text, primary_key=True),
    Column("part_number", Integer, primary_key=True),
    Column("token", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("checksums", JSON, nullable=False),
    Column("crc32c", BigInteger, nullable=False),
    # [[block index, hex digest], ...]: enough to finish the fingerprint without re-reading.
    Column("block_digests", JSON, nullable=False),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("name", exact_text(), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

pauses = Table(
    "pauses",
    metadata,
    Column("route", exact_text(), primary_key=True),
    # '' for every destination of the route.
    Column("destination", exact_text(), primary_key=True),
    Column("scope", Text, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("paused_by", Text, nullable=False),
    Column("paused_at", Timestamp, nullable=False),
    Column("until", Timestamp),
    CheckConstraint(_one_of("scope", tuple(s.value for s in PauseScope)), name="scope"),
)

# Deletions per route in the current minute, shared by every daemon of the fleet.
delete_windows = Table(
    "delete_windows",
    metadata,
    Column("route", exact_text(), primary_key=True),
    Column("window_start", Timestamp, nullable=False),
    Column("used", Integer, nullable=False),
)

# One daemon of the group at a time does what a lease is named for (the periodic
# reconciliation): it holds the row until ``expires_at`` and renews it while it works.
leases = Table(
    "leases",
    metadata,
    Column("name", exact_text(), primary_key=True),
    Column("holder", Text, nullable=False),
    Column("expires_at", Timestamp, nullable=False),
)

# What each reconciliation of a route found (drift by kind) and repaired.
reconcile_runs = Table(
    "reconcile_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("route", exact_text(), nullable=False),
    Column("holder", Text, nullable=False),
    Column("started_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp, nullable=False),
    *(
        Column(name, BigInteger, nullable=False)
        for name in ("compared", "in_sync", "missing", "different", "extra", "repairs", "failed")
    ),
    Column("error", Text),
    Index("ix_reconcile_runs_route", "route", "started_at"),
)

# The requests and bytes the stores served each day (UTC) per route, destination ("" for the
# route's work as a whole) and store location, and their estimated cost with the prices in
# force when they were counted. Daemons add their counts in batches (``CostRecords``).
COST_COUNTS = (
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
route_costs = Table(
    "route_costs",
    metadata,
    Column("day", Date, primary_key=True),
    Column("route", exact_text(), primary_key=True),
    Column("destination", exact_text(), primary_key=True),
    Column("store", exact_text(), primary_key=True),
    *(Column(name, BigInteger, nullable=False) for name in COST_COUNTS),
    Column("cost_usd", Float, nullable=False),
)

# Conflicts of replication groups: the loser of each (a deletion's version is '').
conflicts = Table(
    "conflicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("group_name", exact_text(), nullable=False),
    Column("key", exact_text(), nullable=False),
    Column("winner_member", exact_text(), nullable=False),
    Column("winner_version", exact_text(), nullable=False),
    Column("winner_time", Timestamp, nullable=False),
    Column("loser_member", exact_text(), nullable=False),
    Column("loser_version", exact_text(), nullable=False),
    Column("loser_time", Timestamp, nullable=False),
    Column("detected_at", Timestamp, nullable=False),
    UniqueConstraint(
        "group_name",
        "key",
        "winner_member",
        "winner_version",
        "loser_member",
        "loser_version",
        name="uq_conflicts_sides",
    ),
    Index("ix_conflicts_group", "group_name", "detected_at"),
)

# Deletions a replication group made at a member (``url``: the member object's URL): its
# store notifies each back as a deletion of the member's own users, at the moment it was
# made, which must not be taken for one (``replicator.daemon.groups``).
group_deletions = Table(
    "group_deletions",
    metadata,
    Column("url", exact_text(), primary_key=True),
    Column("deleted_at", Timestamp, primary_key=True),
)
