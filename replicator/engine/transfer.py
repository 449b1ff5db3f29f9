"""Copy one object between any two stores: planned, parallel, bounded in memory, verified.

For each copy: HEAD the source and pin its version; skip if the destination already holds that
version (its replica marks say so) or if the source is itself a replica; plan; then execute:

* server-side: the destination store copies internally, conditioned on the source etag;
* single: read the whole (small) object pinned, put it with replica marks and fingerprint;
* multipart: workers read pinned ranges and upload parts under a global in-flight byte budget,
  each part's checksums computed from the bytes read and compared with what the store reports
  for what it stored; on completion size and whole-object checksums are compared again.

If the source changes mid-copy (PreconditionFailed, or the pinned version vanishing) the upload
is aborted and the copy restarts from the new version: a replica is never a mix of versions. A
failed or cancelled multipart upload is aborted; nothing is ever completed short.

Where damage is caught: bytes changed between the source read and the destination connector
show up as a part checksum that differs from ours; bytes changed between the connector and the
store are rejected by the store's native checksum check; a source whose stored bytes do not
match its own reported CRC32C is caught by comparing the whole-object CRC32C.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog

from connectors.base import (
    AlreadyExists,
    ChecksumKind,
    IntegrityError,
    MiB,
    NotFound,
    NotSupported,
    ObjectAttributes,
    ObjectMeta,
    ObjectStore,
    PreconditionFailed,
    StoreError,
)
from replicator.engine import hashing
from replicator.engine.fencing import UNFENCED, DestinationMoved, Fence, fenced
from replicator.engine.journal import (
    DonePart,
    Halt,
    MemoryJournal,
    UploadJournal,
    UploadRecord,
)
from replicator.engine.memory import ByteBudget
from replicator.engine.metadata import (
    FINGERPRINT_KEY,
    replica_attributes,
    replica_fingerprint,
    replica_mismatch,
    replica_source,
)
from replicator.engine.ordered import InOrder
from replicator.engine.outcomes import (
    ABSENT,
    Absent,
    Executed,
    Skipped,
    SourceChanged,
    SourceGone,
    first_error,
    resumes,
)
from replicator.engine.parts import copy_one_part
from replicator.engine.planner import CopyPlan, Part, Strategy, auto_part_size, plan_copy, stripes
from replicator.engine.reads import SharedSourceRead, SourceMoved, StripeReader, pinned
from replicator.engine.results import CopyResult, version_id
from replicator.engine.retry import RetryPolicy
from replicator.engine.striping import STRIPED, PartTask, Striping, follow, part_tasks
from replicator.engine.verification import (
    check_checksums,
    check_size,
    check_source_crc,
    digest_of,
)

log = structlog.get_logger(__name__)

# ByteBudget (from engine.memory) is part of this module's interface: a Copier is built with one.
__all__ = [
    "ABSENT",
    "Absent",
    "ByteBudget",
    "Copier",
    "CopyResult",
    "DonePart",
    "MemoryJournal",
    "SharedSourceRead",
    "SourceChanged",
    "SourceGone",
    "UploadJournal",
    "UploadRecord",
    "version_id",
]

DEFAULT_CONCURRENCY = 8
# A whole-object read (a single put's source) is in memory twice while it is received (the
# transport's pieces, then the joined bytes), so it reserves twice its size. A part is read
# into one buffer of its own, streamed or in one read, and reserves its size: the budget
# bounds the process's memory for object data, not only the payload it holds.
WHOLE_READ_COPIES = 2
# Parts of one streamed read held at once: one receiving while the one before is sent.
PARTS_IN_FLIGHT_PER_STREAM = 2
# Listed objects up to this size may be read ahead of their copy (``Copier.prefetch``): the
# bytes wait outside the byte budget for a moment, at most this much per object in flight.
PREFETCH_MAX = 1 * MiB
# Why a copy's parts go in parallel to a destination that has ordered uploads.
RESUMING = "resuming an upload"
DAMAGED = "an ordered upload came out damaged, its parts are sent again, each checked"
ORDERED_UPLOADS_OFF = "ordered uploads are turned off ([copy] ordered_uploads)"


class Copier:
    """The copy engine. One instance serves many concurrent copies and shares one byte budget.

    ``part_size`` None sizes the parts of each object to it (``planner.auto_part_size``).
    """

    def __init__(
        self,
        *,
        part_size: int | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        budget: ByteBudget | None = None,
        retry: RetryPolicy | None = None,
        journal: UploadJournal | None = None,
        max_restarts: int = 5,
        ordered_uploads: bool = True,
        striping: Striping | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.part_size = part_size
        self.concurrency = concurrency
        self.budget = budget or ByteBudget()
        self.retry = retry or RetryPolicy()
        self.journal: UploadJournal = journal or MemoryJournal()
        self.max_restarts = max_restarts
        # Whether destinations that have ordered uploads (GCS sessions) may get them.
        self.ordered_uploads = ordered_uploads
        # Large objects' parts copied by the whole group (the daemon only).
        self.striping = striping

    async def copy(
        self,
        source: ObjectStore,
        source_key: str,
        dest: ObjectStore,
        dest_key: str,
        *,
        observed: ObjectMeta | None = None,
        dest_observed: ObjectMeta | Absent | None = None,
        shared: SharedSourceRead | None = None,
        forwarding: bool = False,
    ) -> CopyResult:
        """Copy ``source_key`` to ``dest_key``.

        ``observed``: the source's metadata, just read by the caller (a HEAD, an event, a
        listing), used instead of a HEAD of its own for the first attempt: reads stay pinned
        to it, so a source changed since is detected as usual. From a listing without
        attributes (S3's), a single-put object is read with one request that also brings its
        metadata; a larger one is HEADed. ``dest_observed``: what the caller knows of the
        destination, from a listing or the catalog: ``ABSENT`` (nothing there: no HEAD), or
        its metadata (no HEAD unless it lacks attributes). ``shared``: copies of the same
        source to other destinations share its read (single-put objects). ``forwarding``: a
        source that is itself a replica is copied all the same (a chain of replication groups
        forwards it), its marks passed on."""
        started = time.monotonic()
        last_change: Exception | None = None
        for _ in range(self.max_restarts + 1):
            if observed is not None:
                src, observed = observed, None
            else:
                try:
                    src = await self.retry.run(lambda: source.head(source_key), what="head source")
                except NotFound as exc:
                    raise SourceGone(str(exc), url=source.url_for(source_key)) from exc
            known_dest, dest_observed = dest_observed, None
            plan = self.plan(src, source, dest)
            if not src.attributes_known and plan.strategy is not Strategy.SINGLE:
                src = await self.retry.run(lambda: source.head(source_key), what="head source")
                plan = self.plan(src, source, dest)
            try:
                if not src.attributes_known:
                    outcome = await self._copy_listed_small(
                        src, source, source_key, dest, dest_key, known_dest, shared, forwarding
                    )
                else:
                    looked = await self.look_at_destination(
                        src, dest, dest_key, known_dest, forwarding=forwarding
                    )
                    outcome = (
                        looked
                        if isinstance(looked, Skipped)
                        else await self._execute(
                            plan, src, source, source_key, dest, dest_key, looked, shared
                        )
                    )
            except SourceMoved as moved:
                last_change = moved.cause
                log.info("source changed during copy; restarting", source=src.url, error=str(moved))
                continue
            except DestinationMoved as moved:
                # Another writer got there first (or this copy's own write landed and its
                # answer was lost): look at both ends again.
                last_change = moved.cause
                log.info(
                    "destination changed during copy; looking again",
                    destination=dest.url_for(dest_key),
                    error=str(moved),
                )
                continue
            if isinstance(outcome, Skipped):
                log.info("copy skipped", source=outcome.source.url, reason=outcome.reason)
                return CopyResult(
                    "skipped",
                    outcome.source,
                    outcome.existing,
                    reason=outcome.reason,
                    seconds=time.monotonic() - started,
                )
            return CopyResult(
                "copied",
                outcome.source or src,
                outcome.destination,
                plan.strategy,
                len(plan.parts),
                outcome.parts_resumed,
                outcome.bytes_transferred,
                outcome.fingerprint,
                time.monotonic() - started,
                ordered_upload=outcome.ordered,
            )
        raise SourceChanged(
            f"{source.url_for(source_key)} or its destination changed "
            f"{self.max_restarts + 1} times while it was being copied; last: {last_change}"
        )

    def plan(
        self,
        src: ObjectMeta,
        source: ObjectStore,
        dest: ObjectStore,
        *,
        unordered_because: str | None = None,
    ) -> CopyPlan:
        """The plan a copy of ``src`` follows (``replicator cp --explain`` prints it);
        ``unordered_because`` as for ``plan_copy``."""
        if unordered_because is None and self._striped(src.size):
            unordered_because = STRIPED
        return plan_copy(
            src.size,
            dest.limits,
            same_store=dest.copies_from(source),
            part_size=self.part_size
            or auto_part_size(src.size, concurrency=self.concurrency, budget=self.budget.capacity),
            unordered_because=unordered_because
            or (None if self.ordered_uploads else ORDERED_UPLOADS_OFF),
        )

    def _striped(self, size: int) -> bool:
        return self.striping is not None and self.striping.applies(size)

    async def _copy_listed_small(
        self,
        listed: ObjectMeta,
        source: ObjectStore,
        source_key: str,
        dest: ObjectStore,
        dest_key: str,
        known_dest: ObjectMeta | Absent | None,
        shared: SharedSourceRead | None = None,
        forwarding: bool = False,
    ) -> Executed | Skipped:
        """A small object seen in a listing that omits attributes: one GET pinned to the
        listed version brings the bytes and the metadata a HEAD would have (then the replica
        checks), so reading it costs one request (one for every destination, ``shared``)."""

        load = functools.partial(self._get_listed, source, source_key, listed)
        async with self.budget.reserve(listed.size * WHOLE_READ_COPIES):
            src, data = await (shared.get(listed, load) if shared is not None else load())
            looked = await self.look_at_destination(
                src, dest, dest_key, known_dest, forwarding=forwarding
            )
            if isinstance(looked, Skipped):
                return looked
            return await self._single(src, source, source_key, dest, dest_key, looked, loaded=data)

    def _get_listed(
        self, source: ObjectStore, source_key: str, listed: ObjectMeta
    ) -> Awaitable[tuple[ObjectMeta, bytes]]:
        return pinned(
            lambda: self.retry.run(
                lambda: source.get(source_key, if_match=listed.etag), what="read source"
            )
        )

    async def prefetch(
        self,
        source: ObjectStore,
        source_key: str,
        listed: ObjectMeta,
        dests: Sequence[ObjectStore],
        shared: SharedSourceRead,
    ) -> None:
        """Read a small object a listing showed into ``shared`` ahead of its copies, which
        take it from there (one GET in all): the applier overlaps the read with the catalog's
        acceptance of the change. Only what a copy to one of ``dests`` would read the same
        way (a listing without attributes, a single put, not a server-side copy). A failed
        read is not kept by ``shared``: the copy reads again and handles the failure."""
        if listed.attributes_known or listed.size > PREFETCH_MAX:
            return
        if not any(self.plan(listed, source, dest).strategy is Strategy.SINGLE for dest in dests):
            return
        load = functools.partial(self._get_listed, source, source_key, listed)
        with contextlib.suppress(Exception):
            async with self.budget.reserve(listed.size * WHOLE_READ_COPIES):
                await shared.get(listed, load)

    async def look_at_destination(
        self,
        src: ObjectMeta,
        dest: ObjectStore,
        dest_key: str,
        known_dest: ObjectMeta | Absent | None = None,
        *,
        forwarding: bool = False,
    ) -> Skipped | Fence:
        """Why no copy is needed, or the fence its final write is conditioned on."""
        origin = replica_source(src.attributes.user_metadata)
        if origin is not None and not forwarding:
            return Skipped(src, None, f"source is itself a replica of {origin}")
        if known_dest is ABSENT:
            return Fence.seen(None)
        if isinstance(known_dest, ObjectMeta) and known_dest.attributes_known:
            existing = known_dest
        else:
            try:
                existing = await self.retry.run(
                    lambda: dest.head(dest_key), what="head destination"
                )
            except NotFound:
                return Fence.seen(None)
        mismatch = replica_mismatch(src, version_id(src), existing)
        if mismatch is None:
            return Skipped(src, existing, "destination already holds this source version")
        if replica_source(existing.attributes.user_metadata) == src.url:
            log.info("replica not verified; copying again", destination=existing.url, why=mismatch)
        return Fence.seen(existing)

    async def _execute(
        self,
        plan: CopyPlan,
        src: ObjectMeta,
        source: ObjectStore,
        source_key: str,
        dest: ObjectStore,
        dest_key: str,
        fence: Fence,
        shared: SharedSourceRead | None = None,
    ) -> Executed:
        if plan.strategy is Strategy.SERVER_SIDE:
            return await self._server_side(src, source, source_key, dest, dest_key, fence)
        if plan.strategy is Strategy.SINGLE:
            return await self._single(src, source, source_key, dest, dest_key, fence, shared)
        if plan.ordered:
            try:
                return await self._multipart(plan, src, source, source_key, dest, dest_key, fence)
            except IntegrityError as exc:
                # Nothing of it is left (a damaged replica is removed): the look at the
                # destination still holds, and its fence.
                log.warning(
                    "ordered upload damaged; sending its parts again, each checked",
                    destination=dest.url_for(dest_key),
                    error=str(exc),
                )
                plan = self.plan(src, source, dest, unordered_because=DAMAGED)
        return await self._multipart(plan, src, source, source_key, dest, dest_key, fence)

    async def _server_side(
        self,
        src: ObjectMeta,
        source: ObjectStore,
        source_key: str,
        dest: ObjectStore,
        dest_key: str,
        fence: Fence,
    ) -> Executed:
        """The destination copies by itself, fenced as any final write. A store that reads
        its copy back (files: a kernel copy) shows it to us, and the fingerprint goes into the
        replica's marks."""
        attributes = replica_attributes(
            src.attributes,
            dest.scheme,
            source_url=src.url,
            source_version=version_id(src),
            source_modified=src.last_modified,
        )
        fingerprint = hashing.Fingerprint(src.size)
        read_back = False

        def extra_metadata() -> dict[str, str]:
            nonlocal read_back
            read_back = True
            return {FINGERPRINT_KEY: fingerprint.value()}

        try:
            meta = await self.retry.run(
                lambda: dest.copy_from(
                    source,
                    source_key,
                    dest_key,
                    if_match=src.etag,
                    attributes=attributes,
                    inspect=fingerprint.add_data,
                    extra_metadata=extra_metadata,
                    create_only=fence.create_only,
                    dest_if_match=fence.if_match,
                ),
                what="server-side copy",
            )
        except AlreadyExists as exc:
            raise DestinationMoved(exc) from exc
        except PreconditionFailed as exc:
            # The source's pin or the destination's fence (stores answer both with 412):
            # either way the copy looks at both ends again.
            raise SourceMoved(exc) from exc
        except NotFound as exc:
            # Either end may be missing; a source that is still there means the
            # destination is the problem, and that does not go away by restarting.
            try:
                await source.head(source_key)
            except NotFound as gone:
                raise SourceMoved(gone) from gone
            raise exc from None
        await self._verify_written(dest, dest_key, meta, lambda: check_size(meta, src))
        value = (
            fingerprint.value() if read_back else replica_fingerprint(src.attributes.user_metadata)
        )
        return Executed(meta, 0, 0, value)

    def _pin(self, source: ObjectStore, src: ObjectMeta) -> dict[str, str | None]:
        version = src.version if source.limits.versioned_reads else None
        return {"if_match": src.etag, "version": version}

    async def _single(
        self,
        src: ObjectMeta,
        source: ObjectStore,
        source_key: str,
        dest: ObjectStore,
        dest_key: str,
        fence: Fence = UNFENCED,
        shared: SharedSourceRead | None = None,
        *,
        loaded: bytes | None = None,
    ) -> Executed:
        """Read the whole object (unless the caller ``loaded`` it, holding its budget), put it."""
        pin = self._pin(source, src)

        def load() -> Awaitable[bytes]:
            return pinned(
                lambda: self.retry.run(
                    lambda: source.read(source_key, 0, None, **pin), what="read source"
                )
            )

        reserved = (
            contextlib.nullcontext()
            if loaded is not None
            else self.budget.reserve(src.size * WHOLE_READ_COPIES)
        )
        async with reserved:
            if loaded is not None:
                data = loaded
            else:
                data = await (shared.read(src, load) if shared is not None else load())
            if len(data) != src.size:
                raise SourceMoved(
                    PreconditionFailed(f"read {len(data)} bytes, expected {src.size}", url=src.url)
                )
            digest = await digest_of(data, 0, dest.limits.write_checksum)
            check_source_crc(src, digest.crc32c)
            fingerprint = hashing.Fingerprint(src.size)
            fingerprint.add(digest.blocks)
            attributes = replica_attributes(
                src.attributes,
                dest.scheme,
                source_url=src.url,
                source_version=version_id(src),
                fingerprint=fingerprint.value(),
                source_modified=src.last_modified,
            )
            meta = await fenced(
                lambda: self.retry.run(
                    lambda: dest.put(
                        dest_key,
                        data,
                        attributes=attributes,
                        checksums=digest.checksums,
                        create_only=fence.create_only,
                        if_match=fence.if_match,
                    ),
                    what="put destination",
                )
            )

        def check() -> None:
            check_size(meta, src)
            check_checksums(meta.checksums, digest.checksums, meta.url)

        await self._verify_written(dest, dest_key, meta, check)
        return Executed(meta, 0, src.size, fingerprint.value(), src)

    async def _multipart(
        self,
        plan: CopyPlan,
        src: ObjectMeta,
        source: ObjectStore,
        source_key: str,
        dest: ObjectStore,
        dest_key: str,
        fence: Fence = UNFENCED,
    ) -> Executed:
        pin = self._pin(source, src)
        dest_url = dest.url_for(dest_key)
        record = await self.journal.find(dest_url)
        if record is not None and not resumes(record, src, plan):
            # An upload left by a crash for another version (the source was overwritten since)
            # or another plan is never resumed: abort it now, or it stays behind for ever.
            log.info(
                "aborting an upload left for another version",
                destination=dest_url,
                upload_id=record.upload_id,
                source_version=record.source_version,
            )
            await self._abort(dest, dest_key, record)
            record = None
        if record is not None and plan.ordered:
            plan = self.plan(src, source, dest, unordered_because=RESUMING)
        resumed = len(record.parts) if record else 0
        if record is None:
            # An upload a process killed before it journaled it is found by listing: it is
            # never resumed, so it goes before a new one starts.
            await self._abort_unjournaled(dest, dest_key)
            attributes = replica_attributes(
                src.attributes,
                dest.scheme,
                source_url=src.url,
                source_version=version_id(src),
                source_modified=src.last_modified,
            )
            upload_id = await self._create_upload(plan, dest, dest_key, attributes, fence)
            record = UploadRecord(
                dest_url,
                upload_id,
                src.url,
                version_id(src),
                plan.part_size,
                src.size,
                ordered=plan.ordered,
            )
            if not record.ordered:
                await self.journal.started(record)
        else:
            log.info(
                "resuming upload",
                destination=dest_url,
                upload_id=record.upload_id,
                parts_done=resumed,
                parts=len(plan.parts),
            )
        remaining = [p for p in plan.parts if p.number not in record.parts]
        striped = self._striped(src.size)
        todo = iter(remaining)
        transferred = 0
        # An ordered upload's parts come from one stream (or one reader), and go in order.
        streams = 1 if plan.ordered else self.concurrency
        order = InOrder() if plan.ordered else None

        async def copy_part(part: Part, stripe: StripeReader | None = None) -> None:
            nonlocal transferred
            await copy_one_part(
                part,
                record,
                src.url,
                source,
                source_key,
                dest,
                dest_key,
                pin,
                retry=self.retry,
                budget=self.budget,
                journal=self.journal,
                stripe=stripe,
                order=order,
            )
            transferred += part.length

        async def worker() -> None:
            for part in todo:
                await copy_part(part)

        async def stripe_worker(parts: list[Part]) -> None:
            stripe = StripeReader(
                lambda: source.read_stream(source_key, parts[0].offset, parts[-1].end, **pin),
                self.budget.take_buffer,
            )
            in_flight = asyncio.Semaphore(PARTS_IN_FLIGHT_PER_STREAM)

            async def one(part: Part) -> None:
                try:
                    await copy_part(part, stripe)
                finally:
                    in_flight.release()

            try:
                async with asyncio.TaskGroup() as uploads:
                    for part in parts:
                        # The next part waits until this one has its bytes (and its budget),
                        # so reads stay in stream order while uploads overlap the next read;
                        # and until a part of the stream is done when two are in flight, so
                        # the same few buffers are reused rather than new ones faulted in.
                        await in_flight.acquire()
                        uploads.create_task(one(part))
                        await stripe.wait_taken(part.number)
            finally:
                await stripe.close()

        try:
            if self.striping is not None and striped:
                tasks = part_tasks(record, remaining, src, source, dest, source_key, dest_key)
                await follow(self.striping, self.journal, record, tasks, len(plan.parts))
                transferred = sum(part.length for part in remaining)
            else:
                async with asyncio.TaskGroup() as group:
                    if source.limits.streamed_reads:
                        for stripe_parts in stripes(remaining, streams):
                            group.create_task(stripe_worker(stripe_parts))
                    else:
                        for _ in range(min(streams, len(plan.parts))):
                            group.create_task(worker())
            missing = [p.number for p in plan.parts if p.number not in record.parts]
            if missing:
                raise IntegrityError(
                    f"parts {missing[:10]} were not uploaded; not completing short", url=dest_url
                )
            fingerprint = hashing.Fingerprint(src.size)
            crcs = hashing.PartCrcs()
            for part in plan.parts:
                done = record.parts[part.number]
                fingerprint.add(done.block_digests)
                crcs.add(part.number, done.crc32c, part.length)
            whole_crc = crcs.whole()
            # Checked before completing, so bytes that differ from the source never become an
            # object at the destination.
            check_source_crc(src, whole_crc)
            # An ordered upload's object takes its metadata when the upload starts (it then
            # has the fingerprint in the catalog only, and GCS's MD5 and CRC32C).
            takes_metadata = dest.limits.metadata_at_complete and not plan.ordered
            extra = {FINGERPRINT_KEY: fingerprint.value()} if takes_metadata else None
            tokens = [record.parts[p.number].token for p in plan.parts]
            whole = {ChecksumKind.CRC32C: hashing.crc32c_b64(whole_crc)}
            meta = await fenced(
                lambda: self.retry.run(
                    lambda: dest.complete_multipart(
                        dest_key,
                        record.upload_id,
                        tokens,
                        extra_metadata=extra,
                        checksums=whole,
                        create_only=fence.create_only,
                        if_match=fence.if_match,
                    ),
                    what="complete multipart upload",
                ),
                completion=True,
            )
        except asyncio.CancelledError:
            # A striped upload is the group's: its parts go on being copied, and whoever
            # takes this change next (its partition moved) resumes it from the journal.
            if not striped:
                await self._abort(dest, dest_key, record)
            raise
        except BaseException as exc:
            await self._abort(dest, dest_key, record)
            raise first_error(exc) from None
        if not record.ordered:
            await self.journal.finished(record)
        await self._verify_written(dest, dest_key, meta, lambda: check_size(meta, src))
        head = await self.retry.run(lambda: dest.head(dest_key), what="head destination")

        def check() -> None:
            check_size(head, src)
            check_checksums(head.checksums, whole, head.url)

        await self._verify_written(dest, dest_key, head, check)
        return Executed(head, resumed, transferred, fingerprint.value(), ordered=plan.ordered)

    async def _create_upload(
        self,
        plan: CopyPlan,
        dest: ObjectStore,
        dest_key: str,
        attributes: ObjectAttributes,
        fence: Fence,
    ) -> str:
        if not plan.ordered:
            return await self.retry.run(
                lambda: dest.create_multipart(dest_key, attributes=attributes),
                what="create multipart upload",
            )
        # Its conditions go with its creation, where the store checks them when it makes
        # the object (and may already refuse).
        return await fenced(
            lambda: self.retry.run(
                lambda: dest.create_ordered_upload(
                    dest_key,
                    attributes=attributes,
                    create_only=fence.create_only,
                    if_match=fence.if_match,
                ),
                what="create ordered upload",
            )
        )

    async def _verify_written(
        self, dest: ObjectStore, dest_key: str, written: ObjectMeta, check: Callable[[], None]
    ) -> None:
        """Run ``check`` on what was written; an object that fails it is removed (if it is
        still the one written) before the error is raised, so that it can never be taken
        for a replica: it carries the replica marks of the version it was meant to hold."""
        try:
            check()
        except IntegrityError:
            try:
                await self.retry.run(
                    lambda: dest.delete(dest_key, if_match=written.etag),
                    what="remove unverified replica",
                )
            except StoreError as exc:
                log.error(
                    "a replica that failed verification could not be removed",
                    destination=written.url,
                    error=str(exc),
                )
            raise

    async def copy_part_task(self, task: PartTask, source: ObjectStore, dest: ObjectStore) -> str:
        """Copy one part of a striped upload (``replicator.engine.striping``) and journal it;
        what happened, in words. A part whose read finds the source changed, or that cannot be
        copied, halts the upload for the group; the task of an upload that is gone, replaced
        or halted, or of a part already journaled, is dropped."""
        record = await self.journal.find(task.dest_url)
        if record is None or record.upload_id != task.upload_id:
            return "dropped: the upload is no longer in progress"
        if record.halted is not None:
            return f"dropped: the upload was halted ({record.halted})"
        if (record.source_version, record.size, record.part_size) != (
            task.source_version,
            task.size,
            task.part_size,
        ):
            return "dropped: the task does not describe the journaled upload"
        if task.number in record.parts:
            return "dropped: the part is already copied"
        part = Part(task.number, task.offset, task.length)
        pin = {"if_match": task.etag, "version": task.version}
        try:
            await copy_one_part(
                part,
                record,
                task.source_url,
                source,
                task.source_key,
                dest,
                task.dest_key,
                pin,
                retry=self.retry,
                budget=self.budget,
                journal=self.journal,
            )
        except SourceMoved as moved:
            await self.journal.halt(record, Halt.SOURCE_CHANGED, str(moved.cause))
            return "halted: the source changed"
        except StoreError as exc:
            await self.journal.halt(record, Halt.FAILED, f"part {task.number}: {exc}")
            return f"halted: {exc}"
        return "copied"

    async def abandon(self, dest: ObjectStore, dest_key: str) -> None:
        """Abort the journaled upload to ``dest_key``, if any: the replica will not be written
        (its source is gone), so a copy killed mid-way is never resumed either."""
        record = await self.journal.find(dest.url_for(dest_key))
        if record is not None:
            await self._abort(dest, dest_key, record)

    async def _abort_unjournaled(self, dest: ObjectStore, dest_key: str) -> None:
        try:
            found = [
                upload.upload_id
                async for upload in dest.list_multipart_uploads(dest_key)
                if upload.key == dest_key
            ]
        except NotSupported:
            return
        for upload_id in found:
            log.info(
                "aborting an upload left without a journal",
                destination=dest.url_for(dest_key),
                upload_id=upload_id,
            )
            await self.retry.run(
                functools.partial(dest.abort_multipart, dest_key, upload_id),
                what="abort multipart upload",
            )

    async def _abort(self, dest: ObjectStore, dest_key: str, record: UploadRecord) -> None:
        """Abort an upload whatever happens to the task doing it (even on cancellation)."""

        async def abort() -> None:
            try:
                await self.retry.run(
                    lambda: dest.abort_multipart(dest_key, record.upload_id),
                    what="abort multipart upload",
                )
            except Exception as exc:
                log.error(
                    "abort failed; the upload is left for cleanup",
                    # An ordered upload's id is a credential.
                    upload_id=None if record.ordered else record.upload_id,
                    destination=record.dest_url,
                    error=str(exc),
                )
            if not record.ordered:
                await self.journal.finished(record)

        task = asyncio.ensure_future(abort())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise
