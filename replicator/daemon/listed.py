"""What a reconciliation's listings showed of one key (``Listed``), handed with its event to the
daemon's applier in place of HEADs. A module of its own so that the reconciliation's actions
name it without importing the applier and the catalog behind it (``cp -r`` uses neither)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from connectors.base import ObjectMeta
from replicator.engine.transfer import ABSENT, Absent


@dataclass(frozen=True)
class Listed:
    """What listings showed of an event's key a moment ago (a reconciliation's compare): the
    source object, and each destination location's object by its URL (None: absent there).

    The applier takes it instead of HEADs of its own: the copy's read is pinned to the listed
    version (If-Match), so a source changed since is found and read afresh as usual, and a
    destination listed absent or different is written whatever it holds now, as a HEAD a
    moment earlier would have let it. A stale event is never decided on it (see
    ``Applier.__call__``)."""

    source: ObjectMeta
    dests: Mapping[str, ObjectMeta | None] = field(default_factory=dict)

    def dest(self, location: str) -> ObjectMeta | Absent | None:
        """What the listing showed at ``location`` (None: not listed there)."""
        if location not in self.dests:
            return None
        shown = self.dests[location]
        return ABSENT if shown is None else shown
