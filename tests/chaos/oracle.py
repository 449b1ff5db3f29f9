"""The chaos run's judge, outside the project's own code: it reads the stores with each
ecosystem's plain client and rclone, the catalog with SQL, the DLQ with a plain Kafka consumer,
and the daemons' logs and answers as text.

* ``final_state``: every destination equals the source's final state byte for byte; what
  differs is *lost* (missing), *stale* (an older version), *mixed* (bytes of no version) or
  *extra* (present where the source has nothing);
* ``rclone_differences``: rclone ``check --download`` between each source and destination;
* ``history_violations``: no older version ever replaced a newer one at a destination;
* ``watermark_violations``: no watermark a daemon reported was ahead of the truth;
* ``catalog_disagreements``: the catalog's replica rows agree with the stores;
* ``leftovers``: no multipart upload, uncommitted block or staged object or file is left;
* ``log_problems`` and ``secret_leaks``: tracebacks in the logs, canaries anywhere visible.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from confluent_kafka import Consumer, KafkaError, TopicPartition

from tests.chaos.observer import UNIDENTIFIED, DestinationHistory, State, WatermarkSample
from tests.chaos.stores import Destination
from tests.chaos.workload import Mutation, Store, Version


@dataclass
class FinalState:
    checked: int = 0
    lost: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    mixed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


def final_versions(mutations: Iterable[Mutation]) -> dict[tuple[Store, str], Version]:
    last: dict[tuple[Store, str], Version] = {}
    for mutation in mutations:
        last[(mutation.store, mutation.key)] = mutation.version
    return last


async def final_state(
    destination: Destination,
    source: Store,
    versions: dict[tuple[Store, str], list[Version]],
) -> FinalState:
    """Read every object of ``destination`` whole and compare it with the source's final
    state (the last version of each key of ``source``)."""
    found = FinalState()
    listed, _ = await destination.list()
    expected = {key: history[-1] for (store, key), history in versions.items() if store == source}
    semaphore = asyncio.Semaphore(8)

    async def check(key: str) -> None:
        final = expected.get(key)
        async with semaphore:
            seen = await destination.read(key, whole=True) if key in listed else None
        found.checked += 1
        if final is None or final.kind == "delete":
            if seen is not None:
                found.extra.append(f"{destination.url}{key}")
            return
        if seen is None:
            found.lost.append(f"{destination.url}{key} (version {final.n})")
            return
        if seen.size == final.size and seen.digest == final.digest:
            return
        older = [
            v.n
            for v in versions[(source, key)]
            if v.kind == "put" and v.digest == seen.digest and v.size == seen.size
        ]
        if older:
            found.stale.append(f"{destination.url}{key}: holds version {older[-1]} of {final.n}")
        else:
            found.mixed.append(
                f"{destination.url}{key}: {seen.size} bytes matching no version "
                f"(final {final.n}: {final.size} bytes)"
            )

    await asyncio.gather(*(check(key) for key in sorted(set(listed) | set(expected))))
    return found


# -- history and watermark ---------------------------------------------------------------------


def history_violations(history: DestinationHistory) -> list[str]:
    """An older version seen after a newer one at the same destination."""
    found = []
    for key, changes in history.changes.items():
        floor = 0
        for when, state in changes:
            if state is None or state == UNIDENTIFIED:
                continue
            low, high = state
            if high < floor:
                found.append(
                    f"{history.url}{key}: version {high} seen at {when:.3f} after version {floor}"
                )
            floor = max(floor, low)
    return found


def _older(state: State, mutation: Mutation, deletes: Sequence[Mutation], when: float) -> bool:
    """Whether a destination in ``state`` at ``when`` has certainly not applied ``mutation``
    (nor any later change of its key)."""
    n = mutation.version.n
    if state == UNIDENTIFIED:
        return False
    if state is None:
        if mutation.version.kind == "delete":
            return False
        # Absent is "applied" if a later deletion of the key had been made by then.
        return not any(d.version.n > n and d.started <= when for d in deletes)
    return state[1] < n


def last_seen_older(
    history: DestinationHistory, mutation: Mutation, deletes: Sequence[Mutation]
) -> float:
    """The last sampling time at which ``history`` certainly lacked ``mutation``'s change (or
    a later one); 0 if never. A snapshot's state of the key was seen at some moment before
    the snapshot ended, so an absence is explained by any deletion started by then."""
    changes = history.changes.get(mutation.key, [])
    latest = 0.0
    index = -1
    state: State = None
    for snapshot, ended in zip(history.snapshots, history.snapshot_ends, strict=True):
        while index + 1 < len(changes) and changes[index + 1][0] <= snapshot:
            index += 1
            state = changes[index][1]
        if snapshot >= mutation.started and _older(state, mutation, deletes, ended):
            latest = snapshot
    return latest


def watermark_violations(
    samples: Sequence[WatermarkSample],
    histories: dict[str, DestinationHistory],
    mutations: dict[str, list[Mutation]],
) -> list[str]:
    """Samples whose watermark W passed a change that was known to the system when the
    sample was asked for (``notified`` before it) and that the destination certainly had not
    applied when the answer came back (a later sample of the destination still lacked it)."""
    # Per destination: (last time seen lacking, mutation), sorted, so that a sample only looks
    # at the changes still lacking when it was answered.
    lacking: dict[str, tuple[list[float], list[Mutation]]] = {}
    for url, history in histories.items():
        by_key: dict[str, list[Mutation]] = {}
        for mutation in mutations.get(history.source, []):
            by_key.setdefault(mutation.key, []).append(mutation)
        found: list[tuple[float, Mutation]] = []
        for key_mutations in by_key.values():
            deletes = [m for m in key_mutations if m.version.kind == "delete"]
            for mutation in key_mutations:
                when = last_seen_older(history, mutation, deletes)
                if when:
                    found.append((when, mutation))
        found.sort(key=lambda item: item[0])
        lacking[url] = ([when for when, _ in found], [mutation for _, mutation in found])
    violations = []
    for sample in samples:
        if sample.watermark is None or sample.destination not in lacking:
            continue
        times, candidates = lacking[sample.destination]
        for index in range(bisect.bisect_left(times, sample.received), len(times)):
            mutation = candidates[index]
            if not mutation.notified or mutation.notified >= sample.sent:
                continue
            # Compared at the catalog's precision (microseconds): a watermark held by this
            # very change equals its event time there, not a float's last digits.
            if round(mutation.event_time, 6) >= round(sample.watermark, 6):
                continue
            violations.append(
                f"{sample.daemon} at {sample.sent:.3f}: watermark {sample.watermark:.3f} of "
                f"{sample.destination} passed {mutation.store} {mutation.key!r} version "
                f"{mutation.version.n} ({mutation.version.kind}, event time "
                f"{mutation.event_time:.3f}), still missing there at {times[index]:.3f}"
            )
            break
    return violations


# -- rclone ------------------------------------------------------------------------------------


def rclone_config(path: Path, remotes: dict[str, dict[str, str]]) -> Path:
    lines = []
    for name, options in remotes.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {value}" for key, value in options.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def rclone_differences(config: Path, source: str, destination: str, work: Path) -> list[str]:
    """``rclone check --download`` of two remotes: every line that is not an equal file
    (staging names excluded: the leftovers check counts those)."""
    combined = work / f"rclone-{uuid.uuid4().hex[:8]}.txt"
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    result = subprocess.run(
        [
            "rclone",
            "check",
            source,
            destination,
            "--download",
            "--config",
            str(config),
            "--combined",
            str(combined),
            "--exclude",
            ".replicator-uploads/**",
            "--exclude",
            "*.replicator-tmp-*",
            "--checkers",
            "4",
            "--retries",
            "3",
            "--low-level-retries",
            "5",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
    )
    if not combined.exists():
        return [f"rclone failed ({result.returncode}): {result.stderr[-1000:]}"]
    lines = [line for line in combined.read_text().splitlines() if line]
    differences = [line for line in lines if not line.startswith("= ")]
    if result.returncode not in (0, 1) or (result.returncode == 1 and not differences):
        differences.append(f"rclone exited {result.returncode}: {result.stderr[-1000:]}")
    return differences


# -- the catalog -------------------------------------------------------------------------------


async def catalog_disagreements(
    postgres_url: str,
    destinations: dict[str, Store],
    finals: dict[tuple[Store, str], Version],
) -> list[str]:
    """Each destination's replica rows against the source's final state: a key put last must
    be ``replicated`` with its size, one deleted last ``deleted``; no row may be left
    unapplied; no row may name a key the source never had."""
    connection = await asyncpg.connect(postgres_url)
    try:
        rows = await connection.fetch(
            "SELECT l.url, r.key, r.state, r.size, r.last_error FROM replicas r "
            "JOIN locations l ON l.id = r.location_id"
        )
        uploads = await connection.fetch("SELECT dest_url, upload_id FROM uploads")
    finally:
        await connection.close()
    found = []
    seen: set[tuple[str, str]] = set()
    for row in rows:
        url, key = row["url"], row["key"]
        if url not in destinations:
            continue
        seen.add((url, key))
        final = finals.get((destinations[url], key))
        if final is None:
            found.append(f"{url}{key}: a row ({row['state']}) for a key the source never had")
        elif final.kind == "put" and (row["state"] != "replicated" or row["size"] != final.size):
            found.append(
                f"{url}{key}: {row['state']}, {row['size']} bytes; the source holds "
                f"{final.size} bytes (last error: {(row['last_error'] or '')[:200]})"
            )
        elif final.kind == "delete" and row["state"] != "deleted":
            found.append(f"{url}{key}: {row['state']} after the source deleted it")
    for url, store in destinations.items():
        for (final_store, key), final in finals.items():
            if final_store == store and final.kind == "put" and (url, key) not in seen:
                found.append(f"{url}{key}: no replica row")
    found += [
        f"upload journal still holds {row['dest_url']} ({row['upload_id']})" for row in uploads
    ]
    return found


async def catalog_text(postgres_url: str) -> str:
    """Every table of the catalog as text (for the secrets scan)."""
    connection = await asyncpg.connect(postgres_url)
    try:
        tables = await connection.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        parts = []
        for table in tables:
            rows = await connection.fetch(f'SELECT * FROM "{table["table_name"]}"')
            parts += [json.dumps([str(value) for value in row.values()]) for row in rows]
        return "\n".join(parts)
    finally:
        await connection.close()


# -- the DLQ, the logs, the secrets ------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]

    @property
    def reason(self) -> str:
        return self.headers.get("replicator.reason", b"").decode(errors="replace")


def _reader(bootstrap: str, group: str | None = None) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"chaos-oracle-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            # The end of a partition as the fetch responses say (Tansu's ListOffsets(latest)
            # is wrong: KAFKA.md).
            "enable.partition.eof": True,
            "session.timeout.ms": 2000,
            "heartbeat.interval.ms": 300,
        }
    )


def dead_letters(
    bootstrap: str, topic: str, partitions: int = 1, idle_s: float = 10.0
) -> list[DeadLetter]:
    """Every record of ``topic``, read from the start to the end of each partition by a
    consumer of its own."""
    consumer = _reader(bootstrap)
    found: list[DeadLetter] = []
    try:
        consumer.assign([TopicPartition(topic, index, 0) for index in range(partitions)])
        at_end: set[int] = set()
        last = time.monotonic()
        while len(at_end) < partitions and time.monotonic() - last < idle_s:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                continue
            last = time.monotonic()
            at_end.discard(message.partition())
            headers = {name: value or b"" for name, value in message.headers() or []}
            found.append(DeadLetter(message.key(), message.value() or b"", headers))
    finally:
        consumer.close()
    return found


def committed_to_the_end(
    bootstrap: str, group: str, topic: str, partitions: int, timeout_s: float = 30.0
) -> bool:
    """Whether ``group`` committed every partition of ``topic`` up to its end: a reader
    placed at each committed offset finds nothing after it."""
    consumer = _reader(bootstrap, group)
    try:
        parts = [TopicPartition(topic, index) for index in range(partitions)]
        committed = consumer.committed(parts, timeout=10)
        consumer.assign([TopicPartition(topic, p.partition, max(p.offset, 0)) for p in committed])
        pending = set(range(partitions))
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is None:
                return False
            if error.code() == KafkaError._PARTITION_EOF:
                pending.discard(message.partition())
        return not pending
    finally:
        consumer.close()


@dataclass
class LogProblems:
    tracebacks: list[str] = field(default_factory=list)
    logged_exceptions: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    lines: int = 0


def log_problems(paths: Iterable[Path]) -> LogProblems:
    """Uncaught tracebacks (plain text on stderr), logged exceptions and error events."""
    found = LogProblems()
    for path in paths:
        text = path.read_text(errors="replace")
        lines = text.splitlines()
        for number, line in enumerate(lines):
            found.lines += 1
            try:
                event = json.loads(line)
            except ValueError:
                if line.startswith("Traceback (most recent call last)"):
                    excerpt = "\n".join(lines[number : number + 40])
                    found.tracebacks.append(f"{path.name}:{number + 1}: {excerpt[-1500:]}")
                continue
            if not isinstance(event, dict):
                continue
            name = str(event.get("event", ""))
            if "exception" in event:
                last = str(event["exception"]).strip().splitlines()[-1:]
                found.logged_exceptions[f"{name}: {last[0] if last else ''}"[:300]] += 1
            if event.get("level") in ("error", "critical"):
                found.errors[name[:200]] += 1
    return found


def secret_leaks(needles: dict[str, str], texts: dict[str, str]) -> list[str]:
    found = []
    for label, text in texts.items():
        for name, needle in needles.items():
            if needle and needle in text:
                found.append(f"the {name} appears in {label}")
    return found
