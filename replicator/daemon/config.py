"""The daemon's configuration: a TOML file (optional), overridden by environment variables.

The routing sections are ``replicator.pipeline.rules``'s; the daemon's own::

    [kafka]
    bootstrap = "kafka-1:9092,kafka-2:9092"
    group = "replicator"
    partitions = 12                  # used when the topics are created; fewer is reported
    replication_factor = 3           # likewise (default: the broker's)
    fetch_wait_max_ms = 100          # longest a fetch waits for records (delivery latency)
    # changes_topic = "replicator.changes", dlq_topic = "replicator.dlq",
    # parts_topic = "replicator.parts" (striped copies' parts; consumer group "<group>.parts")

    [kafka.librdkafka]               # any librdkafka property, passed to every client
    "security.protocol" = "SASL_SSL"
    "sasl.mechanism" = "SCRAM-SHA-512"
    "sasl.username" = "replicator"
    "client.id" = "replicator"
    [kafka.librdkafka_env]           # secret ones: read from an environment variable...
    "sasl.password" = "KAFKA_PASSWORD"
    [kafka.librdkafka_file]          # ...or from a file
    # "ssl.key.password" = "/etc/replicator/kafka/key-password"

    [catalog]
    url = "postgresql://replicator@db:5432/replicator"   # default: an embedded SQLite file
    password_env = "REPLICATOR_CATALOG_PASSWORD"        # or password_file = "/run/secrets/pg"

    [http]
    port = 8080                      # admin: /healthz, /readyz, /metrics, catalog queries
    # admin_token_file = "/run/secrets/admin-token"   # optional: admin requests need it
    ingest_port = 8081               # the ingest receivers (/ingest/...), a listener of its own
    ingest_token_env = "REPLICATOR_INGEST_TOKEN"   # ingest endpoints need this shared secret
    # ingest_token_file = "/run/secrets/ingest-token"

    [health]                         # /readyz (see replicator.daemon.readiness)
    interval = "15s"                 # how often dependencies are checked
    timeout = "5s"                   # how long each check may take
    max_lag = 10000                  # not ready while further behind (messages)

    [copy]
    part_size = "auto"               # or a size: parts of every multipart copy
    concurrency = 8
    memory = "512MiB"
    workers = 64                     # events applied at once
    ordered_uploads = true           # GCS: copies up to 64 MiB in order into one session
    retry_budget = 5                 # attempts at a change per destination (backoff between);
                                     # then it is in the failed list (replicator failed)
    retry_failed_after = "30m"       # a change whose budget went on retriable errors (a store
                                     # throttling or down) is tried again this long after;
                                     # "off" leaves every failed change to an operator
    stripe_threshold = "1GiB"        # objects this large are copied by every daemon of the
                                     # group, part by part over the parts topic ("off": no)
    stripe_workers = 8               # parts of such copies this daemon copies at once

    [deletes]
    sweep_interval = "1m"            # how often deletions delayed by a route are carried out

    [uploads]
    sweep_interval = "1h"            # how often the destinations are searched for abandoned
    abandon_after = "24h"            # multipart uploads, aborted once this old

    [reconcile]                      # the safety net (replicator.daemon.reconcile.safety_net)
    enabled = true
    interval = "6h"                  # one daemon of the group reconciles every route this often
    max_delete = 10000               # most deletions one run asks for
    transfers = 16                   # keys compared at once

    [[sqs]]
    queue_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/lake-events"
    receivers = 4                    # receive loops at once (one drains at most ~10 per call)
    visibility_timeout_s = 15        # lease of a received message, extended while publishing;
                                     # a killed daemon's messages come back after this long
    max_receives = 5                 # a message received more often goes to the DLQ
    count_lag_s = 60                 # how stale the queue's message counts may be: the
                                     # watermark stays this far behind "queue seen empty"
    role_arn = "arn:aws:iam::123456789012:role/replicator-events"   # optional; or profile

    [[azure_queues]]                 # Event Grid -> Storage Queue (no public endpoint needed)
    queue = "blob-events"
    account = "lakeprod"             # the queue's storage account; default: the environment's
    visibility_timeout_s = 30        # lease, extended while publishing
    receivers = 2
    max_receives = 5
    count_lag_s = 60

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

Environment overrides (pydantic-settings): every setting can be set or overridden by a
variable named ``REPLICATOR_`` + its path with ``__`` between levels, which wins over the
file: ``REPLICATOR_KAFKA__BOOTSTRAP=broker:9092``, ``REPLICATOR_COPY__WORKERS=128``,
``REPLICATOR_CATALOG__URL=...``; lists and tables take JSON
(``REPLICATOR_ROUTES='[{"name": "lake", "source": "s3://lake/", "destinations":
["gs://lake/"]}]'``). An unknown name under a section (``REPLICATOR_KAFKA__BOOTSTARP``) is an
error, like an unknown key in the file. Without a file, every section takes its default
(Kafka on ``127.0.0.1:9092``, the SQLite catalog ``~/.local/state/replicator/catalog.db``)
and the routes must come from ``REPLICATOR_ROUTES``.

Secrets are never written in the configuration: a setting that needs one names where to read
it, an environment variable (``*_env``) or a file (``*_file``, e.g. a mounted Kubernetes
Secret), and its value is read when the daemon starts, never logged or printed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import structlog
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from connectors.queues import SQS_VISIBILITY_TIMEOUT_S
from replicator.engine.units import parse_part_size, parse_size
from replicator.errors import ConfigError
from replicator.pipeline.bus import (
    CHANGES_TOPIC,
    DLQ_TOPIC,
    check_client_properties,
)
from replicator.pipeline.ingest.auth_settings import IngestAuthSection
from replicator.pipeline.parts import PARTS_TOPIC
from replicator.pipeline.rules import (
    Duration,
    DurationOrOff,
    RoutingConfig,
    config_problems,
    config_value,
    read_toml,
)

log = structlog.get_logger(__name__)

ENV_PREFIX = "REPLICATOR_"
DEFAULT_CATALOG_URL = "sqlite:///~/.local/state/replicator/catalog.db"


def read_secret(
    env_name: str | None,
    file: Path | None,
    what: str,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The secret ``what`` from the variable ``env_name`` or the file ``file`` (one trailing
    newline dropped, as Kubernetes Secrets and ``echo`` leave it); None when neither is set.
    A named file that cannot be read or a named variable that is unset is an error."""
    environ = os.environ if environ is None else environ
    if file is not None:
        try:
            return file.read_text().removesuffix("\n")
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {file}: {exc.strerror}") from None
    if env_name:
        value = environ.get(env_name)
        if value is None:
            raise ConfigError(f"{what}: environment variable {env_name} is not set")
        return value
    return None


