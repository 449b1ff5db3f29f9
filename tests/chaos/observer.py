"""What the chaos run samples while it runs, for the oracle to judge afterwards:

* each destination's history: every few seconds a listing, and each object that changed read
  (whole when small, else its two version markers pinned to one version), named by the
  version it holds (``identify``), or marked unidentified (partial, mixed, unknown);
* the daemons' ``/status`` (each route's watermark), ``/metrics`` and ``/healthz``, with the
  time each request went out and came back; every answer is kept for the secrets scan.

All reads go to the emulators directly, with the clients of ``tests.chaos.stores``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp

from tests.chaos.stores import Destination, Seen, read_seen
from tests.chaos.workload import MARK, Store, Version

# A state of one key at a destination: absent (None), or the range of versions it may be
# (several versions can have the same bytes: every empty one); (-1, -1) is unidentified.
State = tuple[int, int] | None
UNIDENTIFIED: State = (-1, -1)
_MARKER = re.compile(rb"^CHAOS (\d{8}) (\d{11})\|$")


def identify(versions: Sequence[Version], key_id: int, seen: Seen) -> State:
    """The versions of a key whose bytes ``seen`` can be."""
    if seen.digest is not None:
        found = [
            v.n
            for v in versions
            if v.kind == "put" and v.size == seen.size and v.digest == seen.digest
        ]
        return (min(found), max(found)) if found else UNIDENTIFIED
    match = _MARKER.match(seen.head)
    if match is None or seen.head != seen.tail or int(match.group(1)) != key_id:
        return UNIDENTIFIED
    n = int(match.group(2))
    if 1 <= n <= len(versions):
        version = versions[n - 1]
        if version.kind == "put" and version.size == seen.size and len(seen.head) == MARK:
            return (n, n)
    return UNIDENTIFIED


@dataclass
class DestinationHistory:
    """One destination as sampled: when each listing started, and each key's changes."""

    destination: Destination
    source: Store
    snapshots: list[float] = field(default_factory=list)
    # When each snapshot's last read came back: what a snapshot records of a key was seen at
    # some moment between its start and its end (a slow one can take many seconds).
    snapshot_ends: list[float] = field(default_factory=list)
    changes: dict[str, list[tuple[float, State]]] = field(default_factory=dict)
    unidentified: list[str] = field(default_factory=list)
    staging_seen: set[str] = field(default_factory=set)
    # The staging names of the latest listing.
    current_staging: list[str] = field(default_factory=list)
    reads: int = 0
    errors: int = 0
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.destination.url

    def record(self, key: str, when: float, state: State) -> None:
        history = self.changes.setdefault(key, [])
        if not history or history[-1][1] != state:
            history.append((when, state))

    def state_at(self, key: str, when: float) -> State:
        state: State = None
        for changed, value in self.changes.get(key, []):
            if changed > when:
                break
            state = value
        return state


class Sampler:
    """Samples every destination's history until stopped."""

    def __init__(
        self,
        histories: Sequence[DestinationHistory],
        versions: dict[tuple[Store, str], list[Version]],
        key_ids: dict[tuple[Store, str], int],
        *,
        reads_at_once: int = 8,
    ) -> None:
        self.histories = list(histories)
        self.versions = versions
        self.key_ids = key_ids
        self._reads = asyncio.Semaphore(reads_at_once)

    async def snapshot(self, history: DestinationHistory) -> None:
        started = time.time()
        try:
            listed, staging = await history.destination.list()
        except Exception:
            history.errors += 1
            return
        history.staging_seen.update(staging)
        history.current_staging = staging
        for key in [k for k in history._tokens if k not in listed]:
            del history._tokens[key]
            history.record(key, started, None)
        changed = [item for key, item in listed.items() if history._tokens.get(key) != item.token]

        async def sample(key: str, size: int, token: str) -> None:
            async with self._reads:
                try:
                    seen = await read_seen(history.destination, key, size)
                except Exception:
                    history.errors += 1
                    return
            history.reads += 1
            history._tokens[key] = token
            if seen is None:
                history.record(key, started, None)
                return
            ident = (history.source, key)
            if ident not in self.versions:
                state = UNIDENTIFIED
            else:
                state = identify(self.versions[ident], self.key_ids[ident], seen)
            if state == UNIDENTIFIED:
                history.unidentified.append(
                    f"{history.url}{key}: {seen.size} bytes, head {seen.head[:MARK]!r}, "
                    f"tail {seen.tail[-MARK:]!r} at {datetime.fromtimestamp(started).time()}"
                )
            history.record(key, started, state)

        await asyncio.gather(*(sample(i.key, i.size, i.token) for i in changed))
        history.snapshots.append(started)
        history.snapshot_ends.append(time.time())

    async def run(self, stop: asyncio.Event, interval_s: float = 2.0) -> None:
        while not stop.is_set():
            began = time.monotonic()
            await asyncio.gather(*(self.snapshot(history) for history in self.histories))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), max(0.2, interval_s - (time.monotonic() - began))
                )


@dataclass(frozen=True)
class WatermarkSample:
    daemon: str
    sent: float
    received: float
    source: str
    destination: str
    watermark: float | None
    pending: int


@dataclass
class StatusSampler:
    """Polls each live daemon's ``/status`` (and now and then ``/metrics`` and ``/healthz``)."""

    daemons: Callable[[], Sequence[tuple[str, str]]]
    samples: list[WatermarkSample] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    failures: int = 0

    async def poll_once(self, session: aiohttp.ClientSession, extra: bool) -> None:
        for name, base in self.daemons():
            sent = time.time()
            try:
                async with session.get(f"{base}/status") as response:
                    text = await response.text()
                    received = time.time()
                    status = response.status
                if extra:
                    for path in ("/metrics", "/healthz", "/datasets"):
                        async with session.get(base + path) as response:
                            self.answers.append(await response.text())
            except (aiohttp.ClientError, TimeoutError):
                self.failures += 1
                continue
            self.answers.append(text)
            if status != 200:
                continue
            for route in _routes(text):
                watermark = route.get("watermark")
                self.samples.append(
                    WatermarkSample(
                        name,
                        sent,
                        received,
                        str(route["source"]),
                        str(route["destination"]),
                        datetime.fromisoformat(str(watermark)).timestamp() if watermark else None,
                        int(route.get("operations_pending") or 0),
                    )
                )

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        rounds = 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            while not stop.is_set():
                await self.poll_once(session, extra=rounds % 10 == 0)
                rounds += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)


def _routes(text: str) -> list[dict[str, object]]:
    import json

    with contextlib.suppress(ValueError):
        document = json.loads(text)
        routes = document.get("routes", []) if isinstance(document, dict) else []
        return [route for route in routes if isinstance(route, dict)]
    return []
