"""Cut an ONNX graph into N contiguous stages balanced by parameter bytes, and write each stage as its
own verified ONNX file. The cut is deterministic; compression makes the files once, per shard count.

Nodes are taken in topological order. A cut before node `p` is crossed by every tensor made before `p`
(or fed as a graph input) and used at or after `p` (or returned as a graph output); those tensors are
what one stage sends the next. Cuts are chosen one by one, each as close as it can get to an equal share
of the parameter bytes still to place, with a small penalty per extra crossing tensor so cuts land where few tensors
cross (between layers rather than inside one). `Constant` nodes never cross a cut: every stage that uses
one gets its own copy.

Only a request's own rows may cross a cut. When the model is batchable (every graph input has a free
first dimension) a cut is placed only where every crossing tensor has a free first dimension too: a
shape vector (`Shape`'s output, a reshape target) must not cross, because the server stacks the
requests of a batch on the first dimension and splits the answer the same way — a `[2]` shape vector
cannot be stacked, so a stage behind such a cut could answer only batches of the size it was cut at.
Static shapes cannot tell a batch dimension from a broadcast 1, so :func:`write_stage_set` also runs
the chain at two batch sizes and checks every crossing tensor's first dimension is the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import helper

from frugal.schema import artifact_format as schema

from .errors import CompressionError
from .loaders import tensor_spec
from .source import Arrays, TensorSpec

CROSSING_PENALTY = 0.02  # an extra crossing tensor costs like 2% of an equal stage's share, squared


@dataclass(frozen=True)
class Stage:
    index: int
    model: onnx.ModelProto
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    param_bytes: int


@dataclass(frozen=True)
class _Graph:
    """The facts about a graph the planner needs, computed once."""

    nodes: list[onnx.NodeProto]  # without Constant nodes
    constants: dict[str, onnx.NodeProto]  # tensor name → the Constant node making it
    producer: dict[str, int]  # tensor → node position (-1: graph input)
    last_use: dict[str, int]  # tensor → last consuming position (len(nodes): a graph output)
    node_bytes: list[int]  # parameter bytes first used by each node


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """A node's inputs plus the outer-scope names its subgraphs (If/Loop/Scan bodies) read."""
    names = [name for name in node.input if name]
    for attribute in node.attribute:
        for graph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
            defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
            for inner in graph.node:
                for name in node_inputs(inner):
                    if name not in defined:
                        names.append(name)
                defined.update(inner.output)
    return names


def _initializer_bytes(tensor: onnx.TensorProto) -> int:
    itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize


def _analyse(graph: onnx.GraphProto) -> _Graph:
    initializers = {t.name: _initializer_bytes(t) for t in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and not n.input}
    nodes = [n for n in graph.node if not (n.op_type == "Constant" and not n.input)]
    producer = {i.name: -1 for i in graph.input if i.name not in initializers}
    last_use: dict[str, int] = {}
    node_bytes: list[int] = []
    seen: set[str] = set()
    for position, node in enumerate(nodes):
        weight = 0
        for name in node_inputs(node):
            if name in initializers and name not in seen:
                weight += initializers[name]
                seen.add(name)
            if name in producer:
                last_use[name] = position
            elif name not in initializers and name not in constants:
                raise ValueError(
                    f"node {node.name or node.op_type} reads '{name}' before it is made; the "
                    "graph is not in topological order"
                )
        node_bytes.append(weight)
        for name in node.output:
            if name:
                producer[name] = position
    for output in graph.output:
        last_use[output.name] = len(nodes)
    return _Graph(nodes, constants, producer, last_use, node_bytes)


def crossing(info: _Graph, cut: int) -> list[str]:
    """Tensors that cross a cut placed before node `cut`, in a stable order."""
    return [name for name, made in info.producer.items() if made < cut <= info.last_use.get(name, -2)]


def plan_cuts(model: onnx.ModelProto, count: int) -> list[int]:
    """Node positions to cut before (`count - 1` of them) for `count` balanced stages."""
    inferred = infer_shapes(model)
    return _plan_cuts(inferred.graph, _analyse(inferred.graph), count)


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every tensor's type, dimensions named where they can be: ONNX Runtime's symbolic
    shape inference carries the inputs' batch dimension through the graph by name (and writes a
    broadcast dimension as 1), which plain ONNX inference leaves unnamed; the latter is the fallback
    for graphs the former cannot follow."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # an operator it does not know; its errors share no base class
        inferred = None
    return inferred if inferred is not None else onnx.shape_inference.infer_shapes(model)


