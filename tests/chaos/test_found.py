"""What the chaos suite found, each pinned down by a test of its own against the real
emulators behind the fault proxy."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

from connectors import open_store
from connectors.base import MiB
from replicator.devstack import StackState, environment
from replicator.devstack.stack import azurite_connection_string
from replicator.engine.retry import RetryPolicy
from replicator.engine.transfer import Copier
from tests.chaos.proxy import FaultProxy
from tests.conftest import StoreFactory
from tests.independent import read_object

PART = 8 * MiB
FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)


@pytest.fixture
async def azure_proxy(devstack: StackState) -> AsyncIterator[FaultProxy]:
    upstream = f"http://127.0.0.1:{devstack.components['azure'].port}"
    async with FaultProxy(upstream, flavour="azure") as proxy:
        yield proxy


@pytest.mark.parametrize("size", [1000, 3 * PART], ids=["single-put", "multipart"])
async def test_bytes_damaged_on_the_wire_are_sent_again(
    store_factory: StoreFactory, azure_proxy: FaultProxy, size: int
) -> None:
    """A byte flipped between the daemon and Azure: the service refuses the block or blob
    (Md5Mismatch), and the bytes are sent again rather than the event dead-lettered."""
    source = await store_factory("file")
    data = os.urandom(size)
    await source.put("k", data)
    port = int(azure_proxy.url.rsplit(":", 1)[1])
    with environment({"AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string(port)}):
        dest = open_store(f"az://damaged-{uuid.uuid4().hex[:12]}")
        try:
            await dest.create_container()
            azure_proxy.force("flip_request")
            result = await Copier(part_size=PART, concurrency=2, retry=FAST_RETRY).copy(
                source, "k", dest, "k"
            )
        finally:
            await dest.close()
    assert result.status == "copied"
    assert azure_proxy.stats.faults["flip_request"] == 1
    assert read_object(dest.url_for("k")) == data
