"""One part of a multipart copy, from its read to its journal entry (``copy_one_part``): shared
by a copy's own parts (``engine.transfer``) and the parts of striped copies any daemon of the
group takes (``Copier.copy_part_task``)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import structlog

from connectors.base import Buffer, IntegrityError, ObjectStore, PreconditionFailed
from replicator.engine.journal import DonePart, UploadJournal, UploadRecord
from replicator.engine.memory import ByteBudget
from replicator.engine.ordered import InOrder
from replicator.engine.planner import Part
from replicator.engine.reads import SourceMoved, StripeReader, pinned
from replicator.engine.retry import RetryPolicy
from replicator.engine.verification import check_part, digest_of

log = structlog.get_logger(__name__)

# A part whose checksums the store reports differently is sent again, up to this many times.
PART_INTEGRITY_ATTEMPTS = 3


async def copy_one_part(
    part: Part,
    record: UploadRecord,
    source_url: str,
    source: ObjectStore,
    source_key: str,
    dest: ObjectStore,
    dest_key: str,
    pin: Mapping[str, str | None],
    *,
    retry: RetryPolicy,
    budget: ByteBudget,
    journal: UploadJournal,
    stripe: StripeReader | None = None,
    order: InOrder | None = None,
) -> None:
    """Copy ``part`` into ``record``'s upload: read it pinned (from ``stripe``, a shared
    streamed read, else alone), checksum it, upload it with its checksums, check what the
    store reports against them (a damaged part is sent again, up to three times), journal it
    (an ordered upload keeps it in ``record`` only) and hand its buffer back to ``budget``."""

    async def read_alone() -> Buffer:
        # Into a buffer of the budget's, handed back below once uploaded, so that parts
        # reuse the same few buffers (a file source reads straight into it).
        buffer = budget.take_buffer(part.length)
        got = await pinned(
            lambda: retry.run(
                lambda: source.read_into(source_key, part.offset, buffer, **pin),
                what=f"read part {part.number}",
            )
        )
        return buffer if got == part.length else memoryview(buffer)[:got]

    async def read_first() -> Buffer:
        if stripe is None:
            return await read_alone()
        try:
            return await stripe.take(part.length)
        except SourceMoved:
            raise
        except Exception as exc:
            broke = exc
        finally:
            stripe.mark_taken(part.number)
        log.info("streamed read broke; reading the part alone", part=part.number, error=str(broke))
        return await read_alone()

    async with budget.reserve(part.length):
        for attempt in range(1, PART_INTEGRITY_ATTEMPTS + 1):
            data = await (read_first() if attempt == 1 else read_alone())
            if len(data) != part.length:
                raise SourceMoved(
                    PreconditionFailed(
                        f"part {part.number}: read {len(data)} bytes, expected {part.length}",
                        url=source_url,
                    )
                )
            digest = await digest_of(data, part.offset, dest.limits.write_checksum)
            if order is not None:
                await order.turn(part.number)
            try:
                # The store refuses bytes that do not match the checksum sent with them.
                token = await retry.run(
                    functools.partial(
                        dest.put_part_at,
                        dest_key,
                        record.upload_id,
                        part.number,
                        part.offset,
                        data,
                        checksums=digest.checksums,
                    ),
                    what=f"upload part {part.number}",
                )
                check_part(token, digest, part, dest.url_for(dest_key))
            except IntegrityError as exc:
                if attempt == PART_INTEGRITY_ATTEMPTS:
                    raise
                log.warning(
                    "part damaged in transit; sending it again",
                    part=part.number,
                    attempt=attempt,
                    error=str(exc),
                )
                continue
            done = DonePart(token, digest.crc32c, tuple(digest.blocks))
            if record.ordered:
                record.parts[part.number] = done
            else:
                await journal.part_done(record, done)
            if order is not None:
                await order.done(part.number)
            if isinstance(data, bytearray):
                # The upload returned: the SDK no longer holds the buffer (after a
                # failure it might, and the buffer is left to the garbage collector).
                budget.give_buffer(data)
            return
