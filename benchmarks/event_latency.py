"""Event -> replica latency through the whole path on the test bed:
S3 put -> S3 notification in SQS (moto) -> SQS poller -> Kafka -> worker -> GCS and Azure.

Small objects are written at a steady rate; the latency of each is the time from the client's
put returning to the worker having verified the replica at every destination and recorded it.
Reports p50/p99/max per rate, the rate actually achieved (moto accepts ~150-180 PUT/s on two
cores, which caps the offered load), and where the time goes: every object is timed at each
stage of the path, and the event loop's own lateness is sampled.

Usage: python -m benchmarks.event_latency [--rates 50,200,500] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import math
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from connectors import open_store
from connectors.base import ObjectMeta, ObjectStore
from connectors.queues import QueueMessage
from connectors.sqs import SQSQueue
from replicator.catalog import open_catalog
from replicator.daemon.applier import Applier, register_datasets
from replicator.devstack import EMULATORS, DevStack, environment
from replicator.engine.transfer import Copier, CopyResult, SharedSourceRead
from replicator.pipeline.bus import (
    AsyncConsumer,
    AsyncProducer,
    KafkaSettings,
    Polled,
    ensure_topics,
)
from replicator.pipeline.events import ChangeEvent, ParseError, parse_s3
from replicator.pipeline.ingest import Publisher, SQSPoller
from replicator.pipeline.rules import Router, load_config
from replicator.pipeline.worker import Worker

WORKER_SLOTS = 64

# The path in order; each stage is timed from the previous mark to its own.
TIMELINE = (
    ("put", "S3 put returned"),
    ("sqs", "SQS message received by the poller"),
    ("produced", "acknowledged by Kafka"),
    ("consumed", "handed to the worker by the consumer"),
    ("started", "handler started (key order, concurrency slot)"),
    ("pending", "catalog: pending recorded"),
    ("headed", "source HEAD"),
    ("copied", "copies to GCS and Azure done"),
    ("recorded", "catalog: replicas recorded (= replicated)"),
    ("committed", "offset committed to Kafka"),
)


class Marks:
    """First time each object (by key) reached each stage, and time spent in store calls."""

    def __init__(self) -> None:
        self.at: dict[str, dict[str, float]] = defaultdict(dict)
        self.spent: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def mark(self, url_or_key: str, stage: str, at: float | None = None) -> None:
        key = url_or_key.rsplit("/", 1)[-1]
        self.at[key].setdefault(stage, time.perf_counter() if at is None else at)

    def spend(self, key: str, what: str, seconds: float) -> None:
        self.spent[key][what] += seconds


class TimedQueue(SQSQueue):
    def __init__(self, queue_url: str, marks: Marks) -> None:
        super().__init__(queue_url)
        self.marks = marks

    async def receive(self, max_messages: int = 10, wait_s: int = 10) -> list[QueueMessage]:
        messages = await super().receive(max_messages, wait_s)
        now = time.perf_counter()
        for message in messages:
            with contextlib.suppress(ParseError):
                for event in parse_s3(message.body):
                    self.marks.mark(event.source_url, "sqs", now)
        return messages


class TimedProducer(AsyncProducer):
    def __init__(self, settings: KafkaSettings, marks: Marks) -> None:
        super().__init__(settings)
        self.marks = marks

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> tuple[int, int]:
        result = await super().send(topic, key, value, headers)
        if key is not None:
            self.marks.mark(key.decode(), "produced")
        return result


class TimedConsumer(AsyncConsumer):
    def __init__(self, settings: KafkaSettings, topics: Sequence[str], marks: Marks) -> None:
        super().__init__(settings, topics)
        self.marks = marks
        self.offsets: dict[tuple[str, int, int], str] = {}

    async def poll(
        self,
        wait_s: float = 0.5,
        commit: Mapping[tuple[str, int], int] | None = None,
        *,
        max_records: int = 500,
    ) -> Polled:
        now = time.perf_counter()
        for (topic, partition), position in (commit or {}).items():
            for (t, p, offset), key in list(self.offsets.items()):
                if t == topic and p == partition and offset < position:
                    self.marks.mark(key, "committed", now)
                    del self.offsets[(t, p, offset)]
        polled = await super().poll(wait_s, commit, max_records=max_records)
        for record in polled.records:
            if record.key is not None:
                key = record.key.decode()
                self.marks.mark(key, "consumed")
                self.offsets[(record.topic, record.partition, record.offset)] = key
        return polled


class TimedCopier(Copier):
    """Times each copy and the store calls it makes, per destination."""

    def __init__(self, marks: Marks) -> None:
        super().__init__()
        self.marks = marks

    def time_calls(self, store: ObjectStore, label: str) -> None:
        for name in ("head", "read", "put"):
            original = getattr(store, name)
            setattr(store, name, self._timer(original, f"{label}.{name}"))

    def _timer(
        self, original: Callable[..., Awaitable[Any]], what: str
    ) -> Callable[..., Awaitable[Any]]:
        async def timed(key: str, *args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await original(key, *args, **kwargs)
            finally:
                self.marks.spend(key, what, time.perf_counter() - began)
                if what == "source.head":
                    self.marks.mark(key, "headed")

        return timed

    async def copy(
        self,
        source: ObjectStore,
        source_key: str,
        dest: ObjectStore,
        dest_key: str,
        *,
        observed: ObjectMeta | None = None,
        shared: SharedSourceRead | None = None,
    ) -> CopyResult:
        began = time.perf_counter()
        try:
            return await super().copy(
                source, source_key, dest, dest_key, observed=observed, shared=shared
            )
        finally:
            self.marks.spend(dest_key, f"copy to {dest.scheme}", time.perf_counter() - began)
            self.marks.at[dest_key]["copied"] = time.perf_counter()


class CollectorPauses:
    """Full (generation 2) garbage collections stop the whole process, the event loop too."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._began = 0.0

    def start(self) -> None:
        gc.callbacks.append(self._observe)

    def stop(self) -> None:
        gc.callbacks.remove(self._observe)

    def _observe(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._began)


