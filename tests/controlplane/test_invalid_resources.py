"""One contract, two enforcers: every malformed resource in tests/cases/invalid_resources.yaml is rejected
by the real API server and by the local validator (frugal.operator.api), both naming the same field."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from controlplane_harness import REPO_ROOT, ControlPlane

from frugal.operator.api import check, models

CASES: list[dict[str, Any]] = yaml.safe_load(
    (REPO_ROOT / "tests" / "cases" / "invalid_resources.yaml").read_text()
)
IDS = [case["name"] for case in CASES]
PLURALS = {
    "ModelDeployment": "modeldeployments",
    "HardwareProfile": "hardwareprofiles",
    "BatchInference": "batchinferences",
}


def test_the_table_covers_every_kind() -> None:
    assert len(CASES) >= 15
    assert {case["document"]["kind"] for case in CASES} == set(PLURALS)


def server_error_fields(
    cluster: ControlPlane, namespace: str, document: dict[str, Any]
) -> tuple[int, set[str]]:
    """POST the document as a dry run with strict field validation; the status code and named fields."""
    from kubernetes import client

    kind = document["kind"]
    with cluster.api_client() as api_client:
        api = client.CustomObjectsApi(api_client)
        try:
            if kind == "HardwareProfile":
                api.create_cluster_custom_object(
                    "frugal.dev",
                    "v1alpha1",
                    PLURALS[kind],
                    document,
                    dry_run="All",
                    field_validation="Strict",
                )
            else:
                api.create_namespaced_custom_object(
                    "frugal.dev", "v1alpha1", namespace, PLURALS[kind], document,
                    dry_run="All", field_validation="Strict",
                )  # fmt: skip
        except client.ApiException as rejected:
            status = json.loads(rejected.body or "{}")
            causes = status.get("details", {}).get("causes", [])
            fields = {c["field"] for c in causes if c.get("field") and c["field"] != "<nil>"}
            # Strict decoding names unknown fields only in the message.
            fields |= set(re.findall(r'unknown field "([^"]+)"', status.get("message", "")))
            return int(rejected.status), fields
    return 201, set()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_api_server_rejects_naming_the_field(
    crds_installed: ControlPlane, namespace: str, case: dict[str, Any]
) -> None:
    code, fields = server_error_fields(crds_installed, namespace, case["document"])
    assert code in (400, 422), f"the API server accepted {case['name']} ({code})"
    assert fields == {case["field"]}, f"server named {sorted(fields)}, the table expects {case['field']}"

    # What a person sees: kubectl's message names the field too.
    proc = crds_installed.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-",
        input=json.dumps(case["document"]), check=False,
    )  # fmt: skip
    assert proc.returncode != 0, proc.stdout
    assert case["field"] in proc.stderr, proc.stderr


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_local_validator_rejects_naming_the_same_field(case: dict[str, Any]) -> None:
    assert {error.path for error in check(case["document"]).errors if error.path} == {case["field"]}


def test_a_corrected_case_is_accepted_by_both(crds_installed: ControlPlane, namespace: str) -> None:
    """The rejections above are about the one broken field, not the rest of the document."""
    fixed = next(case for case in CASES if case["name"] == "min-replicas-above-max")["document"]
    fixed = json.loads(json.dumps(fixed))
    fixed["spec"]["autoscaling"]["minReplicas"] = 1
    assert check(fixed).ok
    assert server_error_fields(crds_installed, namespace, fixed) == (201, set())


# --- spec.serving.shards: an integer 1-16, "auto" or a range "N-M" (int-or-string with a CEL rule) ------

SHARDS_ACCEPTED: list[Any] = [2, 16, "1-4", "auto", "16-16"]
SHARDS_REFUSED: list[Any] = [0, 17, "0-2", "3-2", "1-17", "many", "2", True]


def with_shards(shards: Any) -> dict[str, Any]:
    fixed = next(case for case in CASES if case["name"] == "min-replicas-above-max")["document"]
    document: dict[str, Any] = json.loads(json.dumps(fixed))
    document["spec"]["autoscaling"]["minReplicas"] = 1
    document["spec"]["serving"]["shards"] = shards
    return document


def server_causes(
    cluster: ControlPlane, namespace: str, document: dict[str, Any]
) -> tuple[int, list[dict[str, str]]]:
    """Create the document as a dry run; the status code and the causes of a rejection."""
    from kubernetes import client

    with cluster.api_client() as api_client:
        try:
            client.CustomObjectsApi(api_client).create_namespaced_custom_object(
                "frugal.dev", "v1alpha1", namespace, "modeldeployments", document,
                dry_run="All", field_validation="Strict",
            )  # fmt: skip
        except client.ApiException as rejected:
            causes = json.loads(rejected.body or "{}").get("details", {}).get("causes", [])
            return int(rejected.status), causes
    return 201, []


@pytest.mark.parametrize("shards", SHARDS_ACCEPTED, ids=repr)
def test_shards_forms_are_accepted_by_both(crds_installed: ControlPlane, namespace: str, shards: Any) -> None:
    assert server_causes(crds_installed, namespace, with_shards(shards)) == (201, [])
    checked = check(with_shards(shards))
    assert checked.ok, checked.errors
    created = json.loads(
        crds_installed.kubectl(
            "create", "-n", namespace, "-o", "json", "-f", "-", input=json.dumps(with_shards(shards))
        ).stdout
    )
    assert created["spec"]["serving"]["shards"] == shards  # stored as written: an int stays an int


@pytest.mark.parametrize("shards", SHARDS_REFUSED, ids=repr)
def test_bad_shards_are_refused_by_both_naming_the_field_and_what_to_write(
    crds_installed: ControlPlane, namespace: str, shards: Any
) -> None:
    code, causes = server_causes(crds_installed, namespace, with_shards(shards))
    local = [error for error in check(with_shards(shards)).errors if error.path]
    assert code == 422, causes
    named = [cause for cause in causes if cause.get("field") and cause["field"] != "<nil>"]
    assert {c["field"] for c in named} == {"spec.serving.shards"} == {e.path for e in local}, causes
    if isinstance(shards, bool):  # the schema's type check fails first; neither runs the CEL rules then
        assert any("must be of type integer,string" in cause["message"] for cause in named), named
        assert local[0].message.startswith("Invalid value: true: must be an integer or a string (The shard")
        return
    # The rule's message, word for word, from both.
    assert named[0]["message"] == local[0].message == f"Invalid value: {models.SHARDS_USAGE}"
    proc = crds_installed.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-",
        input=json.dumps(with_shards(shards)), check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and models.SHARDS_USAGE in proc.stderr, proc.stderr
