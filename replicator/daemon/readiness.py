"""Liveness and readiness.

``/healthz`` answers as long as the event loop does: the process is alive (a failed liveness
probe restarts the pod, so it must not depend on anything outside the process).

``/readyz`` is 200 only when all of these hold, else 503 with the failing checks named:

* the Kafka broker answered a metadata request within ``[health] timeout``;
* the catalog answered ``SELECT 1``;
* every store of every route (sources and destinations) answered a one-page listing;
* the consumer has partitions assigned (a daemon beyond the topic's partition count, or one
  in the middle of a rebalance, has none);
* its lag, summed over its partitions, is at most ``[health] max_lag`` messages: a daemon
  catching up on a backlog (after a restart or a long outage) is not ready until it is back
  within that distance.

The dependency checks run every ``[health] interval`` in the background; a probe only reads
their last results, so it is cheap and never waits on a slow dependency. Lag and assignment
come from librdkafka's consumer statistics (emitted every ``interval`` as well), which take the
high watermark from fetch responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from connectors import open_store
from connectors.base import ObjectStore
from replicator.catalog import Catalog
from replicator.engine.costs import CostLedger, attributed
from replicator.pipeline.bus import KafkaSettings, topic_partitions

log = structlog.get_logger(__name__)


class ConsumerStatistics:
    """Reads librdkafka's statistics JSON (its ``stats_cb``, called on the consumer's
    thread): how many partitions the consumer holds and how far behind it is."""

    def __init__(self) -> None:
        self.assigned: int | None = None  # None: no statistics yet
        self.lag = 0
        self.updated = 0.0

    def __call__(self, document: str) -> None:
        stats = json.loads(document)
        if stats.get("type") != "consumer":
            return
        lag = 0
        for topic in stats.get("topics", {}).values():
            for number, partition in topic.get("partitions", {}).items():
                # -1 is librdkafka's internal partition; a lag of -1 is not known yet.
                if number != "-1" and partition.get("consumer_lag", -1) > 0:
                    lag += partition["consumer_lag"]
        self.assigned = int(stats.get("cgrp", {}).get("assignment_size", 0))
        self.lag = lag
        self.updated = time.monotonic()


@dataclass
class CheckResult:
    ok: bool
    detail: str = ""


@dataclass
class Readiness:
    """Runs the dependency checks periodically and judges readiness from their last results
    and the consumer's statistics."""

    kafka: KafkaSettings
    topic: str
    catalog: Catalog
    store_urls: Sequence[str]
    consumer: ConsumerStatistics
    max_lag: int
    interval_s: float = 15.0
    timeout_s: float = 5.0
    results: dict[str, CheckResult] = field(default_factory=dict)
    #: Counts the checks' listings, each for its location under no route.
    ledger: CostLedger | None = None
    _stores: dict[str, ObjectStore] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.check_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
        finally:
            for store in self._stores.values():
                await store.close()

    async def check_once(self) -> None:
        checks: dict[str, Callable[[], Awaitable[object]]] = {
            "kafka": lambda: asyncio.to_thread(
                topic_partitions, self.kafka, self.topic, self.timeout_s
            ),
            "catalog": self.catalog.database.ping,
        }
        for url in self.store_urls:
            checks[f"store {url}"] = lambda url=url: self._list_one_page(url)  # type: ignore[misc]
        names = list(checks)
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(checks[name](), self.timeout_s) for name in names),
            return_exceptions=True,
        )
        for name, outcome in zip(names, outcomes, strict=True):
            result = CheckResult(True)
            if isinstance(outcome, BaseException):
                detail = str(outcome) or type(outcome).__name__
                if isinstance(outcome, TimeoutError):
                    detail = f"no answer within {self.timeout_s:g} s"
                result = CheckResult(False, detail[:300])
            previous = self.results.get(name)
            if previous is not None and previous.ok != result.ok:
                log.warning(
                    "readiness check changed", check=name, ok=result.ok, detail=result.detail
                )
            self.results[name] = result

    async def _list_one_page(self, url: str) -> None:
        store = self._stores.get(url)
        if store is None:
            store = self._stores[url] = open_store(url)
        with attributed(self.ledger, "", url, store.location):
            async for _ in store.list(page_size=1):
                break

    def report(self) -> tuple[bool, dict[str, object]]:
        """(ready, what a probe shows): every check with its state."""
        failing = {name: r.detail for name, r in self.results.items() if not r.ok}
        if not self.results:
            failing["dependencies"] = "not checked yet"
        if self.consumer.assigned is None:
            failing["consumer"] = "no statistics yet (joining the group)"
        elif self.consumer.assigned == 0:
            failing["consumer"] = "no partitions assigned"
        elif self.consumer.lag > self.max_lag:
            failing["consumer"] = (
                f"catching up: {self.consumer.lag} messages behind (ready at {self.max_lag})"
            )
        body: dict[str, object] = {
            "status": "ready" if not failing else "not ready",
            "checks": {name: ("ok" if r.ok else r.detail) for name, r in self.results.items()},
            "consumer": {"assigned": self.consumer.assigned, "lag": self.consumer.lag},
        }
        if failing:
            body["failing"] = failing
        return not failing, body
