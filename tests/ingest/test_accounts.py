"""Accounts in URLs and per-location credentials, on what the emulators allow: two Azurite
accounts (AZURITE_ACCOUNTS), two moto accounts (a role assumed into another account, and a
second moto server behind its own endpoint and keys)."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from azure.storage.blob import BlobServiceClient
from moto.server import ThreadedMotoServer

from connectors import open_store
from connectors.azure_credentials import AzureCredentials
from connectors.base import PermissionDenied
from connectors.credentials import AwsAccess, GCSAccess, StoreCredentials, install
from connectors.sqs import SQSQueue
from replicator.daemon.config import DaemonConfig
from replicator.daemon.credentials import (
    check_azure_accounts,
    default_azure_account,
    store_credentials,
)
from replicator.daemon.ingest_sources import build_consumers
from replicator.devstack import DevStack, StackState, environment, free_port
from replicator.devstack.stack import AZURE_DEV_ACCOUNT, AZURE_DEV_KEY
from replicator.errors import ConfigError
from replicator.pipeline.bus import AsyncProducer, KafkaSettings
from replicator.pipeline.events import parse_azure
from tests.ingest.conftest import Topics, publisher_for
from tests.ingest.test_azure_queue import event_grid

SECOND = "secondacct"
SECOND_KEY = base64.b64encode(b"second-account-key-for-tests-only").decode()
ROLE_B = "arn:aws:iam::210987654321:role/replicator-writer"


@pytest.fixture
def installed_credentials() -> Iterator[None]:
    yield
    install(StoreCredentials())


@pytest.fixture(scope="module")
def two_azure_accounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private Azurite holding the dev account and a second one; yields its blob port."""
    accounts = f"{AZURE_DEV_ACCOUNT}:{AZURE_DEV_KEY};{SECOND}:{SECOND_KEY}"
    with environment({"AZURITE_ACCOUNTS": accounts}):
        stack = DevStack(tmp_path_factory.mktemp("azurite2"), components=("azure",))
        state = stack.up()
    try:
        yield state.components["azure"].port
    finally:
        stack.down()


def dev_connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURE_DEV_ACCOUNT};"
        f"AccountKey={AZURE_DEV_KEY};BlobEndpoint=http://127.0.0.1:{port}/{AZURE_DEV_ACCOUNT};"
    )


