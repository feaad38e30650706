"""Upgrading the operator keeps models serving: the new operator takes over the serving objects an
earlier version wrote, under load, without a failed request.

Each case starts from a model served by this operator (its Jobs run here, its artifacts real), stops
the operator, and puts back the serving objects (the shard's Deployment, Service and
PodDisruptionBudget, the endpoint Service) as a fixture says an earlier version wrote them, applied
under the operator's own field manager. Then the operator starts again while a client calls the
endpoint:

- ``fixtures/upgrade/main-2026-12.yaml`` is what this version writes, captured from it
  (``FRUGAL_CAPTURE_UPGRADE_FIXTURES=1`` rewrites it): the next versions' tests start from it unchanged.
  Taken over in place: nothing is replaced.
- ``fixtures/upgrade/before-revisions.yaml`` is the same model as versions before the serving revision
  wrote it (commit 78dbf22): selectors without ``frugal.dev/revision``. A Deployment's selector is
  immutable, so the operator replaces it: the same option under revision 1, started beside it, the
  endpoint moved once it is ready, the old Deployment deleted after (status.replan reason Replace).

The test plays the kubelet and the endpoint Service (`played_serving`), as test_rollover.py does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane_harness import EXAMPLES_DIR, ControlPlane
from operator_harness import (
    Operator,
    autoscaled_namespace,
    events_for,
    get,
    kubectl_json,
    operator_counter,
    run_and_finish,
    status_of,
    wait_for,
    wait_object,
)
from played_serving import Load, PlayedKubelet

from frugal.operator.control.port import FIELD_MANAGER

NAME = "digits-upgrade"
FIXTURES = Path(__file__).parent / "fixtures" / "upgrade"
CURRENT_FIXTURE = FIXTURES / "main-2026-12.yaml"
RATE_RPS = 10.0
SERVING_KINDS = ("deployment", "service", "poddisruptionbudget")
# Set by the API server, not by whoever wrote the object.
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")


def reconciles(operator: Operator) -> float:
    try:
        return operator_counter(operator, "frugal_operator_reconcile_duration_seconds_count")
    except (OSError, StopIteration):
        return 0.0  # not listening yet, or no pass yet


def manifests() -> str:
    documents = list(yaml.safe_load_all((EXAMPLES_DIR / "digits.yaml").read_text()))
    md = next(d for d in documents if d["kind"] == "ModelDeployment")
    md["metadata"]["name"] = NAME
    md["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 1, "replanning": {"enabled": False}}
    return yaml.safe_dump_all(documents)


def serving_objects(cluster: ControlPlane, ns: str) -> list[dict[str, Any]]:
    """The model's serving objects as stored, less what the API server sets."""
    found = []
    for kind in SERVING_KINDS:
        for obj in kubectl_json(cluster, "get", kind, "-n", ns, "-l", f"frugal.dev/model-deployment={NAME}")["items"]:
            if obj["metadata"]["labels"].get("app.kubernetes.io/component") not in ("serving", "endpoint"):
                continue
            for field in SERVER_FIELDS:
                obj["metadata"].pop(field, None)
            obj["metadata"].pop("annotations", None)
            obj.pop("status", None)
            for field in ("clusterIP", "clusterIPs"):
                obj["spec"].pop(field, None)
            obj["spec"].get("template", {}).get("metadata", {}).pop("creationTimestamp", None)
            found.append(obj)
    return sorted(found, key=lambda o: (o["kind"], o["metadata"]["name"]))


def capture(cluster: ControlPlane, ns: str, uid: str, work: Path) -> str:
    text = yaml.safe_dump_all(serving_objects(cluster, ns), sort_keys=True)
    return text.replace(str(work), "${WORKDIR}").replace(uid, "${UID}").replace(f"namespace: {ns}", "namespace: ${NAMESPACE}")


def render(fixture: Path, ns: str, uid: str, work: Path) -> str:
    text = fixture.read_text().replace("${WORKDIR}", str(work)).replace("${UID}", uid)
    return text.replace("${NAMESPACE}", ns)


