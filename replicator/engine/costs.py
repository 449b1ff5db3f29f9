"""Cost accounting: the requests and bytes the stores served, per route and destination.

Connectors report every request they send to the observer of the context they run in
(``connectors.base.observing``); the daemon runs the work of a route for one destination
under ``CostLedger.attribute(route, destination)``, so each request is counted for the route
and destination it was made for, and for the store (``StoreRequest.location``) it went to:
prices differ per store. Work of a route as a whole (the source's head before its copies,
listings) is counted under the destination ``""``. A source read shared by the copies to
several destinations is counted once, for the destination whose copy made it.

Egress: the bytes a GET read from a store at another location (provider, or S3 region) than
the destination they were read for; a server-side copy moves no bytes through the daemon and
is a COPY request, not egress.

The ledger keeps two tallies: the totals since the process started (the Prometheus counters)
and what has not yet been written to the catalog (``drain``, flushed in batches).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from connectors.base import RequestClass, RequestObserver, StoreRequest, observing

#: The request classes in the order they are shown.
CLASSES: tuple[RequestClass, ...] = tuple(RequestClass)


@dataclass
class Usage:
    """What one store served for one route and destination."""

    requests: dict[RequestClass, int] = field(default_factory=dict)
    bytes_read: int = 0
    bytes_written: int = 0
    egress_bytes: int = 0

    def add(self, other: Usage) -> None:
        for kind, count in other.requests.items():
            self.requests[kind] = self.requests.get(kind, 0) + count
        self.bytes_read += other.bytes_read
        self.bytes_written += other.bytes_written
        self.egress_bytes += other.egress_bytes

    def count(self, kind: RequestClass) -> int:
        return self.requests.get(kind, 0)

    def as_dict(self) -> dict[str, int]:
        return {
            **{f"{kind.value}_requests": self.count(kind) for kind in CLASSES},
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "egress_bytes": self.egress_bytes,
        }

    @classmethod
    def of(cls, values: Mapping[str, int]) -> Usage:
        """The inverse of ``as_dict`` (missing entries are zero)."""
        return cls(
            requests={kind: int(values.get(f"{kind.value}_requests", 0)) for kind in CLASSES},
            bytes_read=int(values.get("bytes_read", 0)),
            bytes_written=int(values.get("bytes_written", 0)),
            egress_bytes=int(values.get("egress_bytes", 0)),
        )


@dataclass(frozen=True, order=True)
class UsageKey:
    route: str
    #: The destination's URL; "" for the route's work as a whole.
    destination: str
    #: The store the requests went to (``ObjectStore.location``: "s3:us-east-1", "gs", "az").
    store: str

    @property
    def scheme(self) -> str:
        return self.store.partition(":")[0]


class CostLedger:
    """Counts the requests connectors report, per route, destination and store."""

    def __init__(self) -> None:
        self._totals: dict[UsageKey, Usage] = {}
        self._unflushed: dict[UsageKey, Usage] = {}

    def observer(
        self, route: str, destination: str = "", destination_location: str | None = None
    ) -> RequestObserver:
        """The observer counting for ``route`` and ``destination`` (at
        ``destination_location``, which decides what is egress)."""

        def observe(request: StoreRequest) -> None:
            key = UsageKey(route, destination, request.location)
            egress = 0
            if destination_location is not None and request.location != destination_location:
                egress = request.bytes_received
            for tally in (self._totals, self._unflushed):
                usage = tally.get(key)
                if usage is None:
                    usage = tally[key] = Usage()
                if request.requests:
                    kind = request.request_class
                    usage.requests[kind] = usage.requests.get(kind, 0) + request.requests
                usage.bytes_read += request.bytes_received
                if request.request_class is RequestClass.PUT:
                    # Object bytes: control bodies (a compose's sources) are not writes.
                    usage.bytes_written += request.bytes_sent
                usage.egress_bytes += egress

        return observe

    @contextlib.contextmanager
    def attribute(
        self, route: str, destination: str = "", destination_location: str | None = None
    ) -> Iterator[None]:
        """Count the requests made in this block (and the tasks it starts) for ``route`` and
        ``destination``."""
        with observing(self.observer(route, destination, destination_location)):
            yield

    def totals(self) -> dict[UsageKey, Usage]:
        """Everything counted since the ledger was made (copies)."""
        return {key: _copy(usage) for key, usage in self._totals.items()}

    def drain(self) -> dict[UsageKey, Usage]:
        """What was counted since the last drain; the caller writes it to the catalog, and
        gives it back (``restore``) if it could not."""
        drained, self._unflushed = self._unflushed, {}
        return drained

    def restore(self, drained: Mapping[UsageKey, Usage]) -> None:
        for key, usage in drained.items():
            self._unflushed.setdefault(key, Usage()).add(usage)


def _copy(usage: Usage) -> Usage:
    copied = Usage()
    copied.add(usage)
    return copied


@contextlib.contextmanager
def attributed(
    ledger: CostLedger | None,
    route: str,
    destination: str = "",
    destination_location: str | None = None,
) -> Iterator[None]:
    """``ledger.attribute(...)``, or nothing without a ledger."""
    if ledger is None:
        yield
        return
    with ledger.attribute(route, destination, destination_location):
        yield
