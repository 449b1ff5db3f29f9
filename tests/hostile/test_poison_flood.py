"""10,000 poison records through the whole path of a running daemon (``replicator run``):
7,000 unusable records on the changes topic, 2,000 unusable pushes to the receivers, 1,000
unusable SQS messages, with good changes among them.

Every poison record reaches the DLQ with a reason (each carries a marker, and every marker is
found there), the daemon never crashes nor logs a traceback, the consumer group's commits
reach the end of every partition, the queue is left empty, and the good changes are applied.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from replicator.devstack import StackState, free_port
from tests.chaos.oracle import committed_to_the_end, dead_letters

RECORDS, PUSHES, MESSAGES = 7000, 2000, 1000
GOOD = 40
PARTITIONS = 4
TOKEN = f"poison-canary-token-{uuid.uuid4().hex}"


def marker(number: int) -> str:
    return f"poison-{number:05d}"


def poison_record(number: int) -> bytes:
    """A changes-topic record the worker cannot use, in one of many ways."""
    mark = marker(number)
    event = {
        "kind": "put",
        "source_url": f"s3://flood/{mark}",
        "version": None,
        "sequencer": "",
        "size": 1,
        "etag": None,
        "event_time": "2026-11-29T03:00:00+00:00",
        "origin": "s3",
    }
    broken: list[Any] = [
        f"{mark} not json".encode(),
        b"\xff\xfe" + mark.encode() + b"\x00\x01",
        json.dumps([mark]).encode(),
        json.dumps({**event, "kind": f"upsert {mark}"}).encode(),
        json.dumps({**event, "origin": mark}).encode(),
        json.dumps({**event, "size": -1, "etag": mark}).encode(),
        json.dumps({**event, "size": "big", "etag": mark}).encode(),
        json.dumps({**event, "event_time": f"yesterday {mark}"}).encode(),
        json.dumps({k: v for k, v in event.items() if k != "source_url"} | {"etag": mark}).encode(),
        json.dumps({**event, "source_url": f"s3://flood/\ud800{mark}"}).encode(),
        json.dumps({**event, "event_time": 12345, "etag": mark}).encode(),
        (f'{{"etag": "{mark}", "x": ' + "[" * 50_000 + "]" * 50_000 + "}").encode(),
        json.dumps({"etag": mark, "padding": "x" * 300_000}).encode(),
    ]
    return broken[number % len(broken)]  # type: ignore[no-any-return]


def poison_notification(number: int) -> tuple[str, bytes]:
    """A push body a receiver cannot use, and the receiver it goes to."""
    mark = marker(number)
    bodies = [
        ("/ingest/s3", f"{mark} is not json".encode()),
        ("/ingest/s3", json.dumps({"Records": [{"eventVersion": "1.0", "m": mark}]}).encode()),
        ("/ingest/s3", json.dumps({"Type": "Notification", "Message": mark}).encode()),
        ("/ingest/gcs", json.dumps({"message": {"attributes": {"eventType": mark}}}).encode()),
        ("/ingest/gcs", json.dumps({"message": {"data": "!!", "messageId": mark}}).encode()),
        ("/ingest/azure", json.dumps([{"eventType": mark, "subject": 5}]).encode()),
        (
            "/ingest/azure",
            json.dumps({"id": mark, "eventType": "Microsoft.Storage.BlobCreated"}).encode(),
        ),
    ]
    return bodies[number % len(bodies)]


def poison_message(number: int) -> str:
    mark = marker(number)
    bodies = [
        f"{mark} not json",
        json.dumps({"Records": [{"eventVersion": "2.1", "eventName": 5, "m": mark}]}),
        json.dumps({"Records": mark}),
        '{"m": "' + mark + '", "x": ' + "[" * 20_000 + "]" * 20_000 + "}",
        json.dumps({"m": mark, "padding": "€" * 60_000}),
    ]
    return bodies[number % len(bodies)]


@dataclass
class Flood:
    bootstrap: str
    changes: str
    dlq: str
    group: str
    bucket: str
    queue_url: str
    dest: Path
    url: str
    ingest_url: str


@pytest.fixture
def flood(devstack: StackState, tmp_path: Path) -> Iterator[tuple[Flood, Any]]:
    suffix = uuid.uuid4().hex[:8]
    bootstrap = devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"]
    changes, dlq, group = f"flood-{suffix}", f"flood-dlq-{suffix}", f"flood-{suffix}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(changes, PARTITIONS), NewTopic(dlq, 1)])
    for future in futures.values():
        future.result(timeout=30)
    s3 = boto3.client("s3", endpoint_url=devstack.env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    sqs = boto3.client(
        "sqs", endpoint_url=devstack.env["AWS_ENDPOINT_URL"], region_name="us-east-1"
    )
    bucket = f"flood-{suffix}"
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=f"flood-{suffix}")["QueueUrl"]
    dest = tmp_path / "dest"
    dest.mkdir()
    port, ingest_port = free_port(), free_port()
    config = tmp_path / "replicator.toml"
    config.write_text(f"""
