"""Exact replay of local SGD / DiLoCo-family traces: one replica per worker, an outer optimizer at the server.

Semantics (docs/theory.md, "Local SGD and DiLoCo"; the order of operations is
:func:`asyncsim.train.outer.build_ops`):

* every worker w keeps a **replica** x_w of the parameters and its own **inner optimizer** (sgd,
  momentum, adam, adamw — :mod:`asyncsim.train.optim`'s update — or a user's factory
  ``params -> torch.optim.Optimizer``, one instance per worker); its state persists across outer
  rounds. Inner step k of worker w uses the minibatch of (seed, step = k, worker = w,
  occurrence 0) and the learning rate η · schedule(k): the same minibatches an S-SGD trace's
  step k gives worker w, so ``local_sgd`` with H = 1, outer lr 1 and no momentum replays
  all-reduce S-SGD (up to rounding: Δ = θ − (θ − η g) is η g to within an ulp);
* a **merge** (row j, at its ``local_start``) sets the worker's anchor A_w,p to the global
  fragment p and its replica's fragment to ``mixing·x_w,p + (1 − mixing)·θ_p`` (streaming;
  other policies replace: mixing 0);
* a **take** (at ``local_end``) stores the pseudo-gradient Δ_j = A_w,p − x_w,p;
* an **outer update** averages the Δ of its rows and applies torch.optim.SGD's step to fragment
  p of the global parameters θ with lr = ``outer_lr``, momentum μ (buffer b ← Δ̄ at the
  fragment's first update, then b ← μ b + Δ̄) and, with ``nesterov``, direction Δ̄ + μ b
  (else b). Each fragment keeps its own buffer.

The training loss is logged on the global parameters after outer updates, against the trace's
``t_applied``, so :meth:`~asyncsim.train.result.TrainResult.time_to_target` works as for any
trace. A user's module ends holding the final global parameters.

**Engines.** ``sequential`` computes one inner gradient at a time; ``batched`` stacks the
workers that run the same inner steps (every worker of a synchronous round) and computes their
gradients in one call (hand-batched kernels; ``vmap`` for a module), with their optimizer
states stacked. ``auto`` picks batched for the quadratic and the built-in linear/MLP models
(and any functional model on CUDA), sequential otherwise (benchmarks/bench_diloco_replay.py).

Cost: one gradient per inner step of every worker (``plan.inner_total``) plus one evaluation per
logged outer update. Memory: N replicas, N anchors, N optimizer states (0–2 vectors each) and
≤ N pending pseudo-gradients: about N·(3 + state)·n_params numbers, estimated and refused
(:func:`check_memory`) before anything is allocated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..memory import check_bytes, format_bytes
from .curves import Logger, progress_callback, results
from .optim import OptimizerSpec, apply_step, init_state, lr_factors
from .outer import INNER, MERGE, TAKE, UPDATE, OuterPlan, fragment_bounds
from .problem import Problem

#: vectors of optimizer state per parameter, by inner optimizer (a user's factory: assume Adam's 2)
STATE_VECTORS = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}
#: inner optimizers the replay accepts by name
DILOCO_ENGINES = ("auto", "sequential", "batched")
BATCH_MAX_PARAMS_CPU = 100_000


def replica_bytes(n_workers: int, n_params: int, itemsize: int, state_vectors: int) -> int:
    """Bytes of the replay's per-worker tensors (replica, anchor, pending Δ, optimizer state)
    plus the global parameters and the outer momentum buffer."""
    return int(itemsize) * int(n_params) * (int(n_workers) * (3 + int(state_vectors)) + 2)


def check_memory(n_workers: int, problem: Problem, state_vectors: int) -> int:
    """Refuse (one line) a replay whose replicas would not fit; return the estimate in bytes."""
    import torch

    item = torch.empty((), dtype=problem.dtype).element_size()
    need = replica_bytes(n_workers, problem.n_params, item, state_vectors)
    what = (f"replaying {n_workers:,} worker replicas of {problem.n_params:,} parameters "
            f"(replica, anchor, pending pseudo-gradient and {state_vectors} optimizer state vectors each)")
    hint = "use fewer workers, a smaller model or float32"
    if problem.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(problem.device)
        if need > free:
            raise InputError(f"{what} needs ~{format_bytes(need)} of GPU memory; {format_bytes(free)} is free: {hint}")
    else:
        check_bytes(need, what, hint=hint)
    return need


def choose_diloco_engine(problem: Problem, plan: OuterPlan, spec=None) -> str:
    """``batched`` where stacked gradient kernels pay (see the module docstring), else ``sequential``."""
    if not problem.functional or problem.stateful or not isinstance(spec, OptimizerSpec):
        return "sequential"
    groups = [len(op[1]) for op in plan.ops if op[0] == INNER]
    if not groups or np.mean(groups) < 1.5:
        return "sequential"
    if problem.device.type == "cuda" or problem.kind == "quadratic":
        return "batched"
    if problem.kind == "model" and problem.model.kind != "cnn" and problem.n_params <= BATCH_MAX_PARAMS_CPU:
        return "batched"
    return "sequential"


@dataclass
class _Inner:
    """The workers' inner optimizers: a spec with stacked state, or one torch optimizer each."""

    spec: OptimizerSpec | None
    state: dict | None
    torch_opts: list | None
    params: list | None
    fac: np.ndarray | None


