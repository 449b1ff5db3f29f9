"""The daemon's configuration: file, environment overrides, secrets by reference, and
`replicator config check`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from replicator.daemon.config import (
    DEFAULT_CATALOG_URL,
    DaemonConfig,
    check_config,
    load_daemon_config,
)
from replicator.errors import ConfigError

ROUTES = [{"name": "lake", "source": "s3://lake/", "destinations": ["gs://lake/"]}]
FILE = """
[kafka]
bootstrap = "from-file:9092"
partitions = 6

[copy]
workers = 8

[[routes]]
name = "lake"
source = "s3://lake/"
destinations = ["gs://lake/"]
"""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No REPLICATOR_* setting of the test session (the test bed exports some) leaks in."""
    for name in list(os.environ):
        if name.upper().startswith("REPLICATOR_") or name.upper().startswith("COPY"):
            monkeypatch.delenv(name)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "replicator.toml"
    path.write_text(FILE)
    return path


class TestEnvironmentOverrides:
    def test_environment_wins_over_the_file_setting_by_setting(
        self, config_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("REPLICATOR_KAFKA__BOOTSTRAP", "from-env:9092")
        monkeypatch.setenv("REPLICATOR_COPY__WORKERS", "128")
        config = load_daemon_config(config_file)
        assert config.kafka.bootstrap == "from-env:9092"
        assert config.kafka.partitions == 6  # the file's, untouched by the override beside it
        assert config.copy_.workers == 128

    def test_automatic_retries_of_failed_changes_can_be_turned_off(
        self, config_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        assert load_daemon_config(config_file).copy_.retry_failed_after == timedelta(minutes=30)
        monkeypatch.setenv("REPLICATOR_COPY__RETRY_FAILED_AFTER", "off")
        assert load_daemon_config(config_file).copy_.retry_failed_after is None
        monkeypatch.setenv("REPLICATOR_COPY__RETRY_FAILED_AFTER", "2h")
        assert load_daemon_config(config_file).copy_.retry_failed_after == timedelta(hours=2)
        monkeypatch.setenv("REPLICATOR_COPY__RETRY_FAILED_AFTER", "soon")
        with pytest.raises(ConfigError, match="retry_failed_after"):
            load_daemon_config(config_file)

    def test_striping_has_a_threshold_or_is_off(
        self, config_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        assert load_daemon_config(config_file).copy_.stripe_threshold_bytes == 1024**3
        monkeypatch.setenv("REPLICATOR_COPY__STRIPE_THRESHOLD", "off")
        assert load_daemon_config(config_file).copy_.stripe_threshold_bytes is None
        monkeypatch.setenv("REPLICATOR_COPY__STRIPE_THRESHOLD", "256MiB")
        assert load_daemon_config(config_file).copy_.stripe_threshold_bytes == 256 * 1024**2
        for bad in ("1MiB", "big"):
            monkeypatch.setenv("REPLICATOR_COPY__STRIPE_THRESHOLD", bad)
            with pytest.raises(ConfigError, match="stripe_threshold"):
                load_daemon_config(config_file)

    def test_only_prefixed_variables_count(
        self, config_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An alias must not make an unprefixed COPY__WORKERS a setting."""
        monkeypatch.setenv("COPY__WORKERS", "3")
        assert load_daemon_config(config_file).copy_.workers == 8

    def test_misspelt_override_is_an_error_naming_it(
        self, config_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("REPLICATOR_KAFKA__BOOTSTARP", "x:1")
        with pytest.raises(ConfigError, match=r"kafka\.bootstarp"):
            load_daemon_config(config_file)

    def test_catalog_variable_may_hold_just_the_url(
        self, config_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """REPLICATOR_CATALOG is also what the catalog commands read: the same URL works."""
        monkeypatch.setenv("REPLICATOR_CATALOG", f"sqlite:///{tmp_path}/c.db")
        assert load_daemon_config(config_file).catalog.url == f"sqlite:///{tmp_path}/c.db"

    def test_without_a_file_defaults_and_routes_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("REPLICATOR_ROUTES", json.dumps(ROUTES))
        config = load_daemon_config(None)
        assert config.catalog.url == DEFAULT_CATALOG_URL
        assert config.kafka.bootstrap == "127.0.0.1:9092"
        assert [r.name for r in config.routes] == ["lake"]

    def test_without_a_file_or_routes_the_error_says_what_is_missing(self) -> None:
        with pytest.raises(ConfigError, match=r"no file.*no \[\[routes\]\] and no \[\[groups\]\]"):
            load_daemon_config(None)

    def test_model_validate_ignores_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Code that builds a configuration from data gets exactly that data."""
        monkeypatch.setenv("REPLICATOR_KAFKA__BOOTSTRAP", "from-env:9092")
        config = DaemonConfig.model_validate({"routes": ROUTES})
        assert config.kafka.bootstrap == "127.0.0.1:9092"


class TestSecretsByReference:
    def test_catalog_password_from_a_file_goes_into_the_url_quoted(self, tmp_path: Path) -> None:
        secret = tmp_path / "pg"
        secret.write_text("p@ss/word:1\n")
        config = DaemonConfig.model_validate(
            {
                "routes": ROUTES,
                "catalog": {"url": "postgresql://app@db:5432/lake", "password_file": str(secret)},
            }
        )
        assert config.catalog.resolved_url() == "postgresql://app:p%40ss%2Fword%3A1@db:5432/lake"
        assert "p@ss" not in repr(config)

    def test_catalog_password_from_the_environment(self) -> None:
        config = DaemonConfig.model_validate(
            {
                "routes": ROUTES,
                "catalog": {"url": "postgresql://app@db/lake", "password_env": "PG_PASSWORD"},
            }
        )
        assert config.catalog.resolved_url({"PG_PASSWORD": "s3cret"}) == (
            "postgresql://app:s3cret@db/lake"
        )
        with pytest.raises(ConfigError, match="PG_PASSWORD is not set"):
            config.catalog.resolved_url({})

    def test_two_sources_for_one_secret_are_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="not both"):
            load_daemon_config_from(
                tmp_path,
                '[catalog]\npassword_env = "A"\npassword_file = "/run/secrets/pg"\n',
            )

    def test_ingest_token_from_a_file(self, tmp_path: Path) -> None:
        token = tmp_path / "token"
        token.write_text("tok-123\n")
        config = DaemonConfig.model_validate(
            {"routes": ROUTES, "http": {"ingest_token_file": str(token)}}
        )
        assert config.http.ingest_token({"REPLICATOR_INGEST_TOKEN": "other"}) == "tok-123"


def load_daemon_config_from(tmp_path: Path, extra: str) -> DaemonConfig:
    path = tmp_path / "c.toml"
    path.write_text(FILE + extra)
    return load_daemon_config(path)


class TestConfigCheck:
    def test_every_problem_at_once_without_secret_values(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Bad values in the file and in the environment, and an unreadable secret file, are
        all reported in one run, one per line, exit 2; no secret value is ever printed."""
        path = tmp_path / "bad.toml"
        path.write_text(
            FILE.replace("partitions = 6", "partitions = 0")
            + '\n[http]\ningest_token_file = "/nonexistent/token"\n'
            + '\n[deletes]\nsweep_interval = "soon"\n'
        )
        result = run_cli(
            "config",
            "check",
            str(path),
            env={"REPLICATOR_COPY__MEMORY": "lots", "REPLICATOR_INGEST_TOKEN": "tok-SECRET"},
        )
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 3, result.stderr
        assert all(line.startswith(f"{path}: ") for line in lines)
        text = result.stderr
        assert "kafka.partitions" in text
        assert "copy.memory" in text
        assert "deletes.sweep_interval" in text
        assert "tok-SECRET" not in text + result.stdout
        # Once the values are fixed, the secret file is the one problem left.
        fixed = tmp_path / "fixed.toml"
        fixed.write_text(FILE + '\n[http]\ningest_token_file = "/nonexistent/token"\n')
        assert check_config(fixed) == [
            "http.ingest_token: cannot read /nonexistent/token: No such file or directory"
        ]

    def test_librdkafka_properties_are_judged_by_librdkafka(self, tmp_path: Path) -> None:
        """Unknown librdkafka properties and bad values are found before the daemon runs."""
        path = tmp_path / "kafka.toml"
        path.write_text(
            FILE + '\n[kafka.librdkafka]\n"securty.protocol" = "SSL"\n"client.id" = "r"\n'
        )
        problems = check_config(path)
        assert len(problems) == 1
        assert "securty.protocol" in problems[0]

    def test_a_good_configuration_is_ok(self, config_file: Path) -> None:
        result = run_cli("config", "check", str(config_file))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{config_file}: ok"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("REPLICATOR_")}
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
        check=False,
    )
