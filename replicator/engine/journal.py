"""The upload journal: where the copy engine reports a multipart upload's progress, so that a
copy killed mid-way resumes its upload instead of starting over (the daemon keeps it in the
catalog, ``replicator.catalog.journal``; one process alone can keep it in memory)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from connectors.base import PartToken


@dataclass(frozen=True)
class DonePart:
    """A stored part with what is needed to finish the copy without reading it again."""

    token: PartToken
    crc32c: int
    block_digests: tuple[tuple[int, bytes], ...]


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


class UploadJournal(Protocol):
    """Where the engine reports upload progress so a crashed copy can resume."""

    async def find(self, dest_url: str) -> UploadRecord | None:
        """The upload in progress to ``dest_url`` (of whatever source version), if any."""
        ...

    async def started(self, record: UploadRecord) -> None: ...

    async def part_done(self, record: UploadRecord, part: DonePart) -> None: ...

    async def finished(self, record: UploadRecord) -> None: ...


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
