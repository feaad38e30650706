"""The Helm chart against the real API server: lint, render, dry-run, install, upgrade, uninstall."""

from __future__ import annotations

import json
from typing import Any

import yaml
from controlplane_harness import CHART_DIR, ControlPlane

RELEASE = "frugal"


def rendered(cluster: ControlPlane, namespace: str, *extra: str) -> list[dict[str, Any]]:
    out = cluster.helm("template", RELEASE, CHART_DIR, "--namespace", namespace, *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_chart_lints(cluster: ControlPlane) -> None:
    out = cluster.helm("lint", "--strict", CHART_DIR).stdout
    assert "0 chart(s) failed" in out, out


def test_rendered_chart_is_accepted_by_the_server(crds_installed: ControlPlane, namespace: str) -> None:
    docs = rendered(crds_installed, namespace)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount"} <= kinds, kinds
    body = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    out = crds_installed.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-", input=body
    ).stdout
    assert out.count("(server dry run)") == len(docs), out


def test_values_schema_rejects_a_typo(cluster: ControlPlane) -> None:
    proc = cluster.helm("template", RELEASE, CHART_DIR, "--set", "operator.logLevl=DEBUG", check=False)
    assert proc.returncode != 0
    assert "logLevl" in proc.stderr, proc.stderr


def _deployment(cluster: ControlPlane, namespace: str) -> dict[str, Any]:
    names = cluster.kubectl(
        "get", "deployment", "-n", namespace, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "json"
    ).stdout
    items = json.loads(names)["items"]
    assert len(items) == 1, [i["metadata"]["name"] for i in items]
    return dict(items[0])


def _env(cluster: ControlPlane, namespace: str) -> dict[str, str]:
    container = _deployment(cluster, namespace)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_install_upgrade_uninstall(crds_installed: ControlPlane, namespace: str) -> None:
    helm, kubectl = crds_installed.helm, crds_installed.kubectl
    helm("install", RELEASE, CHART_DIR, "--namespace", namespace)
    releases = json.loads(helm("list", "--namespace", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"], r["revision"]) for r in releases] == [(RELEASE, "deployed", "1")]
    deployment = _deployment(crds_installed, namespace)
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    kubectl("get", "serviceaccount", account, "-n", namespace)

    # The operator's identity may do its job: watch ModelDeployments and write their status.
    subject = f"system:serviceaccount:{namespace}:{account}"
    for verb, resource in (("watch", "modeldeployments.frugal.dev"), ("patch", "modeldeployments.frugal.dev/status"),
                           ("list", "hardwareprofiles.frugal.dev"), ("create", "deployments.apps")):  # fmt: skip
        can = kubectl("auth", "can-i", verb, resource, "--as", subject, "-n", namespace, check=False)
        assert can.stdout.strip() == "yes", (verb, resource, can.stdout, can.stderr)

    assert _env(crds_installed, namespace)["FRUGAL_LOG_LEVEL"] == "INFO"
    helm("upgrade", RELEASE, CHART_DIR, "--namespace", namespace, "--set", "operator.logLevel=DEBUG")
    assert _env(crds_installed, namespace)["FRUGAL_LOG_LEVEL"] == "DEBUG"
    history = json.loads(helm("history", RELEASE, "--namespace", namespace, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2]

    helm("uninstall", RELEASE, "--namespace", namespace)
    left = kubectl(
        "get", "deployment", "-n", namespace, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name"
    )
    assert left.stdout.strip() == ""
    # CRDs outlive the release: deleting them would delete every user's ModelDeployments.
    kubectl("get", "crd", "modeldeployments.frugal.dev")
