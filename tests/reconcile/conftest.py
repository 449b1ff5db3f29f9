"""Shared helpers of the reconciliation tests: a configuration with a private catalog, the
command line run in process (results) or as a process (exit codes, kills)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner

from replicator.cli.app import app

T = TypeVar("T")
REPLICATOR = [sys.executable, "-m", "replicator"]


def sync(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@dataclass
class Cli:
    config: Path
    catalog_url: str

    def invoke(self, *args: str) -> tuple[int, Any]:
        """Run ``replicator ARGS --config CONFIG --json`` in process: exit code and JSON."""
        result = CliRunner().invoke(app, [*args, "--config", str(self.config), "--json"])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None

    def process(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        """The command line as a process of its own (stdout and stderr piped)."""
        return subprocess.Popen(
            [*REPLICATOR, *args, "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "REPLICATOR_LOG_LEVEL": "error"},
            **kwargs,
        )


def write_config(path: Path, catalog_url: str, routes: str = "routes = []\n") -> Path:
    """A configuration with a catalog of its own, small parts (so a few MiB is multipart) and
    ``routes`` (TOML)."""
    path.write_text(
        routes
        + f'\n[catalog]\nurl = "{catalog_url}"\n\n[copy]\npart_size = "1MiB"\nmemory = "64MiB"\n'
    )
    return path


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    catalog_url = f"sqlite:///{tmp_path}/catalog.db"
    return Cli(write_config(tmp_path / "replicator.toml", catalog_url), catalog_url)
