"""The chaos oracle's account of uncommitted Azure blocks, against Azurite behind a fault proxy:
blocks a Put Blob would have dropped on a real account are not leftovers, blocks staged after
it (or never followed by a write) are."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from replicator.devstack import StackState
from replicator.devstack.stack import azurite_connection_string
from tests.chaos.proxy import FaultProxy
from tests.chaos.stores import AzureDestination


@pytest.fixture
async def proxy(devstack: StackState) -> AsyncIterator[FaultProxy]:
    azure_port = devstack.components["azure"].port
    async with FaultProxy(f"http://127.0.0.1:{azure_port}", flavour="azure") as started:
        yield started


@pytest.fixture
async def container(devstack: StackState, proxy: FaultProxy) -> AsyncIterator[ContainerClient]:
    """A fresh container, written to through the proxy."""
    proxied = azurite_connection_string(int(proxy.url.rsplit(":", 1)[1]))
    client = BlobServiceClient.from_connection_string(proxied).get_container_client(
        f"blocks-{uuid.uuid4().hex[:12]}"
    )
    await asyncio.to_thread(client.create_container)
    yield client
    await asyncio.to_thread(client.delete_container)


def _destinations(
    devstack: StackState, proxy: FaultProxy, name: str
) -> tuple[AzureDestination, AzureDestination]:
    """The oracle's view of the container: with the proxy's ledger, and without it."""
    direct = devstack.env["AZURE_STORAGE_CONNECTION_STRING"]
    return (
        AzureDestination(direct, name, "", lambda: proxy.blocks.discarded),
        AzureDestination(direct, name, ""),
    )


async def test_blocks_a_put_blob_drops_on_azure_are_not_leftovers(
    devstack: StackState, proxy: FaultProxy, container: ContainerClient
) -> None:
    blob = container.get_blob_client("d4/obj%41 aborted")
    await asyncio.to_thread(blob.upload_blob, b"committed replica")
    await asyncio.to_thread(blob.stage_block, "upload-1-part-00001", b"staged, then aborted")
    await asyncio.to_thread(blob.upload_blob, b"the next small copy", overwrite=True)
    with_ledger, without = _destinations(devstack, proxy, container.container_name)
    try:
        assert await with_ledger.leftovers() == []
        # Azurite's divergence from Azure, which the ledger exists for: if this fails, the
        # emulator now drops the blocks itself and the ledger is no longer needed.
        kept = f"{without.url}d4/obj%41 aborted (1 uncommitted blocks)"
        assert await without.leftovers() == [kept]
    finally:
        with_ledger.close()
        without.close()


async def test_blocks_staged_after_the_last_write_are_leftovers(
    devstack: StackState, proxy: FaultProxy, container: ContainerClient
) -> None:
    blob = container.get_blob_client("key")
    await asyncio.to_thread(blob.upload_blob, b"committed replica")
    await asyncio.to_thread(blob.stage_block, "upload-1-part-00001", b"dropped by the put")
    await asyncio.to_thread(blob.upload_blob, b"the next small copy", overwrite=True)
    await asyncio.to_thread(blob.stage_block, "upload-2-part-00001", b"staged after it")
    never_written = container.get_blob_client("never committed")
    await asyncio.to_thread(never_written.stage_block, "upload-3-part-00001", b"orphan")
    with_ledger, _ = _destinations(devstack, proxy, container.container_name)
    try:
        assert sorted(await with_ledger.leftovers()) == [
            f"{with_ledger.url}key (1 uncommitted blocks)",
            f"{with_ledger.url}never committed (1 uncommitted blocks)",
        ]
    finally:
        with_ledger.close()
    assert proxy.blocks.discarded == {(container.container_name, "key", "upload-1-part-00001")}


async def test_a_commit_or_a_delete_clears_what_was_staged(
    proxy: FaultProxy, container: ContainerClient
) -> None:
    committed = container.get_blob_client("committed")
    await asyncio.to_thread(committed.stage_block, "upload-1-part-00001", b"part")
    await asyncio.to_thread(committed.commit_block_list, ["upload-1-part-00001"])
    deleted = container.get_blob_client("deleted")
    await asyncio.to_thread(deleted.upload_blob, b"replica")
    await asyncio.to_thread(deleted.stage_block, "upload-2-part-00001", b"part")
    await asyncio.to_thread(deleted.delete_blob)
    # A Put Blob on either name now finds nothing staged there to drop.
    for blob in (committed, deleted):
        await asyncio.to_thread(blob.upload_blob, b"small copy", overwrite=True)
    assert proxy.blocks.discarded == set()
