"""The dead-letter topic on the real broker: records a buggy handler dead-lettered are listed
with their reason, and once the handler is fixed, replaying them (chosen by reason; poison
that is still poison left alone) applies each change once, on real stores."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from replicator.cli.app import app
from replicator.devstack import StackState
from replicator.pipeline.bus import read_topic
from replicator.pipeline.dlq import REPLAYED_FROM, dead_letters, replay
from replicator.pipeline.events import ChangeEvent
from tests.controls.bed import Bed, eventually
from tests.independent import read_object
from tests.worker.bed import Bed as KafkaBed
from tests.worker.bed import until

KEYS = ["a", "b", "c"]


@pytest.fixture
async def kafka(devstack: StackState) -> AsyncIterator[KafkaBed]:
    made = KafkaBed(devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"])
    yield made
    await made.producer.close()


async def test_replay_after_a_fix_applies_each_change_once(bed: Bed, kafka: KafkaBed) -> None:
    for key in KEYS:
        await bed.store(bed.source_url).put(key, f"data of {key}".encode())
        await kafka.publish(bed.source_url + key, bed.event("put", key).to_json())
    await kafka.publish("poison", b"not json")

    async def buggy(_: ChangeEvent) -> None:
        raise RuntimeError("handler bug: no such attribute")

    worker = kafka.worker(buggy)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: worker.stats.dead_lettered == len(KEYS) + 1)
    stop.set()
    await running

    letters = await dead_letters(kafka.settings, kafka.dlq)
    assert len(letters) == len(KEYS) + 1
    assert sum("handler bug" in letter.reason for letter in letters) == len(KEYS)
    assert [letter.error for letter in letters].count("ParseError") == 1
    assert all(letter.origin.startswith(kafka.topic + "/") for letter in letters)

    # The fix: the real applier. Only the records the bug refused are replayed.
    chosen = await dead_letters(kafka.settings, kafka.dlq, reason="handler bug")
    replayed, skipped = await replay(kafka.producer, chosen, kafka.topic)
    assert (replayed, skipped) == (len(KEYS), [])

    calls: Counter[str] = Counter()
    applier = bed.daemons[0].applier

    async def fixed(event: ChangeEvent) -> None:
        calls[event.source_url] += 1
        await applier(event)

    worker = kafka.worker(fixed)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:

        async def caught_up() -> bool:
            return worker.stats.applied >= len(KEYS)

        await eventually(caught_up, "the replayed records applied")
    finally:
        stop.set()
        await running
    # The group had committed past the originals: only the replays arrive, each once.
    assert worker.stats.dead_lettered == 0
    assert calls == Counter(bed.source_url + key for key in KEYS)
    for key in KEYS:
        assert read_object(bed.paused_url + key) == f"data of {key}".encode()
        assert read_object(bed.other_url + key) == f"data of {key}".encode()
    lag = await bed.lag(bed.paused_url)
    assert (lag.pending_ops, lag.failed_ops) == (0, 0)


async def test_dlq_list_show_and_replay_on_the_command_line(
    kafka: KafkaBed, tmp_path: Path
) -> None:
    await kafka.producer.send(
        kafka.dlq, b"k", b"{}", [("replicator.reason", b"boom"), ("replicator.error", b"X")]
    )
    config = tmp_path / "replicator.toml"
    config.write_text(
        f"""
[kafka]
bootstrap = "{kafka.settings.bootstrap}"
changes_topic = "{kafka.topic}"
dlq_topic = "{kafka.dlq}"

[[routes]]
name = "logs"
source = "s3://logs/"
destinations = ["gs://logs-copy/"]
"""
    )

    def cli(*args: str) -> str:
        result = CliRunner().invoke(app, [*args, "--config", str(config)])
        assert result.exit_code == 0, result.output
        return result.stdout

    [line] = (await asyncio.to_thread(cli, "dlq", "list", "--json")).splitlines()
    listed = json.loads(line)
    assert (listed["reason"], listed["error"], listed["key"]) == ("boom", "X", "k")
    shown = json.loads(await asyncio.to_thread(cli, "dlq", "show", listed["position"]))
    assert shown["value"] == "{}"
    none = await asyncio.to_thread(cli, "dlq", "replay", "--reason", "nothing like it")
    assert json.loads(none) == {"replayed": 0, "not_replayable": 0}
    done = await asyncio.to_thread(cli, "dlq", "replay", "--reason", "BOOM")
    assert json.loads(done) == {"replayed": 1, "not_replayable": 0}
    [again] = await asyncio.to_thread(read_topic, kafka.settings, kafka.topic)
    assert (again.key, again.value) == (b"k", b"{}")
    assert (REPLAYED_FROM, listed["position"].encode()) in again.headers
