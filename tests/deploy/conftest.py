"""Fixtures for checking deploy/: nothing here can run a cluster or a cloud, so the chart is
rendered with Helm's own engine (helm-python-sdk) and every artefact is checked by the
ecosystem's validators."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CHART = DEPLOY / "helm" / "replicator"
# Every optional part switched on, with workload identities on all three clouds.
EVERYTHING: dict[str, Any] = {
    "image": {"digest": "sha256:" + "0" * 64},
    "networkPolicy": {
        "enabled": True,
        "from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
    },
    "keda": {"enabled": True, "prometheus": {"enabled": True}},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "serviceAccount": {
        "awsRoleArn": "arn:aws:iam::123456789012:role/replicator",
        "gcpServiceAccount": "replicator@project.iam.gserviceaccount.com",
        "azureClientId": "00000000-0000-0000-0000-000000000000",
    },
    "secretMounts": [
        {"name": "kafka", "secretName": "kafka-client-tls", "mountPath": "/etc/replicator/kafka"}
    ],
    "env": [{"name": "REPLICATOR_LOG_LEVEL", "value": "debug"}],
    "adminToken": {"secretName": "replicator-admin", "key": "admin-token"},
}


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """The chart's templates rendered as `helm template` would: path -> text."""
    with helm.Chart.load(str(CHART)) as chart:
        rendered: dict[str, str] = chart.render(values or {}, name="rel", namespace="data")
    return rendered


def documents(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """The Kubernetes objects among the rendered files (NOTES.txt is not one)."""
    found = []
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            found += [doc for doc in yaml.safe_load_all(text) if doc]
    return found


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in objects}


def checkov() -> str:
    """The checkov program: it lives in a virtualenv of its own (``make setup``) because its
    pinned dependencies would downgrade the SDKs the product is tested with."""
    candidates = [
        os.environ.get("CHECKOV", ""),
        str(Path(sys.prefix) / "tools" / "checkov" / "bin" / "checkov"),
        shutil.which("checkov") or "",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("checkov is not installed: run `make setup` (or set CHECKOV=PATH)")
