"""A copy is skipped only for a destination shown to hold the source version's bytes, and a
replica that failed its verification after the write never stays behind to be taken for one."""

from __future__ import annotations

import os

import boto3
import pytest

from connectors.base import IntegrityError, MiB, NotFound, ObjectStore
from replicator.engine.metadata import replica_attributes
from replicator.engine.retry import RetryPolicy
from replicator.engine.transfer import Copier, version_id
from tests.conftest import StoreFactory
from tests.engine.faults import FaultyStore
from tests.independent import read_object

PART = 8 * MiB
FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)


def copier() -> Copier:
    return Copier(part_size=PART, concurrency=4, retry=FAST_RETRY)


# Not az: a blob committed from blocks has no whole-object checksum, so nothing after the
# write can tell its bytes from others of the same size (each block was checked on the way).
@pytest.mark.parametrize("dest_scheme", ["s3", "gs", "file"])
async def test_a_replica_that_fails_verification_is_removed(
    store_factory: StoreFactory, dest_scheme: str
) -> None:
    """The object that landed is not the one sent: the copy fails, the object carrying the
    replica marks is removed, and the next copy writes the right bytes."""
    # Not from a file to a file: that is a kernel copy, checked before it is published.
    source = await store_factory("mem")
    dest = FaultyStore(await store_factory(dest_scheme))
    data = os.urandom(3 * PART + 1)
    await source.put("k", data)
    # A GCS upload session that comes out damaged is sent again as parallel parts: both
    # attempts land damaged here.
    dest.damage_next_writes = 2 if dest_scheme == "gs" else 1
    with pytest.raises(IntegrityError):
        await copier().copy(source, "k", dest, "k")
    assert dest.damage_next_writes == 0
    with pytest.raises(NotFound):
        await dest.head("k")
    again = await copier().copy(source, "k", dest, "k")
    assert again.status == "copied"
    assert read_object(dest.url_for("k")) == data


@pytest.mark.parametrize("dest_scheme", ["s3", "gs", "file"])
@pytest.mark.parametrize("size", [1000, 3 * PART])
async def test_marks_without_the_bytes_are_not_a_replica(
    store_factory: StoreFactory, dest_scheme: str, size: int
) -> None:
    """A destination object that carries the marks of this very source version but holds
    other bytes of the same size (overwritten, restored from elsewhere) is copied again: its
    checksum is compared with the source's."""
    source = await store_factory("gs")
    dest = await store_factory(dest_scheme)
    data = os.urandom(size)
    await source.put("k", data)
    await copier().copy(source, "k", dest, "k")
    replica = await dest.head("k")
    await dest.put("k", os.urandom(size), attributes=replica.attributes)
    again = await copier().copy(source, "k", dest, "k")
    assert again.status == "copied"
    assert read_object(dest.url_for("k")) == data


async def test_marks_on_an_object_of_another_size_are_not_a_replica(
    store_factory: StoreFactory,
) -> None:
    source = await store_factory("file")
    dest = await store_factory("az")
    data = os.urandom(5000)
    await source.put("k", data)
    await copier().copy(source, "k", dest, "k")
    replica = await dest.head("k")
    await dest.put("k", data[:-1], attributes=replica.attributes)
    again = await copier().copy(source, "k", dest, "k")
    assert again.status == "copied"
    assert read_object(dest.url_for("k")) == data


async def test_an_s3_multipart_replica_without_a_whole_object_checksum_is_copied_again(
    store_factory: StoreFactory,
) -> None:
    """An S3 multipart object holds user metadata fixed before its bytes were known, and a
    composite checksum of its parts: marks alone on such an object (as written by a copy that
    failed its verification and died before removing it) prove nothing, so it is replaced
    rather than skipped."""
    source = await store_factory("file")
    dest = await store_factory("s3")
    data = os.urandom(2 * PART)
    await source.put("k", data)
    src = await source.head("k")
    marks = replica_attributes(
        src.attributes, "s3", source_url=src.url, source_version=version_id(src)
    ).user_metadata
    bucket = dest.root_url.removeprefix("s3://").rstrip("/")
    client = boto3.client(
        "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1"
    )
    upload = client.create_multipart_upload(
        Bucket=bucket, Key="k", Metadata=dict(marks), ChecksumAlgorithm="CRC32C"
    )
    parts = []
    for number in (1, 2):
        # Bytes that are not the source's: the damage a failed verification found.
        answer = client.upload_part(
            Bucket=bucket,
            Key="k",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=os.urandom(PART),
            ChecksumAlgorithm="CRC32C",
        )
        parts.append(
            {
                "PartNumber": number,
                "ETag": answer["ETag"],
                "ChecksumCRC32C": answer["ChecksumCRC32C"],
            }
        )
    client.complete_multipart_upload(
        Bucket=bucket, Key="k", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    result = await copier().copy(source, "k", dest, "k")
    assert result.status == "copied"
    assert read_object(dest.url_for("k")) == data


@pytest.mark.parametrize("dest_scheme", ["s3", "gs", "az", "file"])
async def test_a_verified_multipart_replica_is_skipped(
    store_factory: StoreFactory, dest_scheme: str
) -> None:
    """What the engine wrote and verified is recognised, S3 multipart replicas included
    (their whole-object CRC32C stands for the fingerprint their metadata cannot hold)."""
    source = await store_factory("gs")
    dest: ObjectStore = await store_factory(dest_scheme)
    await source.put("k", os.urandom(2 * PART + 5))
    first = await copier().copy(source, "k", dest, "k")
    assert first.status == "copied"
    again = await copier().copy(source, "k", dest, "k")
    assert again.status == "skipped"
