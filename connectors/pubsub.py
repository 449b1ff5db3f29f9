"""A Pub/Sub subscription as a source of GCS notifications, pulled through gcloud-aio-pubsub's
REST client (the only importer of that library).

Endpoint and credentials: ``PUBSUB_EMULATOR_HOST`` (then no credentials are sent), or the
Pub/Sub API with a token from a service-account file, when one is given, else gcloud-aio-auth's
application default credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's
application-default file, the metadata server; workload identity in GKE).

Leases are ack deadlines: ``ack_deadline_s`` must not exceed the subscription's own (Pub/Sub's
default and minimum, 10 s, is safe with any subscription); ``extend`` pushes the deadline that
far from now (modifyAckDeadline), ``release`` sets it to 0 (a nack: redelivered at once),
``delete`` acknowledges. Each message comes out of ``receive`` as the JSON of its pull form
(``{"attributes", "data", "messageId", "publishTime"}``), the shape GCS notification parsers
read. ``receive_count`` is Pub/Sub's ``deliveryAttempt``, which Pub/Sub sends only when the
subscription has a dead-letter policy (0 otherwise: the receive limit then never applies).
Pub/Sub has no message count in its API (only in Cloud Monitoring): ``depth`` is None.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any, cast

import aiohttp
from gcloud.aio.auth import Token
from gcloud.aio.pubsub import SubscriberClient, SubscriberMessage

from connectors.base import NotFound, PermissionDenied, StoreError, Throttled, TransientError
from connectors.queues import QueueDepth, QueueMessage

DEFAULT_ACK_DEADLINE_S = 10
_MAX_ACK_IDS = 2500  # Pub/Sub's limit of ack ids per acknowledge / modifyAckDeadline
_SCOPES = ["https://www.googleapis.com/auth/pubsub"]


class PubSubSubscription:
    """One subscription, named ``projects/PROJECT/subscriptions/NAME``."""

    def __init__(
        self,
        subscription: str,
        *,
        ack_deadline_s: int = DEFAULT_ACK_DEADLINE_S,
        service_file: str | None = None,
        api_root: str | None = None,
        max_idle_poll_s: float = 5.0,
    ) -> None:
        parts = subscription.split("/")
        if len(parts) != 4 or parts[0] != "projects" or parts[2] != "subscriptions":
            raise ValueError(
                f"{subscription!r} is not a subscription path: projects/PROJECT/subscriptions/NAME"
            )
        if not 1 <= ack_deadline_s <= 600:
            raise ValueError("a Pub/Sub ack deadline extension is 1 s to 600 s")
        self.subscription = subscription
        self.ack_deadline_s = ack_deadline_s
        self.service_file = service_file
        self.api_root = api_root
        self.max_idle_poll_s = max_idle_poll_s
        self._session: aiohttp.ClientSession | None = None
        self._client: SubscriberClient | None = None
        self._lock = asyncio.Lock()
        self._idle_pause = 0.0

    @property
    def name(self) -> str:
        return self.subscription

    @property
    def lease_s(self) -> int:
        return self.ack_deadline_s

    async def _subscriber(self) -> SubscriberClient:
        async with self._lock:
            if self._client is None:
                session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
                # gcloud-aio types its session as requests' or aiohttp's, depending on the build.
                shared = cast(Any, session)
                token = Token(service_file=self.service_file, scopes=_SCOPES, session=shared)
                self._session = session
                # An explicit API root (a private endpoint) still needs credentials; only
                # PUBSUB_EMULATOR_HOST means an emulator that takes none.
                self._client = SubscriberClient(
                    token=token,
                    session=shared,
                    api_root=self.api_root,
                    api_is_dev=False if self.api_root else None,
                )
            return self._client

    async def receive(self, max_messages: int = 100, wait_s: int = 10) -> list[QueueMessage]:
        client = await self._subscriber()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            with self._mapped():
                pulled = await client.pull(
                    self.subscription, max(1, min(max_messages, 1000)), timeout=wait_s + 30
                )
            if pulled:
                self._idle_pause = 0.0
                return [_message(item) for item in pulled]
            now = loop.time()
            if now >= deadline:
                return []
            self._idle_pause = min(self.max_idle_poll_s, max(0.1, self._idle_pause * 2))
            await asyncio.sleep(min(self._idle_pause, deadline - now))

    async def extend(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        await self._modify(messages, self.ack_deadline_s)
        return list(messages)

    async def release(self, messages: Sequence[QueueMessage]) -> None:
        await self._modify(messages, 0)

    async def _modify(self, messages: Sequence[QueueMessage], seconds: int) -> None:
        client = await self._subscriber()
        for start in range(0, len(messages), _MAX_ACK_IDS):
            ack_ids = [m.receipt for m in messages[start : start + _MAX_ACK_IDS]]
            with self._mapped():
                await client.modify_ack_deadline(self.subscription, ack_ids, seconds)

    async def delete(self, messages: Sequence[QueueMessage]) -> None:
        client = await self._subscriber()
        for start in range(0, len(messages), _MAX_ACK_IDS):
            ack_ids = [m.receipt for m in messages[start : start + _MAX_ACK_IDS]]
            with self._mapped():
                await client.acknowledge(self.subscription, ack_ids)

    async def depth(self) -> QueueDepth | None:
        return None

    async def close(self) -> None:
        async with self._lock:
            session, self._session, self._client = self._session, None, None
        if session is not None:
            await session.close()

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[None]:
        where = self.subscription
        try:
            yield
        except StoreError:
            raise
        except aiohttp.ClientResponseError as exc:
            message = f"Pub/Sub {where} answered {exc.status} ({exc.message})"
            if exc.status == 404:
                raise NotFound(message, url=where) from None
            if exc.status in (401, 403):
                raise PermissionDenied(message, url=where) from None
            if exc.status == 429:
                raise Throttled(message, url=where) from None
            if exc.status >= 500:
                raise TransientError(message, url=where) from None
            raise StoreError(message, url=where) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientError(
                f"cannot reach Pub/Sub for {where}: {type(exc).__name__}", url=where
            ) from None


def _message(item: SubscriberMessage) -> QueueMessage:
    body: dict[str, Any] = {
        "attributes": item.attributes or {},
        "messageId": item.message_id,
        "publishTime": item.publish_time.isoformat(),
    }
    if item.data is not None:
        body["data"] = base64.b64encode(item.data).decode()
    return QueueMessage(
        body=json.dumps(body),
        receipt=item.ack_id,
        message_id=item.message_id,
        receive_count=int(item.delivery_attempt or 0),
        sent_at=item.publish_time,
    )
