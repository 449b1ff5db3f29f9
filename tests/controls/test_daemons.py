"""Pause and scheduled resume across a running fleet: two daemons in one consumer group,
fed by real S3 notifications (moto -> SQS -> Kafka). One daemon's admin API pauses a
destination until a moment; events keep flowing (the other destination is served, nothing is
written to the paused one, nothing is dead-lettered, the offsets move on, the lag shows on
every daemon); the daemon that took the pause is stopped, and the one left applies the held
changes once the pause ends."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from connectors.base import NotFound
from replicator.daemon.service import Daemon
from replicator.devstack import StackState
from replicator.pipeline.bus import KafkaSettings, read_topic, topic_partitions
from tests.controls.bed import eventually
from tests.e2e.test_daemon import Lake
from tests.independent import read_object

KEYS = [f"obj-{i}" for i in range(6)]


def committed(settings: KafkaSettings, topic: str) -> dict[int, int]:
    """The group's committed offset of each partition of ``topic`` that has one."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": settings.group_id})
    try:
        found = consumer.committed(
            [TopicPartition(topic, p) for p in range(topic_partitions(settings, topic))],
            timeout=10,
        )
        return {p.partition: p.offset for p in found if p.offset >= 0}
    finally:
        consumer.close()


async def admin(daemon: Daemon, method: str, path: str, **kwargs: Any) -> Any:
    url = f"http://127.0.0.1:{daemon.http_port}{path}"
    async with aiohttp.ClientSession() as http, http.request(method, url, **kwargs) as response:
        assert response.status == 200, await response.text()
        if path == "/metrics":
            return {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(await response.text())
                for sample in family.samples
            }
        return await response.json()


async def test_a_scheduled_resume_fires_on_the_daemon_left(
    devstack: StackState, tmp_path: Path
) -> None:
    lake = Lake(devstack, tmp_path)
    source, gs, az = await lake.open()
    first, second = Daemon(lake.config), Daemon(lake.config)
    stops = [asyncio.Event(), asyncio.Event()]
    readies = [asyncio.Event(), asyncio.Event()]
    running = [
        asyncio.create_task(d.run(stop, ready))
        for d, stop, ready in zip((first, second), stops, readies, strict=True)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
        until = datetime.now(UTC) + timedelta(seconds=15)
        paused = await admin(
            first,
            "POST",
            "/controls/pauses",
            json={
                "route": "lake",
                "destination": lake.gs,
                "until": until.isoformat(),
                "reason": "maintenance window",
                "by": "ops",
            },
        )
        assert paused["until"] == until.isoformat()

        async def honoured_everywhere() -> bool:
            for daemon in (first, second):
                health = await admin(daemon, "GET", "/healthz")
                if health["destinations_paused"] != [lake.gs]:
                    return False
            return True

        # A pause reaches every daemon within seconds (each reads the pauses at most 2 s old).
        await eventually(honoured_everywhere, "every daemon honouring the pause")
        payloads = {key: os.urandom(2000) for key in KEYS}
        for key, data in payloads.items():
            await source.put(key, data)

        async def other_served() -> bool:
            try:
                return all(read_object(az.url_for(k)) == d for k, d in payloads.items())
            except Exception:
                return False

        await eventually(other_served, "the destination not paused served")
        for key in KEYS:
            try:
                await gs.head(key)
            except NotFound:
                continue
            raise AssertionError(f"{key} written to the paused destination")

        status = await admin(second, "GET", "/status")
        [route] = [r for r in status["routes"] if r["destination"] == lake.gs]
        assert route["paused"]["paused_by"] == "ops"
        assert route["paused"]["reason"] == "maintenance window"
        metrics = await admin(second, "GET", "/metrics")
        gauge = ("replicator_destination_paused", (("destination", lake.gs), ("route", "lake")))
        assert metrics[gauge] == 1

        async def all_held() -> bool:
            status = await admin(second, "GET", "/status")
            [route] = [r for r in status["routes"] if r["destination"] == lake.gs]
            return route["operations_pending"] >= len(KEYS)

        await eventually(all_held, "the paused destination's changes held, its lag visible")
        kafka = first.kafka_settings()
        topic = lake.config.kafka.changes_topic

        async def offsets_moved_on() -> bool:
            records = await asyncio.to_thread(read_topic, kafka, topic)
            ends = {r.partition: r.offset + 1 for r in records}
            return bool(ends) and await asyncio.to_thread(committed, kafka, topic) == ends

        await eventually(offsets_moved_on, "the held events' offsets committed")

        stops[0].set()
        await asyncio.wait_for(running[0], 60)
        assert datetime.now(UTC) < until, "the pause ended before the daemon was stopped"

        async def caught_up() -> bool:
            try:
                return all(read_object(gs.url_for(k)) == d for k, d in payloads.items())
            except Exception:
                return False

        await eventually(caught_up, "held changes applied by the daemon left")
        assert datetime.now(UTC) >= until, "applied before the pause ended"

        async def lag_gone() -> bool:
            status = await admin(second, "GET", "/status")
            [route] = [r for r in status["routes"] if r["destination"] == lake.gs]
            return route["operations_pending"] == 0 and route["paused"] is None

        await eventually(lag_gone, "the lag back to zero, the pause gone")
        metrics = await admin(second, "GET", "/metrics")
        assert metrics[gauge] == 0
        assert metrics[("replicator_events_dead_lettered_total", ())] == 0
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*running, return_exceptions=True)
        for store in (source, gs, az):
            await store.close()
