"""Cut an ONNX graph into N contiguous stages balanced by parameter bytes. Deterministic and pure.

Nodes are taken in topological order. A cut before node `p` is crossed by every tensor made before `p`
(or fed as a graph input) and used at or after `p` (or returned as a graph output); those tensors are
what one stage sends the next. Cuts are chosen one by one, each as close as it can get to an equal share
of the parameter bytes still to place, with a small penalty per extra crossing tensor so cuts land where few tensors
cross (between layers rather than inside one). `Constant` nodes never cross a cut: every stage that uses
one gets its own copy. Every server of a sharded model verifies the whole variant file and computes the
same cuts, so shards need no extra files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from frugal.serving.datatypes import ONNX_TO_OIP
from frugal.serving.server.artifacts import TensorSpec

CROSSING_PENALTY = 0.02  # share of total parameter bytes one extra crossing tensor is worth


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
    info = _analyse(model.graph)
    n = len(info.nodes)
    if not 1 <= count <= n:
        raise ValueError(f"cannot cut a graph of {n} nodes into {count} stages; use 1..{n} shards")
    cumulative = np.concatenate([[0], np.cumsum(info.node_bytes)])
    weights_known = cumulative[-1] > 0
    if not weights_known:  # no parameters: balance node counts
        cumulative = np.arange(n + 1)
    total = float(cumulative[-1])
    counts = np.zeros(n + 2, dtype=np.int64)  # counts[p] = tensors crossing a cut before node p
    for name, made in info.producer.items():
        last = info.last_use.get(name, -2)
        if made + 1 <= last:
            counts[made + 1] += 1
            counts[last + 1] -= 1
    counts = np.cumsum(counts)
    cuts: list[int] = []
    previous = 0
    for j in range(1, count):
        # an equal share of what is left, so one indivisible block (an embedding table) early on
        # does not squeeze the stages after it
        target = cumulative[previous] + (total - cumulative[previous]) / (count - j + 1)
        positions = range(previous + 1, n - (count - j) + 1)
        best = min(
            positions,
            key=lambda p: (abs(cumulative[p] - target) / total + CROSSING_PENALTY * (counts[p] - 1), p),
        )
        cuts.append(best)
        previous = best
    return cuts


def split_model(model: onnx.ModelProto, count: int) -> list[Stage]:
    """The model cut into `count` stages; stage i's outputs are stage i+1's inputs, by name."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    info = _analyse(graph)
    types = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
    bounds = [0, *plan_cuts(inferred, count), len(info.nodes)]
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


def load_stage(path: Path, index: int, count: int) -> Stage:
    return split_model(onnx.load(str(path)), count)[index]


def specs(values: Iterable[onnx.ValueInfoProto]) -> tuple[TensorSpec, ...]:
    """ONNX value infos → OIP tensor specs (symbolic dims become -1)."""
    result = []
    for value in values:
        tensor = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        result.append(
            TensorSpec(name=value.name, datatype=ONNX_TO_OIP.get(tensor.elem_type, "FP32"), shape=shape)
        )
    return tuple(result)


def whole_model_outputs(path: Path) -> tuple[TensorSpec, ...]:
    return specs(onnx.load(str(path), load_external_data=False).graph.output)