def _one_source(env_name: str | None, file: Path | None, what: str) -> None:
    if env_name and file is not None:
        raise ValueError(f"{what}: give {what}_env or {what}_file, not both")


# librdkafka properties the daemon sets itself: correctness depends on them (manual commits,
# idempotent acks=all producer) or they have a setting of their own.
_OWNED_PROPERTIES = {
    "bootstrap.servers": "kafka.bootstrap",
    "metadata.broker.list": "kafka.bootstrap",
    "group.id": "kafka.group",
    "session.timeout.ms": "kafka.session_timeout_ms",
    "heartbeat.interval.ms": "kafka.heartbeat_interval_ms",
    "fetch.wait.max.ms": "kafka.fetch_wait_max_ms",
    "enable.auto.commit": "",
    "enable.auto.offset.store": "",
    "auto.offset.reset": "",
    "enable.idempotence": "",
    "acks": "",
    "request.required.acks": "",
    "logger": "",
    "error_cb": "",
}
LibrdkafkaValue = str | int | float | bool


def _is_secret_property(name: str) -> bool:
    """Properties whose value is a credential: never written in the configuration itself."""
    return any(word in name for word in ("password", "secret", ".pem", "oauthbearer.config"))


class KafkaSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    bootstrap: str = "127.0.0.1:9092"
    group: str = "replicator"
    partitions: int = Field(default=12, ge=1)
    # Replicas of each partition when the daemon creates its topics (None: the broker's
    # default); an existing topic with fewer is reported at start.
    replication_factor: int | None = Field(default=None, ge=1)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    fetch_wait_max_ms: int = Field(default=100, ge=0)
    # How long the daemon waits at start for a broker to answer before giving up (exit 69).
    connect_timeout: Duration = timedelta(seconds=30)
    changes_topic: str = CHANGES_TOPIC
    dlq_topic: str = DLQ_TOPIC
    # The part tasks of striped copies; consumed by the group "<group>.parts".
    parts_topic: str = PARTS_TOPIC
    # Any librdkafka property, passed through to every client: security.protocol, sasl.*,
    # ssl.*, client.id, ... Secret ones are named here by where to read them from.
    librdkafka: dict[str, LibrdkafkaValue] = {}
    librdkafka_env: dict[str, str] = {}
    librdkafka_file: dict[str, Path] = {}

    @model_validator(mode="after")
    def _properties(self) -> KafkaSection:
        problems = []
        named = [*self.librdkafka, *self.librdkafka_env, *self.librdkafka_file]
        for name in sorted(set(named)):
            if named.count(name) > 1:
                problems.append(f"{name} is given more than once")
            if name in _OWNED_PROPERTIES:
                instead = _OWNED_PROPERTIES[name]
                problems.append(
                    f"{name} is set by the daemon"
                    + (f" (use {instead})" if instead else " and cannot be changed")
                )
        for name in sorted(self.librdkafka):
            if _is_secret_property(name):
                problems.append(
                    f"{name} is a secret: name its source in kafka.librdkafka_env or "
                    "kafka.librdkafka_file instead of writing it in the configuration"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def client_properties(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """Every pass-through librdkafka property with its secrets read. Never log it."""
        properties = {
            name: str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in self.librdkafka.items()
        }
        for name, env_name in self.librdkafka_env.items():
            properties[name] = read_secret(env_name, None, f"kafka.{name}", environ) or ""
        for name, path in self.librdkafka_file.items():
            properties[name] = read_secret(None, path, f"kafka.{name}", environ) or ""
        return properties


class CatalogSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = DEFAULT_CATALOG_URL
    # The PostgreSQL password, kept out of the URL.
    password_env: str | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _one_password_source(self) -> CatalogSection:
        _one_source(self.password_env, self.password_file, "catalog.password")
        return self

    def display_url(self) -> str:
        """``url`` fit for a log line: a password written in it is masked."""
        parts = urlsplit(self.url)
        user, at, host = parts.netloc.rpartition("@")
        if ":" not in user:
            return self.url
        return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:***{at}{host}"))

    def resolved_url(self, environ: Mapping[str, str] | None = None) -> str:
        """The URL to connect with: ``url`` with the referenced password in it. Never log it
        (the catalog reports its URL with the password hidden)."""
        password = read_secret(self.password_env, self.password_file, "catalog.password", environ)
        if password is None:
            return self.url
        parts = urlsplit(self.url)
        user, _, host = parts.netloc.rpartition("@")
        if not user:
            raise ConfigError("catalog.url: a password needs a user name (postgresql://USER@...)")
        netloc = f"{user.split(':', 1)[0]}:{quote(password, safe='')}@{host}"
        return urlunsplit(parts._replace(netloc=netloc))


def _catalog_from_text(value: object) -> object:
    """``REPLICATOR_CATALOG`` (also the catalog commands' variable) may hold just the URL."""
    if isinstance(value, str):
        return json.loads(value) if value.lstrip().startswith("{") else {"url": value}
    return value


class HttpSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = "0.0.0.0"
    # The admin listener: health, readiness, metrics and the catalog's queries.
    port: int = Field(default=8080, ge=0, le=65535)
    admin_token_env: str | None = None
    admin_token_file: Path | None = None
    # The ingest listener, apart from the admin one so that only it need be exposed to the
    # clouds' push notifications. Its host defaults to ``host``.
    ingest_host: str | None = None
    ingest_port: int = Field(default=8081, ge=0, le=65535)
    ingest_token_env: str | None = "REPLICATOR_INGEST_TOKEN"
    ingest_token_file: Path | None = None
    sns_confirm_hosts: tuple[str, ...] = ("sns.*.amazonaws.com",)

    @model_validator(mode="after")
    def _one_token_source(self) -> HttpSection:
        if self.ingest_token_file is not None and "ingest_token_env" in self.model_fields_set:
            _one_source(self.ingest_token_env, self.ingest_token_file, "http.ingest_token")
        _one_source(self.admin_token_env, self.admin_token_file, "http.admin_token")
        return self

    def admin_token(self, environ: Mapping[str, str] | None = None) -> str:
        """The token admin requests must carry (``Authorization: Bearer``); empty: none."""
        token = read_secret(
            self.admin_token_env, self.admin_token_file, "http.admin_token", environ
        )
        return token or ""

    def ingest_token(self, environ: Mapping[str, str] | None = None) -> str:
        """The ingest endpoints' shared secret; empty when none is configured (the endpoints
        are then disabled). A file, when named, wins over the default variable."""
        if self.ingest_token_file is not None:
            return read_secret(None, self.ingest_token_file, "http.ingest_token", environ) or ""
        environ = os.environ if environ is None else environ
        return environ.get(self.ingest_token_env, "") if self.ingest_token_env else ""


def _size_or_off(value: str) -> int | None:
    """A size, or None for "off"."""
    return None if value.strip().lower() == "off" else config_value(parse_size, value)


class CopySection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    part_size: str = "auto"
    concurrency: int = Field(default=8, ge=1)
    memory: str = "512MiB"
    workers: int = Field(default=64, ge=1, description="events applied at once")
    retry_budget: int = Field(
        default=5,
        ge=1,
        description="attempts at a change per destination before it counts as failed",
    )
    ordered_uploads: bool = Field(
        default=True,
        description="multipart copies to GCS up to 64 MiB go in order into one upload session "
        "(an ordinary object with an MD5); false: always parallel parts, composed",
    )
    retry_failed_after: DurationOrOff = Field(
        default=timedelta(minutes=30),
        description="a change whose budget was spent on retriable errors is tried again this "
        "long after its last failure, by itself ('off': only by an operator)",
    )
    stripe_threshold: str = Field(
        default="1GiB",
        description="objects of at least this size are copied by every daemon of the group, "
        "their parts spread over the parts topic ('off': each object by one daemon)",
    )
    stripe_workers: int = Field(
        default=8, ge=1, description="parts of striped copies this daemon copies at once"
    )

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

    @field_validator("stripe_threshold")
    @classmethod
    def _stripe_threshold(cls, value: str) -> str:
        threshold = _size_or_off(value)
        if threshold is not None and threshold < 5 * 1024 * 1024:
            raise ValueError("must be at least 5MiB (the smallest part most stores take), or off")
        return value

    @property
    def stripe_threshold_bytes(self) -> int | None:
        """The stripe threshold in bytes; None: striping is off."""
        return _size_or_off(self.stripe_threshold)


#: How far behind a queue service's message counts may be: SQS documents that its approximate
#: counts settle up to a minute after messages stop arriving; Azure's count is approximate too.
#: The watermark of a route fed by the queue stays this far behind the last time it was seen
#: empty (replicator.daemon.watermark).
COUNT_LAG_S = 60


class SQSSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    queue_url: str
    wait_s: int = Field(default=10, ge=0, le=20)
    receivers: int = Field(default=4, ge=1, le=64)
    visibility_timeout_s: int = Field(default=SQS_VISIBILITY_TIMEOUT_S, ge=2, le=43_200)
    max_receives: int = Field(default=5, ge=1)
    count_lag_s: int = Field(default=COUNT_LAG_S, ge=0, le=3600)
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
    count_lag_s: int = Field(default=COUNT_LAG_S, ge=0, le=3600)


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


class HealthSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    interval: Duration = timedelta(seconds=15)
    timeout: Duration = timedelta(seconds=5)
    max_lag: int = Field(default=10_000, ge=0)


class DeletesSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sweep_interval: Duration = timedelta(minutes=1)


class UploadsSection(BaseModel):
    """Multipart uploads abandoned at the destinations (a daemon killed mid-copy whose copy is
    never redone) are aborted once older than ``abandon_after``; copies that run longer than
    that must raise it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sweep_interval: Duration = timedelta(hours=1)
    abandon_after: Duration = timedelta(hours=24)


class ReconcileSection(BaseModel):
    """The safety net: every ``interval`` one daemon of the group (a lease in the catalog)
    compares each route's source with its destinations and publishes a change event for
    every key that drifted (missing, stale, or a replica whose source is gone), which the
    fleet applies under the route's delete policy. The first run is one interval after the
    start; ``enabled = false`` turns it off."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    interval: Duration = timedelta(hours=6)
    #: Most deletions one run asks for; the rest wait for an operator (drift is reported).
    max_delete: int = Field(default=10_000, ge=0)
    transfers: int = Field(default=16, ge=1)
    #: Entries over the price table, by scheme (``reconcile.pricing``): the dry run's
    #: estimate and the cost of what the daemon counted.
    prices: dict[str, dict[str, float]] = {}


class CostsSection(BaseModel):
    """Cost accounting (``replicator.daemon.costs``): what the daemon counted is added to the
    catalog's daily totals every ``flush_interval``, in one transaction. Prices: the
    ``[reconcile.prices]`` entries over the built-in table (``reconcile.pricing``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    flush_interval: Duration = timedelta(minutes=1)


class DaemonConfig(RoutingConfig):
    """The whole configuration, as given: ``DaemonConfig.model_validate(data)`` takes
    ``data`` alone. :func:`load_daemon_config` applies the environment's overrides."""

    kafka: KafkaSection = KafkaSection()
    catalog: Annotated[CatalogSection, NoDecode, BeforeValidator(_catalog_from_text)] = (
        CatalogSection()
    )
    http: HttpSection = HttpSection()
    # ``copy`` would shadow BaseModel.copy: the field has another name, the section does not.
    copy_: CopySection = Field(
        default=CopySection(),
        validation_alias=AliasChoices("copy", f"{ENV_PREFIX.lower()}copy"),
    )
    sqs: tuple[SQSSection, ...] = ()
    azure_queues: tuple[AzureQueueSection, ...] = ()
    pubsub: tuple[PubSubSection, ...] = ()
    ingest: IngestAuthSection = IngestAuthSection()
    credentials: tuple[CredentialsSection, ...] = ()
    deletes: DeletesSection = DeletesSection()
    uploads: UploadsSection = UploadsSection()
    health: HealthSection = HealthSection()
    reconcile: ReconcileSection = ReconcileSection()
    costs: CostsSection = CostsSection()


class _WithEnvironment(BaseSettings, DaemonConfig):
    """A DaemonConfig whose REPLICATOR_* environment variables override the file's values."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file. Only REPLICATOR_* variables count: a field with
        # an alias (copy) would otherwise also be read from an unprefixed COPY variable.
        if isinstance(env_settings, EnvSettingsSource):
            prefix = ENV_PREFIX.lower()
            env_settings.env_vars = {
                name: value
                for name, value in env_settings.env_vars.items()
                if name.lower().startswith(prefix)
            }
        return (env_settings, init_settings)


def _build(path: Path | None, routes: list[dict[str, Any]] | None = None) -> DaemonConfig:
    data: dict[str, Any] = read_toml(path) if path is not None else {}
    if routes is not None:
        data["routes"] = routes
    return _WithEnvironment(**data)


def load_daemon_config(
    path: Path | None, *, routes: list[dict[str, Any]] | None = None
) -> DaemonConfig:
    """The configuration in ``path`` (None: the embedded defaults) with the environment's
    ``REPLICATOR_*`` overrides; one ConfigError listing every problem. ``routes``: routes
    that replace the file's (a command run on URLs uses the file for the rest)."""
    origin = str(path) if path is not None else "configuration (no file)"
    try:
        return _build(path, routes)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {'; '.join(config_problems(exc))}") from None


def configured_catalog_url(path: Path | None, environ: Mapping[str, str] | None = None) -> str:
    """The catalog the daemon runs with under the configuration ``path`` (None: without one),
    with ``REPLICATOR_CATALOG__URL`` over the file as for the daemon; the routes are not
    needed (``replicator status``, ``replicator catalog``)."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        section = read_toml(path).get("catalog", {})
        data = dict(section) if isinstance(section, dict) else {}
    override = env.get(f"{ENV_PREFIX}CATALOG__URL")
    if override:
        data["url"] = override
    origin = str(path) if path is not None else "configuration (no file)"
    try:
        catalog = CatalogSection(**data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {'; '.join(config_problems(exc))}") from None
    return catalog.resolved_url(env)


def check_config(path: Path | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every problem of the configuration the daemon would run with, at once: invalid or
    unknown settings (file and environment), then secrets that cannot be read. Values are
    never part of a problem's text."""
    try:
        config = _build(path)
    except ValidationError as exc:
        return config_problems(exc)
    except ConfigError as exc:
        return [str(exc)]
    problems = []
    try:
        config.catalog.resolved_url(environ)
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        problems += check_client_properties(config.kafka.client_properties(environ))
    except ConfigError as exc:
        problems.append(str(exc))
    for read in (config.http.ingest_token, config.http.admin_token):
        try:
            read(environ)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems
