"""Asynchronous SGD (A-SGD): the server applies each gradient on arrival.

It is K-async SGD with K = 1 (:mod:`.k_async` holds the processes, with the
inlined K = 1 paths), so the two give the same trace, row for row.
"""

from __future__ import annotations

from .base import register
from .k_async import KAsync

__all__ = ["Async"]


@register
class Async(KAsync):
    """``async``: the server applies each gradient on arrival (FIFO); the worker's
    push is acknowledged once its update is applied, and it then pulls again."""

    kind = "async"

    def _k(self) -> int:
        return 1
