"""`replicator cp --explain`: the plan a copy would follow and why, for every pair of stores in
README's table, moving no byte; the copy that follows takes exactly that path."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import pytest

from connectors.base import MiB, NotFound, ObjectStore
from tests.conftest import StoreFactory

SCHEMES = ("s3", "gs", "az", "file")
SIZE = 9 * MiB
# 4 MiB parts, raised to S3's 5 MiB minimum (rounded to the 4 MiB fingerprint block).
PARTS = {"s3": 2, "gs": 3, "az": 3, "file": 3}
ONE_STORE = {
    "s3": "one store (one bucket through one endpoint and credentials): CopyObject",
    "gs": "one store (the buckets of one endpoint and credentials): rewrite",
    "az": "one store (the containers of one storage account and credentials): Copy Blob",
    "file": "one store (the file stores of this machine): a kernel copy",
}


async def replicator(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "replicator",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def explain(*args: str) -> dict[str, Any]:
    plans = [
        json.loads(line)
        for line in (await replicator("cp", "--explain", "--json", *args)).splitlines()
    ]
    assert len(plans) == 1, plans
    plan: dict[str, Any] = plans[0]
    return plan


async def destination_for(
    store_factory: StoreFactory, source: ObjectStore, dest_scheme: str
) -> str:
    """Within one S3 bucket (S3 copies server-side there only); elsewhere another bucket,
    container or directory of the same store."""
    if dest_scheme == source.scheme == "s3":
        return source.url_for("copies/obj")
    return (await store_factory(dest_scheme)).url_for("obj")


@pytest.mark.parametrize("dest_scheme", SCHEMES)
@pytest.mark.parametrize("source_scheme", SCHEMES)
async def test_explain_shows_the_path_the_copy_takes(
    store_factory: StoreFactory, source_scheme: str, dest_scheme: str
) -> None:
    """Same store: a server-side copy, saying which request and why; two stores: a
    multipart upload in the destination's parts. Nothing is written by explaining, and the
    copy then takes exactly the explained path."""
    source = await store_factory(source_scheme)
    await source.put("data/obj", os.urandom(SIZE))
    dest_url = await destination_for(store_factory, source, dest_scheme)
    options = ("--part-size", "4MiB", "--concurrency", "2")

    plan = await explain(*options, source.url_for("data/obj"), dest_url)

    assert plan["action"] == "copy"
    assert plan["destination"] == dest_url
    assert plan["size"] == SIZE
    if source_scheme == dest_scheme:
        assert plan["strategy"] == "server_side"
        assert plan["reason"].startswith(ONE_STORE[dest_scheme])
        assert (plan["parts"], plan["concurrency"]) == (0, 0)
    else:
        assert plan["strategy"] == "multipart"
        assert plan["reason"].startswith("not one store: the destination copies server-side")
        # GCS takes the parts in order into one upload session: an ordinary object.
        ordered = dest_scheme == "gs"
        assert plan["ordered_upload"] is ordered
        assert plan["reason"].endswith(", in order into one upload: an ordinary object") is ordered
        assert (plan["parts"], plan["concurrency"]) == (PARTS[dest_scheme], 1 if ordered else 2)
    assert plan["fence"] == "create-only: the destination holds nothing"
    dest_store, dest_key = _open(dest_url)
    async with dest_store:
        with pytest.raises(NotFound):
            await dest_store.head(dest_key)

    copied = json.loads(
        await replicator("cp", "--json", *options, source.url_for("data/obj"), dest_url)
    )
    explained = (plan["strategy"], plan["parts"], plan["ordered_upload"])
    assert (copied["strategy"], copied["parts"], copied["ordered_upload"]) == explained


def _open(url: str) -> tuple[ObjectStore, str]:
    from connectors import open_object

    return open_object(url)


async def test_text_and_skip(store_factory: StoreFactory) -> None:
    """The human form names every decision; once copied, explaining says the copy is skipped
    and why, with the fence the destination's object would give."""
    source, dest = await store_factory("s3"), await store_factory("gs")
    await source.put("k", b"x" * 1000)

    text = await replicator("cp", "--explain", source.url_for("k"), dest.url_for("k"))

    lines = text.splitlines()
    assert lines[0] == f"{source.url_for('k')} -> {dest.url_for('k')}: 1000 bytes"
    assert [line.split(":")[0] for line in lines[1:]] == [
        "  plan",
        "  why",
        "  reads",
        "  checksums sent",
        "  verified",
        "  fence",
    ]
    assert lines[1] == "  plan: single, one part"
    assert lines[2].endswith(f"1000 bytes fit in one part of {16 * MiB}: one put")
    await replicator("cp", source.url_for("k"), dest.url_for("k"))

    plan = await explain(source.url_for("k"), dest.url_for("k"))

    assert plan["action"] == "skip"
    assert plan["skip_reason"] == "destination already holds this source version"
    assert plan["fence"] == "none: nothing is written"


async def test_recursive_explains_every_object(store_factory: StoreFactory) -> None:
    """With -r, one plan per object under the source prefix, to the same relative key; a
    missing destination directory is one the copy would create, so it holds nothing."""
    source, dest_root = await store_factory("az"), await store_factory("file")
    await source.put("p/small", b"s" * 10)
    await source.put("p/big", os.urandom(SIZE))
    dest_url = dest_root.url_for("not/yet/")

    out = await replicator(
        "cp", "-r", "--explain", "--json", "--part-size", "4MiB", source.url_for("p/"), dest_url
    )

    plans = [json.loads(line) for line in out.splitlines()]
    assert [(p["destination"], p["strategy"], p["parts"]) for p in plans] == [
        (dest_url + "big", "multipart", 3),
        (dest_url + "small", "single", 1),
    ]
    assert {p["fence"] for p in plans} == {"create-only: the destination holds nothing"}
    assert [entry async for entry in dest_root.list()] == []
