"""Replication groups at apply time: the conflict rule (``replicator.pipeline.groups``) decided
against what the destination member holds, before a copy or a deletion reaches it.

What a member holds for a key is one of:

* nothing, or a replica of this very source object: no conflict, the change applies;
* a write of its own users (no replica mark) or a replica of a third member's write: that
  write's time is the object's last-modified time (or the replica's
  ``replicator_source_modified`` mark), its version the object's (or the replica's
  ``replicator_origin_version``, else ``replicator_source_version``).

In a chain of groups, a member is ranked by its place in the chain's order (``GroupTag.chain``)
and a forwarded replica counts as the write of its origin (``replicator_origin``) at the
original write's time, so every member of the chain compares the same two contenders; the
conflict is recorded under the chain's dataset.

A deletion found by a reconciliation's listing (``Change.listed_deletion``) applies only in
the first case: when the source member lost the key is unknown, and a deletion timed at the
listing would beat every write under the rule.

In the second case the change applies without a conflict if the catalog recorded that the
source member had received that very write before (its own change came after it: an update,
not a conflict). Otherwise the two changes were concurrent: the rule names the winner, the
loser is recorded in the catalog (``replicator catalog conflicts``), and the change is
applied only if it won. The other member's own event then settles the rest: a winner at the
destination is replicated back to the source member, a loser there was overwritten already.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from connectors.base import NotFound, ObjectMeta, ObjectStore, PreconditionFailed
from replicator.catalog import Catalog, Change
from replicator.catalog.conflicts import AppliedDeletion, Conflict
from replicator.daemon.deletes import DeleteGuard
from replicator.engine.metadata import (
    replica_origin,
    replica_source,
    replica_source_modified,
)
from replicator.engine.retry import RetryPolicy
from replicator.engine.transfer import version_id
from replicator.pipeline.groups import Contender, change_time, winner
from replicator.pipeline.rules import GroupTag, Route, Target

log = structlog.get_logger(__name__)

# A member's store notifies a deletion the group made there at the moment it made it: within
# the request's round trip of the time recorded once it returned, give or take the clocks'
# skew. A deletion notified within this window of one the group made is its echo.
ECHO_BEFORE = timedelta(seconds=60)
ECHO_AFTER = timedelta(seconds=5)
# How long the group's deletions are remembered: their echoes come long before.
ECHO_KEPT = timedelta(days=1)


@dataclass(frozen=True)
class Held:
    """A write a member holds that the incoming change may conflict with."""

    contender: Contender
    # The object the write was made to (at the member that was written).
    written_url: str
    existing: ObjectMeta


@dataclass(frozen=True)
class Verdict:
    """Whether the change goes ahead at the destination; ``existing``: what the destination
    holds (None: nothing), read once here and passed on to the copy or the deletion."""

    applies: bool
    existing: ObjectMeta | None
    # The write to delete at the destination (a deletion that won over it), if any.
    overrides: Held | None = None
    note: str | None = None
    # What the change came to where it does not apply.
    outcome: str = "conflict_lost"


class GroupArbiter:
    """Decides each change of a group's route at each destination member."""

    def __init__(self, catalog: Catalog, retry: RetryPolicy, guard: DeleteGuard) -> None:
        self.catalog = catalog
        self.retry = retry
        self.guard = guard

    async def decide(
        self,
        change: Change,
        target: Target,
        current: ObjectMeta | None,
        dest: ObjectStore,
        *,
        deleted_from: AppliedDeletion | None = None,
    ) -> Verdict:
        """The verdict on ``change`` (its source's ``current`` state; None: deleted) at
        ``target``, a destination member of the group. ``deleted_from``: the deletion another
        group of a chain made at this route's source, forwarded here (judged at its user's
        time: the source's notice of it came later, and a write made in between wins)."""
        tag = _tag(target.route)
        if current is None and not change.deleted:
            # A write whose object is gone: when it was deleted is not in this event (its time
            # is the write's), so the deletion's own event settles it under the rule.
            note = "the source is gone; its deletion's own event applies it"
            return Verdict(False, None, note=note, outcome="deferred")
        try:
            existing: ObjectMeta | None = await self.retry.run(
                lambda: dest.head(target.relative_key), what="head destination"
            )
        except NotFound:
            existing = None
        here = target.destination.url
        held = None if existing is None else _held(tag, here, change.source_url, existing)
        if held is None:
            return Verdict(True, existing)
        if change.listed_deletion:
            # A listing cannot tell when the source member lost the key: a deletion timed at
            # the listing would beat every member's write. It removes replicas of the source
            # member's own object only (``held is None`` above), never another write.
            note = "a deletion found by a listing removes only replicas of its source's object"
            return Verdict(False, existing, note=note, outcome="not_ours")
        incoming = _incoming(tag, change, current, deleted_from)
        if await self._updates(change, current, held, target.dest_url):
            return Verdict(True, existing, overrides=held)
        kept = winner(incoming, held.contender)
        won = kept is incoming
        if won and deleted_from is not None:
            # The deletion was settled under the rule where the groups meet, against what
            # that member held (a conflict recorded there): here it only follows.
            return Verdict(True, existing, overrides=held)
        loser = held.contender if won else incoming
        await self._record(tag, target.relative_key, kept, loser)
        if won:
            return Verdict(True, existing, overrides=held)
        note = f"lost a conflict to the {kept.describe()} of group {tag.name!r}"
        return Verdict(False, existing, note=note)

    async def _updates(
        self, change: Change, current: ObjectMeta | None, held: Held, held_url: str
    ) -> bool:
        """Whether the member written held the write ``held`` (at ``held_url``) when it
        changed the key: an update, not a conflict. It received that write from its origin,
        or (along a chain) the very object ``held_url`` holds."""
        written = _written_url(change, current)
        version = held.contender.version
        if version is not None and await self.catalog.received(written, held.written_url, version):
            return True
        return held.written_url != held_url and await self.catalog.received(
            written, held_url, version_id(held.existing)
        )

    def deletion_outruns(self, change: Change, route: Route, current: ObjectMeta | None) -> bool:
        """Whether the deletion ``change``, found stale, must still be applied: its member now
        holds a replica of a concurrent write the deletion wins over. The replica's own
        notification was accepted first (it came in while the deletion waited to be applied),
        but it says nothing of the deletion. A deletion that loses stays stale, as does one
        whose member holds a write of its own (made after the deletion)."""
        if route.group is None or not change.deleted or change.listed_deletion or current is None:
            return False
        held = _held(route.group, route.source, change.source_url, current)
        if held is None or replica_source(current.attributes.user_metadata) is None:
            return False
        incoming = _incoming(route.group, change, None)
        return winner(incoming, held.contender) is incoming

    async def delete_meets_replica(
        self, change: Change, route: Route, key: str, current: ObjectMeta, source: ObjectStore
    ) -> bool:
        """A deletion event whose source member now holds a replica of another member's write:
        that write reached the member after its user deleted the key (the deletion's own event
        runs after the copy), so the two were concurrent. True, with the replica deleted, if
        the deletion wins the rule (it then applies to every other member as usual); False if
        the write wins (it stays, and the deletion is recorded as the loser)."""
        tag = _tag(route)
        held = _held(tag, route.source, change.source_url, current)
        if held is None or held.contender.deleted or change.listed_deletion:
            # A deletion found by a listing has no time to weigh against the write.
            return False
        incoming = _incoming(tag, change, None)
        kept = winner(incoming, held.contender)
        loser = held.contender if kept is incoming else incoming
        await self._record(tag, key, kept, loser)
        if kept is not incoming:
            return False
        # False: the member was written again meanwhile; that write's own event goes on.
        if not await self.delete_held(route, source, key, current):
            return False
        await self.deleted(change.source_url)
        return True

    async def deleted(self, url: str) -> None:
        """Remember that the group just deleted the member object ``url``."""
        await self.catalog.record_group_deletion(url, datetime.now(UTC), keep=ECHO_KEPT)

    async def is_echo(self, change: Change) -> bool:
        """Whether the deletion ``change`` at a member is the store's notice of a deletion the
        group made there (which a write elsewhere may have outrun since), not its users'."""
        return change.deleted and await self.catalog.group_deleted(
            change.source_url, change.event_time - ECHO_AFTER, change.event_time + ECHO_BEFORE
        )

    async def delete_held(
        self, route: Route, store: ObjectStore, key: str, existing: ObjectMeta
    ) -> bool:
        """Delete the write ``existing`` a member holds (a deletion won over it, or came after
        it), only that version; False if it was replaced meanwhile (a newer write is kept)."""
        await self.guard.admit(route)
        try:
            await self.retry.run(
                lambda: store.delete(key, if_match=existing.etag), what="delete member object"
            )
        except NotFound:
            return True
        except PreconditionFailed:
            try:
                await store.head(key)
            except NotFound:
                return True
            return False
        return True

    async def _record(
        self, tag: GroupTag, relative: str, kept: Contender, loser: Contender
    ) -> None:
        conflict = Conflict(
            group=tag.dataset,
            key=relative,
            winner_member=tag.chain[kept.member],
            winner_version=kept.version,
            winner_time=change_time(kept.time),
            loser_member=tag.chain[loser.member],
            loser_version=loser.version,
            loser_time=change_time(loser.time),
            detected_at=datetime.now(UTC),
        )
        if await self.catalog.record_conflict(conflict):
            log.warning(
                "conflicting changes in a replication group",
                group=tag.dataset,
                key=relative,
                winner=kept.describe(),
                loser=loser.describe(),
            )


