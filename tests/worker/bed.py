"""The worker's test bed on the real Kafka-protocol broker: a topic pair per test, a producer,
and readers of what was committed and dead-lettered."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from replicator.engine.retry import RetryPolicy
from replicator.pipeline.bus import AsyncConsumer, AsyncProducer, KafkaSettings, ensure_topics
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.worker import Worker

PARTITIONS = 4
FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05, max_attempts=5)


class Bed:
    def __init__(self, bootstrap: str) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.topic = f"changes-{suffix}"
        self.dlq = f"dlq-{suffix}"
        self.settings = KafkaSettings(
            bootstrap,
            group_id=f"group-{suffix}",
            session_timeout_ms=2000,
            heartbeat_interval_ms=300,
        )
        ensure_topics(self.settings, {self.topic: PARTITIONS, self.dlq: 1})
        self.producer = AsyncProducer(self.settings)
        self.end: dict[int, int] = {}

    async def publish(self, key: str, value: bytes) -> None:
        partition, offset = await self.producer.send(self.topic, key.encode(), value)
        self.end[partition] = max(self.end.get(partition, 0), offset + 1)

    def worker(
        self,
        handler: Callable[[ChangeEvent], Awaitable[None]],
        *,
        max_poll_interval_ms: int | None = None,
        **kwargs: Any,
    ) -> Worker[ChangeEvent]:
        settings = self.settings
        if max_poll_interval_ms is not None:
            settings = dataclasses.replace(settings, max_poll_interval_ms=max_poll_interval_ms)
        return Worker(
            AsyncConsumer(settings, [self.topic]),
            self.producer,
            handler,
            decode=ChangeEvent.from_json,
            retry=FAST_RETRY,
            dlq_topic=self.dlq,
            commit_interval_s=0.2,
            **kwargs,
        )

    def committed(self) -> dict[int, int]:
        consumer = Consumer(
            {"bootstrap.servers": self.settings.bootstrap, "group.id": self.settings.group_id}
        )
        try:
            parts = consumer.committed(
                [TopicPartition(self.topic, p) for p in range(PARTITIONS)], timeout=10
            )
            return {p.partition: p.offset for p in parts if p.offset >= 0}
        finally:
            consumer.close()

    def dead_letters(self, expected: int) -> list[tuple[bytes | None, dict[str, bytes]]]:
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 2000,
                "heartbeat.interval.ms": 300,
            }
        )
        consumer.subscribe([self.dlq])
        found: list[tuple[bytes | None, dict[str, bytes]]] = []
        try:
            for _ in range(200):
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    raw = message.headers() or []
                    pairs = raw.items() if isinstance(raw, dict) else raw
                    headers = {name: value for name, value in pairs if isinstance(value, bytes)}
                    found.append((message.value(), headers))
                if len(found) >= expected:
                    break
        finally:
            consumer.close()
        return found


def event(key: str, number: int) -> bytes:
    return ChangeEvent(
        "put", f"mem://bucket/{key}", None, f"{number:08d}", 1, None, datetime.now(UTC), "scan"
    ).to_json()


async def until(condition: Callable[[], bool], seconds: float = 60) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")
