"""What a reconciliation does about a key not in sync (``engine.Actions``):

* ``CopyActions``: copy (or delete) in process with the copy engine, passing what the
  listings showed so that no end is HEADed needlessly (``cp -r``; no catalog);
* ``ApplierActions``: apply a listing event through the daemon's applier: the catalog records
  it, a key whose high-water came from a notification is repaired (``Applier``), and a
  deletion follows the route's delete policy and limit (backfill, verify --repair, the
  daemon's reconciliation);
* ``PublishActions``: publish that event to Kafka for the daemon fleet, recorded as accepted
  first (``--via-kafka``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from connectors.base import NotFound, ObjectStore, PreconditionFailed
from replicator.daemon.listed import Listed
from replicator.daemon.reconcile.engine import Drift
from replicator.engine.compare import Verdict
from replicator.engine.metadata import replica_source
from replicator.engine.transfer import ABSENT, Copier
from replicator.pipeline.events import ChangeEvent, scan_deletion_event, scan_event

if TYPE_CHECKING:
    # Types only: the applier brings the catalog, the publisher Kafka; cp -r needs neither.
    from replicator.daemon.applier import Applier
    from replicator.pipeline.ingest.publisher import Publisher


def drift_event(source: ObjectStore, drift: Drift) -> ChangeEvent:
    """The change event that makes the destinations catch up with what the source listing
    showed of the drifted key."""
    src = drift.pair.source
    if src is None:
        return scan_deletion_event(source.url_for(drift.pair.key))
    return scan_event(src.url, src.size, src.etag, src.version, src.last_modified)


class CopyActions:
    """Copies and deletions in process, by the copy engine alone."""

    def __init__(self, copier: Copier, source: ObjectStore, dests: Sequence[ObjectStore]) -> None:
        self.copier = copier
        self.source = source
        self.dests = list(dests)

    async def repair(self, drift: Drift) -> list[str]:
        pair = drift.pair
        outcomes: list[str] = []
        for dest, shown, found in zip(self.dests, pair.dests, drift.verdicts, strict=True):
            if found is Verdict.SAME:
                continue
            if pair.source is None:
                outcomes.append(await self._delete(dest, pair.key))
                continue
            result = await self.copier.copy(
                self.source,
                pair.key,
                dest,
                pair.key,
                observed=pair.source,
                dest_observed=ABSENT if shown is None else shown,
            )
            outcomes.append(result.status)
        return outcomes

    async def _delete(self, dest: ObjectStore, key: str) -> str:
        """Delete the replica at ``key`` if it carries our mark naming the source object (and
        is still the object checked: If-Match)."""
        try:
            existing = await self.copier.retry.run(lambda: dest.head(key), what="head replica")
        except NotFound:
            return "skipped"
        if replica_source(existing.attributes.user_metadata) != self.source.url_for(key):
            return "not_ours"
        try:
            await self.copier.retry.run(
                lambda: dest.delete(key, if_match=existing.etag), what="delete replica"
            )
        except (NotFound, PreconditionFailed):
            return "skipped"  # gone already, or written again since: not ours to delete
        return "deleted"


class ApplierActions:
    """Each drifted key becomes a listing event applied by the daemon's applier, with what
    the listings showed of it (so neither end is HEADed again): ``dest_urls`` are the route's
    destination locations, in the order the reconciler compares them."""

    def __init__(
        self, applier: Applier, source: ObjectStore, dest_urls: Sequence[str] = ()
    ) -> None:
        self.applier = applier
        self.source = source
        self.dest_urls = list(dest_urls)

    async def repair(self, drift: Drift) -> list[str]:
        pair = drift.pair
        listed = None
        if pair.source is not None:
            shown = dict(zip(self.dest_urls, pair.dests, strict=True)) if self.dest_urls else {}
            listed = Listed(pair.source, shown)
        return await self.applier(drift_event(self.source, drift), listed)


class PublishActions:
    """Each drifted key becomes a listing event published for the daemon fleet."""

    def __init__(self, publisher: Publisher, source: ObjectStore) -> None:
        self.publisher = publisher
        self.source = source

    async def repair(self, drift: Drift) -> list[str]:
        published = await self.publisher.publish([drift_event(self.source, drift)])
        return ["published"] * published