def _inner_state(spec, X, N: int, max_local: int) -> _Inner:
    import torch

    if isinstance(spec, OptimizerSpec):
        if spec.name == "shifted":
            raise InputError("shifted momentum keeps per-worker velocities at a server: it is no inner optimizer "
                             "(use sgd, momentum, adam or adamw)")
        if spec.needs_read_params or spec.staleness_aware:
            raise InputError("staleness-aware rates and DC-ASGD act on stale gradients at a server; "
                             "inner steps are never stale")
        st = init_state(spec, X, N)  # stacked over workers: (N, P) tensors
        fac = lr_factors(spec, max(int(max_local), 1))
        return _Inner(spec, st, None, None, fac)
    params = [torch.nn.Parameter(X[w]) for w in range(N)]  # views of the stacked replicas
    opts = [spec([p]) for p in params]
    return _Inner(None, None, opts, params, None)


def _sub_state(st: dict, idx, k: int) -> dict:
    """The optimizer state of workers ``idx`` (a slice or an index tensor) at local step k."""
    out = {"t": int(k), "started": k > 0}
    for key in ("v", "m", "s"):
        if key in st:
            out[key] = st[key][idx]
    return out


def _put_state(st: dict, idx, sub: dict) -> None:
    """Scatter a gathered state back (an index tensor gathers copies; ints and slices give views)."""
    if isinstance(idx, (int, slice)):
        return
    for key in ("v", "m", "s"):
        if key in st:
            st[key][idx] = sub[key]


