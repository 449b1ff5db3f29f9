"""The daemon's safety net: with every notification lost (none is wired at all), the periodic
reconciliation alone brings the destination in line with the source, deletions included,
without a restart; one daemon at a time holds its lease; each run's findings are in the
catalog."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.error import HTTPError

from azure.core.exceptions import ResourceNotFoundError

from connectors import open_store
from connectors.base import ObjectStore
from replicator.catalog import open_catalog
from replicator.daemon.applier import register_datasets
from replicator.daemon.config import load_daemon_config
from replicator.daemon.reconcile.safety_net import SafetyNet, SafetyNetSettings
from replicator.daemon.service import Daemon
from replicator.devstack import StackState
from replicator.pipeline.bus import AsyncProducer
from replicator.pipeline.ingest.publisher import Publisher
from replicator.pipeline.rules import Router
from tests.independent import read_object
from tests.reconcile.conftest import REPLICATOR

CONVERGE_S = 90


def read_now(url: str) -> bytes | None:
    """The object's bytes, or None if it went between its listing and its read (the daemon
    is still at work)."""
    try:
        return read_object(url)
    except (HTTPError, ResourceNotFoundError):
        return None


async def contents(store: ObjectStore) -> dict[str, bytes | None]:
    return {meta.key: read_now(meta.url) async for meta in store.list()}


async def converged(source: ObjectStore, dest: ObjectStore) -> None:
    """Poll until the destination holds exactly the source's objects (with a deadline)."""
    deadline = asyncio.get_running_loop().time() + CONVERGE_S
    while True:
        wanted, found = await contents(source), await contents(dest)
        if wanted == found:
            return
        assert asyncio.get_running_loop().time() < deadline, (sorted(wanted), sorted(found))
        await asyncio.sleep(0.2)  # polling a condition, with a deadline


def daemon_config(
    path: Path, devstack: StackState, source_url: str, dest_url: str, reconcile: str
) -> Path:
    suffix = uuid.uuid4().hex[:8]
    path.write_text(f"""
[kafka]
bootstrap = "{devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"]}"
group = "g-{suffix}"
partitions = 2
changes_topic = "c-{suffix}"
dlq_topic = "d-{suffix}"
session_timeout_ms = 2000
heartbeat_interval_ms = 300

[catalog]
url = "sqlite:///{path.parent}/catalog.db"

[http]
host = "127.0.0.1"
port = 0

[reconcile]
{reconcile}

[[routes]]
name = "net"
source = "{source_url}"
destinations = ["{dest_url}"]
""")
    return path


async def test_reconciliation_converges_without_events(
    devstack: StackState, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    source_url, dest_url = f"s3://net-{suffix}/data/", f"gs://net-{suffix}/copy/"
    config_path = daemon_config(
        tmp_path / "replicator.toml", devstack, source_url, dest_url, 'interval = "1s"'
    )
    source, dest = open_store(source_url), open_store(dest_url)
    await source.create_container()
    await dest.create_container()
    for i in range(20):
        await source.put(f"k{i:02d}", f"first {i}".encode())

    daemon = Daemon(load_daemon_config(config_path))
    stop, ready = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(daemon.run(stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        await converged(source, dest)

        # Deletions, overwrites and new objects, none of them notified.
        for i in range(5):
            await source.delete(f"k{i:02d}")
        for i in range(5, 8):
            await source.put(f"k{i:02d}", f"second {i}".encode())
        await source.put("new/a", b"late")
        await converged(source, dest)
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)
        await source.close()
        await dest.close()

    async with await open_catalog(f"sqlite:///{tmp_path}/catalog.db") as catalog:
        runs = await catalog.reconcile_runs("net")
    assert sum(run.missing for run in runs) >= 21
    assert sum(run.extra for run in runs) >= 5
    assert all(run.error is None for run in runs)
    shown = await asyncio.create_subprocess_exec(
        *REPLICATOR,
        *("catalog", "reconciliations", "--config", str(config_path), "--json"),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(shown.communicate(), 60)
    listed = [json.loads(line) for line in out.decode().splitlines()]
    assert len(listed) == len(runs)
    assert {run["route"] for run in listed} == {"net"}


async def test_one_holder_of_the_lease_at_a_time(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ttl = timedelta(minutes=5)
    async with await open_catalog(f"sqlite:///{tmp_path}/catalog.db") as catalog:
        assert await catalog.take_lease("reconcile", "a", ttl, now)
        assert not await catalog.take_lease("reconcile", "b", ttl, now)
        assert await catalog.take_lease("reconcile", "a", ttl, now)  # renewed
        # Expired (its holder died): another daemon takes it.
        assert await catalog.take_lease("reconcile", "b", ttl, now + ttl + timedelta(seconds=1))
        assert not await catalog.take_lease("reconcile", "a", ttl, now + ttl)
        await catalog.release_lease("reconcile", "b")
        assert await catalog.take_lease("reconcile", "a", ttl, now)


async def test_a_backfill_via_kafka_is_applied_by_the_daemons(
    devstack: StackState, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    source_url, dest_url = f"s3://kafka-{suffix}/", f"az://kafka-{suffix}/"
    config_path = daemon_config(
        tmp_path / "replicator.toml", devstack, source_url, dest_url, "enabled = false"
    )
    source, dest = open_store(source_url), open_store(dest_url)
    await source.create_container()
    await dest.create_container()
    for i in range(10):
        await source.put(f"k{i}", f"via kafka {i}".encode())

    daemon = Daemon(load_daemon_config(config_path))
    stop, ready = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(daemon.run(stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        backfill = await asyncio.create_subprocess_exec(
            *REPLICATOR,
            *("backfill", "--config", str(config_path), "--via-kafka", "--json"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(backfill.communicate(), 120)
        assert backfill.returncode == 0, err
        assert json.loads(out)["net"]["published"] == 10
        await converged(source, dest)
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)
        await source.close()
        await dest.close()


async def test_the_group_reconciles_once_an_interval(devstack: StackState, tmp_path: Path) -> None:
    """Two daemons' safety nets: the first to run holds the lease for an interval, so the
    other skips that interval's run instead of repeating it."""
    suffix = uuid.uuid4().hex[:8]
    config = load_daemon_config(
        daemon_config(
            tmp_path / "replicator.toml",
            devstack,
            f"mem://in-{suffix}/",
            f"mem://out-{suffix}/",
            "enabled = false",
        )
    )
    router = Router(config)
    producer = AsyncProducer(Daemon(config).kafka_settings())
    publisher = Publisher(producer, router)
    settings = SafetyNetSettings(interval=timedelta(hours=1))
    async with await open_catalog(config.catalog.url) as catalog:
        await register_datasets(catalog, config)
        stores = {url: open_store(url) for url in config.routes[0].store_urls()}
        for store in stores.values():
            await store.create_container()
        try:
            first = SafetyNet(router, catalog, stores.__getitem__, publisher, settings, holder="a")
            other = SafetyNet(router, catalog, stores.__getitem__, publisher, settings, holder="b")
            [run] = await first.reconcile()
            assert (run.route, run.error) == ("net", None)
            assert await other.reconcile() == []
            assert len(await first.reconcile()) == 1  # its own lease: renewed
            assert [r.holder for r in await catalog.reconcile_runs("net")] == ["a", "a"]
        finally:
            await producer.close()
