"""Local SGD and the DiLoCo family in a trace: the outer policy and the causal order of the replay.

Pure numpy and Python (no torch): shared by the trainer's replay (:mod:`asyncsim.train.diloco`)
and the outer-recursion stability criterion (:mod:`asyncsim.stability.diloco`), so both execute
the same operations in the same order.

**Policy.** A trace of policy ``local_sgd``, ``diloco``, ``streaming_diloco`` or
``async_diloco`` carries its resolved policy in ``trace.scenario["policy"]`` (or
``trace.meta["scenario"]["policy"]``): :class:`OuterPolicy` reads it with the contract's
defaults (local_sgd: outer lr 1, no momentum, SGD inner steps; the DiLoCo family: outer lr 0.7,
Nesterov momentum 0.9, AdamW inner steps).

**Rows.** One row per pseudo-gradient contribution (worker × fragment × outer round); besides the
seven standard columns it uses ``fragment``, ``local_start`` and ``local_end`` (the worker's
inner-step counts when it loaded the global fragment at ``read_version`` and when it took the
pseudo-gradient). Where those columns are absent and the policy has one fragment, they are
derived: the k-th row of worker w (in row order) has ``local_start = kH`` and
``local_end = (k+1)H``. A streaming trace must carry them.

**Fragments.** The flat parameter vector (a module's parameters concatenated in
``module.parameters()`` order) is cut into P contiguous slices, fragment p being
``[⌊p·n/P⌋, ⌊(p+1)·n/P⌋)`` (:func:`fragment_bounds`).

**Order of the replay** (:func:`build_ops`). Every worker runs through its own events in order
of its local step k: at each k first the *takes* (pseudo-gradients of rows with
``local_end = k``), then the *merges* (rows with ``local_start = k`` load fragment p of global
version ``read_version``), then inner step k. A merge can run only once its version exists; an
outer update runs once all its rows are taken. Rows past the replayed updates (``steps`` < the
trace's, or the next contribution a trace ends before applying) contribute their merges, so a
fragment merged before a replayed take is merged in the replay too. After each update the workers waiting for the new
version are advanced as far as they can go (in lock-step, so workers with the same range of
inner steps form one group that the trainer may batch). A valid trace never deadlocks: a row
applied at step s was taken before s was applied, so the merges before it read versions ≤ s.
Each merge then runs exactly while the global version is its ``read_version`` (a worker's reads
are non-decreasing), so no parameter snapshots are kept; a merge reaching back to a version its
fragment has since left is refused (a :class:`~asyncsim.errors.TraceError`).

Cost: O(rows + events) Python steps to build; memory O(rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import InputError, TraceError

DILOCO_KINDS = ("local_sgd", "diloco", "streaming_diloco", "async_diloco")
INNER_OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
_DEFAULTS = {
    "local_sgd": dict(outer_lr=1.0, outer_momentum=0.0, nesterov=False, inner_optimizer="sgd"),
    "diloco": dict(outer_lr=0.7, outer_momentum=0.9, nesterov=True, inner_optimizer="adamw"),
}
#: mixing default of streaming_diloco (Douillard et al. 2025 use 0.5)
DEFAULT_MIXING = 0.5

# operation codes of :func:`build_ops`
INNER, TAKE, MERGE, UPDATE = 0, 1, 2, 3


@dataclass(frozen=True)
class OuterPolicy:
    """The outer-synchronisation settings of a DiLoCo-family trace (the contract's ``policy:``)."""

    kind: str
    inner_steps: int
    outer_lr: float
    outer_momentum: float
    nesterov: bool
    inner_optimizer: str
    fragments: int = 1
    mixing: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OuterPolicy":
        kind = d.get("kind")
        if kind not in DILOCO_KINDS:
            raise InputError(f"policy.kind {kind!r} is not one of {', '.join(DILOCO_KINDS)}")
        base = dict(_DEFAULTS["local_sgd" if kind == "local_sgd" else "diloco"])
        base.update({k: v for k, v in d.items() if k in base and v is not None})
        P = d.get("fragments") or 1
        mixing = d.get("mixing")
        if mixing is None:
            mixing = DEFAULT_MIXING if kind == "streaming_diloco" else 0.0
        return cls(kind=kind, inner_steps=d.get("inner_steps", 1), fragments=P, mixing=mixing,
                   **base).checked()

    def checked(self) -> "OuterPolicy":
        """Validate (one clear line naming ``policy.<field>``); returns self with clean types."""
        def bad(field, what):
            return InputError(f"policy.{field}: {what}")

        try:
            H, P = int(self.inner_steps), int(self.fragments)
            lr, mu, mix = float(self.outer_lr), float(self.outer_momentum), float(self.mixing)
        except (TypeError, ValueError):
            raise bad("inner_steps", "inner_steps and fragments must be integers; outer_lr, outer_momentum "
                                     "and mixing numbers") from None
        if H < 1:
            raise bad("inner_steps", f"must be >= 1, got {self.inner_steps}")
        if not (math.isfinite(lr) and lr > 0):
            raise bad("outer_lr", f"must be a finite number > 0, got {self.outer_lr}")
        if not (0.0 <= mu < 1.0):
            raise bad("outer_momentum", f"must be in [0, 1), got {self.outer_momentum}")
        if self.inner_optimizer not in INNER_OPTIMIZERS:
            raise bad("inner_optimizer", f"{self.inner_optimizer!r} is not one of {', '.join(INNER_OPTIMIZERS)}")
        if P < 1 or (self.kind != "streaming_diloco" and P != 1):
            raise bad("fragments", f"must be 1 except for streaming_diloco (>= 1), got {self.fragments}")
        if H % P:
            raise bad("fragments", f"P = {P} must divide inner_steps H = {H}")
        if not (0.0 <= mix <= 1.0):
            raise bad("mixing", f"must be in [0, 1], got {self.mixing}")
        return replace(self, inner_steps=H, fragments=P, outer_lr=lr, outer_momentum=mu, mixing=mix,
                       nesterov=bool(self.nesterov))

    def with_overrides(self, **kw) -> "OuterPolicy":
        """A copy with the given fields replaced (``None`` values keep the trace's)."""
        kw = {k: v for k, v in kw.items() if v is not None}
        return replace(self, **kw).checked() if kw else self

    @property
    def label(self) -> str:
        mom = f", μ={self.outer_momentum:g}{' nesterov' if self.nesterov else ''}" if self.outer_momentum else ""
        frag = f", P={self.fragments}, mixing={self.mixing:g}" if self.kind == "streaming_diloco" else ""
        return f"{self.kind} H={self.inner_steps}, outer lr {self.outer_lr:g}{mom}{frag}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "inner_steps": self.inner_steps, "outer_lr": self.outer_lr,
                "outer_momentum": self.outer_momentum, "nesterov": self.nesterov,
                "inner_optimizer": self.inner_optimizer, "fragments": self.fragments, "mixing": self.mixing}


