"""HTTP push receivers: SNS (S3), Pub/Sub push (GCS) and Event Grid (Azure)."""

from __future__ import annotations

import fnmatch
import hmac
import json
import urllib.parse
from collections.abc import Sequence

import aiohttp
import structlog
from aiohttp import web

from replicator.pipeline.events import (
    ParseError,
    azure_validation_code,
    parse_azure,
    parse_gcs,
    parse_s3,
)
from replicator.pipeline.ingest.publisher import Publisher, Rejection

log = structlog.get_logger(__name__)

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
        rejection = Rejection(exc.reason, "ParseError")
        await request.app[PUBLISHER_KEY].dead_letter(body, rejection, "azure-http")
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
