"""``replicator backfill`` and ``verify`` end to end on the test bed: an S3 source (moto) with
mixed sizes and odd keys brought to GCS, Azure and a new file directory, checked by ``verify``
and read back by each ecosystem's own client; dry runs, the delete guard and the replica mark,
and bad routes."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas
from typer.testing import CliRunner

from connectors import open_store
from connectors.azure_credentials import connection_string_fields
from connectors.base import NotFound
from replicator.cli.app import app
from replicator.devstack import StackState
from tests.chaos.oracle import rclone_config
from tests.conftest import unique_name
from tests.independent import read_object
from tests.reconcile.conftest import REPLICATOR, Cli, sync, write_config

MiB = 1024 * 1024
# Safe on every store, and with neighbours that sort differently by key and by path segment.
ODD_KEYS = [
    "odd/unicode/naïve café ñ 日本語",
    "odd/emoji/🚀📦✨",
    "odd/spaces/a key with spaces",
    "odd/plus/a+b+c",
    "odd/percent/a%2Fb%20c",
    "odd/question/what?x=1",
    "odd/hash/anchor#frag",
    "odd/quote'and\"double",
    "odd/ampersand&equals=semicolon;",
    "odd/zero-width\u200bjoiner",
    "odd/combining-e\u0301-vs-\u00e9",
    "order/a-c",
    "order/a/b",
    "order/a0",
]
# 0 B to multipart (the configuration's part size is 1 MiB).
SIZES = [0, 1, 4095, MiB - 1, MiB, MiB + 1, 3 * MiB + 5]


def payload(key: str, size: int) -> bytes:
    seed = key.encode()
    return (seed * (size // max(len(seed), 1) + 1))[:size]


def objects(count: int) -> dict[str, bytes]:
    found = {f"bulk/{i:04d}.bin": payload(str(i), i % 5000) for i in range(count)}
    found.update({f"sizes/{size}.bin": payload(f"s{size}", size) for size in SIZES})
    found.update({key: payload(key, 100) for key in ODD_KEYS})
    return found


async def fill(url: str, content: dict[str, bytes]) -> None:
    async with open_store(url) as store:
        await store.create_container()
        for key, data in content.items():
            await store.put(key, data)


async def keys(url: str) -> list[str]:
    async with open_store(url) as store:
        return [meta.key async for meta in store.list()]


async def create(url: str) -> None:
    async with open_store(url) as store:
        await store.create_container()


def test_backfill_to_three_clouds_is_verified_and_read_back(
    devstack: StackState, cli: Cli, tmp_path: Path
) -> None:
    content = objects(60)
    source = f"s3://{unique_name()}/data/"
    gcs, azure = f"gs://{unique_name()}/copy/", f"az://{unique_name()}/copy/"
    directory = f"file://{tmp_path}/not/yet/there/"
    sync(fill(source, content))
    sync(create(gcs))
    sync(create(azure))

    code, report = cli.invoke("backfill", source, gcs, azure, directory)
    assert code == 0, report
    [summary] = report.values()
    assert summary["compared"] == len(content)
    assert summary["copied"] == 3 * len(content)
    assert summary["failed"] == 0

    for destination, deep in ((gcs, ["--deep"]), (azure, []), (directory, [])):
        code, found = cli.invoke("verify", source, destination, *deep)
        assert code == 0, found
        [result] = found.values()
        assert (result["missing"], result["different"], result["extra"]) == (0, 0, 0)
        assert sorted(sync(keys(destination))) == sorted(content)
    for key in ("sizes/3145733.bin", *ODD_KEYS):
        assert read_object(directory + key) == content[key]

    # An outside reader agrees: rclone reads both ends of every object and compares them.
    remotes = rclone_remotes(tmp_path / "rclone.conf")
    for destination in (f"gcs:{gcs[5:]}", f"az:{azure[5:]}", directory.removeprefix("file://")):
        assert rclone_check(remotes, f"s3:{source[5:]}", destination, tmp_path) == len(content)

    code, again = cli.invoke("backfill", source, gcs, azure, directory)
    assert code == 0
    [summary] = again.values()
    assert (summary["copied"], summary["in_sync"]) == (0, len(content))


def rclone_remotes(path: Path) -> Path:
    """rclone's view of the test bed (TESTBED.md): S3 without HEADs, anonymous GCS, Azurite
    through an account SAS URL."""
    fields = connection_string_fields(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    account, key = fields["AccountName"], fields["AccountKey"]
    sas = generate_account_sas(
        account,
        key,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    endpoint = fields["BlobEndpoint"].rstrip("/").removesuffix(f"/{account}")
    return rclone_config(
        path,
        {
            "s3": {
                "type": "s3",
                "provider": "Other",
                "endpoint": os.environ["AWS_ENDPOINT_URL"],
                "access_key_id": "test",
                "secret_access_key": "test",
                "region": "us-east-1",
                "force_path_style": "true",
                "no_head": "true",
            },
            "gcs": {
                "type": "google cloud storage",
                "anonymous": "true",
                "endpoint": f"{os.environ['STORAGE_EMULATOR_HOST']}/storage/v1/",
            },
            "az": {"type": "azureblob", "sas_url": f"{endpoint}/{account}?{sas}"},
        },
    )


def rclone_check(remotes: Path, source: str, destination: str, work: Path) -> int:
    """``rclone check --download``: how many objects it found equal; fails on any other."""
    combined = work / f"rclone-{uuid.uuid4().hex[:8]}.txt"
    result = subprocess.run(
        [
            *("rclone", "check", source, destination, "--download"),
            *("--config", str(remotes), "--combined", str(combined), "--checkers", "4"),
        ],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = combined.read_text().splitlines()
    assert all(line.startswith("= ") for line in lines), lines
    return len(lines)


def test_verify_finds_missing_different_and_extra(devstack: StackState, cli: Cli) -> None:
    source, dest = f"s3://{unique_name()}/", f"gs://{unique_name()}/"
    sync(fill(source, {"same": b"1", "changed": b"22", "lost": b"333"}))
    sync(create(dest))
    assert cli.invoke("backfill", source, dest)[0] == 0

    async def drift() -> None:
        async with open_store(source) as src, open_store(dest) as dst:
            await src.put("changed", b"four")
            await dst.delete("lost")
            await dst.put("stray", b"not from the source")

    sync(drift())
    code, report = cli.invoke("verify", source, dest)
    assert code == 1
    [result] = report.values()
    assert (result["missing"], result["different"], result["extra"]) == (1, 1, 1)
    assert {(f["key"], f["verdict"]) for f in result["findings"]} == {
        ("changed", "different"),
        ("lost", "missing"),
        ("stray", "extra"),
    }

    code, repaired = cli.invoke("verify", source, dest, "--repair")
    assert code == 0, repaired
    assert read_object(dest + "changed") == b"four"
    assert read_object(dest + "lost") == b"333"
    # Not a replica of ours: left alone (and still reported).
    assert read_object(dest + "stray") == b"not from the source"
    code, report = cli.invoke("verify", source, dest)
    [result] = report.values()
    assert (result["missing"], result["different"], result["extra"]) == (0, 0, 1)


def test_a_dry_run_moves_nothing(devstack: StackState, cli: Cli) -> None:
    content = {f"k{i}": payload(str(i), 1000) for i in range(20)}
    source, dest = f"s3://{unique_name()}/", f"az://{unique_name()}/"
    sync(fill(source, content))
    sync(create(dest))

    code, report = cli.invoke("backfill", source, dest, "--dry-run")
    assert code == 1  # not in sync
    [summary] = report.values()
    assert (summary["missing"], summary["copied"]) == (20, 0)
    assert summary["bytes_to_copy"] == 20_000
    assert summary["cost"]["egress_usd"] == pytest.approx(20_000 / 1e9 * 0.09, rel=1e-3)
    assert summary["cost"]["requests_usd"] > 0
    assert sync(keys(dest)) == []

    with cli.config.open("a") as config:  # a private interconnect, say
        config.write("\n[reconcile.prices.s3]\negress_per_gb = 0.02\n")
    _, report = cli.invoke("backfill", source, dest, "--dry-run")
    [summary] = report.values()
    assert summary["cost"]["egress_usd"] == pytest.approx(20_000 / 1e9 * 0.02, rel=1e-3)


def test_delete_respects_the_guard_and_the_mark(devstack: StackState, cli: Cli) -> None:
    source, dest = f"s3://{unique_name()}/", f"gs://{unique_name()}/"
    sync(fill(source, {f"k{i}": b"x" for i in range(5)}))
    sync(create(dest))
    assert cli.invoke("backfill", source, dest)[0] == 0

    async def delete_sources_and_add_a_stranger() -> None:
        async with open_store(source) as src, open_store(dest) as dst:
            for i in range(4):
                await src.delete(f"k{i}")
            await dst.put("k9-foreign", b"someone else's")

    sync(delete_sources_and_add_a_stranger())
    code, report = cli.invoke("backfill", source, dest)
    [summary] = report.values()
    assert (code, summary["deleted"], summary["extra"]) == (0, 0, 5)

    code, report = cli.invoke("backfill", source, dest, "--delete", "--max-delete", "2")
    [summary] = report.values()
    assert code == 1
    assert (summary["deleted"], summary["delete_refused"]) == (2, 3)

    code, report = cli.invoke("backfill", source, dest, "--delete")
    [summary] = report.values()
    assert code == 0, report
    assert (summary["deleted"], summary["not_ours"]) == (2, 1)
    assert sorted(sync(keys(dest))) == ["k4", "k9-foreign"]


def test_include_and_exclude(devstack: StackState, cli: Cli, tmp_path: Path) -> None:
    source, dest = f"s3://{unique_name()}/", f"file://{tmp_path}/out/"
    sync(fill(source, {"a/1.csv": b"1", "a/2.log": b"2", "b/3.csv": b"3"}))
    code, _ = cli.invoke(
        "backfill", source, dest, "--include", "*.csv", "--exclude", "b/*", "--transfers", "1"
    )
    assert code == 0
    assert sync(keys(dest)) == ["a/1.csv"]


def test_routes_of_the_configuration(devstack: StackState, cli: Cli, tmp_path: Path) -> None:
    source, dest = f"s3://{unique_name()}/in/", f"file://{tmp_path}/routed/"
    sync(fill(source, {"x": b"routed"}))
    routes = f'[[routes]]\nname = "main"\nsource = "{source}"\ndestinations = ["{dest}"]\n'
    write_config(cli.config, cli.catalog_url, routes)

    typo = cli.process("backfill", "--route", "mian")
    _, err = typo.communicate(timeout=60)
    assert typo.returncode == 2
    assert "no route named mian" in err
    assert "Traceback" not in err

    code, report = cli.invoke("backfill", "--route", "main")
    assert code == 0
    assert report["main"]["copied"] == 1
    assert read_object(dest + "x") == b"routed"


def test_a_missing_bucket_is_an_error(devstack: StackState, cli: Cli) -> None:
    process = cli.process("verify", f"s3://{unique_name()}/", f"gs://{unique_name()}/")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2, err
    assert err.startswith("replicator: error:")


def test_dest_object_absent_after_delete(devstack: StackState, cli: Cli) -> None:
    """A deleted replica really is gone from the destination store (not only the listing)."""
    source, dest = f"s3://{unique_name()}/", f"az://{unique_name()}/"
    sync(fill(source, {"gone": b"soon"}))
    sync(create(dest))
    assert cli.invoke("backfill", source, dest)[0] == 0

    async def delete_source() -> None:
        async with open_store(source) as src:
            await src.delete("gone")

    sync(delete_source())
    assert cli.invoke("backfill", source, dest, "--delete")[0] == 0

    async def head() -> None:
        async with open_store(dest) as dst:
            await dst.head("gone")

    with pytest.raises(NotFound):
        sync(head())
    assert os.environ  # the test bed's environment reached the in-process runs


def test_status_and_catalog_show_what_a_backfill_did(devstack: StackState, tmp_path: Path) -> None:
    """Without --config, backfill, status and catalog all use the daemon's default catalog;
    with --config, the configuration's."""
    source, dest = f"s3://{unique_name()}/", f"file://{tmp_path}/out/"
    sync(fill(source, {"k": b"v"}))
    env = {**os.environ, "HOME": str(tmp_path / "home"), "REPLICATOR_LOG_LEVEL": "error"}
    env.pop("REPLICATOR_CATALOG", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*REPLICATOR, *args], capture_output=True, text=True, env=env, timeout=120
        )

    backfilled = run("backfill", source, dest, "--json")
    assert backfilled.returncode == 0, backfilled.stderr
    [route] = json.loads(backfilled.stdout)
    status = run("status", "--json")
    assert status.returncode == 0, status.stderr
    assert any(json.loads(line)["route"].startswith(source) for line in status.stdout.splitlines())
    # The same catalog, named by a configuration (in process: quicker than a process).
    default = f"sqlite:///{tmp_path}/home/.local/state/replicator/catalog.db"
    config = write_config(tmp_path / "same.toml", default)
    listed = CliRunner().invoke(app, ["catalog", "ls", route, "--config", str(config), "--json"])
    assert listed.exit_code == 0, listed.output
    [entry] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert entry["key"] == "k"
    assert {loc["state"] for loc in entry["locations"] if loc["location"] == dest} == {"replicated"}

    other = write_config(tmp_path / "other.toml", f"sqlite:///{tmp_path}/other.db")
    empty = CliRunner().invoke(app, ["status", "--config", str(other)])
    assert empty.stdout.strip() == "no routes in the catalog yet"
