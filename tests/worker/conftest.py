"""Worker fixtures: a fresh topic pair on the session's broker for every test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from replicator.devstack import StackState
from tests.worker.bed import Bed


@pytest.fixture
async def bed(devstack: StackState) -> AsyncIterator[Bed]:
    test_bed = Bed(devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"])
    yield test_bed
    await test_bed.producer.close()
