"""What a copy would do, without moving a byte (``replicator cp --explain``).

The plan comes from the copier's own ``plan`` and the destination's fence from its own
``look_at_destination``: the very decisions a copy makes, never a second copy of their logic.
The rest (reads, checksums, verification) is what the engine does for the chosen strategy.
Explaining reads metadata only: a HEAD of the source and of the destination.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Literal

from connectors.base import ObjectMeta, ObjectStore
from replicator.engine.fencing import Fence
from replicator.engine.outcomes import Absent, resumes
from replicator.engine.planner import CopyPlan, Strategy, stripes
from replicator.engine.transfer import RESUMING, Copier, version_id


@dataclass(frozen=True)
class CopyExplanation:
    source: str
    destination: str
    size: int
    source_version: str
    action: Literal["copy", "skip"]
    #: Why nothing would be copied (``action`` "skip").
    skip_reason: str | None
    strategy: Strategy
    reason: str
    part_size: int
    parts: int
    #: Parts sent one after the other into one upload (GCS: a session, an ordinary object).
    ordered_upload: bool
    #: Parts in flight at once (0: the store copies by itself).
    concurrency: int
    reads: str
    checksums_sent: str
    verified: str
    fence: str

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "strategy": self.strategy.value}

    def text(self) -> str:
        head = f"{self.source} -> {self.destination}: {self.size} bytes"
        if self.action == "skip":
            head += f", skipped: {self.skip_reason}"
        at_once = "in order" if self.ordered_upload else f"{self.concurrency} at once"
        shape = (
            f"{self.parts} parts of {self.part_size} bytes, {at_once}"
            if self.strategy is Strategy.MULTIPART
            else "no parts"
            if self.strategy is Strategy.SERVER_SIDE
            else "one part"
        )
        return "\n".join(
            [
                head,
                f"  plan: {self.strategy.value}, {shape}",
                f"  why: {self.reason}",
                f"  reads: {self.reads}",
                f"  checksums sent: {self.checksums_sent}",
                f"  verified: {self.verified}",
                f"  fence: {self.fence}",
            ]
        )


async def explain_copy(
    copier: Copier,
    source: ObjectStore,
    source_key: str,
    dest: ObjectStore,
    dest_key: str,
    *,
    listed: ObjectMeta | None = None,
    dest_observed: Absent | None = None,
) -> CopyExplanation:
    """The plan ``copier.copy(source, source_key, dest, dest_key)`` would follow now.
    ``listed``: the source as a listing showed it, HEADed again if it lacks attributes;
    ``dest_observed``: ``ABSENT`` when the caller knows the destination holds nothing (a
    directory the copy would create), as for ``Copier.copy``."""
    src = listed
    if src is None or not src.attributes_known:
        src = await copier.retry.run(lambda: source.head(source_key), what="head source")
    plan = copier.plan(src, source, dest)
    record = await copier.journal.find(dest.url_for(dest_key))
    if plan.ordered and record is not None and resumes(record, src, plan):
        plan = copier.plan(src, source, dest, unordered_because=RESUMING)
    looked = await copier.look_at_destination(src, dest, dest_key, dest_observed)
    fence = looked if isinstance(looked, Fence) else None
    concurrency = _concurrency(plan, copier.concurrency)
    return CopyExplanation(
        source=src.url,
        destination=dest.url_for(dest_key),
        size=src.size,
        source_version=version_id(src),
        action="copy" if fence is not None else "skip",
        skip_reason=None if isinstance(looked, Fence) else looked.reason,
        strategy=plan.strategy,
        reason=plan.reason,
        part_size=plan.part_size,
        parts=len(plan.parts),
        ordered_upload=plan.ordered,
        concurrency=concurrency,
        reads=_reads(plan, src, source, concurrency),
        checksums_sent=_checksums_sent(plan, dest),
        verified=_verified(plan, dest),
        fence=_fence(fence),
    )


async def explain_tree(
    copier: Copier, source: ObjectStore, dest: ObjectStore, *, dest_observed: Absent | None = None
) -> AsyncIterator[CopyExplanation]:
    """``explain_copy`` for every object under the source root, to the same relative key
    under the destination root (as ``cp -r`` copies them)."""
    async for listed in source.list():
        yield await explain_copy(
            copier, source, listed.key, dest, listed.key, listed=listed, dest_observed=dest_observed
        )


def _concurrency(plan: CopyPlan, concurrency: int) -> int:
    if plan.strategy is Strategy.SERVER_SIDE:
        return 0
    return 1 if plan.ordered else min(concurrency, len(plan.parts))


def _reads(plan: CopyPlan, src: ObjectMeta, source: ObjectStore, concurrency: int) -> str:
    if plan.strategy is Strategy.SERVER_SIDE:
        return "none: the destination store reads the source itself"
    pin = (
        f"version {src.version}"
        if source.limits.versioned_reads and src.version
        else f"etag {src.etag}"
    )
    if plan.strategy is Strategy.SINGLE:
        return f"one whole-object read pinned to {pin}"
    if source.limits.streamed_reads:
        runs = len(stripes(plan.parts, 1 if plan.ordered else concurrency))
        if runs == 1:
            return f"one streamed read of every part, pinned to {pin}"
        return f"{runs} streamed reads of consecutive parts, pinned to {pin}"
    return f"one ranged read per part, pinned to {pin}"


def _checksums_sent(plan: CopyPlan, dest: ObjectStore) -> str:
    kind = dest.limits.write_checksum.value
    if plan.strategy is Strategy.SERVER_SIDE:
        return "none: no bytes are sent"
    if plan.strategy is Strategy.SINGLE:
        return f"{kind} of the object with the put (the store refuses damaged bytes)"
    if plan.ordered:
        return (
            "the whole-object crc32c with the completion (the store refuses to create an "
            "object with other bytes; an upload session's parts carry no checksum)"
        )
    return (
        f"{kind} of each part with it (the store refuses damaged bytes); the whole-object "
        "crc32c with the completion"
    )


def _verified(plan: CopyPlan, dest: ObjectStore) -> str:
    if plan.strategy is Strategy.SERVER_SIDE:
        return (
            "size after the copy; a store that reads its copy back (file) checks its crc32c "
            "against the source's and marks its fingerprint"
        )
    marks = (
        "the replica's marks and the catalog"
        if plan.strategy is Strategy.SINGLE
        or (dest.limits.metadata_at_complete and not plan.ordered)
        else "the catalog (the destination fixes metadata when the upload starts)"
    )
    if plan.strategy is Strategy.SINGLE:
        return (
            "the bytes read against the source's crc32c; size and checksums the store reports; "
            f"fingerprint (xxh3-128-4m) in {marks}"
        )
    if plan.ordered:
        return (
            "the whole-object crc32c against the source's before completing; size and crc32c "
            f"after completion (with the store's md5 of the object); fingerprint in {marks}"
        )
    return (
        "each part's size and checksums the store reports; the whole-object crc32c against "
        "the source's before completing; size and crc32c after completion; fingerprint "
        f"(xxh3-128-4m) in {marks}"
    )


def _fence(fence: Fence | None) -> str:
    if fence is None:
        return "none: nothing is written"
    if fence.create_only:
        return "create-only: the destination holds nothing"
    if fence.if_match:
        return f"if-match etag {fence.if_match}: what the destination holds now"
    return "none: the destination reports no etag for what it holds"
