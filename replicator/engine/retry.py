"""The one retry policy: exponential backoff with decorrelated jitter, bounded by attempts and
by time, honouring a store's Retry-After. Connectors cap their SDK's own retries at one extra
attempt so that the two layers do not multiply."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from connectors.base import StoreError, Throttled

T = TypeVar("T")
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 0.1
    max_delay: float = 10.0
    time_budget: float = 120.0

    def next_delay(self, previous: float, rng: random.Random) -> float:
        """Decorrelated jitter: uniform between the base and three times the last delay."""
        return min(self.max_delay, rng.uniform(self.base_delay, max(self.base_delay, previous * 3)))

    async def run(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        what: str,
        rng: random.Random | None = None,
    ) -> T:
        """Run ``operation``; retry retriable StoreErrors until the attempt or time budget is
        spent, then re-raise the last error."""
        deadline = time.monotonic() + self.time_budget
        delay = self.base_delay
        attempt = 1
        while True:
            try:
                return await operation()
            except StoreError as exc:
                if not exc.retriable or attempt >= self.max_attempts:
                    raise
                # Seeded only when needed: seeding reads the OS's random source, which a call
                # that succeeds at once (nearly every call) should not pay for.
                rng = rng or random.Random()
                delay = self.next_delay(delay, rng)
                if isinstance(exc, Throttled) and exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.max_delay))
                if time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "retrying",
                    operation=what,
                    attempt=attempt,
                    delay=round(delay, 3),
                    error=str(exc),
                    error_type=type(exc).__name__,
                )
                await asyncio.sleep(delay)
                attempt += 1