[kafka]
bootstrap = "{bootstrap}"
group = "{group}"
partitions = {PARTITIONS}
changes_topic = "{changes}"
dlq_topic = "{dlq}"
session_timeout_ms = 2000
heartbeat_interval_ms = 300

[catalog]
url = "sqlite:///{tmp_path}/catalog.db"

[http]
host = "127.0.0.1"
port = {port}
ingest_port = {ingest_port}

[[sqs]]
queue_url = "{queue_url}"
wait_s = 1
receivers = 4
count_lag_s = 0  # moto's message counts are exact

[[routes]]
name = "flood"
source = "s3://{bucket}/"
destinations = ["file://{dest}/"]
""")
    log = tmp_path / "daemon.log"
    env = {
        **os.environ,
        **devstack.env,
        "REPLICATOR_INGEST_TOKEN": TOKEN,
        "REPLICATOR_LOG_FORMAT": "json",
        "REPLICATOR_LOG_LEVEL": "info",
    }
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            env=env,
            start_new_session=True,
        )
    flood = Flood(
        bootstrap,
        changes,
        dlq,
        group,
        bucket,
        queue_url,
        dest,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{ingest_port}",
    )
    try:
        yield flood, (process, log, s3, sqs)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=120)
            except Exception:
                process.kill()
                process.wait()


async def _until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what}: not reached in {seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_ten_thousand_poison_records_all_reach_the_dlq(
    flood: tuple[Flood, Any],
) -> None:
    setup, (process, log, s3, sqs) = flood
    async with aiohttp.ClientSession() as session:
        await _until(lambda: _healthy(session, setup.url), 120, "daemon ready")
        # Good changes, first in the source, then their events among the poison.
        for index in range(GOOD):
            await asyncio.to_thread(
                s3.put_object, Bucket=setup.bucket, Key=f"good/{index}", Body=b"good %d" % index
            )
        producer = Producer({"bootstrap.servers": setup.bootstrap, "linger.ms": 20})
        good_every = RECORDS // GOOD
        for number in range(RECORDS):
            producer.produce(setup.changes, poison_record(number), key=marker(number).encode())
            if number % good_every == 0 and number // good_every < GOOD:
                index = number // good_every
                url = f"s3://{setup.bucket}/good/{index}"
                event = {
                    "kind": "put",
                    "source_url": url,
                    "version": None,
                    "sequencer": "",
                    "size": None,
                    "etag": None,
                    "origin": "scan",
                    "event_time": "2026-11-29T03:00:00+00:00",
                }
                producer.produce(setup.changes, json.dumps(event).encode(), key=url.encode())
            producer.poll(0)
        assert await asyncio.to_thread(producer.flush, 60) == 0

        semaphore = asyncio.Semaphore(16)

        async def push(number: int) -> int:
            path, body = poison_notification(number)
            async with (
                semaphore,
                session.post(
                    setup.ingest_url + path, data=body, headers={"Authorization": f"Bearer {TOKEN}"}
                ) as response,
            ):
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(push(RECORDS + n) for n in range(PUSHES)))
        assert set(statuses) == {202}, sorted(set(statuses))

        first = RECORDS + PUSHES
        for start in range(0, MESSAGES, 5):
            await asyncio.to_thread(
                sqs.send_message_batch,
                QueueUrl=setup.queue_url,
                Entries=[
                    {"Id": str(n), "MessageBody": poison_message(first + start + n)}
                    for n in range(5)
                ],
            )

        total = RECORDS + PUSHES + MESSAGES
        found: dict[str, str] = {}

        async def all_dead_lettered() -> bool:
            letters = await asyncio.to_thread(dead_letters, setup.bootstrap, setup.dlq)
            found.clear()
            for letter in letters:
                text = (letter.key or b"").decode(errors="replace") + letter.value[:200].decode(
                    errors="replace"
                )
                for token in text.split("poison-")[1:]:
                    found.setdefault("poison-" + token[:5], letter.reason)
            return len(found) >= total

        await _until(all_dead_lettered, 300, "every poison record in the DLQ")
        await _until(
            lambda: asyncio.to_thread(
                committed_to_the_end, setup.bootstrap, setup.group, setup.changes, PARTITIONS
            ),
            120,
            "commits",
        )

        async def queue_empty() -> bool:
            attributes = (
                await asyncio.to_thread(
                    sqs.get_queue_attributes,
                    QueueUrl=setup.queue_url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                    ],
                )
            )["Attributes"]
            return set(attributes.values()) == {"0"}

        await _until(queue_empty, 120, "SQS queue drained")

        async def good_applied() -> bool:
            return all((setup.dest / "good" / str(i)).exists() for i in range(GOOD))

        await _until(good_applied, 120, "good changes applied")
        assert await _healthy(session, setup.url)
    assert set(found) == {marker(n) for n in range(total)}
    assert all(reason for reason in found.values()), "a dead letter without a reason"
    assert process.poll() is None, "the daemon exited"
    text = log.read_text(errors="replace")
    assert "Traceback" not in text
    assert '"exception"' not in text
    for index in range(GOOD):
        assert (setup.dest / "good" / str(index)).read_bytes() == b"good %d" % index


async def _healthy(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url + "/healthz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False
