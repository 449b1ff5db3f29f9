"""What the notification-queue connectors (SQS, Azure Storage Queue, Pub/Sub pull) share:
plain values, no SDK.

Every one of them hands out messages on a lease: a received message is invisible to other
receivers until its lease (SQS and Azure "visibility timeout", Pub/Sub "ack deadline") runs
out, unless it is extended, deleted (acknowledged) or released early. A message that is never
deleted comes back, so a process that dies loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

#: SQS: long enough for a publish to Kafka (milliseconds) and its extensions; short enough that
#: the messages of a killed process are received again within seconds, not minutes.
SQS_VISIBILITY_TIMEOUT_S = 15


@dataclass(frozen=True)
class QueueMessage:
    """One received message.

    ``receipt`` is what extending and deleting it take (an SQS receipt handle, an Azure pop
    receipt, a Pub/Sub ack id); Azure issues a new one with every extension, so the latest
    message value returned by ``extend`` is the one to delete. ``receive_count`` is how many
    times the service has handed it out, this time included (0 when the service does not
    say). ``sent_at`` is when the queue accepted it, if the service says.
    """

    body: str
    receipt: str
    message_id: str
    receive_count: int
    sent_at: datetime | None = None


@dataclass(frozen=True)
class QueueDepth:
    """The service's approximate counts: every message not yet deleted (``total``: waiting
    or in flight) and, where the service tells them apart, those received and not yet deleted
    by any receiver (``in_flight``)."""

    total: int
    in_flight: int | None
