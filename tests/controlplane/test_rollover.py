"""Re-planning in a cluster: at the load it sees, a model moves to the hardware that is cheapest per
request, and the move applies the new Deployments, waits until they are ready, moves the endpoint,
and only then deletes the old ones, without a failed request.

Two HardwareProfiles of this machine's CPU are priced so that the choice depends on the load: one is
cheap to rent but draws up to 1 kW when busy, the other dearer but flat at about 20 W, at 1 $/kWh.
The deploy-time plan prices every option at saturation (one replica flat out) and picks the flat one;
at a few requests a second the power-hungry one idles and is cheaper. With
``spec.autoscaling.replanning.windowSeconds: 0`` the first tick that sees the load rolls over.

The test plays the kubelet and the endpoint Service (`operator_harness`): it runs each serving
Deployment's pod template as `frugal serve` processes, reports them ready, sends the clients'
requests to the servers of the revision the endpoint Service selects (as last read), and on a
Deployment's deletion takes its servers out of that routing, lets their requests finish (the pod's
preStop drain) and only then stops them. The order of the operator's writes is read from the API
server's audit log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from controlplane_harness import EXAMPLES_DIR, ControlPlane
from operator_harness import (
    Operator,
    autoscaled_namespace,
    condition,
    events_for,
    get,
    kubectl_json,
    run_and_finish,
    status_of,
    wait_for,
    wait_object,
)
from played_serving import REVISION, Load, PlayedKubelet
from prometheus_harness import Prometheus

from frugal.operator.api.spec import parse_hardware_profile, parse_model_deployment
from frugal.operator.decision import scaling

NAME = "digits-replan"
HUNGRY = "replan-power-hungry"  # cheap to rent, 1 W idle, 1000 W flat out
FLAT = "replan-power-flat"  # dearer, about 20 W whatever the load
OLD, NEW = f"{NAME}-g1-shard-0", f"{NAME}-g1-r1-shard-0"
RATE_RPS = 10.0


def manifests(prometheus_url: str) -> tuple[str, dict[str, Any]]:
    """The digits example served on two priced profiles of this machine's CPU; and the profiles."""
    documents = list(yaml.safe_load_all((EXAMPLES_DIR / "digits.yaml").read_text()))
    md = next(d for d in documents if d["kind"] == "ModelDeployment")
    cpu = next(d for d in documents if d["kind"] == "HardwareProfile")
    profiles = {}
    for name, cost, idle, peak in ((HUNGRY, "0.10", 1, 1000), (FLAT, "0.12", 20, 21)):
        profile = yaml.safe_load(yaml.safe_dump(cpu))
        profile["metadata"]["name"] = name
        profile["spec"]["costPerHour"] = cost
        profile["spec"]["power"] = {"idleWatts": idle, "maxWatts": peak}
        profiles[name] = profile
    md["metadata"]["name"] = NAME
    md["spec"]["serving"]["hardwareProfiles"] = [FLAT, HUNGRY]
    md["spec"]["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": 2,
        "stabilizationWindowSeconds": 30,
        "prometheus": {"url": prometheus_url},
        "power": {"pricePerKWh": "1.0"},
        "replanning": {"enabled": True, "windowSeconds": 0},
    }
    return yaml.safe_dump_all([md, *profiles.values()]), profiles


