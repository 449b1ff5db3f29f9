"""An Azure Storage Queue as a source of Event Grid notifications, through
azure-storage-queue's asyncio client (the only importer of that SDK).

Event Grid delivers each event to a Storage Queue as one message; the text is the event's
JSON (Event Grid schema or CloudEvents 1.0), which Event Grid base64-encodes (the SDKs'
convention for queue messages); messages put there by other tools may be plain JSON. Both
come out of ``receive`` as the JSON text.

Messages are leased for ``visibility_timeout_s``: ``extend`` renews the lease (and returns
the message with its new pop receipt: Azure issues one per update), ``release`` makes a
message visible again, ``delete`` removes it. The queue service has no long polling, so
``receive`` polls with a growing pause (up to ``max_idle_poll_s``) while the queue is empty.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.queue import QueueMessage as AzureMessage
from azure.storage.queue.aio import QueueClient

from connectors.azure_credentials import (
    AzureCredentials,
    AzureCredentialsError,
    close_credential,
)
from connectors.base import NotFound, PermissionDenied, StoreError, Throttled, TransientError
from connectors.queues import QueueDepth, QueueMessage

DEFAULT_VISIBILITY_TIMEOUT_S = 30
_MAX_PER_RECEIVE = 32  # the service's limit per Get Messages


def decode_body(content: str) -> str:
    """The JSON text of a queue message: as is when it is JSON, else base64-decoded."""
    text = content.strip()
    if text[:1] in ("{", "["):
        return text
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return content  # neither: handed on as is, the parser says why it is unusable


class AzureQueue:
    """One queue of one storage account."""

    def __init__(
        self,
        queue: str,
        credentials: AzureCredentials,
        *,
        visibility_timeout_s: int = DEFAULT_VISIBILITY_TIMEOUT_S,
        max_idle_poll_s: float = 5.0,
    ) -> None:
        if not 1 <= visibility_timeout_s <= 7 * 24 * 3600:
            raise ValueError("an Azure queue visibility timeout is 1 s to 7 days")
        self.queue = queue
        self.credentials = credentials
        self.visibility_timeout_s = visibility_timeout_s
        self.max_idle_poll_s = max_idle_poll_s
        self.url = f"{credentials.endpoint('queue')}/{queue}"
        self._client: QueueClient | None = None
        self._credential: Any = None
        self._lock = asyncio.Lock()
        self._idle_pause = 0.0

    @property
    def name(self) -> str:
        return self.url

    @property
    def lease_s(self) -> int:
        return self.visibility_timeout_s

    async def _queue(self) -> QueueClient:
        async with self._lock:
            if self._client is None:
                try:
                    self._credential = self.credentials.credential()
                except AzureCredentialsError as exc:
                    raise PermissionDenied(str(exc), url=self.url) from None
                self._client = QueueClient(
                    self.credentials.endpoint("queue"),
                    self.queue,
                    credential=self._credential,
                    # The consumer owns the retry policy: one SDK retry at most.
                    retry_total=1,
                )
            return self._client

    async def create(self) -> None:
        """Create the queue if missing (test beds and demos)."""
        client = await self._queue()
        with self._mapped(), contextlib.suppress(HttpResponseError):
            await client.create_queue()

    async def send(self, text: str) -> None:
        """Put one message (test beds and demos; Event Grid writes in production)."""
        client = await self._queue()
        with self._mapped():
            await client.send_message(text)

    async def receive(self, max_messages: int = 32, wait_s: int = 10) -> list[QueueMessage]:
        client = await self._queue()
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            with self._mapped():
                pages = client.receive_messages(
                    messages_per_page=min(max_messages, _MAX_PER_RECEIVE),
                    max_messages=min(max_messages, _MAX_PER_RECEIVE),
                    visibility_timeout=self.visibility_timeout_s,
                )
                received = [_message(item) async for item in pages]
            if received:
                self._idle_pause = 0.0
                return received
            now = asyncio.get_running_loop().time()
            if now >= deadline:
                return []
            # Empty: wait a little longer each time (the service charges per request).
            self._idle_pause = min(self.max_idle_poll_s, max(0.1, self._idle_pause * 2))
            await asyncio.sleep(min(self._idle_pause, deadline - now))

    async def extend(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        return await self._update(messages, self.visibility_timeout_s)

    async def release(self, messages: Sequence[QueueMessage]) -> None:
        await self._update(messages, 0)

    async def _update(self, messages: Sequence[QueueMessage], seconds: int) -> list[QueueMessage]:
        client = await self._queue()

        async def one(message: QueueMessage) -> QueueMessage:
            with self._mapped():
                updated = await client.update_message(
                    message.message_id, message.receipt, visibility_timeout=seconds
                )
            return QueueMessage(
                body=message.body,
                receipt=str(updated.pop_receipt),
                message_id=message.message_id,
                receive_count=message.receive_count,
                sent_at=message.sent_at,
            )

        return list(await asyncio.gather(*(one(message) for message in messages)))

    async def delete(self, messages: Sequence[QueueMessage]) -> None:
        client = await self._queue()

        async def one(message: QueueMessage) -> None:
            # Already gone is fine: deleting is idempotent here.
            with self._mapped(), contextlib.suppress(ResourceNotFoundError):
                await client.delete_message(message.message_id, message.receipt)

        await asyncio.gather(*(one(message) for message in messages))

    async def depth(self) -> QueueDepth:
        client = await self._queue()
        with self._mapped():
            properties = await client.get_queue_properties()
        # Azure counts every message not yet deleted, visible or not, in one number.
        return QueueDepth(total=int(properties.approximate_message_count or 0), in_flight=None)

    async def close(self) -> None:
        async with self._lock:
            client, credential = self._client, self._credential
            self._client = self._credential = None
        if client is not None:
            await client.close()
        if credential is not None:
            await close_credential(credential)

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[None]:
        """Azure errors -> connectors.base errors naming the queue, never a credential."""
        try:
            yield
        except StoreError:
            raise
        except ClientAuthenticationError as exc:
            raise PermissionDenied(
                f"Azure queue {self.url} refused the credentials ({_code(exc)})", url=self.url
            ) from None
        except ResourceNotFoundError as exc:
            raise NotFound(f"Azure queue {self.url}: {_code(exc)}", url=self.url) from None
        except HttpResponseError as exc:
            status = exc.status_code or 0
            message = f"Azure queue {self.url} answered {status} ({_code(exc)})"
            if status in (401, 403):
                raise PermissionDenied(message, url=self.url) from None
            if status in (429, 503):
                raise Throttled(message, url=self.url) from None
            if status >= 500:
                raise TransientError(message, url=self.url) from None
            raise StoreError(message, url=self.url) from None
        except (ServiceRequestError, ServiceResponseError, OSError) as exc:
            raise TransientError(
                f"cannot reach Azure queue {self.url}: {type(exc).__name__}", url=self.url
            ) from None
        except AzureError as exc:
            raise TransientError(
                f"Azure queue {self.url} failed: {type(exc).__name__}", url=self.url
            ) from None


def _code(exc: HttpResponseError) -> str:
    return str(getattr(exc, "error_code", None) or exc.reason or type(exc).__name__)


def _message(item: AzureMessage) -> QueueMessage:
    return QueueMessage(
        body=decode_body(str(item.content or "")),
        receipt=str(item.pop_receipt),
        message_id=str(item.id),
        receive_count=int(item.dequeue_count or 0),
        sent_at=item.inserted_on,
    )
