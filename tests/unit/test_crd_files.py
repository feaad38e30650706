"""The CRDs are the API contract: documented, cheap for the API server's CEL cost estimator, and shipped
identically in the Helm chart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import pytest

from frugal.operator.api import crd, crd_text, kinds, schema
from frugal.operator.api.cel import parse_field_path
from frugal.operator.api.structural import child_schema

REPO = Path(__file__).resolve().parents[2]
CRD_FILES = sorted(path.name for path in (REPO / "crds").glob("*.yaml"))


def fields(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every declared field of a schema, with its path."""
    for name, sub in node.get("properties", {}).items():
        yield f"{path}.{name}", sub
        yield from fields(sub, f"{path}.{name}")
    for key, label in (("items", "[]"), ("additionalProperties", "{}")):
        sub = node.get(key)
        if isinstance(sub, dict):
            yield f"{path}{label}", sub
            yield from fields(sub, f"{path}{label}")


def rules(node: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for rule in node.get("x-kubernetes-validations", []):
        yield node, rule
    for _, sub in fields(node):
        for rule in sub.get("x-kubernetes-validations", []):
            yield sub, rule


def test_the_chart_ships_byte_identical_crds() -> None:
    assert sorted(path.name for path in (REPO / "charts" / "frugal" / "files" / "crds").glob("*.yaml")) == CRD_FILES
    for name in CRD_FILES:
        assert (REPO / "charts" / "frugal" / "files" / "crds" / name).read_bytes() == (
            REPO / "crds" / name
        ).read_bytes()


def test_the_package_data_is_the_crds_folder() -> None:
    for name in CRD_FILES:
        assert crd_text(name) == (REPO / "crds" / name).read_text()


def test_names_scopes_and_status_subresource() -> None:
    assert set(kinds()) == {"ModelDeployment", "HardwareProfile", "BatchInference"}
    md, hwp = crd("ModelDeployment")["spec"], crd("HardwareProfile")["spec"]
    assert (md["group"], md["scope"], md["names"]["shortNames"]) == ("frugal.dev", "Namespaced", ["md"])
    assert (hwp["group"], hwp["scope"], hwp["names"]["shortNames"]) == ("frugal.dev", "Cluster", ["hwp"])
    batch = crd("BatchInference")["spec"]
    assert (batch["scope"], batch["names"]["shortNames"]) == ("Namespaced", ["bi"])
    assert batch["versions"][0]["subresources"] == {"status": {}}
    (version,) = md["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Variant", "Hardware", "Replicas", "P95 (ms)", "Cost/h", "Age"]


@pytest.mark.parametrize("kind", ["ModelDeployment", "HardwareProfile", "BatchInference"])
def test_every_field_has_a_description_for_kubectl_explain(kind: str) -> None:
    # The API server forbids anything but `type` on the root metadata; kubectl explains ObjectMeta itself.
    undocumented = [
        path for path, sub in fields(schema(kind)) if not sub.get("description") and path != ".metadata"
    ]
    assert undocumented == []


@pytest.mark.parametrize("kind", ["ModelDeployment", "HardwareProfile", "BatchInference"])
def test_lists_and_strings_are_bounded_for_the_cel_cost_estimator(kind: str) -> None:
    for path, sub in fields(schema(kind)):
        if sub.get("type") == "array":
            assert "maxItems" in sub, path
        if sub.get("type") == "string" and path not in (".apiVersion", ".kind"):
            assert "maxLength" in sub or "enum" in sub or sub.get("format") == "date-time", path


@pytest.mark.parametrize("kind", ["ModelDeployment", "HardwareProfile"])
def test_every_cel_rule_compiles_and_names_a_declared_field(kind: str) -> None:
    found = list(rules(schema(kind)))
    assert found
    for node, rule in found:
        assert rule["reason"] == "FieldValueInvalid" and ": " in rule["message"], rule
        target: dict[str, Any] | None = node
        for part in parse_field_path(rule["fieldPath"]):
            target = child_schema(target, part) if target else None
        assert target is not None, rule["fieldPath"]


def test_cel_rules_compile_in_cel_python() -> None:
    environment = celpy.Environment()
    for kind in kinds():
        for _, rule in rules(schema(kind)):
            environment.compile(rule["rule"])
