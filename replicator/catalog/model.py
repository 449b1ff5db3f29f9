"""Values the catalog takes and returns; no I/O here."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from replicator.engine.costs import Usage, UsageKey
from replicator.engine.units import parse_duration
from replicator.errors import ReplicatorError, Unavailable

if TYPE_CHECKING:
    from replicator.engine.transfer import CopyResult
    from replicator.pipeline.events import ChangeEvent


# The embedded catalog a single machine uses when no catalog URL is given.
DEFAULT_CATALOG_URL = f"sqlite:///{Path.home() / '.local' / 'state' / 'replicator' / 'catalog.db'}"


class CatalogError(ReplicatorError):
    """A catalog request that cannot be served as asked (unknown names, bad URLs)."""


class CatalogUnavailable(CatalogError, Unavailable):
    """The catalog database cannot be reached or is locked for now (a restart, a failover, a
    SQLite writer holding the lock past the busy timeout); retrying succeeds once it is back."""


class UnknownDataset(CatalogError):
    pass


class UnknownLocation(CatalogError):
    pass


class Role(enum.StrEnum):
    SOURCE = "source"
    REPLICA = "replica"


class ReplicaState(enum.StrEnum):
    """Where one replica stands against its source.

    ``pending``: a change was accepted and is not yet applied; ``failed``: the last attempt
    failed (it stays pending work); ``stale``: found behind its source without queued work (by a
    reconciliation); ``replicated`` and ``deleted``: the change is applied and verified.

    A source deletion is applied as its route's delete policy says: ``deleted`` (propagated),
    ``retained`` (the policy keeps replicas), or ``delete_scheduled`` (the policy delays the
    deletion; the row's ``delete_due`` says when, and the deletion then makes it ``deleted``).
    ``delete_paused``: a deletion the route's delete limit held back (its deletions are paused);
    still to do, so it holds the watermark, and the deletion sweeper carries it out once the
    route's deletions are resumed.

    ``held``: a change whose Kafka record was done without applying it there: recorded while
    replication to its destination was paused (the record's offset moved on), or sent back by
    an operator (``replicator failed retry``). Still to do (pending work, it holds the
    watermark) until applied; once its destination is not paused, a daemon publishes it to
    the changes topic again and the owner of its key's partition applies it
    (``replicator.daemon.held``).
    """

    PENDING = "pending"
    REPLICATED = "replicated"
    FAILED = "failed"
    STALE = "stale"
    DELETED = "deleted"
    RETAINED = "retained"
    DELETE_SCHEDULED = "delete_scheduled"
    DELETE_PAUSED = "delete_paused"
    HELD = "held"


APPLIED = (
    ReplicaState.REPLICATED,
    ReplicaState.DELETED,
    ReplicaState.RETAINED,
    ReplicaState.DELETE_SCHEDULED,
)
UNAPPLIED = (
    ReplicaState.PENDING,
    ReplicaState.FAILED,
    ReplicaState.STALE,
    ReplicaState.DELETE_PAUSED,
    ReplicaState.HELD,
)
# Deletions the sweeper carries out when due: scheduled by a delayed policy, or paused.
SWEPT = (ReplicaState.DELETE_SCHEDULED, ReplicaState.DELETE_PAUSED)


class Acceptance(enum.StrEnum):
    """What the per-key high-water made of a change.

    ``new``: newer than anything seen for the key; ``duplicate``: the newest change seen, again
    (redoing it is safe: nothing rolls back, and the copy skips what is already there);
    ``stale``: older than the newest seen: do nothing.
    """

    NEW = "new"
    DUPLICATE = "duplicate"
    STALE = "stale"


@dataclass(frozen=True)
class LocationSpec:
    """A location to register: a store URL prefix ending in '/', its role and region label."""

    url: str
    role: Role = Role.REPLICA
    region: str | None = None


@dataclass(frozen=True)
class Location:
    id: int
    dataset: str
    url: str
    role: Role
    region: str | None

    @property
    def store(self) -> str:
        """The store kind: s3, gs, az, file or mem."""
        return self.url.partition("://")[0]

    def matches(self, preference: str) -> bool:
        """Whether ``preference`` names this location's region or store kind."""
        return preference in (self.region, self.store)


@dataclass(frozen=True)
class Dataset:
    """A logical data set: the same keys under several store locations."""

    id: int
    name: str
    locations: tuple[Location, ...]

    @property
    def sources(self) -> tuple[Location, ...]:
        return tuple(loc for loc in self.locations if loc.role is Role.SOURCE)

    @property
    def replicas(self) -> tuple[Location, ...]:
        return tuple(loc for loc in self.locations if loc.role is Role.REPLICA)

    def location(self, url: str) -> Location:
        for loc in self.locations:
            if loc.url == url:
                return loc
        raise UnknownLocation(f"{url} is not a location of dataset {self.name}")


@dataclass(frozen=True)
class Change:
    """A change at a source object, as its store's notification (or a listing) reported it.

    ``sequencer`` orders the changes of one key (see ``catalog.sequencer``; empty: ordered by
    event time); ``event_time`` is the store's own time of the change, from which replication
    lag is measured.
    """

    source_url: str
    sequencer: str
    event_time: datetime
    version: str | None = None
    size: int | None = None
    etag: str | None = None
    deleted: bool = False
    # A deletion a reconciliation inferred from a listing (the source gone, a replica of it
    # not): ``event_time`` is the listing's, the deletion happened at some moment before.
    listed_deletion: bool = False

    @classmethod
    def from_event(cls, event: ChangeEvent) -> Change:
        return cls(
            source_url=event.source_url,
            sequencer=event.sequencer,
            event_time=event.event_time,
            version=event.version,
            size=event.size,
            etag=event.etag,
            deleted=event.kind == "delete",
            listed_deletion=event.kind == "delete" and event.origin == "reconcile",
        )


@dataclass(frozen=True)
class Replica:
    """What a verified write left at a destination, as the destination store reported it."""

    source_version: str
    size: int
    version: str | None
    etag: str | None
    fingerprint: str | None
    replicated_time: datetime
    checksums: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    #: How the copy wrote it (``replicas.written_as``); None when it found it written.
    written_as: str | None = None

    @classmethod
    def from_copy(cls, result: CopyResult, *, replicated_time: datetime | None = None) -> Replica:
        """From the copy engine's result, which exists only once the write was verified.

        The replicated time is the destination store's own modification time, so that lag is
        a difference of two store clocks; the local clock stands in only where a store reports
        no time (and for a copy skipped because the replica was already there, the store's time
        is when it was written).
        """
        dest = result.destination
        if dest is None:
            raise CatalogError(f"copy of {result.source.url} left no verified destination")
        when = replicated_time or dest.last_modified or datetime.now(UTC)
        return cls(
            source_version=result.source_version,
            size=dest.size,
            version=dest.version,
            etag=dest.etag,
            fingerprint=result.fingerprint,
            replicated_time=when,
            checksums={str(kind): value for kind, value in dest.checksums.items()},
            content_type=result.source.attributes.content_type,
            written_as=(
                "ordered_upload"
                if result.ordered_upload
                else result.strategy.value
                if result.strategy
                else None
            ),
        )


@dataclass(frozen=True)
class LocationStatus:
    """One location of one object, with how fresh it is."""

    url: str
    location: str
    role: Role
    region: str | None
    state: str
    fresh: bool
    version: str | None
    etag: str | None
    size: int | None
    replicated_at: datetime | None
    lag_seconds: float | None
    attempts: int
    last_error: str | None
    written_as: str | None = None


@dataclass(frozen=True)
class ObjectEntry:
    dataset: str
    key: str
    size: int | None
    fingerprint: str | None
    content_type: str | None
    source_version: str | None
    source_event_time: datetime
    deleted: bool
    locations: tuple[LocationStatus, ...]


@dataclass(frozen=True)
class ScheduledDelete:
    """A replica whose deletion waits until ``due``: put off by a route's delayed delete
    policy (``delete_scheduled``), or held back while the route's deletions are paused
    (``delete_paused``).

    ``sequencer`` identifies the deletion change, so that settling it does nothing once a newer
    change of the key has replaced it. ``replica_etag`` is the etag of the replica the catalog
    recorded before the deletion (None if none was recorded): only that object is deleted.
    """

    dataset: str
    key: str
    source_url: str
    location: str
    sequencer: str
    due: datetime
    state: ReplicaState = ReplicaState.DELETE_SCHEDULED
    replica_etag: str | None = None

    @property
    def url(self) -> str:
        return self.location + self.key


@dataclass(frozen=True)
class StaleReplica:
    dataset: str
    key: str
    url: str
    route: str
    state: ReplicaState
    source_version: str | None
    pending_since: datetime | None
    attempts: int
    last_error: str | None


class PauseScope(enum.StrEnum):
    """What a pause holds back: a route's deletions (the delete limit, or an operator), or
    all replication to a route's destinations (an operator)."""

    DELETES = "deletes"
    REPLICATION = "replication"


@dataclass(frozen=True)
class Pause:
    """A route's (or one destination's: ``destination`` not empty) work held back until an
    operator resumes it, or until ``until``."""

    route: str
    destination: str
    scope: PauseScope
    reason: str
    paused_by: str
    paused_at: datetime
    until: datetime | None

    def active(self, now: datetime) -> bool:
        return self.until is None or self.until > now

    def as_dict(self) -> dict[str, object]:
        return {
            "route": self.route,
            "destination": self.destination or None,
            "scope": str(self.scope),
            "reason": self.reason,
            "paused_by": self.paused_by,
            "paused_at": self.paused_at.isoformat(),
            "until": self.until.isoformat() if self.until else None,
        }


@dataclass(frozen=True)
class HeldChange:
    """A change still to apply at one destination, from its catalog row (state ``held``, or
    ``failed`` in the failed list): enough to publish its change event again.

    ``sequencer`` is the stored one (``catalog.sequencer.change_key`` maps it to itself), so
    ``change`` identifies the very change of the row.
    """

    dataset: str
    key: str
    source_url: str
    location: str
    sequencer: str
    event_time: datetime
    version: str | None
    size: int | None
    deleted: bool
    state: ReplicaState
    attempts: int
    last_error: str | None
    first_failed_at: datetime | None = None
    last_failed_at: datetime | None = None

    @property
    def url(self) -> str:
        return self.location + self.key

    def as_dict(self) -> dict[str, object]:
        return {
            "route": self.dataset,
            "key": self.key,
            "version": self.version,
            "source": self.source_url,
            "destination": self.location,
            "state": str(self.state),
            "reason": self.last_error,
            "attempts": self.attempts,
            "first_failure": _iso(self.first_failed_at),
            "last_failure": _iso(self.last_failed_at),
        }

    @property
    def change(self) -> Change:
        return Change(
            source_url=self.source_url,
            sequencer=self.sequencer,
            event_time=self.event_time,
            version=self.version,
            size=self.size,
            deleted=self.deleted,
        )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


@dataclass(frozen=True)
class CostRow:
    """What one store served for one route and destination on one day (UTC)."""

    day: date
    key: UsageKey
    usage: Usage
    cost_usd: float

    def as_dict(self) -> dict[str, object]:
        return {
            "day": self.day.isoformat(),
            "route": self.key.route,
            "destination": self.key.destination,
            "store": self.key.store,
            **self.usage.as_dict(),
            "cost_usd": self.cost_usd,
        }


def pause_end(until: str | None, for_: str | None, now: datetime | None = None) -> datetime | None:
    """When a pause ends by itself: at ``until`` (ISO 8601; UTC unless it names a zone), or
    ``for_`` (a duration such as 2h) from ``now``; None: when resumed by hand."""
    if until and for_:
        raise CatalogError("give an end time or a duration, not both")
    if for_:
        return (now or datetime.now(UTC)) + parse_duration(for_)
    if not until:
        return None
    try:
        moment = datetime.fromisoformat(until)
    except ValueError:
        raise CatalogError(f"{until!r} is not an ISO 8601 time (e.g. 2026-12-01T06:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
