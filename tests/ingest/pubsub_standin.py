"""The smallest honest stand-in for the Pub/Sub REST API that a pull subscriber uses, since no
Pub/Sub emulator installs from the registries reachable here.

Implemented (``/v1/projects/P/subscriptions/S``): ``:pull`` (held open up to ``hold_s`` while
nothing is deliverable, like a pull without ``returnImmediately``), ``:acknowledge``,
``:modifyAckDeadline`` (0 = nack) and GET of the subscription. Semantics kept: every delivery
gets a new ack id and the subscription's ack deadline; a message not acknowledged before its
deadline is delivered again (with a new ack id; the old one no longer acknowledges it); an
ack id that is unknown or expired is ignored, as Pub/Sub does; ``deliveryAttempt`` is sent
only when the subscription has a dead-letter policy (``dead_letter=True``).

Not implemented: topics, publish over HTTP (tests call ``publish``), ordering keys,
exactly-once delivery, streaming pull, filters, seek, authentication (no token is checked).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web


@dataclass
class _Message:
    message_id: str
    data: bytes
    attributes: dict[str, str]
    published: datetime
    deliveries: int = 0
    ack_id: str | None = None
    leased_until: float = 0.0


@dataclass
class Subscription:
    ack_deadline_s: int = 10
    dead_letter: bool = False
    messages: dict[str, _Message] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    pulls: int = 0

    def deliverable(self, now: float) -> list[_Message]:
        return [m for m in self.messages.values() if m.leased_until <= now]

    @property
    def outstanding(self) -> int:
        """Messages delivered and neither acknowledged nor past their deadline."""
        now = time.monotonic()
        return sum(1 for m in self.messages.values() if m.leased_until > now)


class PubSubStandIn:
    def __init__(self, hold_s: float = 1.0) -> None:
        self.hold_s = hold_s
        self.subscriptions: dict[str, Subscription] = {}
        self._ids = itertools.count(1)

    def subscription(
        self, path: str, *, ack_deadline_s: int = 10, dead_letter: bool = False
    ) -> str:
        self.subscriptions[path] = Subscription(ack_deadline_s, dead_letter)
        return path

    def publish(self, path: str, data: bytes, attributes: dict[str, str]) -> str:
        message_id = str(next(self._ids))
        subscription = self.subscriptions[path]
        subscription.messages[message_id] = _Message(
            message_id, data, attributes, datetime.now(UTC)
        )
        subscription.arrived.set()
        return message_id

    # -- the REST surface --------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/projects/{project}/subscriptions/{name}:pull", self._pull)
        app.router.add_post(
            "/v1/projects/{project}/subscriptions/{name}:acknowledge", self._acknowledge
        )
        app.router.add_post(
            "/v1/projects/{project}/subscriptions/{name}:modifyAckDeadline", self._modify
        )
        app.router.add_get("/v1/projects/{project}/subscriptions/{name}", self._get)
        return app

    def _find(self, request: web.Request) -> Subscription:
        path = (
            f"projects/{request.match_info['project']}/subscriptions/{request.match_info['name']}"
        )
        subscription = self.subscriptions.get(path)
        if subscription is None:
            raise web.HTTPNotFound(
                text='{"error": {"code": 404, "status": "NOT_FOUND"}}',
                content_type="application/json",
            )
        return subscription

    async def _get(self, request: web.Request) -> web.Response:
        subscription = self._find(request)
        return web.json_response({"ackDeadlineSeconds": subscription.ack_deadline_s})

    async def _pull(self, request: web.Request) -> web.Response:
        subscription = self._find(request)
        body = await request.json()
        limit = int(body.get("maxMessages", 1))
        subscription.pulls += 1
        deadline = time.monotonic() + self.hold_s
        while not subscription.deliverable(time.monotonic()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return web.json_response({})
            subscription.arrived.clear()
            # Woken by a publish; an expiring lease is noticed on the next short wait.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(subscription.arrived.wait(), min(remaining, 0.1))
        if request.transport is None or request.transport.is_closing():
            return web.json_response({})  # the puller is gone: lease nothing to it
        now = time.monotonic()
        received = []
        for message in subscription.deliverable(now)[:limit]:
            message.deliveries += 1
            message.ack_id = uuid.uuid4().hex
            message.leased_until = now + subscription.ack_deadline_s
            item: dict[str, object] = {
                "ackId": message.ack_id,
                "message": {
                    "data": base64.b64encode(message.data).decode(),
                    "attributes": message.attributes,
                    "messageId": message.message_id,
                    "publishTime": message.published.isoformat().replace("+00:00", "Z"),
                },
            }
            if subscription.dead_letter:
                item["deliveryAttempt"] = message.deliveries
            received.append(item)
        return web.json_response({"receivedMessages": received})

    def _leased(self, subscription: Subscription, ack_id: str) -> _Message | None:
        now = time.monotonic()
        for message in subscription.messages.values():
            if message.ack_id == ack_id and message.leased_until > now:
                return message
        return None

    async def _acknowledge(self, request: web.Request) -> web.Response:
        subscription = self._find(request)
        for ack_id in (await request.json()).get("ackIds", []):
            message = self._leased(subscription, ack_id)
            if message is not None:
                del subscription.messages[message.message_id]
                subscription.acked.add(message.message_id)
        return web.json_response({})

    async def _modify(self, request: web.Request) -> web.Response:
        subscription = self._find(request)
        body = await request.json()
        seconds = int(body.get("ackDeadlineSeconds", 0))
        if not 0 <= seconds <= 600:
            raise web.HTTPBadRequest(text="ackDeadlineSeconds must be 0 to 600")
        for ack_id in body.get("ackIds", []):
            message = self._leased(subscription, ack_id)
            if message is not None:
                message.leased_until = time.monotonic() + seconds
                if seconds == 0:
                    subscription.arrived.set()
        return web.json_response({})


async def serve(standin: PubSubStandIn) -> AsyncIterator[str]:
    """Serve ``standin`` on a free loopback port; yields its host:port."""
    runner = web.AppRunner(standin.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
