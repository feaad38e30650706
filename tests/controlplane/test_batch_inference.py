"""A BatchInference against the real API server: the operator places it, creates the Indexed Job of
workers, then the aggregation Job, and reports progress and cost in status.

The operator runs as the chart's ServiceAccount, bound only by the chart's rendered RBAC: a verb the
batch path needs and the chart lacks fails here. No kubelet runs on this tier: the test plays it
(`operator_harness`). It runs each completion index's pod command as written, with
``JOB_COMPLETION_INDEX`` set as the Job controller sets it, records the Job's outcome, then does the
same for the aggregation Job. The output must equal a single-process run over the same data.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from controlplane_harness import EXAMPLES_DIR, ControlPlane
from operator_harness import (
    chart_operator,
    complete_job,
    condition,
    create_namespace,
    digits_published,
    events_for,
    get,
    pod_env,
    run_and_finish,
    wait_for,
    wait_object,
)

from frugal.serving.batch import engine

NAME = "digits-scores"


def batch_status(cluster: ControlPlane, namespace: str) -> dict[str, Any]:
    found = get(cluster, "batchinference", namespace, NAME) or {}
    status: dict[str, Any] = found.get("status") or {}
    return status


def run_index(job: Mapping[str, Any], index: int, workdir: Path) -> subprocess.CompletedProcess[str]:
    """One completion index's pod: the command as written, JOB_COMPLETION_INDEX as the Job controller sets it."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {**pod_env(container, {}), "JOB_COMPLETION_INDEX": str(index)}
    return subprocess.run(container["command"], env=env, cwd=workdir, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def test_the_operator_runs_a_batch_as_an_indexed_job_then_aggregates(
    crds_installed: ControlPlane, tmp_path: Path
) -> None:
    from frugal.compression import zoo

    cluster = crds_installed
    with chart_operator(cluster, tmp_path) as operator:
        work = tmp_path / "pods"
        ns = digits_published(cluster, operator, "batch-journey", work)

        data = tmp_path / "data" / "digits.npz"
        data.parent.mkdir()
        np.savez(data, **dict(zoo.load("digits-mlp").validation.inputs))
        output = tmp_path / "out"
        document = yaml.safe_load((EXAMPLES_DIR / "digits-batch.yaml").read_text())
        document["spec"].update(
            input={"uri": f"file://{data}"},
            output={"uri": f"file://{output}"},
            workers=2,
            rowsPerShard=100,
        )
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(document))

        score = wait_object(cluster, operator, "job", ns, f"{NAME}-g1-score")
        spec = score["spec"]
        assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
        assert spec["backoffLimitPerIndex"] >= 1
        assert score["metadata"]["ownerReferences"][0]["kind"] == "BatchInference"
        assert spec["template"]["spec"]["containers"][0]["command"][:2] == ["frugal", "batch-worker"]
        planned = wait_for("the placement in status", lambda: batch_status(cluster, ns).get("selected"), operator)
        assert planned["hardwareProfile"] == "local-cpu" and planned["workers"] == 2
        assert planned["variant"] == (get(cluster, "modeldeployment", ns, "digits") or {})["status"]["selected"]["variant"]

        first = run_index(score, 0, work)
        assert first.returncode == 0, first.stderr[-3000:]
        partial = wait_for(
            "progress of index 0 in status",
            lambda: (s := batch_status(cluster, ns)).get("progress", {}).get("shardsDone", 0) > 0 and s,
            operator,
        )
        assert partial["phase"] == "Running" and partial["progress"]["shardsTotal"] == 5
        assert partial["progress"]["shardsDone"] == 3  # index 0 of 2 takes shards 0, 2, 4
        second = run_index(score, 1, work)
        assert second.returncode == 0, second.stderr[-3000:]
        complete_job(cluster, score)

        aggregate = wait_object(cluster, operator, "job", ns, f"{NAME}-g1-aggregate")
        proc = run_and_finish(cluster, aggregate, work)
        assert proc.returncode == 0, proc.stderr[-3000:]
        done = wait_for(
            "phase Succeeded", lambda: (s := batch_status(cluster, ns)).get("phase") == "Succeeded" and s, operator
        )
        assert condition(done, "Complete")["status"] == "True"
        assert done["progress"]["rowsDone"] == done["progress"]["rowsTotal"] == 450
        assert float(done["cost"]["usd"]) > 0 and done["outputUri"] == f"file://{output}"
        reasons = {e["reason"] for e in events_for(cluster, ns, NAME)}
        assert "BatchSucceeded" in reasons

        # The same rows scored by one process give the same predictions, row for row.
        config = engine.config_from(None, {engine.CONFIG_ENV: _config_env(score)})
        alone = config.model_copy(update={"output": str(tmp_path / "alone")})
        engine.run_worker(alone, 0, 1)
        engine.aggregate(alone)
        ours, theirs = np.load(output / "predictions.npz"), np.load(tmp_path / "alone" / "predictions.npz")
        assert sorted(ours.files) == sorted(theirs.files)
        for name in ours.files:
            np.testing.assert_array_equal(ours[name], theirs[name])


def test_a_batch_whose_model_deployment_is_missing_waits_with_a_condition(
    crds_installed: ControlPlane, tmp_path: Path
) -> None:
    cluster = crds_installed
    with chart_operator(cluster, tmp_path) as operator:
        ns = create_namespace(cluster, "batch-waits")
        document = yaml.safe_load((EXAMPLES_DIR / "digits-batch.yaml").read_text())
        document["spec"]["input"] = {"uri": f"file://{tmp_path}/in.npz"}
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(document))
        pending = wait_for(
            "a Planned condition", lambda: condition(batch_status(cluster, ns), "Planned") or None, operator
        )
        assert pending["status"] == "False" and pending["reason"] == "ModelNotReady"
        assert "ModelDeployment digits does not exist" in pending["message"]
        assert batch_status(cluster, ns)["phase"] == "Pending"
        assert get(cluster, "job", ns, f"{NAME}-g1-score") is None


def _config_env(job: Mapping[str, Any]) -> str:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return next(e["value"] for e in container["env"] if e["name"] == engine.CONFIG_ENV)
