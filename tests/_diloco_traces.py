"""Hand-made local SGD / DiLoCo-family traces (the contract's columns written directly).

Independent of the simulator: each builder lays out the rounds with a plain loop. The extra
columns (``fragment``, ``outer_staleness``, ``local_start``, ``local_end``) are put in
``trace.columns`` after :meth:`Trace.from_columns` (which keeps only the seven standard columns
until the simulation branch teaches it the new ones), so the replay reads them where a
simulated trace will have them.
"""

from __future__ import annotations

import numpy as np

from asyncsim.trace import Trace

DEFAULTS = {
    "local_sgd": dict(outer_lr=1.0, outer_momentum=0.0, nesterov=False, inner_optimizer="sgd"),
    "diloco": dict(outer_lr=0.7, outer_momentum=0.9, nesterov=True, inner_optimizer="adamw"),
}


def policy(kind: str, H: int, **kw) -> dict:
    base = dict(DEFAULTS["local_sgd" if kind == "local_sgd" else "diloco"])
    base.update(kind=kind, inner_steps=H, algorithm="ring", fragments=1,
                mixing=0.5 if kind == "streaming_diloco" else 0.0)
    base.update(kw)
    return base


def _trace(cols: dict, extra: dict, pol: dict, n_workers: int, inner: dict | None = None) -> Trace:
    arrays = {k: np.asarray(v) for k, v in cols.items()}
    tr = Trace.from_columns(arrays, n_workers=n_workers, scenario={"name": "hand-made", "policy": pol})
    if inner is not None:
        tr.inner = inner  # (the side table of the simulator's DiLoCo traces)
    tr.columns.update({"fragment": np.asarray(extra["fragment"], dtype=np.int32),
                       "outer_staleness": np.asarray(extra["outer_staleness"], dtype=np.int64),
                       "local_start": np.asarray(extra["local_start"], dtype=np.int64),
                       "local_end": np.asarray(extra["local_end"], dtype=np.int64)})
    return tr


def sync_rounds(n_workers: int, rounds: int, H: int, kind: str = "diloco", step_time: float = 1.0,
                comm: float = 0.5, **pol) -> Trace:
    """local_sgd / diloco: every round all N workers run H inner steps from the global version r."""
    cols = {k: [] for k in ("step", "worker", "read_version", "t_read", "t_done", "t_applied")}
    extra = {k: [] for k in ("fragment", "outer_staleness", "local_start", "local_end")}
    t = 0.0
    for r in range(rounds):
        done = t + H * step_time
        for w in range(n_workers):
            for k, v in (("step", r), ("worker", w), ("read_version", r), ("t_read", t), ("t_done", done),
                         ("t_applied", done + comm)):
                cols[k].append(v)
            for k, v in (("fragment", 0), ("outer_staleness", 0), ("local_start", r * H),
                         ("local_end", (r + 1) * H)):
                extra[k].append(v)
        t = done + comm
    return _trace(cols, extra, policy(kind, H, **pol), n_workers)


def allreduce(n_workers: int, updates: int, step_time: float = 1.0, comm: float = 0.5) -> Trace:
    """All-reduce S-SGD: every update averages one gradient of each worker at version t."""
    t = np.arange(updates)
    step = np.repeat(t, n_workers)
    t_read = step * (step_time + comm)
    return Trace.from_columns({"step": step, "worker": np.tile(np.arange(n_workers), updates),
                               "read_version": step, "t_read": t_read, "t_done": t_read + step_time,
                               "t_applied": t_read + step_time + comm}, n_workers=n_workers,
                              scenario={"name": "hand-made", "policy": {"kind": "allreduce"}})


def streaming(n_workers: int, rounds: int, H: int, P: int, overlap: int = 0, inner: bool = False,
              **pol) -> Trace:
    """streaming_diloco in lock-step (one time unit per inner step): fragment p syncs at local steps
    kH + (p+1)H/P; its all-reduce ends ``overlap`` inner steps later, when its outer update is
    applied and every worker merges it (at that inner-step boundary). ``inner``: add the
    ``trace.inner`` side table: inner step k of every worker runs from k + 0.25 to k + 1 (a
    quarter step at each boundary for loading what was applied there, so a result applied at
    the boundary k is merged before inner step k, as the rows say), up to the last all-reduce."""
    assert H % P == 0 and 0 <= overlap <= H
    h = H // P
    syncs = [(k * H + (p + 1) * h, p) for k in range(rounds) for p in range(P)]
    syncs.sort()
    done_at = [s + overlap for s, _ in syncs]  # update i applied at this local time
    cols = {k: [] for k in ("step", "worker", "read_version", "t_read", "t_done", "t_applied")}
    extra = {k: [] for k in ("fragment", "outer_staleness", "local_start", "local_end")}
    last_merge = {p: (0, 0) for p in range(P)}  # fragment -> (local step of the merge, version read)
    n_frag_updates = {p: 0 for p in range(P)}
    frag_update_at = {p: [] for p in range(P)}
    for i, (s, p) in enumerate(syncs):
        ls, rv = last_merge[p]
        for w in range(n_workers):
            for k, v in (("step", i), ("worker", w), ("read_version", rv), ("t_read", float(ls)),
                         ("t_done", float(s)), ("t_applied", float(done_at[i]))):
                cols[k].append(v)
            os_ = sum(1 for u in frag_update_at[p] if u >= rv)
            for k, v in (("fragment", p), ("outer_staleness", os_), ("local_start", ls), ("local_end", s)):
                extra[k].append(v)
        frag_update_at[p].append(i)
        n_frag_updates[p] += 1
        m = done_at[i]
        version = sum(1 for d in done_at if d <= m)  # updates applied by the merge
        last_merge[p] = (m, version)
    side = None
    if inner:
        K = max(done_at) + 1
        side = {"worker": np.repeat(np.arange(n_workers, dtype=np.int32), K),
                "local_step": np.tile(np.arange(K, dtype=np.int64), n_workers),
                "t_start": np.tile(np.arange(K, dtype=float) + 0.25, n_workers),
                "t_done": np.tile(np.arange(1, K + 1, dtype=float), n_workers)}
    return _trace(cols, extra, policy("streaming_diloco", H, fragments=P, **pol), n_workers, side)


def async_rounds(order, H: int, n_workers: int | None = None, **pol) -> Trace:
    """async_diloco: update i applies the pseudo-gradient of worker ``order[i]``, which read the
    version right after its previous update (0 at first): staleness = the other workers' updates
    in between."""
    order = [int(w) for w in order]
    N = n_workers or max(order) + 1
    pulled = [0] * N
    count = [0] * N
    cols = {k: [] for k in ("step", "worker", "read_version", "t_read", "t_done", "t_applied")}
    extra = {k: [] for k in ("fragment", "outer_staleness", "local_start", "local_end")}
    for i, w in enumerate(order):
        rv = pulled[w]
        for k, v in (("step", i), ("worker", w), ("read_version", rv), ("t_read", float(rv)),
                     ("t_done", i + 0.5), ("t_applied", i + 1.0)):
            cols[k].append(v)
        for k, v in (("fragment", 0), ("outer_staleness", i - rv), ("local_start", count[w] * H),
                     ("local_end", (count[w] + 1) * H)):
            extra[k].append(v)
        count[w] += 1
        pulled[w] = i + 1
    return _trace(cols, extra, policy("async_diloco", H, **pol), N)
