"""The daemons under test: ``replicator run`` processes of one consumer group, each with its own
HTTP port and log file (kept across restarts), killed with SIGKILL and restarted at will.

Every exit is recorded with whether the run caused it: an exit the run did not cause (or a
SIGTERM that did not end in status 0) is a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from replicator.errors import DependencyUnavailable
from tests.chaos.children import die_with_parent

# `replicator`'s exit status when the broker or the catalog cannot be reached at start.
START_REFUSED = DependencyUnavailable.EXIT_CODE


@dataclass(frozen=True)
class Exit:
    code: int
    # "killed" (SIGKILL by the run), "stopped" (SIGTERM by the run, exit status 0), "crash"
    # (an exit the run did not cause, or a SIGTERM ending in another status), "hung" (no
    # exit within the stop deadline: killed), "refused to start" (status 2 before it ever
    # answered /healthz: a dependency was down at start, see DaemonProcess._watch_exit)
    cause: str
    at: float


@dataclass
class DaemonProcess:
    name: str
    config: Path
    env: dict[str, str]
    port: int
    ingest_port: int
    log: Path
    exits: list[Exit] = field(default_factory=list)
    starts: int = 0
    _process: asyncio.subprocess.Process | None = None
    _expected: str = ""
    _watch: asyncio.Task[None] | None = None
    _readiness: asyncio.Task[None] | None = None
    _became_ready: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ingest_url(self) -> str:
        """The push receivers' listener (apart from the admin one, as in production)."""
        return f"http://127.0.0.1:{self.ingest_port}"

    @property
    def pid(self) -> int | None:
        """The running process's id."""
        return self._process.pid if self.alive and self._process is not None else None

    async def metric(self, http: aiohttp.ClientSession, name: str, **labels: str) -> float:
        """The sum of the daemon's samples ``name`` with ``labels`` (0 while it does not
        answer)."""
        try:
            async with http.get(f"{self.url}/metrics") as response:
                exposition = await response.text()
        except aiohttp.ClientError:
            return 0.0
        return sum(
            sample.value
            for family in text_string_to_metric_families(exposition)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start the daemon (nothing if it is running)."""
        if self.alive:
            return
        log = await asyncio.to_thread(self.log.open, "ab")
        try:
            log.write(f"\n=== start {self.starts + 1} at {time.time():.3f}\n".encode())
            log.flush()
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "replicator",
                "run",
                "--config",
                str(self.config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            log.close()
        self.starts += 1
        self._expected = ""
        self._became_ready = False
        self._watch = asyncio.create_task(self._watch_exit(self._process))
        self._readiness = asyncio.create_task(self._notice_ready(self._process))

    async def _notice_ready(self, process: asyncio.subprocess.Process) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while process.returncode is None:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.url + "/healthz") as response:
                        if response.status == 200:
                            self._became_ready = True
                            return
                await asyncio.sleep(0.2)

    async def _watch_exit(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        cause = self._expected or "crash"
        if cause == "stopped" and code != 0:
            cause = "crash"
        if cause == "crash" and code == START_REFUSED and not self._became_ready:
            # The documented exit of a daemon started while the broker or the catalog is
            # down: one error line, status 69, for its supervisor to start it again.
            cause = "refused to start"
        self.exits.append(Exit(code, cause, time.time()))

    async def ready(self, timeout_s: float = 120.0) -> None:
        """Returns once ``/healthz`` answers 200."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while time.monotonic() < deadline:
                if not self.alive:
                    raise RuntimeError(f"{self.name} exited while starting; see {self.log}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.url + "/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s; see {self.log}")

    async def kill(self) -> None:
        if not self.alive:
            return
        assert self._process is not None
        assert self._watch is not None
        self._expected = "killed"
        self._process.send_signal(signal.SIGKILL)
        await self._watch

    async def stop(self, timeout_s: float = 120.0) -> None:
        """SIGTERM (drain, commit, leave the group); SIGKILL if it does not exit in time."""
        if not self.alive:
            return
        assert self._process is not None
        assert self._watch is not None
        self._expected = "stopped"
        self._process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self._watch), timeout_s)
        except TimeoutError:
            self._expected = "hung"
            self._process.kill()
            await self._watch

    def needs_restart(self) -> bool:
        """Down by no doing of the run (a crash, a refused start): a supervisor would start
        it again."""
        return (
            not self.alive
            and bool(self.exits)
            and self.exits[-1].cause in ("crash", "refused to start")
        )

    def crashes(self) -> list[Exit]:
        return [exit_ for exit_ in self.exits if exit_.cause in ("crash", "hung")]
