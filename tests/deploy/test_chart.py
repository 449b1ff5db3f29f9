"""The Helm chart, rendered by Helm's own engine and validated against Kubernetes schemas."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import CHART, EVERYTHING, by_kind, checkov, documents, render

# Custom resources: their schemas come with the operators' CRDs, which kubernetes-validate
# does not ship. Their shape is checked by the tests below instead.
CUSTOM_KINDS = {"ServiceMonitor", "ScaledObject"}
KUBERNETES = "1.31.0"


@pytest.mark.parametrize("values", [{}, EVERYTHING], ids=["defaults", "everything"])
def test_rendered_manifests_validate_against_kubernetes_schemas(values: dict[str, Any]) -> None:
    """Every built-in object the chart renders is valid for Kubernetes (strict: no unknown
    fields), with the default values and with every option switched on."""
    objects = documents(render(values))
    assert {"Deployment", "ConfigMap", "ServiceAccount", "Service"} <= set(by_kind(objects))
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_helm_lint_passes() -> None:
    """`helm lint` finds neither error nor warning in the chart, values.schema.json included
    (severities: 1 info, 2 warning, 3 error)."""
    result = helm.lint(str(CHART))
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] >= 2] == []


def test_values_schema_refuses_bad_values() -> None:
    """values.schema.json catches a mistyped value before anything reaches a cluster."""
    with pytest.raises(helm.HelmError, match="replicaCount"):
        render({"replicaCount": "three"})


def test_workload_identities_reach_the_service_account_and_pods() -> None:
    """IRSA, GKE and Azure Workload Identity annotations are set from the values, the pods
    carry Azure's opt-in label, and no Kubernetes API token is mounted."""
    objects = by_kind(documents(render(EVERYTHING)))
    account = objects["ServiceAccount"]
    annotations = account["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"].endswith(":role/replicator")
    assert annotations["iam.gke.io/gcp-service-account"].startswith("replicator@")
    assert annotations["azure.workload.identity/client-id"].startswith("0000")
    assert account["automountServiceAccountToken"] is False
    pod = objects["Deployment"]["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_secrets_are_referenced_never_inlined() -> None:
    """The chart creates no Secret: the ingest token is an existing Secret's key mounted as a
    file the daemon is told to read (an environment override), other files likewise."""
    objects = by_kind(documents(render(EVERYTHING)))
    assert "Secret" not in objects
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    token_file = env["REPLICATOR_HTTP__INGEST_TOKEN_FILE"]["value"]
    mount = next(m for m in container["volumeMounts"] if token_file.startswith(m["mountPath"]))
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "replicator"
    assert not any("valueFrom" in e for e in container["env"])
    kafka = next(m for m in container["volumeMounts"] if m["mountPath"].endswith("/kafka"))
    assert kafka["readOnly"] is True


def test_probes_resources_and_disruption_budget() -> None:
    """Liveness and readiness hit /healthz and /readyz on the admin port, ingest has a port
    of its own, memory is limited, and a PodDisruptionBudget selects exactly the pods."""
    objects = by_kind(documents(render()))
    deployment = objects["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "ingest": 8081}
    service_ports = {p["name"]: p["targetPort"] for p in objects["Service"]["spec"]["ports"]}
    assert service_ports == {"http": "http", "ingest": "ingest"}
    assert container["resources"]["limits"]["memory"]
    assert objects["PodDisruptionBudget"]["spec"]["selector"] == deployment["spec"]["selector"]
    config = objects["ConfigMap"]["data"]["replicator.toml"]
    assert 'bootstrap = "kafka-0.kafka:9092' in config


def test_keda_owns_the_replica_count_and_scales_on_group_lag() -> None:
    """With KEDA on, the Deployment sets no replicas (KEDA's HPA does) and the ScaledObject
    scales on the consumer group's lag of the changes topic."""
    objects = by_kind(documents(render(EVERYTHING)))
    assert "replicas" not in objects["Deployment"]["spec"]
    scaled = objects["ScaledObject"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    kafka = next(t for t in scaled["spec"]["triggers"] if t["type"] == "kafka")
    assert kafka["metadata"]["consumerGroup"] == "replicator"
    assert kafka["metadata"]["topic"] == "replicator.changes"
    monitor = objects["ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # With an admin token, Prometheus scrapes with it.
    credentials = monitor["spec"]["endpoints"][0]["authorization"]["credentials"]
    assert credentials == {"name": "replicator-admin", "key": "admin-token"}
    assert monitor["spec"]["endpoints"][0]["port"] == objects["Service"]["spec"]["ports"][0]["name"]


def test_rendered_manifests_pass_checkov(tmp_path: Path) -> None:
    """checkov's Kubernetes policies pass on the rendered manifests; the only skips are the
    two justified in the Deployment's annotations."""
    (tmp_path / "replicator.yaml").write_text(
        yaml.safe_dump_all(documents(render(EVERYTHING)), sort_keys=False)
    )
    result = subprocess.run(
        [
            checkov(),
            "--directory",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(result.stdout)
    failed = [
        (c["check_id"], c["resource"], c["check_name"]) for c in report["results"]["failed_checks"]
    ]
    assert failed == []
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    assert skipped == {"CKV_K8S_11", "CKV_K8S_15"}
