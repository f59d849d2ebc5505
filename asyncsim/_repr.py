"""Short reprs for result objects: arrays by shape, floats to 6 digits, long containers cut.

A result's repr is what a notebook or a REPL shows; printing a 10⁵-point loss
curve there buries the numbers a reader wants. ``__repr__ = dataclass_repr``
in a dataclass body replaces the generated repr (fields with ``repr=False``
and fields that are ``None`` or empty are left out). Cost: O(number of
fields), whatever the arrays' sizes.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

__all__ = ["dataclass_repr", "short"]

_MAX_ITEMS = 6
_MAX_CHARS = 80


def short(value: Any) -> str:
    """A repr of ``value`` at most about 80 characters long."""
    np = sys.modules.get("numpy")  # no numpy value exists unless numpy was imported
    torch = sys.modules.get("torch")
    if np is not None and isinstance(value, np.ndarray):
        return f"array(shape={value.shape}, dtype={value.dtype})"
    if torch is not None and isinstance(value, torch.Tensor):
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype}, device={value.device})"
    if np is not None and isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        items = [short(v) for v in value[:_MAX_ITEMS]]
        if len(value) > _MAX_ITEMS:
            items.append(f"... {len(value)} items")
        body = ", ".join(items)
        return f"[{body}]" if isinstance(value, list) else f"({body}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        items = [f"{k!r}: {short(v)}" for k, v in list(value.items())[:_MAX_ITEMS]]
        if len(value) > _MAX_ITEMS:
            items.append(f"... {len(value)} keys")
        return "{" + ", ".join(items) + "}"
    text = repr(value)
    return text if len(text) <= _MAX_CHARS else text[: _MAX_CHARS - 3] + "..."


def dataclass_repr(self: Any) -> str:
    """``Name(field=value, ...)`` with :func:`short` values; ``None`` and empty fields left out."""
    parts = []
    for f in dataclasses.fields(self):
        if not f.repr:
            continue
        v = getattr(self, f.name)
        if v is None or (isinstance(v, (dict, list, tuple, str)) and len(v) == 0):
            continue
        parts.append(f"{f.name}={short(v)}")
    return f"{type(self).__name__}({', '.join(parts)})"
