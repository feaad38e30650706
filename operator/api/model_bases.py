"""The bases of every typed view of a resource (`models`): `ApiModel` (camelCase aliases, frozen, no
unknown fields) and `StatusModel`, what the operator writes under `status` and reads back without
ever raising, with the standard condition."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid", protected_namespaces=()
    )

    def to_dict(self) -> dict[str, Any]:
        """The resource form: camelCase keys, JSON types, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- Status ---------------------------------------------------------------------------------------
#
# What the operator writes under `status` (the CRDs' status schemas, field for field, which
# tests/unit/test_status_fields.py holds them to). Strict where the API server is: an integer is an
# int, a number an int or a float, a string a str (money is a decimal string, kept as written), a
# date-time an RFC 3339 string; a JSON array is accepted as a list. Every field is optional unless
# the CRD requires it, and `None` is a value: in a status patch (a JSON merge patch) it removes the
# field. Writers build a model and send `to_patch()`; readers take `from_body(body)`, which never raises.

T = TypeVar("T")
# A JSON array of T: a list (or a tuple) whose items are validated strictly.
Items = Annotated[tuple[T, ...], Strict(False)]
# A date-time string, written as "%Y-%m-%dT%H:%M:%SZ" (UTC).
Timestamp = str
# A decimal number of US dollars as a string ("0.0123"): the CRD types money as strings.
Money = str

log = logging.getLogger(__name__)


class StatusModel(ApiModel):
    model_config = ConfigDict(strict=True)

    def to_patch(self) -> dict[str, Any]:
        """The status patch (a JSON merge patch) of this model: camelCase keys, JSON types, the fields
        that were set (an explicit `None` stays, removing the field), nothing else."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    @classmethod
    def from_status(cls, status: Any) -> Self:
        """The typed view of a status mapping as read from the API server, never raising: keys this
        model does not know are ignored (a newer operator's fields), and a value that does not fit is
        left out (logged), as the smallest enclosing optional field or array item."""
        if isinstance(status, cls):
            return status
        if not isinstance(status, Mapping):
            return cls()
        data = _known_keys(cls, status)
        dropped = []
        for _ in range(_MAX_REPAIRS):
            try:
                found = cls.model_validate(data)
            except ValidationError as error:
                where = _drop(data, error.errors()[0]["loc"])
                if where is None:
                    break
                dropped.append(".".join(map(str, where)))
                continue
            if dropped:
                log.warning(
                    "%s: left out what does not fit: status.%s", cls.__name__, ", status.".join(dropped)
                )
            return found
        log.warning("%s: status unreadable, read as empty", cls.__name__)
        return cls()

    @classmethod
    def from_body(cls, body: Mapping[str, Any] | None) -> Self:
        """The typed view of a resource body's status (an empty one when it has none): see `from_status`."""
        return cls.from_status(None if body is None else body.get("status"))


_MAX_REPAIRS = 100


def key_field(key: str) -> Any:
    """An optional field whose JSON key is `key` where to_camel would not give it (costPer1kRequests,
    from), still built by its Python name (an `alias` would make type checkers want the key)."""
    return Field(default=None, validation_alias=key, serialization_alias=key)


def json_key(name: str, info: FieldInfo) -> str:
    """The key of field `name` in the resource (camelCase)."""
    return info.serialization_alias or info.alias or name


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `X`, `X | None`, `tuple[X, ...]`, `Annotated[...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _nested_model(argument)
        if found is not None:
            return found
    return None


@functools.cache
def _fields_by_key(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """`model`'s fields by JSON key, each with the model nested in it (if any): worked out once per
    model, since the autoscaler reads every served ModelDeployment's status on every tick."""
    return {json_key(name, info): _nested_model(info.annotation) for name, info in model.model_fields.items()}


def _known_keys(model: type[BaseModel], data: Any) -> Any:
    """A copy of `data` without the keys `model` does not know, through nested objects and arrays
    (plain dicts and lists throughout: the caller's body is never changed)."""
    if not isinstance(data, Mapping):
        return _plain(data)
    fields = _fields_by_key(model)
    known: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            continue
        nested = fields[key]
        if nested is not None and isinstance(value, list | tuple):
            known[key] = [_known_keys(nested, item) for item in value]
        elif nested is not None:
            known[key] = _known_keys(nested, value)
        else:
            known[key] = _plain(value)
    return known


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _drop(data: dict[str, Any], loc: tuple[int | str, ...]) -> tuple[int | str, ...] | None:
    """Remove from `data` (in place) the deepest value on the path `loc` that is there (an item of
    an array of objects, each of which says what it is; an array of scalars, positional, goes
    whole); its path, or None when not even the first step is."""
    parents: list[Any] = [data]
    for step in loc:
        if not _has(parents[-1], step):
            break
        parents.append(parents[-1][step])
    depth = len(parents) - 1
    in_scalar_array = depth > 0 and isinstance(loc[depth - 1], int)
    if in_scalar_array and not any(isinstance(item, dict) for item in parents[depth - 1]):
        depth -= 1
    if depth == 0:
        return None
    del parents[depth - 1][loc[depth - 1]]
    return loc[:depth]


def _has(container: Any, step: int | str) -> bool:
    if isinstance(container, dict):
        return step in container
    return isinstance(container, list) and isinstance(step, int) and 0 <= step < len(container)


class Condition(StatusModel):
    """One standard Kubernetes condition (both kinds' status.conditions[])."""

    type: str
    status: Literal["True", "False", "Unknown"]
    observed_generation: int | None = None
    last_transition_time: Timestamp
    reason: str
    message: str
