"""Copying every object under one prefix to another: one listing of each end, then one copy
per object that the destination lacks or holds an unverified or older replica of.

What the listings say is passed to the engine, so an object costs no HEAD of either end: a
destination key the listing did not show is known absent, a source object is read with one
request that also brings its metadata (see ``Copier.copy``). The destination's listing is held
in memory while the source is listed (about 200 bytes per object); the source is streamed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import structlog

from connectors.base import ObjectMeta, ObjectStore
from replicator.engine.metadata import replica_source
from replicator.engine.transfer import ABSENT, Copier

log = structlog.get_logger(__name__)

#: Failures named in the result; the rest are counted and logged.
KEPT_ERRORS = 20


@dataclass
class BulkResult:
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_copied: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        objects = self.copied + self.skipped + self.failed
        return {
            "copied": self.copied,
            "skipped": self.skipped,
            "failed": self.failed,
            "bytes_copied": self.bytes_copied,
            "seconds": round(self.seconds, 3),
            "objects_per_s": round(objects / self.seconds, 1) if self.seconds > 0 else 0.0,
            "mb_per_s": round(self.bytes_copied / self.seconds / 1e6, 1) if self.seconds else 0.0,
            "errors": self.errors,
        }


async def copy_prefix(
    copier: Copier,
    source: ObjectStore,
    dest: ObjectStore,
    *,
    concurrency: int = 16,
) -> BulkResult:
    """Copy every object of ``source`` to the same relative key in ``dest`` (both stores are
    rooted at their prefix), ``concurrency`` objects at a time; large objects also run
    ``copier.concurrency`` parts at a time within the copier's byte budget. A failed object
    is counted and logged; the others go on."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    started = time.monotonic()
    result = BulkResult()
    existing = {meta.key: meta async for meta in dest.list()}
    gate = asyncio.Semaphore(concurrency)

    async def one(meta: ObjectMeta) -> None:
        try:
            copied = await copier.copy(
                source,
                meta.key,
                dest,
                meta.key,
                observed=meta,
                dest_observed=existing.get(meta.key, ABSENT),
            )
        except Exception as exc:
            result.failed += 1
            if len(result.errors) < KEPT_ERRORS:
                result.errors.append(f"{meta.url}: {exc}")
            log.error("copy failed", source=meta.url, error=str(exc))
        else:
            if copied.status == "copied":
                result.copied += 1
                result.bytes_copied += copied.bytes_transferred
            else:
                result.skipped += 1
        finally:
            gate.release()

    async with asyncio.TaskGroup() as group:
        async for meta in source.list():
            if meta.attributes_known and replica_source(meta.attributes.user_metadata):
                result.skipped += 1  # a replica is never copied on
                continue
            await gate.acquire()
            group.create_task(one(meta))
    result.seconds = time.monotonic() - started
    return result
