"""Writing a benchmark run out: ``results.json`` (every sample), ``report.md`` (medians with
min-max, ratios, the targets) and PNG plots."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from replicator.bench.copies import RAW, RCLONE, RCLONE_TUNED, REPLICATOR, CopySample
from replicator.bench.suite import Results

GIB = 2**30
# The targets of the efficiency work, checked in the report (never as timed tests).
SMALL_SPEEDUP = 1.5
LARGE_SPEEDUP = 1.5
FILE_VS_CP_SYNC = 0.7
RSS_ALLOWANCE_MB = 150
BUDGET_MB = 512
EVENT_P99_MS = 1000


@dataclass(frozen=True)
class Row:
    route: str
    dataset: str
    tool: str
    params: tuple[int, int, int]
    runs: int
    failed: int
    seconds: tuple[float, float, float]  # median, min, max
    mb_per_s: tuple[float, float, float]
    objects_per_s: float
    cpu_per_gib: float
    cpu_per_1000: float
    peak_rss_mb: float
    emulator_cpu: float
    single: bool
    bytes: int = 0
    objects: int = 0


def _spread(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def summarize(samples: Iterable[CopySample]) -> list[Row]:
    groups: dict[tuple[str, str, str, tuple[int, int, int]], list[CopySample]] = defaultdict(list)
    for sample in samples:
        params = (
            sample.params["part_size"],
            sample.params["concurrency"],
            sample.params["objects"],
        )
        groups[(sample.route, sample.dataset, sample.tool, params)].append(sample)
    rows = []
    for (route, dataset, tool, params), group in groups.items():
        good = [s for s in group if s.ok]
        if not good:
            rows.append(
                Row(
                    route,
                    dataset,
                    tool,
                    params,
                    len(group),
                    len(group),
                    (0, 0, 0),
                    (0, 0, 0),
                    0,
                    0,
                    0,
                    0,
                    0,
                    group[0].objects == 1,
                )
            )
            continue
        seconds = [s.run.seconds for s in good]
        size, count = good[0].bytes, good[0].objects
        cpu = statistics.median(s.run.cpu_seconds for s in good)
        rows.append(
            Row(
                route=route,
                dataset=dataset,
                tool=tool,
                params=params,
                runs=len(group),
                failed=len(group) - len(good),
                seconds=_spread(seconds),
                mb_per_s=_spread([size / t / 1e6 for t in seconds]),
                objects_per_s=count / statistics.median(seconds),
                cpu_per_gib=cpu / (size / GIB) if size else 0.0,
                cpu_per_1000=cpu / count * 1000,
                peak_rss_mb=max(s.run.peak_rss_mb for s in good),
                emulator_cpu=statistics.median(s.run.emulator_cpu_seconds for s in good),
                single=count == 1,
                bytes=size,
                objects=count,
            )
        )
    return rows


def write(results: Results, out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results.as_json(), indent=1, default=str))
    rows = summarize(results.copies)
    plots = _plots(results, rows, out)
    (out / "report.md").write_text(markdown(results, rows, command, plots))


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def _by_tool(rows: list[Row]) -> dict[tuple[str, str, tuple[int, int, int]], dict[str, Row]]:
    table: dict[tuple[str, str, tuple[int, int, int]], dict[str, Row]] = defaultdict(dict)
    for row in rows:
        table[(row.route, row.dataset, row.params)][row.tool] = row
    return table


def copy_table(rows: list[Row], *, large: bool) -> list[str]:
    rate = "MB/s median (min-max)" if large else "objects/s (MB/s)"
    cost = "CPU-s/GiB" if large else "CPU-s per 1,000 objects"
    lines = [
        f"| route | data | tool | {rate} | {cost} | peak RSS MB | emulators' CPU-s | "
        "vs rclone tuned: speed, CPU |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for (_route, _data, _params), tools in _by_tool(rows).items():
        peer = tools.get(RCLONE_TUNED)
        for tool, row in tools.items():
            if row.single != large:
                continue
            if row.failed == row.runs:
                lines.append(f"| {row.route} | {row.dataset} | {tool} | failed | | | | |")
                continue
            if large:
                speed = f"{_fmt(row.mb_per_s[0])} ({_fmt(row.mb_per_s[1])}-{_fmt(row.mb_per_s[2])})"
                spend = _fmt(row.cpu_per_gib, 2)
            else:
                speed = f"{_fmt(row.objects_per_s)} ({_fmt(row.mb_per_s[0], 2)})"
                spend = _fmt(row.cpu_per_1000, 2)
            versus = ""
            if peer and tool == REPLICATOR and peer.failed < peer.runs:
                faster = _ratio(row.mb_per_s[0], peer.mb_per_s[0])
                cheaper = (
                    _ratio(row.cpu_per_gib, peer.cpu_per_gib)
                    if large
                    else _ratio(row.cpu_per_1000, peer.cpu_per_1000)
                )
                versus = f"{faster}, {cheaper}"
            failed = f" ({row.failed} failed)" if row.failed else ""
            lines.append(
                f"| {row.route} | {row.dataset} | {tool}{failed} | {speed} | {spend} | "
                f"{_fmt(row.peak_rss_mb, 0)} | {_fmt(row.emulator_cpu)} | {versus} |"
            )
    return lines


def targets(results: Results, rows: list[Row]) -> list[str]:
    default = (16 * 2**20, 8, 16)
    table = {k: v for k, v in _by_tool(rows).items() if k[2] == default}
    lines = ["| target | route / data | measured | met |", "|---|---|---|---|"]

    def add(target: str, where: str, measured: str, met: bool) -> None:
        lines.append(f"| {target} | {where} | {measured} | {'yes' if met else '**no**'} |")

    for (route, data, _), tools in table.items():
        ours = tools.get(REPLICATOR)
        if ours is None or ours.failed == ours.runs:
            continue
        tuned, plain = tools.get(RCLONE_TUNED), tools.get(RCLONE)
        if ours.single:
            for peer_name, peer in ((RCLONE, plain), (RCLONE_TUNED, tuned)):
                if peer and peer.failed < peer.runs:
                    add(
                        f"CPU-s/GiB <= {peer_name}'s",
                        f"{route} {data}",
                        f"{ours.cpu_per_gib:.2f} vs {peer.cpu_per_gib:.2f}",
                        ours.cpu_per_gib <= peer.cpu_per_gib,
                    )
            if route == "file->file" and "cp + sync" in tools:
                cp_sync = tools["cp + sync"]
                add(
                    ">= 70% of cp + sync",
                    f"{route} {data}",
                    f"{ours.mb_per_s[0]:.0f} vs {cp_sync.mb_per_s[0]:.0f} MB/s",
                    ours.mb_per_s[0] >= FILE_VS_CP_SYNC * cp_sync.mb_per_s[0],
                )
            elif tuned and tuned.failed < tuned.runs:
                add(
                    ">= 1.5x rclone tuned MB/s",
                    f"{route} {data}",
                    f"{ours.mb_per_s[0]:.0f} vs {tuned.mb_per_s[0]:.0f} MB/s",
                    ours.mb_per_s[0] >= LARGE_SPEEDUP * tuned.mb_per_s[0],
                )
            add(
                "peak RSS <= budget + 150 MB",
                f"{route} {data}",
                f"{ours.peak_rss_mb:.0f} MB",
                ours.peak_rss_mb <= BUDGET_MB + RSS_ALLOWANCE_MB,
            )
        elif plain and plain.failed < plain.runs and "4 KiB" in data:
            add(
                ">= 1.5x rclone objects/s",
                f"{route} {data}",
                f"{ours.objects_per_s:.0f} vs {plain.objects_per_s:.0f}",
                ours.objects_per_s >= SMALL_SPEEDUP * plain.objects_per_s,
            )
            add(
                "CPU per 1,000 objects <= rclone's",
                f"{route} {data}",
                f"{ours.cpu_per_1000:.2f} vs {plain.cpu_per_1000:.2f} s",
                ours.cpu_per_1000 <= plain.cpu_per_1000,
            )
    for event in results.events:
        if event["target_rate"] == 200:
            add(
                "event path p99 <= 1 s at 200 events/s",
                "gs -> gs, records to the topic",
                f"{event['p99_ms']} ms",
                float(event["p99_ms"]) <= EVENT_P99_MS,
            )
    return lines


# The start-up case of each tool (a one-byte copy of the same route, ``suite._startup``): what
# a copy of that tool pays before its data.
STARTUP_CASES = {
    REPLICATOR: "replicator cp, 1 byte {route}",
    RCLONE: "rclone copyto, 1 byte {route}",
    RCLONE_TUNED: "rclone copyto, 1 byte {route}",
}


def _startup_cpu(results: Results, tool: str, route: str) -> float | None:
    case_name = STARTUP_CASES.get(tool, "").format(route=route)
    for case in results.startup:
        if case["case"] == case_name and case["ok"]:
            return float(statistics.median(case["cpu_seconds"]))
    return None


def why_missed(results: Results, rows: list[Row]) -> list[str]:
    """For each target missed, what the run's own figures say the time went to: the share of
    the client's CPU that is process start-up (its 1-byte copy), and whether the emulators,
    which share the machine's cores with the client, could serve the target rate at all at
    the CPU they spent per object or per GiB in this very run."""
    default = (16 * 2**20, 8, 16)
    table = {k: v for k, v in _by_tool(rows).items() if k[2] == default}
    cores = float(results.machine.get("cores") or 1)
    lines: list[str] = []

    def emulators_bound(ours: Row, per: str, needed_rate: float, unit_count: float) -> str:
        spent = ours.emulator_cpu / unit_count if unit_count else 0.0
        cores_needed = spent * needed_rate
        verdict = (
            "more than the machine has: out of reach on this test bed for any client making "
            "the same requests"
            if cores_needed > cores
            else "within the machine's cores: the client is the limit"
        )
        return (
            f"the emulators spent {spent:.3f} CPU-s per {per} serving it; at the target rate "
            f"they alone would need {cores_needed:.1f} of the {cores:.0f} cores, {verdict}."
        )

    def net_of_startup(tool: str, row: Row, units: float) -> str:
        startup = _startup_cpu(results, tool, row.route)
        cpu = row.cpu_per_gib * units if row.single else row.cpu_per_1000 * units
        if startup is None or not cpu:
            return ""
        return f"{startup:.2f} of its {cpu:.2f} CPU-s were start-up ({startup / cpu:.0%})"

    for (route, data, _), tools in table.items():
        ours = tools.get(REPLICATOR)
        if ours is None or ours.failed == ours.runs:
            continue
        plain, tuned = tools.get(RCLONE), tools.get(RCLONE_TUNED)
        if ours.single:
            gib = ours.bytes / GIB
            ours_startup = _startup_cpu(results, REPLICATOR, route)
            for name, peer in ((RCLONE, plain), (RCLONE_TUNED, tuned)):
                if not peer or peer.failed == peer.runs or ours.cpu_per_gib <= peer.cpu_per_gib:
                    continue
                peer_startup = _startup_cpu(results, name, route)
                line = (
                    f"- {route} {data}, CPU-s/GiB above {name}'s: replicator: "
                    f"{net_of_startup(REPLICATOR, ours, gib)}, {name}: "
                    f"{net_of_startup(name, peer, gib)}"
                )
                if ours_startup is not None and peer_startup is not None:
                    line += (
                        f"; net of start-up, {(ours.cpu_per_gib * gib - ours_startup) / gib:.2f}"
                        f" against {(peer.cpu_per_gib * gib - peer_startup) / gib:.2f} CPU-s/GiB"
                    )
                lines.append(line + ".")
            if tuned and tuned.failed < tuned.runs and route != "file->file":
                target = LARGE_SPEEDUP * tuned.mb_per_s[0]
                if ours.mb_per_s[0] < target:
                    lines.append(
                        f"- {route} {data}, MB/s below 1.5x rclone tuned's ({target:.0f} MB/s): "
                        + emulators_bound(ours, "GiB", target * 1e6 / GIB, gib)
                    )
        elif plain and plain.failed < plain.runs and "4 KiB" in data:
            target = SMALL_SPEEDUP * plain.objects_per_s
            if ours.objects_per_s < target:
                lines.append(
                    f"- {route} {data}, objects/s below 1.5x rclone's ({target:.0f}/s): "
                    + emulators_bound(ours, "object", target, ours.objects)
                )
            if ours.cpu_per_1000 > plain.cpu_per_1000:
                lines.append(
                    f"- {route} {data}, CPU per 1,000 objects above rclone's: replicator: "
                    f"{net_of_startup(REPLICATOR, ours, ours.objects / 1000)}; rclone: "
                    f"{net_of_startup(RCLONE, plain, plain.objects / 1000)}."
                )
    for event in results.events:
        if event["target_rate"] != 200 or float(event["p99_ms"]) <= EVENT_P99_MS:
            continue
        per_event = float(event["cpu_s_per_1000_events"]) / 1000
        cores_needed = per_event * event["target_rate"]
        verdict = (
            "more than the machine has, before the emulator and the broker get any: the "
            "events queue and their latency grows with the run"
            if cores_needed > cores
            else "within the machine's cores, shared with the emulator and the broker"
        )
        lines.append(
            f"- event path p99 at {event['target_rate']} events/s ({event['p99_ms']} ms): the "
            f"worker's process (the producer included) spent {per_event * 1000:.2f} CPU-ms per "
            f"event; at that rate it needs "
            f"{cores_needed:.1f} of the {cores:.0f} cores, {verdict}."
        )
    if not lines:
        return []
    return [
        "## Why targets are missed",
        "",
        "From this run's own figures. Where the client's CPU is the cause, the profiles in "
        "the README's efficiency section say what it is spent on.",
        "",
        *lines,
        "",
    ]


def markdown(results: Results, rows: list[Row], command: str, plots: list[str]) -> str:
    m = results.machine
    lines = [
        f"# replicator benchmark: {results.suite} suite",
        "",
        f"`{command}` on {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux "
        f"{m['kernel']}, Python {m['python']}; load average at start "
        f"{', '.join(f'{v:.1f}' for v in m['load_average_at_start'])}; {results.seconds} s in "
        "all. Every figure is a whole process (client CPU = user + system seconds, its own "
        "children included) on the local test bed, the median of "
        f"{results.parameters['repeats']} runs with min-max; the tools take turns within each "
        "run. The emulators share the machine's cores with the client: MB/s are the test "
        "bed's, not a cloud's; CPU-seconds per GiB travel better.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in results.versions.items()),
        "",
        "## Targets",
        "",
        *targets(results, rows),
        "",
        *why_missed(results, rows),
        "## Large objects",
        "",
        *copy_table([r for r in rows if r.params == (16 * 2**20, 8, 16)], large=True),
        "",
        "## Many objects",
        "",
        *copy_table([r for r in rows if r.params == (16 * 2**20, 8, 16)], large=False),
        "",
    ]
    sweeps = [r for r in rows if r.params != (16 * 2**20, 8, 16)]
    if sweeps:
        lines += [
            "## Part size and concurrency",
            "",
            "| route | tool | part MiB | parallel |"
            " MB/s median (min-max) | CPU-s/GiB | peak RSS MB |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for row in sorted(sweeps, key=lambda r: (r.tool, r.params)):
            lines.append(
                f"| {row.route} | {row.tool} | {row.params[0] // 2**20} | {row.params[1]} | "
                f"{_fmt(row.mb_per_s[0])} ({_fmt(row.mb_per_s[1])}-{_fmt(row.mb_per_s[2])}) | "
                f"{_fmt(row.cpu_per_gib, 2)} | {_fmt(row.peak_rss_mb, 0)} |"
            )
        lines.append("")
    lines += [
        "## Event path",
        "",
        "Change events produced straight to the topic at a fixed rate (the worker's own "
        "capacity; the test bed's notifying S3 tops out near 90 events/s), 1 KiB GCS objects "
        "replicated to another GCS bucket, SQLite catalog; latency from the producer to the "
        "verified replica recorded in the catalog.",
        "",
        "| target events/s | offered | events | replicated | p50 ms | p99 ms | max ms | "
        "CPU-s per 1,000 events |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in results.events:
        lines.append(
            f"| {e['target_rate']} | {e['offered_rate']} | {e['events']} | {e['replicated']} | "
            f"{e['p50_ms']} | {e['p99_ms']} | {e['max_ms']} | {e['cpu_s_per_1000_events']} |"
        )
    lines += [
        "",
        "## Catalog",
        "",
        "| backend | objects | inserts/s | updates/s | ls of 1,000: median ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for backend, c in results.catalog.items():
        if "skipped" in c:
            lines.append(f"| {backend} | {c['skipped']} | | | | |")
            continue
        lines.append(
            f"| {backend} | {c['objects']} | {c['insert_records_per_s']} | "
            f"{c['update_records_per_s']} | {c['ls_1000_median_ms']} | {c['ls_1000_max_ms']} |"
        )
    lines += [
        "",
        "## Start-up",
        "",
        "| process | seconds (min-max of 5) | CPU-s median | peak RSS MB |",
        "|---|---:|---:|---:|",
    ]
    for s in results.startup:
        seconds, cpu = s["seconds"], s["cpu_seconds"]
        lines.append(
            f"| {s['case']}{'' if s['ok'] else ' (failed)'} | "
            f"{statistics.median(seconds):.2f} ({seconds[0]:.2f}-{seconds[-1]:.2f}) | "
            f"{statistics.median(cpu):.2f} | {s['peak_rss_mb']:.0f} |"
        )
    lines += ["", *[f"![{p}]({p})" for p in plots], ""]
    return "\n".join(lines)


def _plots(results: Results, rows: list[Row], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made: list[str] = []
    large = [r for r in rows if r.single and r.params == (16 * 2**20, 8, 16) and r.runs > r.failed]
    routes = sorted({r.route for r in large})
    tools = [t for t in (REPLICATOR, RCLONE, RCLONE_TUNED, RAW) if any(r.tool == t for r in large)]
    charts: list[tuple[str, str, Callable[[Row], float]]] = [
        ("throughput.png", "MB/s (median)", lambda r: r.mb_per_s[0]),
        ("cpu_per_gib.png", "client CPU-s per GiB (median)", lambda r: r.cpu_per_gib),
    ]
    for name, label, value in charts:
        figure, axes = plt.subplots(figsize=(10, 4.5))
        width = 0.8 / max(1, len(tools))
        for index, tool in enumerate(tools):
            heights = [
                next((value(r) for r in large if r.route == route and r.tool == tool), 0.0)
                for route in routes
            ]
            axes.bar([i + index * width for i in range(len(routes))], heights, width, label=tool)
        axes.set_xticks([i + width * (len(tools) - 1) / 2 for i in range(len(routes))], routes)
        axes.set_ylabel(label)
        axes.set_title(f"{results.parameters['datasets'][0]['name']}: {label}")
        axes.legend()
        figure.tight_layout()
        figure.savefig(out / name, dpi=110)
        plt.close(figure)
        made.append(name)
    if results.events:
        figure, axes = plt.subplots(figsize=(8, 4.5))
        for event in results.events:
            values = sorted(event["latencies_ms"])
            if values:
                axes.plot(
                    values,
                    [i / len(values) for i in range(1, len(values) + 1)],
                    label=f"{event['target_rate']} events/s",
                )
        axes.set_xscale("log")
        axes.set_xlabel("event -> verified replica recorded, ms")
        axes.set_ylabel("fraction of events")
        axes.set_title("Event path latency (CDF)")
        axes.legend()
        figure.tight_layout()
        figure.savefig(out / "event_latency.png", dpi=110)
        plt.close(figure)
        made.append("event_latency.png")
    timelines = [
        s
        for s in results.copies
        if s.repeat == 0
        and s.objects == 1
        and s.tool in (REPLICATOR, RCLONE_TUNED)
        and s.params["part_size"] == 16 * 2**20
        and s.params["concurrency"] == 8
        and s.run.rss_timeline
    ]
    if timelines:
        figure, axes = plt.subplots(figsize=(10, 4.5))
        for sample in timelines:
            xs, ys = zip(*sample.run.rss_timeline, strict=True)
            style = "-" if sample.tool == REPLICATOR else ":"
            axes.plot(xs, ys, style, label=f"{sample.tool} {sample.route}")
        axes.set_xlabel("seconds")
        axes.set_ylabel("resident MB")
        axes.set_title("Memory over time, large object (first run)")
        axes.legend(fontsize="small", ncol=2)
        figure.tight_layout()
        figure.savefig(out / "memory.png", dpi=110)
        plt.close(figure)
        made.append("memory.png")
    return made
