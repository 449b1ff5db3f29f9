"""The benchmark's own machinery, quickly: commands, measurement and the report. (The suite
itself runs with ``replicator bench``, never in the test suite.)"""

from __future__ import annotations

import sys
from pathlib import Path

from connectors.base import MiB
from replicator.bench import report
from replicator.bench.copies import (
    RCLONE_TUNED,
    REPLICATOR,
    CopyParams,
    CopySample,
    Dataset,
    command,
)
from replicator.bench.processes import run_measured
from replicator.bench.suite import Results

LARGE = Dataset("1 x 64 MiB", "large/", (64 * MiB,))
SMALL = Dataset("10 x 4 KiB", "small/", (4096,) * 10)


def test_tools_are_told_the_same_parts_and_concurrency() -> None:
    params = CopyParams(part_size=32 * MiB, concurrency=4, objects=12)
    ours = command(REPLICATOR, LARGE, "s3://src", "az://dst/run-0/", params, "az")
    assert ours[-2:] == ["s3://src/large/object-00000", "az://dst/run-0/large/object-00000"]
    assert ours[ours.index("--part-size") + 1] == "32MiB"
    assert ours[ours.index("--concurrency") + 1] == "4"
    tuned = command(RCLONE_TUNED, LARGE, "s3://src", "az://dst/run-0/", params, "az")
    assert tuned[:4] == ["rclone", "copyto", "-q", "S3:src/large/object-00000"]
    assert tuned[tuned.index("--azureblob-chunk-size") + 1] == "32M"
    assert tuned[tuned.index("--azureblob-upload-concurrency") + 1] == "4"
    many = command(REPLICATOR, SMALL, "gs://src", "s3://dst/run-0/", params, "s3")
    assert "-r" in many
    assert many[many.index("--objects") + 1] == "12"
    assert many[-2:] == ["gs://src/small/", "s3://dst/run-0/"]


def test_a_process_is_measured_whole() -> None:
    # The child keeps its memory a while: the sampler reads /proc every few tens of ms, and a
    # process that exits at once can be gone before its peak is read.
    program = "import time; x = bytearray(64 * 2**20); print(len(x), flush=True); time.sleep(1)"
    run = run_measured([sys.executable, "-c", program], env={})
    assert run.returncode == 0
    assert run.stdout.strip() == str(64 * 2**20)
    assert run.cpu_seconds > 0
    assert run.peak_rss_mb >= 64


def _sample(
    tool: str, seconds: float, cpu: float, dataset: Dataset, emulators: float = 0.0
) -> CopySample:
    run = run_measured([sys.executable, "-c", "pass"], env={})
    run.seconds, run.cpu_seconds, run.emulator_cpu_seconds = seconds, cpu, emulators
    return CopySample(
        route="s3->gs",
        dataset=dataset.name,
        tool=tool,
        repeat=0,
        params={"part_size": 16 * MiB, "concurrency": 8, "objects": 16},
        bytes=dataset.total,
        objects=len(dataset.sizes),
        run=run,
        complete=True,
    )


def test_the_report_states_the_targets(tmp_path: Path) -> None:
    results = Results(
        suite="smoke",
        started="now",
        machine={
            "cpu": "x",
            "cores": 2,
            "memory_gib": 1,
            "kernel": "k",
            "python": "3",
            "load_average_at_start": (0.0, 0.0, 0.0),
        },
        versions={},
        parameters={"repeats": 1, "datasets": [{"name": LARGE.name}]},
        copies=[
            _sample(REPLICATOR, 1.0, 0.5, LARGE),
            _sample(RCLONE_TUNED, 2.0, 1.0, LARGE),
            _sample(REPLICATOR, 1.0, 0.2, SMALL, emulators=2.0),
            _sample("rclone", 1.0, 0.1, SMALL),
        ],
        startup=[
            {
                "case": "replicator cp, 1 byte s3->gs",
                "seconds": [0.3],
                "cpu_seconds": [0.15],
                "peak_rss_mb": 80,
                "ok": True,
            },
            {
                "case": "rclone copyto, 1 byte s3->gs",
                "seconds": [0.1],
                "cpu_seconds": [0.05],
                "peak_rss_mb": 30,
                "ok": True,
            },
        ],
        events=[
            {
                "target_rate": 200,
                "offered_rate": 200.0,
                "events": 10,
                "replicated": 10,
                "p50_ms": 50.0,
                "p99_ms": 1900.0,
                "max_ms": 950.0,
                "cpu_s_per_1000_events": 13.0,
                "latencies_ms": [50.0, 900.0],
            }
        ],
    )
    report.write(results, tmp_path, "replicator bench --suite smoke")
    text = (tmp_path / "report.md").read_text()
    assert "| >= 1.5x rclone tuned MB/s | s3->gs 1 x 64 MiB | 67 vs 34 MB/s | yes |" in text
    assert "| CPU-s/GiB <= rclone tuned's | s3->gs 1 x 64 MiB | 8.00 vs 16.00 | yes |" in text
    assert (
        "| CPU per 1,000 objects <= rclone's | s3->gs 10 x 4 KiB | 20.00 vs 10.00 s | **no** |"
        in text
    )
    assert "| event path p99 <= 1 s at 200 events/s |" in text
    # Only the missed targets are explained, from the run's own figures.
    why = text.split("## Why targets are missed", 1)[1].split("\n## ", 1)[0]
    assert "1 x 64 MiB" not in why
    assert (
        "- s3->gs 10 x 4 KiB, objects/s below 1.5x rclone's (15/s): the emulators spent 0.200 "
        "CPU-s per object serving it; at the target rate they alone would need 3.0 of the 2 "
        "cores, more than the machine has" in why
    )
    assert (
        "- s3->gs 10 x 4 KiB, CPU per 1,000 objects above rclone's: replicator: 0.15 of its "
        "0.20 CPU-s were start-up (75%); rclone: 0.05 of its 0.10 CPU-s were start-up (50%)." in why
    )
    assert (
        "- event path p99 at 200 events/s (1900.0 ms): the worker's process (the producer "
        "included) spent 13.00 CPU-ms per event; "
        "at that rate it needs 2.6 of the 2 cores, more than the machine has" in why
    )
    assert (tmp_path / "results.json").exists()
    assert (tmp_path / "throughput.png").exists()
