"""spec.serving.shards: an integer 1-16, "auto" or a range "N-M". One parser (`models.shard_counts`)
for the operator, one CEL rule in the CRD for the API server (and the local validator), held equal."""

from __future__ import annotations

import copy
from typing import Any

import celpy
import pytest

from frugal.operator.api import cel, check, crd, models
from frugal.operator.api.spec import SpecError, parse_model_deployment
from frugal.operator.decision import decide
from frugal.operator.manifests import container_commands

FIELD = "spec.serving.shards"
ACCEPTED = [(1, (1,)), (2, (2,)), (16, (16,)), ("auto", (1, 2, 3, 4)), ("1-4", (1, 2, 3, 4)),
            ("2-3", (2, 3)), ("4-4", (4,)), ("9-12", (9, 10, 11, 12)), ("16-16", (16,))]  # fmt: skip
REFUSED = [0, 17, -1, "0-2", "3-2", "1-17", "12-11", "many", "2", "", "-", "1-", "-4", "01-4", " 1-4",
           "1-4 ", "1 - 4", "1-2-3", "AUTO", "auto-4", "1–4", "١-٤"]  # fmt: skip


def serving_schema() -> dict[str, Any]:
    spec = crd("ModelDeployment")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    found: dict[str, Any] = spec["properties"]["serving"]
    return found


def shards_schema() -> dict[str, Any]:
    found: dict[str, Any] = serving_schema()["properties"]["shards"]
    return found


def shards_rule() -> dict[str, Any]:
    """The rule sits on spec.serving with fieldPath .shards, as the CRDs' other rules do."""
    rules = serving_schema()["x-kubernetes-validations"]
    (rule,) = [rule for rule in rules if rule["fieldPath"] == ".shards"]
    return rule


def model_deployment(shards: Any = None) -> dict[str, Any]:
    serving: dict[str, Any] = {"hardwareProfiles": ["cpu"], "slo": {"latencyP95Ms": 50}}
    if shards is not None:
        serving["shards"] = shards
    return {
        "apiVersion": "frugal.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": "ml"},
        "spec": {"model": {"uri": "zoo://digits-mlp"}, "serving": serving},
    }


# --- the parser -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("shards", "counts"), ACCEPTED)
def test_each_form_gives_its_counts_ascending(shards: int | str, counts: tuple[int, ...]) -> None:
    assert models.shard_counts(shards) == counts


def test_auto_is_every_count_up_to_its_constant() -> None:
    assert models.shard_counts("auto") == tuple(range(1, models.AUTO_MAX_SHARDS + 1))
    assert models.shard_counts(f"1-{models.MAX_SHARDS}") == tuple(range(1, 17))


@pytest.mark.parametrize("shards", [*REFUSED, True, False, 2.0, None, [2]])
def test_what_the_crd_refuses_the_parser_refuses_saying_what_to_write(shards: Any) -> None:
    with pytest.raises(ValueError, match=r"spec\.serving\.shards: use an integer 1-16") as refused:
        models.shard_counts(shards)
    assert str(refused.value) == models.SHARDS_USAGE


# --- the CRD's rule, as the local validator evaluates it ------------------------------------------


def rule_allows(value: Any) -> bool:
    return bool(cel.evaluate(shards_rule()["rule"], celpy.json_to_cel({"shards": value})))


def parser_allows(value: Any) -> bool:
    try:
        models.shard_counts(value)
    except ValueError:
        return False
    return True


def test_the_rule_and_the_parser_agree_on_every_integer_and_range_around_the_limits() -> None:
    values: list[Any] = [*range(-2, 20), *(f"{a}-{b}" for a in range(-1, 19) for b in range(-1, 19))]
    values += [*REFUSED, *(shards for shards, _ in ACCEPTED), "auto", "02-3", "1-04", "+1-4"]
    disagree = [v for v in values if rule_allows(v) != parser_allows(v)]
    assert not disagree
    assert sum(map(parser_allows, values)) == 16 + 16 * 17 // 2 + 1 + len(ACCEPTED)  # ints, ranges, auto


