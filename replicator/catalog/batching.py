"""Group commit: concurrent writes share one transaction, so one fsync covers many of them.

Every write waits for the commit of the transaction that carries it, so a caller that goes on
after ``submit`` returns knows its row is durable (the commit-order rule). While a transaction
is being committed, new writes queue up and go together in the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

from replicator.errors import Unavailable

W = TypeVar("W")
_SETTLE_TURNS = 3

log = structlog.get_logger(__name__)


class GroupCommit(Generic[W]):
    """Runs ``apply(batch)`` (one transaction, results in batch order) over queued writes.

    A failed batch is retried one write at a time, so that one bad write fails alone.
    """

    def __init__(
        self,
        apply: Callable[[Sequence[W]], Awaitable[Sequence[object]]],
        *,
        max_batch: int = 500,
    ) -> None:
        self._apply = apply
        self._max_batch = max_batch
        self._queue: list[tuple[W, asyncio.Future[object]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, write: W) -> object:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        # Retrieved here so that the error of a write whose caller is gone is not reported as
        # never retrieved.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._queue.append((write, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        # A cancelled caller does not cancel the write: it may already be in a transaction.
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Wait until every queued write is committed (or has failed)."""
        if self._drainer is not None:
            await self._drainer

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            try:
                await self._run(batch)
                # Callers whose writes just committed need a few turns of the loop to queue
                # their next write; letting them makes the next transaction carry more.
                for _ in range(_SETTLE_TURNS):
                    await asyncio.sleep(0)
            except BaseException:
                # Cancelled (the loop is closing): nobody may wait forever.
                for _, future in batch + self._queue:
                    future.cancel()
                self._queue.clear()
                raise

    async def _run(self, batch: list[tuple[W, asyncio.Future[object]]]) -> None:
        try:
            results = await self._apply([write for write, _ in batch])
        except Exception as exc:
            # One by one finds the one bad write; when the database itself is unavailable,
            # every write would fail alike, so they fail together at once.
            if len(batch) > 1 and not isinstance(exc, Unavailable):
                log.warning("catalog batch failed; retrying its writes one by one", error=str(exc))
                for one in batch:
                    await self._run([one])
                return
            for _, future in batch:
                _settle(future, exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def _settle(future: asyncio.Future[object], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
