"""A group of ``replicator run`` processes copying large objects from a directory to an S3
bucket, sharing a PostgreSQL catalog (its own schema) and topics of their own: the bed of the
striping test and of ``benchmarks/striping.py``."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import boto3

from replicator.catalog import open_catalog
from replicator.devstack import free_port
from tests.chaos.daemons import DaemonProcess

MiB = 2**20
ROUTE = "checkpoints"


def s3() -> Any:
    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")


def write_random_file(path: Path, size: int) -> str:
    """``size`` random bytes at ``path``, written in pieces; their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        written = 0
        while written < size:
            data = os.urandom(min(64 * MiB, size - written))
            digest.update(data)
            out.write(data)
            written += len(data)
    return digest.hexdigest()


class StripeFleet:
    """``daemons`` daemons of one group replicating ``source_dir`` to a fresh bucket."""

    def __init__(
        self,
        env: Mapping[str, str],
        work: Path,
        source_dir: Path,
        *,
        daemons: int = 3,
        part_size: str = "64MiB",
        stripe_threshold: str = "1GiB",
        stripe_workers: int = 3,
        memory: str = "384MiB",
    ) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.source_dir = source_dir
        self.bucket = f"stripe-{suffix}"
        self.catalog_url = f"{env['REPLICATOR_POSTGRES_URL']}?schema=stripe_{suffix}"
        self.config = work / f"replicator-{suffix}.toml"
        self.config.write_text(
            f"""
[kafka]
bootstrap = "{env["REPLICATOR_KAFKA_BOOTSTRAP"]}"
group = "replicator-{suffix}"
partitions = 6
changes_topic = "changes-{suffix}"
dlq_topic = "dlq-{suffix}"
parts_topic = "parts-{suffix}"
session_timeout_ms = 2000
heartbeat_interval_ms = 300

[catalog]
url = "{self.catalog_url}"

[http]
host = "127.0.0.1"

[copy]
part_size = "{part_size}"
memory = "{memory}"
stripe_threshold = "{stripe_threshold}"
stripe_workers = {stripe_workers}

[reconcile]
enabled = false

[[routes]]
name = "{ROUTE}"
source = "file://{source_dir}/"
destinations = [{{ url = "s3://{self.bucket}/" }}]
"""
        )
        base = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
        self.env = {
            **{k: v for k, v in {**base, **env}.items() if not k.startswith("REPLICATOR_KAFKA")},
            "REPLICATOR_LOG_FORMAT": "json",
            "REPLICATOR_LOG_LEVEL": "info",
        }
        self.daemons = []
        for index in range(daemons):
            name = f"daemon-{chr(ord('a') + index)}"
            port, ingest_port = free_port(), free_port()
            self.daemons.append(
                DaemonProcess(
                    name,
                    self.config,
                    {
                        **self.env,
                        "REPLICATOR_HTTP__PORT": str(port),
                        "REPLICATOR_HTTP__INGEST_PORT": str(ingest_port),
                    },
                    port,
                    ingest_port,
                    work / f"{name}-{suffix}.log",
                )
            )

    async def start(self) -> None:
        await asyncio.to_thread(s3().create_bucket, Bucket=self.bucket)
        for daemon in self.daemons:
            await daemon.start()
        await asyncio.gather(*(daemon.ready() for daemon in self.daemons))

    async def stop(self) -> None:
        for daemon in self.daemons:
            await daemon.stop()

    async def scan(self) -> None:
        """``replicator scan``: a change event for every object of the source."""
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "replicator", "scan", "--config", str(self.config)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"replicator scan failed: {done.stderr}")

    def coordinator(self) -> DaemonProcess | None:
        """The daemon that published an object's parts first."""
        for daemon in self.daemons:
            if daemon.log.exists() and "parts published for the group" in daemon.log.read_text():
                return daemon
        return None

    async def replicated(self, key: str) -> bool:
        """Whether ``key`` is at the destination and the catalog holds it as fresh there."""
        listed = await asyncio.to_thread(s3().list_objects_v2, Bucket=self.bucket)
        if not any(item["Key"] == key for item in listed.get("Contents", [])):
            return False
        async with await open_catalog(self.catalog_url) as catalog:
            entries = await catalog.ls(ROUTE, key, limit=1)
        return bool(entries) and all(location.fresh for location in entries[0].locations)

    def replica_digest(self, key: str) -> tuple[int, str]:
        """The replica's size and SHA-256, streamed by boto3."""
        body = s3().get_object(Bucket=self.bucket, Key=key)["Body"]
        digest, size = hashlib.sha256(), 0
        for chunk in body.iter_chunks(8 * MiB):
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest()

    def open_uploads(self) -> list[str]:
        listed = s3().list_multipart_uploads(Bucket=self.bucket)
        return [upload["UploadId"] for upload in listed.get("Uploads", [])]

    def part_outcomes(self) -> dict[str, dict[str, int]]:
        """Each daemon's part tasks by outcome, from its log (kept across restarts)."""
        counted: dict[str, dict[str, int]] = {}
        for daemon in self.daemons:
            outcomes: dict[str, int] = {}
            text = daemon.log.read_text() if daemon.log.exists() else ""
            for line in text.splitlines():
                if '"part task"' in line:
                    outcome = line.split('"outcome": "', 1)[1].split(":", 1)[0].split('"', 1)[0]
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
            counted[daemon.name] = outcomes
        return counted


async def parts_copied(http: aiohttp.ClientSession, daemon: DaemonProcess) -> float:
    """The part tasks ``daemon`` copied so far (0 while it does not answer)."""
    return await daemon.metric(http, "replicator_stripe_parts_total", outcome="copied")
