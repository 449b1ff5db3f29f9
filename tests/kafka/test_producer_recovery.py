"""A producer whose broker lost its state: librdkafka's idempotent producer then cannot deliver
again (here: the broker no longer knows its producer id, and the producer bumps its epoch and
retries without end until each record times out; elsewhere: a fatal out-of-order sequence
error). The daemon's producer must replace it, and no send may wait for ever."""

from __future__ import annotations

import asyncio

from replicator.pipeline.bus import AsyncProducer, BusError, KafkaSettings, ensure_topics
from tests.private_broker import PrivateBroker, wait_for_broker

TOPIC = "changes"


async def _send_until_delivered(producer: AsyncProducer, value: bytes, seconds: float) -> int:
    """Send ``value`` as an ingest path does (a BusError is tried again); the offset."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            _, offset = await asyncio.wait_for(producer.send(TOPIC, b"key", value), 30)
            return offset
        except BusError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_producer_recovers_from_a_broker_that_lost_its_state(
    private_broker: PrivateBroker,
) -> None:
    await asyncio.to_thread(wait_for_broker, private_broker.bootstrap)
    # Records time out after 10 s (librdkafka's default is 5 minutes) to keep the test short.
    settings = KafkaSettings(
        private_broker.bootstrap, group_id="unused", extra={"message.timeout.ms": "10000"}
    )
    await asyncio.to_thread(ensure_topics, settings, {TOPIC: 1})
    producer = AsyncProducer(settings)
    try:
        for number in range(3):
            await _send_until_delivered(producer, f"before {number}".encode(), 30)
        # The broker comes back empty (memory storage): the producer id and sequence numbers
        # the producer holds mean nothing to it any more.
        private_broker.kill()
        private_broker.start()
        await asyncio.to_thread(wait_for_broker, private_broker.bootstrap)
        await asyncio.to_thread(ensure_topics, settings, {TOPIC: 1})
        offsets = [
            await _send_until_delivered(producer, f"after {number}".encode(), 60)
            for number in range(3)
        ]
        assert offsets == sorted(offsets)
        assert producer.replaced >= 1
    finally:
        await asyncio.wait_for(producer.close(), 60)
