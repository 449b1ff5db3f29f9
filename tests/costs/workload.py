"""The workload and the comparisons the cost accounting tests share."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping, Sequence

from replicator.engine.costs import CLASSES
from tests.costs.proxy import Counts

MiB = 1024 * 1024
S3 = "s3:us-east-1"
# Small objects (one read shared by both destinations, one put each) and multipart ones (the
# configuration's part size is 1 MiB: parts at both destinations, ranged reads at the source).
SMALL = {f"small/{i:03d}.bin": (b"%03d" % i) * (300 + 97 * i) for i in range(24)}
LARGE = {"large/a.bin": os.urandom(3 * MiB + 5), "large/b.bin": os.urandom(2 * MiB + 1)}
TOLERANCE = 0.01


def within(counted: int, served: int) -> bool:
    return abs(counted - served) <= TOLERANCE * served


async def run(env: Mapping[str, str], *args: str, exit_code: int = 0) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "replicator",
        *args,
        env={**env, "REPLICATOR_LOG_LEVEL": "error"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=240)
    assert process.returncode == exit_code, err.decode()
    return out.decode()


def per_store(rows: Sequence[Mapping[str, object]]) -> dict[str, dict[str, int]]:
    """The catalog's rows added up per store."""
    totals: dict[str, dict[str, int]] = {}
    for row in rows:
        into = totals.setdefault(str(row["store"]), {})
        for name, value in row.items():
            if isinstance(value, int) and not isinstance(value, bool):
                into[name] = into.get(name, 0) + value
    return totals


def mismatches(counted: Mapping[str, int], served: Counts) -> list[str]:
    found = []
    for kind in CLASSES:
        ours, theirs = counted.get(f"{kind.value}_requests", 0), served.requests[kind.value]
        if not within(ours, theirs):
            found.append(f"{kind.value}: counted {ours}, served {theirs}")
    for name, theirs in (
        ("bytes_read", served.bytes_read),
        ("bytes_written", served.bytes_written),
    ):
        if not within(counted.get(name, 0), theirs):
            found.append(f"{name}: counted {counted.get(name, 0)}, served {theirs}")
    return found
