"""The upload journal: where the copy engine reports a multipart upload's progress, so that a
copy killed mid-way resumes its upload instead of starting over (the daemon keeps it in the
catalog, ``replicator.catalog.journal``; one process alone can keep it in memory)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from connectors.base import PartToken


@dataclass(frozen=True)
class DonePart:
    """A stored part with what is needed to finish the copy without reading it again."""

    token: PartToken
    crc32c: int
    block_digests: tuple[tuple[int, bytes], ...]


class Halt(enum.StrEnum):
    """Why an upload was stopped for every process working on it (a striped upload's parts
    are copied by the whole fleet): what the one completing it does next depends on it."""

    #: A part's pinned read found another version: the copy starts over on the new one.
    SOURCE_CHANGED = "source_changed"
    #: A part could not be copied (its retries spent, or an error retrying cannot mend).
    FAILED = "failed"


@dataclass
class UploadRecord:
    """A multipart upload in progress, enough to resume it after a crash."""

    dest_url: str
    upload_id: str
    source_url: str
    source_version: str
    part_size: int
    size: int
    parts: dict[int, DonePart] = field(default_factory=dict)
    #: An ordered upload (``ObjectStore.create_ordered_upload``): its id is a credential, so
    #: it is never journaled nor logged, and a crash leaves nothing to resume.
    ordered: bool = False
    #: A striped upload whose part tasks went out to the group (``striping``).
    parts_published: bool = False
    halted: Halt | None = None
    halted_because: str | None = None


class UploadJournal(Protocol):
    """Where the engine reports upload progress so a crashed copy can resume."""

    async def find(self, dest_url: str) -> UploadRecord | None:
        """The upload in progress to ``dest_url`` (of whatever source version), if any."""
        ...

    async def started(self, record: UploadRecord) -> None: ...

    async def part_done(self, record: UploadRecord, part: DonePart) -> None: ...

    async def finished(self, record: UploadRecord) -> None: ...

    async def published(self, record: UploadRecord) -> None:
        """Remember that ``record``'s part tasks went out to the group."""
        ...

    async def halt(self, record: UploadRecord, halt: Halt, because: str) -> None:
        """Stop ``record``'s upload for every process working on it (the first halt stays)."""
        ...


class MemoryJournal:
    """An UploadJournal kept in process memory (resumes within one process only)."""

    def __init__(self) -> None:
        self.records: dict[str, UploadRecord] = {}

    async def find(self, dest_url: str) -> UploadRecord | None:
        return self.records.get(dest_url)

    async def started(self, record: UploadRecord) -> None:
        self.records[record.dest_url] = record

    async def part_done(self, record: UploadRecord, part: DonePart) -> None:
        record.parts[part.token.part_number] = part

    async def finished(self, record: UploadRecord) -> None:
        self.records.pop(record.dest_url, None)

    async def published(self, record: UploadRecord) -> None:
        record.parts_published = True

    async def halt(self, record: UploadRecord, halt: Halt, because: str) -> None:
        kept = self.records.get(record.dest_url)
        if kept is not None and kept.upload_id == record.upload_id and kept.halted is None:
            kept.halted, kept.halted_because = halt, because
