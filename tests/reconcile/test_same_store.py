"""Server-side copies between two stores rooted at different prefixes (or containers) of the
same S3 bucket, GCS credentials or Azure account: routes root their stores at their prefixes,
so the same-store check must look past the roots. The bytes never pass through the process."""

from __future__ import annotations

import pytest

from connectors import open_store
from replicator.devstack import StackState
from replicator.engine.planner import Strategy
from replicator.engine.transfer import Copier
from tests.conftest import unique_name
from tests.independent import read_object
from tests.reconcile.conftest import Cli, sync

PAYLOAD = b"server-side " * 1000


def ends(scheme: str) -> tuple[str, str]:
    if scheme == "s3":  # one bucket, two prefixes
        bucket = unique_name()
        return f"s3://{bucket}/routes/in/", f"s3://{bucket}/routes/out/"
    # GCS: two buckets, same credentials; Azure: two containers, same account.
    return f"{scheme}://{unique_name()}/in/", f"{scheme}://{unique_name()}/out/"


@pytest.mark.parametrize("scheme", ["s3", "gs", "az"])
def test_copies_within_one_store_are_server_side(devstack: StackState, scheme: str) -> None:
    source_url, dest_url = ends(scheme)

    async def copy() -> None:
        async with open_store(source_url) as source, open_store(dest_url) as dest:
            await source.create_container()
            await dest.create_container()
            await source.put("a/b.bin", PAYLOAD)
            assert dest.copies_from(source)
            result = await Copier().copy(source, "a/b.bin", dest, "a/b.bin")
            assert result.strategy is Strategy.SERVER_SIDE
            assert result.bytes_transferred == 0

    sync(copy())
    assert read_object(dest_url + "a/b.bin") == PAYLOAD


def test_other_endpoints_or_accounts_are_not_the_same_store(devstack: StackState) -> None:
    async def check() -> None:
        async with (
            open_store(f"s3://{unique_name()}/a/") as s3,
            open_store(f"gs://{unique_name()}/a/") as gcs,
            open_store(f"s3://{unique_name()}/b/") as other_bucket,
        ):
            assert not gcs.copies_from(s3)
            assert not other_bucket.copies_from(s3)

    sync(check())


def test_a_backfill_within_one_bucket_verifies(devstack: StackState, cli: Cli) -> None:
    source_url, dest_url = ends("s3")

    async def fill() -> None:
        async with open_store(source_url) as source:
            await source.create_container()
            for i in range(5):
                await source.put(f"k{i}", PAYLOAD + bytes([i]))

    sync(fill())
    code, report = cli.invoke("backfill", source_url, dest_url)
    assert code == 0, report
    code, report = cli.invoke("verify", source_url, dest_url, "--deep")
    assert code == 0, report
    [result] = report.values()
    assert result["in_sync"] == 5
