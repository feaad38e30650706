"""High availability: two operator processes against the real API server elect a leader on a Lease.

Both run as the chart's ServiceAccount, bound only by the chart's rendered RBAC (the Lease is granted by
a Role in the release namespace), with client-go's timing (15 s lease, 10 s renew deadline, 2 s retry).
Exactly one leads (the Lease's holder, its `frugal_operator_leader` gauge); only it reconciles and ticks
the autoscaler; killing it (SIGKILL) hands over within the lease duration and a retry period, stopping
it (SIGTERM) within about a retry period; a leader whose Lease is taken exits at once, one that cannot
renew it exits within the renew deadline. The failover
times are printed (run with `-s`): docs/operations.md quotes them.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from controlplane_harness import CHART_DIR, EXAMPLES_DIR, ControlPlane, ensure_binaries
from operator_harness import (
    IDENTITY_RELEASE,
    IDENTITY_USER,
    Operator,
    chart_identity,
    get,
    http,
    operator_counter,
    wait_for,
    wait_object,
    wait_ticks,
)

LEASE_NAMESPACE = "frugal-system"  # the release namespace chart_identity renders the chart into
LEASE = IDENTITY_RELEASE  # the chart's Role lets the operator get and update only the Lease <fullname>
LEASE_DURATION_S, RENEW_DEADLINE_S, RETRY_PERIOD_S = 15.0, 10.0, 2.0  # the defaults, which these tests keep
LEADER = "frugal_operator_leader"
WRITES = "frugal_operator_api_writes_total"
RECONCILES = "frugal_operator_reconcile_duration_seconds_count"
TICKS = "frugal_autoscaler_tick_duration_seconds_count"


def metric(operator: Operator, name: str) -> float | None:
    """A series of the operator's /metrics, None while its endpoint does not answer (still starting)."""
    try:
        return operator_counter(operator, name)
    except (urllib.error.URLError, ConnectionError):
        return None


def identity(operator: Operator) -> str:
    """The candidate identity the process logged (pod name + random suffix)."""
    found = re.search(r"Standing by for the Lease \S+ as (\S+)", operator.log.read_text(errors="replace"))
    assert found, operator.tail()
    return found.group(1)


def holder(cluster: ControlPlane) -> str | None:
    lease = get(cluster, "lease", LEASE_NAMESPACE, LEASE) or {}
    found: str | None = lease.get("spec", {}).get("holderIdentity")
    return found


def leader_of(operators: list[Operator]) -> tuple[Operator, list[Operator]]:
    """Wait until exactly one of the (live) `operators` says it leads and the others that they stand by."""

    def settled() -> tuple[Operator, list[Operator]] | None:
        gauges = [metric(each, LEADER) for each in operators]
        if None in gauges or gauges.count(1.0) != 1 or gauges.count(0.0) != len(operators) - 1:
            return None
        leading = operators[gauges.index(1.0)]
        return leading, [each for each in operators if each is not leading]

    found: tuple[Operator, list[Operator]] = wait_for("exactly one leader", settled, operators[0])
    return found


def takeover(standby: Operator, timeout_s: float) -> float:
    """Seconds until `standby` leads, polled every 0.1 s from now."""
    start = time.monotonic()
    while metric(standby, LEADER) != 1.0:
        assert time.monotonic() - start < timeout_s, f"no takeover in {timeout_s} s:\n{standby.tail()}"
        time.sleep(0.1)
    return time.monotonic() - start


@contextmanager
def replicas(cluster: ControlPlane, work: Path, count: int) -> Iterator[list[Operator]]:
    """`count` operator processes electing on the chart's Lease, as the chart's ServiceAccount."""
    kubeconfig = chart_identity(cluster, work)
    cluster.kubectl("delete", "lease", LEASE, "-n", LEASE_NAMESPACE, "--ignore-not-found")
    election = ["--lease-namespace", LEASE_NAMESPACE, "--lease-name", LEASE]
    operators = [
        Operator(cluster, work / "artifacts", work / f"operator-{i}.log", election, kubeconfig=kubeconfig)
        for i in range(count)
    ]
    for each in operators:
        each.start()
    try:
        yield operators
    finally:
        for each in operators:
            each.stop()
        cluster.kubectl("delete", "lease", LEASE, "-n", LEASE_NAMESPACE, "--ignore-not-found")


def reconciled_by(cluster: ControlPlane, operator: Operator, namespace: str) -> dict[str, Any]:
    """Apply the digits example into `namespace`; its compression Job, once `operator` created it."""
    cluster.kubectl("apply", "-n", namespace, "-f", EXAMPLES_DIR / "digits.yaml")
    return wait_object(cluster, operator, "job", namespace, "digits-g1-compress")


