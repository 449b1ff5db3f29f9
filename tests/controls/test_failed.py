"""Failed changes: a destination that keeps failing gets a retry budget, then the change is
in the failed list (not dead-lettered); sent back after the fix, it is published again and
applied by the owner of its key's partition, reading the source afresh, and the list is
empty."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from connectors import open_store
from connectors.base import (
    Buffer,
    ChecksumKind,
    ObjectAttributes,
    ObjectMeta,
    ObjectStore,
    TransientError,
)
from replicator.daemon.applier import Applier
from replicator.daemon.held import HeldChangesRunner, ReplicationPauses
from replicator.engine.transfer import Copier
from replicator.pipeline.rules import Router
from tests.controls.bed import Bed, eventually
from tests.engine.faults import FaultyStore
from tests.independent import delete_container, read_object


async def test_a_missing_destination_fills_the_failed_list_and_retry_empties_it(
    bed: Bed,
) -> None:
    """The Azure container is gone (torn down by mistake): its changes fail there at once
    (retrying cannot bring a container back), the other destination is served, and the event
    completes. Once the container is back, ``retry`` has every failed change applied."""
    daemon = bed.daemons[0]
    delete_container(bed.other_url)
    keys = ["a", "b/c"]
    for key in keys:
        await bed.store(bed.source_url).put(key, f"data of {key}".encode())
        assert await daemon.applier(bed.event("put", key)) == ["copied", "failed"]

    assert bed.route in daemon.applier.health.problems(), "the route is not unhealthy"
    failed = await daemon.catalog.failed_changes(routes=[bed.route])
    assert sorted(item.key for item in failed) == keys
    for item in failed:
        assert item.location == bed.other_url
        assert item.attempts == 1
        assert "not" in (item.last_error or "").lower()
        assert None not in (item.first_failed_at, item.last_failed_at)
    assert (await bed.lag(bed.other_url)).failed_ops == len(keys)

    await bed.store(bed.other_url).create_container()
    sent = await daemon.catalog.retry_failed(routes=[bed.route])
    assert len(sent) == len(keys)
    assert await daemon.catalog.failed_changes() == []
    assert await daemon.runner.run_once() == len(keys)
    await bed.settled(bed.other_url)
    for key in keys:
        assert read_object(bed.other_url + key) == f"data of {key}".encode()
    lag = await bed.lag(bed.other_url)
    assert (lag.pending_ops, lag.failed_ops) == (0, 0)


class Unreachable(FaultyStore):
    """A destination answering every write with a 503."""

    async def put(
        self,
        key: str,
        data: Buffer,
        *,
        attributes: ObjectAttributes | None = None,
        create_only: bool = False,
        if_match: str | None = None,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> ObjectMeta:
        raise TransientError("injected 503", url=self.url_for(key))


def applier_with_other_unreachable(bed: Bed, budget: int) -> Applier:
    """An applier whose writes to the bed's other destination all answer 503."""

    def stores(url: str) -> ObjectStore:
        store = open_store(url)
        return Unreachable(store) if url == bed.other_url else store

    return Applier(
        Router(bed.config),
        bed.daemons[0].catalog,
        Copier(),
        store_factory=stores,
        retry_budget=budget,
    )


async def test_a_transient_failure_is_retried_within_the_budget_only(bed: Bed) -> None:
    """A retriable failure is raised (the worker retries it with backoff) until the
    destination's budget is spent; then the change counts as failed and the event is done.
    A retry of one key by name, once the destination answers again, applies it."""
    budget = 3
    applier = applier_with_other_unreachable(bed, budget)
    try:
        await bed.store(bed.source_url).put("k", b"payload")
        event = bed.event("put", "k")  # the worker retries the same record
        for _ in range(budget - 1):
            with pytest.raises(TransientError):
                await applier(event)
        assert await applier(event) == ["skipped", "failed"]
    finally:
        await applier.close()
    [item] = await bed.daemons[0].catalog.failed_changes(keys=["k"])
    assert item.attempts == budget
    assert "injected 503" in (item.last_error or "")

    daemon = bed.daemons[0]
    assert [i.key for i in await daemon.catalog.retry_failed(keys=["k"])] == ["k"]
    assert await daemon.runner.run_once() == 1
    await bed.settled(bed.other_url)
    assert read_object(bed.other_url + "k") == b"payload"
    assert await daemon.catalog.failed_changes() == []


async def test_a_change_whose_budget_went_on_an_outage_is_tried_again_on_its_own(
    bed: Bed,
) -> None:
    """A destination down for longer than the budget's backoff puts its changes in the failed
    list; ``retry_failed_after`` after the last failure, a daemon sends them back by itself
    and they are applied. A change that failed at once (retrying cannot mend it: its budget
    was not spent) waits for an operator."""
    budget = 2
    applier = applier_with_other_unreachable(bed, budget)
    try:
        await bed.store(bed.source_url).put("outage", b"written during the outage")
        event = bed.event("put", "outage")
        with pytest.raises(TransientError):
            await applier(event)
        assert await applier(event) == ["skipped", "failed"]
    finally:
        await applier.close()
    daemon = bed.daemons[0]
    delete_container(bed.other_url)
    await bed.store(bed.source_url).put("refused", b"written while the container was gone")
    assert await daemon.applier(bed.event("put", "refused")) == ["copied", "failed"]
    await bed.store(bed.other_url).create_container()

    runner = HeldChangesRunner(
        daemon.catalog,
        ReplicationPauses(daemon.catalog, Router(bed.config)),
        Router(bed.config),
        bed.producer,
        changes_topic=bed.topic,
        retry_failed_after=timedelta(minutes=30),
        retry_budget=budget,
    )
    now = datetime.now(UTC)
    assert await runner.run_once(now) == 0, "sent back before retry_failed_after"
    assert len(await daemon.catalog.failed_changes()) == 2

    assert await runner.run_once(now + timedelta(minutes=31)) == 1

    async def applied() -> bool:
        # Unapplied: only the change left to an operator (pending counts failed ones too).
        [lag] = await daemon.catalog.route_lag(destination=bed.other_url)
        return (lag.pending_ops, lag.failed_ops) == (1, 1)

    await eventually(applied, "the change sent back applied")
    assert read_object(bed.other_url + "outage") == b"written during the outage"
    assert [item.key for item in await daemon.catalog.failed_changes()] == ["refused"]
