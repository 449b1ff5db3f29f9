"""The daemon's pulling ingest sources, built from its configuration: SQS pollers, Azure
Storage Queue consumers and Pub/Sub pull subscribers. Each is an ``IngestBacklog`` (what it
holds unpublished, for the watermark) with a ``run(stop)`` loop and a queue to close."""

from __future__ import annotations

from connectors.azure_credentials import AzureCredentials, AzureCredentialsError
from connectors.azure_queue import AzureQueue
from connectors.credentials import AwsAccess, installed
from connectors.pubsub import PubSubSubscription
from connectors.sqs import SQSQueue
from replicator.daemon.config import DaemonConfig
from replicator.errors import ConfigError
from replicator.pipeline.ingest.azure_queue import AzureQueueConsumer
from replicator.pipeline.ingest.publisher import Publisher
from replicator.pipeline.ingest.pubsub import PubSubConsumer
from replicator.pipeline.ingest.queue import QueueConsumer
from replicator.pipeline.ingest.sqs import SQSPoller


def azure_account_credentials(account: str | None) -> AzureCredentials:
    """The credentials of ``account`` (None: the environment's default account): those
    installed from ``[[credentials]]``, else the environment's if it is that account."""
    if account is not None:
        configured = installed().azure_for(account)
        if configured is not None:
            return configured
    try:
        default = AzureCredentials.from_environment()
    except AzureCredentialsError as exc:
        raise ConfigError(f"Azure queue: {exc}") from None
    if account is not None and default.account != account:
        raise ConfigError(
            f"Azure queue of account {account!r}: no credentials for it; add a "
            "[[credentials]] entry with azure_account"
        )
    return default


def build_consumers(config: DaemonConfig, publisher: Publisher) -> list[QueueConsumer]:
    consumers: list[QueueConsumer] = [
        SQSPoller(
            SQSQueue(
                q.queue_url,
                visibility_timeout_s=q.visibility_timeout_s,
                access=AwsAccess(profile=q.profile, role_arn=q.role_arn, region=q.region)
                if q.profile or q.role_arn or q.region
                else None,
            ),
            publisher,
            wait_s=q.wait_s,
            receivers=q.receivers,
            max_receives=q.max_receives,
            count_lag_s=q.count_lag_s,
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
            count_lag_s=q.count_lag_s,
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
