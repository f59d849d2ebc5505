"""Synchronisation policies, one class each, looked up by the scenario's ``policy.kind``.

>>> from asyncsim.policies import POLICIES
>>> sorted(POLICIES)
['async', 'backup', 'k_async', 'round_robin', 'ssp', 'sync']
"""

from __future__ import annotations

from .base import POLICIES, Policy, policy_for, register
from .backup import Backup, Sync
from .k_async import Async, KAsync
from .round_robin import RoundRobin
from .ssp import SSP

__all__ = ["POLICIES", "Policy", "policy_for", "register", "Async", "KAsync", "Sync", "Backup", "SSP",
           "RoundRobin"]
