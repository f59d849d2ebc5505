"""The base of every validated input model: strict about what a number is.

Scenario sections, distributions and faults all derive from :class:`StrictModel`:

* ``extra="forbid"``, ``frozen=True`` (a typo is an error naming the field);
* ``allow_inf_nan=False``: ``.inf`` and ``.nan`` (or a float that overflows to
  them) are rejected in every float field, nested tuples included — an
  infinite mean or weight passed ``gt=0`` and then hung or crashed an engine;
* booleans are not numbers: YAML's ``true`` would otherwise validate as ``1``
  in an ``int`` field (``count: true``) and as ``1.0`` in a ``float`` field.
  A field that admits ``bool`` in its annotation still takes one.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["StrictModel", "admits_bool", "is_boolean", "BOOLEAN_MESSAGE"]


@functools.lru_cache(maxsize=None)
def admits_bool(annotation: Any) -> bool:
    """Whether a field typed ``annotation`` may hold a boolean (``bool``, ``Any``, unions with them)."""
    if annotation is bool or annotation is Any:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return admits_bool(args[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(admits_bool(a) for a in args)
    if origin is typing.Literal:
        return any(isinstance(a, bool) for a in args)
    return False


def _tuple_of_numbers(annotation: Any) -> bool:
    """``tuple[int, ...]`` / ``tuple[float, ...]`` (possibly Optional): elements must not be booleans."""
    for a in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(a) in (tuple, list):
            args = [x for x in typing.get_args(a) if x is not Ellipsis]
            return bool(args) and not any(admits_bool(x) for x in args)
    return False


class Boolean:
    """Stands in for a boolean given where a number goes, so that the field's own
    validation fails at the field's location; :func:`is_boolean` spots it in an error."""

    __slots__ = ("value",)

    def __init__(self, value: bool):
        self.value = value

    def __repr__(self) -> str:
        return "true" if self.value else "false"


def is_boolean(value: Any) -> bool:
    return isinstance(value, Boolean)


#: the message a field's error gets when its input was a boolean
BOOLEAN_MESSAGE = "a boolean (true/false) is not allowed here"


class StrictModel(BaseModel):
    """Frozen, extra keys forbidden, finite floats only, no booleans where numbers go."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = None
        for key, v in data.items():
            if not (isinstance(v, bool) or (isinstance(v, (list, tuple)) and any(isinstance(x, bool) for x in v))):
                continue
            fld = cls.model_fields.get(key) if isinstance(key, str) else None
            if fld is None:
                fld = next((f for f in cls.model_fields.values() if f.alias == key), None)
            if fld is None:
                continue
            if isinstance(v, bool):
                if admits_bool(fld.annotation):
                    continue
                new: Any = Boolean(v)
            elif _tuple_of_numbers(fld.annotation):
                new = [Boolean(x) if isinstance(x, bool) else x for x in v]
            else:
                continue
            out = dict(data) if out is None else out
            out[key] = new
        return data if out is None else out