@pytest.fixture(scope="module")
def live(crds_installed: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("replanning")
    args = ["--autoscale-interval", "1", "--rate-window", "10s"]
    with autoscaled_namespace(crds_installed, work, "replanning", args) as (operator, prometheus, namespace):
        kubelet = PlayedKubelet(crds_installed, prometheus, namespace, work, NAME)
        try:
            yield {"operator": operator, "prometheus": prometheus, "kubelet": kubelet, "namespace": namespace,
                   "work": work}  # fmt: skip
        finally:
            kubelet.stop()
            crds_installed.kubectl(
                "delete", "hardwareprofile", HUNGRY, FLAT, "--ignore-not-found", check=False
            )


def first(events: list[dict[str, Any]], what: str, match: Any) -> tuple[int, dict[str, Any]]:
    for index, event in enumerate(events):
        if match(event):
            return index, event
    raise AssertionError(f"no audit event for {what} in:\n" + "\n".join(describe(e) for e in events))


def describe(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    code = (event.get("responseStatus") or {}).get("code")
    return f"{event.get('requestReceivedTimestamp')} {event.get('verb')} {resource} {ref.get('name')} {code}"


def write(event: dict[str, Any], verb: str, resource: str, name: str, subresource: str | None = None) -> bool:
    ref = event.get("objectRef") or {}
    return (
        event.get("verb") == verb
        and ref.get("resource") == resource
        and ref.get("name") == name
        and ref.get("subresource") == subresource
        and 200 <= int((event.get("responseStatus") or {}).get("code", 0)) < 300
    )


def body(event: dict[str, Any]) -> dict[str, Any]:
    request = event.get("requestObject") or {}
    return json.loads(request) if isinstance(request, str) else request


def test_a_replan_brings_up_the_new_revision_before_it_moves_the_endpoint_and_deletes_the_old(
    live: dict[str, Any],
) -> None:
    operator: Operator = live["operator"]
    prometheus: Prometheus = live["prometheus"]
    kubelet: PlayedKubelet = live["kubelet"]
    cluster, ns = operator.cluster, live["namespace"]
    documents, profiles = manifests(prometheus.url)
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=documents)
    jobs = (f"{NAME}-g1-compress", f"{NAME}-g1-profile-{FLAT}", f"{NAME}-g1-profile-{HUNGRY}")
    for job in jobs:
        proc = run_and_finish(cluster, wait_object(cluster, operator, "job", ns, job), live["work"])
        assert proc.returncode == 0, proc.stderr[-3000:]

    # Deploy time: every option priced at saturation, where the flat profile is cheaper per request.
    wait_object(cluster, operator, "deployment", ns, OLD)
    deployed = wait_for("status.selected", lambda: status_of(cluster, ns, NAME).get("selected"), operator)
    assert deployed["hardwareProfile"] == FLAT, deployed
    # At the load the test drives, the planner (from what status.variants records) wants the other one.
    md = parse_model_deployment(get(cluster, "modeldeployment", ns, NAME) or {})
    specs = {name: parse_hardware_profile(p) for name, p in profiles.items()}
    at_load = scaling.plan_at_load(md, status_of(cluster, ns, NAME), specs, RATE_RPS)
    assert at_load is not None and at_load.chosen is not None and at_load.chosen.profile == HUNGRY
    running = at_load.option(deployed["variant"], FLAT, 1)
    assert running is not None and running.cost_per_request is not None and at_load.chosen.cost_per_request
    assert running.cost_per_request > 1.1 * at_load.chosen.cost_per_request  # beyond the tolerance

    def synced(check: Any) -> Any:
        kubelet.sync()
        return check()

    wait_for("phase Serving", lambda: synced(lambda: status_of(cluster, ns, NAME).get("phase") == "Serving"),
             operator)  # fmt: skip
    assert kubelet.endpoint_revision == "0" and kubelet.running(OLD) == 1

    kubelet.hold_ready.add(NEW)  # the new revision's servers start, but are reported ready only below
    with Load(kubelet, RATE_RPS) as load:
        replan = wait_for(
            "status.replan",
            lambda: synced(lambda: status_of(cluster, ns, NAME).get("replan")),
            operator,
            timeout_s=60,
        )
        # The new revision's Deployment beside the old one, its server running; until it has a ready
        # replica the endpoint stays on revision 0, revision 0 keeps serving, and Ready says why.
        wait_for("the new revision's server", lambda: synced(lambda: kubelet.running(NEW) >= 1), operator)
        rolling = wait_for(
            "Ready=True RollingOver",
            lambda: synced(
                lambda: (
                    condition(s := status_of(cluster, ns, NAME), "Ready").get("reason") == "RollingOver" and s
                )
            ),
            operator,
        )
        served_old = len(load.answers)
        wait_for("requests answered by revision 0 during the rollover",
                 lambda: synced(lambda: sum(1 for r, _ in load.answers[served_old:] if r == "0") >= 5),
                 operator)  # fmt: skip
        assert get(cluster, "deployment", ns, OLD) is not None and kubelet.running(OLD) == 1
        endpoint = get(cluster, "service", ns, NAME) or {}
        assert endpoint["spec"]["selector"][REVISION] == "0" and kubelet.endpoint_revision == "0"
        new = get(cluster, "deployment", ns, NEW) or {}
        assert not int((new.get("status") or {}).get("readyReplicas", 0))
        # The new server ready: the endpoint moves, then revision 0 goes.
        kubelet.hold_ready.clear()
        wait_for("the endpoint on revision 1", lambda: synced(lambda: kubelet.endpoint_revision == "1"), operator,
                 timeout_s=60)  # fmt: skip
        wait_for("revision 0 deleted", lambda: synced(lambda: get(cluster, "deployment", ns, OLD) is None), operator,
                 timeout_s=60)  # fmt: skip
        wait_for("revision 0's servers retired", lambda: synced(lambda: kubelet.running(OLD) == 0), operator)
        served_before = len(load.answers)
        wait_for("requests answered by revision 1",
                 lambda: sum(1 for r, _ in load.answers[served_before:] if r == "1") >= 5, operator)  # fmt: skip

    # No request through the endpoint failed, and both revisions answered some.
    codes = {code for _, code in load.answers}
    assert codes == {200}, [a for a in load.answers if a[1] != 200][:10]
    by_revision = {r: sum(1 for rev, _ in load.answers if rev == r) for r in ("0", "1")}
    assert by_revision["0"] > 0 and by_revision["1"] > 0, by_revision

    # status.replan: revision 1 of generation 1, from the flat profile to the power-hungry one.
    assert replan["generation"] == 1 and replan["revision"] == 1 and replan["reason"] == "Cheaper"
    assert replan["from"]["hardwareProfile"] == FLAT and replan["selected"]["hardwareProfile"] == HUNGRY
    assert replan["replicas"] == 1 and replan["loadRps"] > 0
    assert float(replan["costPer1kRequests"]) * 1.1 < float(replan["fromCostPer1kRequests"])
    # While rolling over the model is served (Ready=True, RollingOver) and stays in phase Serving:
    # unlike a new generation, nothing about the model changed, only where it runs.
    assert condition(rolling, "Ready")["status"] == "True" and rolling["phase"] == "Serving"
    assert condition(rolling, "Ready")["reason"] == "RollingOver"
    assert FLAT in condition(rolling, "Ready")["message"] and HUNGRY in condition(rolling, "Ready")["message"]
    # The generation settles on the new option (the pass that pruned revision 0 writes it).
    after = wait_for(
        "phase Serving on revision 1",
        lambda: (
            (s := status_of(cluster, ns, NAME)).get("phase") == "Serving"
            and condition(s, "Ready").get("reason") == "ServingReady"
            and s
        ),
        operator,
    )
    # The Replanned condition and Event name both options and their costs.
    replanned = condition(after, "Replanned")
    assert replanned.get("status") == "True" and replanned["reason"] == "Cheaper", after.get("conditions")
    events = [e for e in events_for(cluster, ns, NAME) if e["reason"] == "Replanned"]
    assert len(events) == 1, events
    costs = re.compile(rf"on {HUNGRY} x1 \$([0-9.e+-]+) vs \S+ on {FLAT} x1 \$([0-9.e+-]+) per 1k requests")
    for message in (replanned["message"], events[0]["message"]):
        found = costs.search(message)
        assert found is not None, message
        assert float(found[1]) == pytest.approx(float(replan["costPer1kRequests"]), rel=0.01), message
        assert float(found[2]) == pytest.approx(float(replan["fromCostPer1kRequests"]), rel=0.01), message
    # What it serves now: the new option on revision 1, and nothing of revision 0.
    selected = after["selected"]
    assert selected["hardwareProfile"] == HUNGRY and "re-planned" in selected["reason"]
    names = {d["metadata"]["name"] for d in kubectl_json(cluster, "get", "deployments", "-n", ns)["items"]}
    assert names == {NEW}, names
    services = {s["metadata"]["name"] for s in kubectl_json(cluster, "get", "services", "-n", ns)["items"]}
    assert services == {NAME, NEW}, services
    endpoint = get(cluster, "service", ns, NAME) or {}
    assert endpoint["spec"]["selector"][REVISION] == "1"

    # The order of the API writes: apply the new Deployment, it becomes ready, the endpoint moves to
    # revision 1, and only then the old revision's Deployment and Service are deleted.
    audit = cluster.audit_events(ns)
    applied, _ = first(audit, f"apply {NEW}", lambda e: write(e, "patch", "deployments", NEW))
    ready, _ = first(
        audit,
        f"{NEW} ready",
        lambda e: (
            (
                write(e, "update", "deployments", NEW, "status")
                or write(e, "patch", "deployments", NEW, "status")
            )
            and int((body(e).get("status") or {}).get("readyReplicas", 0)) >= 1
        ),
    )
    moved, _ = first(
        audit,
        "the endpoint moved to revision 1",
        lambda e: (
            write(e, "patch", "services", NAME)
            and ((body(e).get("spec") or {}).get("selector") or {}).get(REVISION) == "1"
        ),
    )
    deleted, _ = first(audit, f"delete {OLD}", lambda e: write(e, "delete", "deployments", OLD))
    deleted_service, _ = first(audit, f"delete service {OLD}", lambda e: write(e, "delete", "services", OLD))
    order = "\n".join(describe(e) for e in audit)
    assert applied < ready < moved < deleted, order
    deleted_pdb, _ = first(
        audit, f"delete PodDisruptionBudget {OLD}", lambda e: write(e, "delete", "poddisruptionbudgets", OLD)
    )
    assert moved < deleted_service and moved < deleted_pdb, order
