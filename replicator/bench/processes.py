"""Measuring a whole process: wall time, CPU (user + system, its waited-for children
included), peak and sampled resident memory, and the CPU the emulators spent meanwhile."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

#: How often the resident set is sampled (for the memory-over-time plot and the peak).
SAMPLE_S = 0.05
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcessRun:
    argv: list[str]
    returncode: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    emulator_cpu_seconds: float
    stdout: str
    stderr: str
    #: (seconds since start, resident MB)
    rss_timeline: list[tuple[float, float]] = field(default_factory=list)


def cpu_ticks(pid: int) -> int:
    """user + system clock ticks of a running process and its waited-for children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    # Fields after the command: state is [0]; utime, stime, cutime, cstime are [11:15].
    return sum(int(value) for value in fields[11:15])


def _memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB, or zeros once the process is gone."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return rss, hwm


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    emulator_pids: Sequence[int] = (),
    timeout_s: float = 900,
    cwd: Path | None = None,
) -> ProcessRun:
    """Run ``argv`` to completion and measure it. The peak resident set is the largest
    VmHWM seen while it ran, or the child's ru_maxrss when that exceeds this process's own
    peak (ru_maxrss also counts what the child inherited from this process across fork and
    exec, so below that it says nothing)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        run = _run(argv, env, emulator_pids, timeout_s, cwd, out, err)
        out.seek(0)
        err.seek(0)
        run.stdout, run.stderr = out.read(), err.read()
    return run


def _run(
    argv: Sequence[str],
    env: Mapping[str, str],
    emulator_pids: Sequence[int],
    timeout_s: float,
    cwd: Path | None,
    out: IO[str],
    err: IO[str],
) -> ProcessRun:
    emulators_before = sum(cpu_ticks(pid) for pid in emulator_pids)
    own_peak_kb = _memory_kb(os.getpid())[1]
    started = time.perf_counter()
    process = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdout=out, stderr=err)
    timeline: list[tuple[float, float]] = []
    peak_kb = 0
    usage = None
    status = 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        elapsed = time.perf_counter() - started
        rss, hwm = _memory_kb(process.pid)
        peak_kb = max(peak_kb, hwm, rss)
        if rss:
            timeline.append((round(elapsed, 3), round(rss / 1024, 1)))
        if elapsed > timeout_s:
            process.kill()
        time.sleep(SAMPLE_S)
    seconds = time.perf_counter() - started
    if usage.ru_maxrss > own_peak_kb:
        peak_kb = max(peak_kb, usage.ru_maxrss)
    process.returncode = os.waitstatus_to_exitcode(status)
    emulators_after = sum(cpu_ticks(pid) for pid in emulator_pids)
    return ProcessRun(
        argv=list(argv),
        returncode=process.returncode,
        seconds=seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=round(peak_kb / 1024, 1),
        emulator_cpu_seconds=(emulators_after - emulators_before) / _TICKS,
        stdout="",
        stderr="",
        rss_timeline=timeline,
    )
