"""Verification of pushed notifications: SNS signatures, Pub/Sub OIDC tokens and Event Grid
Entra tokens, each signed here with locally generated keys whose certificates and key sets
are served over local HTTPS; the receivers publish to the real broker."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from replicator.pipeline.bus import AsyncProducer
from replicator.pipeline.ingest.receivers import add_ingest_routes
from replicator.pipeline.ingest.verification import (
    IngestAuth,
    IngestAuthSection,
    sns_string_to_sign,
)
from tests.ingest.conftest import Topics, publisher_for

SAMPLES = Path(__file__).parent.parent / "events" / "samples"
TOPIC = "arn:aws:sns:us-west-2:123456789012:lake-events"
PUSH_ACCOUNT = "push@lake.iam.gserviceaccount.com"
TENANT = "11111111-2222-3333-4444-555555555555"
AUDIENCE = "https://replicator.example/ingest"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(key: rsa.RSAPrivateKey, name: str, *, days: int = 1) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(name))])
            if name[0].isdigit()
            else x509.SubjectAlternativeName([x509.DNSName(name)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**document, "kid": kid, "alg": "RS256", "use": "sig"}


@dataclass
class KeyServer:
    """A local HTTPS server holding the SNS signing certificate and two key sets."""

    base: str
    ca_file: str
    sns_key: rsa.RSAPrivateKey
    google_key: rsa.RSAPrivateKey
    entra_key: rsa.RSAPrivateKey
    confirmed: list[str]

    def sns(self, message: dict[str, Any], version: str = "1", key: Any = None) -> bytes:
        signed = {
            **message,
            "SignatureVersion": version,
            "SigningCertURL": f"{self.base}/SimpleNotificationService-test.pem",
        }
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = (key or self.sns_key).sign(
            sns_string_to_sign(signed).encode(), padding.PKCS1v15(), digest
        )
        signed["Signature"] = base64.b64encode(signature).decode()
        return json.dumps(signed).encode()

    def token(self, issuer: str, kid: str, key: Any = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": issuer, "aud": AUDIENCE, "iat": now, "exp": now + 600, **claims}
        signer = key or (self.google_key if kid == "google-1" else self.entra_key)
        return jwt.encode(payload, signer, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
async def key_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KeyServer]:
    directory = tmp_path_factory.mktemp("keys")
    tls_key = rsa_key()
    tls_cert = certificate(tls_key, "127.0.0.1")
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(tls_cert.public_bytes(serialization.Encoding.PEM))
    key_file = directory / "tls.key"
    key_file.write_bytes(
        tls_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    sns_key, google_key, entra_key = rsa_key(), rsa_key(), rsa_key()
    sns_pem = certificate(sns_key, "sns.amazonaws.com").public_bytes(serialization.Encoding.PEM)
    confirmed: list[str] = []

    async def pem(_: web.Request) -> web.Response:
        return web.Response(body=sns_pem)

    async def google(_: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk(google_key, "google-1")]})

    async def entra(_: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk(entra_key, "entra-1")]})

    async def confirm(request: web.Request) -> web.Response:
        confirmed.append(request.query.get("Token", ""))
        return web.Response(text="<ConfirmSubscriptionResponse/>")

    app = web.Application()
    app.router.add_get("/SimpleNotificationService-test.pem", pem)
    app.router.add_get("/certs", google)
    app.router.add_get("/entra/keys", entra)
    app.router.add_get("/confirm", confirm)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(ca_file), str(key_file))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    base = f"https://127.0.0.1:{runner.addresses[0][1]}"
    yield KeyServer(base, str(ca_file), sns_key, google_key, entra_key, confirmed)
    await runner.cleanup()


@dataclass
class Receiver:
    base: str
    auth: IngestAuth
    registry: CollectorRegistry
    published: Any

    def refused(self, receiver: str, reason: str) -> float:
        value = self.registry.get_sample_value(
            "replicator_ingest_refused_total", {"receiver": receiver, "reason": reason}
        )
        return value or 0.0

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.base + path, data=body, headers=headers or {}) as response,
        ):
            return response.status, await response.text()


@pytest.fixture
async def receiver(
    key_server: KeyServer, topics: Topics, producer: AsyncProducer
) -> AsyncIterator[Receiver]:
    section = IngestAuthSection.model_validate(
        {
            "s3": {
                "verify": "sns-signature",
                "sns_cert_hosts": ["127.0.0.1"],
                "sns_topic_arns": [TOPIC],
                "ca_file": key_server.ca_file,
            },
            "gcs": {
                "verify": "oidc",
                "audience": AUDIENCE,
                "service_accounts": [PUSH_ACCOUNT],
                "jwks_url": f"{key_server.base}/certs",
                "ca_file": key_server.ca_file,
            },
            "azure": {
                "verify": "entra",
                "audience": AUDIENCE,
                "tenant_id": TENANT,
                "jwks_url": f"{key_server.base}/entra/keys",
                "ca_file": key_server.ca_file,
            },
        }
    )
    registry = CollectorRegistry()
    auth = IngestAuth(section, "", registry=registry)
    publisher = publisher_for(producer, topics, "s3://lake/", "gs://ml/", "az://lake@acct/")
    app = web.Application()
    add_ingest_routes(app, publisher, "", ("127.0.0.1",), auth)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield Receiver(f"http://127.0.0.1:{runner.addresses[0][1]}", auth, registry, publisher)
    await runner.cleanup()


def sns_notification(**overrides: Any) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": TOPIC,
        "Subject": "Amazon S3 Notification",
        "Message": (SAMPLES / "s3_sqs_put.json").read_text(),
        "Timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        **overrides,
    }


class TestSnsSignatures:
    async def test_signed_messages_of_both_versions_are_published(
        self, receiver: Receiver, key_server: KeyServer
    ) -> None:
        """SignatureVersion 1 (SHA1withRSA) and 2 (SHA256withRSA), with and without a
        Subject; the signing certificate is fetched once and cached."""
        fetches = receiver.auth._certificates.fetches
        for version in ("1", "2"):
            for message in (sns_notification(), sns_notification(Subject=None)):
                body = key_server.sns({k: v for k, v in message.items() if v is not None}, version)
                status, text = await receiver.post("/ingest/s3", body)
                assert status == 202, text
        assert receiver.published.published == 4
        assert receiver.auth._certificates.fetches - fetches <= 1

    async def test_forged_expired_foreign_and_replayed_messages_are_refused_and_counted(
        self, receiver: Receiver, key_server: KeyServer
    ) -> None:
        tampered = json.loads(key_server.sns(sns_notification()))
        tampered["Message"] = tampered["Message"].replace("lake", "evil")
        cases = [
            (json.dumps(tampered).encode(), 401, "forged"),
            (key_server.sns(sns_notification(), key=rsa_key()), 401, "forged"),
            (
                key_server.sns(sns_notification(Timestamp="2020-01-01T00:00:00.000Z")),
                401,
                "expired",
            ),
            (key_server.sns(sns_notification(TopicArn=TOPIC + "-other")), 403, "identity"),
            (json.dumps(sns_notification()).encode(), 401, "invalid"),  # unsigned
        ]
        foreign = json.loads(key_server.sns(sns_notification()))
        foreign["SigningCertURL"] = "https://sns.evil.example.com/cert.pem"
        cases.append((json.dumps(foreign).encode(), 401, "forged"))
        for body, status, reason in cases:
            before = receiver.refused("s3", reason)
            got, text = await receiver.post("/ingest/s3", body)
            assert (got, reason) == (status, reason), text
            assert receiver.refused("s3", reason) == before + 1
        good = key_server.sns(sns_notification())
        assert (await receiver.post("/ingest/s3", good))[0] == 202
        status, _ = await receiver.post("/ingest/s3", good)
        assert status == 403
        assert receiver.refused("s3", "replayed") == 1
        assert receiver.published.published == 1

    async def test_a_bearer_header_does_not_stand_in_for_the_signature(
        self, receiver: Receiver
    ) -> None:
        body = json.dumps(sns_notification()).encode()
        status, _ = await receiver.post(
            "/ingest/s3", body, {"Authorization": "Bearer anything-at-all"}
        )
        assert status == 401
        assert receiver.published.published == 0

    async def test_a_signed_subscription_confirmation_is_confirmed(
        self, receiver: Receiver, key_server: KeyServer
    ) -> None:
        token = uuid.uuid4().hex
        message = {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": TOPIC,
            "Message": "You have chosen to subscribe",
            "SubscribeURL": f"{key_server.base}/confirm?Action=ConfirmSubscription&Token={token}",
            "Timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        }
        status, _ = await receiver.post(
            "/ingest/s3",
            key_server.sns(message, "2"),
            {"x-amz-sns-message-type": "SubscriptionConfirmation"},
        )
        assert status == 200
        assert token in key_server.confirmed


def pubsub_push(message_id: str | None = None) -> bytes:
    pull = json.loads((SAMPLES / "gcs_finalize_pull.json").read_text())
    pull["messageId"] = message_id or uuid.uuid4().hex
    return json.dumps({"message": pull, "subscription": "projects/p/subscriptions/s"}).encode()


class TestPubSubOidc:
    def bearer(self, key_server: KeyServer, **claims: Any) -> dict[str, str]:
        fields = {"email": PUSH_ACCOUNT, "email_verified": True, **claims}
        key = fields.pop("key", None)
        token = key_server.token("https://accounts.google.com", "google-1", key, **fields)
        return {"Authorization": f"Bearer {token}"}

    async def test_a_valid_token_is_accepted(
        self, receiver: Receiver, key_server: KeyServer
    ) -> None:
        status, text = await receiver.post("/ingest/gcs", pubsub_push(), self.bearer(key_server))
        assert status == 202, text
        assert receiver.published.published == 1

    async def test_bad_tokens_are_refused_and_counted(
        self, receiver: Receiver, key_server: KeyServer
    ) -> None:
        cases = [
            (self.bearer(key_server, key=rsa_key()), 401, "forged"),
            (self.bearer(key_server, exp=int(time.time()) - 3600), 401, "expired"),
            (self.bearer(key_server, aud="https://elsewhere.example"), 403, "audience"),
            (self.bearer(key_server, email="other@x.iam.gserviceaccount.com"), 403, "identity"),
            (self.bearer(key_server, iss="https://evil.example"), 403, "issuer"),
            ({"Authorization": "Bearer not-a-jwt"}, 401, "invalid"),
            ({}, 401, "missing"),
        ]
        for headers, status, reason in cases:
            before = receiver.refused("gcs", reason)
            got, text = await receiver.post("/ingest/gcs", pubsub_push(), headers)
            assert (got, reason) == (status, reason), text
            assert receiver.refused("gcs", reason) == before + 1
        # A shared token in the query is no substitute for the OIDC token.
        status, _ = await receiver.post("/ingest/gcs?token=whatever", pubsub_push())
        assert status == 401
        assert receiver.published.published == 0

    async def test_a_replayed_message_is_refused(
        self, receiver: Receiver, key_server: KeyServer
    ) -> None:
        body = pubsub_push("replay-me")
        assert (await receiver.post("/ingest/gcs", body, self.bearer(key_server)))[0] == 202
        assert (await receiver.post("/ingest/gcs", body, self.bearer(key_server)))[0] == 403
        assert receiver.refused("gcs", "replayed") == 1


class TestEventGridEntra:
    def bearer(self, key_server: KeyServer, **claims: Any) -> dict[str, str]:
        fields = {"azp": "4962773b-9cdb-44cf-a8bf-237846a00ab7", **claims}
        issuer = fields.pop("iss", f"https://login.microsoftonline.com/{TENANT}/v2.0")
        token = key_server.token(issuer, "entra-1", fields.pop("key", None), **fields)
        return {"Authorization": f"Bearer {token}"}

    async def test_events_and_the_validation_handshake_pass_with_a_token(
        self, receiver: Receiver, key_server: KeyServer
    ) -> None:
        status, text = await receiver.post(
            "/ingest/azure",
            (SAMPLES / "azure_validation.json").read_bytes(),
            self.bearer(key_server),
        )
        assert status == 200
        assert "validationResponse" in text
        status, _ = await receiver.post(
            "/ingest/azure",
            (SAMPLES / "azure_eventgrid_created.json").read_bytes(),
            self.bearer(key_server, iss=f"https://sts.windows.net/{TENANT}/"),
        )
        assert status == 202
        assert receiver.published.published == 1

    async def test_bad_tokens_are_refused_and_counted(
        self, receiver: Receiver, key_server: KeyServer
    ) -> None:
        body = (SAMPLES / "azure_eventgrid_created.json").read_bytes()
        cases = [
            (self.bearer(key_server, aud="api://other"), 403, "audience"),
            (self.bearer(key_server, azp="some-other-app"), 403, "identity"),
            (self.bearer(key_server, exp=int(time.time()) - 3600), 401, "expired"),
            (self.bearer(key_server, key=rsa_key()), 401, "forged"),
            (
                self.bearer(key_server, iss="https://login.microsoftonline.com/other/v2.0"),
                403,
                "issuer",
            ),
        ]
        for headers, status, reason in cases:
            before = receiver.refused("azure", reason)
            got, text = await receiver.post("/ingest/azure", body, headers)
            assert (got, reason) == (status, reason), text
            assert receiver.refused("azure", reason) == before + 1
        assert receiver.published.published == 0


class TestSecrets:
    async def test_credentials_never_reach_logs_or_answers(
        self, receiver: Receiver, key_server: KeyServer
    ) -> None:
        """Refused tokens (forged, expired) are neither logged nor echoed back."""
        forged = key_server.token("https://accounts.google.com", "google-1", rsa_key())
        expired = key_server.token(
            "https://accounts.google.com", "google-1", exp=int(time.time()) - 3600
        )
        with capture_logs() as logs:
            for token in (forged, expired):
                status, text = await receiver.post(
                    "/ingest/gcs", pubsub_push(), {"Authorization": f"Bearer {token}"}
                )
                assert status == 401
                assert token not in text
                assert token.split(".")[2] not in text
        assert logs, "refusals are logged"
        for entry in logs:
            for token in (forged, expired):
                assert token.split(".")[2] not in repr(entry)
