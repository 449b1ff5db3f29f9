"""Route health: a route whose source or destination cannot be used (its bucket or container
is missing, its credentials are refused) is an error of the route, shown on ``/healthz`` and
in ``replicator_route_healthy``, and alerted in the log; never a reason to delete anything.

A route is healthy again as soon as one of its events is applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from prometheus_client import Gauge

from connectors.base import ContainerNotFound, PermissionDenied, StoreError

log = structlog.get_logger(__name__)

# Errors that say the route itself is misconfigured or broken, not the one object.
ROUTE_ERRORS = (ContainerNotFound, PermissionDenied)


@dataclass(frozen=True)
class RouteProblem:
    reason: str
    since: datetime


class RouteHealth:
    """Which routes are broken, and why (per daemon)."""

    def __init__(self, gauge: Gauge | None = None) -> None:
        """``gauge``: ``replicator_route_healthy`` (``DaemonMetrics``)."""
        self._problems: dict[str, RouteProblem] = {}
        self._gauge = gauge

    @staticmethod
    def is_route_error(exc: BaseException) -> bool:
        return isinstance(exc, ROUTE_ERRORS)

    def failed(self, route: str, exc: StoreError) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        previous = self._problems.get(route)
        if previous is None or previous.reason != reason:
            log.error("route is unhealthy", route=route, reason=reason, alert=True)
        since = previous.since if previous is not None else datetime.now(UTC)
        self._problems[route] = RouteProblem(reason, since)
        if self._gauge is not None:
            self._gauge.labels(route).set(0)

    def succeeded(self, route: str) -> None:
        if self._problems.pop(route, None) is not None:
            log.info("route is healthy again", route=route)
        if self._gauge is not None:
            self._gauge.labels(route).set(1)

    def problems(self) -> dict[str, RouteProblem]:
        return dict(self._problems)
