"""One chaos run, start to finish (``python -m tests.chaos`` and ``test_chaos.py`` call it).

1. A private test bed (``bed``): emulators, PostgreSQL, a durable broker, fault proxies.
2. Two sources: an S3 bucket notifying a real SQS queue, a GCS bucket whose notifications
   are pushed to the daemons' receiver; five destinations on GCS, Azure (two accounts, one
   through a SAS), S3 and a file system.
3. Two ``replicator run`` daemons in one consumer group on the PostgreSQL catalog.
4. The mutations (``workload``) paced over the run's duration while: a share of every store
   request fails at the proxies; one daemon is SIGKILLed at random intervals and restarted;
   the broker is SIGKILLed and restarted once, PostgreSQL once; the destinations' histories
   and the daemons' watermarks are sampled (``observer``).
5. Quiescence: no more mutations, kills or store faults, until every destination and the
   catalog agree with the sources (the convergence time), or a deadline.
6. The judgement (``oracle``), into a ``ChaosReport``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import boto3
from azure.storage.blob import (
    AccountSasPermissions,
    BlobServiceClient,
    ResourceTypes,
    generate_account_sas,
)
from confluent_kafka.admin import AdminClient, NewTopic

from replicator.devstack import AZURE_DEV_ACCOUNT, free_port
from tests.chaos.bed import SAS_ACCOUNT, ChaosBed
from tests.chaos.daemons import DaemonProcess
from tests.chaos.observer import DestinationHistory, Sampler, StatusSampler
from tests.chaos.oracle import (
    FinalState,
    catalog_disagreements,
    catalog_text,
    dead_letters,
    final_state,
    final_versions,
    history_violations,
    log_problems,
    rclone_config,
    rclone_differences,
    secret_leaks,
    watermark_violations,
)
from tests.chaos.proxy import FaultProfile
from tests.chaos.stores import (
    AzureDestination,
    Destination,
    FileDestination,
    GCSDestination,
    S3Destination,
)
from tests.chaos.workload import Mutator, Plan, Store, plan

# The durable broker (Tansu's S3 storage, one object per produced batch) lists a partition's
# batches on every fetch, and answers with what it could read within the fetch's wait: a
# partition grown to thousands of batches is answered with nothing, every time, and the run
# stalls (README.md, "Observed in the test bed"). More partitions keep each one short, and a
# longer fetch wait than the daemon's default (100 ms) lets one fetch bring many batches (at
# 2,500 batches: 28 a second with 3 s, 6 with 500 ms, none with 5 ms).
CHANGES_TOPIC, DLQ_TOPIC, PARTITIONS = "replicator.changes", "replicator.dlq", 16
FETCH_WAIT_MS = 3000
UNAPPLIED = ("pending", "failed", "stale", "delete_paused")


@dataclass(frozen=True)
class ChaosSettings:
    work: Path
    seed: int = 7
    mutations: int = 2000
    minutes: float = 10.0
    failing_share: float = 0.2
    # Seconds between two kills of the doomed daemon, and how long it stays down.
    kill_every_s: tuple[float, float] = (20.0, 40.0)
    down_s: tuple[float, float] = (1.0, 5.0)
    # When the broker and PostgreSQL are restarted, as fractions of the mutation phase.
    broker_restart_at: float = 0.4
    catalog_restart_at: float = 0.7
    large_share: float = 0.01
    max_large: int = 20
    converge_timeout_s: float = 600.0
    leftover_grace_s: float = 60.0
    workers: int = 16
    # The large objects (17-24 MiB) are striped over the daemons from this size ("off": not).
    stripe_threshold: str = "16MiB"


@dataclass
class ChaosReport:
    settings: ChaosSettings
    figures: dict[str, Any] = field(default_factory=dict)
    findings: dict[str, list[str]] = field(default_factory=dict)

    # The acceptance checks: each must be empty.
    CHECKS = (
        "lost",
        "mixed",
        "stale",
        "extra",
        "rclone differences",
        "leftovers",
        "older over newer",
        "partial visible",
        "watermark violations",
        "catalog disagreements",
        "dead letters",
        "crashes",
        "tracebacks",
        "secret leaks",
        "mutations failed",
        "oracle errors",
    )

    def problems(self) -> dict[str, int]:
        return {name: len(self.findings.get(name, [])) for name in self.CHECKS}

    @property
    def passed(self) -> bool:
        return not any(self.problems().values())

    def render(self, examples: int = 5) -> str:
        lines = [
            f"chaos run: seed {self.settings.seed}, {self.settings.mutations} mutations, "
            f"{self.settings.minutes} min, {self.settings.failing_share:.0%} of store "
            "requests failing"
        ]
        lines += [f"  {name}: {value}" for name, value in self.figures.items()]
        lines.append("checks:")
        for name, count in self.problems().items():
            lines.append(f"  {name}: {count}")
            lines += [f"      {item}" for item in self.findings.get(name, [])[:examples]]
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


class ChaosRun:
    def __init__(self, settings: ChaosSettings) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)
        suffix = uuid.uuid4().hex[:6]
        self.s3_source = f"chaos-s3src-{suffix}"
        self.gcs_source = f"chaos-gssrc-{suffix}"
        self.s3_copy = f"chaos-s3copy-{suffix}"  # the S3 route's GCS and Azure destinations
        self.gcs_copy = f"chaos-gscopy-{suffix}"  # the GCS route's S3 and Azure destinations
        self.work = settings.work
        self.file_copy = self.work / "file-copy"
        self.kills = 0
        self.kill_log: list[str] = []

    # -- set-up --------------------------------------------------------------------------------

    def _prepare_stores(self, bed: ChaosBed) -> str:
        env = bed.direct_env
        s3 = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="chaos",
            aws_secret_access_key="chaos-oracle",
        )
        sqs = boto3.client(
            "sqs",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="chaos",
            aws_secret_access_key="chaos-oracle",
        )
        for bucket in (self.s3_source, self.gcs_copy):
            s3.create_bucket(Bucket=bucket)
        queue_url = sqs.create_queue(QueueName=f"{self.s3_source}-events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        s3.put_bucket_notification_configuration(
            Bucket=self.s3_source,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": arn["Attributes"]["QueueArn"],
                        "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                    }
                ]
            },
        )
        for bucket in (self.gcs_source, self.s3_copy):
            request = urllib.request.Request(
                f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b?project=chaos",
                data=json.dumps({"name": bucket}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            urllib.request.urlopen(request, timeout=30).close()
        BlobServiceClient.from_connection_string(
            env["AZURE_STORAGE_CONNECTION_STRING"]
        ).create_container(self.s3_copy)
        BlobServiceClient.from_connection_string(
            env["CHAOS_SAS_CONNECTION_STRING"]
        ).create_container(self.gcs_copy)
        self.file_copy.mkdir(parents=True, exist_ok=True)
        admin = AdminClient({"bootstrap.servers": env["REPLICATOR_KAFKA_BOOTSTRAP"]})
        futures = admin.create_topics([NewTopic(CHANGES_TOPIC, PARTITIONS), NewTopic(DLQ_TOPIC, 1)])
        for future in futures.values():
            future.result(timeout=30)
        return str(queue_url)

    def _routes(self, bed: ChaosBed) -> dict[str, tuple[str, list[str]]]:
        return {
            "s3-lake": (
                f"s3://{self.s3_source}/",
                [f"gs://{self.s3_copy}/", f"az://{self.s3_copy}/", f"file://{self.file_copy}/"],
            ),
            "gcs-lake": (
                f"gs://{self.gcs_source}/",
                [f"s3://{self.gcs_copy}/", f"az://{self.gcs_copy}@{SAS_ACCOUNT}/"],
            ),
        }

    def _config(self, bed: ChaosBed, queue_url: str) -> Path:
        env = bed.direct_env
        postgres = env["REPLICATOR_POSTGRES_URL"]
        routes = "\n".join(
            f"""