def test_the_rule_message_is_the_parsers_and_names_the_field() -> None:
    assert shards_rule()["message"] == models.SHARDS_USAGE
    assert shards_rule()["message"].startswith(f"{FIELD}: use an integer 1-16")


def test_the_field_is_int_or_string_defaulting_to_one_and_documents_each_form() -> None:
    schema = shards_schema()
    assert schema["x-kubernetes-int-or-string"] is True
    assert schema["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert schema["default"] == 1
    description = " ".join(schema["description"].split())
    assert f'"auto" any count from 1 to {models.AUTO_MAX_SHARDS}' in description
    assert 'a range "N-M" (1 <= N <= M <= 16, e.g. "1-4")' in description
    assert "the planner picks the cheapest" in description


def test_split_is_the_kubernetes_strings_function() -> None:
    assert cel.evaluate("'1-4'.split('-')", None) == celpy.json_to_cel(["1", "4"])
    assert cel.evaluate("'auto'.split('-')", None) == celpy.json_to_cel(["auto"])
    assert cel.evaluate("'ab'.split('')", None) == celpy.json_to_cel(["a", "b"])
    with pytest.raises(celpy.CELEvalError):
        cel.evaluate("'ab'.split(1)", None)


# --- local validation (frugal validate, frugal up) ------------------------------------------------


@pytest.mark.parametrize(("shards", "counts"), ACCEPTED)
def test_local_validation_accepts_each_form(shards: int | str, counts: tuple[int, ...]) -> None:
    checked = check(model_deployment(shards))
    assert checked.ok, checked.errors
    assert checked.document["spec"]["serving"]["shards"] == shards


def test_shards_defaults_to_one() -> None:
    checked = check(model_deployment())
    assert checked.ok and checked.document["spec"]["serving"]["shards"] == 1


@pytest.mark.parametrize("shards", REFUSED)
def test_local_validation_refuses_with_the_rule_message(shards: Any) -> None:
    errors = check(model_deployment(shards)).errors
    assert [(e.path, e.message) for e in errors] == [(FIELD, f"Invalid value: {models.SHARDS_USAGE}")]


@pytest.mark.parametrize("shards", [True, False, 2.5, [2]])
def test_local_validation_refuses_other_types_naming_the_field_and_the_forms(shards: Any) -> None:
    errors = [e for e in check(model_deployment(shards)).errors if e.path]
    assert len(errors) == 1 and errors[0].path == FIELD
    assert "must be an integer or a string" in errors[0].message
    assert '"auto" any count from 1 to 4' in errors[0].message


# --- the typed view and what reads it -------------------------------------------------------------


@pytest.mark.parametrize(("shards", "counts"), ACCEPTED)
def test_the_typed_view_gives_the_counts_to_the_planner_and_the_compression_run(
    shards: int | str, counts: tuple[int, ...]
) -> None:
    md = parse_model_deployment(model_deployment(shards))
    assert md.spec.serving.shards == shards
    assert md.shard_counts == counts
    assert decide.objectives(md).shard_counts == counts
    assert container_commands.compression_config(md, "/out")["shardCounts"] == list(counts)


def test_one_count_is_the_specs_shards_and_a_choice_is_not() -> None:
    assert parse_model_deployment(model_deployment(3)).shards == 3
    assert parse_model_deployment(model_deployment()).shards == 1
    with pytest.raises(SpecError, match=r"spec\.serving\.shards: '1-4' leaves the count to the planner"):
        _ = parse_model_deployment(model_deployment("1-4")).shards


@pytest.mark.parametrize("shards", [True, 2.0, "3-2", "2", 0])
def test_the_typed_view_refuses_what_the_crd_refuses(shards: Any) -> None:
    """A body that skipped the API server's validation (a strict int-or-string: no bool, no float)."""
    with pytest.raises(SpecError, match=r"spec\.serving\.shards"):
        parse_model_deployment(copy.deepcopy(model_deployment(shards)))
