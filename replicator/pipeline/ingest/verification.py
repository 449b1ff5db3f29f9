"""Who may push: each HTTP receiver verifies its requests by one configured method.

    receiver        methods
    /ingest/s3      "sns-signature" (SNS message signatures, SignatureVersion 1 and 2), "token"
    /ingest/gcs     "oidc" (Pub/Sub push OIDC tokens signed by Google), "token"
    /ingest/azure   "entra" (Event Grid webhooks secured with Entra ID tokens), "token"

``token`` is the shared secret, given as ``?token=`` or ``Authorization: Bearer``; if both are
sent they must both be right. With ``oidc`` or ``entra`` only the Bearer token counts and it
must be a JWT the configured issuer signed: no other credential can stand in for it, and a
Bearer header never replaces the method a receiver is configured with.

Refusals: 401 when the credential is missing, malformed, forged (bad signature) or expired;
403 when it is authentic but not for us (audience, issuer, service account, topic, Entra
application) or the message was already accepted (replayed: same message id within the replay
window); 503 when the keys to check it cannot be fetched (the sender retries). Every refusal is
counted in ``replicator_ingest_refused_total{receiver, reason}`` and logged without the
credential.

Replays: a message id is remembered once the message is published, for ``replay_window``.
A sender's retry of a message whose answer it lost is refused too; that is harmless (its
events are in Kafka already) and Pub/Sub and Event Grid stop retrying once the window has
passed and the retry is accepted as new (events are hints: a duplicate is a no-op). Several
daemon replicas do not share their replay caches.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hmac
import json
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from prometheus_client import CollectorRegistry, Counter

from replicator.errors import ReplicatorError
from replicator.pipeline.ingest.auth_settings import IngestAuthSection, ReceiverAuth
from replicator.pipeline.ingest.fetch import CertificateCache, KeyFetchError, KeySetCache

Receiver = Literal["s3", "gcs", "azure"]

GOOGLE_JWKS = "https://www.googleapis.com/oauth2/v3/certs"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
ENTRA_JWKS = "https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys"
ENTRA_ISSUERS = (
    "https://login.microsoftonline.com/{tenant}/v2.0",
    "https://sts.windows.net/{tenant}/",
)


class Refused(ReplicatorError):
    """A request that is not let in: ``status`` and the metric's ``reason``."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


class ReplayCache:
    """Message ids accepted recently, per receiver, each kept for the window."""

    def __init__(self, limit: int = 100_000) -> None:
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._limit = limit

    def seen(self, receiver: str, message_id: str) -> bool:
        self._expire()
        return (receiver, message_id) in self._seen

    def remember(self, receiver: str, message_id: str, window: timedelta) -> None:
        self._seen[(receiver, message_id)] = time.monotonic() + window.total_seconds()
        self._seen.move_to_end((receiver, message_id))
        while len(self._seen) > self._limit:
            self._seen.popitem(last=False)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._seen:
            key, expires = next(iter(self._seen.items()))
            if expires > now:
                return
            del self._seen[key]


