"""Synchronisation policies, one class each, looked up by the scenario's ``policy.kind``.

>>> from asyncsim.policies import POLICIES
>>> sorted(POLICIES)
['allreduce', 'async', 'backup', 'k_async', 'round_robin', 'ssp', 'sync']
"""

from __future__ import annotations

from .base import POLICIES, Policy, policy_for, register
from .allreduce import Allreduce
from .asynchronous import Async
from .backup import Backup
from .k_async import KAsync
from .round_robin import RoundRobin
from .ssp import SSP
from .synchronous import Sync

__all__ = ["POLICIES", "Policy", "policy_for", "register", "Async", "KAsync", "Sync", "Backup", "SSP",
           "RoundRobin", "Allreduce"]
