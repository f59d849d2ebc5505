"""A module imported on first use: ``np = lazy_module("numpy", __name__)``.

``asyncsim validate`` and the scenario models need no numpy, which is a fifth
of their start-up (docs/benchmarks.md, "Start-up time"). On first attribute
access the stand-in imports the module and puts it in place of itself in the
owner's globals, so later look-ups cost nothing extra.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

__all__ = ["lazy_module"]


class _Lazy:
    __slots__ = ("_name", "_owner", "_global")

    def __init__(self, name: str, owner: str, global_name: str) -> None:
        self._name, self._owner, self._global = name, owner, global_name

    def _load(self) -> ModuleType:
        module = importlib.import_module(self._name)
        owner = sys.modules.get(self._owner)
        if owner is not None and getattr(owner, self._global, None) is self:
            setattr(owner, self._global, module)
        return module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use by {self._owner}>"


def lazy_module(name: str, owner: str, global_name: str = "np") -> Any:
    """A stand-in for module ``name`` in module ``owner``'s global ``global_name``."""
    if name in sys.modules:  # already paid for: use it
        return sys.modules[name]
    return _Lazy(name, owner, global_name)