[[routes]]
name = "{name}"
source = "{source}"
destinations = {json.dumps(destinations)}
max_deletes_per_minute = 1000000
"""
            for name, (source, destinations) in self._routes(bed).items()
        )
        text = f"""
[kafka]
bootstrap = "{env["REPLICATOR_KAFKA_BOOTSTRAP"]}"
group = "chaos"
partitions = {PARTITIONS}
changes_topic = "{CHANGES_TOPIC}"
dlq_topic = "{DLQ_TOPIC}"
session_timeout_ms = 2000
heartbeat_interval_ms = 300
fetch_wait_max_ms = {FETCH_WAIT_MS}

[catalog]
url = "{postgres}"
password_env = "CHAOS_CATALOG_PASSWORD"

[http]
host = "127.0.0.1"
port = 0

[copy]
workers = {self.settings.workers}
concurrency = 4
memory = "256MiB"
# A fifth of every store request fails here, so five failed attempts at one change (the
# default budget, each attempt retrying its requests) happen now and then: such a change goes
# to the failed list, and a key whose last change it was converges only once the daemon
# sends it back (after retry_failed_after, 30 minutes by default).
retry_budget = 20
retry_failed_after = "20s"
# fake-gcs-server appends a chunk sent twice (a retry after a reset that came once the chunk
# was stored) and takes a session's completion whatever size it declares, so under these
# faults an ordered upload can publish a wrong object there for the moment the copy takes to
# find and remove it, which real GCS (chunks placed at their offsets, a completion of the
# wrong size refused) never does: GCS destinations here get parallel parts, composed.
ordered_uploads = false
# The workload's large objects are copied part by part by every daemon (striped), so that
# striped copies meet the kills, the restarts and the failing requests too.
stripe_threshold = "{self.settings.stripe_threshold}"
stripe_workers = 4

