"""The dead-letter topic as an operator sees it: each dead-lettered record with the reason the
worker gave (``replicator.worker`` writes it in the record's headers), and the replay of
chosen records to the changes topic once what refused them is fixed (a parser update, a bug
fixed). Change events are hints, so a record replayed twice, or one whose change was applied
meanwhile, does no harm: the source is read afresh and the per-key high-water drops stale
changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from replicator.pipeline.bus import AsyncProducer, KafkaSettings, Record, read_topic

REPLAYED_FROM = "replicator.replayed_from"


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    error: str
    # Where the worker read it (topic, partition, offset), as its headers say.
    origin: str
    dead_lettered_at: datetime | None
    # The DLQ refused the record whole: only its identity was kept, it cannot be replayed.
    value_dropped: bool

    @classmethod
    def from_record(cls, record: Record) -> DeadLetter:
        headers = {name: value.decode("utf-8", errors="replace") for name, value in record.headers}
        origin = "/".join(
            headers.get(f"replicator.{part}", "?") for part in ("topic", "partition", "offset")
        )
        when = (
            datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
            if record.timestamp_ms is not None
            else None
        )
        return cls(
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            reason=headers.get("replicator.reason", ""),
            error=headers.get("replicator.error", ""),
            origin=origin,
            dead_lettered_at=when,
            value_dropped="replicator.value_dropped" in headers,
        )

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    def as_dict(self, *, with_value: bool = False) -> dict[str, object]:
        out: dict[str, object] = {
            "position": self.position,
            "key": _text(self.key),
            "reason": self.reason,
            "error": self.error,
            "origin": self.origin,
            "dead_lettered_at": self.dead_lettered_at.isoformat()
            if self.dead_lettered_at
            else None,
            "value_dropped": self.value_dropped,
        }
        if with_value:
            out["value"] = _text(self.value)
        return out


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", errors="backslashreplace")


async def dead_letters(
    settings: KafkaSettings,
    topic: str,
    *,
    since: datetime | None = None,
    reason: str | None = None,
    from_offset: int = 0,
    to_offset: int | None = None,
) -> list[DeadLetter]:
    """The dead letters in the offset range, dead-lettered at or after ``since``, whose reason
    or error contains ``reason`` (case-insensitive), oldest first per partition."""
    records = await asyncio.to_thread(
        read_topic, settings, topic, from_offset=from_offset, to_offset=to_offset
    )
    letters = [DeadLetter.from_record(record) for record in records]
    wanted = reason.lower() if reason else None
    return [
        letter
        for letter in letters
        if (since is None or (letter.dead_lettered_at and letter.dead_lettered_at >= since))
        and (wanted is None or wanted in f"{letter.error}: {letter.reason}".lower())
    ]


async def replay(
    producer: AsyncProducer, letters: Sequence[DeadLetter], changes_topic: str
) -> tuple[int, list[DeadLetter]]:
    """Publish each letter's record again to ``changes_topic`` (same key, so the same
    partition and per-key order), marked with where it came from. Returns how many were
    replayed and the letters that cannot be (their value was dropped)."""
    skipped = [letter for letter in letters if letter.value_dropped or letter.value is None]
    replayable = [letter for letter in letters if letter not in skipped]
    for letter in replayable:
        await producer.send(
            changes_topic,
            letter.key,
            letter.value or b"",
            [(REPLAYED_FROM, letter.position.encode())],
        )
    await producer.flush()
    return len(replayable), skipped
