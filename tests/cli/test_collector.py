"""The cyclic garbage collector around a command's start-up (``replicator.cli.collector``):
off while the command imports and builds what it needs, then on again, with what start-up
built frozen out of its view when the process is the command line itself."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

from replicator.cli.collector import start_up

# Runs the real command line and writes, at exit, whether the collector is on and how many
# objects were frozen out of its view.
PROBE = """
import atexit, gc, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(
    {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()})))
sys.argv[0] = "replicator"
runpy.run_module("replicator", run_name="__main__", alter_sys=True)
"""


def test_a_copy_freezes_its_start_up_and_runs_with_the_collector_on(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "object").write_bytes(b"payload")
    out = tmp_path / "collector.json"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            str(out),
            "cp",
            f"file://{tmp_path}/src/object",
            f"file://{tmp_path}/dst/object",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "dst" / "object").read_bytes() == b"payload"
    state = json.loads(out.read_text())
    assert state["enabled"] is True
    assert state["frozen"] > 10_000, "start-up's objects were not frozen"


def test_in_a_process_that_is_not_the_command_line_it_only_pauses_the_collector() -> None:
    frozen = gc.get_freeze_count()
    assert gc.isenabled()
    with start_up():
        assert not gc.isenabled()
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
