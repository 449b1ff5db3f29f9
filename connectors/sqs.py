"""An SQS queue as a source of S3 event notifications, through aiobotocore.

Endpoint, region and credentials come from the standard AWS chain (``AWS_ENDPOINT_URL`` for
emulators). Messages are received with long polling and deleted only when the caller says so,
after what they carried is safely elsewhere: a message that is never deleted comes back after
its visibility timeout, so nothing is lost when the process dies. The visibility timeout is
short by default (``SQS_VISIBILITY_TIMEOUT_S``) so that the messages of a killed process
come back quickly; a caller that needs longer extends it (``extend``), and one that stops
early releases what it holds (``release``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from connectors.aws_session import USER_AGENT, aws_session, region_of
from connectors.base import (
    NotFound,
    PermissionDenied,
    StoreError,
    Throttled,
    TransientError,
)
from connectors.credentials import AwsAccess
from connectors.queues import SQS_VISIBILITY_TIMEOUT_S, QueueDepth, QueueMessage

DEFAULT_REGION = "us-east-1"
_BATCH = 10  # SQS's limit per receive and per batch call


def _message(message: dict[str, Any]) -> QueueMessage:
    attributes = message.get("Attributes", {})
    sent_ms = attributes.get("SentTimestamp")
    return QueueMessage(
        body=message.get("Body", ""),
        receipt=message["ReceiptHandle"],
        message_id=message.get("MessageId", ""),
        receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
        sent_at=datetime.fromtimestamp(int(sent_ms) / 1000, UTC) if sent_ms else None,
    )


@contextlib.contextmanager
def _mapped(queue: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = f"SQS {code or status}: {exc.response.get('Error', {}).get('Message', '')}"
        if "NonExistentQueue" in code or code == "QueueDoesNotExist":
            raise NotFound(message, url=queue) from None
        if status in (401, 403) or code in ("AccessDenied", "InvalidClientTokenId"):
            raise PermissionDenied(message, url=queue) from None
        if status == 429 or code in ("RequestThrottled", "ThrottlingException"):
            raise Throttled(message, url=queue) from None
        if status >= 500:
            raise TransientError(message, url=queue) from None
        raise StoreError(message, url=queue) from None
    except NoCredentialsError:
        raise PermissionDenied("no AWS credentials found", url=queue) from None
    except BotoCoreError as exc:
        raise TransientError(f"cannot reach SQS: {exc}", url=queue) from None


class SQSQueue:
    """One queue, named by its URL (``https://sqs.REGION.amazonaws.com/ACCOUNT/NAME``)."""

    def __init__(
        self,
        queue_url: str,
        *,
        visibility_timeout_s: int = SQS_VISIBILITY_TIMEOUT_S,
        access: AwsAccess | None = None,
    ) -> None:
        if not 1 <= visibility_timeout_s <= 43_200:
            raise ValueError("an SQS visibility timeout is 1 s to 12 h")
        self.queue_url = queue_url
        self.visibility_timeout_s = visibility_timeout_s
        # The queue's own profile, role, endpoint or keys (None: the standard chain).
        self._access = access
        self._session = aws_session(access)
        self._context: Any = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def _sqs(self) -> Any:
        async with self._lock:
            if self._client is None:
                region = region_of(self._session, self._access)
                # One retry at most inside the SDK: the poller's own loop does the retrying.
                config = AioConfig(
                    retries={"max_attempts": 2, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=30,
                    user_agent=USER_AGENT,
                )
                endpoint = self._access.endpoint_url if self._access else None
                self._context = self._session.create_client(
                    "sqs", region_name=region, config=config, endpoint_url=endpoint
                )
                self._client = await self._context.__aenter__()
            return self._client

    async def receive(self, max_messages: int = 10, wait_s: int = 10) -> list[QueueMessage]:
        client = await self._sqs()
        with _mapped(self.queue_url):
            response = await client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=max(1, min(max_messages, 10)),
                WaitTimeSeconds=wait_s,
                VisibilityTimeout=self.visibility_timeout_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
        return [_message(message) for message in response.get("Messages", [])]

    @property
    def name(self) -> str:
        return self.queue_url

    @property
    def lease_s(self) -> int:
        return self.visibility_timeout_s

    async def extend(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        """Make ``messages`` invisible for another visibility timeout from now."""
        await self._change_visibility(messages, self.visibility_timeout_s)
        return list(messages)

    async def release(self, messages: Sequence[QueueMessage]) -> None:
        """Make ``messages`` visible to every receiver again now."""
        await self._change_visibility(messages, 0)

    async def _change_visibility(self, messages: Sequence[QueueMessage], seconds: int) -> None:
        client = await self._sqs()
        for start in range(0, len(messages), _BATCH):
            chunk = messages[start : start + _BATCH]
            with _mapped(self.queue_url):
                response = await client.change_message_visibility_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": seconds}
                        for i, m in enumerate(chunk)
                    ],
                )
            failed = response.get("Failed", [])
            if failed:
                raise TransientError(
                    f"SQS did not change the visibility of {len(failed)} messages: "
                    f"{failed[0].get('Code')}",
                    url=self.queue_url,
                )

    async def depth(self) -> QueueDepth:
        client = await self._sqs()
        with _mapped(self.queue_url):
            response = await client.get_queue_attributes(
                QueueUrl=self.queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
        attributes = response.get("Attributes", {})
        in_flight = int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0))
        visible = int(attributes.get("ApproximateNumberOfMessages", 0))
        return QueueDepth(total=visible + in_flight, in_flight=in_flight)

    async def delete(self, messages: Sequence[QueueMessage]) -> None:
        if not messages:
            return
        client = await self._sqs()
        for start in range(0, len(messages), _BATCH):
            chunk = messages[start : start + _BATCH]
            with _mapped(self.queue_url):
                response = await client.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)
                    ],
                )
            failed = response.get("Failed", [])
            if failed:
                raise TransientError(
                    f"SQS did not delete {len(failed)} messages: {failed[0].get('Code')}",
                    url=self.queue_url,
                )

    @classmethod
    async def create(cls, name: str) -> str:
        """Create the queue ``name`` if missing and return its URL (for test beds and demos)."""
        queue = cls("")
        client = await queue._sqs()
        try:
            with _mapped(name):
                response = await client.create_queue(QueueName=name)
            return str(response["QueueUrl"])
        finally:
            await queue.close()

    @staticmethod
    async def notify_bucket(bucket: str, queue_url: str) -> None:
        """Send ``bucket``'s object-created and object-removed events to the queue (set-up for
        test beds and demos; production buckets are configured by their owners)."""
        session = AioSession()
        region = session.get_config_variable("region") or DEFAULT_REGION
        async with (
            session.create_client("sqs", region_name=region) as sqs,
            session.create_client("s3", region_name=region) as s3,
        ):
            with _mapped(queue_url):
                attributes = await sqs.get_queue_attributes(
                    QueueUrl=queue_url, AttributeNames=["QueueArn"]
                )
                await s3.put_bucket_notification_configuration(
                    Bucket=bucket,
                    NotificationConfiguration={
                        "QueueConfigurations": [
                            {
                                "QueueArn": attributes["Attributes"]["QueueArn"],
                                "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                            }
                        ]
                    },
                )

    async def close(self) -> None:
        if self._context is not None:
            await self._context.__aexit__(None, None, None)
            self._context = self._client = None
