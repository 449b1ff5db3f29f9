"""The daemon's configuration file (TOML): the routing sections of
``replicator.pipeline.rules`` plus the daemon's own::

    [kafka]
    bootstrap = "kafka-1:9092,kafka-2:9092"
    group = "replicator"
    partitions = 12                  # used when the topics are created
    fetch_wait_max_ms = 100          # longest a fetch waits for records (delivery latency)

    [catalog]
    url = "postgresql://replicator@db:5432/replicator"   # or sqlite:///var/lib/...

    [http]
    port = 8080                      # health, metrics, catalog queries and ingest
    ingest_token_env = "REPLICATOR_INGEST_TOKEN"   # ingest endpoints need this shared secret

    [copy]
    part_size = "auto"               # or a size: parts of every multipart copy
    concurrency = 8
    memory = "512MiB"
    workers = 64                     # events applied at once

    [deletes]
    sweep_interval = "1m"            # how often deletions delayed by a route are carried out

    [[sqs]]
    queue_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/lake-events"
    receivers = 4                    # receive loops at once (one drains at most ~10 per call)
    visibility_timeout_s = 15        # lease of a received message, extended while publishing;
                                     # a killed daemon's messages come back after this long
    max_receives = 5                 # a message received more often goes to the DLQ
    role_arn = "arn:aws:iam::123456789012:role/replicator-events"   # optional; or profile

    [[azure_queues]]                 # Event Grid -> Storage Queue (no public endpoint needed)
    queue = "blob-events"
    account = "lakeprod"             # the queue's storage account; default: the environment's
    visibility_timeout_s = 30        # lease, extended while publishing
    receivers = 2
    max_receives = 5

    [[pubsub]]                       # GCS -> Pub/Sub, pulled (no public endpoint needed)
    subscription = "projects/lake-prod/subscriptions/replicator"
    ack_deadline_s = 10              # lease, extended while publishing; <= the subscription's
    batch = 100                      # flow control: at most receivers x batch outstanding
    receivers = 2
    service_account_file = "/var/run/secrets/pubsub.json"   # default: application default

    [ingest.s3]                      # how each HTTP receiver verifies its senders
    verify = "sns-signature"         # or "token" (the default for all three)
    sns_topic_arns = ["arn:aws:sns:eu-west-1:123456789012:lake-events"]
    [ingest.gcs]
    verify = "oidc"                  # Pub/Sub push with an OIDC token
    audience = "https://replicator.example.com/ingest/gcs"
    service_accounts = ["pubsub-push@lake-prod.iam.gserviceaccount.com"]
    [ingest.azure]
    verify = "entra"                 # Event Grid webhook secured with Entra ID
    tenant_id = "00000000-0000-0000-0000-000000000000"
    audience = "api://replicator-ingest"

    [[credentials]]                  # per location (URL prefix) or per Azure account
    s3 = "s3://partner-lake/"        # reads from / writes to this prefix with:
    role_arn = "arn:aws:iam::210987654321:role/replicator-writer"   # and/or profile,
                                     # endpoint_url, region, access_key_id_env + secret_...
    [[credentials]]
    gs = "gs://ml-europe/"
    service_account_file = "/var/run/secrets/gcs-ml-europe.json"
    [[credentials]]
    azure_account = "lakeprod"       # az://container@lakeprod/...
    method = "identity"              # identity | key | sas | connection_string (+ *_env)
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from replicator.engine.units import parse_part_size, parse_size
from replicator.pipeline.bus import (
    CHANGES_TOPIC,
    DLQ_TOPIC,
)
from replicator.pipeline.ingest.sqs import DEFAULT_VISIBILITY_TIMEOUT_S
from replicator.pipeline.ingest.verification import IngestAuthSection
from replicator.pipeline.rules import (
    Duration,
    RoutingConfig,
    config_value,
    read_toml,
    validate_config,
)

log = structlog.get_logger(__name__)


class KafkaSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    bootstrap: str
    group: str = "replicator"
    partitions: int = Field(default=12, ge=1)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    fetch_wait_max_ms: int = Field(default=100, ge=0)
    changes_topic: str = CHANGES_TOPIC
    dlq_topic: str = DLQ_TOPIC


class CatalogSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = "sqlite:///var/lib/replicator/catalog.db"


class HttpSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    ingest_token_env: str = "REPLICATOR_INGEST_TOKEN"
    sns_confirm_hosts: tuple[str, ...] = ("sns.*.amazonaws.com",)


class CopySection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    part_size: str = "auto"
    concurrency: int = Field(default=8, ge=1)
    memory: str = "512MiB"
    workers: int = Field(default=64, ge=1, description="events applied at once")

    @field_validator("part_size")
    @classmethod
    def _part_size(cls, value: str) -> str:
        config_value(parse_part_size, value)  # kept as text; parsed when the daemon starts
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        config_value(parse_size, value)
        return value


class SQSSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    queue_url: str
    wait_s: int = Field(default=10, ge=0, le=20)
    receivers: int = Field(default=4, ge=1, le=64)
    visibility_timeout_s: int = Field(default=DEFAULT_VISIBILITY_TIMEOUT_S, ge=2, le=43_200)
    max_receives: int = Field(default=5, ge=1)
    # The queue's account, when not the standard chain's: a profile and/or a role to assume.
    profile: str | None = None
    role_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+")
    region: str | None = None


class AzureQueueSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    queue: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    account: str | None = None
    wait_s: int = Field(default=10, ge=0, le=60)
    receivers: int = Field(default=2, ge=1, le=64)
    visibility_timeout_s: int = Field(default=30, ge=2, le=7 * 24 * 3600)
    max_receives: int = Field(default=5, ge=1)


class PubSubSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    subscription: str = Field(pattern=r"^projects/[^/]+/subscriptions/[^/]+$")
    ack_deadline_s: int = Field(default=10, ge=1, le=600)
    batch: int = Field(default=100, ge=1, le=1000)
    receivers: int = Field(default=2, ge=1, le=64)
    wait_s: int = Field(default=10, ge=0, le=60)
    max_receives: int = Field(default=5, ge=1)
    service_account_file: str | None = None
    api_root: str | None = None


class CredentialsSection(BaseModel):
    """One ``[[credentials]]`` entry: the credentials of one location (``s3`` or ``gs``: a URL
    prefix, the longest match wins) or one Azure storage account (``azure_account``).
    Secrets are named by environment variable (``*_env``), never written here."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    s3: str | None = Field(default=None, pattern=r"^s3://[^/]+")
    gs: str | None = Field(default=None, pattern=r"^gs://[^/]+")
    azure_account: str | None = Field(default=None, pattern=r"^[a-z0-9]{3,24}$")
    # S3: any of a profile, a role to assume (with the chain's or the profile's credentials),
    # static keys, an endpoint and a region.
    profile: str | None = None
    role_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+")
    external_id_env: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id_env: str | None = None
    secret_access_key_env: str | None = None
    # GCS: a service-account key file (default: application default credentials).
    service_account_file: str | None = None
    # Azure: one method.
    method: Literal["identity", "key", "sas", "connection_string"] | None = None
    key_env: str | None = None
    sas_env: str | None = None
    connection_string_env: str | None = None
    client_id: str | None = None
    blob_endpoint: str | None = None
    queue_endpoint: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> CredentialsSection:
        targets = [name for name in ("s3", "gs", "azure_account") if getattr(self, name)]
        if len(targets) != 1:
            raise ValueError("each [[credentials]] entry names one of s3, gs or azure_account")
        fields = {
            "s3": {
                "profile",
                "role_arn",
                "external_id_env",
                "endpoint_url",
                "region",
                "access_key_id_env",
                "secret_access_key_env",
            },
            "gs": {"service_account_file"},
            "azure_account": {
                "method",
                "key_env",
                "sas_env",
                "connection_string_env",
                "client_id",
                "blob_endpoint",
                "queue_endpoint",
            },
        }
        foreign = sorted(
            name
            for target, names in fields.items()
            if target != targets[0]
            for name in names
            if getattr(self, name) is not None
        )
        if foreign:
            raise ValueError(f"{', '.join(foreign)} do not apply to {targets[0]} credentials")
        if bool(self.access_key_id_env) != bool(self.secret_access_key_env):
            raise ValueError("access_key_id_env and secret_access_key_env go together")
        needs = {"key": "key_env", "sas": "sas_env", "connection_string": "connection_string_env"}
        if self.azure_account:
            if self.method is None:
                raise ValueError("Azure credentials need a method")
            if self.method in needs and not getattr(self, needs[self.method]):
                raise ValueError(f'method = "{self.method}" needs {needs[self.method]}')
        return self


class DeletesSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sweep_interval: Duration = timedelta(minutes=1)


class DaemonConfig(RoutingConfig):
    kafka: KafkaSection
    catalog: CatalogSection = CatalogSection()
    http: HttpSection = HttpSection()
    copy_: CopySection = Field(default=CopySection(), alias="copy")
    sqs: tuple[SQSSection, ...] = ()
    azure_queues: tuple[AzureQueueSection, ...] = ()
    pubsub: tuple[PubSubSection, ...] = ()
    ingest: IngestAuthSection = IngestAuthSection()
    credentials: tuple[CredentialsSection, ...] = ()
    deletes: DeletesSection = DeletesSection()


def load_daemon_config(path: Path) -> DaemonConfig:
    return validate_config(DaemonConfig, read_toml(path), str(path))