async def loop_lateness(stop: asyncio.Event, samples: list[float]) -> None:
    """How late the event loop wakes a 10 ms sleeper: blocking calls on the loop show here."""
    while not stop.is_set():
        began = time.perf_counter()
        await asyncio.sleep(0.01)
        samples.append(time.perf_counter() - began - 0.01)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return float("nan")
    return values[max(0, math.ceil(q * len(values)) - 1)]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def breakdown(marks: Marks) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for (before, _), (stage, label) in itertools.pairwise(TIMELINE):
        deltas = sorted(
            at[stage] - at[before] for at in marks.at.values() if stage in at and before in at
        )
        rows.append(
            {
                "stage": label,
                "p50_ms": ms(percentile(deltas, 0.5)),
                "p99_ms": ms(percentile(deltas, 0.99)),
            }
        )
    kinds = sorted({what for spent in marks.spent.values() for what in spent})
    for what in kinds:
        values = sorted(spent[what] for spent in marks.spent.values() if what in spent)
        rows.append(
            {
                "stage": f"  within: {what} (sum of calls)",
                "p50_ms": ms(percentile(values, 0.5)),
                "p99_ms": ms(percentile(values, 0.99)),
            }
        )
    return rows


async def measure(
    rate: int, seconds: float, env: Mapping[str, str], workdir: Path
) -> dict[str, object]:
    suffix = uuid.uuid4().hex[:8]
    bucket = f"lat-{suffix}"
    async with open_store(f"s3://{bucket}") as created:
        await created.create_container()
    queue_url = await SQSQueue.create(f"lat-{suffix}")
    await SQSQueue.notify_bucket(bucket, queue_url)
    config = load_config(
        {
            "routes": [
                {
                    "name": f"lat-{suffix}",
                    "source": f"s3://{bucket}/",
                    "destinations": [f"gs://lat-{suffix}/", f"az://lat-{suffix}/"],
                    # All traffic is on this one route: let it use every worker slot.
                    "concurrency": WORKER_SLOTS,
                }
            ]
        }
    )
    for url in (f"gs://lat-{suffix}", f"az://lat-{suffix}"):
        async with open_store(url) as store:
            await store.create_container()
    settings = KafkaSettings(
        env["REPLICATOR_KAFKA_BOOTSTRAP"],
        group_id=f"g-{suffix}",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    changes, dlq = f"c-{suffix}", f"d-{suffix}"
    ensure_topics(settings, {changes: 4, dlq: 1})
    catalog = await open_catalog(f"sqlite:///{workdir}/catalog-{suffix}.db")
    await register_datasets(catalog, config)
    marks = Marks()
    producer = TimedProducer(settings, marks)
    copier = TimedCopier(marks)

    def timed_store(url: str) -> ObjectStore:
        store = open_store(url)
        copier.time_calls(store, "source" if url.startswith("s3://") else store.scheme)
        return store

    applier = Applier(Router(config), catalog, copier, store_factory=timed_store)
    mark_pending = catalog.mark_pending

    async def timed_mark_pending(*args: Any, **kwargs: Any) -> Any:
        result = await mark_pending(*args, **kwargs)
        marks.mark(args[0].source_url, "pending")
        return result

    setattr(catalog, "mark_pending", timed_mark_pending)  # noqa: B010
    count = int(rate * seconds)
    all_done = asyncio.Event()

    async def timed(event: ChangeEvent) -> object:
        marks.mark(event.source_url, "started")
        outcome = await applier(event)
        marks.mark(event.source_url, "recorded")
        if sum("recorded" in at for at in marks.at.values()) >= count:
            all_done.set()
        return outcome

    worker = Worker(
        TimedConsumer(settings, [changes], marks),
        producer,
        timed,
        concurrency=WORKER_SLOTS,
        dlq_topic=dlq,
    )
    publisher = Publisher(producer, Router(config), changes_topic=changes, dlq_topic=dlq)
    poller = SQSPoller(TimedQueue(queue_url, marks), publisher, wait_s=1)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stop)), asyncio.create_task(poller.run(stop))]
    source = open_store(f"s3://{bucket}")
    await asyncio.sleep(3)  # let the consumer join its group
    lateness: list[float] = []
    sampling = asyncio.Event()
    sampler = asyncio.create_task(loop_lateness(sampling, lateness))
    collector = CollectorPauses()
    collector.start()
    started = time.perf_counter()
    in_flight: set[asyncio.Task[None]] = set()

    async def put(index: int) -> None:
        key = f"obj-{index:06d}"
        await source.put(key, b"x" * 1024)
        marks.mark(key, "put")

    for index in range(count):
        target = started + index / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(put(index))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
    offered = count / (time.perf_counter() - started)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_done.wait(), 120)
    sampling.set()
    await sampler
    collector.stop()
    stop.set()
    await asyncio.gather(*tasks)
    await applier.close()
    await poller.queue.close()
    await producer.close()
    await catalog.close()
    await source.close()
    latencies = sorted(
        at["recorded"] - at["put"] for at in marks.at.values() if "recorded" in at and "put" in at
    )
    lateness.sort()
    return {
        "target_rate": rate,
        "achieved_rate": round(offered, 1),
        "events": count,
        "replicated": len(latencies),
        "p50_ms": ms(percentile(latencies, 0.5)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "max_ms": ms(latencies[-1]) if latencies else float("nan"),
        "loop_late_p99_ms": ms(percentile(lateness, 0.99)),
        "loop_late_max_ms": ms(lateness[-1]) if lateness else float("nan"),
        "full_gcs": len(collector.pauses),
        "full_gc_max_ms": ms(max(collector.pauses, default=0.0)),
        "stages": breakdown(marks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates", type=lambda s: [int(r) for r in s.split(",")], default=[50, 200, 500]
    )
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="replicator-latency-") as workdir:
        stack = DevStack(Path(workdir) / "stack", components=EMULATORS)
        with stack as state, environment(state.env):
            for rate in args.rates:
                results.append(asyncio.run(measure(rate, args.seconds, state.env, Path(workdir))))
                print(json.dumps(results[-1]))
    print("| target events/s | achieved | events | replicated | p50 ms | p99 ms | max ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['target_rate']} | {r['achieved_rate']} | {r['events']} | "
            f"{r['replicated']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} |"
        )
    print()
    print(
        "| stage (from the previous one) | "
        + " | ".join(f"{r['target_rate']}/s p50 | p99" for r in results)
        + " |"
    )
    print("|---|" + "---:|---:|" * len(results))
    stages: list[list[dict[str, object]]] = [r["stages"] for r in results]  # type: ignore[misc]
    for rows in zip(*stages, strict=True):
        print(
            f"| {rows[0]['stage']} | "
            + " | ".join(f"{row['p50_ms']} | {row['p99_ms']}" for row in rows)
            + " |"
        )
    print()
    print(
        "| event loop lateness | "
        + " | ".join(
            f"{r['target_rate']}/s: p99 {r['loop_late_p99_ms']} ms, max {r['loop_late_max_ms']} ms"
            f" ({r['full_gcs']} full collections, longest {r['full_gc_max_ms']} ms)"
            for r in results
        )
        + " |"
    )


if __name__ == "__main__":
    main()
