"""Consume records and apply them: per-key order, bounded concurrency, nothing lost, nothing
stalled. The daemon runs one worker on change events and one on the part tasks of striped
copies (``decode`` turns a record's value into what its handler takes).

* Records with the same key are applied strictly in offset order (each waits for the previous
  one of its key); records of different keys run concurrently up to ``concurrency``.
* A record becomes committable only when its handler returned (its effects are durable); the
  partition ownership (``ownership``) commits, per partition, the offset below which
  everything is done, and only what the broker accepted counts as committed.
* At ``max_in_flight`` unfinished records the worker pauses its partitions and goes on polling
  (so it never exceeds ``max.poll.interval`` and keeps its assignment), resuming them once
  work has drained to three quarters of the limit.
* Transient failures are retried with backoff, holding back only later records of the same
  key; an unavailable dependency (``errors.Unavailable``: the catalog restarting) is waited
  for without limit, since every record would fail alike; permanent failures, exhausted
  retries, unparseable records and any unexpected error go to the DLQ topic with the reason
  in headers (and a log line naming the record), and the offset moves on.
* Rebalances and shutdown are handled by ``ownership``: revoked work is drained, cancelled
  past a deadline and awaited before the partitions go.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import structlog

from connectors.base import StoreError
from replicator.engine.retry import RetryPolicy
from replicator.errors import Unavailable
from replicator.pipeline.bus import DLQ_TOPIC, AsyncConsumer, AsyncProducer, BusError, Record
from replicator.pipeline.events import ParseError
from replicator.pipeline.ownership import OwnedPartition, Ownership

log = structlog.get_logger(__name__)


class Task(Protocol):
    """What a worker's records decode into: something about one source object."""

    @property
    def source_url(self) -> str: ...


T = TypeVar("T", bound=Task)
Handler = Callable[[T], Awaitable[object]]
Admission = Callable[[T], AbstractAsyncContextManager[object]]
TopicPartitionKey = tuple[str, int]
# Headers of a dead letter are bytes; the DLQ must take any record, even one whose reason
# holds text that does not encode (lone surrogates from a hostile key).
_REASON_LIMIT = 4000
# Longest wait between two tries while a service every record needs is unavailable.
UNAVAILABLE_MAX_DELAY_S = 30.0


class PermanentFailure(Exception):
    """A handler's verdict that retrying cannot help; the record goes to the DLQ."""


def _retriable(exc: BaseException) -> bool:
    if isinstance(exc, StoreError):
        return exc.retriable
    return isinstance(exc, (BusError, ConnectionError, TimeoutError))


def _encode(text: str) -> bytes:
    return text.encode("utf-8", errors="backslashreplace")


@dataclass
class WorkerStats:
    applied: int = 0
    dead_lettered: int = 0
    retries: int = 0
    failed_unexpectedly: int = 0
    committed: dict[TopicPartitionKey, int] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def _admit_all(_: object) -> AsyncIterator[None]:
    yield


