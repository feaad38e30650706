"""The Helm chart against the real API server: lint, render, dry-run, install, upgrade, uninstall."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from controlplane_harness import CHART_DIR, CRD_DIR, ControlPlane, ensure_binaries

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


def test_the_network_policy_admits_only_scrapes_of_the_operator(crds_installed: ControlPlane, namespace: str) -> None:
    docs = rendered(crds_installed, namespace, "--set", "networkPolicy.enabled=true")
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    out = crds_installed.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-", input=yaml.safe_dump(policy)
    ).stdout
    assert "(server dry run)" in out, out
    assert not [d for d in rendered(crds_installed, namespace) if d["kind"] == "NetworkPolicy"]  # off by default


def test_the_dashboard_configmap_carries_the_dashboard_and_can_be_turned_off(cluster: ControlPlane) -> None:
    def dashboards(*extra: str) -> list[dict[str, Any]]:
        return [d for d in rendered(cluster, "frugal-system", *extra) if d["kind"] == "ConfigMap"
                and "frugal.json" in d.get("data", {})]  # fmt: skip

    [configmap] = dashboards()  # on by default
    committed = json.loads((CHART_DIR / "dashboards" / "frugal.json").read_text())
    assert json.loads(configmap["data"]["frugal.json"]) == committed
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"  # what Grafana's sidecar looks for
    assert configmap["metadata"]["namespace"] == "frugal-system"
    [elsewhere] = dashboards("--set", "grafana.dashboard.namespace=monitoring",
                             "--set", "grafana.dashboard.labels.team=ml")  # fmt: skip
    assert elsewhere["metadata"]["namespace"] == "monitoring" and elsewhere["metadata"]["labels"]["team"] == "ml"
    assert dashboards("--set", "grafana.dashboard.enabled=false") == []


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


# What the operator's identity must be allowed, verb by verb: (group, resource, subresource, verbs).
# Children are written with server-side apply (PATCH that creates), so they need patch and create.
OPERATOR_ACCESS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("frugal.dev", "modeldeployments", "", ("get", "list", "watch", "patch")),  # reconciler get; kopf
    ("frugal.dev", "modeldeployments", "status", ("patch",)),  # Cluster.patch_status; kopf progress
    ("frugal.dev", "modeldeployments", "finalizers", ("update",)),  # blockOwnerDeletion on children
    ("frugal.dev", "hardwareprofiles", "", ("get", "list", "watch")),
    ("frugal.dev", "batchinferences", "", ("get", "list", "watch", "patch")),
    ("frugal.dev", "batchinferences", "status", ("patch",)),
    ("frugal.dev", "batchinferences", "finalizers", ("update",)),
    ("batch", "jobs", "", ("get", "list", "watch", "create", "patch", "delete")),
    ("apps", "deployments", "", ("get", "list", "watch", "create", "patch", "delete")),
    ("", "services", "", ("get", "list", "watch", "create", "patch", "delete")),
    ("policy", "poddisruptionbudgets", "", ("get", "list", "watch", "create", "patch", "delete")),
    ("networking.k8s.io", "networkpolicies", "", ("get", "list", "create", "patch", "delete")),
    ("", "pods", "", ("list", "watch")),  # a failed Job's termination message; pods in trouble
    ("", "events", "", ("create", "patch")),
    ("monitoring.coreos.com", "podmonitors", "", ("get", "list", "create", "patch")),
    ("apiextensions.k8s.io", "customresourcedefinitions", "", ("list", "watch")),  # kopf's scanning
    ("", "namespaces", "", ("list", "watch")),  # kopf, when it watches some namespaces
    # The scale-to-zero front's identity, and what its Role grants (the operator must hold it to grant it).
    ("", "serviceaccounts", "", ("get", "create", "patch", "delete")),
    ("rbac.authorization.k8s.io", "roles", "", ("get", "create", "patch", "delete")),
    ("rbac.authorization.k8s.io", "rolebindings", "", ("get", "create", "patch", "delete")),
    ("apps", "deployments", "scale", ("get", "patch")),
)
# ... and what it must not be: least privilege is part of the chart's contract.
OPERATOR_DENIED = (
    ("", "secrets", "", ("get", "list")),
    ("", "persistentvolumes", "", ("create", "patch")),  # only with modelCache.enabled
    ("frugal.dev", "modeldeployments", "", ("delete", "create")),
    ("frugal.dev", "hardwareprofiles", "", ("patch",)),
    ("", "pods", "", ("create", "delete")),
    ("rbac.authorization.k8s.io", "clusterroles", "", ("create", "patch")),
    ("rbac.authorization.k8s.io", "clusterrolebindings", "", ("create", "patch")),
    ("apiextensions.k8s.io", "customresourcedefinitions", "", ("create", "patch")),
)


def _allowed(
    cluster: ControlPlane,
    user: str,
    namespace: str,
    access: tuple[tuple[str, str, str, tuple[str, ...]], ...],
) -> dict[str, bool]:
    """Ask the API server's authorizer (SubjectAccessReview) about every (verb, resource) at once."""
    keys, reviews = [], []
    for group, resource, subresource, verbs in access:
        for verb in verbs:
            keys.append(f"{verb} {resource}{'/' + subresource if subresource else ''}.{group or 'core'}")
            attributes = {"group": group, "resource": resource, "subresource": subresource, "verb": verb,
                          "namespace": namespace}  # fmt: skip
            reviews.append({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                            "spec": {"user": user, "resourceAttributes": attributes}})  # fmt: skip
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": reviews})
    out = cluster.kubectl("create", "-f", "-", "-o", "json", input=body).stdout
    answers = [review["status"].get("allowed", False) for review in _json_stream(out)]
    assert len(answers) == len(keys)
    return dict(zip(keys, answers, strict=True))


