"""Operating the daemon: liveness and readiness, separate admin and ingest listeners, the
admin token, and one clear line with exit code 69 when Kafka or the catalog is unreachable."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors import open_store
from replicator.daemon.config import DaemonConfig
from replicator.daemon.readiness import ConsumerStatistics, Readiness
from replicator.daemon.service import Daemon
from replicator.devstack import StackState, free_port
from replicator.errors import DependencyUnavailable
from replicator.pipeline.bus import KafkaSettings

ADMIN_TOKEN = "admin-tok"
INGEST_TOKEN = "ingest-tok"


def daemon_config(devstack: StackState, tmp_path: Path, **extra: Any) -> DaemonConfig:
    suffix = uuid.uuid4().hex[:8]
    return DaemonConfig.model_validate(
        {
            "kafka": {
                "bootstrap": devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"],
                "group": f"g-{suffix}",
                "partitions": 2,
                "changes_topic": f"changes-{suffix}",
                "dlq_topic": f"dlq-{suffix}",
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 300,
            },
            "catalog": {"url": f"sqlite:///{tmp_path}/catalog-{suffix}.db"},
            "http": {
                "host": "127.0.0.1",
                "port": 0,
                "ingest_port": 0,
                "admin_token_env": "TEST_ADMIN_TOKEN",
                "ingest_token_env": "TEST_INGEST_TOKEN",
            },
            "health": {"interval": "1s", "timeout": "5s"},
            **extra,
        }
    )


class Running:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def get(self, path: str, token: str | None = ADMIN_TOKEN) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = f"http://127.0.0.1:{self.daemon.http_port}{path}"
        async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except json.JSONDecodeError:
                return response.status, text

    async def until_status(self, path: str, status: int, seconds: float = 60) -> Any:
        body: Any = None
        for _ in range(int(seconds / 0.1)):
            got, body = await self.get(path)
            if got == status:
                return body
            await asyncio.sleep(0.1)
        raise AssertionError(f"{path} never answered {status}; last: {body}")


async def start(config: DaemonConfig) -> AsyncIterator[Running]:
    env = {**os.environ, "TEST_ADMIN_TOKEN": ADMIN_TOKEN, "TEST_INGEST_TOKEN": INGEST_TOKEN}
    daemon = Daemon(config, env)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(daemon.run(stop, ready))
    await asyncio.wait_for(ready.wait(), 60)
    try:
        yield Running(daemon)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


@pytest.fixture
async def lake(devstack: StackState, tmp_path: Path) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    source, dest = f"s3://ops-src-{suffix}/", f"gs://ops-dst-{suffix}/"
    for url in (source, dest):
        store = open_store(url)
        await store.create_container()
        await store.close()
    return source, dest


async def test_ready_once_every_dependency_answers_and_partitions_are_assigned(
    devstack: StackState, tmp_path: Path, lake: tuple[str, str]
) -> None:
    source, dest = lake
    config = daemon_config(
        devstack,
        tmp_path,
        routes=[{"name": "ops", "source": source, "destinations": [dest]}],
    )
    async for running in start(config):
        status, health = await running.get("/healthz", token=None)
        assert (status, health["status"]) == (200, "ok")
        body = await running.until_status("/readyz", 200)
        assert body["status"] == "ready"
        assert body["consumer"]["assigned"] == 2
        assert set(body["checks"]) == {"kafka", "catalog", f"store {source}", f"store {dest}"}
        assert set(body["checks"].values()) == {"ok"}


async def test_missing_destination_bucket_keeps_the_daemon_unready(
    devstack: StackState, tmp_path: Path, lake: tuple[str, str]
) -> None:
    """A route whose destination cannot be listed is a route error: /readyz names it."""
    source, _ = lake
    missing = f"gs://ops-missing-{uuid.uuid4().hex[:8]}/"
    config = daemon_config(
        devstack,
        tmp_path,
        routes=[{"name": "ops", "source": source, "destinations": [missing]}],
    )
    async for running in start(config):
        for _ in range(100):
            status, body = await running.get("/readyz", token=None)
            if f"store {missing}" in body.get("failing", {}):
                break
            await asyncio.sleep(0.1)
        assert status == 503
        assert body["checks"]["catalog"] == "ok"
        assert f"store {missing}" in body["failing"]


async def test_admin_and_ingest_listen_apart_each_with_its_token(
    devstack: StackState, tmp_path: Path, lake: tuple[str, str]
) -> None:
    source, dest = lake
    config = daemon_config(
        devstack,
        tmp_path,
        routes=[{"name": "ops", "source": source, "destinations": [dest]}],
    )
    async for running in start(config):
        daemon = running.daemon
        assert daemon.ingest_port not in (None, daemon.http_port)
        # Admin: the probes are open, everything else needs the admin token.
        assert (await running.get("/readyz", token=None))[0] in (200, 503)
        assert (await running.get("/metrics", token=None))[0] == 401
        assert (await running.get("/metrics", token="wrong"))[0] == 401
        assert (await running.get("/metrics"))[0] == 200
        assert (await running.get("/status"))[0] == 200
        async with aiohttp.ClientSession() as http:
            # No ingest on the admin listener...
            admin_ingest = f"http://127.0.0.1:{daemon.http_port}/ingest/s3"
            async with http.post(admin_ingest, data=b"{}", headers=_bearer(ADMIN_TOKEN)) as r:
                assert r.status == 404
            # ...and no admin on the ingest listener, which wants its own token.
            base = f"http://127.0.0.1:{daemon.ingest_port}"
            async with http.get(f"{base}/metrics", headers=_bearer(ADMIN_TOKEN)) as r:
                assert r.status == 404
            async with http.post(
                f"{base}/ingest/s3", data=b"{}", headers=_bearer(ADMIN_TOKEN)
            ) as r:
                assert r.status == 401


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestReadinessRules:
    """How the consumer's statistics decide readiness (librdkafka statistics JSON)."""

    @staticmethod
    def readiness(statistics: ConsumerStatistics, max_lag: int = 100) -> Readiness:
        ready = Readiness(
            KafkaSettings("unused:9092"),
            "t",
            None,
            [],
            statistics,
            max_lag=max_lag,  # type: ignore[arg-type]
        )
        ready.results = {"kafka": _ok(), "catalog": _ok()}
        return ready

    @staticmethod
    def stats(assigned: int, lags: list[int]) -> str:
        partitions = {str(i): {"consumer_lag": lag} for i, lag in enumerate(lags)}
        partitions["-1"] = {"consumer_lag": -1}
        return json.dumps(
            {
                "type": "consumer",
                "cgrp": {"assignment_size": assigned, "state": "up"},
                "topics": {"t": {"partitions": partitions}},
            }
        )

    def test_not_ready_before_statistics_or_without_partitions(self) -> None:
        statistics = ConsumerStatistics()
        assert self.readiness(statistics).report()[0] is False
        statistics(self.stats(0, []))
        ready, body = self.readiness(statistics).report()
        assert ready is False
        assert body["failing"] == {"consumer": "no partitions assigned"}

    def test_not_ready_while_catching_up_past_the_threshold(self) -> None:
        statistics = ConsumerStatistics()
        statistics(self.stats(2, [80, 30, -1]))
        ready, body = self.readiness(statistics, max_lag=100).report()
        assert ready is False
        assert "110 messages behind" in body["failing"]["consumer"]
        statistics(self.stats(2, [60, 30]))
        assert self.readiness(statistics, max_lag=100).report()[0] is True

    def test_producer_statistics_are_ignored(self) -> None:
        statistics = ConsumerStatistics()
        statistics(json.dumps({"type": "producer"}))
        assert statistics.assigned is None