class IngestAuth:
    """The verifiers of the three receivers, their replay cache and refusal metric."""

    def __init__(
        self,
        section: IngestAuthSection,
        token: str,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if section.needs_token() and not token:
            raise ValueError("the ingest receivers verified by token need a shared secret")
        self.section = section
        self._token = token
        self.replays = ReplayCache()
        self.refused = Counter(
            "replicator_ingest_refused",
            "Pushed requests refused by the ingest receivers, by receiver and reason",
            ["receiver", "reason"],
            registry=registry,
        )
        self._certificates = CertificateCache(section.s3.ca_file)
        self._key_sets: dict[str, KeySetCache] = {}

    def settings(self, receiver: str) -> ReceiverAuth:
        auth: ReceiverAuth = getattr(self.section, receiver)
        return auth

    async def verify(self, receiver: str, request: web.Request, body: bytes) -> None:
        """Let the request in or raise ``Refused`` (counted)."""
        try:
            await self._verify(receiver, request, body)
        except Refused as exc:
            self.refused.labels(receiver, exc.reason).inc()
            raise

    def check_replay(self, receiver: str, message_ids: Sequence[str]) -> None:
        """Refuse (counted) a message whose id was accepted within the replay window."""
        for message_id in message_ids:
            if self.replays.seen(receiver, message_id):
                self.refused.labels(receiver, "replayed").inc()
                raise Refused(403, "replayed", f"message {message_id} was already accepted")

    def accepted(self, receiver: str, message_ids: Sequence[str]) -> None:
        window = self.settings(receiver).replay_window
        for message_id in message_ids:
            self.replays.remember(receiver, message_id, window)

    async def _verify(self, receiver: str, request: web.Request, body: bytes) -> None:
        auth = self.settings(receiver)
        if auth.verify == "token":
            self._check_token(request)
        elif auth.verify == "sns-signature":
            await self._check_sns(auth, body)
        elif auth.verify == "oidc":
            claims = await self._check_jwt(auth, request, GOOGLE_JWKS, GOOGLE_ISSUERS)
            email = claims.get("email")
            if claims.get("email_verified") is not True or email not in auth.service_accounts:
                raise Refused(403, "identity", f"token is for {email!r}, not an allowed account")
        else:
            tenant = auth.tenant_id or ""
            claims = await self._check_jwt(
                auth,
                request,
                ENTRA_JWKS.format(tenant=tenant),
                tuple(issuer.format(tenant=tenant) for issuer in ENTRA_ISSUERS),
            )
            app = claims.get("azp") or claims.get("appid")
            if auth.app_ids and app not in auth.app_ids:
                raise Refused(403, "identity", f"token was issued to application {app!r}")

    # -- shared secret -------------------------------------------------------------------

    def _check_token(self, request: web.Request) -> None:
        offered = []
        if "token" in request.query:
            offered.append(request.query["token"])
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            offered.append(header.removeprefix("Bearer "))
        if not offered:
            raise Refused(401, "missing", "missing token")
        expected = self._token.encode()
        # Header bytes that are not UTF-8 arrive as lone surrogates (aiohttp decodes with
        # surrogateescape): encoded back the same way, they are simply a wrong token.
        if not all(
            hmac.compare_digest(token.encode(errors="surrogateescape"), expected)
            for token in offered
        ):
            raise Refused(401, "invalid", "wrong token")

    # -- JWTs (Google OIDC, Entra ID) --------------------------------------------------------

    async def _check_jwt(
        self,
        auth: ReceiverAuth,
        request: web.Request,
        default_jwks: str,
        default_issuers: tuple[str, ...],
    ) -> Mapping[str, Any]:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise Refused(401, "missing", "missing Bearer token")
        token = header.removeprefix("Bearer ").strip()
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.DecodeError:
            raise Refused(401, "invalid", "the Bearer token is not a JWT") from None
        if not isinstance(kid, str):
            raise Refused(401, "invalid", "the token names no key id")
        url = auth.jwks_url or default_jwks
        keys = self._key_sets.get(url)
        if keys is None:
            keys = self._key_sets[url] = KeySetCache(url, auth.ca_file)
        try:
            key = await keys.key(kid)
        except KeyFetchError as exc:
            raise Refused(503, "keys_unavailable", str(exc)) from None
        if key is None:
            raise Refused(401, "forged", f"no signing key {kid!r} in {url}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=auth.audience,
                issuer=auth.issuers or default_issuers,
                leeway=60,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Refused(401, "expired", "the token has expired") from None
        except jwt.InvalidAudienceError:
            raise Refused(403, "audience", "the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise Refused(403, "issuer", "the token comes from another issuer") from None
        except jwt.InvalidSignatureError:
            raise Refused(401, "forged", "the token's signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise Refused(401, "invalid", f"the token is not valid: {exc}") from None
        return claims

    # -- SNS signatures ---------------------------------------------------------------------

    async def _check_sns(self, auth: ReceiverAuth, body: bytes) -> None:
        try:
            message = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise Refused(401, "invalid", "the SNS message is not JSON") from None
        if not isinstance(message, dict):
            raise Refused(401, "invalid", "the SNS message is not a JSON object")
        version = message.get("SignatureVersion")
        if version not in ("1", "2"):
            raise Refused(401, "invalid", f"SignatureVersion {version!r} is not 1 or 2")
        url = str(message.get("SigningCertURL", ""))
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if (
            parts.scheme != "https"
            or not parts.path.endswith(".pem")
            or not any(fnmatch.fnmatchcase(host, pattern) for pattern in auth.sns_cert_hosts)
        ):
            raise Refused(401, "forged", f"SigningCertURL {url!r} is not an allowed SNS host")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
            text = sns_string_to_sign(message)
        except (binascii.Error, ValueError) as exc:
            raise Refused(401, "invalid", f"the SNS message cannot be checked: {exc}") from None
        try:
            key = await self._certificates.public_key(url)
        except KeyFetchError as exc:
            raise Refused(503, "keys_unavailable", str(exc)) from None
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        try:
            key.verify(signature, text.encode(), padding.PKCS1v15(), digest)
        except InvalidSignature:
            raise Refused(401, "forged", "the SNS signature does not verify") from None
        sent = _sns_timestamp(message.get("Timestamp"))
        now = datetime.now(UTC)
        if sent < now - auth.max_age or sent > now + timedelta(minutes=5):
            raise Refused(401, "expired", f"the SNS message was signed at {sent.isoformat()}")
        topic = message.get("TopicArn")
        if auth.sns_topic_arns and topic not in auth.sns_topic_arns:
            raise Refused(403, "identity", f"topic {topic!r} is not allowed")


_SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SNS_FIELDS["UnsubscribeConfirmation"] = _SNS_FIELDS["SubscriptionConfirmation"]


def sns_string_to_sign(message: Mapping[str, Any]) -> str:
    """The text SNS signs: name and value lines of the type's fields, in byte order, those
    absent (a Notification's Subject) left out."""
    kind = message.get("Type")
    fields = _SNS_FIELDS.get(str(kind))
    if fields is None:
        raise ValueError(f"SNS message type {kind!r} is unknown")
    lines = []
    for name in fields:
        value = message.get(name)
        if value is None:
            if name == "Subject":
                continue
            raise ValueError(f"the SNS {kind} has no {name}")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines)


def _sns_timestamp(value: object) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise Refused(401, "invalid", f"SNS Timestamp {value!r} is not a timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
