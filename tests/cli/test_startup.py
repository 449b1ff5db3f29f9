"""The command line starts without the catalog's libraries: SQLAlchemy and Alembic cost ~0.4 s
of CPU to import, which a `cp` or `--help` must not pay (they are imported by the commands
that open a catalog, when they do)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("sqlalchemy", "alembic")


def test_the_command_line_imports_no_catalog_library_at_start() -> None:
    probe = (
        f"import sys, replicator.cli.app; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
