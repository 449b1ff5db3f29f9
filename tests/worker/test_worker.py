"""The worker on the real Kafka-protocol broker: order per key, commits, DLQ, rebalances."""

from __future__ import annotations

import asyncio
import collections

from connectors.base import TransientError
from replicator.pipeline.bus import AsyncConsumer
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.ownership import Ownership
from replicator.pipeline.worker import PermanentFailure
from tests.worker.bed import Bed, event, until


async def test_per_key_order_and_commit_to_the_end(bed: Bed) -> None:
    """Events of one key apply in order although keys run concurrently; all offsets commit."""
    keys = [f"key-{k}" for k in range(20)]
    for number in range(300):
        await bed.publish(keys[number % 20], event(keys[number % 20], number))
    seen: dict[str, list[int]] = collections.defaultdict(list)
    concurrent = 0
    peak = 0

    async def handler(change: ChangeEvent) -> None:
        nonlocal concurrent, peak
        concurrent += 1
        peak = max(peak, concurrent)
        await asyncio.sleep(0.001 * (hash(change.sequencer) % 7))
        seen[change.source_url].append(int(change.sequencer))
        concurrent -= 1

    worker = bed.worker(handler, concurrency=16)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: worker.stats.applied == 300)
    stop.set()
    await running
    for numbers in seen.values():
        assert numbers == sorted(numbers)
    assert sum(map(len, seen.values())) == 300
    assert peak > 1, "different keys ran concurrently"
    assert bed.committed() == bed.end


async def test_poison_goes_to_dlq_and_offsets_advance(bed: Bed) -> None:
    """Unparseable records are dead-lettered with a reason; good ones still apply."""
    poison = [b"", b"not json", b'{"kind": "explode"}', b"\xff" * 100, b"x" * 900_000]
    for index, value in enumerate(poison):
        await bed.publish(f"bad-{index}", value)
        await bed.publish(f"good-{index}", event(f"good-{index}", index))
    applied: list[str] = []

    async def handler(change: ChangeEvent) -> None:
        applied.append(change.source_url)

    worker = bed.worker(handler)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: worker.stats.applied + worker.stats.dead_lettered == 10)
    stop.set()
    await running
    assert len(applied) == 5
    letters = bed.dead_letters(5)
    assert len(letters) == 5
    for _, headers in letters:
        assert headers["replicator.reason"]
        assert headers["replicator.error"] == b"ParseError"
    assert bed.committed() == bed.end


async def test_transient_failures_retry_without_blocking_other_keys(bed: Bed) -> None:
    """A key whose event keeps failing transiently delays only itself."""
    await bed.publish("slow", event("slow", 0))
    for number in range(1, 21):
        await bed.publish(f"fast-{number}", event(f"fast-{number}", number))
    failures = collections.Counter[str]()
    order: list[str] = []

    async def handler(change: ChangeEvent) -> None:
        if change.source_url.endswith("/slow") and failures["slow"] < 3:
            failures["slow"] += 1
            raise TransientError("503 from the destination")
        order.append(change.source_url)

    worker = bed.worker(handler)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: worker.stats.applied == 21)
    stop.set()
    await running
    assert failures["slow"] == 3
    assert worker.stats.retries == 3
    assert order.count("mem://bucket/slow") == 1


async def test_permanent_failure_is_dead_lettered(bed: Bed) -> None:
    await bed.publish("k", event("k", 1))

    async def handler(change: ChangeEvent) -> None:
        raise PermanentFailure("object larger than the destination allows")

    worker = bed.worker(handler)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: worker.stats.dead_lettered == 1)
    stop.set()
    await running
    [(_, headers)] = bed.dead_letters(1)
    assert b"larger than" in headers["replicator.reason"]
    assert bed.committed() == bed.end


async def test_clean_stop_hands_over_without_loss_or_duplicates(bed: Bed) -> None:
    """Two members; one stops cleanly mid-stream: every event applied exactly once."""
    total = 400
    for number in range(total):
        await bed.publish(f"k{number % 37}", event(f"k{number % 37}", number))
    applied = collections.Counter[str]()

    async def handler(change: ChangeEvent) -> None:
        await asyncio.sleep(0.005)
        applied[change.sequencer] += 1

    first, second = bed.worker(handler), bed.worker(handler)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    running_first = asyncio.create_task(first.run(stop_first))
    running_second = asyncio.create_task(second.run(stop_second))
    await until(lambda: sum(applied.values()) >= 100)
    stop_first.set()
    await running_first
    await until(lambda: len(applied) == total, seconds=120)
    stop_second.set()
    await running_second
    assert len(applied) == total
    assert max(applied.values()) == 1, "a clean hand-over redoes nothing"
    assert bed.committed() == bed.end


async def test_consumer_hands_over_what_is_fetched_in_one_poll(bed: Bed) -> None:
    """Records already fetched come back together, at most ``max_records`` at a time, each
    partition's in offset order, none twice."""
    for number in range(60):
        await bed.publish(f"key-{number % 6}", event(f"key-{number % 6}", number))
    consumer = AsyncConsumer(bed.settings, [bed.topic])
    await consumer.start(Ownership())
    received: dict[int, list[int]] = collections.defaultdict(list)
    sizes = []
    try:
        for _ in range(600):
            records = (await consumer.poll(0.1, max_records=7)).records
            if records:
                sizes.append(len(records))
            for record in records:
                received[record.partition].append(record.offset)
            if sum(map(len, received.values())) >= 60:
                break
    finally:
        await consumer.close()
    assert max(sizes) <= 7
    assert max(sizes) > 1, "records fetched together are handed over together"
    for partition, offsets in received.items():
        assert offsets == list(range(bed.end[partition])), partition


async def test_backpressure_bounds_unfinished_records(bed: Bed) -> None:
    """No more than ``max_in_flight`` records are taken before earlier ones finish, and every
    record is still applied and committed."""
    for number in range(80):
        await bed.publish(f"key-{number}", event(f"key-{number}", number))
    unfinished = 0
    peak = 0
    release = asyncio.Event()

    async def handler(change: ChangeEvent) -> None:
        nonlocal unfinished, peak
        unfinished += 1
        peak = max(peak, unfinished)
        await release.wait()
        unfinished -= 1

    worker = bed.worker(handler, concurrency=32, max_in_flight=5)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: unfinished == 5)
    # Held records keep the worker from taking more, however long they are held.
    for _ in range(20):
        await asyncio.sleep(0.01)
        assert unfinished == 5
    release.set()
    await until(lambda: worker.stats.applied == 80)
    stop.set()
    await running
    assert peak == 5
    assert bed.committed() == bed.end
