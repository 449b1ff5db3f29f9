"""The Terraform examples parse and pass checkov's policies; deploy/'s YAML passes yamllint.
Nothing is applied: no cloud is reachable from the test bed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from hcl2.utils import SerializationOptions
from yamllint import linter
from yamllint.config import YamlLintConfig

from tests.deploy.conftest import DEPLOY, checkov

TERRAFORM = DEPLOY / "terraform"
CLOUDS = ("aws", "gcp", "azure")
ROOT = DEPLOY.parent
# Block labels and strings without their HCL quotes.
_PLAIN = SerializationOptions(strip_string_quotes=True, with_comments=False)


def parse(directory: Path) -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as handle:
            for key, value in hcl2.load(handle, serialization_options=_PLAIN).items():
                merged.setdefault(key, []).extend(value)
    return merged


def resource_types(parsed: dict[str, list[Any]]) -> set[str]:
    return {kind for block in parsed.get("resource", []) for kind in block}


@pytest.mark.parametrize("cloud", CLOUDS)
def test_each_cloud_offers_queue_and_push_delivery(cloud: str) -> None:
    """Every example parses, declares the `delivery` choice and wires both forms."""
    parsed = parse(TERRAFORM / cloud)
    variables = {name for block in parsed["variable"] for name in block}
    assert {"delivery", "ingest_url"} <= variables
    ingest = next(block["ingest_url"] for block in parsed["variable"] if "ingest_url" in block)
    assert ingest["sensitive"] is True
    wanted = {
        "aws": {"aws_sqs_queue", "aws_sns_topic_subscription", "aws_s3_bucket_notification"},
        "gcp": {"google_pubsub_subscription", "google_storage_notification"},
        "azure": {
            "azurerm_storage_queue",
            "azurerm_eventgrid_system_topic_event_subscription",
        },
    }[cloud]
    assert wanted <= resource_types(parsed)


def test_checkov_passes_on_terraform() -> None:
    """checkov finds nothing; the few skips are the ones justified inline."""
    result = subprocess.run(
        [
            checkov(),
            "--directory",
            str(TERRAFORM),
            "--framework",
            "terraform",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        (c["check_id"], c["resource"], c["file_path"])
        for report in reports
        for c in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert sum(len(r["results"]["passed_checks"]) for r in reports) > 30


def yaml_files() -> list[Path]:
    templates = DEPLOY / "helm" / "replicator" / "templates"
    return sorted(p for p in DEPLOY.rglob("*.yaml") if templates not in p.parents)


def test_yaml_passes_yamllint() -> None:
    config = YamlLintConfig(file=str(ROOT / ".yamllint.yaml"))
    problems = [
        f"{path.relative_to(ROOT)}:{problem.line}: {problem.message}"
        for path in yaml_files()
        for problem in linter.run(path.read_text(), config, str(path))
    ]
    assert len(yaml_files()) >= 3
    assert problems == []


def test_compose_stack_is_complete() -> None:
    """The compose file runs Kafka, PostgreSQL, the three emulators and the daemon, which
    waits for its dependencies and reads a configuration pointing at them."""
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"kafka", "postgres", "s3", "gcs", "azure", "replicator"} <= set(services)
    daemon = services["replicator"]
    assert set(daemon["depends_on"]) == {"kafka", "postgres", "s3", "gcs", "azure"}
    config = compose["configs"][daemon["configs"][0]["source"]]["content"]
    assert 'bootstrap = "kafka:9092"' in config
    assert "@postgres:5432/" in config