class Worker(Generic[T]):
    def __init__(
        self,
        consumer: AsyncConsumer,
        producer: AsyncProducer,
        handler: Handler[T],
        *,
        decode: Callable[[bytes], T],
        concurrency: int = 32,
        max_in_flight: int = 2000,
        retry: RetryPolicy | None = None,
        commit_interval_s: float = 1.0,
        drain_deadline_s: float = 30.0,
        cancel_deadline_s: float = 60.0,
        dlq_topic: str = DLQ_TOPIC,
        admission: Admission[T] | None = None,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.handler = handler
        self.decode = decode
        self.retry = retry or RetryPolicy(max_attempts=8, time_budget=600)
        self.commit_interval_s = commit_interval_s
        self.dlq_topic = dlq_topic
        self.max_in_flight = max_in_flight
        self.resume_at = max(1, max_in_flight * 3 // 4)
        # Taken before a worker slot, so that records waiting for their own admission (a
        # route's concurrency limit) do not hold slots other records could use.
        self.admission: Admission[T] = admission or _admit_all
        self.stats = WorkerStats()
        self.ownership = Ownership(
            drain_deadline_s=drain_deadline_s, cancel_deadline_s=cancel_deadline_s
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._tails: dict[bytes | None, asyncio.Task[None]] = {}
        self._unfinished = 0

    @property
    def unfinished(self) -> int:
        """Records taken and not yet applied or dead-lettered."""
        return self._unfinished

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain, commit and leave the group."""
        await self.consumer.start(self.ownership)
        next_commit = time.monotonic() + self.commit_interval_s
        try:
            while not stop.is_set():
                await self._apply_backpressure()
                positions: dict[OwnedPartition, int] = {}
                if time.monotonic() >= next_commit:
                    positions = self.ownership.positions()
                    next_commit = time.monotonic() + self.commit_interval_s
                polled = await self.consumer.poll(
                    0.2,
                    commit={part.key: offset for part, offset in positions.items()},
                    max_records=max(0, self.max_in_flight - self._unfinished),
                )
                if positions and polled.committed:
                    self.ownership.committed(positions)
                    for part, offset in positions.items():
                        self.stats.committed[part.key] = offset
                for record in polled.records:
                    self._dispatch(record)
        finally:
            # Leaving the group revokes every partition: their work is finished or cancelled
            # and what finished is committed (Ownership.revoked).
            await self.consumer.close()

    # -- backpressure --------------------------------------------------------------------------

    async def _apply_backpressure(self) -> None:
        # A refusal (a partition a rebalance just took) leaves the flags as they were: the
        # next turn tries again with the partitions owned then.
        if self._unfinished >= self.max_in_flight:
            running = [part for part in self.ownership.owned() if not part.paused]
            if running and await self.consumer.pause([part.key for part in running]):
                for part in running:
                    part.paused = True
        elif self._unfinished <= self.resume_at:
            paused = [part for part in self.ownership.owned() if part.paused]
            if paused and await self.consumer.resume([part.key for part in paused]):
                for part in paused:
                    part.paused = False

    # -- dispatch ------------------------------------------------------------------------------

    def _dispatch(self, record: Record) -> None:
        part = self.ownership.take(record.topic, record.partition, record.offset)
        if part is None:
            return
        self._unfinished += 1
        previous = self._tails.get(record.key)
        task = asyncio.create_task(self._process(record, previous))
        self._tails[record.key] = task
        part.tasks.add(task)
        task.add_done_callback(lambda done: self._finished(record, part, done))

    def _finished(self, record: Record, part: OwnedPartition, task: asyncio.Task[None]) -> None:
        if self._tails.get(record.key) is task:
            del self._tails[record.key]
        part.tasks.discard(task)
        self._unfinished -= 1
        if task.cancelled():
            return  # the partition was given up: the next owner redoes the record
        if task.exception() is None:
            part.offsets.finish(record.offset)

    async def _process(self, record: Record, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            await self._apply(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug or an input nobody foresaw: never a stalled partition.
            self.stats.failed_unexpectedly += 1
            log.exception(
                "record could not be processed; dead-lettering it",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                error=repr(exc)[:500],
            )
            await self._dead_letter(record, f"unexpected error: {exc!r}", type(exc).__name__)

    async def _apply(self, record: Record) -> None:
        try:
            event = self.decode(record.value or b"")
        except ParseError as exc:
            await self._dead_letter(record, exc.reason, "ParseError")
            return
        rng = random.Random()
        delay = self.retry.base_delay
        deadline = time.monotonic() + self.retry.time_budget
        attempt = 0
        while True:
            try:
                async with self.admission(event), self._slots:
                    await self.handler(event)
            except asyncio.CancelledError:
                raise
            except Unavailable as exc:
                # The catalog (or another service every record needs) is down: every record
                # would fail alike, so none is given up; they wait for it to come back.
                delay = min(self.retry.next_delay(delay, rng), UNAVAILABLE_MAX_DELAY_S)
                self.stats.retries += 1
                log.warning(
                    "a service the worker needs is unavailable; waiting",
                    source=event.source_url,
                    delay=round(delay, 3),
                    error=str(exc),
                )
                await asyncio.sleep(delay)
                continue
            except Exception as exc:
                attempt += 1
                if isinstance(exc, PermanentFailure) or not _retriable(exc):
                    await self._dead_letter(record, str(exc), type(exc).__name__)
                    return
                delay = self.retry.next_delay(delay, rng)
                if attempt >= self.retry.max_attempts or time.monotonic() + delay > deadline:
                    await self._dead_letter(
                        record, f"gave up after {attempt} attempts: {exc}", type(exc).__name__
                    )
                    return
                self.stats.retries += 1
                log.warning(
                    "event failed; retrying",
                    source=event.source_url,
                    attempt=attempt,
                    delay=round(delay, 3),
                    error=str(exc),
                )
                await asyncio.sleep(delay)
            else:
                self.stats.applied += 1
                return

    async def _dead_letter(self, record: Record, reason: str, error_type: str) -> None:
        """Park a record in the DLQ; retried until the broker takes it, so nothing is lost."""
        headers = [
            ("replicator.reason", _encode(reason[:_REASON_LIMIT])),
            ("replicator.error", _encode(error_type)),
            ("replicator.topic", _encode(record.topic)),
            ("replicator.partition", str(record.partition).encode()),
            ("replicator.offset", str(record.offset).encode()),
        ]
        log.error(
            "record dead-lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason[:500],
            error=error_type,
        )
        delay = self.retry.base_delay
        rng = random.Random()
        value = record.value or b""
        while True:
            try:
                await self.producer.send(self.dlq_topic, record.key, value, headers)
            except BusError as exc:
                if exc.record_too_large and value:
                    # The DLQ refuses this record whole: park what identifies it instead
                    # (topic, partition and offset are in the headers), so the partition
                    # is never blocked by a record that can never be sent.
                    value = b""
                    headers.append(
                        ("replicator.value_dropped", str(len(record.value or b"")).encode())
                    )
                    continue
                delay = self.retry.next_delay(delay, rng)
                log.error("DLQ unavailable; holding the record", error=str(exc))
                await asyncio.sleep(delay)
            else:
                self.stats.dead_lettered += 1
                return
