"""The catalog blinking: a SQLite catalog held locked by another process past its busy
timeout, a PostgreSQL catalog restarted mid-run. Events wait and are retried; nothing is
dead-lettered because the catalog was briefly unavailable, and nothing is lost."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors import open_store
from replicator.catalog import Catalog, open_catalog
from replicator.daemon.applier import Applier, register_datasets
from replicator.daemon.service import make_worker
from replicator.devstack import StackState, free_port, postgres
from replicator.engine.transfer import Copier
from replicator.pipeline.bus import AsyncConsumer
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.rules import Router, load_config
from replicator.pipeline.worker import Worker
from tests.worker.bed import FAST_RETRY, Bed, until

OBJECTS = 24


class Run:
    """A route mem:// -> mem://, a worker applying its events through a catalog."""

    def __init__(self, bed: Bed, catalog: Catalog) -> None:
        tag = uuid.uuid4().hex[:10]
        self.source_url, self.dest_url = f"mem://src-{tag}/", f"mem://dst-{tag}/"
        self.config = load_config(
            {
                "routes": [
                    {"name": f"r{tag}", "source": self.source_url, "destinations": [self.dest_url]}
                ]
            }
        )
        self.bed = bed
        self.catalog = catalog
        self.applier = Applier(Router(self.config), catalog, Copier())
        self.worker: Worker[ChangeEvent] = make_worker(
            AsyncConsumer(bed.settings, [bed.topic]),
            bed.producer,
            self.applier,
            workers=8,
            dlq_topic=bed.dlq,
            retry=FAST_RETRY,
            commit_interval_s=0.2,
        )
        self.stop = asyncio.Event()
        self.running: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await register_datasets(self.catalog, self.config)
        for url in (self.source_url, self.dest_url):
            await open_store(url).create_container()
        self.running = asyncio.create_task(self.worker.run(self.stop))

    async def publish(self, first: int, count: int) -> None:
        source = open_store(self.source_url)
        when = datetime.now(UTC) - timedelta(seconds=1)
        for number in range(first, first + count):
            key = f"k{number:03d}"
            await source.put(key, key.encode())
            url = self.source_url + key
            value = ChangeEvent("put", url, None, "", None, None, when, "scan").to_json()
            await self.bed.publish(url, value)

    async def finish(self) -> None:
        self.stop.set()
        if self.running is not None:
            await self.running
        await self.applier.close()

    async def copied(self) -> set[str]:
        return {meta.key async for meta in open_store(self.dest_url).list()}


@pytest.fixture
async def bed(devstack: StackState) -> AsyncIterator[Bed]:
    test_bed = Bed(devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"])
    yield test_bed
    await test_bed.producer.close()


def hold_lock(path: Path, seconds: float, locked: threading.Event) -> Callable[[], None]:
    """Another process's transaction holding the SQLite write lock for ``seconds``."""

    def hold() -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("BEGIN EXCLUSIVE")
            locked.set()
            threading.Event().wait(seconds)
            connection.execute("COMMIT")
        finally:
            connection.close()

    return hold


async def test_a_locked_sqlite_catalog_is_waited_for(bed: Bed, tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    catalog = await open_catalog(f"sqlite:///{path}?busy_timeout=200ms")
    run = Run(bed, catalog)
    try:
        await run.start()
        await run.publish(0, OBJECTS // 2)
        await until(lambda: run.worker.stats.applied == OBJECTS // 2, seconds=60)
        locked = threading.Event()
        holder = asyncio.create_task(asyncio.to_thread(hold_lock(path, 3.0, locked)))
        await asyncio.to_thread(locked.wait)
        await run.publish(OBJECTS // 2, OBJECTS // 2)
        await holder
        await until(lambda: run.worker.stats.applied == OBJECTS, seconds=60)
        await until(lambda: bed.committed() == bed.end, seconds=30)
        assert run.worker.stats.dead_lettered == 0
        assert run.worker.stats.retries > 0, "the lock was never met: the test proves nothing"
        assert len(await run.copied()) == OBJECTS
    finally:
        await run.finish()
        await catalog.close()


class RestartablePostgres:
    """A PostgreSQL server of this test's own, stopped and started again on its port and data
    (a restart, a failover), never the session's shared server."""

    def __init__(self) -> None:
        self.port = free_port()
        self.launch = postgres.prepare(self.port)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.launch.url

    def start(self) -> None:
        run_as = self.launch.run_as
        # The test bed trades durability for speed; a crash test needs commits to be durable
        # (later -c settings win).
        durable = ["-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "full_page_writes=on"]
        self.process = subprocess.Popen(
            [*self.launch.argv, *durable],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.launch.data_dir,
            start_new_session=True,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
        deadline = time.monotonic() + 60
        while not self.launch.ready():
            if time.monotonic() > deadline:
                raise AssertionError("the test's PostgreSQL did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """An immediate shutdown (SIGQUIT): connections are cut and the server recovers from
        its log when started again, as after a crash."""
        if self.process is not None:
            self.process.send_signal(signal.SIGQUIT)
            self.process.wait(30)
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.launch.data_dir, ignore_errors=True)


@pytest.fixture
def restartable() -> Iterator[RestartablePostgres]:
    server = RestartablePostgres()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


async def test_a_restarted_postgresql_catalog_is_waited_for(
    bed: Bed, restartable: RestartablePostgres
) -> None:
    catalog = await open_catalog(restartable.url)
    run = Run(bed, catalog)
    try:
        await run.start()
        await run.publish(0, OBJECTS // 2)
        await until(lambda: run.worker.stats.applied == OBJECTS // 2, seconds=60)
        await asyncio.to_thread(restartable.stop)
        await run.publish(OBJECTS // 2, OBJECTS // 2)
        # Down for a while: the new events reach the worker and wait for the catalog.
        await until(lambda: run.worker.stats.retries > 0, seconds=60)
        await asyncio.to_thread(restartable.start)
        await until(lambda: run.worker.stats.applied == OBJECTS, seconds=120)
        await until(lambda: bed.committed() == bed.end, seconds=30)
        assert run.worker.stats.dead_lettered == 0
        assert len(await run.copied()) == OBJECTS
        [lag] = await catalog.route_lag(destination=run.dest_url)
        assert lag.replicated_ops == OBJECTS
        assert lag.pending_ops == 0
    finally:
        await run.finish()
        await catalog.close()
