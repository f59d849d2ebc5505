"""The sequential reference replay: one gradient at a time, no parameter snapshots.

Semantics (DESIGN.md, issue 4): step t applies the mean of the gradients of its applied trace
rows (``trace.step_index()``); dropped rows (step = −1) are never computed. Row j's gradient is
computed on its own minibatch — a pure function of (seed, step, worker, occurrence), see
:func:`asyncsim.train.data.minibatch_indices` — at the parameters of version ``read_version_j``.
The optimizer update is in :mod:`asyncsim.train.optim`.

A row's gradient is computed as soon as its read version is the current one (no parameter
snapshots), keeping the computed-but-unapplied gradients keyed by row (at most one per worker in
flight). Only DC-ASGD, which needs x_read when a row is applied, stores versions.

**Buffers** (a user module's BatchNorm running statistics): the server holds the buffers of the
current version. Each row's forward pass starts from the buffers of the version it read (the
current ones when it is computed) and its own updates to them travel with its gradient; when a
step is applied the server keeps the buffers of the step's last row (the latest to arrive), as
the seed's code does. **Randomness** in the forward pass (dropout) is seeded per row from
(seed, step, worker, occurrence), so it too is order-free.

Cost: one gradient per applied row plus one loss evaluation per logged update; memory: the
parameters, the optimizer state and at most one pending gradient per worker.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .curves import BatchLoss, Logger, progress_callback, results
from .optim import OptimizerSpec, apply_step, init_state, lr_factors
from .problem import Problem
from .result import TrainResult
from .store import Plan, VersionStore


def apply_rows(spec: OptimizerSpec, x, state: dict, gs, r0: int, r1: int, cols, lr, store=None) -> None:
    """Apply one update made of trace rows ``r0:r1`` (``cols`` = (read, worker, staleness) arrays).

    With ``store`` (DC-ASGD, which needs each row's x_read when the gradient is applied) the
    read versions are fetched from the version store and released afterwards."""
    read, worker, stal = cols
    x_reads = [store.get(int(read[j])) for j in range(r0, r1)] if store is not None else None
    apply_step(spec, x, state, gs, worker[r0:r1], stal[r0:r1], lr, x_reads)
    if store is not None:
        for j in range(r0, r1):
            store.release(int(read[j]))


def replay_sequential(plan: Plan, problem: Problem, spec: OptimizerSpec | Callable, lr: float, *,
                      seed: int = 0, x0=None, log_every: int = 1, divergence_factor: float = 1e3,
                      progress=None, unstable_factor: float = 2.0, log_val: bool = True) -> TrainResult:
    """The sequential reference replay of one run (see module docstring).

    ``spec`` may also be a factory ``f(params) -> torch.optim.Optimizer`` (a user's optimizer):
    each step then sets the master vector's ``.grad`` to the mean of the step's row gradients
    and calls ``optimizer.step()``."""
    import torch

    t0 = time.perf_counter()
    x = (problem.init_params(seed) if x0 is None else x0.detach().clone()).contiguous()
    user_opt = None
    fac = None
    if isinstance(spec, OptimizerSpec):
        state = init_state(spec, x, plan.n_workers)
        opt_name = spec.name
        dc = spec.needs_read_params
        fac = lr_factors(spec, plan.T)
    else:
        x = torch.nn.Parameter(x)
        user_opt = spec([x])
        opt_name = getattr(user_opt, "__class__", type(user_opt)).__name__
        dc = False
    xd = x.detach() if user_opt is not None else x
    problem.bind(xd)
    idx = problem.batch_indices(seed, plan.step, plan.worker, plan.occ)
    row_seeds = problem.row_seeds(seed, plan.step, plan.worker, plan.occ)
    stateful = problem.stateful
    store = VersionStore()
    pending: dict[int, Any] = {}
    pend_buf: dict[int, Any] = {}
    logger = Logger(problem, plan, 1, log_every, divergence_factor, log_val=log_val)
    cb, bar = progress_callback(progress, plan.T)
    tick = max(plan.T // 200, 1)
    # Python lists: indexing them is several times cheaper than numpy scalars in this loop
    by_read, read_ptr, ptr = plan.by_read.tolist(), plan.read_ptr.tolist(), plan.ptr.tolist()
    is_log = logger.is_log.tolist()
    worker, stal, read = plan.worker, plan.stal, plan.read
    plan_cols = (read, worker, stal)
    grad_one = problem.grad_one
    bl = BatchLoss(problem, 1)
    track = bl.on
    pend_loss: dict[int, Any] = {}
    try:
        logger.log(0, xd[None])
        for v in range(plan.T):
            a, b = read_ptr[v], read_ptr[v + 1]
            if stateful and b > a:
                base = problem.get_buffers()
                for n, j in enumerate(by_read[a:b]):
                    if n:
                        problem.set_buffers(base)
                    pending[j] = grad_one(xd, None if idx is None else idx[j],
                                          None if row_seeds is None else int(row_seeds[j]))
                    pend_buf[j] = problem.get_buffers()
                    if track:
                        pend_loss[j] = problem.last_loss
                problem.set_buffers(base)
            elif row_seeds is None:
                for j in by_read[a:b]:
                    pending[j] = grad_one(xd, None if idx is None else idx[j])
                    if track:
                        pend_loss[j] = problem.last_loss
            else:
                for j in by_read[a:b]:
                    pending[j] = grad_one(xd, None if idx is None else idx[j], int(row_seeds[j]))
                    if track:
                        pend_loss[j] = problem.last_loss
            if dc and b > a:
                store.put(v, xd.clone(), int(b - a))
            r0, r1 = ptr[v], ptr[v + 1]
            gs = [pending.pop(j) for j in range(r0, r1)]
            if track:
                for j in range(r0, r1):
                    bl.add(pend_loss.pop(j))
            if user_opt is not None:
                x.grad = gs[0] if len(gs) == 1 else sum(gs[1:], gs[0]) / len(gs)
                user_opt.step()
            else:
                apply_rows(spec, x, state, gs, r0, r1, plan_cols, lr if fac is None else lr * float(fac[v]),
                           store if dc else None)
            if stateful:
                last = None
                for j in range(r0, r1):
                    last = pend_buf.pop(j)
                problem.set_buffers(last)
            if is_log[v + 1] and logger.log(v + 1, xd[None], bl.take()):
                break
            if cb is not None and (v + 1) % tick == 0:
                cb(v + 1)
    finally:
        if bar is not None:
            bar.stop()
        problem.unbind()
    wall = time.perf_counter() - t0
    return results(logger, problem, plan, xd[None], spec if isinstance(spec, OptimizerSpec) else None,
                   opt_name, [lr], [seed], "sequential", store.max_live, wall, unstable_factor)[0]
