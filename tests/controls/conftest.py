from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from replicator.devstack import StackState
from tests.catalog.conftest import drop_schema, unique
from tests.controls.bed import Bed, make_bed


@pytest.fixture
async def bed(devstack: StackState, tmp_path: Path) -> AsyncIterator[Bed]:
    async for made in make_bed(devstack, tmp_path):
        yield made


@pytest.fixture(params=["sqlite", "postgresql"])
async def fleet_bed(
    request: pytest.FixtureRequest, devstack: StackState, tmp_path: Path
) -> AsyncIterator[Bed]:
    """The bed on the embedded catalog and on PostgreSQL, which a fleet of daemons shares."""
    if request.param == "sqlite":
        async for made in make_bed(devstack, tmp_path):
            yield made
        return
    server: str = request.getfixturevalue("postgres_server")
    schema = unique("replicator_controls_")
    try:
        async for made in make_bed(devstack, tmp_path, f"{server}?schema={schema}"):
            yield made
    finally:
        await drop_schema(server, schema)
