"""What ingest holds and has not yet published: the part of the watermark (DESIGN.md rule 9)
that lives before Kafka.

Every ingest source (a queue consumer, the publisher the HTTP receivers and scans share) is an
``IngestBacklog``. The contract, for whoever computes a route's watermark:

* ``oldest_unpublished(matches)`` is the oldest event time among the changes this process has
  received and not yet had acknowledged by Kafka (published, or dead-lettered), limited to the
  source URLs ``matches`` accepts, or None when it holds none. A message whose event time is
  not known yet (not parsed yet, or unparseable) counts for every route with the earlier of
  the time its queue accepted it and the time it was received. The value is exact for this
  process at the moment of the call: nothing this process received with an older event time
  is unaccounted for, since a message is held before its first ``await`` and released only
  after Kafka's acknowledgement.
* ``queue_depth()`` is the queue service's own approximate count of messages not yet deleted
  (waiting or in flight: every receiver's, other daemons' and dead processes' included; SQS
  also tells the in-flight part), or None where the service has no such count (Pub/Sub pull,
  HTTP push). Their event times are unknown: a route
  whose source feeds a queue with a non-zero count cannot promise more than "now minus the
  time those messages may have waited".
* What Kafka holds beyond the committed offsets is not ingest's: once a change is
  acknowledged it leaves the backlog.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from connectors.queues import QueueDepth

UrlFilter = Callable[[str], bool]


class IngestBacklog(Protocol):
    def oldest_unpublished(self, matches: UrlFilter | None = None) -> datetime | None:
        """The oldest event time held unpublished (for source URLs ``matches`` accepts)."""
        ...

    async def queue_depth(self) -> QueueDepth | None:
        """The queue service's approximate waiting and in-flight counts, if it has them."""
        ...


@dataclass(frozen=True)
class _Held:
    oldest: datetime
    # The source URLs of the held changes; None when not known (counts for every route).
    urls: frozenset[str] | None


class Holdings:
    """The changes one ingest source holds unpublished, each held under a token until
    released."""

    def __init__(self) -> None:
        self._held: dict[int, _Held] = {}
        self._tokens = itertools.count()

    def hold(self, oldest: datetime, urls: Iterable[str] | None) -> int:
        token = next(self._tokens)
        self._held[token] = _Held(oldest, None if urls is None else frozenset(urls))
        return token

    def release(self, token: int) -> None:
        self._held.pop(token, None)

    def __len__(self) -> int:
        return len(self._held)

    def oldest(self, matches: UrlFilter | None = None) -> datetime | None:
        times = [
            held.oldest
            for held in self._held.values()
            if matches is None or held.urls is None or any(matches(url) for url in held.urls)
        ]
        return min(times, default=None)
