"""What the chaos suite found, each pinned down by a test of its own against the real
emulators behind the fault proxy."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connectors import open_store
from connectors.base import MiB, NotFound, ObjectAttributes
from replicator.catalog import open_catalog
from replicator.daemon.deletes import DeleteGuard, delete_replica
from replicator.devstack import StackState, environment
from replicator.devstack.stack import azurite_connection_string
from replicator.engine.metadata import replica_attributes
from replicator.engine.retry import RetryPolicy
from replicator.engine.transfer import Copier
from replicator.pipeline.rules import Router, load_config
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


async def test_a_deletion_whose_answer_was_lost_is_not_dead_lettered(
    azure_proxy: FaultProxy, tmp_path: Path
) -> None:
    """The replica's deletion reaches Azure, its answer does not (the connection drops after
    the service applied it), and the retry's If-Match meets no blob: 412 ConditionNotMet.
    The replica is gone, as asked; the deletion succeeds instead of failing the event."""
    port = int(azure_proxy.url.rsplit(":", 1)[1])
    container = f"lost-answer-{uuid.uuid4().hex[:12]}"
    source_url = "s3://lake/k"
    config = load_config(
        {"routes": [{"name": "r", "source": "s3://lake/", "destinations": [f"az://{container}/"]}]}
    )
    [target] = Router(config).targets(source_url)
    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    with environment({"AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string(port)}):
        dest = open_store(f"az://{container}")
        try:
            await dest.create_container()
            attributes = replica_attributes(
                ObjectAttributes(), "az", source_url=source_url, source_version="v1"
            )
            await dest.put("k", b"replica", attributes=attributes)
            azure_proxy.force("reset_after", method="DELETE")
            assert await delete_replica(dest, target, source_url, DeleteGuard(catalog))
            with pytest.raises(NotFound):
                await dest.head("k")
        finally:
            await dest.close()
            await catalog.close()
    assert azure_proxy.stats.faults["reset_after"] == 1
