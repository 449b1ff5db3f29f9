"""The daemon's topics at start: created with the configured layout when missing; an existing
layout that falls short (fewer partitions or replicas than configured, fewer partitions than
the consumer group has members) is reported, never changed behind the operator's back."""

from __future__ import annotations

import structlog

from replicator.daemon.config import KafkaSection
from replicator.pipeline.bus import (
    KafkaSettings,
    TopicLayout,
    ensure_topics,
    group_members,
    topic_partitions,
)

log = structlog.get_logger(__name__)


def check_topics(settings: KafkaSettings, kafka: KafkaSection) -> list[str]:
    """Ensure the changes, dead-letter and parts topics; return (and log) every shortfall."""
    timeout = kafka.connect_timeout.total_seconds()
    problems = ensure_topics(
        settings,
        {
            kafka.changes_topic: TopicLayout(kafka.partitions, kafka.replication_factor),
            kafka.dlq_topic: TopicLayout(1, kafka.replication_factor),
            kafka.parts_topic: TopicLayout(kafka.partitions, kafka.replication_factor),
        },
        timeout=timeout,
    )
    # The members already there, and this daemon about to join. (The local test broker
    # describes groups without their members, so there this check sees only this daemon.)
    members = group_members(settings, kafka.group, timeout) + 1
    idle = idle_members(kafka, members, topic_partitions(settings, kafka.changes_topic, timeout))
    if idle is not None:
        problems.append(idle)
    for problem in problems:
        log.warning("kafka layout", problem=problem)
    return problems


def idle_members(kafka: KafkaSection, members: int, partitions: int) -> str | None:
    """The problem when the group has more members than the changes topic has partitions."""
    if members <= partitions:
        return None
    return (
        f"consumer group {kafka.group} will have {members} members for the {partitions} "
        f"partitions of {kafka.changes_topic}: {members - partitions} of them will idle "
        "(add partitions, or run fewer daemons)"
    )
