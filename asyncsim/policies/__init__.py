"""Synchronisation policies, one class each, looked up by the scenario's ``policy.kind``.

>>> from asyncsim.policies import POLICIES
>>> sorted(POLICIES)
['allreduce', 'async', 'async_diloco', 'backup', 'diloco', 'k_async', 'local_sgd', 'round_robin', 'ssp',
 'streaming_diloco', 'sync']
"""

from __future__ import annotations

from .base import POLICIES, Policy, policy_for, register
from .allreduce import Allreduce
from .asynchronous import Async
from .async_diloco import AsyncDiLoCo
from .backup import Backup
from .diloco import DiLoCo, LocalSGD
from .k_async import KAsync
from .round_robin import RoundRobin
from .ssp import SSP
from .streaming_diloco import StreamingDiLoCo
from .synchronous import Sync

__all__ = ["POLICIES", "Policy", "policy_for", "register", "Async", "KAsync", "Sync", "Backup", "SSP",
           "RoundRobin", "Allreduce", "LocalSGD", "DiLoCo", "StreamingDiLoCo", "AsyncDiLoCo"]