@pytest.fixture(scope="module")
def upgrade_env(crds_installed: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("upgrade")
    with autoscaled_namespace(crds_installed, work, "upgrade", ["--rate-window", "10s"]) as (
        operator,
        prometheus,
        namespace,
    ):
        yield {"operator": operator, "prometheus": prometheus, "namespace": namespace, "work": work}


def serve_then_swap(env: dict[str, Any], fixture: Path) -> tuple[Operator, PlayedKubelet, str]:
    """The model served by this operator; then the operator stopped and its serving objects replaced
    by `fixture`'s. Returns the operator (stopped), the played kubelet (serving the fixture's pods)."""
    operator: Operator = env["operator"]
    cluster, ns, work = operator.cluster, env["namespace"], env["work"]
    cluster.kubectl("delete", "modeldeployment", NAME, "-n", ns, "--ignore-not-found", "--wait=true")
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=manifests())
    for job in (f"{NAME}-g1-compress", f"{NAME}-g1-profile-local-cpu"):
        proc = run_and_finish(cluster, wait_object(cluster, operator, "job", ns, job), work)
        assert proc.returncode == 0, proc.stderr[-3000:]
    kubelet = PlayedKubelet(cluster, env["prometheus"], ns, work, NAME)

    def serving() -> bool:
        kubelet.sync()
        return status_of(cluster, ns, NAME).get("phase") == "Serving"

    try:
        wait_for("phase Serving", serving, operator)
        uid = (get(cluster, "modeldeployment", ns, NAME) or {})["metadata"]["uid"]
        if os.environ.get("FRUGAL_CAPTURE_UPGRADE_FIXTURES") and fixture == CURRENT_FIXTURE:
            fixture.parent.mkdir(parents=True, exist_ok=True)
            fixture.write_text(
                "# The serving objects this operator writes for the test's model (tests/controlplane/"
                "test_upgrade.py),\n# captured from it: a later version's upgrade test starts from them "
                "unchanged.\n" + capture(cluster, ns, uid, work)
            )
        operator.stop()
        kubelet.stop()
        for obj in serving_objects(cluster, ns):
            cluster.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], "-n", ns, "--wait=true")
        cluster.kubectl(
            "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "--force-conflicts", "-f", "-",
            input=render(fixture, ns, uid, work),
        )  # fmt: skip
        kubelet.sync()
        port = kubelet.pick(0)
        assert port is not None, "the fixture's endpoint selects none of its pods"
        kubelet.done(port)
    except BaseException:
        kubelet.stop()  # no server process outlives a failed test
        raise
    return operator, kubelet, ns


def test_the_serving_objects_this_version_writes_are_taken_over_in_place(upgrade_env: dict[str, Any]) -> None:
    operator, kubelet, ns = serve_then_swap(upgrade_env, CURRENT_FIXTURE)
    cluster = operator.cluster
    try:
        before = {o["metadata"]["name"] for o in serving_objects(cluster, ns)}
        with Load(kubelet, RATE_RPS) as load:
            operator.start()
            wait_for("two passes of the operator over the model", lambda: reconciles(operator) >= 2, operator)
            answered = len(load.answers)
            wait_for("requests after them", lambda: kubelet.sync() or len(load.answers) >= answered + 20, operator)
        status = status_of(cluster, ns, NAME)
        assert status.get("phase") == "Serving" and "replan" not in status, status
        assert {code for _, code in load.answers} == {200}, [a for a in load.answers if a[1] != 200][:10]
        assert {o["metadata"]["name"] for o in serving_objects(cluster, ns)} == before
        reasons = {e["reason"] for e in events_for(cluster, ns, NAME)}
        assert "Replace" not in reasons and "ApplyRejected" not in reasons, reasons
    finally:
        kubelet.stop()


def test_a_selector_from_before_revisions_is_replaced_beside_it_without_a_failed_request(
    upgrade_env: dict[str, Any],
) -> None:
    operator, kubelet, ns = serve_then_swap(upgrade_env, FIXTURES / "before-revisions.yaml")
    cluster = operator.cluster
    old, new = f"{NAME}-g1-shard-0", f"{NAME}-g1-r1-shard-0"
    try:
        assert kubelet.endpoint_revision is None and kubelet.running(old) == 1

        def synced(check: Any) -> Any:
            kubelet.sync()
            return check()

        with Load(kubelet, RATE_RPS) as load:
            operator.start()
            replan = wait_for("status.replan", lambda: synced(lambda: status_of(cluster, ns, NAME).get("replan")), operator)
            wait_for("the endpoint on revision 1", lambda: synced(lambda: kubelet.endpoint_revision == "1"), operator)
            wait_for("the old Deployment deleted", lambda: synced(lambda: get(cluster, "deployment", ns, old) is None),
                     operator)  # fmt: skip
            wait_for("its server retired", lambda: synced(lambda: kubelet.running(old) == 0), operator)
            after = len(load.answers)
            wait_for("requests answered by revision 1", lambda: load.since(after, "1") >= 5, operator)
        # No request failed; the old objects answered until the new revision took over.
        assert {code for _, code in load.answers} == {200}, [a for a in load.answers if a[1] != 200][:10]
        assert load.since(0, "none") > 0 and load.since(0, "1") > 0
        assert replan["reason"] == "Replace" and replan["revision"] == 1, replan
        assert replan["selected"] == replan["from"], replan
        assert old in replan["message"] and "immutable" in replan["message"], replan
        events = [e for e in events_for(cluster, ns, NAME) if e["reason"] == "Replace"]
        assert len(events) == 1 and old in events[0]["message"], events
        settled = wait_for(
            "phase Serving, nothing failing to apply",
            lambda: (s := status_of(cluster, ns, NAME)).get("phase") == "Serving" and s,
            operator,
        )
        assert all(c.get("reason") != "ApplyRejected" for c in settled.get("conditions", [])), settled
        deployments = {o["metadata"]["name"] for o in serving_objects(cluster, ns) if o["kind"] == "Deployment"}
        assert deployments == {new}, deployments
    finally:
        kubelet.stop()
