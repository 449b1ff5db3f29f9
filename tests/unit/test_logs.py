"""Log lines render in both formats whatever values a call passes (a refused commit's offsets
keyed by (topic, partition) once took the daemon down with JSON logs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from replicator.cli import logs


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_awkward_values_render(fmt: logs.LogFormat, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("debug", fmt, cache=False)
    structlog.get_logger("test").warning(
        "commit refused",
        offsets={("changes", 3): 17, ("changes", 4): 9},
        nested=[{("a", 1): {2: b"bytes"}}],
        when=datetime(2026, 11, 30, tzinfo=UTC),
        path=Path("/tmp/x"),
        values={1, 2},
    )
    line = capsys.readouterr().err.strip()
    assert "commit refused" in line
    if fmt == "json":
        record = json.loads(line)
        assert record["offsets"] == {"('changes', 3)": 17, "('changes', 4)": 9}
        assert record["nested"] == [{"('a', 1)": {"2": "b'bytes'"}}]


def test_exceptions_still_render_with_their_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("debug", "json", cache=False)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger("test").exception("failed", key=("t", 1))
    record = json.loads(capsys.readouterr().err.strip())
    assert "RuntimeError: boom" in record["exception"]
