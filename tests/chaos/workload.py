"""The mutations of a chaos run: planned from the seed alone, applied to the sources directly
(never through the fault proxies), with what the oracle needs to recognise every version.

Two sources: an S3 bucket whose notifications reach the daemons through a real SQS queue, and a
GCS bucket whose notifications the run pushes to the daemons' ``/ingest/gcs`` as Pub/Sub push
would (no Pub/Sub emulator here): after each write, with retries on another daemon while one is
down, and now and then twice (Pub/Sub delivers at least once).

Every version's content is recognisable: ``CHAOS <key id> <n>|`` at both ends (objects of 54
bytes and more) and pseudo-random bytes from (seed, key, n) in between, so that a sample of
the head, the tail and the size names the version, and a whole read proves it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import itertools
import json
import random
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
import boto3
from botocore.config import Config

Store = Literal["s3", "gs"]
Kind = Literal["put", "delete"]
LARGE_PART = 8 * 1024 * 1024
KiB, MiB = 1024, 1024 * 1024
# Pub/Sub retries a push for days; a run gives up on one after this long.
PUSH_DEADLINE_S = 300.0
# Key names a replicator must keep byte for byte (S3 notifications quote them, URLs must not
# decode them, file stores must map them to paths).
KEY_SUFFIXES = ("", " space", "+plus", "ü-unicode", "%41-percent", "a=b&c", "~tilde", "semi;colon")


def marker(key_id: int, n: int) -> bytes:
    return b"CHAOS %08d %011d|" % (key_id, n)


MARK = len(marker(0, 0))


def content(seed: int, key_id: int, n: int, size: int) -> bytes:
    """The bytes of version ``n`` of key ``key_id`` (deterministic)."""
    if size < 2 * MARK:
        return (marker(key_id, n) * (size // MARK + 1))[:size]
    middle = random.Random(f"{seed}/{key_id}/{n}").randbytes(size - 2 * MARK)
    return marker(key_id, n) + middle + marker(key_id, n)


@dataclass(frozen=True)
class Version:
    """One state of one key: what was written (or that it was deleted)."""

    n: int
    kind: Kind
    size: int = 0
    digest: str = ""


@dataclass
class Mutation:
    """One planned change, and what happened when it was applied."""

    index: int
    store: Store
    key_id: int
    key: str
    version: Version
    burst: bool = False
    started: float = 0.0
    done: float = 0.0
    # When the system could know about it (S3: the put returned, its notification is in the
    # queue; GCS: a daemon accepted the push), and its event time as the daemons see it (an
    # upper bound for S3, whose notification time moto sets during the request).
    notified: float = 0.0
    event_time: float = 0.0
    generation: str = ""
    # The object resource GCS returned for a put (the push notification's data).
    resource: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class Plan:
    seed: int
    mutations: list[Mutation]
    keys: dict[tuple[Store, int], str]

    def versions(self) -> dict[tuple[Store, str], list[Version]]:
        found: dict[tuple[Store, str], list[Version]] = {}
        for mutation in self.mutations:
            found.setdefault((mutation.store, mutation.key), []).append(mutation.version)
        return found


def key_name(key_id: int, rng: random.Random) -> str:
    suffix = KEY_SUFFIXES[key_id % len(KEY_SUFFIXES)] if rng.random() < 0.3 else ""
    return f"d{key_id % 7}/obj-{key_id:05d}{suffix}"


def plan(seed: int, count: int, *, large_share: float = 0.01, max_large: int = 20) -> Plan:
    """``count`` mutations over both sources: puts of new keys, overwrites, deletes,
    re-creations, and bursts of several changes to one key; sizes from 0 B to multipart."""
    rng = random.Random(seed)
    keys: dict[tuple[Store, int], str] = {}
    present: dict[tuple[Store, int], bool] = {}
    counters: dict[tuple[Store, int], int] = {}
    mutations: list[Mutation] = []
    large = 0
    next_id = 0

    def size() -> int:
        nonlocal large
        draw = rng.random()
        if draw < large_share and large < max_large:
            large += 1
            return rng.randint(17 * MiB, 24 * MiB)
        if draw < 0.05:
            return 0
        if draw < 0.35:
            return rng.randint(1, 1 * KiB)
        if draw < 0.85:
            return rng.randint(1 * KiB, 256 * KiB)
        return rng.randint(256 * KiB, 4 * MiB)

    def add(store: Store, key_id: int, kind: Kind, burst: bool) -> None:
        ident = (store, key_id)
        counters[ident] = counters.get(ident, 0) + 1
        n = counters[ident]
        if kind == "put":
            length = size()
            digest = hashlib.sha256(content(seed, key_id, n, length)).hexdigest()
            version = Version(n, "put", length, digest)
        else:
            version = Version(n, "delete")
        present[ident] = kind == "put"
        mutations.append(Mutation(len(mutations), store, key_id, keys[ident], version, burst))

    while len(mutations) < count:
        store: Store = "s3" if rng.random() < 0.6 else "gs"
        known = [key_id for (s, key_id) in keys if s == store]
        draw = rng.random()
        if not known or draw < 0.3:
            key_id = next_id
            next_id += 1
            keys[(store, key_id)] = key_name(key_id, rng)
            add(store, key_id, "put", False)
            continue
        key_id = rng.choice(known)
        ident = (store, key_id)
        if draw < 0.4:
            # A burst: several changes to one key back to back.
            for _ in range(rng.randint(3, 6)):
                kind: Kind = "delete" if present[ident] and rng.random() < 0.3 else "put"
                add(store, key_id, kind, True)
        elif present[ident]:
            add(store, key_id, "delete" if draw < 0.6 else "put", False)
        else:
            add(store, key_id, "put", False)  # a re-creation
    return Plan(seed, mutations, keys)


def _iso(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class PushStats:
    sent: int = 0
    retried: int = 0
    duplicated: int = 0
    refused: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)


class Mutator:
    """Applies a plan's mutations, paced over a duration, with at most ``concurrency`` at once
    and the changes of one key strictly one after the other."""

    def __init__(
        self,
        plan: Plan,
        *,
        s3_endpoint: str,
        s3_bucket: str,
        gcs_host: str,
        gcs_bucket: str,
        push_targets: Callable[[], Sequence[str]],
        ingest_token: str,
        concurrency: int = 8,
    ) -> None:
        self.plan = plan
        self.s3_bucket = s3_bucket
        self.gcs_host = gcs_host
        self.gcs_bucket = gcs_bucket
        self.push_targets = push_targets
        self.ingest_token = ingest_token
        self.rng = random.Random(plan.seed * 7919 + 1)
        self._slots = asyncio.Semaphore(concurrency)
        self._threads = ThreadPoolExecutor(max_workers=concurrency + 2)
        self._s3 = boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="chaos",
            aws_secret_access_key="chaos-mutator",
            config=Config(
                retries={"total_max_attempts": 10, "mode": "standard"},
                max_pool_connections=concurrency + 2,
                read_timeout=120,
            ),
        )
        self._session: aiohttp.ClientSession | None = None
        self._generations: dict[str, str] = {}
        self.push = PushStats()
        self._message_ids = 0

    async def run(self, duration_s: float, stop: asyncio.Event | None = None) -> None:
        """Apply every mutation, spread evenly over ``duration_s`` (a burst's changes go out
        back to back); returns when all are applied."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180))
        try:
            tails: dict[tuple[Store, int], asyncio.Task[None]] = {}
            tasks: list[asyncio.Task[None]] = []
            interval = duration_s / max(1, len(self.plan.mutations))
            start = time.monotonic()
            for mutation in self.plan.mutations:
                if stop is not None and stop.is_set():
                    break
                if not mutation.burst:
                    delay = start + mutation.index * interval - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                ident = (mutation.store, mutation.key_id)
                task = asyncio.create_task(self._apply_after(mutation, tails.get(ident)))
                tails[ident] = task
                tasks.append(task)
            await asyncio.gather(*tasks)
        finally:
            await self._session.close()
            self._threads.shutdown(wait=True)

    async def _apply_after(self, mutation: Mutation, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        async with self._slots:
            mutation.started = time.time()
            for attempt in range(20):
                try:
                    if mutation.store == "s3":
                        await self._apply_s3(mutation)
                    else:
                        await self._apply_gcs(mutation)
                    mutation.error = ""
                    break
                except Exception as exc:
                    mutation.error = f"{type(exc).__name__}: {exc}"
                    await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
        if mutation.store == "gs" and not mutation.error:
            await self._push(mutation)

    # -- S3 ------------------------------------------------------------------------------------

    async def _blocking(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, lambda: function(*args, **kwargs))

    async def _apply_s3(self, mutation: Mutation) -> None:
        version = mutation.version
        if version.kind == "delete":
            await self._blocking(self._s3.delete_object, Bucket=self.s3_bucket, Key=mutation.key)
        else:
            data = content(self.plan.seed, mutation.key_id, version.n, version.size)
            if version.size > LARGE_PART:
                await self._blocking(self._multipart_put, mutation.key, data)
            else:
                await self._blocking(
                    self._s3.put_object, Bucket=self.s3_bucket, Key=mutation.key, Body=data
                )
        mutation.done = mutation.notified = mutation.event_time = time.time()

    def _multipart_put(self, key: str, data: bytes) -> None:
        upload = self._s3.create_multipart_upload(Bucket=self.s3_bucket, Key=key)["UploadId"]
        parts = []
        for number, offset in enumerate(range(0, len(data), LARGE_PART), start=1):
            etag = self._s3.upload_part(
                Bucket=self.s3_bucket,
                Key=key,
                UploadId=upload,
                PartNumber=number,
                Body=data[offset : offset + LARGE_PART],
            )["ETag"]
            parts.append({"PartNumber": number, "ETag": etag})
        self._s3.complete_multipart_upload(
            Bucket=self.s3_bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
        )

    # -- GCS -----------------------------------------------------------------------------------

    async def _apply_gcs(self, mutation: Mutation) -> None:
        assert self._session is not None
        version = mutation.version
        name = urllib.parse.quote(mutation.key, safe="")
        if version.kind == "delete":
            url = f"{self.gcs_host}/storage/v1/b/{self.gcs_bucket}/o/{name}"
            async with self._session.delete(url) as response:
                if response.status not in (204, 200, 404):
                    raise RuntimeError(f"GCS delete answered {response.status}")
            mutation.generation = self._generations.pop(mutation.key, "")
            mutation.done = mutation.event_time = time.time()
            return
        data = content(self.plan.seed, mutation.key_id, version.n, version.size)
        url = (
            f"{self.gcs_host}/upload/storage/v1/b/{self.gcs_bucket}/o?uploadType=media&name={name}"
        )
        async with self._session.post(
            # A buffer, not bytes: aiohttp warns about large bytes bodies (an error under the
            # test suite's warning filter).
            url,
            data=io.BytesIO(data),
            headers={"Content-Type": "application/octet-stream"},
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"GCS upload answered {response.status}")
            resource = await response.json()
        mutation.generation = str(resource["generation"])
        self._generations[mutation.key] = mutation.generation
        mutation.event_time = _parse_time(resource["updated"])
        mutation.done = time.time()
        mutation.resource = resource

    def _push_body(self, mutation: Mutation) -> bytes:
        self._message_ids += 1
        put = mutation.version.kind == "put"
        resource: dict[str, Any] = (
            mutation.resource
            if put
            else {
                "kind": "storage#object",
                "name": mutation.key,
                "bucket": self.gcs_bucket,
                "generation": mutation.generation,
            }
        )
        attributes = {
            "notificationConfig": f"projects/_/buckets/{self.gcs_bucket}/notificationConfigs/1",
            "eventType": "OBJECT_FINALIZE" if put else "OBJECT_DELETE",
            "payloadFormat": "JSON_API_V1",
            "bucketId": self.gcs_bucket,
            "objectId": mutation.key,
            "objectGeneration": mutation.generation or "0",
            "eventTime": _iso(mutation.event_time),
        }
        message_id = f"{self.plan.seed}-{mutation.index}-{self._message_ids}"
        return json.dumps(
            {
                "message": {
                    "attributes": attributes,
                    "data": base64.b64encode(json.dumps(resource).encode()).decode(),
                    "messageId": message_id,
                    "message_id": message_id,
                    "publishTime": _iso(time.time()),
                },
                "subscription": "projects/chaos/subscriptions/replicator",
            }
        ).encode()

    async def _push(self, mutation: Mutation) -> None:
        """Deliver the notification as Pub/Sub push does: retried (on any daemon) until one
        accepts it; now and then delivered twice."""
        assert self._session is not None
        body = self._push_body(mutation)
        deliveries = 2 if self.rng.random() < 0.03 else 1
        for delivery in range(deliveries):
            deadline = time.monotonic() + PUSH_DEADLINE_S
            for attempt in itertools.count():
                if time.monotonic() > deadline:
                    mutation.error = f"push never accepted in {PUSH_DEADLINE_S:.0f} s"
                    return
                targets = list(self.push_targets())
                if targets:
                    target = targets[(mutation.index + attempt) % len(targets)]
                    try:
                        async with self._session.post(
                            f"{target}/ingest/gcs",
                            data=body,
                            headers={
                                "Authorization": f"Bearer {self.ingest_token}",
                                "Content-Type": "application/json",
                            },
                        ) as response:
                            text = await response.text()
                            self.push.responses.append(text[:2000])
                            if response.status < 300 or (
                                response.status == 403 and "replay" in text.lower()
                            ):
                                self.push.sent += 1
                                if delivery == 0:
                                    mutation.notified = time.time()
                                else:
                                    self.push.duplicated += 1
                                break
                            self.push.refused.append(f"{response.status}: {text[:200]}")
                    except (aiohttp.ClientError, TimeoutError):
                        pass
                self.push.retried += 1
                await asyncio.sleep(min(2.0, 0.1 * (attempt + 1)))
