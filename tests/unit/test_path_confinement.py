"""A ModelDeployment author cannot make the operator read or delete outside the paths it names: '..'
segments are refused by the operator's own parsing (the CRD refuses them too, see
tests/cases/invalid_resources.yaml), by the artifact locator, and the deletion cleanup stays inside
the ModelDeployment's own directory of its claim — which no sub-path can make another's (the alias
cases below), and no symbolic link on the shared volume can redirect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from frugal.operator.api.spec import Owner, SpecError, parse_model_deployment
from frugal.operator.decision.decide import artifacts_to_remove
from frugal.operator.decision.operator_settings import Settings
from frugal.operator.manifests import batch_jobs
from frugal.operator.manifests.storage import NotConfined, OwnPrefix, locate, own_directory


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
    assert target is not None
    assert target.path == tmp_path / "frugal-artifacts" / "team" / "ml" / "digits"
    assert target.root == tmp_path / "frugal-artifacts"


def owner(namespace: str, name: str) -> Owner:
    return Owner(name, namespace, "u", 1)


ROOT = Path("/claims")
SHARED = "pvc://frugal-artifacts"  # the operator's --storage-uri: the chart's claim, no sub-path


@pytest.mark.parametrize(
    ("storage", "default", "namespace", "name", "expected"),
    [
        (SHARED, SHARED, "ml", "digits", "/claims/frugal-artifacts/ml/digits"),
        ("pvc://frugal-artifacts/team", "pvc://frugal-artifacts/team/", "ml", "digits",
         "/claims/frugal-artifacts/team/ml/digits"),
        # Under its own directory, any sub-path: nothing of anyone else's can be there.
        ("pvc://frugal-artifacts/ml/digits/v2", SHARED, "ml", "digits", "/claims/frugal-artifacts/ml/digits/v2/ml/digits"),
        ("pvc://frugal-artifacts/./ml/digits/v2", SHARED, "ml", "digits",
         "/claims/frugal-artifacts/ml/digits/v2/ml/digits"),
        # Another claim has no default sub-path: its root.
        ("pvc://scratch", SHARED, "ml", "digits", "/claims/scratch/ml/digits"),
        ("pvc://scratch/ml/digits/x", SHARED, "ml", "digits", "/claims/scratch/ml/digits/x/ml/digits"),
    ],
)  # fmt: skip
def test_the_own_directory_is_the_owners_place_in_the_layout(
    storage: str, default: str, namespace: str, name: str, expected: str
) -> None:
    found = own_directory(storage, default, owner(namespace, name), ROOT)
    assert found is not None and found.path == Path(expected)
    assert found.path.is_relative_to(found.root) and found.path != found.root


@pytest.mark.parametrize(
    ("storage", "default", "namespace", "name", "aliased"),
    [
        # The case: sub-path Y, namespace V, name gen-1 is generation 1 of ModelDeployment V of
        # namespace Y (which stores under the shared claim's root).
        ("pvc://frugal-artifacts/Y", SHARED, "V", "gen-1", "/claims/frugal-artifacts/Y/V/gen-1"),
        # A namespace named like someone's sub-path, a name like their namespace: all of their
        # namespace's ModelDeployments under that sub-path.
        (SHARED, "pvc://frugal-artifacts/team", "team", "ml", "/claims/frugal-artifacts/team/ml"),
        # Another claim's sub-path, one more level: the same game on that claim.
        ("pvc://scratch/a", SHARED, "b", "c", "/claims/scratch/a/b/c"),
        # A sub-path that only starts like the own directory.
        ("pvc://frugal-artifacts/ml/digits-2", SHARED, "ml", "digits", "/claims/frugal-artifacts/ml/digits-2/ml/digits"),
    ],
)  # fmt: skip
def test_a_sub_path_that_could_meet_another_model_deployments_directory_is_never_deleted(
    storage: str, default: str, namespace: str, name: str, aliased: str
) -> None:
    """The target would be `aliased`; nothing says it is not someone else's, so nothing is deleted."""
    with pytest.raises(NotConfined, match=rf"{aliased} is not inside .* own directory"):
        own_directory(storage, default, owner(namespace, name), ROOT)


@pytest.mark.parametrize(
    ("storage", "default", "expected"),
    [
        ("s3://models/frugal", "s3://models/frugal", "s3://models/frugal/ml/digits"),
        ("s3://models/frugal/ml/digits/v2", "s3://models/frugal/", "s3://models/frugal/ml/digits/v2/ml/digits"),
        ("s3://team-bucket", "s3://models/frugal", "s3://team-bucket/ml/digits"),  # another bucket: its root
        ("s3://models/frugal", "pvc://frugal-artifacts", None),  # on the operator's bucket's root: aliased
        ("s3://models/frugal/team", "s3://models/frugal", None),  # namespace 'team', name 'ml' lives there
    ],
)
def test_a_bucket_prefix_is_confined_as_a_claims_directory_is(storage: str, default: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(NotConfined):
            own_directory(storage, default, owner("ml", "digits"), None)
    else:
        assert own_directory(storage, default, owner("ml", "digits"), None) == OwnPrefix(expected)


@pytest.mark.parametrize(
    ("storage", "namespace", "name"),
    [
        ("pvc://frugal-artifacts/a/../..", "ml", "digits"),  # parsing and the CRD refuse these first
        ("pvc://frugal-artifacts/ml/digits/../../other", "ml", "digits"),
        ("pvc://frugal-artifacts", "..", "digits"),  # the API server's names cannot be these: still refused
        ("pvc://frugal-artifacts", "ml", "."),
        ("pvc://frugal-artifacts", "ml", "a/b"),
        ("pvc:///ml", "ml", "digits"),  # no claim: the claim segment would be the pvc root itself
    ],
)
def test_traversal_never_leaves_the_own_directory(storage: str, namespace: str, name: str) -> None:
    with pytest.raises(NotConfined):
        own_directory(storage, SHARED, owner(namespace, name), ROOT)


def test_a_refused_cleanup_deletes_nothing_and_a_kept_one_only_its_own(tmp_path: Path) -> None:
    """The model deployment's decision, then what the cleanup does with it, on a real directory tree."""
    root = tmp_path / "claims"
    victim = root / "frugal-artifacts" / "Y" / "V" / "gen-1"
    victim.mkdir(parents=True)
    (victim / "manifest.json").write_text("{}")
    settings = Settings(storage_uri=SHARED, pvc_root=root)
    attacker = body(storage={"uri": "pvc://frugal-artifacts/Y", "retainArtifacts": False})
    attacker["metadata"].update(namespace="V", name="gen-1")
    with pytest.raises(NotConfined):
        artifacts_to_remove(parse_model_deployment(attacker), settings)
    assert (victim / "manifest.json").is_file()


def test_a_symbolic_link_on_the_way_is_found_before_deleting(tmp_path: Path) -> None:
    """A tenant's pod can make its namespace's directory on the shared volume a link to another's."""
    claim = tmp_path / "frugal-artifacts"
    (claim / "victim" / "digits" / "gen-1").mkdir(parents=True)
    (claim / "ml").symlink_to(claim / "victim")
    found = own_directory(SHARED, SHARED, owner("ml", "digits"), tmp_path)
    assert found is not None and found.path == claim / "ml" / "digits"
    with pytest.raises(NotConfined, match="symbolic link"):
        found.check_links()
    (claim / "ml").unlink()
    (claim / "ml" / "digits").mkdir(parents=True)
    found.check_links()  # a plain directory: no error


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
