"""The copy engine's upload journal, kept in the catalog so a copy resumes after a crash.

A multipart upload's id and every completed part (its token, checksums and fingerprint block
digests) are committed as the engine reports them. A new process asking for the same
destination and source version gets them back, and the engine uploads only the missing parts.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import and_, delete, select, update

from connectors.base import ChecksumKind, PartToken
from replicator.catalog.database import Database, dialect_insert
from replicator.catalog.schema import upload_parts, uploads
from replicator.engine.journal import Halt
from replicator.engine.transfer import DonePart, UploadRecord


class CatalogJournal:
    """An ``UploadJournal`` (see ``replicator.engine.transfer``) persisted in the catalog
    database."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def find(self, dest_url: str) -> UploadRecord | None:
        async with self._db.read() as conn:
            head = (
                await conn.execute(select(uploads).where(uploads.c.dest_url == dest_url))
            ).one_or_none()
            if head is None:
                return None
            parts = (
                await conn.execute(
                    select(upload_parts).where(
                        upload_parts.c.dest_url == dest_url,
                        upload_parts.c.upload_id == head.upload_id,
                    )
                )
            ).all()
        record = UploadRecord(
            dest_url=head.dest_url,
            upload_id=head.upload_id,
            source_url=head.source_url,
            source_version=head.source_version,
            part_size=head.part_size,
            size=head.size,
            parts_published=head.parts_published,
            halted=None if head.halted is None else Halt(head.halted),
            halted_because=head.halted_because,
        )
        for part in parts:
            token = PartToken(
                part_number=part.part_number,
                token=part.token,
                size=part.size,
                checksums={ChecksumKind(k): v for k, v in part.checksums.items()},
            )
            digests = tuple((int(i), bytes.fromhex(h)) for i, h in part.block_digests)
            record.parts[part.part_number] = DonePart(token, part.crc32c, digests)
        return record

    async def started(self, record: UploadRecord) -> None:
        """Remember a new upload; it replaces any older one to the same destination."""
        async with self._db.write() as conn:
            await conn.execute(
                delete(upload_parts).where(upload_parts.c.dest_url == record.dest_url)
            )
            stmt = dialect_insert(self._db.backend, uploads).values(
                dest_url=record.dest_url,
                upload_id=record.upload_id,
                source_url=record.source_url,
                source_version=record.source_version,
                part_size=record.part_size,
                size=record.size,
                started_at=_now(),
                parts_published=record.parts_published,
                halted=None,
                halted_because=None,
            )
            replaced = {c.name: stmt.excluded[c.name] for c in uploads.c if c.name != "dest_url"}
            await conn.execute(
                stmt.on_conflict_do_update(index_elements=["dest_url"], set_=replaced)
            )
        for part in list(record.parts.values()):
            await self.part_done(record, part)

    async def part_done(self, record: UploadRecord, part: DonePart) -> None:
        token = part.token
        async with self._db.write() as conn:
            stmt = dialect_insert(self._db.backend, upload_parts).values(
                dest_url=record.dest_url,
                upload_id=record.upload_id,
                part_number=token.part_number,
                token=token.token,
                size=token.size,
                checksums={str(k): v for k, v in token.checksums.items()},
                crc32c=part.crc32c,
                block_digests=[[i, digest.hex()] for i, digest in part.block_digests],
            )
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["dest_url", "upload_id", "part_number"],
                    set_={
                        c: stmt.excluded[c]
                        for c in ("token", "size", "checksums", "crc32c", "block_digests")
                    },
                )
            )
        # Only once it is durable: the engine completes the upload from this map.
        record.parts[token.part_number] = part

    async def finished(self, record: UploadRecord) -> None:
        """Forget an upload that was completed or aborted (only that one, by its id)."""
        await self.forget(record.dest_url, record.upload_id)

    async def published(self, record: UploadRecord) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                update(uploads)
                .where(
                    uploads.c.dest_url == record.dest_url,
                    uploads.c.upload_id == record.upload_id,
                )
                .values(parts_published=True)
            )
        record.parts_published = True

    async def halt(self, record: UploadRecord, halt: Halt, because: str) -> None:
        """Stop ``record``'s upload for every daemon working on it; the first halt stays, and
        an upload forgotten or replaced meanwhile is left alone."""
        async with self._db.write() as conn:
            await conn.execute(
                update(uploads)
                .where(
                    uploads.c.dest_url == record.dest_url,
                    uploads.c.upload_id == record.upload_id,
                    uploads.c.halted.is_(None),
                )
                .values(halted=str(halt), halted_because=because[:2000])
            )

    async def stale(self, under: str, before: datetime) -> list[tuple[str, str]]:
        """The ``(dest_url, upload_id)`` of uploads to URLs under ``under`` started before
        ``before``."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(uploads.c.dest_url, uploads.c.upload_id).where(
                    uploads.c.dest_url.startswith(under, autoescape=True),
                    uploads.c.started_at < before,
                )
            )
            return [(row.dest_url, row.upload_id) for row in rows]

    async def started_since(self, under: str, since: datetime) -> set[tuple[str, str]]:
        """The ``(dest_url, upload_id)`` of uploads to URLs under ``under`` started at or
        after ``since``."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(uploads.c.dest_url, uploads.c.upload_id).where(
                    uploads.c.dest_url.startswith(under, autoescape=True),
                    uploads.c.started_at >= since,
                )
            )
            return {(row.dest_url, row.upload_id) for row in rows}

    async def forget(self, dest_url: str, upload_id: str) -> None:
        """Forget the upload ``upload_id`` to ``dest_url`` and its parts, if recorded."""
        async with self._db.write() as conn:
            await conn.execute(
                delete(upload_parts).where(
                    and_(
                        upload_parts.c.dest_url == dest_url,
                        upload_parts.c.upload_id == upload_id,
                    )
                )
            )
            await conn.execute(
                delete(uploads).where(
                    uploads.c.dest_url == dest_url, uploads.c.upload_id == upload_id
                )
            )


def _now() -> datetime:
    return datetime.now(UTC)
