"""Synchronous SGD (S-SGD) through the parameter server: wait for all N gradients.

It is the backup-workers policy with K = N (:mod:`.backup` holds the
processes). S-SGD as it is usually run, through all-reduce collectives
without a server, is :mod:`.allreduce`.
"""

from __future__ import annotations

from .backup import Backup
from .base import register

__all__ = ["Sync"]


@register
class Sync(Backup):
    """``sync``: S-SGD, the backup policy with K = N (nothing is ever dropped).

    Every worker pulls version v, computes and pushes; when all N gradients
    have arrived the server applies their mean (one apply draw) and everyone
    pulls v + 1. With ``timeout: T`` a round still open T seconds after it
    opened closes with the gradients that have arrived (at the next arrival if
    none has); the workers still computing are preempted and late pushes
    dropped, exactly like backup stragglers.
    """

    kind = "sync"

    def _k(self) -> int:
        return self.n
