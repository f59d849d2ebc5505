"""Batched replay: in-flight gradients computed together, and independent runs side by side.

**Waves.** With the current version V, every row whose read version is ≤ V can be computed
now. A wave computes all such rows not computed yet — rows with read version in (V_prev, V] —
in one batched call (parameter versions and minibatches stacked), then applies steps
V, V+1, … in trace order until the first step that has a row reading a version > V (the next
V). Round robin gives waves of N rows, random asynchronous traces about √(πN/2).

**Versions.** A version created while applying a wave's steps is snapshotted only if a row
reads it (reference-counted in a :class:`~asyncsim.train.store.VersionStore` and released once
those rows are computed — or, for DC-ASGD, applied). Those rows are in flight (read before and
applied after the current version), so with one gradient in flight per worker the store holds
at most ``n_workers`` snapshots plus the current parameters.

**Runs.** Every tensor has a leading run dimension L: several learning rates or seeds over one
trace are one replay (each run's divergence is detected and reported separately).

The arithmetic is the sequential reference's; only the grouping of gradient computations
differs, so in float64 the parameters agree with :func:`~asyncsim.train.sequential.replay_sequential`
to rounding (the parity tests ask ≤ 1e-12 relative after 1,000 steps).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .curves import BatchLoss, Logger, progress_callback, results
from .optim import OptimizerSpec, init_state, lr_factors
from .problem import Problem
from .sequential import apply_rows
from .store import Plan, VersionStore


@dataclass
class Schedule:
    """Waves (V_prev, V, V_next) and the number of rows reading each version."""

    waves: list[tuple[int, int, int]]
    readers: np.ndarray


def waves_of(plan: Plan) -> list[tuple[int, int, int]]:
    T = plan.T
    first = np.full(T + 1, T, dtype=np.int64)  # earliest step among rows reading version v
    np.minimum.at(first, plan.read, plan.step)
    suffix = np.minimum.accumulate(first[::-1])[::-1]  # earliest step among rows reading >= v
    waves = []
    v_prev, v = -1, 0
    while v < T:
        v_next = int(min(suffix[v + 1], T))
        waves.append((v_prev, v, v_next))
        v_prev, v = v, v_next
    return waves


def mean_wave_size(plan: Plan) -> float:
    """Mean number of rows computed per batched call (the lever of in-flight batching)."""
    return plan.n_rows / max(len(waves_of(plan)), 1)


def schedule(plan: Plan) -> Schedule:
    return Schedule(waves=waves_of(plan), readers=np.bincount(plan.read, minlength=plan.T + 1))


def replay_batched(plan: Plan, problem: Problem, spec: OptimizerSpec, lrs, seeds, *, x0=None,
                   log_every: int = 1, divergence_factor: float = 1e3, progress=None,
                   unstable_factor: float = 2.0, log_val: bool = True):
    """Replay L = len(lrs) runs of one trace with batched in-flight gradients.

    Returns a list of :class:`~asyncsim.train.result.TrainResult`, one per run."""
    import torch

    t0 = time.perf_counter()
    L = len(lrs)
    dev, dt = problem.device, problem.dtype
    sch = schedule(plan)
    if x0 is None:
        x = torch.stack([problem.init_params(s) for s in seeds])
    else:
        x = x0.detach().reshape(1, -1).expand(L, -1).clone()
    P = x.shape[1]
    state = init_state(spec, x, plan.n_workers)
    lr = torch.tensor([float(v) for v in lrs], dtype=dt, device=dev).view(L, 1)
    dc = spec.needs_read_params
    fac = lr_factors(spec, plan.T)

    # Minibatch indices of every row (and run), uploaded once: no per-step host->device copy.
    idx_all = None
    same_seed = len(set(int(s) for s in seeds)) == 1
    first = problem.batch_indices(int(seeds[0]), plan.step, plan.worker, plan.occ)
    if first is not None:
        if same_seed:
            idx_all = first.unsqueeze(1)  # (R, 1, bs), broadcast over runs
        else:
            idx_all = torch.stack([first] + [problem.batch_indices(int(s), plan.step, plan.worker, plan.occ)
                                             for s in seeds[1:]], dim=1)  # (R, L, bs)
    store = VersionStore()
    logger = Logger(problem, plan, L, log_every, divergence_factor, log_val=log_val)
    cb, bar = progress_callback(progress, plan.T)
    tick = max(plan.T // 200, 1)
    next_tick = tick
    by_read, read_ptr, ptr = plan.by_read, plan.read_ptr, plan.ptr
    read, worker, stal = plan.read, plan.worker, plan.stal
    plan_cols = (read, worker, stal)
    by_read_t = torch.as_tensor(by_read, device=dev)
    pend: dict[int, object] = {}  # computed, not yet applied gradients by row, (L, P) each
    readers = sch.readers
    stopped = False
    bl = BatchLoss(problem, L)
    pend_loss: dict[int, object] = {}
    try:
        logger.log(0, x)
        for v_prev, v, v_next in sch.waves:
            # ---- compute every row whose read version is now available, in one call
            a, b = int(read_ptr[v_prev + 1]), int(read_ptr[v + 1])
            J = by_read[a:b]
            R = len(J)
            if dc and readers[v] > 0:
                store.put(v, x.clone(), int(readers[v]))
            if R:
                vers = read[J]
                stack = torch.stack([x if u == v else store.get(int(u)) for u in vers])  # (R, L, P)
                Jt = by_read_t[a:b]  # a slice of an index uploaded once: no per-wave copy
                idx = None
                if idx_all is not None:
                    bs = idx_all.shape[-1]
                    idx = idx_all[Jt].expand(R, L, bs).reshape(R * L, bs)
                G = problem.grads(stack.reshape(R * L, P), idx).view(R, L, P)
                if bl.on:
                    ls = problem.last_losses.view(R, L)
                    for i, j in enumerate(J.tolist()):
                        pend_loss[j] = ls[i]
                # Rows point into G (no copy); those still pending after this wave's steps
                # are cloned below so G can be freed.
                for i, j in enumerate(J.tolist()):
                    pend[j] = G[i]
                del stack
                if not dc:
                    for u in np.unique(vers):
                        if u != v:
                            store.release(int(u))
            # ---- apply steps v .. v_next-1 in trace order
            for s in range(v, v_next):
                r0, r1 = int(ptr[s]), int(ptr[s + 1])
                gs = [pend.pop(j) for j in range(r0, r1)]
                if bl.on:
                    for j in range(r0, r1):
                        bl.add(pend_loss.pop(j))
                apply_rows(spec, x, state, gs, r0, r1, plan_cols, lr if fac is None else lr * float(fac[s]),
                           store if dc else None)
                u = s + 1
                if u < v_next and readers[u] > 0:
                    store.put(u, x.clone(), int(readers[u]) if dc else 1)
                if logger.is_log[u] and logger.log(u, x, bl.take()):
                    stopped = True
                    break
                if cb is not None and u >= next_tick:
                    cb(u)
                    next_tick += tick
            if stopped:
                break
            if R:
                for i, j in enumerate(J.tolist()):
                    if j in pend:  # computed now, applied in a later wave: own its memory
                        pend[j] = pend[j].clone()
                del G
    finally:
        if bar is not None:
            bar.stop()
    wall = time.perf_counter() - t0
    engine = "batched" if L == 1 else f"batched[{L} runs]"
    return results(logger, problem, plan, x, spec, spec.name, lrs, seeds, engine, store.max_live, wall,
                   unstable_factor)