def _policy_dict(trace) -> dict | None:
    for sc in (getattr(trace, "scenario", None), (getattr(trace, "meta", None) or {}).get("scenario")):
        if isinstance(sc, dict) and isinstance(sc.get("policy"), dict):
            return sc["policy"]
    return None


def policy_of(trace) -> OuterPolicy | None:
    """The trace's :class:`OuterPolicy`, or ``None`` when it is not a DiLoCo-family trace."""
    d = _policy_dict(trace)
    if d is None or d.get("kind") not in DILOCO_KINDS:
        return None
    return OuterPolicy.from_dict(d)


def fragment_bounds(n: int, P: int) -> list[tuple[int, int]]:
    """Fragment p of an n-vector is ``[⌊p·n/P⌋, ⌊(p+1)·n/P⌋)`` (contiguous, sizes differ by ≤ 1)."""
    return [((p * n) // P, ((p + 1) * n) // P) for p in range(P)]


@dataclass
class OuterPlan:
    """The applied rows of the first T outer updates and the operations of the replay.

    ``ops`` is a list of tuples: ``(INNER, workers, k0, k1)`` (each worker in the tuple runs its
    inner steps k0..k1−1), ``(TAKE, row, worker, fragment)``, ``(MERGE, row, worker, fragment)``
    (load fragment of the current global version; row −1 for a row past the replayed updates),
    ``(UPDATE, step, fragment, 0)`` (average the
    pseudo-gradients of rows ``ptr[step]:ptr[step+1]`` and take one outer step)."""

    policy: OuterPolicy
    T: int
    n_workers: int
    worker: np.ndarray
    fragment: np.ndarray
    read: np.ndarray
    local_start: np.ndarray
    local_end: np.ndarray
    ptr: np.ndarray
    update_fragment: np.ndarray
    t_step: np.ndarray
    ops: list
    inner_total: int          # inner steps computed, all workers together
    max_local: int            # largest local step any worker reaches

    @property
    def n_rows(self) -> int:
        return len(self.worker)


def _derived_locals(trace, H: int) -> tuple[np.ndarray, np.ndarray]:
    w = trace.columns["worker"].astype(np.int64)
    k = np.zeros(len(w), dtype=np.int64)
    seen = np.zeros(int(trace.n_workers) + 1 if len(w) == 0 else max(int(trace.n_workers), int(w.max()) + 1),
                    dtype=np.int64)
    for i, wi in enumerate(w.tolist()):  # (k-th row of each worker)
        k[i] = seen[wi]
        seen[wi] += 1
    return k * H, (k + 1) * H


def make_outer_plan(trace, policy: OuterPolicy, steps: int | None = None) -> OuterPlan:
    """Index the trace's first ``steps`` outer updates and build the replay's operations."""
    from .store import replayed_updates

    T = replayed_updates(trace, steps)
    c = trace.columns
    P = policy.fragments
    have = [k for k in ("fragment", "local_start", "local_end") if k in c]
    if len(have) < 3:
        if P > 1:
            missing = sorted({"fragment", "local_start", "local_end"} - set(have))
            raise TraceError(f"a {policy.kind} trace with {P} fragments needs the column(s) {', '.join(missing)}")
        ls_all, le_all = _derived_locals(trace, policy.inner_steps)
        frag_all = np.zeros(len(ls_all), dtype=np.int64)
        if "local_start" in c and "local_end" in c:
            ls_all, le_all = c["local_start"], c["local_end"]
    else:
        frag_all, ls_all, le_all = c["fragment"], c["local_start"], c["local_end"]
    rows, ptr = trace.step_index()
    rows = rows[: ptr[T]]
    ptr = ptr[: T + 1].copy()
    if np.any(np.diff(ptr) == 0):
        raise TraceError(f"update {int(np.flatnonzero(np.diff(ptr) == 0)[0])} applies no pseudo-gradient")
    worker = c["worker"][rows].astype(np.int64)
    read = c["read_version"][rows].astype(np.int64)
    frag = np.asarray(frag_all)[rows].astype(np.int64)
    ls = np.asarray(ls_all)[rows].astype(np.int64)
    le = np.asarray(le_all)[rows].astype(np.int64)
    if frag.size and (frag.min() < 0 or frag.max() >= P):
        raise TraceError(f"column 'fragment' must lie in [0, {P}), got {int(frag.min())}..{int(frag.max())}")
    if ls.size and (ls.min() < 0 or np.any(le <= ls)):
        i = int(np.flatnonzero((ls < 0) | (le <= ls))[0])
        raise TraceError(f"row {int(rows[i])}: need 0 <= local_start < local_end, got {int(ls[i])}, {int(le[i])}")
    ufrag = frag[ptr[:-1]]
    step_of = np.repeat(np.arange(T), np.diff(ptr))
    if np.any(frag != ufrag[step_of]):
        i = int(np.flatnonzero(frag != ufrag[step_of])[0])
        raise TraceError(f"update {int(step_of[i])} mixes fragments (row {int(rows[i])})")
    n_workers = max(int(trace.n_workers), int(worker.max()) + 1)
    t_step = c["t_applied"][rows][ptr[:-1]].astype(np.float64)
    # rows past the replayed updates still say when their worker merged an earlier result
    later = np.ones(len(c["step"]), dtype=bool)
    later[rows] = False
    later &= np.asarray(c["read_version"]) <= T
    merges = tuple(np.asarray(a)[later].astype(np.int64) for a in (c["worker"], frag_all, c["read_version"], ls_all))
    tail = _tail_merges(trace, rows, frag_all, le_all, P, policy.inner_steps) if P > 1 else None
    if tail is not None:
        merges = tuple(np.concatenate([m, t]) for m, t in zip(merges, tail))
    ops, inner_total, max_local = build_ops(worker, frag, read, ls, le, ptr, n_workers, P, merges)
    return OuterPlan(policy=policy, T=T, n_workers=n_workers, worker=worker, fragment=frag, read=read,
                     local_start=ls, local_end=le, ptr=ptr, update_fragment=ufrag, t_step=t_step, ops=ops,
                     inner_total=inner_total, max_local=max_local)


def _tail_merges(trace, rows, frag_all, le_all, P: int, H: int):
    """Merges no later row records: the last contribution of a (worker, fragment) in the trace is
    merged, by the contract's timing rule, at the worker's first inner-step boundary after its
    update's ``t_applied`` — read from the ``trace.inner`` side table when the trace has one: the
    first inner step starting after that time (an inner step starting at that very instant had
    begun before the merge, as in the simulator), or the one starting at it when the worker was
    waiting for this merge at its next sync point (local_end + H). Returns (worker, fragment,
    read_version, local_start) arrays, or None."""
    inner = getattr(trace, "inner", None)
    if not isinstance(inner, dict) or not len(inner.get("worker", ())):
        return None
    c = trace.columns
    n = len(c["step"])
    key = c["worker"].astype(np.int64) * P + np.asarray(frag_all, dtype=np.int64)
    rev = key[::-1]
    _, first_rev = np.unique(rev, return_index=True)
    last = n - 1 - first_rev                       # last row of each (worker, fragment)
    in_plan = np.zeros(n, dtype=bool)
    in_plan[rows] = True
    last = last[in_plan[last]]
    if not last.size:
        return None
    iw = np.asarray(inner["worker"], dtype=np.int64)
    order = np.lexsort((np.asarray(inner["t_start"], dtype=float), iw))
    iw, ts, ks = iw[order], np.asarray(inner["t_start"], float)[order], np.asarray(inner["local_step"], np.int64)[order]
    out = [[], [], [], []]
    for j in last.tolist():
        w = int(c["worker"][j])
        lo, hi = np.searchsorted(iw, w), np.searchsorted(iw, w, side="right")
        t = float(c["t_applied"][j])
        i = lo + int(np.searchsorted(ts[lo:hi], t, side="right"))
        i0 = lo + int(np.searchsorted(ts[lo:hi], t))
        if i0 < i and int(ks[i0]) == int(le_all[j]) + H:  # it was blocked, waiting for this merge
            i = i0
        if i < hi:  # (a worker with no inner step after it never needs the merge)
            for lst, v in zip(out, (w, int(frag_all[j]), int(c["step"][j]) + 1, int(ks[i]))):
                lst.append(v)
    return tuple(np.asarray(v, dtype=np.int64) for v in out)


def build_ops(worker, frag, read, ls, le, ptr, n_workers: int, P: int, merges=None):
    """The causal operation list (module docstring): ``(ops, inner steps, largest local step)``.

    ``merges``: optional arrays (worker, fragment, read_version, local_start) of rows outside the
    replayed updates whose merges still happen (a merge op's row is then −1)."""
    T = len(ptr) - 1
    R = len(worker)
    # (worker, fragment) sequences must not overlap: local_start of a row >= local_end of the previous
    o = np.lexsort((ls, frag, worker))
    same = (worker[o[1:]] == worker[o[:-1]]) & (frag[o[1:]] == frag[o[:-1]])
    bad = same & (ls[o[1:]] < le[o[:-1]])
    if bad.any():
        j = int(o[1:][bad][0])
        raise TraceError(f"row {j}: its inner phase (fragment {int(frag[j])}) starts at local step {int(ls[j])}, "
                         f"before the previous contribution of worker {int(worker[j])} ended")
    # per worker, its events sorted by (local step, take before merge, fragment)
    events: list[list] = [[] for _ in range(n_workers)]
    for j, (w, p, a, b) in enumerate(zip(worker.tolist(), frag.tolist(), ls.tolist(), le.tolist())):
        events[w].append((b, 0, p, j))
        events[w].append((a, 1, p, j))
    read_l = read.tolist()
    if merges is not None:
        for w, p, rv, a in zip(*(m.tolist() for m in merges)):
            events[w].append((a, 1, p, -1 - len(read_l)))  # (an id past the rows; its read below)
            read_l.append(rv)
    for ev in events:
        ev.sort()
    pos = [0] * n_workers
    k_at = [0] * n_workers
    taken = np.zeros(R, dtype=bool)
    last_update = np.full(P, -1, dtype=np.int64)  # latest step that changed each fragment
    waiting: dict[int, list[int]] = {}
    ops: list = []
    inner_total = 0

    def advance(active: list[int], v: int) -> None:
        nonlocal inner_total
        active = list(active)
        while active:
            nxt: dict[tuple[int, int], list[int]] = {}
            still = []
            for w in active:
                ev, i, k = events[w], pos[w], k_at[w]
                blocked = False
                while i < len(ev) and ev[i][0] == k:
                    _, kind, p, j = ev[i]
                    if kind == 0:
                        ops.append((TAKE, j, w, p))
                        taken[j] = True
                    else:
                        rv = read_l[j] if j >= 0 else read_l[-1 - j]
                        if rv > v:
                            waiting.setdefault(rv, []).append(w)
                            blocked = True
                            break
                        if rv < v and last_update[p] >= rv:
                            raise TraceError(f"row {j}: worker {w} loads fragment {p} of version {rv} after "
                                             f"update {int(last_update[p])} changed it (reads must be in order)")
                        ops.append((MERGE, max(j, -1), w, p))
                    i += 1
                pos[w] = i
                if blocked or i == len(ev):
                    continue
                nxt.setdefault((k, ev[i][0]), []).append(w)
                still.append(w)
            for (k0, k1), ws in nxt.items():
                ops.append((INNER, tuple(ws), k0, k1))
                inner_total += (k1 - k0) * len(ws)
                for w in ws:
                    k_at[w] = k1
            active = still

    advance(list(range(n_workers)), 0)
    ptr_l = ptr.tolist()
    for s in range(T):
        r0, r1 = ptr_l[s], ptr_l[s + 1]
        if not taken[r0:r1].all():
            j = r0 + int(np.flatnonzero(~taken[r0:r1])[0])
            raise TraceError(f"update {s} needs the pseudo-gradient of row {j} (worker {int(worker[j])}), which "
                             f"waits for a later version: the trace is not causal")
        p = int(frag[r0])
        ops.append((UPDATE, s, p, 0))
        last_update[p] = s
        advance(waiting.pop(s + 1, []), s + 1)
    max_local = max(k_at) if k_at else 0
    return ops, inner_total, max_local
