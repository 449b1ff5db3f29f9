"""The daemon's pulling ingest sources, built from its configuration: SQS pollers, Azure
Storage Queue consumers and Pub/Sub pull subscribers. Each is an ``IngestBacklog`` (what it
holds unpublished, for the watermark) with a ``run(stop)`` loop and a queue to close."""

from __future__ import annotations

from connectors.azure_credentials import AzureCredentials
from connectors.azure_queue import AzureQueue
from connectors.pubsub import PubSubSubscription
from connectors.sqs import SQSQueue
from replicator.daemon.config import DaemonConfig
from replicator.pipeline.ingest import Publisher, SQSPoller
from replicator.pipeline.ingest.azure_queue import AzureQueueConsumer
from replicator.pipeline.ingest.pubsub import PubSubConsumer
from replicator.pipeline.ingest.queue import QueueConsumer


def azure_account_credentials(account: str | None) -> AzureCredentials:
    """The credentials of ``account`` (None: the environment's default account)."""
    return AzureCredentials.from_environment()


def build_consumers(config: DaemonConfig, publisher: Publisher) -> list[QueueConsumer]:
    consumers: list[QueueConsumer] = [
        SQSPoller(
            SQSQueue(q.queue_url, visibility_timeout_s=q.visibility_timeout_s),
            publisher,
            wait_s=q.wait_s,
            receivers=q.receivers,
            max_receives=q.max_receives,
        )
        for q in config.sqs
    ]
    consumers += [
        AzureQueueConsumer(
            AzureQueue(
                q.queue,
                azure_account_credentials(q.account),
                visibility_timeout_s=q.visibility_timeout_s,
            ),
            publisher,
            wait_s=q.wait_s,
            receivers=q.receivers,
            max_receives=q.max_receives,
        )
        for q in config.azure_queues
    ]
    consumers += [
        PubSubConsumer(
            PubSubSubscription(
                q.subscription,
                ack_deadline_s=q.ack_deadline_s,
                service_file=q.service_account_file,
                api_root=q.api_root,
            ),
            publisher,
            batch=q.batch,
            wait_s=q.wait_s,
            receivers=q.receivers,
            max_receives=q.max_receives,
        )
        for q in config.pubsub
    ]
    return consumers
