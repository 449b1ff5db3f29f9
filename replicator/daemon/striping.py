"""The daemon's share of striped copies (``replicator.engine.striping``): the handler of the
parts topic, which copies one part of a large object for whichever daemon of the group is
completing it.

A task names its source and destination by their stores' root URLs; only the locations of
this daemon's own routes are served (a task naming any other is dead-lettered), so the topic
cannot make a daemon read or write anywhere its configuration does not.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from prometheus_client import Counter

from connectors.base import ObjectStore
from replicator.engine.costs import CostLedger, attributed
from replicator.engine.striping import PartTask
from replicator.engine.transfer import Copier
from replicator.pipeline.rules import Route, Router
from replicator.pipeline.worker import PermanentFailure

log = structlog.get_logger(__name__)


class PartRunner:
    """Copies the part a task names, through the applier's stores and byte budget."""

    def __init__(
        self,
        router: Router,
        copier: Copier,
        store: Callable[[str], ObjectStore],
        *,
        ledger: CostLedger | None = None,
        parts_counter: Counter | None = None,
    ) -> None:
        self.router = router
        self.copier = copier
        self.store = store
        self.ledger = ledger
        self.parts_counter = parts_counter
        self._pairs: dict[tuple[str, str], tuple[Route, str, str]] | None = None

    def _routes_by_roots(self) -> dict[tuple[str, str], tuple[Route, str, str]]:
        """(source root, destination root) as the stores spell them -> the route, and the
        configured URLs of its source and destination."""
        if self._pairs is None:
            self._pairs = {
                (self.store(route.source).root_url, self.store(dest.url).root_url): (
                    route,
                    route.source,
                    dest.url,
                )
                for route in self.router.config.routes
                for dest in route.destinations
            }
        return self._pairs

    async def __call__(self, task: PartTask) -> str:
        found = self._routes_by_roots().get((task.source_root, task.dest_root))
        if found is None:
            raise PermanentFailure(
                f"no route of this daemon copies {task.source_root} to {task.dest_root}"
            )
        route, source_url, dest_url = found
        dest = self.store(dest_url)
        with attributed(self.ledger, route.name, dest_url, dest.location):
            outcome = await self.copier.copy_part_task(task, self.store(source_url), dest)
        log.info(
            "part task",
            destination=task.dest_url,
            part=task.number,
            outcome=outcome,
        )
        if self.parts_counter is not None:
            self.parts_counter.labels(outcome=outcome.split(":", 1)[0]).inc()
        return outcome
