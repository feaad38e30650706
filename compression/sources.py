"""Resolve ``config.model`` and ``config.data`` into a ``SourceModel``.

``zoo://NAME`` brings its own data. ``file://`` (or a plain path) to an ``.onnx`` file needs
``data.validation`` as an ``.npz`` whose arrays are named after the model's inputs (plus ``labels``
for classifiers); calibration defaults to the validation data. Every mistake is a CompressionError
that names the field to change.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from .config import CompressionConfig
from .errors import CompressionError
from .source import Arrays, HeldOut, SourceModel, Task, TensorSpec, oip_datatype


def uri_path(uri: str, field: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.netloc + parsed.path if parsed.scheme == "file" else uri)
    raise CompressionError(
        f"{field}: unsupported URI scheme {parsed.scheme!r}; use zoo://, file:// or a path"
    )


def load_source(config: CompressionConfig) -> SourceModel:
    uri = config.model.uri
    if uri.startswith("zoo://"):
        from . import zoo

        return zoo.load(uri.removeprefix("zoo://"))
    path = uri_path(uri, "model.uri")
    fmt = config.model.format or ("onnx" if path.suffix == ".onnx" else None)
    if fmt != "onnx":
        raise CompressionError(
            f"model.uri {uri}: only ONNX files and zoo:// models are supported here; set model.format: onnx"
        )
    if config.pruning or config.distillation:
        raise CompressionError(
            "pruning and distillation need a PyTorch model; remove them for an ONNX source"
        )
    return _onnx_source(uri, path, config)


def _onnx_source(uri: str, path: Path, config: CompressionConfig) -> SourceModel:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except FileNotFoundError as exc:
        raise CompressionError(f"model.uri: no such file {path}") from exc
    except Exception as exc:
        raise CompressionError(
            f"model.uri: {path} is not a readable ONNX model ({type(exc).__name__})"
        ) from exc
    if config.data.validation is None:
        raise CompressionError(
            "data.validation is required for an ONNX model: give an .npz keyed by input name"
        )
    validation = load_npz(config.data.validation, "data.validation")
    calibration = (
        load_npz(config.data.calibration, "data.calibration") if config.data.calibration else validation
    )
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    inputs = [_spec(i) for i in graph_inputs]
    for data, field in ((validation, "data.validation"), (calibration, "data.calibration")):
        check_inputs(inputs, data.inputs, field)
    task: Task = "classification" if validation.labels is not None else "embedding"
    return SourceModel(
        uri=uri,
        task=task,
        family="opaque",
        inputs=inputs,
        outputs=[_spec(o) for o in model.graph.output],
        validation=validation,
        calibration=calibration,
        onnx_path=path,
    )


def _spec(value: object) -> TensorSpec:
    from onnx import helper

    tensor = value.type.tensor_type  # type: ignore[attr-defined]
    dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    return TensorSpec(value.name, oip_datatype(dtype), shape)  # type: ignore[attr-defined]


def load_npz(uri: str, field: str) -> HeldOut:
    path = uri_path(uri, field)
    try:
        with np.load(path, allow_pickle=False) as handle:
            arrays: Arrays = {k: handle[k] for k in handle.files}
    except (OSError, ValueError) as exc:
        raise CompressionError(f"{field}: cannot read {path} as .npz ({exc})") from exc
    labels = arrays.pop("labels", None)
    if not arrays:
        raise CompressionError(f"{field}: {path} holds no input arrays")
    lengths = {len(a) for a in arrays.values()} | ({len(labels)} if labels is not None else set())
    if len(lengths) != 1:
        raise CompressionError(f"{field}: arrays in {path} have different numbers of rows {sorted(lengths)}")
    return HeldOut(arrays, labels.astype(np.int64) if labels is not None else None)


def check_inputs(specs: list[TensorSpec], arrays: Arrays, field: str) -> None:
    """The data must name every model input and match its rank, fixed dimensions and dtype."""
    for spec in specs:
        if spec.name not in arrays:
            raise CompressionError(
                f"{field}: no array named {spec.name!r}; the model's inputs are {[s.name for s in specs]}"
            )
        array = arrays[spec.name]
        fixed = all(d < 0 or d == a for d, a in zip(spec.shape, array.shape, strict=False))
        if array.ndim != len(spec.shape) or not fixed:
            raise CompressionError(
                f"{field}: array {spec.name!r} has shape {list(array.shape)}, the model expects {list(spec.shape)}"
            )
        if oip_datatype(array.dtype) != spec.datatype:
            raise CompressionError(
                f"{field}: array {spec.name!r} is {oip_datatype(array.dtype)}, the model expects {spec.datatype}"
            )
