"""HTTP push receivers: SNS (S3), Pub/Sub push (GCS) and Event Grid (Azure).

Each request is verified first by the receiver's configured method (``verification``), then
refused if its message was already accepted (replay), then parsed and published; the answer
comes only after Kafka acknowledged, so a sender retries what was not taken. Unusable bodies
from a verified sender are accepted (202) and dead-lettered, so that the sender does not retry
them for ever. While Kafka or the catalog cannot take a change, the answer is 503 with
``Retry-After`` within ``ANSWER_WITHIN`` seconds: the sender keeps the notification and sends it
again, instead of timing out on a request held open (or, worse, counting an error that some
senders answer by disabling the subscription).
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from replicator.errors import Unavailable
from replicator.pipeline.bus import BusError
from replicator.pipeline.events import (
    ParseError,
    azure_validation_code,
    parse_azure,
    parse_gcs,
    parse_s3,
)
from replicator.pipeline.ingest.auth_settings import IngestAuthSection
from replicator.pipeline.ingest.fetch import ssl_context
from replicator.pipeline.ingest.publisher import Publisher, Rejection
from replicator.pipeline.ingest.verification import IngestAuth, Refused

log = structlog.get_logger(__name__)

PUBLISHER_KEY = web.AppKey("publisher", Publisher)
AUTH_KEY = web.AppKey("ingest_auth", IngestAuth)
SNS_HOSTS_KEY = web.AppKey("sns_hosts", tuple[str, ...])
ANSWER_WITHIN_KEY = web.AppKey("answer_within", float)

#: Seconds a request may wait for Kafka's acknowledgement before it is answered 503. Below the
#: shortest sender deadline: Pub/Sub push's default acknowledgement deadline of 10 s (SNS waits
#: 15 s, Event Grid 30 s).
ANSWER_WITHIN = 8.0
#: The pause asked of a sender answered 503 (SNS and Event Grid back off on their own anyway).
RETRY_AFTER_SECONDS = 10

Handler = Callable[[web.Request, bytes], Awaitable[web.Response]]


def _message_ids(receiver: str, body: bytes) -> list[str]:
    """The ids a sender gives its messages (for the replay check); none when unreadable."""
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    if receiver == "s3" and isinstance(document, dict):
        found = document.get("MessageId") or document.get("id")
        return [found] if isinstance(found, str) else []
    if receiver == "gcs" and isinstance(document, dict):
        message = document.get("message")
        if isinstance(message, dict):
            found = message.get("messageId") or message.get("message_id")
            return [found] if isinstance(found, str) else []
        return []
    if receiver == "azure":
        events = document if isinstance(document, list) else [document]
        return [e["id"] for e in events if isinstance(e, dict) and isinstance(e.get("id"), str)]
    return []


def _verified(receiver: str, handle: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def endpoint(request: web.Request) -> web.Response:
        auth = request.app[AUTH_KEY]
        body = await request.read()
        try:
            await auth.verify(receiver, request, body)
            ids = _message_ids(receiver, body)
            auth.check_replay(receiver, ids)
        except Refused as exc:
            log.warning(
                "ingest request refused",
                receiver=receiver,
                status=exc.status,
                reason=exc.reason,
                detail=exc.detail[:300],
                remote=request.remote,
            )
            return web.Response(status=exc.status, text=f"{exc.reason}: {exc.detail}\n")
        try:
            response = await asyncio.wait_for(handle(request, body), request.app[ANSWER_WITHIN_KEY])
        except (Unavailable, BusError, TimeoutError) as exc:
            # A change recorded or published before the failure may be sent again with the
            # retry: events are hints, a duplicate is applied as a no-op.
            log.warning(
                "ingest request deferred: Kafka or the catalog cannot take it now",
                receiver=receiver,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            return web.Response(
                status=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                text="cannot take notifications now; retry later\n",
            )
        auth.accepted(receiver, ids)
        return response

    return endpoint


async def _confirm_sns(body: bytes, allowed_hosts: Sequence[str], ca_file: str | None) -> None:
    try:
        document = json.loads(body)
        url = str(document.get("SubscribeURL", ""))
    except (ValueError, AttributeError):
        raise web.HTTPBadRequest(text="SubscriptionConfirmation is not a JSON object\n") from None
    host = urllib.parse.urlsplit(url).hostname or ""
    if not any(fnmatch.fnmatchcase(host, pattern) for pattern in allowed_hosts):
        raise web.HTTPBadRequest(text=f"SubscribeURL host {host!r} is not allowed\n")
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, ssl=ssl_context(ca_file)) as response,
    ):
        if response.status >= 300:
            raise web.HTTPBadGateway(text=f"SNS confirmation answered {response.status}\n")
    log.info("SNS subscription confirmed", topic=document.get("TopicArn"))


async def ingest_s3(request: web.Request, body: bytes) -> web.Response:
    if request.headers.get("x-amz-sns-message-type") == "SubscriptionConfirmation":
        hosts: tuple[str, ...] = request.app[SNS_HOSTS_KEY]
        await _confirm_sns(body, hosts, request.app[AUTH_KEY].settings("s3").ca_file)
        return web.Response(status=200, text="confirmed\n")
    published = await request.app[PUBLISHER_KEY].ingest(body, parse_s3, "s3-http")
    return web.json_response({"published": published}, status=202)


async def ingest_gcs(request: web.Request, body: bytes) -> web.Response:
    published = await request.app[PUBLISHER_KEY].ingest(body, parse_gcs, "gcs-http")
    return web.json_response({"published": published}, status=202)


async def ingest_azure(request: web.Request, body: bytes) -> web.Response:
    try:
        code = azure_validation_code(body)
    except ParseError as exc:
        rejection = Rejection(exc.reason, "ParseError")
        await request.app[PUBLISHER_KEY].dead_letter(body, rejection, "azure-http")
        return web.json_response({"published": 0}, status=202)
    if code is not None:
        return web.json_response({"validationResponse": code})
    published = await request.app[PUBLISHER_KEY].ingest(body, parse_azure, "azure-http")
    return web.json_response({"published": published}, status=202)


async def azure_cloudevents_handshake(request: web.Request, body: bytes) -> web.Response:
    """CloudEvents webhook validation: echo the origin the abuse-protection request names."""
    origin = request.headers.get("WebHook-Request-Origin", "*")
    return web.Response(headers={"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"})


def add_ingest_routes(
    app: web.Application,
    publisher: Publisher,
    secret: str,
    sns_hosts: Sequence[str] = ("sns.*.amazonaws.com",),
    auth: IngestAuth | None = None,
    answer_within: float = ANSWER_WITHIN,
) -> None:
    """Mount the receivers on ``app``; ``auth`` says how each verifies its senders (default:
    the shared ``secret`` for all three)."""
    app[ANSWER_WITHIN_KEY] = answer_within
    app[AUTH_KEY] = auth or IngestAuth(IngestAuthSection(), secret)
    app[PUBLISHER_KEY] = publisher
    app[SNS_HOSTS_KEY] = tuple(sns_hosts)
    app.router.add_post("/ingest/s3", _verified("s3", ingest_s3))
    app.router.add_post("/ingest/gcs", _verified("gcs", ingest_gcs))
    app.router.add_post("/ingest/azure", _verified("azure", ingest_azure))
    app.router.add_route(
        "OPTIONS", "/ingest/azure", _verified("azure", azure_cloudevents_handshake)
    )
