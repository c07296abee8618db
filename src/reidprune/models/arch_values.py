"""Architecture dataclasses from untrusted JSON (model.json, ONNX metadata), checked field by field.

The checks come from the dataclass annotations, so every family gets them without a list of its
own: unknown keys, wrong types, integers outside [0, MAX_INT], lists longer than MAX_ITEMS and
non-finite floats are refused with the key and the value. Strings are kept exactly as written:
no OmegaConf here, so a `${oc.env:...}` in a saved file stays text and is never resolved.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from typing import Any, TypeVar, Union

from reidprune.errors import CheckpointError

T = TypeVar("T")

# No layer width, image side, class count or stride of a real model comes near these; they bound
# what a hand-edited or corrupt file can ask for before anything is built.
MAX_INT = 2**20
MAX_ITEMS = 1024  # entries of one list (blocks, stages, widths per block)

_short = reprlib.Repr()
_short.maxlist = _short.maxdict = 6
_short.maxstring = 60


def arch_from_values(schema: type[T], values: Any, *, where: str) -> T:
    """`schema(**values)` after checking each value against the field's annotation.

    Raises CheckpointError naming `where`, the key and the value. Missing keys take the field default.
    """
    if not isinstance(values, dict):
        raise CheckpointError(f"{where}: the architecture must be a JSON object, got {_describe(values)}")
    fields = {f.name: f for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in set(values) - set(fields))
    if unknown:
        raise CheckpointError(
            f"{where}: unknown key(s) {unknown} in the {schema.__name__} architecture; known: {sorted(fields)}"
        )
    hints = typing.get_type_hints(schema)
    checked = {key: _check(value, hints[key], key, where) for key, value in values.items()}
    return schema(**checked)


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {_short.repr(value)}"


def _check(value: Any, hint: Any, key: str, where: str) -> Any:
    def fail(expected: str) -> CheckpointError:
        return CheckpointError(f"{where}: key '{key}': expected {expected}, got {_describe(value)}")

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]  # only `X | None` is used in arch classes
        return _check(value, inner, key, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        if not 0 <= value <= MAX_INT:
            raise fail(f"an integer in [0, {MAX_INT}]")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise fail("a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise fail("a list")
        if len(value) > MAX_ITEMS:
            raise fail(f"at most {MAX_ITEMS} entries (got {len(value)})")
        return [_check(item, args[0], f"{key}[{i}]", where) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise fail("an object")
        return dict(value)  # free-form options: the family's own validation checks them
    raise TypeError(f"{key}: annotation {hint!r} is not supported in an architecture dataclass")
