"""Resolve ``config.model`` and ``config.data`` into a ``SourceModel``.

``zoo://NAME`` brings its own data. A file (``file://`` or a plain path) is one of:

- ``onnx``: an ONNX model; ``data.validation`` is an ``.npz`` (or ``.parquet``) whose arrays are named after the
  model's inputs (plus ``labels`` for classifiers).
- ``torchscript``: a ``torch.jit`` archive; the validation ``.npz`` also defines its inputs (array
  names in file order, dynamic batch, other dimensions as in the data); its one output is ``output``.
- ``pytorch``: a ``state_dict`` for a zoo architecture (``model.architecture``), possibly with fewer
  neurons or encoder layers than the zoo's (a pruned or distilled model); the zoo brings the data.

The format comes from ``model.format`` or the file extension. Calibration defaults to the
validation data. Every mistake is a CompressionError that names the field to change.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import numpy as np

from frugal.storage import object_store

from . import zoo
from .config import CompressionConfig
from .errors import CompressionError
from .source import Arrays, HeldOut, SourceModel, Task, TensorSpec, cache_dir, oip_datatype

if TYPE_CHECKING:
    import torch
    from torch import nn

T = TypeVar("T")

SUFFIX_FORMATS = {
    ".onnx": "onnx",
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
}
_DIGITS_LINEAR = re.compile(r"(\d+)\.weight")
_ENCODER_LAYER = re.compile(r"bert\.encoder\.layer\.(\d+)\.")
_BERT_RESIZABLE = re.compile(
    r"bert\.encoder\.layer\.\d+\.(intermediate\.dense|output\.dense|attention\.self\.(query|key|value)|attention\.output\.dense)"
)


def uri_path(uri: str, field: str) -> Path:
    """A local file for ``uri``: ``file://`` or a plain path as is; ``pvc://claim/path`` under
    ``$FRUGAL_PVC_ROOT`` (where the operator's compression Job mounts the claims it names); any other
    scheme (s3://, gs://, az://, https://, ...) fetched through fsspec."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.netloc + parsed.path if parsed.scheme == "file" else uri)
    if parsed.scheme == "pvc":
        root = os.environ.get("FRUGAL_PVC_ROOT")
        if not root:
            raise CompressionError(
                f"{field}: {uri} is on a PersistentVolumeClaim; mount the claim and set FRUGAL_PVC_ROOT "
                "to the directory that holds it (the operator's compression Job does both)"
            )
        return Path(root) / parsed.netloc / parsed.path.lstrip("/")
    return fetch(uri, field)


def fetch(uri: str, field: str) -> Path:
    """Copy a remote file to the cache (atomically, every run: the remote may have changed)."""
    import hashlib

    import fsspec

    scheme = urlparse(uri).scheme
    try:
        fs, remote = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise CompressionError(
            f"{field}: cannot read {scheme}:// URIs here ({exc}); install the fsspec backend for "
            f"{scheme} (s3fs, gcsfs, adlfs) or use file://, pvc:// or zoo://"
        ) from exc
    folder = cache_dir() / "fetched" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    local = folder / (Path(urlparse(uri).path).name or "download")
    partial = local.with_name(local.name + ".part")
    try:
        fs.get_file(remote, str(partial))
    except Exception as exc:  # each backend raises its own errors (FileNotFoundError, ClientError, ...)
        partial.unlink(missing_ok=True)
        if object_store.is_object_store(uri) and not (failed := object_store.failure(uri, exc)).refused:
            raise failed from None  # unreachable, a timeout: a run that failed (exit 1), not bad input
        raise CompressionError(f"{field}: cannot fetch {uri} ({type(exc).__name__}: {exc})") from exc
    partial.replace(local)
    return local


def load_source(config: CompressionConfig) -> SourceModel:
    uri = config.model.uri
    if uri.startswith("zoo://"):
        return zoo.load(uri.removeprefix("zoo://"))
    path = uri_path(uri, "model.uri")
    fmt = file_format(config.model.format, config.model.architecture, path)
    check_steps(config, fmt)
    if fmt == "onnx":
        return _onnx_source(uri, path, config)
    if fmt == "torchscript":
        return _torchscript_source(uri, path, config)
    return _state_dict_source(uri, path, config)


def file_format(given: str | None, architecture: str | None, path: Path) -> str:
    """``model.format``, else the one the extension (or a given architecture) implies."""
    fmt = given or SUFFIX_FORMATS.get(path.suffix.lower()) or ("pytorch" if architecture else None)
    if fmt is None:
        raise CompressionError(
            f"model.format: cannot tell the format of {path.name} from its extension; "
            "set model.format to onnx, torchscript or pytorch"
        )
    if fmt == "zoo":
        raise CompressionError(
            f"model.format: zoo needs a zoo:// URI, not {path}; use model.uri: zoo://NAME or another format"
        )
    return fmt


def check_steps(config: CompressionConfig, fmt: str) -> None:
    """Refuse settings the format cannot honour, before reading any file."""
    if config.model.architecture is not None and fmt != "pytorch":
        raise CompressionError(
            f"model.architecture applies only to a state dict (model.format: pytorch); remove it for {fmt}"
        )
    if fmt != "pytorch" and (config.pruning or config.distillation):
        field = "pruning" if config.pruning else "distillation"
        raise CompressionError(
            f"{field}: a bare {fmt} model has no known architecture; remove {field}, or give a "
            "state dict with model.format: pytorch and model.architecture"
        )


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise CompressionError(f"model.uri: no such file {path}")


def _read(path: Path, reader: Callable[[Path], T], what: str, hint: str) -> T:
    """``reader(path)`` with torch's deprecation chatter silenced and failures as one line."""
    _require_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return reader(path)
    except Exception as exc:
        raise CompressionError(f"model.uri: {path} is not {what} ({type(exc).__name__}); {hint}") from exc


# --- ONNX -------------------------------------------------------------------------------------


def _onnx_source(uri: str, path: Path, config: CompressionConfig) -> SourceModel:
    import onnx

    def read(p: Path) -> onnx.ModelProto:
        model = onnx.load(str(p), load_external_data=False)
        onnx.checker.check_model(model)
        return model

    model = _read(path, read, "a readable ONNX model", "check model.uri and model.format")
    validation, calibration = _held_out(config, "an ONNX model")
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    inputs = [tensor_spec(i) for i in graph_inputs]
    for data, field in ((validation, "data.validation"), (calibration, "data.calibration")):
        check_inputs(inputs, data.inputs, field)
    return SourceModel(
        uri=uri,
        task=_task(validation),
        family="opaque",
        inputs=inputs,
        outputs=[tensor_spec(o) for o in model.graph.output],
        validation=validation,
        calibration=calibration,
        onnx_path=path,
    )


def tensor_spec(value: object) -> TensorSpec:
    from onnx import helper

    tensor = value.type.tensor_type  # type: ignore[attr-defined]
    dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    return TensorSpec(value.name, oip_datatype(dtype), shape)  # type: ignore[attr-defined]


# --- TorchScript --------------------------------------------------------------------------------


def _torchscript_source(uri: str, path: Path, config: CompressionConfig) -> SourceModel:
    import torch

    hint = "for a state dict set model.format: pytorch and model.architecture"
    module = _read(path, lambda p: torch.jit.load(str(p), map_location="cpu"), "a TorchScript archive", hint)
    validation, calibration = _held_out(config, "a TorchScript model")
    inputs = [
        TensorSpec(name, _datatype(array, name, "data.validation"), (-1, *array.shape[1:]))
        for name, array in validation.inputs.items()
    ]
    check_inputs(inputs, calibration.inputs, "data.calibration")
    names = [spec.name for spec in inputs]
    failure = f"data.validation: the TorchScript model fails on the arrays {names} (its arguments, in order)"
    output = probe(module.eval(), validation, inputs, failure)
    try:
        datatype = oip_datatype(output.numpy().dtype)
    except (TypeError, KeyError):
        raise CompressionError(
            f"model.uri: the TorchScript model's output is {output.dtype}, which has no inference-protocol datatype"
        ) from None
    return SourceModel(
        uri=uri,
        task=_task(validation),
        family="opaque",
        inputs=inputs,
        outputs=[TensorSpec("output", datatype, (-1, *output.shape[1:]))],
        validation=validation,
        calibration=calibration,
        module=module,
    )


def probe(module: nn.Module, sample: HeldOut, inputs: list[TensorSpec], failure: str) -> torch.Tensor:
    """``module``'s output on two rows of ``sample``; it must run and return one tensor."""
    import torch

    rows = sample.rows(2)
    try:
        with torch.no_grad():
            output = module(*(torch.from_numpy(rows[spec.name]) for spec in inputs))
    except Exception as exc:
        raise CompressionError(f"{failure} ({type(exc).__name__})") from exc
    if not isinstance(output, torch.Tensor):
        raise CompressionError(
            f"model.uri: the model returns a {type(output).__name__}; frugal needs exactly one output tensor"
        )
    return output


# --- PyTorch state dict of a zoo architecture -----------------------------------------------------


def _state_dict_source(uri: str, path: Path, config: CompressionConfig) -> SourceModel:
    name = config.model.architecture
    if name not in zoo.NAMES:
        given = "is missing" if name is None else f"{name!r} is unknown"
        raise CompressionError(
            f"model.architecture {given}: a PyTorch state dict needs one of {', '.join(zoo.NAMES)}"
        )
    state = read_state_dict(path)
    source = zoo.load(name)
    assert source.module is not None
    module = _digits_module(state) if name == "digits-mlp" else _minilm_module(source.module, state)
    probe(
        module,
        source.validation,
        source.inputs,
        "model.uri: the state dict's layer shapes do not fit together",
    )
    return _with_user_data(dataclasses.replace(source, uri=uri, module=module), config)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    hint = "save it with torch.save(model.state_dict(), PATH), or set model.format: torchscript"
    state: Any = _read(
        path, lambda p: torch.load(p, map_location="cpu", weights_only=True), "a state dict", hint
    )
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CompressionError(f"model.uri: {path} holds a {type(state).__name__}, not a state dict; {hint}")
    return dict(state)


def _digits_module(state: Mapping[str, torch.Tensor]) -> nn.Module:
    """A DigitsMLP whose hidden widths are the state dict's (a pruned or distilled MLP)."""
    from .zoo.digits import DigitsMLP

    linears = sorted(
        (int(match.group(1)), tensor)
        for key, tensor in state.items()
        if (match := _DIGITS_LINEAR.fullmatch(key)) and tensor.ndim == 2
    )
    if not linears:
        raise CompressionError(
            "model.uri: the state dict has no Linear weights ('0.weight', '2.weight', ...); "
            "is model.architecture digits-mlp right?"
        )
    module = DigitsMLP([int(tensor.shape[0]) for _, tensor in linears[:-1]])
    load_weights(module, state, "digits-mlp", keep_missing=False)
    return module.eval()


def _minilm_module(teacher: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """The pretrained encoder cut to the state dict's layers and FFN widths, then loaded from it."""
    from .steps.transformer import keep_layers

    indices = sorted({int(m.group(1)) for key in state if (m := _ENCODER_LAYER.match(key))})
    if indices != list(range(len(indices))):
        raise CompressionError(
            f"model.uri: the state dict's encoder layers are {indices}; number them 0..k-1 as a student does"
        )
    total = len(teacher.bert.encoder.layer)  # type: ignore[union-attr, arg-type]
    count = min(len(indices) or total, total)
    module = keep_layers(teacher, count, list(range(count)))
    resized = _resize_linears(module, state)
    load_weights(module, state, "all-minilm-l6-v2", keep_missing=True, resized=resized)
    return module.eval()


def _resize_linears(module: nn.Module, state: Mapping[str, torch.Tensor]) -> set[str]:
    """Replace FFN and attention Linear layers whose weight in ``state`` has another shape (structured
    pruning of neurons or heads; the attention forward takes its head count from the shapes)."""
    from torch import nn

    resized = set()
    for name, layer in list(module.named_modules()):
        weight = state.get(f"{name}.weight")
        if not isinstance(layer, nn.Linear) or not _BERT_RESIZABLE.fullmatch(name) or weight is None:
            continue
        if weight.ndim == 2 and weight.shape != layer.weight.shape:
            parent, _, attribute = name.rpartition(".")
            new = nn.Linear(weight.shape[1], weight.shape[0], bias=layer.bias is not None)
            setattr(module.get_submodule(parent), attribute, new)
            resized.add(name)
    return resized


def load_weights(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    architecture: str,
    keep_missing: bool,
    resized: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Load ``state`` into ``module``: every key must exist with the same shape; a missing key keeps
    the module's value when ``keep_missing`` (never for a resized layer, whose values are random)."""
    expected = module.state_dict()
    for key, tensor in state.items():
        if key not in expected:
            raise CompressionError(
                f"model.uri: the state dict has {key!r}, which {architecture} lacks; "
                "check model.architecture or save that model's state_dict()"
            )
        if tensor.shape != expected[key].shape:
            raise CompressionError(
                f"model.uri: {key!r} has shape {list(tensor.shape)} but {architecture} "
                f"expects {list(expected[key].shape)}; check model.architecture"
            )
    missing = [
        key
        for key in expected
        if key not in state and (not keep_missing or key.rpartition(".")[0] in resized)
    ]
    if missing:
        raise CompressionError(
            f"model.uri: the state dict lacks {missing[0]!r} ({len(missing)} keys missing) for {architecture}"
        )
    module.load_state_dict(state, strict=False)


def _with_user_data(source: SourceModel, config: CompressionConfig) -> SourceModel:
    """The zoo's held-out data, replaced by ``data.validation``/``data.calibration`` when given."""
    validation, calibration = source.validation, source.calibration
    if config.data.validation:
        validation = load_data(config.data.validation, "data.validation").head(
            config.data.validation_max_samples
        )
        check_inputs(source.inputs, validation.inputs, "data.validation")
        if source.task == "classification" and validation.labels is None:
            raise CompressionError("data.validation: a classifier's held-out data needs a 'labels' array")
    if config.data.calibration:
        calibration = load_data(config.data.calibration, "data.calibration").head(
            config.data.calibration_max_samples
        )
        check_inputs(source.inputs, calibration.inputs, "data.calibration")
    return dataclasses.replace(source, validation=validation, calibration=calibration)


# --- .npz / .parquet data ----------------------------------------------------------------------------------


def _held_out(config: CompressionConfig, what: str) -> tuple[HeldOut, HeldOut]:
    if config.data.validation is None:
        raise CompressionError(
            f"data.validation is required for {what}: give an .npz keyed by input name (plus labels)"
        )
    validation = load_data(config.data.validation, "data.validation").head(config.data.validation_max_samples)
    calibration = (
        load_data(config.data.calibration, "data.calibration").head(config.data.calibration_max_samples)
        if config.data.calibration
        else validation
    )
    return validation, calibration


def _task(validation: HeldOut) -> Task:
    return "classification" if validation.labels is not None else "embedding"


def _datatype(array: np.ndarray, name: str, field: str) -> str:
    try:
        return oip_datatype(array.dtype)
    except KeyError:
        raise CompressionError(
            f"{field}: {name!r} has dtype {array.dtype}, which has no inference-protocol datatype"
        ) from None


def load_data(uri: str, field: str) -> HeldOut:
    """Held-out or calibration rows from an ``.npz`` (one array per input) or a ``.parquet`` file
    (one column per input, each row a scalar or a nested list); ``labels`` holds class labels.
    ``zoo://NAME`` is that zoo model's own held-out (or, for calibration, calibration) data."""
    if uri.startswith("zoo://"):
        name = uri.removeprefix("zoo://")
        if name not in zoo.NAMES:
            raise CompressionError(f"{field}: no zoo data named {name!r}; known: {', '.join(zoo.NAMES)}")
        source = zoo.load(name)
        return source.calibration if field.endswith("calibration") else source.validation
    path = uri_path(uri, field)
    arrays = _read_parquet(path, field) if path.suffix.lower() == ".parquet" else _read_npz(path, field)
    labels = arrays.pop("labels", None)
    if not arrays:
        raise CompressionError(f"{field}: {path} holds no input arrays")
    if any(a.ndim == 0 for a in [*arrays.values(), *([labels] if labels is not None else [])]):
        raise CompressionError(f"{field}: arrays in {path} need a leading batch dimension")
    lengths = {len(a) for a in arrays.values()} | ({len(labels)} if labels is not None else set())
    if len(lengths) != 1:
        raise CompressionError(f"{field}: arrays in {path} have different numbers of rows {sorted(lengths)}")
    return HeldOut(arrays, labels.astype(np.int64) if labels is not None else None)


def _read_npz(path: Path, field: str) -> Arrays:
    try:
        with np.load(path, allow_pickle=False) as handle:
            return {k: handle[k] for k in handle.files}
    except (OSError, ValueError) as exc:
        raise CompressionError(f"{field}: cannot read {path} as .npz or .parquet ({exc})") from exc


def _read_parquet(path: Path, field: str) -> Arrays:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except ImportError as exc:
        raise CompressionError(
            f"{field}: reading .parquet needs pyarrow; install frugal[compression]"
        ) from exc
    except (OSError, ValueError) as exc:
        raise CompressionError(f"{field}: cannot read {path} as .parquet ({exc})") from exc
    arrays: Arrays = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if column.null_count:
            raise CompressionError(f"{field}: column {name!r} of {path} has missing values")
        leaf = column.type
        while pa.types.is_list(leaf) or pa.types.is_large_list(leaf) or pa.types.is_fixed_size_list(leaf):
            leaf = leaf.value_type
        try:
            arrays[name] = np.asarray(column.to_pylist(), dtype=leaf.to_pandas_dtype())
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise CompressionError(
                f"{field}: column {name!r} of {path} is not numeric rows of one shape ({type(exc).__name__})"
            ) from exc
    return arrays


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
        datatype = _datatype(array, spec.name, field)
        if datatype != spec.datatype:
            raise CompressionError(
                f"{field}: array {spec.name!r} is {datatype}, the model expects {spec.datatype}"
            )