def _plan_cuts(graph: onnx.GraphProto, info: _Graph, count: int) -> list[int]:
    n = len(info.nodes)
    if not 1 <= count <= n:
        raise ValueError(f"cannot cut a graph of {n} nodes into {count} stages; use 1..{n} shards")
    cumulative = np.concatenate([[0], np.cumsum(info.node_bytes)])
    weights_known = cumulative[-1] > 0
    if not weights_known:  # no parameters: balance node counts
        cumulative = np.arange(n + 1)
    total = float(cumulative[-1])
    counts = _crossing_counts(info, lambda name: True)
    allowed = _crossing_counts(info, _not_batch_major(graph)) == 0 if _batchable(graph) else counts >= 0
    allowed[0] = allowed[n] = True
    # Dynamic programming over cut positions: best[j][p] is the least cost of j stages covering nodes
    # [0, p) with a cut before p; a stage's cost is the square of its share of the bytes (so every stage
    # is balanced, not only the largest), a cut's the penalty for its extra crossing tensors, scaled
    # like an equal stage's cost.
    share = cumulative / total
    penalty = CROSSING_PENALTY / count**2 * np.maximum(counts[: n + 1] - 1, 0)
    infinite = np.full(n + 1, np.inf)
    best = infinite.copy()
    best[0] = 0.0
    back: list[npt.NDArray[np.int64]] = []
    for _ in range(count):
        here, came_from = infinite.copy(), np.zeros(n + 1, dtype=np.int64)
        for position in range(1, n + 1):
            if not allowed[position]:
                continue
            options = best[:position] + (share[position] - share[:position]) ** 2
            q = int(np.argmin(options))
            here[position] = options[q] + (penalty[position] if position < n else 0.0)
            came_from[position] = q
        best = here
        back.append(came_from)
    if not np.isfinite(best[n]):
        raise ValueError(
            f"cannot cut this graph into {count} stages where only a request's rows cross each cut; "
            "use fewer shards"
        )
    cuts, position = [], n
    for came_from in reversed(back[1:]):
        position = int(came_from[position])
        cuts.append(position)
    return sorted(cuts)


def _crossing_counts(info: _Graph, selected: Callable[[str], bool]) -> npt.NDArray[np.int64]:
    """counts[p] = how many selected tensors cross a cut placed before node p."""
    counts = np.zeros(len(info.nodes) + 2, dtype=np.int64)
    for name, made in info.producer.items():
        last = info.last_use.get(name, -2)
        if made + 1 <= last and selected(name):
            counts[made + 1] += 1
            counts[last + 1] -= 1
    return np.cumsum(counts)


def _first_dim(value: onnx.ValueInfoProto | None) -> onnx.TensorShapeProto.Dimension | None:
    if value is None or not value.type.HasField("tensor_type"):
        return None
    tensor = value.type.tensor_type
    return tensor.shape.dim[0] if tensor.HasField("shape") and len(tensor.shape.dim) > 0 else None


def _batch_names(graph: onnx.GraphProto) -> set[str] | None:
    """The names of the graph inputs' first dimensions ("" for a free unnamed one), or None when an
    input has a fixed first dimension (the model is not batchable: any cut will do)."""
    initializers = {t.name for t in graph.initializer}
    names = set()
    for value in graph.input:
        if value.name in initializers:
            continue
        dim = _first_dim(value)
        if dim is None or dim.HasField("dim_value"):
            return None
        names.add(dim.dim_param)
    return names


def _batchable(graph: onnx.GraphProto) -> bool:
    return _batch_names(graph) is not None


def _not_batch_major(graph: onnx.GraphProto) -> Callable[[str], bool]:
    """Whether a tensor's first dimension is not known to be the batch: fixed, absent, or (when the
    inputs' batch dimension is named) named otherwise."""
    types = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
    batch = _batch_names(graph) or set()

    def not_batch(name: str) -> bool:
        dim = _first_dim(types.get(name))
        if dim is None or dim.HasField("dim_value"):
            return True
        return bool(batch - {""}) and dim.dim_param not in batch

    return not_batch


def split_model(model: onnx.ModelProto, count: int) -> list[Stage]:
    """The model cut into `count` stages; stage i's outputs are stage i+1's inputs, by name."""
    inferred = infer_shapes(model)
    graph = inferred.graph
    info = _analyse(graph)
    types = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
    bounds = [0, *_plan_cuts(graph, info, count), len(info.nodes)]
    graph_inputs = [i.name for i in graph.input if i.name in info.producer]
    stages = []
    for index in range(count):
        start, stop = bounds[index], bounds[index + 1]
        inputs = graph_inputs if index == 0 else crossing(info, start)
        outputs = [o.name for o in graph.output] if index == count - 1 else crossing(info, stop)
        stages.append(_stage(inferred, info, index, start, stop, inputs, outputs, types))
    return stages


def _stage(
    model: onnx.ModelProto,
    info: _Graph,
    index: int,
    start: int,
    stop: int,
    inputs: Sequence[str],
    outputs: Sequence[str],
    types: dict[str, onnx.ValueInfoProto],
) -> Stage:
    graph = model.graph
    body = info.nodes[start:stop]
    used = {name for node in body for name in node_inputs(node)}
    constants = [info.constants[name] for name in sorted(used & info.constants.keys())]
    initializers = [t for t in graph.initializer if t.name in used]
    made = {name for node in body for name in node.output}
    value_info = [v for v in graph.value_info if v.name in made and v.name not in outputs]
    stage_graph = helper.make_graph(
        [*constants, *body],
        f"{graph.name or 'model'}_stage{index}",
        [_typed(types, name) for name in inputs],
        [_typed(types, name) for name in outputs],
        initializer=initializers,
        value_info=value_info,
    )
    stage_model = helper.make_model(
        stage_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version
    )
    for entry in model.metadata_props:
        stage_model.metadata_props.append(entry)
    return Stage(index, stage_model, tuple(inputs), tuple(outputs), sum(info.node_bytes[start:stop]))


