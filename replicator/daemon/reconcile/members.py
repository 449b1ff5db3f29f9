"""What a replication group's route (one member, the source, to every other member) has to
reconcile, once both ends' user metadata is known (HEADs where a listing carries none).

Each member's route answers only for the writes made at its own member:

* the source holds a replica of another member's write: nothing to do here, that write's
  own member's route brings it everywhere (in a chain of groups, a replica another group of
  the chain wrote there is this route's to forward, like the source's own write);
* the source holds its own users' write: a destination member holding a verified replica of
  it is in sync; anything else there (nothing, an older replica, its own write or a third
  member's) is repaired by the applier, where the group's conflict rule decides against what
  the destination holds;
* the source holds nothing: a destination holding a replica of the source's object is extra
  (the source lost a write it had replicated, and the deletion's event was lost); anything
  else there is not this route's (its own member's route copies it to the source).
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.base import NotFound, ObjectMeta, ObjectStore
from replicator.engine.compare import Pair, Verdict, verdict
from replicator.engine.metadata import replica_mismatch, replica_source
from replicator.engine.retry import RetryPolicy
from replicator.engine.transfer import version_id
from replicator.pipeline.rules import GroupTag


def member_verdict(source_url: str, src: ObjectMeta | None, dst: ObjectMeta | None) -> Verdict:
    """The verdict on one key at one destination member; ``src`` is what the source member
    spreads (``spreads``) or None, and both carry their attributes."""
    if dst is None:
        return Verdict.SAME if src is None else Verdict.MISSING
    if src is None:
        ours = replica_source(dst.attributes.user_metadata) == source_url
        return Verdict.EXTRA if ours else Verdict.SAME
    if replica_mismatch(src, version_id(src), dst) is None:
        return Verdict.SAME
    return Verdict.DIFFERENT


def spreads(tag: GroupTag, src: ObjectMeta) -> bool:
    """Whether the route of ``tag`` spreads the source member's object ``src`` (which carries
    its attributes): its users' write, or a replica another group of a chain forwards."""
    origin = replica_source(src.attributes.user_metadata)
    return origin is None or tag.forwards(origin)


async def resolve_member_pair(
    pair: Pair,
    tag: GroupTag,
    source: ObjectStore,
    dests: Sequence[ObjectStore],
    retry: RetryPolicy,
) -> tuple[Pair, tuple[Verdict, ...]] | None:
    """``pair`` with what the listings left unknown read by HEADs, and its verdicts; None if
    the source member holds a replica that is not this route's to spread."""
    src = pair.source
    if src is not None and not src.attributes_known:
        src = await _head(source, src.key, retry)
    if src is not None and not spreads(tag, src):
        return None
    shown: list[ObjectMeta | None] = []
    for dest, dst in zip(dests, pair.dests, strict=True):
        unknown = dst is not None and not dst.attributes_known
        if dst is not None and unknown and (src is None or verdict(src, dst) is Verdict.UNSURE):
            dst = await _head(dest, dst.key, retry)
        shown.append(dst)
    resolved = Pair(pair.key, src, tuple(shown))
    url = source.url_for(pair.key)
    return resolved, tuple(_settled(url, src, dst) for dst in shown)


def _settled(source_url: str, src: ObjectMeta | None, dst: ObjectMeta | None) -> Verdict:
    """``member_verdict``, or the listing's own where a size already tells them apart (the
    destination's attributes were not read)."""
    if src is not None and dst is not None and not dst.attributes_known:
        return verdict(src, dst)
    return member_verdict(source_url, src, dst)


async def _head(store: ObjectStore, key: str, retry: RetryPolicy) -> ObjectMeta | None:
    try:
        meta: ObjectMeta = await retry.run(lambda: store.head(key), what="head group member")
    except NotFound:
        return None
    return meta
