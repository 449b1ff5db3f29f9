"""The oracle's own reasoning, on destination histories as the sampler records them."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.observer import DestinationHistory, WatermarkSample
from tests.chaos.oracle import last_seen_older, watermark_violations
from tests.chaos.stores import FileDestination
from tests.chaos.workload import Mutation, Version

KEY = "d2/obj-00037"


def _change(n: int, kind: str, started: float) -> Mutation:
    version = Version(n, "put" if kind == "put" else "delete", 5 if kind == "put" else 0)
    return Mutation(
        n, "gs", 37, KEY, version, started=started, notified=started + 0.1, event_time=started
    )


def _mutations(delete_started: float) -> list[Mutation]:
    """v1 and v2 written, then the key deleted (v3) at ``delete_started``."""
    return [_change(1, "put", 1.0), _change(2, "put", 12.0), _change(3, "delete", delete_started)]


def _history(tmp_path: Path) -> DestinationHistory:
    """v1 seen at 4; then a snapshot that started at 20 and took until 37 found the key gone
    (its listing showed it, its read came after the deletion)."""
    history = DestinationHistory(FileDestination(tmp_path), "gs")
    history.snapshots += [4.0, 20.0, 40.0]
    history.snapshot_ends += [4.5, 37.0, 40.5]
    history.record(KEY, 4.0, (1, 1))
    history.record(KEY, 20.0, None)
    return history


def test_an_absence_a_deletion_during_a_slow_snapshot_explains_is_not_a_lag(
    tmp_path: Path,
) -> None:
    history = _history(tmp_path)
    mutations = _mutations(delete_started=29.0)
    deletes = [m for m in mutations if m.version.kind == "delete"]
    assert [last_seen_older(history, m, deletes) for m in mutations[:2]] == [0.0, 0.0]
    # A watermark past v1 and v2, asked at 16: both were applied as far as
    # any snapshot can tell, since the absence at 20 may be the deletion's.
    sample = WatermarkSample("daemon-a", 16.0, 16.1, "gs://src/", history.url, 15.0, 0)
    assert watermark_violations([sample], {history.url: history}, {"gs": mutations}) == []


def test_an_absence_before_any_deletion_is_a_lag(tmp_path: Path) -> None:
    history = _history(tmp_path)
    mutations = _mutations(delete_started=38.0)  # after the slow snapshot had ended
    deletes = [m for m in mutations if m.version.kind == "delete"]
    assert [last_seen_older(history, m, deletes) for m in mutations[:2]] == [20.0, 20.0]
    sample = WatermarkSample("daemon-a", 16.0, 16.1, "gs://src/", history.url, 15.0, 0)
    [violation] = watermark_violations([sample], {history.url: history}, {"gs": mutations})
    assert "version 1" in violation
