"""Bucket change notifications of every cloud, normalised into one ChangeEvent (pure).

Accepted inputs (a JSON document as bytes or text):

* S3 event notifications, eventVersion 2.x: the bare ``{"Records": [...]}`` body of an SQS
  message, the same inside an SNS ``Notification`` envelope, and EventBridge "Object Created" /
  "Object Deleted" events. ``s3:TestEvent`` yields no events. Keys in S3 notification records are
  URL-encoded with ``+`` for space and are decoded here; EventBridge keys are not encoded.
* GCS Pub/Sub notifications (JSON_API_V1): a pull message ``{"attributes", "data"}`` or a push
  body ``{"message": {...}, "subscription": ...}``. A delete or archive carrying
  ``overwrittenByGeneration`` is the shadow of an overwrite and yields no event, so it can never
  delete a replica.
* Azure Event Grid ``Microsoft.Storage.BlobCreated`` / ``BlobDeleted``, in the Event Grid schema
  (a JSON array or one event) and in CloudEvents 1.0. The storage account is named by the
  event (``topic`` / ``source``: ``.../storageAccounts/ACCOUNT``, else the host of
  ``data.url``), and the URL carries it: ``az://container@account/key``, so two accounts'
  blobs never share a URL. ``default_account_url`` turns the default account's URLs into
  the account-less form (``az://container/key``) that routes and stores written without an
  account use.

Ordering: ``ChangeEvent.sequencer`` is a string whose plain lexicographic order is the order
of changes to one key, built from each cloud's own ordering value:

* S3: the hex ``sequencer`` upper-cased and right-padded with ``0`` to 64 characters (AWS: compare
  sequencers of one key after right-padding the shorter one with zeros);
* GCS: the generation left-padded with ``0`` to 20 digits, then ``.0`` for a new generation and
  ``.1`` for its deletion (a deletion of generation G follows the creation of G);
* Azure: the hex ``sequencer`` upper-cased and left-padded to 32 characters (fixed width).

A missing sequencer (moto sends none) leaves ``sequencer`` empty: such events carry no order of
their own and are ordered by the source's state when applied.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from replicator.errors import ReplicatorError

MAX_PAYLOAD_BYTES = 256 * 1024
ChangeKind = Literal["put", "delete"]
# "scan": a change a listing found (a scan, a backfill, a held change published again);
# "reconcile": a reconciliation's finding that a source object is gone while a replica of it is
# not, at a moment the listing cannot tell.
Origin = Literal["s3", "gcs", "azure", "scan", "reconcile"]
ORIGINS: tuple[Origin, ...] = ("s3", "gcs", "azure", "scan", "reconcile")
LISTING_ORIGINS: tuple[Origin, ...] = ("scan", "reconcile")


class ParseError(ReplicatorError):
    """A notification that cannot be understood; ``reason`` goes with it to the DLQ."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ChangeEvent:
    kind: ChangeKind
    source_url: str
    version: str | None
    sequencer: str
    size: int | None
    etag: str | None
    event_time: datetime
    origin: Origin

    @property
    def listed(self) -> bool:
        """Whether a listing found this change (a repair: see ``Applier``), not a
        notification."""
        return self.origin in LISTING_ORIGINS

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "kind": self.kind,
                "source_url": self.source_url,
                "version": self.version,
                "sequencer": self.sequencer,
                "size": self.size,
                "etag": self.etag,
                "event_time": self.event_time.isoformat(),
                "origin": self.origin,
            },
            ensure_ascii=False,
        ).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> ChangeEvent:
        """The inverse of ``to_json``, strict: anything else is a ParseError."""
        raw = _load(payload)
        if not isinstance(raw, dict):
            raise ParseError("change event is not a JSON object")
        kind = raw.get("kind")
        origin = raw.get("origin")
        if kind not in ("put", "delete"):
            raise ParseError(f"change event kind {kind!r} is not put or delete")
        if origin not in ORIGINS:
            raise ParseError(f"change event origin {origin!r} is unknown")
        size = raw.get("size")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise ParseError(f"change event size {size!r} is not a non-negative integer")
        return cls(
            kind=kind,
            source_url=_string(raw, "source_url"),
            version=_optional_string(raw, "version"),
            sequencer=_optional_string(raw, "sequencer") or "",
            size=size,
            etag=_optional_string(raw, "etag"),
            event_time=_timestamp(raw.get("event_time"), "event_time"),
            origin=origin,
        )


# -- helpers --------------------------------------------------------------------------------


