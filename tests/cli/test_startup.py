"""The command line imports only what the command it runs needs.

SQLAlchemy and Alembic cost ~0.4 s of CPU to import, which a `cp` or `--help` must not pay
(they are imported by the commands that open a catalog, when they do). A `cp` between two
stores imports those two stores' SDKs and nothing of the daemon: no other cloud's SDK, no
Kafka client, no catalog library, no metrics registry, not the test bed. Every CPU-second a
one-object copy spends starting is paid again by each process a script or a benchmark runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import StoreFactory

HEAVY = ("sqlalchemy", "alembic")

# What no `cp` needs, whatever its stores: the daemon's libraries and the test bed.
DAEMON_ONLY = (
    "sqlalchemy",
    "alembic",
    "aiosqlite",
    "asyncpg",
    "confluent_kafka",
    "prometheus_client",
    "pydantic_settings",
    "replicator.devstack",
    "replicator.catalog.repository",
    "replicator.daemon",
    "replicator.pipeline",
)
# Libraries of the terminal's niceties, which only --help and usage errors draw with (typer's
# help uses rich): the logs of a command never do.
TERMINAL_ONLY = ("rich", "pygments")
# The SDKs (and their own heavy dependencies) each store's connector imports.
SDKS = {
    "s3": ("aiobotocore", "botocore", "boto3", "s3transfer"),
    "gs": ("gcloud", "jwt"),
    "az": ("azure", "isodate"),
    "file": (),
}

# Runs the real command line in process and writes the names of the modules loaded by the
# time it exits (whatever way it exits) to the file named by the first argument.
PROBE = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "replicator"
runpy.run_module("replicator", run_name="__main__", alter_sys=True)
"""


def modules_loaded_by(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules loaded by ``replicator ARGS`` run to its end (it must succeed)."""
    out = tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(out.read_text()))


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The packages of ``packages`` of which ``modules`` holds the package or a submodule."""
    return sorted(p for p in packages if any(m == p or m.startswith(p + ".") for m in modules))


def test_the_command_line_imports_no_catalog_library_at_start() -> None:
    probe = (
        f"import sys, replicator.cli.app; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_help_imports_no_store_sdk_and_nothing_of_the_daemon(tmp_path: Path) -> None:
    modules = modules_loaded_by(tmp_path, "--help")
    every_sdk = tuple(sdk for sdks in SDKS.values() for sdk in sdks)
    assert loaded(modules, (*every_sdk, "aiohttp", *DAEMON_ONLY)) == []


@pytest.mark.parametrize(
    ("source_scheme", "dest_scheme"), [("s3", "gs"), ("s3", "az"), ("file", "s3"), ("gs", "file")]
)
async def test_cp_imports_its_two_stores_sdks_and_nothing_else(
    source_scheme: str, dest_scheme: str, store_factory: StoreFactory, tmp_path: Path
) -> None:
    source = await store_factory(source_scheme)
    dest = await store_factory(dest_scheme)
    await source.put("one", b"x")
    modules = modules_loaded_by(tmp_path, "cp", source.url_for("one"), dest.url_for("copy"))
    assert (await dest.head("copy")).size == 1  # the probe saw the whole command
    others = tuple(
        sdk
        for scheme, sdks in SDKS.items()
        if scheme not in (source_scheme, dest_scheme)
        for sdk in sdks
    )
    assert loaded(modules, others + DAEMON_ONLY + TERMINAL_ONLY) == []
    used = SDKS[source_scheme] + SDKS[dest_scheme]
    assert loaded(modules, used)  # the probe sees the modules the copy did import


# What a backfill, which records into the catalog, needs none of: the daemon's receivers, queue
# consumers and Kafka's consumer side, and Alembic once the catalog's schema is up to date.
NOT_FOR_BACKFILL = (
    "alembic",
    "mako",
    "replicator.pipeline.ingest.receivers",
    "replicator.pipeline.ingest.sqs",
    "replicator.pipeline.ingest.verification",
    "replicator.daemon.service",
    "replicator.daemon.http",
    "replicator.devstack",
    *TERMINAL_ONLY,
)


async def test_backfill_imports_no_receiver_nor_migration_tool_once_the_catalog_is_current(
    store_factory: StoreFactory, tmp_path: Path
) -> None:
    source = await store_factory("s3")
    dest = await store_factory("az")
    await source.put("dir/one", b"x")
    catalog = {"REPLICATOR_CATALOG__URL": f"sqlite:///{tmp_path}/catalog.db"}
    command = ("backfill", source.url_for("dir/"), dest.url_for("dir/"), "--json")
    first = modules_loaded_by(tmp_path, *command, env=catalog)
    assert "alembic" in first  # a new catalog is created by its migrations
    modules = modules_loaded_by(tmp_path, *command, env=catalog)
    assert (await dest.head("dir/one")).size == 1
    others = SDKS["gs"] + SDKS["file"]
    assert loaded(modules, others + NOT_FOR_BACKFILL) == []


async def test_a_recursive_cp_imports_no_catalog_nor_kafka(
    store_factory: StoreFactory, tmp_path: Path
) -> None:
    """``cp -r`` shares backfill's compare engine but records nothing: none of the catalog's,
    the applier's or Kafka's libraries."""
    source = await store_factory("s3")
    dest = await store_factory("az")
    await source.put("dir/one", b"x")
    modules = modules_loaded_by(tmp_path, "cp", "-r", source.url_for("dir/"), dest.url_for("dir/"))
    assert (await dest.head("dir/one")).size == 1
    not_for_cp = tuple(
        m for m in DAEMON_ONLY if m not in ("replicator.daemon", "replicator.pipeline")
    )
    daemon_side = ("replicator.daemon.applier", "replicator.pipeline.ingest.publisher")
    others = SDKS["gs"] + SDKS["file"]
    assert loaded(modules, others + not_for_cp + daemon_side + TERMINAL_ONLY) == []
