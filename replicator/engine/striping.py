"""Fleet-wide striping: the parts of one large object copied by every daemon of the group.

The copy that took a large object's change (the coordinator) creates the upload and journals it
in the catalog as any multipart copy does; then, instead of copying the parts itself, it
publishes one ``PartTask`` per missing part for the whole group, and any daemon takes a task,
copies its part pinned to the source version and journals it (``Copier.copy_part_task``). The
coordinator watches the journal: once every part is there it completes the upload as a copy in
one process does (the whole object's CRC32C and fingerprint from the journaled parts, the final
write fenced, the result verified) and records the replica, and only then is the change's
offset committed.

* A part whose pinned read finds another version halts the upload for everyone
  (``Halt.SOURCE_CHANGED``): the coordinator aborts it and starts over on the new version.
* A part that cannot be copied (its retries spent) halts it with the reason (``Halt.FAILED``):
  the copy fails as any copy does, and the change is retried as any change is.
* A daemon killed mid-part never commits its task: the group gives it to another daemon, which
  finds the part missing from the journal and copies it. A task of an upload that is gone,
  replaced or halted is dropped; a part already journaled is not copied again.
* A coordinator killed mid-way leaves its change uncommitted: the daemon that takes it next
  resumes the journaled upload and publishes the parts still missing.
* If no part arrives for ``republish_after_s`` (every task lost to a fault nobody reported),
  the coordinator publishes the missing parts again; a part copied twice holds the same bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from connectors.base import MiB, ObjectMeta, ObjectStore, PreconditionFailed, TransientError
from replicator.engine.journal import Halt, UploadJournal, UploadRecord
from replicator.engine.planner import Part
from replicator.engine.reads import SourceMoved

log = structlog.get_logger(__name__)

#: Why a striped copy's parts are not sent in order into one upload session.
STRIPED = "its parts are copied by every daemon of the group (striped)"
DEFAULT_WATCH_INTERVAL_S = 1.0
DEFAULT_REPUBLISH_AFTER_S = 300.0


@dataclass(frozen=True)
class PartTask:
    """One part of a striped upload, as any daemon of the group can copy it: where from (the
    source's root and key, pinned to one version), where to (the destination's root, key and
    upload), and which bytes."""

    source_root: str
    source_key: str
    dest_root: str
    dest_key: str
    upload_id: str
    #: The version the upload is of, as journaled (``results.version_id``).
    source_version: str
    #: The pin of every read: the source's ETag and, where the store reads by version, its id.
    etag: str | None
    version: str | None
    size: int
    part_size: int
    number: int
    offset: int
    length: int

    @property
    def source_url(self) -> str:
        return self.source_root + self.source_key

    @property
    def dest_url(self) -> str:
        return self.dest_root + self.dest_key

    @property
    def end(self) -> int:
        return self.offset + self.length


class PartPublisher(Protocol):
    """Where a coordinator hands its parts to the group (the daemon: a Kafka topic)."""

    async def publish(self, tasks: Sequence[PartTask]) -> None: ...


@dataclass(frozen=True)
class Striping:
    """When a copy is striped across the group, and how its coordinator follows it."""

    #: Objects of at least this size are striped.
    threshold: int
    publisher: PartPublisher
    #: How often the coordinator reads the journal while the group copies the parts.
    watch_interval_s: float = DEFAULT_WATCH_INTERVAL_S
    republish_after_s: float = DEFAULT_REPUBLISH_AFTER_S

    def __post_init__(self) -> None:
        if self.threshold < 5 * MiB:
            # Below the smallest part most stores take, a striped object would be one part.
            raise ValueError("the stripe threshold must be at least 5 MiB")

    def applies(self, size: int) -> bool:
        return size >= self.threshold


def part_tasks(
    record: UploadRecord,
    parts: Sequence[Part],
    src: ObjectMeta,
    source: ObjectStore,
    dest: ObjectStore,
    source_key: str,
    dest_key: str,
) -> list[PartTask]:
    """The tasks of ``parts`` of ``record``'s upload, read pinned as the coordinator would."""
    return [
        PartTask(
            source_root=source.root_url,
            source_key=source_key,
            dest_root=dest.root_url,
            dest_key=dest_key,
            upload_id=record.upload_id,
            source_version=record.source_version,
            etag=src.etag,
            version=src.version if source.limits.versioned_reads else None,
            size=record.size,
            part_size=record.part_size,
            number=part.number,
            offset=part.offset,
            length=part.length,
        )
        for part in parts
    ]


async def follow(
    striping: Striping,
    journal: UploadJournal,
    record: UploadRecord,
    tasks: Sequence[PartTask],
    wanted: int,
) -> None:
    """Publish ``tasks`` (unless a coordinator before this one did: they are on the topic
    until copied) and wait until the journal holds ``wanted`` parts of ``record``'s upload
    (they are then in ``record.parts``). Raises ``SourceMoved`` when a part found the
    source changed (or the upload was forgotten: the copy looks at both ends again) and
    ``TransientError`` when a part failed for good."""
    if record.parts_published:
        log.info(
            "following a striped upload whose parts are already published",
            destination=record.dest_url,
            upload_id=record.upload_id,
            missing=len(tasks),
        )
    else:
        await striping.publisher.publish(tasks)
        await journal.published(record)
        log.info(
            "parts published for the group",
            destination=record.dest_url,
            upload_id=record.upload_id,
            parts=len(tasks),
        )
    progress_at = time.monotonic()
    while len(record.parts) < wanted:
        await asyncio.sleep(striping.watch_interval_s)
        current = await journal.find(record.dest_url)
        if current is None or current.upload_id != record.upload_id:
            raise SourceMoved(
                PreconditionFailed(
                    f"striped upload {record.upload_id} was forgotten while its parts were "
                    "being copied",
                    url=record.dest_url,
                )
            )
        because = current.halted_because or "no reason given"
        if current.halted is Halt.SOURCE_CHANGED:
            raise SourceMoved(PreconditionFailed(because, url=record.source_url))
        if current.halted is Halt.FAILED:
            raise TransientError(
                f"a part of the striped upload failed: {because}", url=record.dest_url
            )
        if len(current.parts) > len(record.parts):
            progress_at = time.monotonic()
        record.parts.update(current.parts)
        if time.monotonic() - progress_at > striping.republish_after_s:
            missing = [task for task in tasks if task.number not in record.parts]
            log.warning(
                "no part of a striped upload arrived for a while; publishing the missing ones "
                "again",
                destination=record.dest_url,
                upload_id=record.upload_id,
                missing=len(missing),
            )
            await striping.publisher.publish(missing)
            progress_at = time.monotonic()