def _load(payload: bytes | str) -> Any:
    size = len(payload)
    if size > MAX_PAYLOAD_BYTES:
        raise ParseError(f"payload of {size} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError(f"payload is not JSON: {exc}") from None
    except RecursionError:
        raise ParseError("payload is JSON nested too deeply to parse") from None


def _unicode(value: str, name: str) -> str:
    """``value`` if it is valid Unicode: JSON's ``\\ud800`` escapes decode to lone surrogates,
    which no URL, Kafka record or catalog row can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ParseError(f"field {name!r} is not valid Unicode (a lone surrogate)") from None
    return value


def _string(raw: Mapping[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise ParseError(f"field {name!r} is missing or not a non-empty string")
    return _unicode(value, name)


def _optional_string(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ParseError(f"field {name!r} is not a string")
    return _unicode(value, name)


def _object(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name)
    if not isinstance(value, dict):
        raise ParseError(f"field {name!r} is missing or not an object")
    return value


def _size(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ParseError(f"field {name!r} is not an integer")
    try:
        size = int(value)
    except ValueError:
        raise ParseError(f"field {name!r} is not an integer") from None
    if size < 0:
        raise ParseError(f"field {name!r} is negative")
    return size


def _timestamp(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise ParseError(f"field {name!r} is missing or not a timestamp string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Azure sends seven fractional digits; Python accepts at most six.
    head, dot, tail = text.partition(".")
    if dot:
        digits = len(tail) - len(tail.lstrip("0123456789"))
        text = f"{head}.{tail[: min(digits, 6)]}{tail[digits:]}"
    try:
        parsed = datetime.fromisoformat(text)
        # In UTC: one form for every cloud's offsets (and a time with an offset that does not
        # fit the calendar in UTC, like 9999-12-31T23:59:59-14:00, is refused here).
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ParseError(f"field {name!r} is not an ISO-8601 timestamp: {value!r}") from None


def _hex(value: str | None, name: str) -> str:
    if value is None:
        return ""
    try:
        int(value, 16)
    except ValueError:
        raise ParseError(f"field {name!r} is not hexadecimal: {value!r}") from None
    return value.upper()


def s3_sequencer(value: str | None) -> str:
    return _hex(value, "sequencer").ljust(64, "0") if value else ""


def gcs_sequencer(generation: str, deleted: bool) -> str:
    if not generation.isdigit():
        raise ParseError(f"GCS generation {generation!r} is not a decimal number")
    return f"{generation.zfill(20)}.{1 if deleted else 0}"


def azure_sequencer(value: str | None) -> str:
    return _hex(value, "sequencer").rjust(32, "0") if value else ""


def _url_key(bucket: str, key: str) -> None:
    if not bucket:
        raise ParseError("notification names no bucket or container")
    if not key:
        raise ParseError("notification names no object key")


# -- S3 ---------------------------------------------------------------------------------------


def _s3_record(record: Any) -> ChangeEvent | None:
    if not isinstance(record, dict):
        raise ParseError("S3 record is not an object")
    version = record.get("eventVersion")
    if not isinstance(version, str) or not version.startswith("2."):
        raise ParseError(f"S3 eventVersion {version!r} is not 2.x")
    name = _string(record, "eventName")
    s3 = _object(record, "s3")
    bucket = _string(_object(s3, "bucket"), "name")
    obj = _object(s3, "object")
    encoded_key = _string(obj, "key")
    try:
        key = urllib.parse.unquote_plus(encoded_key, errors="strict")
    except UnicodeDecodeError:
        raise ParseError(f"S3 key {encoded_key!r} does not decode to UTF-8") from None
    _url_key(bucket, key)
    if name.startswith("ObjectCreated:"):
        kind: ChangeKind = "put"
    elif name.startswith("ObjectRemoved:"):
        kind = "delete"
    else:
        return None  # restore, replication, lifecycle transitions: the bytes did not change
    return ChangeEvent(
        kind=kind,
        source_url=f"s3://{bucket}/{key}",
        version=_optional_string(obj, "versionId"),
        sequencer=s3_sequencer(_optional_string(obj, "sequencer")),
        size=_size(obj.get("size"), "size") if kind == "put" else None,
        etag=_optional_string(obj, "eTag"),
        event_time=_timestamp(record.get("eventTime"), "eventTime"),
        origin="s3",
    )


def _s3_eventbridge(event: Mapping[str, Any]) -> list[ChangeEvent]:
    detail_type = event.get("detail-type")
    if detail_type == "Object Created":
        kind: ChangeKind = "put"
    elif detail_type == "Object Deleted":
        kind = "delete"
    else:
        return []
    detail = _object(event, "detail")
    bucket = _string(_object(detail, "bucket"), "name")
    obj = _object(detail, "object")
    key = _string(obj, "key")
    _url_key(bucket, key)
    return [
        ChangeEvent(
            kind=kind,
            source_url=f"s3://{bucket}/{key}",
            version=_optional_string(obj, "version-id"),
            sequencer=s3_sequencer(_optional_string(obj, "sequencer")),
            size=_size(obj.get("size"), "size") if kind == "put" else None,
            etag=_optional_string(obj, "etag"),
            event_time=_timestamp(event.get("time"), "time"),
            origin="s3",
        )
    ]


_SNS_HANDSHAKES = ("SubscriptionConfirmation", "UnsubscribeConfirmation")


def parse_s3(payload: bytes | str) -> list[ChangeEvent]:
    """An SQS body, SNS envelope or EventBridge event from S3 -> its change events."""
    raw = _load(payload)
    if not isinstance(raw, dict):
        raise ParseError("S3 notification is not a JSON object")
    if raw.get("Type") == "Notification" and "Message" in raw:
        message = raw["Message"]
        if not isinstance(message, str):
            raise ParseError("SNS Message is not a string")
        return parse_s3(message)
    if raw.get("Event") == "s3:TestEvent" or raw.get("Type") in _SNS_HANDSHAKES:
        return []
    if raw.get("source") == "aws.s3" and "detail-type" in raw:
        return _s3_eventbridge(raw)
    records = raw.get("Records")
    if not isinstance(records, list):
        raise ParseError("not an S3 notification: no Records, SNS envelope or EventBridge event")
    return [event for record in records if (event := _s3_record(record)) is not None]


# -- GCS --------------------------------------------------------------------------------------


def parse_gcs(payload: bytes | str) -> list[ChangeEvent]:
    """A Pub/Sub message (pull form or push body) from a GCS notification -> change events."""
    raw = _load(payload)
    if not isinstance(raw, dict):
        raise ParseError("GCS notification is not a JSON object")
    message = raw.get("message", raw)
    if not isinstance(message, dict):
        raise ParseError("Pub/Sub message is not an object")
    attributes = _object(message, "attributes")
    event_type = _string(attributes, "eventType")
    bucket = _string(attributes, "bucketId")
    key = _string(attributes, "objectId")
    generation = _string(attributes, "objectGeneration")
    _url_key(bucket, key)
    resource = _gcs_resource(message.get("data"))
    if event_type in ("OBJECT_DELETE", "OBJECT_ARCHIVE"):
        if attributes.get("overwrittenByGeneration"):
            return []
        kind: ChangeKind = "delete"
    elif event_type == "OBJECT_FINALIZE":
        kind = "put"
    elif event_type == "OBJECT_METADATA_UPDATE":
        return []
    else:
        raise ParseError(f"GCS eventType {event_type!r} is unknown")
    event_time = attributes.get("eventTime") or resource.get("updated")
    return [
        ChangeEvent(
            kind=kind,
            source_url=f"gs://{bucket}/{key}",
            version=generation,
            sequencer=gcs_sequencer(generation, kind == "delete"),
            size=_size(resource.get("size"), "size") if kind == "put" else None,
            # The generation identifies the content; the JSON API etag also changes on
            # metadata-only updates, and GCSStore reports the generation as the etag.
            etag=generation,
            event_time=_timestamp(event_time, "eventTime"),
            origin="gcs",
        )
    ]


def _gcs_resource(data: Any) -> Mapping[str, Any]:
    if data in (None, ""):
        return {}
    if not isinstance(data, str):
        raise ParseError("Pub/Sub data is not a base64 string")
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ParseError("Pub/Sub data is not valid base64") from None
    resource = _load(decoded)
    if not isinstance(resource, dict):
        raise ParseError("GCS object resource is not a JSON object")
    return resource


# -- Azure ------------------------------------------------------------------------------------

_BLOB_SUBJECT = "/blobServices/default/containers/"
_ACCOUNT_IN_RESOURCE = re.compile(r"/providers/Microsoft\.Storage/storageAccounts/([^/]+)", re.I)
_ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")


def _azure_account(event: Mapping[str, Any], data: Mapping[str, Any]) -> str | None:
    """The storage account an Event Grid event is about, if it says."""
    resource = event.get("source") if "specversion" in event else event.get("topic")
    if isinstance(resource, str) and (found := _ACCOUNT_IN_RESOURCE.search(resource)):
        account = found.group(1).lower()
    else:
        host = urllib.parse.urlsplit(str(data.get("url") or "")).hostname or ""
        account = host.split(".", 1)[0] if ".blob." in host else ""
    if not account:
        return None
    if not _ACCOUNT_NAME.match(account):
        raise ParseError(f"storage account {account!r} is not a valid account name")
    return account


def default_account_url(url: str, default_account: str | None) -> str:
    """``az://container@DEFAULT/key`` -> ``az://container/key`` for the default account; any
    other URL unchanged."""
    if default_account is None or not url.startswith("az://"):
        return url
    container, slash, key = url[len("az://") :].partition("/")
    name, at, account = container.partition("@")
    if at and account == default_account:
        return f"az://{name}{slash}{key}"
    return url


def _azure_event(event: Any) -> ChangeEvent | None:
    if not isinstance(event, dict):
        raise ParseError("Event Grid event is not an object")
    cloud_events = "specversion" in event
    event_type = _string(event, "type" if cloud_events else "eventType")
    if event_type == "Microsoft.Storage.BlobCreated":
        kind: ChangeKind = "put"
    elif event_type == "Microsoft.Storage.BlobDeleted":
        kind = "delete"
    elif event_type.startswith("Microsoft.EventGrid."):
        return None  # handshakes are answered by the HTTP receiver
    else:
        raise ParseError(f"Event Grid event type {event_type!r} is not a blob change")
    subject = _string(event, "subject")
    if not subject.startswith(_BLOB_SUBJECT) or "/blobs/" not in subject:
        raise ParseError(f"subject {subject!r} does not name a blob")
    container, _, key = subject[len(_BLOB_SUBJECT) :].partition("/blobs/")
    _url_key(container, key)
    data = _object(event, "data")
    account = _azure_account(event, data)
    return ChangeEvent(
        kind=kind,
        source_url=f"az://{container}@{account}/{key}" if account else f"az://{container}/{key}",
        version=_optional_string(data, "versionId"),
        sequencer=azure_sequencer(_optional_string(data, "sequencer")),
        size=_size(data.get("contentLength"), "contentLength") if kind == "put" else None,
        etag=_optional_string(data, "eTag"),
        event_time=_timestamp(event.get("time" if cloud_events else "eventTime"), "eventTime"),
        origin="azure",
    )


def parse_azure(payload: bytes | str) -> list[ChangeEvent]:
    """Event Grid (schema or CloudEvents 1.0, one event or an array) -> change events."""
    raw = _load(payload)
    events = raw if isinstance(raw, list) else [raw]
    return [event for item in events if (event := _azure_event(item)) is not None]


def azure_validation_code(payload: bytes | str) -> str | None:
    """The code to echo for an Event Grid SubscriptionValidation handshake, if it is one."""
    raw = _load(payload)
    for event in raw if isinstance(raw, list) else [raw]:
        if not isinstance(event, dict):
            continue
        kind = event.get("eventType") or event.get("type")
        if kind == "Microsoft.EventGrid.SubscriptionValidationEvent":
            data = event.get("data")
            if isinstance(data, dict) and isinstance(data.get("validationCode"), str):
                return str(data["validationCode"])
            raise ParseError("SubscriptionValidationEvent without a validationCode")
    return None


def parse_any(payload: bytes | str) -> list[ChangeEvent]:
    """Recognise the format by its shape and parse it."""
    raw = _load(payload)
    azure_shaped = isinstance(raw, dict) and (
        "specversion" in raw or ("eventType" in raw and "subject" in raw)
    )
    if isinstance(raw, list) or azure_shaped:
        return parse_azure(payload)
    if isinstance(raw, dict) and ("message" in raw or "attributes" in raw):
        return parse_gcs(payload)
    return parse_s3(payload)


def scan_event(
    source_url: str, size: int, etag: str | None, version: str | None, modified: datetime | None
) -> ChangeEvent:
    """A change found by a listing scan (stores without notifications, backfill)."""
    return ChangeEvent(
        kind="put",
        source_url=source_url,
        version=version,
        sequencer="",
        size=size,
        etag=etag,
        event_time=modified or datetime.now(UTC),
        origin="scan",
    )


def scan_deletion_event(source_url: str) -> ChangeEvent:
    """A reconciliation's finding that ``source_url`` is gone while a replica of it is not
    (its deletion's notification was lost). Applying it reads the source afresh, as always.
    Its time is the listing's: the deletion happened at some moment before, which a
    replication group's conflict rule cannot use (``Change.listed_deletion``)."""
    return ChangeEvent(
        kind="delete",
        source_url=source_url,
        version=None,
        sequencer="",
        size=None,
        etag=None,
        event_time=datetime.now(UTC),
        origin="reconcile",
    )
