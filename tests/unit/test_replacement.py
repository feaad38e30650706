"""Objects the API server will not update in place (an immutable field written by an earlier operator
version) are replaced by a rollover to the next revision with the same option: the refusal is
recognised from the server's message, and status.replan names the next revision and why."""

from __future__ import annotations

from typing import Any

from frugal.operator.api.spec import parse_model_deployment
from frugal.operator.decision import revisions
from frugal.operator.decision.planner import Option

BODY: dict[str, Any] = {
    "apiVersion": "frugal.dev/v1alpha1", "kind": "ModelDeployment",
    "metadata": {"name": "digits", "namespace": "ml", "uid": "u", "generation": 3},
    "spec": {"model": {"uri": "zoo://digits-mlp"},
             "serving": {"hardwareProfiles": ["cpu"], "slo": {"latencyP95Ms": 20}}},
}  # fmt: skip
MD = parse_model_deployment(BODY)
RUNNING = Option("int8", "cpu", 2)
# What kube-apiserver 1.35 answers when an apply changes a Deployment's selector.
SELECTOR_REFUSED = (
    'Deployment.apps "digits-g3-shard-0" is invalid: spec.selector: Invalid value: '
    '{"matchLabels":{"frugal.dev/shard":"0"}}: field is immutable'
)


def test_a_changed_selector_or_job_template_is_a_refusal_in_place_and_nothing_else_is() -> None:
    assert revisions.refused_in_place("Deployment", SELECTOR_REFUSED)
    assert revisions.refused_in_place("Job", 'Job.batch "x" is invalid: spec.template: field is immutable')
    assert not revisions.refused_in_place("Deployment", 'spec.replicas: Invalid value: -1: must be >= 0')
    # A Service's immutable clusterIP is not ours to replace: the operator never sets it.
    assert not revisions.refused_in_place("Service", "spec.clusterIP: field is immutable")


def test_the_replacement_serves_the_same_option_under_the_next_revision() -> None:
    replan = revisions.replacement_status(MD, {}, RUNNING, 3, "Deployment digits-g3-shard-0", "2026-12-07T03:00:00Z")
    assert replan["generation"] == 3 and replan["revision"] == 1
    assert replan["selected"] == replan["from"] == {"variant": "int8", "hardwareProfile": "cpu", "shards": 2}
    assert replan["replicas"] == 3 and replan["reason"] == revisions.REPLACE_REASON
    assert "digits-g3-shard-0" in replan["message"] and "revision 1" in replan["message"]
    rollover = revisions.rollover_from_status(MD, {"replan": replan})
    assert rollover is not None and rollover.revision == 1 and rollover.selection == RUNNING


def test_a_replacement_after_a_rollover_goes_past_the_revision_that_serves() -> None:
    earlier = {"replan": {"generation": 3, "revision": 2, "selected": {"variant": "int8", "hardwareProfile": "cpu"}}}
    served, _ = revisions.as_served(MD, earlier)
    replan = revisions.replacement_status(served, earlier, RUNNING, 0, "Deployment x", "2026-12-07T03:00:00Z")
    assert replan["revision"] == 3 and replan["replicas"] == 1  # a Deployment at zero restarts at one
    stale = {"replan": {"generation": 2, "revision": 5}}  # an older generation's rollovers do not count
    assert revisions.replacement_status(MD, stale, RUNNING, 1, "Deployment x", "t")["revision"] == 1