[deletes]
sweep_interval = "5s"

# An upload a killed copy left is aborted when its key is copied again in parts or deleted;
# one whose key was then written by a single put waits for the janitor, whose thresholds are
# scaled down to the run (no copy here takes 45 s).
[uploads]
sweep_interval = "5s"
abandon_after = "45s"

[[sqs]]
queue_url = "{queue_url}"
wait_s = 1
receivers = 2
count_lag_s = 0  # moto's message counts are exact

[[credentials]]
azure_account = "{SAS_ACCOUNT}"
method = "sas"
sas_env = "CHAOS_AZURE_SAS"
blob_endpoint = "{bed.proxies.urls["azure"]}/{SAS_ACCOUNT}"
{routes}
"""
        path = self.work / "replicator.toml"
        path.write_text(text)
        return path

    def _destinations(self, bed: ChaosBed) -> dict[str, tuple[Destination, Store]]:
        env = bed.direct_env
        discarded = bed.proxies.azure_discarded
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
        found: list[tuple[Destination, Store]] = [
            (GCSDestination(env["STORAGE_EMULATOR_HOST"], self.s3_copy, self._session), "s3"),
            (
                AzureDestination(
                    env["AZURE_STORAGE_CONNECTION_STRING"], self.s3_copy, "", discarded
                ),
                "s3",
            ),
            (FileDestination(self.file_copy), "s3"),
            (S3Destination(env["AWS_ENDPOINT_URL"], self.gcs_copy), "gs"),
            (
                AzureDestination(
                    env["CHAOS_SAS_CONNECTION_STRING"], self.gcs_copy, f"@{SAS_ACCOUNT}", discarded
                ),
                "gs",
            ),
        ]
        return {destination.url: (destination, store) for destination, store in found}

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> ChaosReport:
        settings = self.settings
        report = ChaosReport(settings)
        profile = FaultProfile.failing_share(settings.failing_share)
        began = time.monotonic()
        bed = await asyncio.to_thread(
            ChaosBed.start, self.work / "bed", seed=settings.seed, profile=profile
        )
        daemons: list[DaemonProcess] = []
        destinations: dict[str, tuple[Destination, Store]] = {}
        try:
            queue_url = await asyncio.to_thread(self._prepare_stores, bed)
            config = self._config(bed, queue_url)
            for name in ("daemon-a", "daemon-b"):
                port, ingest_port = free_port(), free_port()
                env = {
                    **{
                        k: v
                        for k, v in os.environ.items()
                        if not k.startswith(("AWS_", "AZURE_", "STORAGE_EMULATOR", "REPLICATOR_"))
                    },
                    **bed.daemon_env,
                    "REPLICATOR_HTTP__PORT": str(port),
                    "REPLICATOR_HTTP__INGEST_PORT": str(ingest_port),
                }
                daemons.append(
                    DaemonProcess(name, config, env, port, ingest_port, self.work / f"{name}.log")
                )
            for daemon in daemons:
                await daemon.start()
            await asyncio.gather(*(daemon.ready() for daemon in daemons))
            report.figures["set-up (s)"] = round(time.monotonic() - began, 1)
            destinations = self._destinations(bed)
            await self._chaos(bed, daemons, destinations, report)
        finally:
            for daemon in daemons:
                await daemon.stop()
            for destination, _ in destinations.values():
                close = getattr(destination, "close", None)
                if close is not None:
                    close()
            if hasattr(self, "_session"):
                await self._session.close()
            await asyncio.to_thread(bed.close)
        self._judge_processes(daemons, report)
        report.figures["whole run (s)"] = round(time.monotonic() - began, 1)
        return report

    async def _chaos(
        self,
        bed: ChaosBed,
        daemons: list[DaemonProcess],
        destinations: dict[str, tuple[Destination, Store]],
        report: ChaosReport,
    ) -> None:
        settings = self.settings
        the_plan = plan(
            settings.seed,
            settings.mutations,
            large_share=settings.large_share,
            max_large=settings.max_large,
        )
        versions = the_plan.versions()
        key_ids = {(store, name): key_id for (store, key_id), name in the_plan.keys.items()}
        histories = {
            url: DestinationHistory(destination, store)
            for url, (destination, store) in destinations.items()
        }
        sampler = Sampler(list(histories.values()), versions, key_ids)
        status = StatusSampler(lambda: [(d.name, d.url) for d in daemons if d.alive])
        mutator = Mutator(
            the_plan,
            s3_endpoint=bed.direct_env["AWS_ENDPOINT_URL"],
            s3_bucket=self.s3_source,
            gcs_host=bed.direct_env["STORAGE_EMULATOR_HOST"],
            gcs_bucket=self.gcs_source,
            push_targets=lambda: [d.ingest_url for d in daemons if d.alive],
            ingest_token=bed.canaries.ingest_token,
        )
        stop_sampling, stop_chaos = asyncio.Event(), asyncio.Event()
        samplers = [
            asyncio.create_task(sampler.run(stop_sampling)),
            asyncio.create_task(status.run(stop_sampling)),
        ]
        duration = settings.minutes * 60
        started = time.monotonic()
        chaos = asyncio.create_task(self._faults(bed, daemons[1], duration, stop_chaos))
        samplers.append(asyncio.create_task(self._supervise(daemons, stop_sampling)))
        try:
            await mutator.run(duration)
            mutated = time.monotonic()
            stop_chaos.set()
            await chaos
            chaos_stats = await asyncio.to_thread(bed.proxies.stats)
            await asyncio.to_thread(bed.proxies.set_profile, FaultProfile())
            converged = await self._converge(bed, histories, the_plan, status, since=time.time())
            settled = time.monotonic()
            if converged:
                await self._leftovers_cleaned(histories, bed.direct_env["REPLICATOR_POSTGRES_URL"])
        finally:
            stop_chaos.set()
            stop_sampling.set()
            await asyncio.gather(*samplers, chaos, return_exceptions=True)
        proxy_stats = await asyncio.to_thread(bed.proxies.stats)
        self._dump(the_plan, histories, status, proxy_stats)
        judging = time.monotonic()
        await self._judge(bed, the_plan, histories, status, mutator, report)
        report.figures["judgement (s)"] = round(time.monotonic() - judging, 1)
        # What the proxies did while the faults were on (the quiescence has none).
        faults: Counter[str] = Counter()
        requests = 0
        for stats in chaos_stats.values():
            faults.update(stats["faults"])
            requests += stats["requests"]
        kinds = Counter(f"{m.store} {m.version.kind}" for m in the_plan.mutations)
        report.figures.update(
            {
                "mutations": len(the_plan.mutations),
                "mutations by kind": dict(sorted(kinds.items())),
                "keys": len(the_plan.keys),
                "bytes written to sources": sum(m.version.size for m in the_plan.mutations),
                "mutation phase (s)": round(mutated - started, 1),
                "daemon kills": self.kills,
                "broker restarts": bed.broker_restarts,
                "catalog restarts": bed.catalog_restarts,
                "store and queue requests during the faults": requests,
                "faults injected": dict(sorted(faults.items())),
                "failing requests": sum(n for k, n in faults.items() if k != "latency"),
                "converged": converged,
                "convergence time (s)": round(settled - mutated, 1) if converged else None,
                "watermark samples": len(status.samples),
                "destination samples": sum(len(h.snapshots) for h in histories.values()),
                "destination reads while running": sum(h.reads for h in histories.values()),
                "gcs pushes": mutator.push.sent,
                "gcs pushes retried": mutator.push.retried,
                "gcs pushes delivered twice": mutator.push.duplicated,
                "kills": self.kill_log,
            }
        )

    async def _faults(
        self, bed: ChaosBed, doomed: DaemonProcess, duration: float, stop: asyncio.Event
    ) -> None:
        """Kill ``doomed`` at random intervals (restarting it after a short pause); restart
        the broker and PostgreSQL once each, at their planned points of the phase."""
        settings = self.settings
        began = time.monotonic()
        planned = sorted(
            [
                (settings.broker_restart_at * duration, "broker"),
                (settings.catalog_restart_at * duration, "catalog"),
            ]
        )
        next_kill = began + self.rng.uniform(*settings.kill_every_s)
        while not stop.is_set():
            now = time.monotonic()
            if planned and now - began >= planned[0][0]:
                _, what = planned.pop(0)
                if what == "broker":
                    await asyncio.to_thread(bed.restart_broker, self.rng.uniform(0.5, 3.0))
                else:
                    await asyncio.to_thread(bed.restart_postgres, self.rng.uniform(0.5, 3.0))
                self.kill_log.append(f"{what} restarted at {now - began:.1f} s ({time.time():.3f})")
                continue
            if now >= next_kill:
                await doomed.kill()
                self.kills += 1
                down = self.rng.uniform(*settings.down_s)
                self.kill_log.append(
                    f"{doomed.name} killed at {now - began:.1f} s ({time.time():.3f}) "
                    f"for {down:.1f} s"
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), down)
                await doomed.start()
                next_kill = time.monotonic() + self.rng.uniform(*settings.kill_every_s)
                continue
            wake = min([next_kill] + [began + at for at, _ in planned]) - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.05, wake))
        if not doomed.alive:
            await doomed.start()

    async def _supervise(self, daemons: list[DaemonProcess], stop: asyncio.Event) -> None:
        """Start again, after a pause, a daemon that went down by no doing of the run, as
        its supervisor (Kubernetes, systemd) would."""
        while not stop.is_set():
            for daemon in daemons:
                if daemon.needs_restart():
                    await asyncio.sleep(1.0)
                    await daemon.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def _converge(
        self,
        bed: ChaosBed,
        histories: dict[str, DestinationHistory],
        the_plan: Plan,
        status: StatusSampler,
        *,
        since: float,
    ) -> bool:
        """Wait until every destination holds its source's final state and the catalog has
        nothing unapplied; False at the deadline."""
        finals = final_versions(the_plan.mutations)
        deadline = time.monotonic() + self.settings.converge_timeout_s
        postgres = bed.direct_env["REPLICATOR_POSTGRES_URL"]
        while time.monotonic() < deadline:
            if self._stores_agree(histories, finals, since) and await self._catalog_settled(
                postgres
            ):
                return True
            await asyncio.sleep(2)
        return False

    async def _leftovers_cleaned(
        self, histories: dict[str, DestinationHistory], postgres: str
    ) -> None:
        """Give the daemons ``leftover_grace_s`` after convergence to clean what killed
        copies left, at the stores and in the upload journal (their janitors run every few
        seconds); the oracle counts what remains."""
        deadline = time.monotonic() + self.settings.leftover_grace_s
        while time.monotonic() < deadline:
            found = []
            for history in histories.values():
                with contextlib.suppress(Exception):
                    found += await history.destination.leftovers()
            if not found and await self._journal_empty(postgres):
                return
            await asyncio.sleep(2)

    @staticmethod
    async def _journal_empty(postgres: str) -> bool:
        try:
            connection = await asyncpg.connect(postgres)
        except (OSError, asyncpg.PostgresError):
            return False
        try:
            count = await connection.fetchval("SELECT count(*) FROM uploads")
        finally:
            await connection.close()
        return count == 0

    @staticmethod
    def _stores_agree(
        histories: dict[str, DestinationHistory],
        finals: dict[tuple[Store, str], Any],
        since: float,
    ) -> bool:
        for history in histories.values():
            if not history.snapshots or history.snapshots[-1] < since:
                return False
            expected = {key: v for (store, key), v in finals.items() if store == history.source}
            for key, version in expected.items():
                changes = history.changes.get(key)
                state = changes[-1][1] if changes else None
                if version.kind == "delete":
                    if state is not None:
                        return False
                elif state is None or not state[0] <= version.n <= state[1]:
                    return False
            for key, changes in history.changes.items():
                if key not in expected and changes[-1][1] is not None:
                    return False
            if history.current_staging:
                return False
        return True

    @staticmethod
    async def _catalog_settled(postgres: str) -> bool:
        try:
            connection = await asyncpg.connect(postgres)
        except (OSError, asyncpg.PostgresError):
            return False
        try:
            count = await connection.fetchval(
                "SELECT count(*) FROM replicas WHERE state = ANY($1::text[])", list(UNAPPLIED)
            )
        finally:
            await connection.close()
        return count == 0

    # -- judgement -----------------------------------------------------------------------------

    def _dump(
        self,
        the_plan: Plan,
        histories: dict[str, DestinationHistory],
        status: StatusSampler,
        proxy_stats: dict[str, Any],
    ) -> None:
        """Everything sampled, for a post-mortem (``run-data.json`` in the work directory)."""
        data = {
            "mutations": [
                {
                    "index": m.index,
                    "store": m.store,
                    "key": m.key,
                    "n": m.version.n,
                    "kind": m.version.kind,
                    "size": m.version.size,
                    "started": m.started,
                    "done": m.done,
                    "notified": m.notified,
                    "event_time": m.event_time,
                    "generation": m.generation,
                    "error": m.error,
                }
                for m in the_plan.mutations
            ],
            "destinations": {
                url: {
                    "source": history.source,
                    "snapshots": history.snapshots,
                    "snapshot_ends": history.snapshot_ends,
                    "changes": history.changes,
                    "unidentified": history.unidentified,
                }
                for url, history in histories.items()
            },
            "watermarks": [sample.__dict__ for sample in status.samples],
            "proxies": proxy_stats,
            "kills": self.kill_log,
        }
        (self.work / "run-data.json").write_text(json.dumps(data, default=str))

    async def _judge(
        self,
        bed: ChaosBed,
        the_plan: Plan,
        histories: dict[str, DestinationHistory],
        status: StatusSampler,
        mutator: Mutator,
        report: ChaosReport,
    ) -> None:
        """Every check of the oracle; one that cannot be carried out is itself a finding
        (``oracle errors``), never the end of the judgement."""
        findings = report.findings
        errors = findings.setdefault("oracle errors", [])
        versions = the_plan.versions()
        finals = final_versions(the_plan.mutations)
        postgres = bed.direct_env["REPLICATOR_POSTGRES_URL"]

        async def check(name: str, step: Any) -> Any:
            try:
                return await step
            except Exception as exc:
                errors.append(f"{name}: {type(exc).__name__}: {exc}"[:2000])
                return None

        totals = FinalState()
        for name in ("lost", "stale", "mixed", "extra", "older over newer", "partial visible"):
            findings.setdefault(name, [])
        for url, history in histories.items():
            state = await check(
                f"final state of {url}",
                final_state(history.destination, history.source, versions),
            )
            if state is not None:
                totals.checked += state.checked
                for name in ("lost", "stale", "mixed", "extra"):
                    findings[name] += getattr(state, name)
            findings["older over newer"] += history_violations(history)
            findings["partial visible"] += history.unidentified
            left = await check(f"leftovers of {url}", history.destination.leftovers())
            findings.setdefault("leftovers", []).extend(left or [])
        report.figures["objects compared byte for byte"] = totals.checked
        dropped = await check("Azure blocks", asyncio.to_thread(bed.proxies.azure_discarded))
        report.figures["Azure blocks a Put Blob dropped (Azurite keeps them)"] = len(dropped or ())
        findings["rclone differences"] = (
            await check("rclone", asyncio.to_thread(self._rclone, bed)) or []
        )
        by_source: dict[str, list[Any]] = {}
        for mutation in the_plan.mutations:
            by_source.setdefault(mutation.store, []).append(mutation)
        findings["watermark violations"] = (
            await check(
                "watermark",
                asyncio.to_thread(watermark_violations, status.samples, histories, by_source),
            )
            or []
        )
        destinations = {url: history.source for url, history in histories.items()}
        findings["catalog disagreements"] = (
            await check("catalog", catalog_disagreements(postgres, destinations, finals)) or []
        )
        letters = (
            await check(
                "dead letters",
                asyncio.to_thread(
                    dead_letters, bed.direct_env["REPLICATOR_KAFKA_BOOTSTRAP"], DLQ_TOPIC
                ),
            )
            or []
        )
        findings["dead letters"] = [letter.reason[:300] for letter in letters]
        findings["mutations failed"] = [
            f"{m.store} {m.key!r} {m.version.kind} {m.version.n}: {m.error}"
            for m in the_plan.mutations
            if m.error
        ]
        self._answers = [
            *status.answers,
            *mutator.push.responses,
            *(letter.value.decode(errors="replace") for letter in letters),
            *(
                json.dumps({k: v.decode(errors="replace") for k, v in letter.headers.items()})
                for letter in letters
            ),
        ]
        self._catalog_text = await check("catalog text", catalog_text(postgres)) or ""
        self._needles = bed.canaries.needles()

    def _rclone(self, bed: ChaosBed) -> list[str]:
        env = bed.direct_env
        azure = env["CHAOS_AZURE_BLOB"]
        permissions = AccountSasPermissions(read=True, list=True)
        types = ResourceTypes(service=True, container=True, object=True)
        expiry = datetime.now(UTC) + timedelta(hours=2)
        dev_sas = generate_account_sas(
            AZURE_DEV_ACCOUNT, bed.canaries.azure_key, types, permissions, expiry=expiry
        )
        other_sas = generate_account_sas(
            SAS_ACCOUNT, bed.canaries.sas_account_key, types, permissions, expiry=expiry
        )
        config = rclone_config(
            self.work / "rclone.conf",
            {
                "s3": {
                    "type": "s3",
                    "provider": "Other",
                    "endpoint": env["AWS_ENDPOINT_URL"],
                    "access_key_id": "chaos",
                    "secret_access_key": "chaos-oracle",
                    "region": "us-east-1",
                    "force_path_style": "true",
                    "no_head": "true",
                },
                "gcs": {
                    "type": "google cloud storage",
                    "anonymous": "true",
                    "endpoint": f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/",
                },
                "az": {"type": "azureblob", "sas_url": f"{azure}/{AZURE_DEV_ACCOUNT}?{dev_sas}"},
                "azsas": {"type": "azureblob", "sas_url": f"{azure}/{SAS_ACCOUNT}?{other_sas}"},
            },
        )
        pairs = [
            (f"s3:{self.s3_source}", f"gcs:{self.s3_copy}"),
            (f"s3:{self.s3_source}", f"az:{self.s3_copy}"),
            (f"s3:{self.s3_source}", str(self.file_copy)),
            (f"gcs:{self.gcs_source}", f"s3:{self.gcs_copy}"),
            (f"gcs:{self.gcs_source}", f"azsas:{self.gcs_copy}"),
        ]
        found = []
        for source, destination in pairs:
            found += [
                f"{source} -> {destination}: {line}"
                for line in rclone_differences(config, source, destination, self.work)
            ]
        return found

    def _judge_processes(self, daemons: list[DaemonProcess], report: ChaosReport) -> None:
        report.findings["crashes"] = [
            f"{daemon.name}: exit {exit_.code} ({exit_.cause})"
            for daemon in daemons
            for exit_ in daemon.crashes()
        ]
        logs = log_problems(daemon.log for daemon in daemons)
        report.findings["tracebacks"] = logs.tracebacks + [
            f"{count} x {what}" for what, count in logs.logged_exceptions.items()
        ]
        report.figures["daemon starts refused (a dependency down at start)"] = [
            f"{daemon.name} at {exit_.at:.3f}"
            for daemon in daemons
            for exit_ in daemon.exits
            if exit_.cause == "refused to start"
        ]
        report.figures["daemon exits"] = {
            daemon.name: [f"{e.code} ({e.cause})" for e in daemon.exits] for daemon in daemons
        }
        report.figures["log lines"] = logs.lines
        report.figures["error events"] = dict(logs.errors.most_common(15))
        texts = {
            f"the log of {daemon.name}": daemon.log.read_text(errors="replace")
            for daemon in daemons
        }
        texts["the daemons' HTTP answers, the push answers and the DLQ"] = "\n".join(
            getattr(self, "_answers", [])
        )
        texts["the catalog"] = getattr(self, "_catalog_text", "")
        report.findings["secret leaks"] = secret_leaks(getattr(self, "_needles", {}), texts)
