"""The shipped example configuration loads and is what the docs say it is."""

from __future__ import annotations

from pathlib import Path

from replicator.daemon.config import load_daemon_config

DEPLOY = Path(__file__).parents[2] / "deploy"


def test_example_config_loads() -> None:
    config = load_daemon_config(DEPLOY / "replicator.example.toml")
    assert [route.name for route in config.routes] == ["clickstream"]
    assert config.kafka.partitions == 12
    assert config.copy_.memory == "1GiB"
