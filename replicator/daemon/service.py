"""The daemon: change events from Kafka applied to every destination of their route, with
the SQS pollers, the deletion sweeper, the periodic reconciliation (``reconcile.safety_net``),
the runner of changes held in the catalog (paused destinations, failed changes sent back) and
one HTTP port for health, metrics, catalog queries and the ingest receivers. Configuration:
``replicator.daemon.config``; what applying one event means: ``replicator.daemon.applier``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog

from connectors.credentials import install
from replicator.catalog import CatalogUnavailable, open_catalog
from replicator.catalog.http import create_app
from replicator.daemon.applier import Applier, register_datasets
from replicator.daemon.config import DaemonConfig
from replicator.daemon.costs import CostFlusher
from replicator.daemon.credentials import (
    check_azure_accounts,
    default_azure_account,
    store_credentials,
)
from replicator.daemon.deletes import DeleteGuard
from replicator.daemon.health import RouteHealth
from replicator.daemon.held import HeldChangesRunner, ReplicationPauses
from replicator.daemon.http import serve_http
from replicator.daemon.ingest_sources import build_consumers
from replicator.daemon.janitor import UploadJanitor
from replicator.daemon.kafka_setup import check_topics
from replicator.daemon.metrics import DaemonMetrics
from replicator.daemon.readiness import ConsumerStatistics, Readiness
from replicator.daemon.reconcile.pricing import load_prices
from replicator.daemon.reconcile.safety_net import SafetyNet, SafetyNetSettings
from replicator.daemon.striping import PartRunner
from replicator.daemon.watermark import QueueWatch
from replicator.engine.costs import CostLedger
from replicator.engine.striping import PartTask, Striping
from replicator.engine.transfer import ByteBudget, Copier
from replicator.engine.units import parse_part_size, parse_size
from replicator.errors import DependencyUnavailable
from replicator.pipeline.bus import (
    AsyncConsumer,
    AsyncProducer,
    KafkaSettings,
)
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.ingest.backlog import IngestBacklog
from replicator.pipeline.ingest.publisher import Publisher
from replicator.pipeline.parts import PartTaskPublisher, decode_task
from replicator.pipeline.rules import (
    Router,
)
from replicator.pipeline.worker import Worker

log = structlog.get_logger(__name__)


def make_worker(
    consumer: AsyncConsumer,
    producer: AsyncProducer,
    applier: Applier,
    *,
    workers: int,
    dlq_topic: str,
    **options: Any,
) -> Worker[ChangeEvent]:
    """The daemon's worker: the applier is its handler, and a route's concurrency limit is
    taken before a worker slot (``Applier.admission``), so that events waiting for a busy
    route hold no slot another route could use."""
    return Worker(
        consumer,
        producer,
        applier,
        decode=ChangeEvent.from_json,
        concurrency=workers,
        dlq_topic=dlq_topic,
        admission=applier.admission,
        **options,
    )


class Daemon:
    def __init__(self, config: DaemonConfig, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.env = dict(os.environ if env is None else env)
        self.router = Router(config)
        self.ingest_backlogs: list[IngestBacklog] = []
        self.queue_watch = QueueWatch([], [])

    def held(self, source: str) -> datetime | None:
        """What holds the watermark of routes reading ``source`` beyond the catalog: changes
        this daemon's ingest holds unrecorded, and notification queues not seen empty
        (``replicator.daemon.watermark``)."""
        return self.queue_watch.held(source)

    def kafka_settings(self, statistics: ConsumerStatistics | None = None) -> KafkaSettings:
        k = self.config.kafka
        return KafkaSettings(
            k.bootstrap,
            group_id=k.group,
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms,
            fetch_wait_max_ms=k.fetch_wait_max_ms,
            extra=k.client_properties(self.env),
            statistics=statistics,
            statistics_interval_ms=int(self.config.health.interval.total_seconds() * 1000),
        )

    def parts_worker(
        self,
        applier: Applier,
        producer: AsyncProducer,
        ledger: CostLedger,
        metrics: DaemonMetrics,
    ) -> Worker[PartTask]:
        """The worker of the parts topic (striped copies), in a consumer group of its own so
        that its partitions spread over every daemon whatever the changes topic's do."""
        k = self.config.kafka
        settings = dataclasses.replace(self.kafka_settings(), group_id=f"{k.group}.parts")
        runner = PartRunner(
            self.router,
            applier.copier,
            applier.store,
            ledger=ledger,
            parts_counter=metrics.stripe_parts,
        )
        return Worker(
            AsyncConsumer(settings, [k.parts_topic]),
            producer,
            runner,
            decode=decode_task,
            concurrency=self.config.copy_.stripe_workers,
            dlq_topic=k.dlq_topic,
        )

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        # Every store opened from here on uses the configured per-location credentials.
        install(store_credentials(self.config.credentials, self.env))
        azure_default = default_azure_account(self.env)
        check_azure_accounts(self.config, azure_default)
        consumer_statistics = ConsumerStatistics()
        settings = self.kafka_settings(consumer_statistics)
        k = self.config.kafka
        # Raises BrokerUnreachable (exit 69) when no broker answers.
        await asyncio.to_thread(check_topics, settings, k)
        daemon_metrics = DaemonMetrics()
        metrics = daemon_metrics.lag
        try:
            catalog = await open_catalog(
                self.config.catalog.resolved_url(self.env), metrics=metrics
            )
        except (OSError, CatalogUnavailable) as exc:
            raise DependencyUnavailable(
                f"cannot reach the catalog database {self.config.catalog.display_url()}: {exc}"
            ) from None
        producer = AsyncProducer(settings)
        copy = self.config.copy_
        threshold = copy.stripe_threshold_bytes
        striping = (
            None
            if threshold is None
            else Striping(threshold, PartTaskPublisher(producer, k.parts_topic))
        )
        copier = Copier(
            part_size=parse_part_size(copy.part_size),
            concurrency=copy.concurrency,
            budget=ByteBudget(parse_size(copy.memory)),
            journal=catalog.journal(),
            ordered_uploads=copy.ordered_uploads,
            striping=striping,
        )
        pauses = ReplicationPauses(catalog, self.router, daemon_metrics.destination_paused)
        ledger = CostLedger()
        prices = load_prices(overrides=self.config.reconcile.prices)
        daemon_metrics.costs.ledger, daemon_metrics.costs.prices = ledger, prices
        costs = CostFlusher(ledger, catalog, prices, interval=self.config.costs.flush_interval)
        applier = Applier(
            self.router,
            catalog,
            copier,
            guard=DeleteGuard(catalog, daemon_metrics.deletes_paused),
            health=RouteHealth(daemon_metrics.route_healthy),
            pauses=pauses,
            retry_budget=copy.retry_budget,
            ledger=ledger,
        )
        worker = make_worker(
            AsyncConsumer(settings, [k.changes_topic]),
            producer,
            applier,
            workers=copy.workers,
            dlq_topic=k.dlq_topic,
        )
        daemon_metrics.events.stats = worker.stats
        publisher = Publisher(
            producer,
            self.router,
            changes_topic=k.changes_topic,
            dlq_topic=k.dlq_topic,
            azure_default_account=azure_default,
            accept=applier.accept,
        )
        # SQS, Azure Storage Queue, Pub/Sub: each also reports what it holds unpublished.
        self.ingest_sources = build_consumers(self.config, publisher)
        # Everything ingest holds unpublished (replicator.pipeline.ingest.backlog).
        self.ingest_backlogs = [publisher, *self.ingest_sources]
        self.queue_watch = QueueWatch(self.ingest_sources, self.ingest_backlogs)
        health = self.config.health
        readiness = Readiness(
            settings,
            k.changes_topic,
            catalog,
            sorted({url for r in self.config.routes for url in r.store_urls()}),
            consumer_statistics,
            max_lag=health.max_lag,
            interval_s=health.interval.total_seconds(),
            timeout_s=health.timeout.total_seconds(),
            ledger=ledger,
        )
        listeners = await serve_http(
            self.config,
            self.env,
            create_app(catalog, metrics, held=self.held),
            publisher,
            worker,
            applier,
            readiness,
            daemon_metrics.registry,
        )
        self.http_port = listeners.admin_port
        self.ingest_port = listeners.ingest_port
        try:
            await register_datasets(catalog, self.config)
            tasks = [asyncio.create_task(worker.run(stop), name="worker")]
            if striping is not None:
                parts = self.parts_worker(applier, producer, ledger, daemon_metrics)
                tasks.append(asyncio.create_task(parts.run(stop), name="parts-worker"))
            sweeper = applier.sweeper(self.config.deletes.sweep_interval)
            tasks.append(asyncio.create_task(sweeper.run(stop), name="deletion-sweeper"))
            held = HeldChangesRunner(
                catalog,
                pauses,
                self.router,
                producer,
                changes_topic=k.changes_topic,
                retry_failed_after=copy.retry_failed_after,
                retry_budget=copy.retry_budget,
                retried_counter=daemon_metrics.failed_retried,
            )
            tasks.append(asyncio.create_task(held.run(stop), name="held-changes"))
            janitor = UploadJanitor(
                self.router,
                applier.store,
                catalog.journal(),
                interval=self.config.uploads.sweep_interval,
                abandon_after=self.config.uploads.abandon_after,
                open_gauge=daemon_metrics.uploads_open,
                aborted_counter=daemon_metrics.uploads_aborted,
                ledger=ledger,
            )
            tasks.append(asyncio.create_task(janitor.run(stop), name="upload-janitor"))
            if self.config.reconcile.enabled:
                section = self.config.reconcile
                safety_net = SafetyNet(
                    self.router,
                    catalog,
                    applier.store,
                    publisher,
                    SafetyNetSettings(section.interval, section.max_delete, section.transfers),
                    metrics=daemon_metrics,
                    ledger=ledger,
                )
                tasks.append(asyncio.create_task(safety_net.run(stop), name="reconcile"))
            tasks.append(asyncio.create_task(costs.run(stop), name="cost-totals"))
            tasks.append(asyncio.create_task(readiness.run(stop), name="readiness"))
            tasks.append(asyncio.create_task(self.queue_watch.run(stop), name="queue-watch"))
            tasks += [
                asyncio.create_task(c.run(stop), name=f"ingest {c.queue.name}")
                for c in self.ingest_sources
            ]
            # Start-up objects live as long as the daemon: keep full collections from scanning
            # them again and again (their pauses showed in the latency tail).
            gc.freeze()
            if ready is not None:
                ready.set()
            log.info(
                "replicator running",
                routes=[r.name for r in self.config.routes],
                queues=len(self.ingest_sources),
            )
            await asyncio.gather(*tasks)
        finally:
            await listeners.cleanup()
            for consumer in self.ingest_sources:
                await consumer.queue.close()
            await applier.close()
            await producer.close()
            # What the last in-flight work counted after the flusher's final batch.
            try:
                await costs.flush()
            except Exception as exc:
                log.warning("cost totals of the last moments not written", error=str(exc))
            await catalog.close()