class TestAzureAccounts:
    async def test_same_container_in_two_accounts_are_two_locations(
        self, two_azure_accounts: int, installed_credentials: None
    ) -> None:
        """az://c/k is the default account, az://c@second/k the second one: writing both
        leaves two different blobs, each where the account's own client finds it."""
        port = two_azure_accounts
        install(
            StoreCredentials(
                azure={
                    SECOND: AzureCredentials(
                        SECOND,
                        "key",
                        key=SECOND_KEY,
                        endpoints={"blob": f"http://127.0.0.1:{port}/{SECOND}"},
                    )
                }
            )
        )
        container = f"c{uuid.uuid4().hex[:10]}"
        with environment({"AZURE_STORAGE_CONNECTION_STRING": dev_connection_string(port)}):
            default = open_store(f"az://{container}")
            second = open_store(f"az://{container}@{SECOND}")
        async with default, second:
            assert second.url_for("k") == f"az://{container}@{SECOND}/k"
            await default.create_container()
            await second.create_container()
            await default.put("k", b"default account")
            await second.put("k", b"second account")
            assert await default.read("k") == b"default account"
            assert await second.read("k") == b"second account"
        oracle = BlobServiceClient(
            f"http://127.0.0.1:{port}/{SECOND}",
            credential={"account_name": SECOND, "account_key": SECOND_KEY},
        )
        with oracle:
            blob = oracle.get_blob_client(container, "k").download_blob().readall()
        assert blob == b"second account"

    async def test_an_account_without_credentials_is_refused_by_name(
        self, devstack: StackState, installed_credentials: None
    ) -> None:
        async with open_store(f"az://c{uuid.uuid4().hex[:10]}@{SECOND}") as store:
            with pytest.raises(PermissionDenied, match=f"no credentials for .*{SECOND}"):
                await store.head("k")

    async def test_entra_id_without_an_identity_fails_with_one_clear_error(
        self, devstack: StackState, installed_credentials: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """DefaultAzureCredential is tried (no identity exists here, so it cannot get a
        token): the error names the account and the method, not a stack of SDK text."""
        for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"):
            monkeypatch.delenv(name, raising=False)
        install(StoreCredentials(azure={SECOND: AzureCredentials(SECOND, "identity")}))
        async with open_store(f"az://c{uuid.uuid4().hex[:10]}@{SECOND}") as store:
            with pytest.raises(PermissionDenied, match=f"no Entra ID token for .*{SECOND}"):
                await store.head("k")

    async def test_events_of_two_accounts_reach_their_own_routes(
        self, topics: Topics, producer: AsyncProducer
    ) -> None:
        """Published with the default account devstoreaccount1: its event keeps the
        account-less URL its route uses, the other account's keeps @account."""
        container = f"c{uuid.uuid4().hex[:10]}"
        publisher = publisher_for(
            producer, topics, f"az://{container}/", f"az://{container}@{SECOND}/"
        )
        default_event = event_grid(container, "k")
        other_event = event_grid(container, "k")
        other_event["topic"] = str(other_event["topic"]).replace(AZURE_DEV_ACCOUNT, SECOND)
        events = [
            *parse_azure(str(default_event).replace("'", '"')),
            *parse_azure(str(other_event).replace("'", '"')),
        ]
        routed = publisher.routed(events)
        assert [e.source_url for e in routed] == [
            f"az://{container}/k",
            f"az://{container}@{SECOND}/k",
        ]
        assert [t.route.name for e in routed for t in publisher.router.targets(e.source_url)] == [
            "r0",
            "r1",
        ]


def aws(service: str, **options: Any) -> Any:
    return boto3.client(service, region_name="us-east-1", **options)


class TestAwsAccounts:
    async def test_a_location_with_a_role_writes_in_the_roles_account(
        self, devstack: StackState, installed_credentials: None
    ) -> None:
        """One process: the source bucket with the standard chain (account A), the
        destination through a role in account B; B's bucket is invisible from A."""
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        source_bucket, dest_bucket = f"a-{uuid.uuid4().hex[:10]}", f"b-{uuid.uuid4().hex[:10]}"
        install(StoreCredentials(s3=((f"s3://{dest_bucket}", AwsAccess(role_arn=ROLE_B)),)))
        async with (
            open_store(f"s3://{source_bucket}") as source,
            open_store(f"s3://{dest_bucket}") as dest,
        ):
            await source.create_container()
            await dest.create_container()
            await source.put("k", b"from account A")
            await dest.put("k", await source.read("k"))
        role = aws("sts", endpoint_url=endpoint).assume_role(
            RoleArn=ROLE_B, RoleSessionName="oracle"
        )["Credentials"]
        as_b = aws(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=role["AccessKeyId"],
            aws_secret_access_key=role["SecretAccessKey"],
            aws_session_token=role["SessionToken"],
        )
        assert as_b.get_object(Bucket=dest_bucket, Key="k")["Body"].read() == b"from account A"
        names_in_a = [b["Name"] for b in aws("s3", endpoint_url=endpoint).list_buckets()["Buckets"]]
        # moto enforces no IAM policy (account A could still read B's bucket by name), so
        # the owning account is what shows that the role was used.
        assert source_bucket in names_in_a
        assert dest_bucket not in names_in_a

    async def test_a_location_with_its_own_endpoint_and_keys(
        self, devstack: StackState, installed_credentials: None
    ) -> None:
        port = free_port()
        other = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        other.start()
        try:
            bucket = f"e-{uuid.uuid4().hex[:10]}"
            install(
                StoreCredentials(
                    s3=(
                        (
                            f"s3://{bucket}/",
                            AwsAccess(
                                endpoint_url=f"http://127.0.0.1:{port}",
                                region="eu-west-1",
                                access_key_id="second-key-id",
                                secret_access_key="second-secret",
                            ),
                        ),
                    )
                )
            )
            async with open_store(f"s3://{bucket}/") as store:
                await store.create_container()
                await store.put("k", b"elsewhere")
            there = aws(
                "s3",
                endpoint_url=f"http://127.0.0.1:{port}",
                aws_access_key_id="x",
                aws_secret_access_key="x",
            )
            assert there.get_object(Bucket=bucket, Key="k")["Body"].read() == b"elsewhere"
            here = aws("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
            assert bucket not in [b["Name"] for b in here.list_buckets()["Buckets"]]
        finally:
            other.stop()

    async def test_a_queue_in_another_account_is_read_through_its_role(
        self, devstack: StackState
    ) -> None:
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        role = aws("sts", endpoint_url=endpoint).assume_role(
            RoleArn=ROLE_B, RoleSessionName="setup"
        )["Credentials"]
        as_b = aws(
            "sqs",
            endpoint_url=endpoint,
            aws_access_key_id=role["AccessKeyId"],
            aws_secret_access_key=role["SecretAccessKey"],
            aws_session_token=role["SessionToken"],
        )
        url = as_b.create_queue(QueueName=f"b-{uuid.uuid4().hex[:10]}")["QueueUrl"]
        assert "/210987654321/" in url
        as_b.send_message(QueueUrl=url, MessageBody="in account B")
        queue = SQSQueue(url, access=AwsAccess(role_arn=ROLE_B))
        try:
            [message] = await queue.receive(10, 1)
            assert message.body == "in account B"
            await queue.delete([message])
        finally:
            await queue.close()


class TestGcsCredentials:
    async def test_a_locations_service_account_file_is_the_one_used(
        self, devstack: StackState, installed_credentials: None, tmp_path: Path
    ) -> None:
        """The emulator takes no credentials, so only this can be checked here: the file
        configured for the location is read (a missing one is a clear error naming it)."""
        missing = tmp_path / "no-such-key.json"
        install(StoreCredentials(gcs=(("gs://ml-europe/", GCSAccess(str(missing))),)))
        async with open_store("gs://ml-europe/") as store:
            with pytest.raises(PermissionDenied, match="credentials file"):
                await store.head("k")


class TestConfiguration:
    def config(self, **extra: Any) -> DaemonConfig:
        return DaemonConfig.model_validate(
            {
                "kafka": {"bootstrap": "127.0.0.1:9"},
                "routes": [
                    {"name": "r", "source": "az://lake@lakeprod/", "destinations": ["s3://x/"]}
                ],
                **extra,
            }
        )

    def test_credentials_entries_become_connector_data_with_secrets_from_the_environment(
        self,
    ) -> None:
        config = self.config(
            credentials=[
                {"s3": "s3://partner/", "role_arn": ROLE_B, "region": "eu-west-1"},
                {
                    "s3": "s3://keys/",
                    "access_key_id_env": "K_ID",
                    "secret_access_key_env": "K_SECRET",
                },
                {"gs": "gs://ml/", "service_account_file": "/secrets/ml.json"},
                {"azure_account": "lakeprod", "method": "identity", "client_id": "abc"},
                {"azure_account": "lakesas", "method": "sas", "sas_env": "SAS"},
            ]
        )
        env = {"K_ID": "id", "K_SECRET": "canary-secret", "SAS": "sv=1&sig=canary"}
        found = store_credentials(config.credentials, env)
        assert found.s3_for("s3://partner/a/b") == AwsAccess(role_arn=ROLE_B, region="eu-west-1")
        assert found.s3_for("s3://keys/k") == AwsAccess(
            access_key_id="id", secret_access_key="canary-secret"
        )
        assert found.s3_for("s3://other/k") is None
        assert found.gcs_for("gs://ml/x") == GCSAccess("/secrets/ml.json")
        lakeprod = found.azure_for("lakeprod")
        assert lakeprod is not None
        assert (lakeprod.method, lakeprod.client_id) == ("identity", "abc")
        assert "canary" not in repr(found)
        with pytest.raises(ConfigError, match="SAS is not set"):
            store_credentials(config.credentials, {"K_ID": "id", "K_SECRET": "s"})

    @pytest.mark.parametrize(
        ("entry", "message"),
        [
            ({"s3": "s3://a/", "gs": "gs://b/"}, "one of s3, gs or azure_account"),
            ({"gs": "gs://b/", "role_arn": ROLE_B}, "role_arn do not apply to gs"),
            ({"azure_account": "lakeprod"}, "need a method"),
            ({"azure_account": "lakeprod", "method": "key"}, "needs key_env"),
            ({"s3": "s3://a/", "access_key_id_env": "X"}, "go together"),
        ],
    )
    def test_inconsistent_entries_are_refused(self, entry: dict[str, str], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            self.config(credentials=[entry])

    def test_a_route_naming_the_default_account_explicitly_is_refused(self) -> None:
        env = {"AZURE_STORAGE_ACCOUNT": "lakeprod", "AZURE_STORAGE_KEY": "x"}
        assert default_azure_account(env) == "lakeprod"
        with pytest.raises(ConfigError, match="write az://lake/ instead"):
            check_azure_accounts(self.config(), "lakeprod")
        check_azure_accounts(self.config(), "otheraccount")

    async def test_every_configured_source_is_built_with_its_account(
        self, devstack: StackState, installed_credentials: None, producer: AsyncProducer
    ) -> None:
        config = self.config(
            sqs=[{"queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q", "role_arn": ROLE_B}],
            azure_queues=[{"queue": "blob-events"}],
            pubsub=[{"subscription": "projects/p/subscriptions/s", "batch": 50}],
        )
        publisher = publisher_for(producer, Topics(KafkaSettings("unused"), "c", "d"), "s3://x/")
        consumers = build_consumers(config, publisher)
        assert [c.origin for c in consumers] == ["sqs", "azure-queue", "pubsub"]
        assert consumers[1].queue.name.endswith(f"/{AZURE_DEV_ACCOUNT}/blob-events")
        assert consumers[2].batch == 50
        for consumer in consumers:
            await consumer.queue.close()
        with pytest.raises(ConfigError, match="no credentials for it"):
            build_consumers(
                self.config(azure_queues=[{"queue": "q-1", "account": SECOND}]), publisher
            )