def replay_diloco(plan: OuterPlan, problem: Problem, spec, lr: float, *, seed: int = 0, x0=None,
                  engine: str = "auto", log_every: int = 1, divergence_factor: float = 1e3, progress=None,
                  unstable_factor: float = 2.0, log_val: bool = True):
    """Replay ``plan`` (:func:`~asyncsim.train.outer.make_outer_plan`) on ``problem`` with the inner
    optimizer ``spec`` (an :class:`OptimizerSpec` or a factory) at inner learning rate ``lr``.
    Returns a :class:`~asyncsim.train.result.TrainResult` (see the module docstring)."""
    import torch

    if engine not in DILOCO_ENGINES:
        raise InputError(f"unknown engine {engine!r} for a {plan.policy.kind} trace (use {', '.join(DILOCO_ENGINES)})")
    if problem.stateful:
        raise InputError("a module with buffers (BatchNorm running statistics) cannot be replayed on a "
                         f"{plan.policy.kind} trace: the buffers are no part of the outer synchronisation")
    eng = choose_diloco_engine(problem, plan, spec) if engine == "auto" else engine
    if eng == "batched" and (not problem.functional or not isinstance(spec, OptimizerSpec)):
        raise InputError("the batched DiLoCo replay needs a functional problem (no buffers, no dropout) and a "
                         "named inner optimizer: use engine='sequential'")
    pol = plan.policy
    N = plan.n_workers
    check_memory(N, problem, STATE_VECTORS.get(getattr(spec, "name", ""), 2))
    t0 = time.perf_counter()
    dev, dt = problem.device, problem.dtype
    theta = (problem.init_params(seed) if x0 is None else x0.detach().clone()).contiguous()
    n = theta.numel()
    X = theta.unsqueeze(0).repeat(N, 1)      # replicas
    A = X.clone()                            # anchors: the global fragment each worker last loaded
    buf = torch.zeros_like(theta) if pol.outer_momentum else None
    started = [False] * pol.fragments
    bounds = fragment_bounds(n, pol.fragments)
    inner = _inner_state(spec, X, N, plan.max_local)
    mix = float(pol.mixing) if pol.kind == "streaming_diloco" else 0.0
    eta_o, mu, nesterov = float(pol.outer_lr), float(pol.outer_momentum), bool(pol.nesterov)
    pending: dict[int, object] = {}
    full = list(range(N))
    random_rows = bool(getattr(problem, "random", False))
    one = np.zeros(1, dtype=np.int64)

    def batches(ws, k0, k1):
        """Minibatch indices (len(ws), k1 − k0, bs) of inner steps k0..k1−1 of workers ``ws``, in
        one call (None: full batch): inner step k of worker w is the row (step k, worker w)."""
        n_w, n_k = len(ws), k1 - k0
        idx = problem.batch_indices(seed, np.tile(np.arange(k0, k1, dtype=np.int64), n_w),
                                    np.repeat(np.asarray(ws, dtype=np.int64), n_k), np.zeros(n_w * n_k, np.int64))
        return None if idx is None else idx.view(n_w, n_k, -1)

    def inner_sequential(ws, k0, k1):
        idx_all = batches(ws, k0, k1)
        for i, w in enumerate(ws):
            x = X[w]
            for k in range(k0, k1):
                rs = None
                if random_rows:
                    rs = int(problem.row_seeds(seed, np.array([k]), np.array([w]), one)[0])
                g = problem.grad_one(x, None if idx_all is None else idx_all[i, k - k0], rs)
                if inner.torch_opts is not None:
                    p = inner.params[w]
                    p.grad = g.view_as(p)
                    inner.torch_opts[w].step()
                    continue
                sub = _sub_state(inner.state, w, k)
                lr_k = lr if inner.fac is None else lr * float(inner.fac[k])
                apply_step(inner.spec, x, sub, [g], None, None, lr_k)
                _put_state(inner.state, w, sub)

    def inner_batched(ws, k0, k1):
        is_all = list(ws) == full
        idx_t = slice(None) if is_all else torch.as_tensor(ws, device=dev)
        Xg = X if is_all else X[idx_t]
        sub = None
        idx_all = batches(ws, k0, k1)
        for k in range(k0, k1):
            G = problem.grads(Xg, None if idx_all is None else idx_all[:, k - k0])
            sub = _sub_state(inner.state, idx_t, k) if sub is None else sub
            sub["t"], sub["started"] = k, k > 0
            lr_k = lr if inner.fac is None else lr * float(inner.fac[k])
            apply_step(inner.spec, Xg, sub, [G], None, None, lr_k)
        if not is_all:
            X[idx_t] = Xg
            _put_state(inner.state, idx_t, sub)

    run_inner = inner_batched if eng == "batched" else inner_sequential
    logger = Logger(problem, _LogPlan(plan), 1, log_every, divergence_factor, log_val=log_val)
    cb, bar = progress_callback(progress, plan.T)
    tick = max(plan.T // 200, 1)
    ptr = plan.ptr.tolist()
    problem.bind(theta)
    try:
        logger.log(0, theta[None])
        with torch.no_grad():
            for op in plan.ops:
                code = op[0]
                if code == INNER:
                    with torch.enable_grad():
                        run_inner(op[1], op[2], op[3])
                elif code == TAKE:
                    _, j, w, p = op
                    lo, hi = bounds[p]
                    pending[j] = A[w, lo:hi] - X[w, lo:hi]
                elif code == MERGE:
                    _, j, w, p = op
                    lo, hi = bounds[p]
                    g = theta[lo:hi]
                    A[w, lo:hi] = g
                    if mix:
                        X[w, lo:hi].mul_(mix).add_(g, alpha=1.0 - mix)
                    else:
                        X[w, lo:hi] = g
                else:  # UPDATE: torch.optim.SGD's step on the averaged pseudo-gradient of fragment p
                    _, s, p, _ = op
                    lo, hi = bounds[p]
                    r0, r1 = ptr[s], ptr[s + 1]
                    ds = [pending.pop(j) for j in range(r0, r1)]
                    d = ds[0] if len(ds) == 1 else sum(ds[1:], ds[0]) / len(ds)
                    if mu:
                        b = buf[lo:hi]
                        if started[p]:
                            b.mul_(mu).add_(d)
                        else:
                            b.copy_(d)
                            started[p] = True
                        d = d.add(b, alpha=mu) if nesterov else b
                    theta[lo:hi].add_(d, alpha=-eta_o)
                    v = s + 1
                    if logger.is_log[v] and logger.log(v, theta[None]):
                        break
                    if cb is not None and v % tick == 0:
                        cb(v)
    finally:
        if bar is not None:
            bar.stop()
        problem.unbind()
    wall = time.perf_counter() - t0
    name = getattr(spec, "name", None) or type(inner.torch_opts[0]).__name__
    res = results(logger, problem, _LogPlan(plan), theta[None], spec if isinstance(spec, OptimizerSpec) else None,
                  name, [lr], [seed], f"diloco-{eng}", N + 1, wall, unstable_factor)[0]
    res.extra.update({"policy": pol.kind, "inner_steps": pol.inner_steps, "outer_lr": pol.outer_lr,
                      "outer_momentum": pol.outer_momentum, "nesterov": pol.nesterov,
                      "fragments": pol.fragments, "mixing": pol.mixing, "inner_optimizer": name,
                      "inner_gradients": int(plan.inner_total), "workers": int(N)})
    return res


class _LogPlan:
    """What :class:`~asyncsim.train.curves.Logger` and ``results`` read from a plan."""

    def __init__(self, plan: OuterPlan):
        self.T = plan.T
        self.n_rows = plan.inner_total  # gradient work: inner steps, for log_every="auto"
        self.t_step = plan.t_step
