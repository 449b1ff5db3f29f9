"""The daemon: change events from Kafka applied to every destination of their route.

Configuration (TOML; the routes and residency sections are those of replicator.rules)::

    [kafka]
    bootstrap = "kafka-1:9092,kafka-2:9092"
    group = "replicator"
    partitions = 12                  # used when the topics are created
    fetch_wait_max_ms = 100          # longest a fetch waits for records (delivery latency)

    [catalog]
    url = "postgresql://replicator@db:5432/replicator"   # or sqlite:///var/lib/...

    [http]
    port = 8080                      # health, metrics, catalog queries and ingest
    ingest_token_env = "REPLICATOR_INGEST_TOKEN"   # ingest endpoints need this shared secret

    [copy]
    part_size = "auto"               # or a size: parts of every multipart copy
    concurrency = 8
    memory = "512MiB"

    [deletes]
    sweep_interval = "1m"            # how often deletions delayed by a route are carried out

    [[sqs]]
    queue_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/lake-events"
    receivers = 4                    # receive loops at once (one drains at most ~10 per call)

Applying one event (events are hints; the source's current state is the truth):

1. the catalog's per-key high-water accepts it (a stale event is a no-op, a duplicate is redone
   idempotently);
2. the source is read afresh: if it exists, it is copied (pinned to the version seen) to each
   destination, and the verified replica is recorded; if it is gone, the deletion is applied
   under the route's delete policy and its per-minute safety limit;
3. only then does the worker mark the record done, so its offset can be committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors import open_store
from connectors.base import NotFound, ObjectMeta, ObjectStore
from connectors.sqs import SQSQueue
from replicator.bus import (
    CHANGES_TOPIC,
    DLQ_TOPIC,
    AsyncConsumer,
    AsyncProducer,
    KafkaSettings,
    ensure_topics,
)
from replicator.catalog import Catalog, open_catalog
from replicator.catalog.http import create_app
from replicator.catalog.model import Acceptance, Change, LocationSpec, Replica, Role
from replicator.deletes import DeleteGuard, DeletionSweeper, delete_replica
from replicator.events import ChangeEvent, scan_event
from replicator.ingest import Publisher, SQSPoller, add_ingest_routes
from replicator.lag import LagMetrics
from replicator.metadata import replica_source
from replicator.rules import (
    Duration,
    Route,
    Router,
    RoutingConfig,
    Target,
    config_value,
    read_toml,
    validate_config,
)
from replicator.transfer import ByteBudget, Copier, SharedSourceRead
from replicator.units import parse_part_size, parse_size
from replicator.worker import Worker

log = structlog.get_logger(__name__)


class KafkaSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    bootstrap: str
    group: str = "replicator"
    partitions: int = Field(default=12, ge=1)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    fetch_wait_max_ms: int = Field(default=100, ge=0)
    changes_topic: str = CHANGES_TOPIC
    dlq_topic: str = DLQ_TOPIC


class CatalogSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = "sqlite:///var/lib/replicator/catalog.db"


class HttpSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    ingest_token_env: str = "REPLICATOR_INGEST_TOKEN"
    sns_confirm_hosts: tuple[str, ...] = ("sns.*.amazonaws.com",)


class CopySection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    part_size: str = "auto"
    concurrency: int = Field(default=8, ge=1)
    memory: str = "512MiB"
    workers: int = Field(default=64, ge=1, description="events applied at once")

    @field_validator("part_size")
    @classmethod
    def _part_size(cls, value: str) -> str:
        config_value(parse_part_size, value)  # kept as text; parsed when the daemon starts
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        config_value(parse_size, value)
        return value


class SQSSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    queue_url: str
    wait_s: int = Field(default=10, ge=0, le=20)
    receivers: int = Field(default=4, ge=1, le=64)


class DeletesSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sweep_interval: Duration = timedelta(minutes=1)


class DaemonConfig(RoutingConfig):
    kafka: KafkaSection
    catalog: CatalogSection = CatalogSection()
    http: HttpSection = HttpSection()
    copy_: CopySection = Field(default=CopySection(), alias="copy")
    sqs: tuple[SQSSection, ...] = ()
    deletes: DeletesSection = DeletesSection()


def load_daemon_config(path: Path) -> DaemonConfig:
    return validate_config(DaemonConfig, read_toml(path), str(path))


class Applier:
    """Applies one change event to every destination of its route (the worker's handler)."""

    def __init__(
        self,
        router: Router,
        catalog: Catalog,
        copier: Copier,
        *,
        store_factory: Callable[[str], ObjectStore] = open_store,
        guard: DeleteGuard | None = None,
    ) -> None:
        self.router = router
        self.catalog = catalog
        self.copier = copier
        self.store_factory = store_factory
        self.guard = guard or DeleteGuard()
        self._stores: dict[str, ObjectStore] = {}
        self._gates: dict[str, asyncio.Semaphore] = {}

    def store(self, root_url: str) -> ObjectStore:
        """Stores are rooted at route locations, so a relative key is the same at every end."""
        store = self._stores.get(root_url)
        if store is None:
            store = self._stores[root_url] = self.store_factory(root_url)
        return store

    async def close(self) -> None:
        for store in self._stores.values():
            await store.close()

    async def __call__(self, event: ChangeEvent) -> list[str]:
        """Apply ``event``; returns what happened at each destination."""
        targets = self.router.targets(event.source_url)
        if not targets:
            return []
        change = Change(
            event.source_url,
            event.sequencer,
            event.event_time,
            event.version,
            event.size,
            event.etag,
            event.kind == "delete",
        )
        route = targets[0].route
        source, key = self.store(route.source), targets[0].relative_key
        async with self._gate(route):
            # The source is read while the change is accepted: a read is harmless, and it is
            # simply unused when the change turns out to be stale.
            acceptance, current = await asyncio.gather(
                self.catalog.mark_pending(change, [t.destination.url for t in targets]),
                self._head(source, key),
            )
            if acceptance is Acceptance.STALE:
                log.info("stale event ignored", source=event.source_url, sequencer=event.sequencer)
                return ["stale"] * len(targets)
            shared = SharedSourceRead()
            return list(
                await asyncio.gather(
                    *(
                        self._apply(change, target, source, key, current, shared)
                        for target in targets
                    )
                )
            )

    async def _head(self, source: ObjectStore, key: str) -> ObjectMeta | None:
        """The source's current state (None: it is gone)."""
        try:
            meta: ObjectMeta = await self.copier.retry.run(
                lambda: source.head(key), what="head source"
            )
        except NotFound:
            return None
        return meta

    def _gate(self, route: Route) -> asyncio.Semaphore | contextlib.nullcontext[None]:
        """At most ``route.concurrency`` objects of one route are applied at once (when set),
        so that one busy route cannot take every worker slot or overload its stores."""
        if route.concurrency is None:
            return contextlib.nullcontext()
        gate = self._gates.get(route.name)
        if gate is None:
            gate = self._gates[route.name] = asyncio.Semaphore(route.concurrency)
        return gate

    async def _apply(
        self,
        change: Change,
        target: Target,
        source: ObjectStore,
        key: str,
        current: ObjectMeta | None,
        shared: SharedSourceRead,
    ) -> str:
        try:
            if current is None:
                return await self._delete(change, target)
            dest = self.store(target.destination.url)
            result = await self.copier.copy(
                source, key, dest, target.relative_key, observed=current, shared=shared
            )
            if result.destination is not None:
                await self.catalog.record_replica(
                    change, target.destination.url, Replica.from_copy(result)
                )
            return result.status
        except Exception as exc:
            await self.catalog.mark_failed(change, target.destination.url, str(exc)[:2000])
            raise

    async def _delete(self, change: Change, target: Target) -> str:
        """The source is gone: apply its deletion as the route's delete policy says."""
        route, location = target.route, target.destination.url
        now = datetime.now(UTC)
        if route.delete_policy == "never":
            await self.catalog.mark_retained(change, location, now)
            return "retained"
        if route.delete_policy == "delayed":
            assert route.delete_delay is not None  # the configuration guarantees it
            due = change.event_time + route.delete_delay
            await self.catalog.schedule_delete(change, location, due=due, decided_time=now)
            return "delete_scheduled"
        await delete_replica(self.store(location), target, change.source_url, self.guard)
        await self.catalog.mark_deleted(change, location, datetime.now(UTC))
        return "deleted"

    def sweeper(self, interval: timedelta) -> DeletionSweeper:
        """The sweeper of deletions this applier's routes delay, sharing its stores and limits."""
        return DeletionSweeper(
            self.router, self.catalog, self.store, self.guard, self.copier.retry, interval=interval
        )


async def register_datasets(catalog: Catalog, config: RoutingConfig) -> None:
    """Each route is a dataset of the lake: its source and every destination location."""
    known = {dataset.name for dataset in await catalog.datasets()}
    for route in config.routes:
        if route.name in known:
            continue
        await catalog.add_dataset(
            route.name,
            [
                LocationSpec(route.source, Role.SOURCE),
                *(LocationSpec(d.url, Role.REPLICA, d.region) for d in route.destinations),
            ],
        )


class Daemon:
    def __init__(self, config: DaemonConfig, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.env = dict(os.environ if env is None else env)
        self.router = Router(config)

    def kafka_settings(self) -> KafkaSettings:
        k = self.config.kafka
        return KafkaSettings(
            k.bootstrap,
            group_id=k.group,
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms,
            fetch_wait_max_ms=k.fetch_wait_max_ms,
        )

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        settings = self.kafka_settings()
        k = self.config.kafka
        await asyncio.to_thread(
            ensure_topics, settings, {k.changes_topic: k.partitions, k.dlq_topic: 1}
        )
        metrics = LagMetrics(CollectorRegistry())
        catalog = await open_catalog(self.config.catalog.url, metrics=metrics)
        producer = AsyncProducer(settings)
        copy = self.config.copy_
        copier = Copier(
            part_size=parse_part_size(copy.part_size),
            concurrency=copy.concurrency,
            budget=ByteBudget(parse_size(copy.memory)),
            journal=catalog.journal(),
        )
        applier = Applier(self.router, catalog, copier, guard=DeleteGuard(metrics.registry))
        worker = Worker(
            AsyncConsumer(settings, [k.changes_topic]),
            producer,
            applier,
            concurrency=copy.workers,
            dlq_topic=k.dlq_topic,
        )
        publisher = Publisher(
            producer, self.router, changes_topic=k.changes_topic, dlq_topic=k.dlq_topic
        )
        queues = [SQSQueue(q.queue_url) for q in self.config.sqs]
        pollers = [
            SQSPoller(queue, publisher, wait_s=q.wait_s, receivers=q.receivers)
            for queue, q in zip(queues, self.config.sqs, strict=True)
        ]
        runner = await self._serve_http(
            create_app(catalog, metrics), publisher, worker, applier.guard
        )
        try:
            await register_datasets(catalog, self.config)
            tasks = [asyncio.create_task(worker.run(stop), name="worker")]
            sweeper = applier.sweeper(self.config.deletes.sweep_interval)
            tasks.append(asyncio.create_task(sweeper.run(stop), name="deletion-sweeper"))
            tasks += [asyncio.create_task(p.run(stop), name="sqs") for p in pollers]
            # Start-up objects live as long as the daemon: keep full collections from scanning
            # them again and again (their pauses showed in the latency tail).
            gc.freeze()
            if ready is not None:
                ready.set()
            log.info(
                "replicator running",
                routes=[r.name for r in self.config.routes],
                queues=len(queues),
            )
            await asyncio.gather(*tasks)
        finally:
            await runner.cleanup()
            for queue in queues:
                await queue.close()
            await applier.close()
            await producer.close()
            await catalog.close()

    async def _serve_http(
        self, app: web.Application, publisher: Publisher, worker: Worker, guard: DeleteGuard
    ) -> web.AppRunner:
        """One port: catalog queries and /metrics, /healthz, and the ingest receivers."""

        async def health(_: web.Request) -> web.Response:
            return web.json_response(
                {
                    "status": "ok",
                    "applied": worker.stats.applied,
                    "dead_lettered": worker.stats.dead_lettered,
                    # Routes whose deletions wait for an operator (restart to resume).
                    "deletes_paused": sorted(guard.paused),
                }
            )

        app.router.add_get("/healthz", health)
        token = self.env.get(self.config.http.ingest_token_env, "")
        if token:
            add_ingest_routes(app, publisher, token, self.config.http.sns_confirm_hosts)
        else:
            log.warning(
                "ingest endpoints disabled: no shared secret",
                variable=self.config.http.ingest_token_env,
            )
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, self.config.http.host, self.config.http.port)
        await site.start()
        self.http_port = runner.addresses[0][1] if runner.addresses else self.config.http.port
        return runner


async def backfill(
    config: RoutingConfig,
    catalog: Catalog,
    copier: Copier,
    *,
    route_names: list[str] | None = None,
    concurrency: int = 16,
) -> dict[str, int]:
    """One-shot: list every route's source and copy what is missing or outdated, directly
    (no Kafka). Returns counts of copied, skipped and failed objects."""
    router = Router(config)
    applier = Applier(router, catalog, copier)
    counts = {"copied": 0, "skipped": 0, "deleted": 0, "failed": 0}
    gate = asyncio.Semaphore(concurrency)
    routes = [r for r in config.routes if route_names is None or r.name in route_names]
    await register_datasets(catalog, config)

    async def one(meta: ObjectMeta) -> None:
        async with gate:
            event = scan_event(meta.url, meta.size, meta.etag, meta.version, meta.last_modified)
            try:
                outcomes = await applier(event)
            except Exception as exc:
                counts["failed"] += 1
                log.error("backfill failed", source=meta.url, error=str(exc))
                return
            for outcome in outcomes:
                counts[outcome] = counts.get(outcome, 0) + 1

    try:
        for route in routes:
            async with open_store(route.source) as source:
                pending: set[asyncio.Task[None]] = set()
                async for meta in source.list():
                    if replica_source(meta.attributes.user_metadata) is not None:
                        continue
                    task = asyncio.create_task(one(meta))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    if len(pending) >= concurrency * 4:
                        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if pending:
                    await asyncio.wait(pending)
    finally:
        await applier.close()
    return counts
