"""Getting change notifications into Kafka: HTTP push receivers, an SQS poller and a listing
scanner. Every path parses with ``replicator.pipeline.events``, drops what no route takes,
publishes the rest to the changes topic keyed by source object URL, and parks what it cannot
parse in the DLQ with the reason, so bad input never blocks ingestion and nothing is
acknowledged before Kafka has it.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hmac
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
import structlog
from aiohttp import web

from connectors import open_store
from connectors.base import StoreError
from connectors.sqs import SQSQueue
from replicator.engine.metadata import replica_source
from replicator.engine.retry import RetryPolicy
from replicator.pipeline.bus import CHANGES_TOPIC, DLQ_TOPIC, AsyncProducer
from replicator.pipeline.events import (
    ChangeEvent,
    ParseError,
    azure_validation_code,
    parse_azure,
    parse_gcs,
    parse_s3,
    scan_event,
)
from replicator.pipeline.rules import Router

log = structlog.get_logger(__name__)

Parser = Callable[[bytes | str], list[ChangeEvent]]


class Publisher:
    """Routes, then publishes change events; dead-letters what cannot be parsed."""

    def __init__(
        self,
        producer: AsyncProducer,
        router: Router,
        *,
        changes_topic: str = CHANGES_TOPIC,
        dlq_topic: str = DLQ_TOPIC,
    ) -> None:
        self.producer = producer
        self.router = router
        self.changes_topic = changes_topic
        self.dlq_topic = dlq_topic
        self.published = 0
        self.filtered = 0
        self.dead_lettered = 0

    async def publish(self, events: Sequence[ChangeEvent]) -> int:
        routed = [e for e in events if self.router.targets(e.source_url)]
        self.filtered += len(events) - len(routed)
        await asyncio.gather(
            *(
                self.producer.send(self.changes_topic, e.source_url.encode(), e.to_json())
                for e in routed
            )
        )
        self.published += len(routed)
        return len(routed)

    async def ingest(self, payload: bytes | str, parser: Parser, origin: str) -> int:
        """Parse and publish one notification; unparseable ones go to the DLQ."""
        try:
            events = parser(payload)
        except ParseError as exc:
            await self.dead_letter(payload, exc.reason, origin)
            return 0
        return await self.publish(events)

    async def dead_letter(self, payload: bytes | str, reason: str, origin: str) -> None:
        body = payload.encode() if isinstance(payload, str) else payload
        log.warning("notification dead-lettered", origin=origin, reason=reason[:500])
        await self.producer.send(
            self.dlq_topic,
            None,
            body[:900_000],
            [
                ("replicator.reason", reason[:4000].encode()),
                ("replicator.error", b"ParseError"),
                ("replicator.origin", origin.encode()),
            ],
        )
        self.dead_lettered += 1


# -- SQS ------------------------------------------------------------------------------------


class SQSPoller:
    """Moves S3 notifications from an SQS queue to Kafka; deletes a message only once Kafka
    acknowledged everything it carried.

    One receive returns at most 10 messages, and each round trip (receive, publish, delete)
    takes tens of milliseconds even on AWS, so a single loop caps the rate a queue can drain
    at; ``receivers`` loops run at once so that a busy queue is drained as fast as it fills.
    """

    def __init__(
        self,
        queue: SQSQueue,
        publisher: Publisher,
        *,
        wait_s: int = 10,
        receivers: int = 4,
        retry: RetryPolicy | None = None,
    ) -> None:
        if receivers < 1:
            raise ValueError("an SQS poller needs at least one receiver")
        self.queue = queue
        self.publisher = publisher
        self.wait_s = wait_s
        self.receivers = receivers
        self.retry = retry or RetryPolicy(
            max_attempts=1_000_000, max_delay=30, time_budget=float("inf")
        )

    async def poll_once(self) -> int:
        messages = await self.queue.receive(10, self.wait_s)
        counts = await asyncio.gather(
            *(self.publisher.ingest(m.body, parse_s3, "sqs") for m in messages)
        )
        await self.queue.delete(messages)
        return sum(counts)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._receive(stop) for _ in range(self.receivers)))

    async def _receive(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.retry.run(self.poll_once, what=f"poll {self.queue.queue_url}")
            except StoreError as exc:
                log.error(
                    "SQS polling failed; retrying", queue=self.queue.queue_url, error=str(exc)
                )
                await asyncio.sleep(5)


# -- listing scan ---------------------------------------------------------------------------


async def scan(
    source_url: str,
    publisher: Publisher,
    *,
    start_after: str | None = None,
    on_page: Callable[[str], Awaitable[None]] | None = None,
) -> int:
    """Publish a change event for every object under ``source_url`` (stores without
    notifications, backfills, reconciliation). Replicas found there are skipped."""
    published = 0
    batch: list[ChangeEvent] = []
    async with open_store(source_url) as store:
        async for meta in store.list(start_after=start_after):
            if replica_source(meta.attributes.user_metadata) is not None:
                continue
            batch.append(
                scan_event(meta.url, meta.size, meta.etag, meta.version, meta.last_modified)
            )
            if len(batch) == 500:
                published += await publisher.publish(batch)
                batch.clear()
                if on_page is not None:
                    await on_page(meta.key)
        published += await publisher.publish(batch)
    return published


# -- HTTP push receivers ---------------------------------------------------------------------

SECRET_KEY = web.AppKey("secret", str)
PUBLISHER_KEY = web.AppKey("publisher", Publisher)
SNS_HOSTS_KEY = web.AppKey("sns_hosts", tuple[str, ...])


def _authorised(request: web.Request) -> bool:
    secret = request.app[SECRET_KEY]
    offered = request.query.get("token", "")
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        offered = header.removeprefix("Bearer ")
    return bool(offered) and hmac.compare_digest(offered.encode(), secret.encode())


async def _read(request: web.Request) -> bytes:
    if not _authorised(request):
        raise web.HTTPUnauthorized(text="missing or wrong token\n")
    return await request.read()


async def _confirm_sns(body: bytes, allowed_hosts: Sequence[str]) -> None:
    try:
        document = json.loads(body)
        url = str(document.get("SubscribeURL", ""))
    except (ValueError, AttributeError):
        raise web.HTTPBadRequest(text="SubscriptionConfirmation is not a JSON object\n") from None
    host = urllib.parse.urlsplit(url).hostname or ""
    if not any(fnmatch.fnmatchcase(host, pattern) for pattern in allowed_hosts):
        raise web.HTTPBadRequest(text=f"SubscribeURL host {host!r} is not allowed\n")
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        if response.status >= 300:
            raise web.HTTPBadGateway(text=f"SNS confirmation answered {response.status}\n")
    log.info("SNS subscription confirmed", topic=document.get("TopicArn"))


async def ingest_s3(request: web.Request) -> web.Response:
    body = await _read(request)
    if request.headers.get("x-amz-sns-message-type") == "SubscriptionConfirmation":
        hosts: tuple[str, ...] = request.app[SNS_HOSTS_KEY]
        await _confirm_sns(body, hosts)
        return web.Response(status=200, text="confirmed\n")
    published = await request.app[PUBLISHER_KEY].ingest(body, parse_s3, "s3-http")
    return web.json_response({"published": published}, status=202)


async def ingest_gcs(request: web.Request) -> web.Response:
    body = await _read(request)
    published = await request.app[PUBLISHER_KEY].ingest(body, parse_gcs, "gcs-http")
    return web.json_response({"published": published}, status=202)


async def ingest_azure(request: web.Request) -> web.Response:
    body = await _read(request)
    try:
        code = azure_validation_code(body)
    except ParseError as exc:
        await request.app[PUBLISHER_KEY].dead_letter(body, exc.reason, "azure-http")
        return web.json_response({"published": 0}, status=202)
    if code is not None:
        return web.json_response({"validationResponse": code})
    published = await request.app[PUBLISHER_KEY].ingest(body, parse_azure, "azure-http")
    return web.json_response({"published": published}, status=202)


async def azure_cloudevents_handshake(request: web.Request) -> web.Response:
    """CloudEvents webhook validation: echo the origin the abuse-protection request names."""
    if not _authorised(request):
        raise web.HTTPUnauthorized(text="missing or wrong token\n")
    origin = request.headers.get("WebHook-Request-Origin", "*")
    return web.Response(headers={"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"})


def add_ingest_routes(
    app: web.Application,
    publisher: Publisher,
    secret: str,
    sns_hosts: Sequence[str] = ("sns.*.amazonaws.com",),
) -> None:
    if not secret:
        raise ValueError("the ingest endpoints need a shared secret")
    app[SECRET_KEY] = secret
    app[PUBLISHER_KEY] = publisher
    app[SNS_HOSTS_KEY] = tuple(sns_hosts)
    app.router.add_post("/ingest/s3", ingest_s3)
    app.router.add_post("/ingest/gcs", ingest_gcs)
    app.router.add_post("/ingest/azure", ingest_azure)
    app.router.add_route("OPTIONS", "/ingest/azure", azure_cloudevents_handshake)
