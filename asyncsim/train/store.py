"""What both replay engines share: the replay plan (the trace indexed by step and by read
version) and the reference-counted version store.

:mod:`asyncsim.train.sequential` (the reference) and :mod:`asyncsim.train.batched` both import
from here and from :mod:`asyncsim.train.curves` (logging); :mod:`asyncsim.train.replay` chooses
between them. Nothing here imports an engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError, TraceError


class VersionStore:
    """Reference-counted parameter versions: a version is kept only while some pending row
    still needs it (to compute its gradient, or for DC-ASGD to apply it).

    ``live`` counts stored snapshots plus the current parameters (the master vector), so with
    at most one gradient in flight per worker it never exceeds ``n_workers + 1``;
    ``max_live`` is the high-water mark (asserted in the tests). Memory: at most
    ``max_live × n_params × runs`` numbers.
    """

    def __init__(self):
        self._v: dict[int, Any] = {}
        self._refs: dict[int, int] = {}
        self.max_live = 1

    @property
    def live(self) -> int:
        return len(self._v) + 1

    def put(self, version: int, tensor, refs: int) -> None:
        if refs <= 0:
            return
        if version in self._v:
            self._refs[version] += refs
            return
        self._v[version] = tensor
        self._refs[version] = refs
        self.max_live = max(self.max_live, self.live)

    def get(self, version: int):
        return self._v[version]

    def release(self, version: int, n: int = 1) -> None:
        r = self._refs[version] - n
        if r <= 0:
            del self._v[version]
            del self._refs[version]
        else:
            self._refs[version] = r

    def __contains__(self, version: int) -> bool:
        return version in self._v


@dataclass
class Plan:
    """The applied rows of the first ``T`` steps of a trace, as arrays in step order."""

    T: int
    n_workers: int
    step: np.ndarray
    worker: np.ndarray
    read: np.ndarray
    stal: np.ndarray
    occ: np.ndarray
    ptr: np.ndarray          # CSR by step: rows ptr[t]:ptr[t+1] (indices into the arrays above)
    by_read: np.ndarray      # rows sorted by read version (stable)
    read_ptr: np.ndarray     # CSR of by_read by read version 0..T-1
    t_step: np.ndarray       # simulated time each step was applied

    @property
    def n_rows(self) -> int:
        return len(self.step)


def replayed_updates(trace, steps: int | None) -> int:
    """The number of updates a replay of ``steps`` (None: all) covers, checked against the trace."""
    if not hasattr(trace, "step_index"):
        raise TraceError(f"expected an asyncsim Trace, got {type(trace).__name__}")
    T = int(trace.n_updates) if steps is None else int(steps)
    if T < 1:
        raise InputError(f"steps must be >= 1, got {T}")
    if T > trace.n_updates:
        raise InputError(f"steps={T} exceeds the trace's {trace.n_updates} updates")
    return T


def make_plan(trace, steps: int | None = None) -> Plan:
    """Index the trace: rows of each of the first ``steps`` updates, grouped by step and by read version."""
    T = replayed_updates(trace, steps)
    rows, ptr = trace.step_index()
    rows = rows[: ptr[T]]
    ptr = ptr[: T + 1].copy()
    if np.any(np.diff(ptr) == 0):
        t = int(np.flatnonzero(np.diff(ptr) == 0)[0])
        raise TraceError(f"update {t} applies no gradient")
    c = trace.columns
    step = c["step"][rows].astype(np.int64)
    worker = c["worker"][rows].astype(np.int64)
    read = c["read_version"][rows].astype(np.int64)
    stal = c["staleness"][rows].astype(np.int64)
    n_workers = max(int(trace.n_workers), int(worker.max()) + 1 if len(worker) else 1)
    key = step * n_workers + worker
    occ = np.zeros(len(key), dtype=np.int64)
    uniq, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    if np.any(counts > 1):  # a worker with two gradients in one update (k-async): rank them
        order = np.argsort(key, kind="stable")
        first = np.searchsorted(key[order], key[order])
        occ[order] = np.arange(len(key)) - first
    by_read = np.argsort(read, kind="stable")
    read_ptr = np.zeros(T + 1, dtype=np.int64)
    np.cumsum(np.bincount(read, minlength=T)[:T], out=read_ptr[1:])
    t_app = c["t_applied"][rows]
    t_step = t_app[ptr[:-1]].astype(np.float64)
    return Plan(T=T, n_workers=n_workers, step=step, worker=worker, read=read, stal=stal, occ=occ,
                ptr=ptr, by_read=by_read, read_ptr=read_ptr, t_step=t_step)
