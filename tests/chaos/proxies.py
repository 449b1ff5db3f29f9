"""Several fault proxies in a process of their own, so that the bytes they carry do not compete
with the chaos run's own event loop (the oracle, the mutations, the sampling).

``python -m tests.chaos.proxies SPEC`` starts one ``FaultProxy`` per entry of the JSON SPEC::

    {"seed": 7, "profile": {...FaultProfile fields...},
     "proxies": {"s3": {"upstream": "http://127.0.0.1:P", "flavour": "s3"}, ...}}

prints one JSON line ``{"control": URL, "proxies": {name: URL}}`` and serves on the control
URL ``GET /stats`` (each proxy's counts), ``GET /azure-discarded`` (the uncommitted blocks a
real Azure account would have dropped, ``tests.chaos.azure_blocks``) and ``PUT /profile`` (a
new profile for every proxy, e.g. no faults for the quiescence at the end of a run).
``"request_flips": false`` on an entry keeps request bodies intact (see ``FaultProxy``). Each
proxy's seed is derived from the run's seed and the proxy's name, so the whole fault sequence
follows from one number.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.chaos.azure_blocks import DiscardedBlock
from tests.chaos.children import die_with_parent
from tests.chaos.proxy import FaultProfile, FaultProxy, profile_as_dict, profile_from_dict


def proxy_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


async def serve(spec: dict[str, Any]) -> None:
    profile = profile_from_dict(spec.get("profile", {}))
    proxies = {
        name: FaultProxy(
            entry["upstream"],
            flavour=entry["flavour"],
            profile=profile,
            seed=proxy_seed(int(spec["seed"]), name),
            request_flips=bool(entry.get("request_flips", True)),
        )
        for name, entry in spec["proxies"].items()
    }
    for proxy in proxies.values():
        await proxy.start()

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(
            {
                name: {**proxy.stats.as_dict(), "profile": profile_as_dict(proxy.profile)}
                for name, proxy in proxies.items()
            }
        )

    async def azure_discarded(_: web.Request) -> web.Response:
        blocks = set().union(*(proxy.blocks.discarded for proxy in proxies.values()))
        return web.json_response(sorted(blocks))

    async def set_profile(request: web.Request) -> web.Response:
        values = await request.json()
        new = profile_from_dict(values)
        for proxy in proxies.values():
            proxy.profile = new
        return web.json_response(profile_as_dict(new))

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_get("/azure-discarded", azure_discarded)
    app.router.add_put("/profile", set_profile)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    control = f"http://127.0.0.1:{runner.addresses[0][1]}"
    print(
        json.dumps({"control": control, "proxies": {n: p.url for n, p in proxies.items()}}),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        for proxy in proxies.values():
            await proxy.close()


@dataclass
class ProxyProcess:
    """The proxies' process, seen from the chaos run."""

    process: subprocess.Popen[bytes]
    control: str
    urls: dict[str, str]

    @classmethod
    def start(
        cls,
        upstreams: dict[str, tuple[str, str, bool]],
        *,
        seed: int,
        profile: FaultProfile,
        log_path: Path,
    ) -> ProxyProcess:
        """``upstreams``: name -> (upstream URL, flavour, whether request bodies may be
        flipped)."""
        spec = {
            "seed": seed,
            "profile": profile_as_dict(profile),
            "proxies": {
                name: {"upstream": url, "flavour": flavour, "request_flips": flips}
                for name, (url, flavour, flips) in upstreams.items()
            },
        }
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.proxies", json.dumps(spec)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            process.wait(timeout=10)
            raise RuntimeError(f"the fault proxies did not start; see {log_path}")
        started = json.loads(line)
        return cls(process, started["control"], started["proxies"])

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.control + "/stats", timeout=10) as response:
            found: dict[str, Any] = json.loads(response.read())
            return found

    def azure_discarded(self) -> set[DiscardedBlock]:
        """Uncommitted blocks a real Azure account would have dropped at a Put Blob
        (``tests.chaos.azure_blocks``)."""
        with urllib.request.urlopen(self.control + "/azure-discarded", timeout=10) as response:
            listed = json.loads(response.read())
        return {(container, blob, block) for container, blob, block in listed}

    def set_profile(self, profile: FaultProfile) -> None:
        request = urllib.request.Request(
            self.control + "/profile",
            data=json.dumps(profile_as_dict(profile)).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(json.loads(sys.argv[1])))
