from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from replicator.devstack import StackState
from tests.controls.bed import Bed, make_bed


@pytest.fixture
async def bed(devstack: StackState, tmp_path: Path) -> AsyncIterator[Bed]:
    async for made in make_bed(tmp_path):
        yield made
