"""The fault proxy itself, in front of the real emulators: every fault is observable from the
client's side and from the store's, and a seed reproduces the sequence of faults."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aiohttp
import boto3
import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient
from botocore.config import Config
from botocore.exceptions import ClientError

from replicator.devstack import StackState
from replicator.devstack.stack import azurite_connection_string
from tests.chaos.proxies import ProxyProcess
from tests.chaos.proxy import FaultProfile, FaultProxy, flip_byte

T = TypeVar("T")


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


@pytest.fixture
def bucket(devstack: StackState) -> str:
    name = f"proxy-{uuid.uuid4().hex[:12]}"
    s3_client(devstack.env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return name


@pytest.fixture
async def s3_proxy(devstack: StackState) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(devstack.env["AWS_ENDPOINT_URL"], flavour="s3", seed=1) as proxy:
        yield proxy


async def off_loop(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking client call, off the event loop the proxy under test runs on."""
    return await asyncio.to_thread(function, *args, **kwargs)


def direct_get(devstack: StackState, bucket: str, key: str) -> bytes | None:
    try:
        body: bytes = (
            s3_client(devstack.env["AWS_ENDPOINT_URL"])
            .get_object(Bucket=bucket, Key=key)["Body"]
            .read()
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchKey":
            return None
        raise
    return body


async def request(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.request(method, url, data=data, headers=headers or {}) as response,
    ):
        return response.status, await response.read(), dict(response.headers)


class TestForwarding:
    async def test_without_faults_every_request_is_forwarded_byte_exact(
        self, devstack: StackState, s3_proxy: FaultProxy, bucket: str
    ) -> None:
        """Puts, gets, ranged gets and HEAD (whose Content-Length is the object's size) pass
        through unchanged."""
        client = s3_client(s3_proxy.url)
        data = bytes(range(256)) * 4001
        key = "a b/ü+x"
        await off_loop(client.put_object, Bucket=bucket, Key=key, Body=data)
        assert direct_get(devstack, bucket, key) == data
        got = await off_loop(lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert got == data
        ranged = await off_loop(
            lambda: client.get_object(Bucket=bucket, Key=key, Range="bytes=10-19")["Body"].read()
        )
        assert ranged == data[10:20]
        head = await off_loop(client.head_object, Bucket=bucket, Key=key)
        assert head["ContentLength"] == len(data)
        assert s3_proxy.stats.requests == 4
        assert sum(s3_proxy.stats.faults.values()) == 0

    async def test_redirects_to_the_upstream_are_rewritten_to_the_proxy(
        self, devstack: StackState
    ) -> None:
        """fake-gcs-server answers a resumable upload with a Location naming itself: through
        the proxy, it names the proxy, so the upload's bytes go through it too."""
        host = devstack.env["STORAGE_EMULATOR_HOST"]
        bucket = f"proxy-{uuid.uuid4().hex[:12]}"
        status, _, _ = await request(
            "POST", f"{host}/storage/v1/b?project=p", f'{{"name": "{bucket}"}}'.encode()
        )
        assert status == 200
        async with FaultProxy(host, flavour="gcs") as proxy:
            status, _, headers = await request(
                "POST",
                f"{proxy.url}/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name=k",
                b"{}",
                {"Content-Type": "application/json"},
            )
            assert status == 200
            assert headers["Location"].startswith(proxy.url + "/")
            status, _, _ = await request("PUT", headers["Location"], b"resumed bytes")
            assert status == 200
            assert proxy.stats.requests == 2
        status, body, _ = await request("GET", f"{host}/storage/v1/b/{bucket}/o/k?alt=media")
        assert (status, body) == (200, b"resumed bytes")


class TestFaults:
    async def test_throttling_speaks_each_stores_language(
        self, devstack: StackState, bucket: str
    ) -> None:
        """S3 503 SlowDown, GCS 429 rateLimitExceeded and Azure 503 ServerBusy, each with
        Retry-After, never forwarded."""
        always = FaultProfile(throttle=1.0, retry_after_s=3)
        async with FaultProxy(devstack.env["AWS_ENDPOINT_URL"], flavour="s3", profile=always) as p:
            with pytest.raises(ClientError) as raised:
                await off_loop(s3_client(p.url).put_object, Bucket=bucket, Key="never", Body=b"x")
            error = raised.value.response
            assert error["Error"]["Code"] == "SlowDown"
            assert error["ResponseMetadata"]["HTTPStatusCode"] == 503
            assert error["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "3"
            assert p.stats.faults["throttle"] == 1
        assert direct_get(devstack, bucket, "never") is None
        host = devstack.env["STORAGE_EMULATOR_HOST"]
        async with FaultProxy(host, flavour="gcs", profile=always) as p:
            status, body, headers = await request("GET", f"{p.url}/storage/v1/b")
            assert status == 429
            assert b"rateLimitExceeded" in body
            assert headers["Retry-After"] == "3"
        azure_port = devstack.components["azure"].port
        async with FaultProxy(
            f"http://127.0.0.1:{azure_port}", flavour="azure", profile=always
        ) as p:
            proxied = azurite_connection_string(int(p.url.rsplit(":", 1)[1]))
            service = BlobServiceClient.from_connection_string(proxied, retry_total=0)
            with pytest.raises(HttpResponseError) as azure_error:
                await off_loop(service.create_container, f"proxy-{uuid.uuid4().hex[:12]}")
            assert azure_error.value.status_code == 503
            assert azure_error.value.error_code == "ServerBusy"

    async def test_reset_before_never_reaches_the_store(
        self, devstack: StackState, bucket: str
    ) -> None:
        profile = FaultProfile(reset_before=1.0)
        async with FaultProxy(devstack.env["AWS_ENDPOINT_URL"], flavour="s3", profile=profile) as p:
            with pytest.raises(aiohttp.ClientError):
                await request("PUT", f"{p.url}/{bucket}/reset-before", b"lost")
            # (aiohttp retries an idempotent request once on a dropped connection)
            assert p.stats.faults["reset_before"] == p.stats.requests >= 1
        assert direct_get(devstack, bucket, "reset-before") is None

    async def test_reset_after_applies_the_write_but_loses_the_answer(
        self, devstack: StackState, bucket: str
    ) -> None:
        profile = FaultProfile(reset_after=1.0)
        async with FaultProxy(devstack.env["AWS_ENDPOINT_URL"], flavour="s3", profile=profile) as p:
            with pytest.raises(aiohttp.ClientError):
                await request("PUT", f"{p.url}/{bucket}/reset-after", b"landed")
            assert p.stats.faults["reset_after"] == p.stats.requests >= 1
        assert direct_get(devstack, bucket, "reset-after") == b"landed"

    async def test_truncated_body_is_shorter_than_promised(
        self, devstack: StackState, s3_proxy: FaultProxy, bucket: str
    ) -> None:
        data = b"0123456789" * 10_000
        s3_client(devstack.env["AWS_ENDPOINT_URL"]).put_object(
            Bucket=bucket, Key="t", Body=data, ACL="public-read"
        )
        s3_proxy.profile = FaultProfile(truncate=1.0)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{s3_proxy.url}/{bucket}/t") as response,
        ):
            assert response.status == 200
            assert response.content_length == len(data)
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        assert s3_proxy.stats.faults["truncate"] == 1

    async def test_flipped_bytes_in_requests_and_answers(
        self, devstack: StackState, s3_proxy: FaultProxy, bucket: str
    ) -> None:
        """One byte differs, in the stored object (request) or in what the client reads
        (answer); the store's copy of an answer is untouched. Control bodies (XML, JSON) are
        left alone by the default "data" scope."""
        data = bytes(range(256)) * 100
        # Anonymous requests: the object is made readable by them.
        headers = {"Content-Type": "application/octet-stream", "x-amz-acl": "public-read"}
        s3_proxy.profile = FaultProfile(flip_request=1.0)
        status, _, _ = await request("PUT", f"{s3_proxy.url}/{bucket}/f", data, headers)
        assert status == 200
        stored = direct_get(devstack, bucket, "f")
        assert stored is not None
        assert len(stored) == len(data)
        assert sum(a != b for a, b in zip(stored, data, strict=True)) == 1
        s3_proxy.profile = FaultProfile(flip_response=1.0)
        status, read, _ = await request("GET", f"{s3_proxy.url}/{bucket}/f")
        assert status == 200
        assert sum(a != b for a, b in zip(read, stored, strict=True)) == 1
        assert direct_get(devstack, bucket, "f") == stored
        status, listing, _ = await request("GET", f"{s3_proxy.url}/{bucket}?list-type=2")
        assert status == 200
        assert b"<Key>f</Key>" in listing
        assert s3_proxy.stats.faults["flip_request"] == 1
        assert s3_proxy.stats.faults["flip_response"] == 1
        assert s3_proxy.stats.not_applicable["flip_response"] == 1

    async def test_latency_delays_the_request(
        self, devstack: StackState, s3_proxy: FaultProxy, bucket: str
    ) -> None:
        s3_proxy.profile = FaultProfile(latency=1.0, max_latency_s=0.4)
        started = time.monotonic()
        status, _, _ = await request("GET", f"{s3_proxy.url}/{bucket}?list-type=2")
        elapsed = time.monotonic() - started
        assert status == 200
        [decision] = s3_proxy.decisions
        assert decision.fault == "latency"
        assert elapsed >= decision.position * 0.4
        assert s3_proxy.stats.faults["latency"] == 1


class TestSeeds:
    def test_a_seed_reproduces_the_sequence_of_faults(self) -> None:
        profile = FaultProfile.failing_share(0.3)
        sequences = []
        for seed in (7, 7, 8):
            proxy = FaultProxy("http://127.0.0.1:9", flavour="s3", profile=profile, seed=seed)
            sequences.append([proxy.decide("GET", f"/{i}") for i in range(300)])
        assert sequences[0] == sequences[1]
        assert sequences[0] != sequences[2]
        kinds = {decision.fault for decision in sequences[0]}
        assert kinds == {
            "none",
            "latency",
            "throttle",
            "reset_before",
            "reset_after",
            "truncate",
            "flip_request",
            "flip_response",
        }

    def test_a_failing_share_is_the_sum_of_the_failure_rates(self) -> None:
        assert FaultProfile.failing_share(0.2).failing == pytest.approx(0.2)
        with pytest.raises(ValueError, match="add up"):
            FaultProfile(throttle=0.7, truncate=0.7)

    async def test_the_same_requests_meet_the_same_faults(
        self, devstack: StackState, bucket: str
    ) -> None:
        """Two proxies with one seed, the same requests one after the other: the same faults,
        and the store sees the same outcome."""
        outcomes = []
        for _ in range(2):
            profile = FaultProfile(throttle=0.3, reset_before=0.3)
            async with FaultProxy(
                devstack.env["AWS_ENDPOINT_URL"], flavour="s3", profile=profile, seed=42
            ) as proxy:
                statuses = []
                for index in range(20):
                    try:
                        status, _, _ = await request("GET", f"{proxy.url}/{bucket}?i={index}")
                    except aiohttp.ClientError:
                        status = 0
                    statuses.append(status)
                outcomes.append((statuses, [d.fault for d in proxy.decisions]))
        assert outcomes[0] == outcomes[1]
        assert {0, 200, 503} <= set(outcomes[0][0])


def test_flip_byte_inverts_exactly_one_byte() -> None:
    assert flip_byte(b"\x00\x00\x00", 0.5) == b"\x00\xff\x00"
    assert flip_byte(b"a", 0.999) == bytes([ord("a") ^ 0xFF])


async def test_the_proxy_process_reports_and_changes_its_profile(
    devstack: StackState, bucket: str, tmp_path: Any
) -> None:
    """The chaos run's proxies in their own process: counts over the control port, and the
    profile switched off for the quiescence."""
    process = await asyncio.to_thread(
        ProxyProcess.start,
        {"s3": (devstack.env["AWS_ENDPOINT_URL"], "s3", True)},
        seed=3,
        profile=FaultProfile(throttle=1.0),
        log_path=tmp_path / "proxies.log",
    )
    try:
        url = process.urls["s3"]
        status, _, _ = await request("GET", f"{url}/{bucket}?list-type=2")
        assert status == 503
        await asyncio.to_thread(process.set_profile, FaultProfile())
        status, _, _ = await request("GET", f"{url}/{bucket}?list-type=2")
        assert status == 200
        stats = await asyncio.to_thread(process.stats)
        assert stats["s3"]["requests"] == 2
        assert stats["s3"]["faults"] == {"throttle": 1}
        assert await asyncio.to_thread(process.azure_discarded) == set()
    finally:
        process.stop()
