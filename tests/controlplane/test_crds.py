"""The CRDs in crds/ against the real API server: they establish, explain and print what they declare."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from controlplane_harness import CRD_DIR, ControlPlane


def crd_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(CRD_DIR.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def crd_named(kind: str) -> dict[str, Any]:
    return next(d for d in crd_documents() if d["spec"]["names"]["kind"] == kind)


def schema_at(crd: dict[str, Any], dotted: str) -> dict[str, Any]:
    node: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in dotted.split("."):
        node = node["properties"][part]
    return node


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_both_crds_are_established_with_accepted_names(crds_installed: ControlPlane) -> None:
    expected = {d["metadata"]["name"] for d in crd_documents()}
    assert {"modeldeployments.frugal.dev", "hardwareprofiles.frugal.dev"} <= expected
    listed = json.loads(crds_installed.kubectl("get", "crd", "-o", "json").stdout)["items"]
    conditions = {
        item["metadata"]["name"]: {c["type"]: c["status"] for c in item["status"]["conditions"]}
        for item in listed
    }
    for name in expected:
        assert conditions[name].get("Established") == "True", (name, conditions.get(name))
        assert conditions[name].get("NamesAccepted") == "True", (name, conditions.get(name))


def test_short_names_and_scopes_are_served(crds_installed: ControlPlane) -> None:
    out = crds_installed.kubectl("api-resources", "--api-group=frugal.dev", "--no-headers").stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["modeldeployments"][1] == "md"
    assert "true" in rows["modeldeployments"]  # namespaced
    assert rows["hardwareprofiles"][1] == "hwp"
    assert "false" in rows["hardwareprofiles"]  # cluster-scoped


def test_explain_documents_every_serving_field(crds_installed: ControlPlane) -> None:
    serving = schema_at(crd_named("ModelDeployment"), "spec.serving")
    out = squash(crds_installed.kubectl("explain", "modeldeployment.spec.serving").stdout)
    assert squash(serving["description"]) in out
    for name, prop in serving["properties"].items():
        assert re.search(rf"\b{name}\b", out), f"kubectl explain does not list spec.serving.{name}"
        assert squash(prop["description"]) in out, f"description of spec.serving.{name} missing"


def test_explain_reaches_nested_fields(crds_installed: ControlPlane) -> None:
    slo = schema_at(crd_named("ModelDeployment"), "spec.serving.slo.latencyP95Ms")
    out = squash(crds_installed.kubectl("explain", "md.spec.serving.slo.latencyP95Ms").stdout)
    assert squash(slo["description"]) in out
    hwp = schema_at(crd_named("HardwareProfile"), "spec.accelerator")
    out = squash(crds_installed.kubectl("explain", "hwp.spec.accelerator").stdout)
    assert squash(hwp["description"]) in out


def _minimal_model_deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "frugal.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "zoo://digits-mlp"},
            "serving": {"hardwareProfiles": ["cpu-small"], "slo": {"latencyP95Ms": 50}},
        },
    }


def test_server_applies_schema_defaults(crds_installed: ControlPlane, namespace: str) -> None:
    body = json.dumps(_minimal_model_deployment("defaults"))
    created = json.loads(
        crds_installed.kubectl("create", "-n", namespace, "-o", "json", "-f", "-", input=body).stdout
    )
    spec = created["spec"]
    crd = crd_named("ModelDeployment")
    for path in ("serving.shards", "autoscaling.minReplicas", "autoscaling.maxReplicas",
                 "serving.batching.maxBatchSize", "compression.accuracyBudget.maxDrop"):  # fmt: skip
        value: Any = spec
        for part in path.split("."):
            value = value[part]
        assert value == schema_at(crd, f"spec.{path}")["default"], path


def test_printer_columns_show_status(crds_installed: ControlPlane, namespace: str) -> None:
    crds_installed.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(_minimal_model_deployment("printed"))
    )
    status = {
        "phase": "Serving",
        "selected": {"variant": "int8-dynamic", "hardwareProfile": "cpu-small", "shards": 1},
        "replicas": 3,
        "latencyP95Ms": 12.5,
        "cost": {"perHour": "0.42"},
    }
    crds_installed.kubectl(
        "patch", "md", "printed", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    lines = crds_installed.kubectl("get", "md", "-n", namespace).stdout.splitlines()
    header, row = lines[0], lines[1]
    columns = crd_named("ModelDeployment")["spec"]["versions"][0]["additionalPrinterColumns"]
    for column in columns:
        assert column["name"].upper() in header, column["name"]
    for shown in ("printed", "Serving", "int8-dynamic", "cpu-small", "3", "12.5", "0.42"):
        assert shown in row.split(), (shown, row)


def test_status_is_a_subresource(crds_installed: ControlPlane, namespace: str) -> None:
    """A spec update cannot write status; only the status subresource can."""
    md = _minimal_model_deployment("subresource")
    md["status"] = {"phase": "Serving"}
    created = json.loads(
        crds_installed.kubectl(
            "create", "-n", namespace, "-o", "json", "-f", "-", input=json.dumps(md)
        ).stdout
    )
    assert created.get("status") in (None, {}), created.get("status")
    assert created["metadata"]["generation"] == 1


def test_unknown_fields_are_rejected(crds_installed: ControlPlane, namespace: str) -> None:
    md = _minimal_model_deployment("typo")
    md["spec"]["serving"]["slos"] = {"latencyP95Ms": 5}
    proc = crds_installed.kubectl(
        "create", "-n", namespace, "--validate=strict", "-f", "-", input=json.dumps(md), check=False
    )
    assert proc.returncode != 0
    assert "spec.serving.slos" in proc.stderr


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("spec.compression.pruning.thresholdScale", "thresholdScale × mean |w|"),
        ("spec.compression.distillation.student.depthFactor", "fraction of the teacher's hidden layers"),
        ("spec.compression.accuracyBudget.metric", "the minimum, over the validation rows"),
        ("spec.compression.accuracyBudget.metric", "f1 for classifiers (macro F1"),
        ("spec.storage.uri", "s3://, gs:// or az://<bucket>/<prefix> (reached as spec.objectStore says)"),
        ("spec.objectStore.secretName", "The keys reach only the pods that read or write the store"),
        ("spec.serving.shards", '"auto" any count from 1 to 4, and a range "N-M" (1 <= N <= M <= 16, e.g. "1-4")'),
        ("spec.serving.shards", "the planner picks the cheapest (variant, hardware profile, shard count)"),
    ],
)
def test_explain_says_what_the_wired_fields_do(crds_installed: ControlPlane, path: str, says: str) -> None:
    """What kubectl explain promises for these fields is what the compression Job does (see
    test_operator's shaped compression test and the compression component's tests)."""
    described = schema_at(crd_named("ModelDeployment"), path)["description"]
    assert squash(says) in squash(described)
    out = squash(crds_installed.kubectl("explain", "md." + path).stdout)
    assert squash(described) in out
