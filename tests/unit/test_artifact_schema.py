"""The artifact files are a contract: one schema (`frugal.schema.artifact_format`), one writer per file,
one typed reader that compression, serving and the operator all go through.

The files here are written by the real writers: compression's `_write` (manifest.json, report.json)
around a real ONNX file, and the profiling Job's `main` (profiles/<profile>.json), which runs that
file in ONNX Runtime. A copy is then edited as a person or an older frugal would, and every reader
refuses it naming the file and the field.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from frugal.compression import artifact
from frugal.compression.config import CompressionConfig
from frugal.compression.evaluate import Score
from frugal.compression.latency import Latency
from frugal.compression.pipeline import VariantResult, _write
from frugal.compression.source import HeldOut, SourceModel, TensorSpec
from frugal.operator.decision import artifact_files
from frugal.operator.local import evaluation
from frugal.schema import artifact_format as schema
from frugal.serving import profiling
from frugal.serving.server import artifacts as serving_artifacts

PROFILE = "local-cpu"
FP32_FILE = "variants/fp32/model.onnx"


def tiny_model() -> onnx.ModelProto:
    """y = x + 1 on [N, 4] FP32."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(np.ones(4, dtype=np.float32), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def write_generation(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A generation directory as compression and then a profiling Job leave it."""
    path = root / FP32_FILE
    path.parent.mkdir(parents=True)
    onnx.save(tiny_model(), str(path))
    config = CompressionConfig.model_validate(
        {"model": {"uri": "file:///tiny.onnx"}, "output": str(root), "name": "tiny"}
    )
    rows = HeldOut({"x": np.zeros((8, 4), dtype=np.float32)})
    source = SourceModel(
        uri="file:///tiny.onnx",
        task="embedding",
        family="opaque",
        inputs=[TensorSpec("x", "FP32", (-1, 4))],
        outputs=[TensorSpec("y", "FP32", (-1, 4))],
        validation=rows,
        calibration=rows,
    )
    variants = [
        VariantResult(
            "fp32",
            (),
            FP32_FILE,
            path.stat().st_size,
            Score("cosine", 1.0, 1.0),
            Latency(0.05, 0.4, 32, 0.1, 1),
            chosen_as=["smallest", "fastest", "lowestLatency"],
        ),
        VariantResult(
            "int8-dynamic",
            ("quantization:dynamic-int8",),
            "",
            score=Score("cosine", 0.5, 1.0),
            status="dropped",
            reason="cosine drop 0.5 exceeds maxDrop 0.01",
        ),
    ]
    manifest, report = _write(config, source, "cosine", variants, root)
    argv = ["--artifacts", str(root), "--hardware-profile", PROFILE, "--batch-size", "4", "--repeats", "2"]
    assert profiling.main(argv) == 0
    return manifest, report


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    root = tmp_path_factory.mktemp("artifacts") / "gen-1"
    root.mkdir()
    manifest, report = write_generation(root)
    return root, manifest, report


@pytest.fixture
def generation(written: tuple[Path, dict[str, Any], dict[str, Any]], tmp_path: Path) -> Path:
    """A fresh copy of the written generation, free to edit."""
    return Path(shutil.copytree(written[0], tmp_path / "gen-1"))


