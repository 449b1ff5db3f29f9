"""The daemon: change events from Kafka applied to every destination of their route, with
the SQS pollers, the deletion sweeper and one HTTP port for health, metrics, catalog queries
and the ingest receivers. Configuration: ``replicator.daemon.config``; what applying one event
means: ``replicator.daemon.applier``.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Mapping

import structlog

from connectors.sqs import SQSQueue
from replicator.catalog import open_catalog
from replicator.catalog.http import create_app
from replicator.daemon.applier import Applier, register_datasets
from replicator.daemon.config import DaemonConfig
from replicator.daemon.http import serve_http
from replicator.daemon.kafka_setup import check_topics
from replicator.daemon.metrics import DaemonMetrics
from replicator.daemon.readiness import ConsumerStatistics, Readiness
from replicator.engine.transfer import ByteBudget, Copier
from replicator.engine.units import parse_part_size, parse_size
from replicator.errors import DependencyUnavailable
from replicator.pipeline.bus import (
    AsyncConsumer,
    AsyncProducer,
    KafkaSettings,
)
from replicator.pipeline.ingest import Publisher, SQSPoller
from replicator.pipeline.rules import (
    Router,
)
from replicator.pipeline.worker import Worker

log = structlog.get_logger(__name__)


class Daemon:
    def __init__(self, config: DaemonConfig, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.env = dict(os.environ if env is None else env)
        self.router = Router(config)

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

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
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
        except OSError as exc:
            raise DependencyUnavailable(
                f"cannot reach the catalog database {self.config.catalog.display_url()}: {exc}"
            ) from None
        producer = AsyncProducer(settings)
        copy = self.config.copy_
        copier = Copier(
            part_size=parse_part_size(copy.part_size),
            concurrency=copy.concurrency,
            budget=ByteBudget(parse_size(copy.memory)),
            journal=catalog.journal(),
        )
        applier = Applier(self.router, catalog, copier, guard=daemon_metrics.delete_guard)
        worker = Worker(
            AsyncConsumer(settings, [k.changes_topic]),
            producer,
            applier,
            concurrency=copy.workers,
            dlq_topic=k.dlq_topic,
        )
        daemon_metrics.events.stats = worker.stats
        publisher = Publisher(
            producer, self.router, changes_topic=k.changes_topic, dlq_topic=k.dlq_topic
        )
        queues = [SQSQueue(q.queue_url) for q in self.config.sqs]
        pollers = [
            SQSPoller(queue, publisher, wait_s=q.wait_s, receivers=q.receivers)
            for queue, q in zip(queues, self.config.sqs, strict=True)
        ]
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
        )
        listeners = await serve_http(
            self.config,
            self.env,
            create_app(catalog, metrics),
            publisher,
            worker,
            applier.guard,
            readiness,
        )
        self.http_port = listeners.admin_port
        self.ingest_port = listeners.ingest_port
        try:
            await register_datasets(catalog, self.config)
            tasks = [asyncio.create_task(worker.run(stop), name="worker")]
            sweeper = applier.sweeper(self.config.deletes.sweep_interval)
            tasks.append(asyncio.create_task(sweeper.run(stop), name="deletion-sweeper"))
            tasks.append(asyncio.create_task(readiness.run(stop), name="readiness"))
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
            await listeners.cleanup()
            for queue in queues:
                await queue.close()
            await applier.close()
            await producer.close()
            await catalog.close()