def _ok() -> Any:
    from replicator.daemon.readiness import CheckResult

    return CheckResult(True)


async def run_cli(env: dict[str, str], seconds: float = 120) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "replicator",
        "run",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), seconds)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


ROUTES = json.dumps([{"name": "r", "source": "s3://a/", "destinations": ["gs://b/"]}])


async def test_unreachable_kafka_at_start_is_one_line_and_exit_69(tmp_path: Path) -> None:
    code, stderr = await run_cli(
        {
            "REPLICATOR_ROUTES": ROUTES,
            "REPLICATOR_KAFKA__BOOTSTRAP": f"127.0.0.1:{free_port()}",
            "REPLICATOR_KAFKA__CONNECT_TIMEOUT": "2s",
            "REPLICATOR_CATALOG__URL": f"sqlite:///{tmp_path}/c.db",
        }
    )
    assert code == DependencyUnavailable.EXIT_CODE == 69
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("replicator: error: cannot reach Kafka at 127.0.0.1:")


async def test_unreachable_catalog_at_start_is_one_line_and_exit_69(devstack: StackState) -> None:
    port = free_port()
    code, stderr = await run_cli(
        {
            "REPLICATOR_ROUTES": ROUTES,
            "REPLICATOR_KAFKA__CHANGES_TOPIC": f"c-{uuid.uuid4().hex[:8]}",
            "REPLICATOR_CATALOG__URL": f"postgresql://replicator:pw-SECRET@127.0.0.1:{port}/db",
        }
    )
    assert code == 69
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(
        f"replicator: error: cannot reach the catalog database postgresql://replicator:***@"
        f"127.0.0.1:{port}/db"
    )
    assert "pw-SECRET" not in stderr


async def test_sighup_keeps_running_and_says_to_restart(
    devstack: StackState, tmp_path: Path
) -> None:
    """SIGHUP does not end the daemon (its default would); it checks the file and logs that a
    restart applies it."""
    suffix = uuid.uuid4().hex[:8]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "replicator",
        "run",
        env={
            **os.environ,
            "REPLICATOR_LOG_LEVEL": "info",
            "REPLICATOR_ROUTES": json.dumps(
                [{"name": "r", "source": f"file://{tmp_path}/src/", "destinations": ["gs://b/"]}]
            ),
            "REPLICATOR_KAFKA__CHANGES_TOPIC": f"c-{suffix}",
            "REPLICATOR_KAFKA__GROUP": f"g-{suffix}",
            "REPLICATOR_CATALOG__URL": f"sqlite:///{tmp_path}/c.db",
            "REPLICATOR_HTTP__PORT": "0",
            "REPLICATOR_HTTP__HOST": "127.0.0.1",
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    stderr = process.stderr

    async def line_with(fragment: bytes) -> bytes:
        while True:
            line = await asyncio.wait_for(stderr.readline(), 60)
            if not line:
                raise AssertionError("the daemon exited")
            if fragment in line:
                return line

    try:
        await line_with(b"replicator running")
        process.send_signal(signal.SIGHUP)
        line = await line_with(b"SIGHUP")
        assert b"restart the daemon to apply it" in line
        assert process.returncode is None
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 60)
    assert process.returncode == 0
