"""One reconciliation of a source with its destinations: the streamed compare of their listings
(``engine.compare``), then an action for every key that is not in sync, ``transfers`` at once.

What is done about a key is the business of an ``Actions`` (``actions``): copy in process
(``cp -r``), apply a listing event through the daemon's applier (backfill, verify --repair,
the daemon's periodic reconciliation: catalog, repairs and delete policy included), or
publish that event to Kafka for the fleet (``--via-kafka``).

Resumable: the largest key below which every key is done is saved in the catalog's checkpoints
(``checkpoint``) every ``CHECKPOINT_EVERY`` keys; a run started again lists both ends after it.
Keys done after the checkpoint before a kill are found in sync by the new run's compare, so no
object is copied twice. The checkpoint stops moving at the first key that failed (a run started
again retries it), and a run that reaches the end clears it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from connectors.base import NotFound, ObjectMeta, ObjectStore
from replicator.daemon.reconcile.members import resolve_member_pair, spreads
from replicator.engine import hashing
from replicator.engine.compare import KeyFilter, Pair, Verdict, merge, verdict
from replicator.engine.metadata import replica_mismatch, replica_source
from replicator.engine.retry import RetryPolicy
from replicator.engine.transfer import version_id
from replicator.pipeline.rules import GroupTag

log = structlog.get_logger(__name__)

#: Failures named in the result; the rest are counted and logged.
KEPT_ERRORS = 20
#: Keys not in sync named in the result (verify); the rest are counted.
KEPT_FINDINGS = 1000
CHECKPOINT_EVERY = 100


@dataclass
class Tally:
    """What a reconciliation found and did. ``missing``/``different``/``extra`` count keys
    (a key differing at two destinations counts once per destination)."""

    compared: int = 0
    in_sync: int = 0
    missing: int = 0
    different: int = 0
    extra: int = 0
    copied: int = 0
    skipped: int = 0
    deleted: int = 0
    published: int = 0
    failed: int = 0
    not_ours: int = 0
    delete_refused: int = 0
    bytes_listed: int = 0
    bytes_to_copy: int = 0
    bytes_copied: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    findings: list[dict[str, str]] = field(default_factory=list)

    @property
    def drift(self) -> int:
        return self.missing + self.different + self.extra

    def found(self, key: str, dest: str, what: Verdict) -> None:
        if len(self.findings) < KEPT_FINDINGS:
            self.findings.append({"key": key, "destination": dest, "verdict": str(what)})

    def failure(self, what: str) -> None:
        self.failed += 1
        if len(self.errors) < KEPT_ERRORS:
            self.errors.append(what)

    def summary(self) -> dict[str, object]:
        rate = self.compared / self.seconds if self.seconds > 0 else 0.0
        return {
            "compared": self.compared,
            "in_sync": self.in_sync,
            "missing": self.missing,
            "different": self.different,
            "extra": self.extra,
            "copied": self.copied,
            "skipped": self.skipped,
            "deleted": self.deleted,
            "published": self.published,
            "failed": self.failed,
            "not_ours": self.not_ours,
            "delete_refused": self.delete_refused,
            "bytes_listed": self.bytes_listed,
            "bytes_to_copy": self.bytes_to_copy,
            "bytes_copied": self.bytes_copied,
            "seconds": round(self.seconds, 3),
            "objects_per_s": round(rate, 1),
            "mb_per_s": round(self.bytes_copied / self.seconds / 1e6, 1) if self.seconds else 0.0,
            "errors": self.errors,
            "findings": self.findings,
        }


@dataclass(frozen=True)
class Drift:
    """A key not in sync: what each listing showed, and the verdict at each destination."""

    pair: Pair
    verdicts: tuple[Verdict, ...]

    @property
    def source_gone(self) -> bool:
        return self.pair.source is None


class Actions(Protocol):
    """What is done about a key that is not in sync. Each returns an outcome per destination
    (``copied``, ``skipped``, ``deleted``, ``not_ours``, ``published``, ...)."""

    async def repair(self, drift: Drift) -> list[str]: ...


@dataclass(frozen=True)
class Options:
    transfers: int = 16
    dry_run: bool = False
    delete: bool = False
    #: Most deletions of one run; past it the rest are refused (and the run is not in sync).
    max_delete: int = 1000
    keys: KeyFilter = field(default_factory=KeyFilter)
    #: With ``dry_run``: re-read both ends of every key the metadata says is in sync and
    #: compare their fingerprints.
    deep: bool = False


class Checkpoint(Protocol):
    async def checkpoint(self, name: str) -> str | None: ...

    async def set_checkpoint(self, name: str, value: str) -> None: ...


class _Contiguous:
    """The largest key below which every key is done (keys are numbered in listing order)."""

    def __init__(self) -> None:
        self.keys: dict[int, str] = {}
        self.done: set[int] = set()
        self.next = 0
        self.contiguous: str | None = None

    def started(self, key: str) -> int:
        index = self.next + len(self.keys)
        self.keys[index] = key
        return index

    def finished(self, index: int) -> None:
        self.done.add(index)
        while self.next in self.done:
            self.done.discard(self.next)
            self.contiguous = self.keys.pop(self.next)
            self.next += 1


class Reconciler:
    """Compares ``source`` with ``dests`` (stores rooted at their prefixes, so a relative key
    is the same at every end) and hands every key not in sync to ``actions``."""

    def __init__(
        self,
        source: ObjectStore,
        dests: Sequence[ObjectStore],
        actions: Actions,
        options: Options,
        *,
        retry: RetryPolicy | None = None,
        checkpoints: Checkpoint | None = None,
        checkpoint_name: str | None = None,
        on_progress: Callable[[Tally], None] | None = None,
        group: GroupTag | None = None,
    ) -> None:
        if options.transfers < 1:
            raise ValueError("transfers must be at least 1")
        self.source = source
        self.dests = list(dests)
        self.actions = actions
        self.options = options
        self.retry = retry or RetryPolicy()
        self.checkpoints = checkpoints
        self.checkpoint_name = checkpoint_name
        self.on_progress = on_progress
        # The route of a replication group's member: what is drift is decided on both ends'
        # marks (``members``), read by HEADs where the listings lack them.
        self.group = group
        self.tally = Tally()
        self._deletes_admitted = 0
        self._failed_at: str | None = None

    async def run(self) -> Tally:
        started = time.monotonic()
        start_after = await self._resume_point()
        progress = _Contiguous()
        gate = asyncio.Semaphore(self.options.transfers)
        since_saved = 0
        last_report = time.monotonic()

        async def one(pair: Pair, verdicts: tuple[Verdict, ...], index: int) -> None:
            try:
                await self._reconcile(pair, verdicts)
            except Exception as exc:
                if self._failed_at is None:
                    self._failed_at = pair.key
                self.tally.failure(f"{self.source.url_for(pair.key)}: {exc}")
                log.error("reconcile failed", key=pair.key, error=str(exc))
            finally:
                progress.finished(index)
                gate.release()

        try:
            async with asyncio.TaskGroup() as group:
                async for pair in self._pairs(start_after):
                    since_saved += 1
                    verdicts = self._judge(pair)
                    if verdicts is None:
                        # Settled by the listings alone: no task (a run over millions of
                        # keys in sync stays cheap).
                        progress.finished(progress.started(pair.key))
                    else:
                        await gate.acquire()
                        group.create_task(one(pair, verdicts, progress.started(pair.key)))
                    if (
                        since_saved >= CHECKPOINT_EVERY
                        and progress.contiguous is not None
                        and self._failed_at is None
                    ):
                        since_saved = 0
                        await self._save(progress.contiguous)
                    if self.on_progress is not None and time.monotonic() - last_report >= 1.0:
                        last_report = time.monotonic()
                        self.tally.seconds = last_report - started
                        self.on_progress(self.tally)
        except BaseExceptionGroup as errors:
            # Every key's failure is counted by ``one``: what is left is the listing's own
            # failure (a missing bucket, a listing out of order), reported as itself.
            if len(errors.exceptions) == 1:
                raise errors.exceptions[0] from None
            raise
        if self._failed_at is None:
            await self._save("")
        self.tally.seconds = time.monotonic() - started
        return self.tally

    async def _resume_point(self) -> str | None:
        if self.checkpoints is None or self.checkpoint_name is None or self.options.dry_run:
            return None
        found = await self.checkpoints.checkpoint(self.checkpoint_name)
        if found:
            log.info("resuming after the checkpoint", checkpoint=self.checkpoint_name, key=found)
        return found or None

    async def _save(self, key: str) -> None:
        if (
            self.checkpoints is not None
            and self.checkpoint_name is not None
            and not self.options.dry_run
        ):
            await self.checkpoints.set_checkpoint(self.checkpoint_name, key)

    def _pairs(self, start_after: str | None) -> AsyncIterator[Pair]:
        return merge(
            self.source.list(start_after=start_after),
            [dest.list(start_after=start_after) for dest in self.dests],
            keys=self.options.keys,
            names=[self.source.root_url, *(d.root_url for d in self.dests)],
        )

    def _judge(self, pair: Pair) -> tuple[Verdict, ...] | None:
        """What the listings alone say of ``pair`` (counted as compared); None when there is
        nothing more to do about it."""
        src = pair.source
        if src is not None:
            if src.attributes_known and not self._spreads(src):
                self.tally.skipped += 1  # a replica is never copied on
                return None
            self.tally.compared += 1
            self.tally.bytes_listed += src.size
        verdicts = tuple(verdict(src, dst) for dst in pair.dests)
        if self._needs_heads(verdicts) or self._drift(pair, verdicts):
            return verdicts
        return None

    def _spreads(self, src: ObjectMeta) -> bool:
        """Whether the source object (with its attributes) is this route's to copy on: not a
        replica, or one a group of a chain forwards."""
        if self.group is not None:
            return spreads(self.group, src)
        return replica_source(src.attributes.user_metadata) is None

    def _needs_heads(self, verdicts: tuple[Verdict, ...]) -> bool:
        """A dry run or a verification settles what the listings cannot by HEADs (or by
        reading both ends, ``deep``); a run that acts leaves that to the copier's check, but
        for a group's member, whose drift only both ends' marks tell."""
        if self.group is not None:
            return any(v is not Verdict.SAME for v in verdicts) or (
                self.options.dry_run and self.options.deep
            )
        return self.options.dry_run and (
            self.options.deep or any(v is Verdict.UNSURE for v in verdicts)
        )

    def _drift(self, pair: Pair, verdicts: tuple[Verdict, ...]) -> bool:
        """Count what ``verdicts`` say of ``pair``; True if an action is due."""
        tally = self.tally
        if all(v is Verdict.SAME for v in verdicts):
            tally.in_sync += 1
            return False
        for dest, v in zip(self.dests, verdicts, strict=True):
            if v is not Verdict.SAME:
                tally.found(pair.key, dest.root_url, v)
            if v is Verdict.MISSING:
                tally.missing += 1
            elif v is Verdict.DIFFERENT:
                tally.different += 1
            elif v is Verdict.EXTRA:
                tally.extra += 1
        copies = sum(v in (Verdict.MISSING, Verdict.DIFFERENT) for v in verdicts)
        if pair.source is not None:
            tally.bytes_to_copy += pair.source.size * copies
        if self.options.dry_run:
            return False
        if pair.source is None:
            if not self.options.delete:
                return False
            if self._deletes_admitted >= self.options.max_delete:
                tally.delete_refused += 1
                return False
            self._deletes_admitted += 1
        return True

    async def _reconcile(self, pair: Pair, verdicts: tuple[Verdict, ...]) -> None:
        if self.group is not None:
            member = await resolve_member_pair(
                pair, self.group, self.source, self.dests, self.retry
            )
            if member is None:
                self.tally.skipped += 1  # a replica: its own member's route spreads it
                return
            pair, verdicts = member
            if self.options.dry_run and self.options.deep:
                verdicts = tuple(
                    [await self._deep_member(pair, i, v) for i, v in enumerate(verdicts)]
                )
            if self._drift(pair, verdicts):
                self._count(await self.actions.repair(Drift(pair, verdicts)), pair.source)
            return
        if self._needs_heads(verdicts):
            resolved = [
                await self._resolve(pair.source, dst, i) for i, dst in enumerate(pair.dests)
            ]
            if not self._drift(pair, tuple(resolved)):
                return
            verdicts = tuple(resolved)
        self._count(await self.actions.repair(Drift(pair, verdicts)), pair.source)

    def _count(self, outcomes: list[str], src: ObjectMeta | None) -> None:
        tally = self.tally
        for outcome in outcomes:
            if outcome == "copied":
                tally.copied += 1
                tally.bytes_copied += src.size if src is not None else 0
            elif outcome == "deleted":
                tally.deleted += 1
            elif outcome == "not_ours":
                tally.not_ours += 1
            elif outcome == "published":
                tally.published += 1
            else:
                tally.skipped += 1

    async def _resolve(self, src: ObjectMeta | None, dst: ObjectMeta | None, i: int) -> Verdict:
        """A verdict the listings could not give, by HEADs of both ends (dry runs and
        verification: nothing is copied, so the copier's own check does not run); with
        ``deep``, the bytes of both ends decide what the metadata says is in sync."""
        found = verdict(src, dst)
        if src is None or dst is None or found is Verdict.DIFFERENT:
            return found
        dest = self.dests[i]
        existing = dst
        if found is Verdict.UNSURE:
            if not src.attributes_known:
                try:
                    src = await self.retry.run(
                        lambda: self.source.head(src.key), what="head source"
                    )
                except NotFound:
                    return Verdict.EXTRA
            try:
                existing = await self.retry.run(lambda: dest.head(dst.key), what="head destination")
            except NotFound:
                return Verdict.MISSING
            if replica_mismatch(src, version_id(src), existing) is not None:
                return Verdict.DIFFERENT
        if self.options.deep:
            return await self._deep(src, dest, existing)
        return Verdict.SAME

    async def _deep_member(self, pair: Pair, i: int, found: Verdict) -> Verdict:
        src, dst = pair.source, pair.dests[i]
        if found is not Verdict.SAME or src is None or dst is None:
            return found
        return await self._deep(src, self.dests[i], dst)

    async def _deep(self, src: ObjectMeta, dest: ObjectStore, existing: ObjectMeta) -> Verdict:
        """Both ends read again and their fingerprints compared."""
        ours, theirs = await asyncio.gather(
            _fingerprint(self.source, src), _fingerprint(dest, existing)
        )
        return Verdict.SAME if ours == theirs else Verdict.DIFFERENT


async def _fingerprint(store: ObjectStore, meta: ObjectMeta) -> str:
    """The fingerprint of the object ``meta`` describes, read in a stream pinned to it."""
    accumulator = hashing.Fingerprint(meta.size)
    block = hashing.FINGERPRINT_BLOCK
    pending = bytearray()
    offset = 0
    if meta.size:
        async for chunk in store.read_stream(meta.key, 0, meta.size, if_match=meta.etag):
            pending += chunk
            whole = len(pending) - len(pending) % block
            if whole:
                accumulator.add_data(bytes(pending[:whole]), offset)
                offset += whole
                del pending[:whole]
    if pending:
        accumulator.add_data(bytes(pending), offset)
    return accumulator.value()
