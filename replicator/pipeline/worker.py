"""Consume change events and apply them: per-key order, bounded concurrency, nothing lost.

* Records with the same key are applied strictly in offset order (each waits for the previous
  one of its key); records of different keys run concurrently up to ``concurrency``.
* A record becomes committable only when its handler returned (its effects are durable); the
  offset tracker commits, per partition, the offset below which everything is done.
* Transient failures are retried with backoff, holding back only later records of the same
  key; permanent failures, exhausted retries and unparseable records go to the DLQ topic with
  the reason in headers, and the offset moves on.
* On revocation (rebalance or shutdown): no new work is taken for those partitions, in-flight
  work is drained within a deadline, the final offsets are committed, then they are released.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import structlog

from connectors.base import StoreError
from replicator.engine.retry import RetryPolicy
from replicator.pipeline.bus import DLQ_TOPIC, AsyncConsumer, AsyncProducer, BusError, Record
from replicator.pipeline.events import ChangeEvent, ParseError
from replicator.pipeline.offsets import OffsetTracker

log = structlog.get_logger(__name__)

Handler = Callable[[ChangeEvent], Awaitable[object]]
TopicPartitionKey = tuple[str, int]


class PermanentFailure(Exception):
    """A handler's verdict that retrying cannot help; the record goes to the DLQ."""


def _retriable(exc: BaseException) -> bool:
    if isinstance(exc, StoreError):
        return exc.retriable
    return isinstance(exc, (BusError, ConnectionError, TimeoutError))


@dataclass
class WorkerStats:
    applied: int = 0
    dead_lettered: int = 0
    retries: int = 0
    committed: dict[TopicPartitionKey, int] = field(default_factory=dict)


class Worker:
    def __init__(
        self,
        consumer: AsyncConsumer,
        producer: AsyncProducer,
        handler: Handler,
        *,
        concurrency: int = 32,
        max_in_flight: int = 2000,
        retry: RetryPolicy | None = None,
        commit_interval_s: float = 1.0,
        drain_deadline_s: float = 30.0,
        dlq_topic: str = DLQ_TOPIC,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.handler = handler
        self.retry = retry or RetryPolicy(max_attempts=8, time_budget=600)
        self.commit_interval_s = commit_interval_s
        self.drain_deadline_s = drain_deadline_s
        self.dlq_topic = dlq_topic
        self.max_in_flight = max_in_flight
        self.stats = WorkerStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._tracker = OffsetTracker()
        self._tails: dict[bytes | None, asyncio.Task[None]] = {}
        self._tasks: dict[TopicPartitionKey, set[asyncio.Task[None]]] = {}
        self._revoked: set[TopicPartitionKey] = set()
        # Backpressure: stop polling while max_in_flight records are unfinished.
        self._unfinished = 0
        self._room_freed = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain, commit and leave the group."""
        await self.consumer.start(on_revoke=self._drain, on_assign=self._assigned)
        next_commit = time.monotonic() + self.commit_interval_s
        try:
            while not stop.is_set():
                while self._unfinished >= self.max_in_flight:
                    self._room_freed.clear()
                    await self._room_freed.wait()
                positions: dict[TopicPartitionKey, int] = {}
                if time.monotonic() >= next_commit:
                    positions = self._positions(self._tracker.partitions())
                    next_commit = time.monotonic() + self.commit_interval_s
                records = await self.consumer.poll(
                    0.2, commit=positions, max_records=self.max_in_flight - self._unfinished
                )
                self._committed(positions)
                for record in records:
                    self._dispatch(record)
        finally:
            # Leaving the group revokes every partition: drained and committed in _drain.
            await self.consumer.close()

    # -- dispatch ----------------------------------------------------------------------------

    def _assigned(self, partitions: list[TopicPartitionKey]) -> None:
        self._revoked.difference_update(partitions)

    def _dispatch(self, record: Record) -> None:
        tp = (record.topic, record.partition)
        if tp in self._revoked:
            return
        self._tracker.started(record.topic, record.partition, record.offset)
        self._unfinished += 1
        previous = self._tails.get(record.key)
        task = asyncio.create_task(self._process(record, previous))
        self._tails[record.key] = task
        self._tasks.setdefault(tp, set()).add(task)
        task.add_done_callback(lambda done: self._finished(record, done))

    def _finished(self, record: Record, task: asyncio.Task[None]) -> None:
        if self._tails.get(record.key) is task:
            del self._tails[record.key]
        self._tasks.get((record.topic, record.partition), set()).discard(task)
        # Work that finishes while its partition drains still counts towards the final
        # commit; only a partition already handed back (forgotten) is no longer tracked.
        tracked = self._tracker.is_started(record.topic, record.partition, record.offset)
        if tracked and not task.cancelled() and task.exception() is None:
            self._tracker.finished(record.topic, record.partition, record.offset)
        self._unfinished -= 1
        self._room_freed.set()

    async def _process(self, record: Record, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            event = ChangeEvent.from_json(record.value or b"")
        except ParseError as exc:
            await self._dead_letter(record, exc.reason, "ParseError")
            return
        rng = random.Random()
        delay = self.retry.base_delay
        deadline = time.monotonic() + self.retry.time_budget
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                async with self._slots:
                    await self.handler(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, PermanentFailure) or not _retriable(exc):
                    await self._dead_letter(record, str(exc), type(exc).__name__)
                    return
                delay = self.retry.next_delay(delay, rng)
                if attempt == self.retry.max_attempts or time.monotonic() + delay > deadline:
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
            ("replicator.reason", reason[:4000].encode()),
            ("replicator.error", error_type.encode()),
            ("replicator.topic", record.topic.encode()),
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
        while True:
            try:
                await self.producer.send(self.dlq_topic, record.key, record.value or b"", headers)
            except BusError as exc:
                delay = self.retry.next_delay(delay, rng)
                log.error("DLQ unavailable; holding the record", error=str(exc))
                await asyncio.sleep(delay)
            else:
                self.stats.dead_lettered += 1
                return

    # -- commits and revocation --------------------------------------------------------------

    def _positions(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        positions = {}
        for topic, partition in partitions:
            offset = self._tracker.committable(topic, partition)
            if offset is not None:
                positions[(topic, partition)] = offset
        return positions

    def _committed(self, positions: dict[TopicPartitionKey, int]) -> None:
        for (topic, partition), offset in positions.items():
            self._tracker.mark_committed(topic, partition, offset)
            self.stats.committed[(topic, partition)] = offset

    async def _drain(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Stop work on ``partitions``, wait for what is in flight, return what to commit."""
        self._revoked.update(partitions)
        pending = [task for tp in partitions for task in self._tasks.get(tp, set())]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.drain_deadline_s)
            for task in late:
                task.cancel()
            if late:
                log.warning(
                    "drain deadline passed; cancelled in-flight events will be redone",
                    count=len(late),
                )
        positions = self._positions(partitions)
        for topic, partition in partitions:
            self._tracker.forget(topic, partition)
            self._tasks.pop((topic, partition), None)
        self._committed(positions)
        return positions