def _tag(route: Route) -> GroupTag:
    if route.group is None:
        raise ValueError(f"route {route.name!r} is not a group's")
    return route.group


def _incoming(
    tag: GroupTag,
    change: Change,
    current: ObjectMeta | None,
    deleted_from: AppliedDeletion | None = None,
) -> Contender:
    """The change arriving from the route's source member: its own users' change, or a
    replica (or deletion) another group of the chain made there, which this group forwards
    (the origin's write, at its time; a deletion at the time it was made there)."""
    source = _rank(tag, tag.members[tag.index])
    if deleted_from is not None:
        return Contender(_rank(tag, deleted_from.member), deleted_from.deleted_at, None)
    if current is None:
        return Contender(_rank(tag, tag.members[tag.index]), change.event_time, None)
    user = current.attributes.user_metadata
    forwarded = replica_origin(user)
    if forwarded is not None:
        origin, version = forwarded
        rank = tag.rank(origin)
        if rank is not None:
            time = replica_source_modified(user) or current.last_modified or change.event_time
            return Contender(rank, time, version or version_id(current))
    return Contender(source, current.last_modified or change.event_time, version_id(current))


def _written_url(change: Change, current: ObjectMeta | None) -> str:
    """The object the incoming change was made to: its source's, or a forwarded replica's
    origin."""
    forwarded = None if current is None else replica_origin(current.attributes.user_metadata)
    return change.source_url if forwarded is None else forwarded[0]


def _rank(tag: GroupTag, url: str) -> int:
    rank = tag.rank(url)
    assert rank is not None  # a group route's locations are members of its chain
    return rank


def _held(tag: GroupTag, here: str, source_url: str, existing: ObjectMeta) -> Held | None:
    """The write ``existing`` holds at the member ``here``, None if it is a replica of
    ``source_url`` itself (the route's own earlier copy: no conflict)."""
    user = existing.attributes.user_metadata
    if replica_source(user) == source_url:
        return None
    forwarded = replica_origin(user)
    member = None if forwarded is None else tag.rank(forwarded[0])
    if forwarded is None or member is None:
        # A write of the destination member's own users (or a replica from outside the
        # chain, which the member's users put there).
        time = existing.last_modified or datetime.now(UTC)
        contender = Contender(_rank(tag, here), time, version_id(existing))
        return Held(contender, existing.url, existing)
    origin, version = forwarded
    time = replica_source_modified(user) or existing.last_modified or datetime.now(UTC)
    return Held(Contender(member, time, version or version_id(existing)), origin, existing)