def _json_stream(text: str) -> list[dict[str, Any]]:
    """kubectl prints one JSON document per created object, one after the other."""
    decoder, docs, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        doc, at = decoder.raw_decode(text, len(text) - len(text[at:].lstrip()))
        docs.append(doc)
    return docs


def test_rbac_covers_every_kind_the_operator_talks_to() -> None:
    from frugal.operator.cluster.apply import RESOURCES

    granted = {(group, resource) for group, resource, _, _ in OPERATOR_ACCESS}
    granted.add(("coordination.k8s.io", "leases"))  # a Role in the release namespace: test_leader_election
    granted.add(("", "secrets"))  # get by name, only objectStore.secretNames: test_bucket_artifacts
    # get/create/patch, only with modelCache.enabled: test_node_cache_volumes
    granted |= {("", "persistentvolumes"), ("", "persistentvolumeclaims")}
    used = {
        (api_version.rpartition("/")[0], plural) for (api_version, _), (_, plural, _) in RESOURCES.items()
    }
    assert used <= granted, used - granted


def test_the_templated_crds_are_the_repositorys_plus_keep(cluster: ControlPlane) -> None:
    docs = rendered(cluster, "default", "--show-only", "templates/crds.yaml")
    for crd in docs:
        metadata = crd["metadata"]
        assert metadata.pop("annotations") == {"helm.sh/resource-policy": "keep"}
        labels = metadata.pop("labels")
        assert labels["app.kubernetes.io/managed-by"] == "Helm" and labels["app.kubernetes.io/part-of"] == "frugal"
        [source] = [f for f in CRD_DIR.glob("*.yaml") if yaml.safe_load(f.read_text())["metadata"]["name"] == metadata["name"]]
        original = yaml.safe_load(source.read_text())
        assert original["metadata"].pop("labels").items() <= labels.items()
        assert crd == original, source.name  # what fromYaml | toYaml gives back is the file, value for value
    assert len(docs) == len(list(CRD_DIR.glob("*.yaml")))
    off = rendered(cluster, "default", "--set", "crds.install=false")
    assert off and not [d for d in off if d["kind"] == "CustomResourceDefinition"]