def _typed(types: dict[str, onnx.ValueInfoProto], name: str) -> onnx.ValueInfoProto:
    if name not in types or not types[name].type.HasField("tensor_type"):
        raise ValueError(
            f"ONNX shape inference found no tensor type for '{name}', which crosses a cut; "
            "this graph cannot be sharded at that point (try another shard count)"
        )
    return types[name]


@dataclass(frozen=True)
class StageFile:
    """One stage written to disk: what it reads, what it sends on (the last stage: the model's outputs)."""

    index: int
    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def write_stage_set(
    model_path: Path, count: int, directory: Path, rows: Mapping[str, np.ndarray], batch_sizes: Sequence[int]
) -> list[StageFile]:
    """Cut the model at `model_path` into `count` stages, write them as `directory/stage-<i>/model.onnx`
    (a folder each, so a stage's files are only its own) and
    verify them: at every batch size the chain answers like the whole model on `rows` (held-out data,
    repeated when shorter), and every tensor crossing a cut carries the batch on its first dimension.

    Raises ValueError when the graph cannot be cut into `count` stages, CompressionError when the chain
    does not answer like the whole model (the files are removed)."""
    stages = split_model(onnx.load(str(model_path)), count)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for stage in stages:
        path = directory / f"stage-{stage.index}" / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(stage.model, str(path))
        graph = stage.model.graph
        written.append(
            StageFile(
                stage.index, path, tuple(map(tensor_spec, graph.input)), tuple(map(tensor_spec, graph.output))
            )
        )
    try:
        whole = _reference_session(model_path)
        sessions = [_reference_session(stage.path) for stage in written]
        for batch in sorted(set(batch_sizes)):
            _verify_chain(whole, list(zip(written, sessions, strict=True)), _repeat_rows(rows, batch), batch)
    except CompressionError:
        for stage_file in written:
            stage_file.path.unlink(missing_ok=True)
        raise
    return written


def _repeat_rows(rows: Mapping[str, np.ndarray], count: int) -> Arrays:
    total = len(next(iter(rows.values())))
    index = np.arange(count) % total
    return {name: np.asarray(array)[index] for name, array in rows.items()}


def _reference_session(path: Path) -> ort.InferenceSession:
    """A session that runs the graph as written: graph optimizations fuse differently across a cut than
    inside one graph (dynamically quantized MatMuls differ by up to 0.2 after fusion), so the chain is
    checked against the whole graph with both unoptimized; each server optimizes its own stage."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _verify_chain(
    whole: ort.InferenceSession,
    stages: Sequence[tuple[StageFile, ort.InferenceSession]],
    rows: Arrays,
    batch: int,
) -> None:
    names = [i.name for i in whole.get_inputs()]
    feeds = {name: rows[name] for name in names}
    expected = dict(zip([o.name for o in whole.get_outputs()], whole.run(None, feeds), strict=True))
    values: dict[str, np.ndarray] = dict(feeds)
    for stage, runner in stages:
        outputs = runner.run(None, {spec.name: values[spec.name] for spec in stage.inputs})
        values = dict(zip([spec.name for spec in stage.outputs], outputs, strict=True))
        if stage.index < len(stages) - 1:
            for name, value in values.items():
                if value.ndim == 0 or value.shape[0] != batch:
                    raise CompressionError(
                        f"stage {stage.index} of {len(stages)} sends '{name}' with shape {list(value.shape)} "
                        f"for a batch of {batch}: only a batch's own rows may cross a cut; use another shard count"
                    )
    for name, want in expected.items():
        got = values[name]
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-5):
            worst = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
            raise CompressionError(
                f"the {len(stages)} stages do not answer like the whole model on '{name}' at batch {batch} "
                f"(shape {list(got.shape)} vs {list(want.shape)}, largest difference {worst:.3g})"
            )


def stage_set_entry(count: int, files: Sequence[StageFile], root: Path) -> schema.StageSet:
    """The manifest's record of `files` (written under `root`): paths relative to it, tensor specs."""

    def specs(tensors: Sequence[TensorSpec]) -> tuple[schema.TensorSpec, ...]:
        return tuple(
            schema.TensorSpec(name=t.name, datatype=t.datatype, shape=tuple(t.shape)) for t in tensors
        )

    return schema.StageSet(
        count=count,
        stages=tuple(
            schema.StageFile(
                index=f.index,
                file=f.path.relative_to(root).as_posix(),
                inputs=specs(f.inputs),
                outputs=specs(f.outputs),
            )
            for f in files
        ),
    )
