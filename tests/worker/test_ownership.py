"""Partition ownership under faults, on the real broker: held work never costs the assignment,
revoked work is finished before another member takes it, and any record that cannot be
processed is dead-lettered so its partition's commits move on."""

from __future__ import annotations

import asyncio
import collections
import json

from replicator.pipeline.events import ChangeEvent
from tests.worker.bed import Bed, event, until


async def test_held_work_keeps_the_assignment_and_applies_each_record_once(bed: Bed) -> None:
    """A worker at its in-flight limit for longer than ``max.poll.interval`` keeps its
    partitions (it pauses them and goes on polling): nothing is redelivered or applied twice,
    and the worker does not fail."""
    for number in range(12):
        await bed.publish(f"key-{number}", event(f"key-{number}", number))
    applied = collections.Counter[str]()
    release = asyncio.Event()

    entered = collections.Counter[str]()

    async def handler(change: ChangeEvent) -> None:
        entered[change.sequencer] += 1
        await release.wait()
        applied[change.sequencer] += 1

    worker = bed.worker(handler, max_in_flight=3, max_poll_interval_ms=2500)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: sum(entered.values()) == 3)
    # Well past max.poll.interval: a member that stopped calling the consumer would be
    # removed from the group by its own client and get its partitions back as redeliveries.
    await asyncio.sleep(6)
    assert not running.done()
    release.set()
    await until(lambda: len(applied) == 12, seconds=60)
    stop.set()
    await running
    assert max(applied.values()) == 1, f"records applied twice: {applied}"
    assert bed.committed() == bed.end


async def test_revoked_work_is_finished_before_another_member_takes_its_keys(bed: Bed) -> None:
    """A member that gives up partitions (here: it stops) cancels what it could not finish in
    the drain deadline and waits for the cancelled work to clean up before the partitions move:
    two members never work on one key at once."""
    warm_up = [f"warm-{number}" for number in range(32)]
    for key in warm_up:
        await bed.publish(key, event(key, 0))
    active = collections.Counter[str]()
    overlaps: list[str] = []
    started = collections.Counter[str]()
    release = asyncio.Event()

    async def handler(change: ChangeEvent) -> None:
        key = change.source_url
        if "warm-" in key:
            return
        active[key] += 1
        started[key] += 1
        if active[key] > 1:
            overlaps.append(key)
        try:
            await release.wait()
        except asyncio.CancelledError:
            # Cancelled mid-copy: aborting an upload takes a while, and until it is done this
            # member is still writing the key (longer than the group takes to rebalance).
            await asyncio.sleep(4.0)
            raise
        finally:
            active[key] -= 1

    # The local broker waits up to the rebalance timeout (max.poll.interval) for members
    # during a rebalance: keep it short.
    first = bed.worker(handler, drain_deadline_s=0.5, max_poll_interval_ms=15_000)
    second = bed.worker(handler, drain_deadline_s=0.5, max_poll_interval_ms=15_000)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    running_first = asyncio.create_task(first.run(stop_first))
    running_second = asyncio.create_task(second.run(stop_second))
    # Both members own partitions once both have applied warm-up records, and then no more
    # since the last warm-up record.
    await until(lambda: first.stats.applied > 0 and second.stats.applied > 0, seconds=60)
    await until(lambda: first.stats.applied + second.stats.applied >= len(warm_up), seconds=60)
    keys = [f"key-{number}" for number in range(16)]
    for key in keys:
        await bed.publish(key, event(key, 1))
    await until(lambda: len(started) == len(keys), seconds=60)
    stop_first.set()
    await running_first
    await until(lambda: sum(started.values()) >= len(keys) + 1, seconds=60)
    release.set()
    await until(lambda: bed.committed() == bed.end, seconds=60)
    stop_second.set()
    await running_second
    assert overlaps == []


async def test_any_failure_is_dead_lettered_and_the_partition_moves_on(bed: Bed) -> None:
    """Records that break the worker itself (JSON nested too deep for the parser, a reason
    that cannot be encoded) are dead-lettered with a reason, and later records of the same
    partitions are applied and committed."""
    too_deep = b"[" * 200_000 + b"]" * 200_000
    surrogate_key = json.dumps(
        {
            "kind": "put",
            "source_url": "mem://bucket/\ud800-lone-surrogate",
            "version": None,
            "sequencer": "1",
            "size": 1,
            "etag": None,
            "event_time": "2026-11-30T00:00:00+00:00",
            "origin": "scan",
        }
    ).encode()
    for partition_key in ("a", "b", "c", "d"):
        await bed.publish(partition_key, too_deep)
        await bed.publish(partition_key, surrogate_key)
        await bed.publish(partition_key, event(partition_key, 2))
    applied: list[str] = []

    async def handler(change: ChangeEvent) -> None:
        if "surrogate" in change.source_url:
            raise ValueError(f"cannot apply {change.source_url}")
        applied.append(change.source_url)

    worker = bed.worker(handler)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: bed.committed() == bed.end, seconds=60)
    stop.set()
    await running
    assert sorted(applied) == [f"mem://bucket/{k}" for k in "abcd"]
    letters = bed.dead_letters(8)
    assert len(letters) == 8
    assert all(headers["replicator.reason"] for _, headers in letters)
    assert worker.stats.dead_lettered == 8