def on_disk(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


# ------------------------------------------------------------------------------------ round trips


def test_the_manifest_compression_writes_round_trips_through_the_reader(
    written: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    root, returned, _ = written
    manifest = schema.read_manifest(root)
    assert schema.document(manifest) == on_disk(root / schema.MANIFEST) == returned
    assert manifest.schema_version == schema.MANIFEST_VERSION == returned["schemaVersion"]
    assert [v.name for v in manifest.variants] == ["fp32"]  # only kept variants
    fp32 = manifest.variant("fp32")
    assert fp32.inputs == (schema.TensorSpec(name="x", datatype="FP32", shape=(-1, 4)),)
    assert fp32.latency is not None and fp32.latency.batch_size == 32
    assert set(manifest.files) == {FP32_FILE, "report.json", "report.png"}
    assert manifest.files[FP32_FILE] == schema.file_entry(root / FP32_FILE)
    assert artifact.verify(root) == []


def test_the_report_compression_writes_round_trips_with_its_optional_ratios_left_out(
    written: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    root, _, returned = written
    report = schema.read_report(root)
    assert schema.document(report) == on_disk(root / schema.REPORT) == returned
    kept, dropped = report.variants
    assert (kept.status, kept.size_ratio, kept.speedup_batch) == ("kept", 1.0, 1.0)
    assert dropped.status == "dropped" and dropped.reason is not None and dropped.latency is None
    row = on_disk(root / schema.REPORT)["variants"][1]
    assert "speedupBatch" not in row and "sizeRatio" in row  # written only when known, as before
    assert report.chosen == {"smallest": "fp32", "fastest": "fp32", "lowestLatency": "fp32"}


def test_the_profile_the_profiling_job_writes_round_trips_through_the_reader(
    written: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    root, _, _ = written
    path = schema.profile_path(root, PROFILE)
    profile = schema.read_profile(root, PROFILE)
    assert schema.document(profile) == on_disk(path)
    assert profile.hardware_profile == PROFILE and profile.provider == "CPUExecutionProvider"
    [row] = profile.variants
    assert (row.name, row.shards, row.batch_size) == ("fp32", 1, 4)
    assert row.latency_p95_ms > 0 and row.throughput_rps > 0
    assert not list(path.parent.glob("*.tmp"))  # written atomically, nothing left behind


# ------------------------------------------------------------------------------------ refusals

Edit = Callable[[dict[str, Any]], None]


def _drop(*keys: str | int) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return edit


def _stage(index: int, file: str) -> dict[str, object]:
    tensor = {"name": "x", "datatype": "FP32", "shape": [-1, 4]}
    return {"index": index, "file": file, "inputs": [tensor], "outputs": [tensor]}


def _set(value: Any, *keys: str | int) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


REFUSALS: list[tuple[str, str, Edit, str]] = [
    # (file, what, edit, the message after "<path>: ")
    (schema.MANIFEST, "missing field", _drop("files", FP32_FILE, "sha256"),
     f'files["{FP32_FILE}"].sha256: field required'),
    (schema.MANIFEST, "an older v1 file (before batchSpread)", _drop("variants", 0, "latency", "batchSpread"),
     "variants[0].latency.batchSpread: field required"),
    (schema.MANIFEST, "wrong type", _set("123", "variants", 0, "sizeBytes"),
     'variants[0].sizeBytes: input should be a valid integer (found "123")'),
    (schema.MANIFEST, "wrong type in a list", _set([-1, True], "variants", 0, "inputs", 0, "shape"),
     "variants[0].inputs[0].shape[1]: input should be a valid integer (found true)"),
    (schema.MANIFEST, "unknown field", _set(True, "variants", 0, "quantized"),
     "variants[0].quantized: unknown field"),
    (schema.MANIFEST, "a variant whose file is not listed", _set("variants/fp32/other.onnx", "variants", 0, "file"),
     "variants[0].file: 'variants/fp32/other.onnx' is not listed under files"),
    (schema.MANIFEST, "a stage file that is not listed",
     _set([{"count": 2, "stages": [_stage(0, "variants/fp32/stages-2/stage-0/model.onnx"),
                                   _stage(1, "variants/fp32/stages-2/stage-1/model.onnx")]}],
          "variants", 0, "stageSets"),
     "variants[0].stageSets[0].stages[0].file: 'variants/fp32/stages-2/stage-0/model.onnx' is not listed"),
    (schema.MANIFEST, "a stage set missing a stage",
     _set([{"count": 3, "stages": [_stage(0, "a.onnx"), _stage(2, "b.onnx")]}], "variants", 0, "stageSets"),
     "variants[0].stageSets[0]: value error, stages: expected stages 0..2 in order"),
    (schema.MANIFEST, "one shard is not a stage set",
     _set([{"count": 1, "stages": [_stage(0, "a.onnx")]}], "variants", 0, "stageSets"),
     "variants[0].stageSets[0].count: input should be greater than or equal to 2"),
    (schema.MANIFEST, "an older version", _set(1, "schemaVersion"),
     "schemaVersion: the file is version 1, written by an older frugal; this reader reads version 2 only"),
    (schema.MANIFEST, "a newer version", _set(3, "schemaVersion"),
     "schemaVersion: the file is version 3, written by a newer frugal"),
    (schema.MANIFEST, "no version", _drop("schemaVersion"), "schemaVersion: field required"),
    (schema.REPORT, "missing field", _drop("budget", "maxDrop"), "budget.maxDrop: field required"),
    (schema.REPORT, "wrong value", _set("maybe", "variants", 1, "status"),
     "variants[1].status: input should be 'kept' or 'dropped'"),
    (schema.REPORT, "unknown field", _set(1.5, "variants", 1, "speedup"), "variants[1].speedup: unknown field"),
    (f"{schema.PROFILES}/{PROFILE}.json", "wrong type", _set("fast", "variants", 0, "throughputRps"),
     'variants[0].throughputRps: input should be a valid number (found "fast")'),
    (f"{schema.PROFILES}/{PROFILE}.json", "unknown field", _set("x", "gpu"), "gpu: unknown field"),
    (f"{schema.PROFILES}/{PROFILE}.json", "another profile's file", _set("gpu-t4", "hardwareProfile"),
     "hardwareProfile: 'gpu-t4' measured, but the file is 'local-cpu''s"),
]  # fmt: skip


def read_file(name: str, root: Path) -> object:
    if name == schema.MANIFEST:
        return schema.read_manifest(root)
    if name == schema.REPORT:
        return schema.read_report(root)
    return schema.read_profile(root, PROFILE)


@pytest.mark.parametrize(("name", "what", "edit", "message"), REFUSALS, ids=[f"{r[0]}: {r[1]}" for r in REFUSALS])
def test_an_edited_or_older_file_is_refused_naming_the_file_and_the_field(
    generation: Path, name: str, what: str, edit: Edit, message: str
) -> None:
    path = generation / name
    doc = on_disk(path)
    edit(doc)
    path.write_text(json.dumps(doc, indent=2))
    with pytest.raises(schema.ArtifactError) as refused:
        read_file(name, generation)
    assert str(refused.value).startswith(f"{path}: "), str(refused.value)
    assert message in str(refused.value)


def test_a_file_that_is_not_json_or_not_an_object_is_refused(generation: Path) -> None:
    path = generation / schema.MANIFEST
    path.write_text("{")
    with pytest.raises(schema.ArtifactError, match=rf"^{path} is not valid JSON"):
        schema.read_manifest(generation)
    path.write_text("[]")
    with pytest.raises(schema.ArtifactError, match=rf"^{path}: must hold a JSON object"):
        schema.read_manifest(generation)


def test_a_missing_file_is_its_own_error(tmp_path: Path) -> None:
    with pytest.raises(schema.MissingArtifactFile, match=rf"^{tmp_path / 'manifest.json'} is missing$"):
        schema.read_manifest(tmp_path)


# ------------------------------------------------------------------------------------ one set of models


def test_operator_serving_and_compression_read_through_the_same_models(generation: Path) -> None:
    # Serving's names are the schema's, and each component's reader returns the schema's types.
    assert serving_artifacts.Manifest is schema.Manifest and serving_artifacts.Variant is schema.Variant
    assert serving_artifacts.TensorSpec is schema.TensorSpec and serving_artifacts.ArtifactError is schema.ArtifactError
    assert artifact_files.ArtifactError is schema.ArtifactError
    assert typing.get_type_hints(evaluation.ServedModel)["manifest"] is schema.Manifest
    assert isinstance(serving_artifacts.load_manifest(generation), schema.Manifest)
    found = artifact_files.read(generation, [PROFILE, "gpu-t4"])  # gpu-t4 not profiled: skipped
    assert isinstance(found.manifest, schema.Manifest) and isinstance(found.report, schema.Report)
    assert set(found.profiles) == {PROFILE} and isinstance(found.profiles[PROFILE], schema.Profile)
    [variant] = artifact_files.planner_variants(found)
    assert variant.measurements[0].profile == PROFILE and variant.report_throughput_rps == 80000.0
    # One hand edit, one refusal, word for word, wherever it is read.
    path = generation / schema.MANIFEST
    doc = on_disk(path)
    del doc["variants"][0]["sizeBytes"]
    path.write_text(json.dumps(doc))
    expected = f"{path}: variants[0].sizeBytes: field required"
    readers: dict[str, Callable[[], object]] = {
        "schema": lambda: schema.read_manifest(generation),
        "serving": lambda: serving_artifacts.load_manifest(generation),
        "operator": lambda: artifact_files.read(generation, [PROFILE]),
        "compression": lambda: artifact.verify(generation),
        "profiling": lambda: profiling.profile(generation, 4, 0.0, "CPUExecutionProvider", 1),
    }
    for component, read in readers.items():
        with pytest.raises(schema.ArtifactError) as refused:
            read()
        assert str(refused.value) == expected, component


def test_the_profiling_job_refuses_a_bad_manifest_with_the_field(
    generation: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = generation / schema.MANIFEST
    doc = copy.deepcopy(on_disk(path))
    doc["variants"][0]["inputs"][0]["shape"] = "[-1, 4]"
    path.write_text(json.dumps(doc))
    assert profiling.main(["--artifacts", str(generation), "--hardware-profile", PROFILE]) == 2
    assert "manifest.json: variants[0].inputs[0].shape: input should be a valid array" in capsys.readouterr().err


def test_one_sha256_helper() -> None:
    assert serving_artifacts.sha256_file is schema.sha256_file
    assert artifact.sha256_file is schema.sha256_file
    assert not hasattr(serving_artifacts, "sha256_of")


def test_the_schema_imports_only_pydantic_and_the_standard_library() -> None:
    import grimp

    graph = grimp.build_graph("frugal", cache_dir=None, include_external_packages=True)
    imported = {
        name.split(".")[0]
        for module in graph.find_children("frugal.schema")
        for name in graph.find_modules_directly_imported_by(module)
    }
    assert imported - set(sys.stdlib_module_names) == {"pydantic"}
