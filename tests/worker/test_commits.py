"""Commit bookkeeping on a broker that goes away: an offset counts as committed only when the
broker accepted its commit, and the worker survives the outage."""

from __future__ import annotations

import asyncio

from replicator.pipeline.events import ChangeEvent
from tests.private_broker import PrivateBroker, wait_for_broker
from tests.worker.bed import Bed, event, until


async def test_commits_refused_while_the_broker_is_down_are_not_counted(
    private_broker: PrivateBroker,
) -> None:
    """Records finish while the broker is down, and it comes back without the group's state:
    the worker never reports as committed an offset the broker does not hold, and it keeps
    running."""
    await asyncio.to_thread(wait_for_broker, private_broker.bootstrap)
    bed = await asyncio.to_thread(Bed, private_broker.bootstrap)
    for number in range(8):
        await bed.publish(f"key-{number}", event(f"key-{number}", number))
    release = asyncio.Event()
    taken: list[str] = []

    async def handler(change: ChangeEvent) -> None:
        taken.append(change.source_url)
        await release.wait()

    worker = bed.worker(handler)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await until(lambda: len(taken) == 8, seconds=60)
        private_broker.kill()
        release.set()
        await until(lambda: worker.stats.applied == 8)
        # The broker comes back empty (memory storage): the commits made while it was gone,
        # and the ones after it is back, are refused. Whatever the worker counts as committed
        # must be what the broker holds, at every moment.
        private_broker.start()
        await asyncio.to_thread(wait_for_broker, private_broker.bootstrap)
        deadline = asyncio.get_running_loop().time() + 15
        while asyncio.get_running_loop().time() < deadline:
            held = await asyncio.to_thread(bed.committed)
            for (_, partition), offset in worker.stats.committed.items():
                assert held.get(partition, -1) >= offset, (
                    f"partition {partition}: counted committed at {offset}, broker has "
                    f"{held.get(partition)}"
                )
            await asyncio.sleep(0.2)
        assert not running.done(), "the worker stopped"
    finally:
        stop.set()
        await asyncio.wait_for(running, 120)
        await bed.producer.close()
