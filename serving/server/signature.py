"""Check a decoded request against the tensors the model declares. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from frugal.serving.server.artifacts import TensorSpec
from frugal.serving.server.codec import InferRequest
from frugal.serving.server.failures import ProtocolError, echo


def check_request(request: InferRequest, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> int:
    """Raise `ProtocolError` naming the first mismatch; return the request's batch size (dim 0)."""
    expected = {spec.name: spec for spec in inputs}
    for name in request.inputs:
        if name not in expected:
            raise ProtocolError(f"unknown input '{echo(name)}'; the model's inputs are {', '.join(expected)}")
    for name, spec in expected.items():
        if name not in request.inputs:
            raise ProtocolError(f"missing input '{name}' ({spec.datatype} {list(spec.shape)})")
        _check_tensor(spec, request.datatypes[name], request.inputs[name].shape)
    if request.outputs is not None:
        known = {spec.name for spec in outputs}
        for wanted in request.outputs:
            if wanted.name not in known:
                raise ProtocolError(
                    f"unknown output '{echo(wanted.name)}'; the model's outputs are {', '.join(sorted(known))}"
                )
    sizes = {array.shape[0] if array.ndim else 1 for array in request.inputs.values()}
    if len(sizes) > 1:
        raise ProtocolError(f"inputs disagree on the batch size (dim 0): {sorted(sizes)}")
    return sizes.pop()


def _check_tensor(spec: TensorSpec, datatype: str, shape: tuple[int, ...]) -> None:
    where = f"input '{spec.name}'"
    if datatype != spec.datatype:
        raise ProtocolError(f"{where} has datatype {datatype} but the model expects {spec.datatype}")
    if spec.shape and len(shape) != len(spec.shape):
        raise ProtocolError(
            f"{where} has shape {echo(list(shape))} but the model expects rank {len(spec.shape)} "
            f"({list(spec.shape)}, -1 = any size)"
        )
    for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=False)):
        if want >= 0 and got != want:
            raise ProtocolError(
                f"{where} has shape {echo(list(shape))} but the model expects {list(spec.shape)} "
                f"(dim {axis} must be {want})"
            )
