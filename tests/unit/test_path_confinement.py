"""A ModelDeployment author cannot make the operator read or delete outside the paths it names: '..'
segments are refused by the operator's own parsing (the CRD refuses them too, see
tests/cases/invalid_resources.yaml), by the artifact locator, and the deletion cleanup stays inside
the ModelDeployment's own directory of its claim."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from frugal.operator.api.spec import Owner, SpecError, parse_model_deployment
from frugal.operator.decision.decide import Settings, artifacts_to_remove
from frugal.operator.manifests import batch_jobs
from frugal.operator.manifests.storage import locate


def body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "frugal.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": "ml", "generation": 1, "uid": "u"},
        "spec": {
            "model": {"uri": "zoo://digits-mlp"},
            "serving": {"hardwareProfiles": ["cpu"], "slo": {"latencyP95Ms": 50}},
            "storage": {"retainArtifacts": False},
            **spec,
        },
    }


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"storage": {"uri": "pvc://frugal-artifacts/../../etc", "retainArtifacts": False}}, "spec.storage.uri"),
        ({"model": {"uri": "pvc://models/a/../b/model.onnx"}}, "spec.model.uri"),
        ({"data": {"calibration": {"uri": "file:///data/.."}}}, "spec.data.calibration.uri"),
    ],
)
def test_parent_segments_are_a_spec_error_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError, match=rf"^{field}: .* must not contain '\.\.' path segments"):
        parse_model_deployment(body(**spec))


def test_dots_inside_a_name_are_not_a_parent_segment() -> None:
    md = parse_model_deployment(body(storage={"uri": "pvc://frugal-artifacts/v1..2/x", "retainArtifacts": False}))
    assert md.storage_uri == "pvc://frugal-artifacts/v1..2/x"


def test_the_locator_refuses_to_climb_out_of_a_claim() -> None:
    with pytest.raises(ValueError, match=r"'\.\.' path segments are not allowed"):
        locate("pvc://frugal-artifacts/a/../../x", Owner("digits", "ml", "u", 1), Path("/claims"))


def test_cleanup_deletes_only_the_model_deployments_own_directory(tmp_path: Path) -> None:
    settings = Settings(storage_uri="pvc://frugal-artifacts/team", pvc_root=tmp_path)
    target = artifacts_to_remove(parse_model_deployment(body()), settings)
    assert target == tmp_path / "frugal-artifacts" / "team" / "ml" / "digits"


def test_a_batch_location_refuses_to_climb_out_of_a_claim() -> None:
    with pytest.raises(ValueError, match=r"'\.\.' path segments are not allowed"):
        batch_jobs.locate("pvc://data/scores/../../other", Path("/claims"))
    assert batch_jobs.locate("pvc://data/scores", Path("/claims")).operator_path == Path("/claims/data/scores")


@pytest.mark.parametrize(
    ("field", "spec"),
    [
        ("spec.output.uri", {"model": {"modelDeployment": "digits"}, "input": {"uri": "pvc://data/in.npz"},
                             "output": {"uri": "file:///"}}),
        ("spec.model.artifacts.uri", {"model": {"artifacts": {"uri": "file:///var/lib", "variant": "fp32"}},
                                      "input": {"uri": "pvc://data/in.npz"}, "output": {"uri": "pvc://data/out"}}),
    ],
)  # fmt: skip
def test_a_batch_inference_with_a_file_uri_is_refused_before_anything_is_read(field: str, spec: dict[str, Any]) -> None:
    from frugal.operator.api.spec import parse_batch_inference
    from frugal.operator.decision.batch_inference import refusal

    batch = parse_batch_inference({
        "apiVersion": "frugal.dev/v1alpha1", "kind": "BatchInference",
        "metadata": {"name": "scores", "namespace": "ml", "generation": 1, "uid": "u"},
        "spec": {**spec, "hardwareProfiles": ["cpu"]},
    })  # fmt: skip
    refused = refusal(batch, allow_host_path=False)
    assert refused is not None and refused.apply == () and refused.phase.value == "Failed"
    [condition] = refused.conditions
    assert condition.reason == "HostPathNotAllowed" and condition.message.startswith(field)
    assert refusal(batch, allow_host_path=True) is None