def adopt_crds(cluster: ControlPlane, namespace: str) -> None:
    """What README tells a user whose CRDs were applied with kubectl: hand them to the release."""
    for crd in cluster.kubectl("get", "crd", "-l", "app.kubernetes.io/part-of=frugal", "-o", "name").stdout.split():
        cluster.kubectl("label", crd, "app.kubernetes.io/managed-by=Helm", "--overwrite")
        cluster.kubectl("annotate", crd, f"meta.helm.sh/release-name={RELEASE}",
                        f"meta.helm.sh/release-namespace={namespace}", "--overwrite")  # fmt: skip


def chart_with_a_new_crd_field(tmp_path: Path) -> Path:
    """A copy of the chart whose ModelDeployment CRD has one more field, as a new chart version would."""
    chart = tmp_path / "frugal"
    shutil.copytree(CHART_DIR, chart)
    path = chart / "files" / "crds" / "modeldeployment.yaml"
    crd = yaml.safe_load(path.read_text())
    slo = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["serving"]
    slo["properties"]["slo"]["properties"]["upgradeProbe"] = {
        "type": "string", "description": "A field only the upgraded chart has.",
    }  # fmt: skip
    path.write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def explain(cluster: ControlPlane, field: str, wanted: str, timeout_s: float = 60) -> str:
    """`kubectl explain field` once it shows `wanted` (the API server republishes a changed CRD's
    OpenAPI a little after the write)."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = cluster.kubectl("explain", field, check=False)
        if wanted in done.stdout:
            return done.stdout
        assert time.monotonic() < deadline, f"kubectl explain {field} never showed {wanted!r}: {done.stdout}{done.stderr}"
        time.sleep(0.5)


def test_install_upgrade_uninstall(crds_installed: ControlPlane, namespace: str, tmp_path: Path) -> None:
    helm, kubectl = crds_installed.helm, crds_installed.kubectl
    adopt_crds(crds_installed, namespace)
    helm("install", RELEASE, CHART_DIR, "--namespace", namespace)
    releases = json.loads(helm("list", "--namespace", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"], r["revision"]) for r in releases] == [(RELEASE, "deployed", "1")]
    deployment = _deployment(crds_installed, namespace)
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    kubectl("get", "serviceaccount", account, "-n", namespace)

    # The operator's identity may do exactly its job, in any namespace (it is cluster-wide).
    subject = f"system:serviceaccount:{namespace}:{account}"
    for where in (namespace, "some-user-namespace"):
        allowed = _allowed(crds_installed, subject, where, OPERATOR_ACCESS)
        assert [key for key, ok in allowed.items() if not ok] == [], where
    denied = _allowed(crds_installed, subject, namespace, OPERATOR_DENIED)
    assert [key for key, ok in denied.items() if ok] == []

    # The operator pod reads the artifacts claim where FRUGAL_PVC_ROOT says: <root>/<claim>.
    env = _env(crds_installed, namespace)
    pod = deployment["spec"]["template"]["spec"]
    claim = kubectl_json(crds_installed, "get", "pvc", "frugal-artifacts", "-n", namespace)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert env["FRUGAL_STORAGE_URI"] == "pvc://frugal-artifacts/"
    volume = next(v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName")
                  == "frugal-artifacts")  # fmt: skip
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts[volume] == f"{env['FRUGAL_PVC_ROOT']}/frugal-artifacts"
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True

    assert env["FRUGAL_LOG_LEVEL"] == "INFO"
    # A new chart version with a new CRD field: helm upgrade upgrades the CRD too. Helm 4 applies
    # server-side, and the fixture's `kubectl apply` still owns the CRDs' fields: the first upgrade
    # after adopting takes them over with --force-conflicts (README says so).
    upgraded = chart_with_a_new_crd_field(tmp_path)
    helm("upgrade", RELEASE, upgraded, "--namespace", namespace, "--set", "operator.logLevel=DEBUG",
         "--force-conflicts")  # fmt: skip
    assert _env(crds_installed, namespace)["FRUGAL_LOG_LEVEL"] == "DEBUG"
    explain(crds_installed, "modeldeployment.spec.serving.slo.upgradeProbe", "A field only the upgraded chart has.")
    history = json.loads(helm("history", RELEASE, "--namespace", namespace, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2]

    uninstalled = helm("uninstall", RELEASE, "--namespace", namespace)
    assert "customresourcedefinition" in (uninstalled.stdout + uninstalled.stderr).lower()  # named as kept
    left = kubectl(
        "get", "deployment", "-n", namespace, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name"
    )
    assert left.stdout.strip() == ""
    # CRDs outlive the release: deleting them would delete every user's ModelDeployments.
    kubectl("get", "crd", "modeldeployments.frugal.dev")
    # So does the artifacts claim (helm.sh/resource-policy: keep), and a reinstall adopts both,
    # back to this chart's schema.
    kubectl("get", "pvc", "frugal-artifacts", "-n", namespace)
    helm("install", RELEASE, CHART_DIR, "--namespace", namespace)
    deadline = time.monotonic() + 60
    while kubectl("explain", "modeldeployment.spec.serving.slo.upgradeProbe", check=False).returncode == 0:
        assert time.monotonic() < deadline, "the reinstalled chart did not restore the ModelDeployment CRD"
        time.sleep(0.5)


def kubectl_json(cluster: ControlPlane, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(cluster.kubectl(*args, "-o", "json").stdout)
    return found


def test_operator_env_names_only_flags_the_operator_reads(cluster: ControlPlane, namespace: str) -> None:
    """Every FRUGAL_* variable the chart sets is one `frugal operator` reads (its --help names it)."""
    from frugal.operator.cluster.operator_command import ENVIRONMENT, build_parser

    docs = rendered(cluster, namespace, "--set", "operator.watchNamespaces={a,b}")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    frugal = {name for name in env if name.startswith("FRUGAL_")}
    assert frugal <= set(ENVIRONMENT.values()), frugal - set(ENVIRONMENT.values())
    assert all(name in build_parser().format_help() for name in frugal)
    assert env["FRUGAL_NAMESPACES"] == "a,b"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (
        str(ports["metrics"]) == env["FRUGAL_METRICS_PORT"]
        and str(ports["health"]) == env["FRUGAL_HEALTH_PORT"]
    )
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert {"cpu", "memory", "ephemeral-storage"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory", "ephemeral-storage"} <= set(container["resources"]["limits"])


def test_a_fresh_install_owns_its_crds_and_upgrades_them_without_force(tmp_path: Path) -> None:
    """A cluster of its own that has never seen frugal, as a new user's: `helm install` creates the
    CRDs, a plain `helm upgrade` (no --force-conflicts: nothing else owns their fields) changes one,
    and `helm uninstall` keeps the CRDs and the artifacts claim."""
    cluster = ControlPlane(ensure_binaries(), tmp_path / "controlplane", with_controller_manager=False)
    cluster.start()
    try:
        helm, kubectl, namespace = cluster.helm, cluster.kubectl, "frugal-system"
        assert kubectl("get", "crd", "modeldeployments.frugal.dev", check=False).returncode != 0
        helm("install", RELEASE, CHART_DIR, "--namespace", namespace, "--create-namespace")
        kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/modeldeployments.frugal.dev")
        managed = kubectl_json(cluster, "get", "crd", "modeldeployments.frugal.dev")["metadata"]
        assert managed["annotations"]["meta.helm.sh/release-name"] == RELEASE
        helm("upgrade", RELEASE, chart_with_a_new_crd_field(tmp_path), "--namespace", namespace)
        explain(cluster, "modeldeployment.spec.serving.slo.upgradeProbe", "A field only the upgraded chart has.")
        helm("uninstall", RELEASE, "--namespace", namespace)
        kubectl("get", "crd", "modeldeployments.frugal.dev")
        kubectl("get", "pvc", "frugal-artifacts", "-n", namespace)
    finally:
        cluster.stop()
