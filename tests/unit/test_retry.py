"""The retry policy: retriable errors retried with bounded, jittered delays; others not."""

from __future__ import annotations

import random

import pytest

from connectors.base import NotFound, Throttled, TransientError
from replicator.engine.retry import RetryPolicy


class Flaky:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


FAST = RetryPolicy(base_delay=0.001, max_delay=0.01)


async def test_transient_errors_are_retried() -> None:
    op = Flaky([TransientError("reset"), Throttled("slow down")])
    assert await FAST.run(op, what="op") == "ok"
    assert op.calls == 3


async def test_permanent_errors_are_not_retried() -> None:
    op = Flaky([NotFound("gone")])
    with pytest.raises(NotFound):
        await FAST.run(op, what="op")
    assert op.calls == 1


async def test_attempt_budget() -> None:
    op = Flaky([TransientError(str(i)) for i in range(10)])
    with pytest.raises(TransientError, match="2"):
        await RetryPolicy(max_attempts=3, base_delay=0.001).run(op, what="op")
    assert op.calls == 3


async def test_time_budget_stops_before_a_long_wait() -> None:
    """A Retry-After longer than the remaining time budget is not waited for."""
    op = Flaky([Throttled("busy", retry_after=30)])
    with pytest.raises(Throttled):
        await RetryPolicy(time_budget=1, max_delay=60).run(op, what="op")
    assert op.calls == 1


def test_decorrelated_jitter_stays_within_bounds() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=5)
    rng = random.Random(1)
    delay = policy.base_delay
    for _ in range(200):
        new = policy.next_delay(delay, rng)
        assert policy.base_delay <= new <= min(policy.max_delay, max(policy.base_delay, delay * 3))
        delay = new
