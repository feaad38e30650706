"""A pod that cannot run tells the user what to change: the image it cannot get, the limit it hit."""

from __future__ import annotations

from typing import Any

from frugal.operator.decision import pod_problems
from frugal.operator.decision.conditions import Job, JobState, Observed, Reason, conditions

LABELS = {"app.kubernetes.io/component": "compression", "frugal.dev/hardware-profile": "local-cpu"}


def pod(status: dict[str, Any], limits: dict[str, str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "compress", "image": "localhost/frugal:0.1.0"}
    if limits is not None:
        container["resources"] = {"limits": limits}
    return {"metadata": {"name": "digits-g1-compress-x", "labels": LABELS}, "spec": {"containers": [container]},
            "status": status}  # fmt: skip


def test_an_oom_kill_names_the_limit_it_hit_and_the_field_to_raise() -> None:
    killed = {"containerStatuses": [{"name": "compress", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                     "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}  # fmt: skip
    found = pod_problems.problem(pod(killed, {"memory": "512Mi"}))
    assert found is not None and found.reason == "OOMKilled"
    assert "container compress was OOMKilled at its memory limit 512Mi" in found.message
    assert "spec.resources.limits.memory" in found.message and "HardwareProfile local-cpu" in found.message
    unlimited = pod_problems.problem(pod(killed))
    assert unlimited is not None and "has no memory limit" in unlimited.message


def test_an_image_the_node_cannot_get_is_named_with_what_to_do() -> None:
    waiting = {"containerStatuses": [{"name": "compress", "image": "localhost/frugal:0.1.0",
               "state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}}}]}  # fmt: skip
    found = pod_problems.problem(pod(waiting))
    assert found is not None and found.reason == "ImagePullFailed"
    assert "cannot get image localhost/frugal:0.1.0 (ImagePullBackOff" in found.message
    assert "docker build --target" in found.message and "spec.image of HardwareProfile local-cpu" in found.message


def test_a_running_or_pending_pod_has_no_problem() -> None:
    running = {"containerStatuses": [{"name": "compress", "state": {"running": {}}, "restartCount": 0}]}
    creating = {"containerStatuses": [{"name": "compress", "state": {"waiting": {"reason": "ContainerCreating"}}}]}
    assert pod_problems.first_problem([pod(running), pod(creating), pod({})]) is None


def test_the_first_problem_becomes_the_degraded_condition() -> None:
    unplaced = {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                "message": "0/1 nodes are available: 1 Insufficient memory."}]}  # fmt: skip
    found = pod_problems.first_problem([pod({}), pod(unplaced)])
    assert found is not None and found.reason == "Unschedulable" and "Insufficient memory" in found.message
    assessment = conditions(Observed(1, compression=Job(JobState.RUNNING, name="x"), pod_problem=found))
    degraded = assessment.condition("Degraded")
    assert (degraded.status, degraded.reason) == (True, Reason.UNSCHEDULABLE)