def test_the_chart_grants_its_lease_in_the_release_namespace_only(
    crds_installed: ControlPlane, tmp_path: Path
) -> None:
    chart_identity(crds_installed, tmp_path)

    def can(verb: str, what: str, namespace: str) -> bool:
        proc = crds_installed.kubectl(
            "auth", "can-i", verb, what, "-n", namespace, "--as", IDENTITY_USER, check=False
        )
        return proc.stdout.strip() == "yes"

    assert can("create", "leases.coordination.k8s.io", LEASE_NAMESPACE)
    assert can("get", f"leases.coordination.k8s.io/{LEASE}", LEASE_NAMESPACE)
    assert can("update", f"leases.coordination.k8s.io/{LEASE}", LEASE_NAMESPACE)
    assert not can("update", "leases.coordination.k8s.io/kube-controller-manager", LEASE_NAMESPACE)
    assert not can("delete", f"leases.coordination.k8s.io/{LEASE}", LEASE_NAMESPACE)
    assert not can("create", "leases.coordination.k8s.io", "kube-system")


def test_one_of_two_replicas_leads_and_only_the_leader_reconciles(
    crds_installed: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cluster = crds_installed
    with replicas(cluster, tmp_path, 2) as operators:
        leader, [standby] = leader_of(operators)
        assert holder(cluster) == identity(leader) != identity(standby)
        # A standby is live (its liveness probe must not restart it), and says it does not lead.
        assert http("GET", f"http://127.0.0.1:{standby.health_port}/healthz") == (
            200,
            {"leader": False, "live": True},
        )
        assert http("GET", f"http://127.0.0.1:{leader.health_port}/healthz")[0] == 200  # kopf's

        standby_writes = metric(standby, WRITES)
        leader_writes = metric(leader, WRITES)
        assert standby_writes == 0.0 and leader_writes is not None
        reconciled_by(cluster, leader, namespace)
        wait_ticks(leader, 2)  # the leader ticked twice: the standby could have, and must not have
        assert metric(leader, WRITES) > leader_writes  # type: ignore[operator]
        assert (metric(standby, WRITES), metric(standby, RECONCILES), metric(standby, TICKS)) == (
            0.0,
            0.0,
            0.0,
        )
        assert metric(leader, LEADER) == 1.0 and metric(standby, LEADER) == 0.0
        assert holder(cluster) == identity(leader)
        # A standby stopped by its kubelet goes at once, and leaves the Lease alone.
        assert standby.proc is not None
        standby.proc.send_signal(signal.SIGTERM)
        assert standby.proc.wait(10) == 0
        assert holder(cluster) == identity(leader) and metric(leader, LEADER) == 1.0


def test_sigkill_of_the_leader_hands_over_within_the_lease_duration(
    crds_installed: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cluster = crds_installed
    with replicas(cluster, tmp_path, 2) as operators:
        leader, [standby] = leader_of(operators)
        transitions = (get(cluster, "lease", LEASE_NAMESPACE, LEASE) or {})["spec"].get("leaseTransitions", 0)
        leader.kill()  # nothing released: the standby must wait the lease out
        seconds = takeover(standby, LEASE_DURATION_S + RETRY_PERIOD_S + 10)
        print(f"\nfailover after SIGKILL of the leader: {seconds:.1f} s")
        # The last renewal came at most a retry period before the kill; the standby saw it at most a
        # retry period after, counts the lease from then, and takes over at its first try past it:
        # never early (no two leaders), late by at most two retry periods.
        assert LEASE_DURATION_S - RETRY_PERIOD_S - 0.5 <= seconds <= LEASE_DURATION_S + 2 * RETRY_PERIOD_S + 1
        lease = get(cluster, "lease", LEASE_NAMESPACE, LEASE) or {}
        assert lease["spec"]["holderIdentity"] == identity(standby)
        assert lease["spec"]["leaseTransitions"] == transitions + 1
        # kopf's liveness endpoint took over the port the standby's answered on.
        assert http("GET", f"http://127.0.0.1:{standby.health_port}/healthz")[0] == 200
        reconciled_by(cluster, standby, namespace)  # the new leader reconciles ...
        wait_ticks(standby, 2)  # ... and ticks


def test_sigterm_of_the_leader_releases_the_lease_to_the_standby(
    crds_installed: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cluster = crds_installed
    with replicas(cluster, tmp_path, 2) as operators:
        leader, [standby] = leader_of(operators)
        assert leader.proc is not None
        leader.proc.send_signal(signal.SIGTERM)
        seconds = takeover(standby, LEASE_DURATION_S)
        print(f"\nfailover after SIGTERM of the leader: {seconds:.1f} s")
        assert leader.proc.wait(30) == 0
        assert "Released the Lease" in leader.tail()
        assert seconds < LEASE_DURATION_S - RETRY_PERIOD_S  # handed over, not waited out
        assert holder(cluster) == identity(standby)
        reconciled_by(cluster, standby, namespace)
        wait_ticks(standby, 2)


def test_a_leader_whose_lease_is_taken_exits_at_once(crds_installed: ControlPlane, tmp_path: Path) -> None:
    cluster = crds_installed
    with replicas(cluster, tmp_path, 1) as [only]:
        leader_of([only])
        taken = '{"spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 15}}'
        cluster.kubectl("patch", "lease", LEASE, "-n", LEASE_NAMESPACE, "--type=merge", "-p", taken)
        assert only.proc is not None
        start = time.monotonic()
        code = only.proc.wait(RETRY_PERIOD_S + 10)
        assert code == 1 and time.monotonic() - start <= RETRY_PERIOD_S + 5
        assert "Lost the Lease" in only.tail()
        assert holder(cluster) == "someone-else"  # it wrote nothing on its way out


def test_a_leader_that_cannot_renew_exits_within_the_renew_deadline(
    crds_installed: ControlPlane, tmp_path: Path
) -> None:
    cluster = crds_installed
    with replicas(cluster, tmp_path, 1) as [only]:
        leader_of([only])
        # The API server now refuses its renewals (403): to the leader, as good as an unreachable one.
        cluster.kubectl("delete", "rolebinding", f"{IDENTITY_RELEASE}-leader-election", "-n", LEASE_NAMESPACE)
        start = time.monotonic()
        assert only.proc is not None
        code = only.proc.wait(RENEW_DEADLINE_S + RETRY_PERIOD_S + 10)
        seconds = time.monotonic() - start
        print(f"\nleader exited {seconds:.1f} s after its renewals began to fail")
        # Its last renewal came at most a retry period before the refusal; it gives up past the deadline.
        assert code == 1 and RENEW_DEADLINE_S - RETRY_PERIOD_S - 0.5 <= seconds <= RENEW_DEADLINE_S + 3
        assert "Lost the Lease" in only.tail()


def rendered(*values: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ensure_binaries().helm, "template", "frugal", CHART_DIR, "--namespace", LEASE_NAMESPACE, *values],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def chart_objects(*values: str) -> dict[str, dict[str, Any]]:
    done = rendered(*values)
    assert done.returncode == 0, done.stderr
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(done.stdout) if d}


def test_the_chart_runs_two_electing_replicas_spread_and_disruption_budgeted() -> None:
    objects = chart_objects()
    deployment = objects["Deployment/frugal"]
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert (env["FRUGAL_LEADER_ELECTION"], env["FRUGAL_LEASE_NAME"]) == ("true", "frugal")
    assert [env[f"FRUGAL_{v}"] for v in ("LEASE_DURATION", "RENEW_DEADLINE", "RETRY_PERIOD")] == [
        "15",
        "10",
        "2",
    ]
    [term] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == deployment["spec"]["selector"]["matchLabels"]
    )
    budget = objects["PodDisruptionBudget/frugal"]
    assert budget["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
    assert objects["Role/frugal-leader-election"]["metadata"]["namespace"] == LEASE_NAMESPACE
    assert objects["RoleBinding/frugal-leader-election"]["roleRef"]["name"] == "frugal-leader-election"

    one = chart_objects("--set", "operator.replicas=1")
    assert "PodDisruptionBudget/frugal" not in one  # nothing to keep: a budget would only block drains
    mine = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    spread = chart_objects("--set-json", f"operator.affinity={json.dumps(mine)}")["Deployment/frugal"]
    assert spread["spec"]["template"]["spec"]["affinity"] == mine  # the user's affinity replaces the default
    alone = chart_objects("--set", "operator.leaderElection.enabled=false", "--set", "operator.replicas=1")
    assert alone["Deployment/frugal"]["spec"]["strategy"] == {"type": "Recreate"}
    refused = rendered("--set", "operator.leaderElection.enabled=false")  # and the default 2 replicas
    assert refused.returncode != 0 and "needs operator.leaderElection.enabled" in refused.stderr
