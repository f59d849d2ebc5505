"""Exact replay of a staleness trace: the sequential reference, the version store, and the
public :func:`replay` / :func:`replay_many` (which choose between the reference and the batched
engine of :mod:`asyncsim.train.batched`).

Semantics (DESIGN.md, issue 4): step t applies the mean of the gradients of its applied trace
rows (``trace.step_index()``); dropped rows (step = −1) are never computed. Row j's gradient is
computed on its own minibatch — a pure function of (seed, step, worker, occurrence), see
:func:`asyncsim.train.data.minibatch_indices` — at the parameters of version ``read_version_j``.
The optimizer update is in :mod:`asyncsim.train.optim`.

The reference computes a row's gradient as soon as its read version is the current one (no
parameter snapshots), keeping the computed-but-unapplied gradients keyed by row (at most one per
worker in flight). Only DC-ASGD, which needs x_read when a row is applied, stores versions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..errors import InputError, TraceError
from .optim import OptimizerSpec, apply_step, check_lr, init_state
from .problem import Problem, make_problem
from .result import TrainResult

if TYPE_CHECKING:
    from ..trace import Trace


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


def make_plan(trace, steps: int | None = None) -> Plan:
    """Index the trace: rows of each of the first ``steps`` updates, grouped by step and by read version."""
    if not hasattr(trace, "step_index"):
        raise TraceError(f"expected an asyncsim Trace, got {type(trace).__name__}")
    T = int(trace.n_updates) if steps is None else int(steps)
    if T < 1:
        raise InputError(f"steps must be >= 1, got {T}")
    if T > trace.n_updates:
        raise InputError(f"steps={T} exceeds the trace's {trace.n_updates} updates")
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


def log_points(T: int, log_every: int) -> np.ndarray:
    """Logged update counts: 0, every ``log_every``-th, and T."""
    log_every = max(int(log_every), 1)
    pts = np.arange(0, T + 1, log_every)
    if pts[-1] != T:
        pts = np.append(pts, T)
    return pts


class _Logger:
    """Collects the logged losses of L runs and detects divergence (host sync only here)."""

    def __init__(self, problem: Problem, plan: Plan, L: int, log_every: int, factor: float):
        if not (float(factor) > 0):
            raise InputError(f"divergence_factor must be > 0, got {factor}")
        if int(log_every) < 1:
            raise InputError(f"log_every must be >= 1, got {log_every}")
        self.problem = problem
        self.plan = plan
        self.is_log = np.zeros(plan.T + 1, dtype=bool)
        self.is_log[log_points(plan.T, log_every)] = True
        self.factor = float(factor)
        self.L = L
        self.steps: list[int] = []
        self.losses: list[np.ndarray] = []
        self.active = np.ones(L, dtype=bool)
        self.diverged_step: list[int | None] = [None] * L
        self.stopped_at = np.full(L, -1, dtype=np.int64)  # index into the log of the last entry kept
        self.initial: np.ndarray | None = None

    def log(self, k: int, X) -> bool:
        """Log the loss of X (L, P) after k updates; return True when every run has stopped."""
        vals = self.problem.loss(X).detach().double().cpu().numpy()
        if self.initial is None:
            self.initial = vals.copy()
        self.steps.append(k)
        self.losses.append(vals)
        i = len(self.steps) - 1
        with np.errstate(invalid="ignore", over="ignore"):
            bad = ~np.isfinite(vals) | (vals > self.factor * self.initial)
        for r in np.flatnonzero(self.active & bad):
            self.active[r] = False
            self.diverged_step[r] = k
            self.stopped_at[r] = i
        return not self.active.any()

    def finish(self):
        self.stopped_at[self.active] = len(self.steps) - 1
        return self


def _results(logger: _Logger, problem: Problem, plan: Plan, X, spec: OptimizerSpec | None,
             opt_name: str, lrs, seeds, engine: str, max_live: int, wall: float,
             final_params: list | None = None) -> list[TrainResult]:
    logger.finish()
    steps_arr = np.asarray(logger.steps, dtype=np.int64)
    loss_arr = np.stack(logger.losses) if logger.losses else np.zeros((0, logger.L))
    t_step = np.concatenate([[0.0], plan.t_step])
    val = problem.val_metrics(X)
    val = {k: v.detach().double().cpu().numpy() for k, v in val.items()}
    Xc = X.detach().double().cpu().numpy()
    out = []
    for r in range(logger.L):
        n = int(logger.stopped_at[r]) + 1
        ls = steps_arr[:n]
        lo = loss_arr[:n, r]
        div = logger.diverged_step[r] is not None
        out.append(TrainResult(
            diverged=div,
            diverged_step=logger.diverged_step[r],
            final_loss=float(lo[-1]) if n else float("nan"),
            steps=int(ls[-1]) if n else 0,
            log_step=ls,
            loss=lo,
            sim_time=t_step[ls],
            initial_loss=float(logger.initial[r]) if logger.initial is not None else float("nan"),
            val_loss=None if div or "val_loss" not in val else float(val["val_loss"][r]),
            val_accuracy=None if div or "val_accuracy" not in val else float(val["val_accuracy"][r]),
            device=str(problem.device),
            lr=float(lrs[r]),
            seed=int(seeds[r]),
            optimizer=opt_name,
            momentum=float(spec.momentum) if spec is not None else 0.0,
            dataset=problem.name,
            model=problem.model_name,
            engine=engine,
            max_live_versions=int(max_live),
            wall_time_s=wall,
            params=Xc[r] if final_params is None else final_params[r],
        ))
    return out


def _progress_cb(progress, total: int):
    """A callable(done) from ``progress``: True → a rich bar on stderr, a callable → itself."""
    if not progress:
        return None, None
    if callable(progress):
        return (lambda done: progress(done, total)), None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.console import Console

    bar = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    bar.start()
    task = bar.add_task("replay", total=total)
    return (lambda done: bar.update(task, completed=done)), bar


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


def replay_reference(plan: Plan, problem: Problem, spec: OptimizerSpec | Callable, lr: float, *,
                     seed: int = 0, x0=None, log_every: int = 1, divergence_factor: float = 1e3,
                     progress=None) -> TrainResult:
    """The sequential reference replay of one run (see module docstring).

    ``spec`` may also be a factory ``f(params) -> torch.optim.Optimizer`` (a user's optimizer):
    each step then sets the master vector's ``.grad`` to the mean of the step's row gradients
    and calls ``optimizer.step()``."""
    import torch

    t0 = time.perf_counter()
    x = (problem.init_params(seed) if x0 is None else x0.detach().clone()).contiguous()
    user_opt = None
    if isinstance(spec, OptimizerSpec):
        state = init_state(spec, x, plan.n_workers)
        opt_name = spec.name
        dc = spec.needs_read_params
    else:
        x = torch.nn.Parameter(x)
        user_opt = spec([x])
        opt_name = getattr(user_opt, "__class__", type(user_opt)).__name__
        dc = False
    xd = x.detach() if user_opt is not None else x
    idx = problem.batch_indices(seed, plan.step, plan.worker, plan.occ)
    store = VersionStore()
    pending: dict[int, Any] = {}
    logger = _Logger(problem, plan, 1, log_every, divergence_factor)
    cb, bar = _progress_cb(progress, plan.T)
    tick = max(plan.T // 200, 1)
    by_read, read_ptr, ptr = plan.by_read, plan.read_ptr, plan.ptr
    worker, stal, read = plan.worker, plan.stal, plan.read
    plan_cols = (read, worker, stal)
    try:
        logger.log(0, xd[None])
        for v in range(plan.T):
            a, b = read_ptr[v], read_ptr[v + 1]
            for j in by_read[a:b]:
                pending[int(j)] = problem.grad_one(xd, None if idx is None else idx[j])
            if dc and b > a:
                store.put(v, xd.clone(), int(b - a))
            r0, r1 = int(ptr[v]), int(ptr[v + 1])
            gs = [pending.pop(j) for j in range(r0, r1)]
            if user_opt is not None:
                x.grad = gs[0] if len(gs) == 1 else sum(gs[1:], gs[0]) / len(gs)
                user_opt.step()
            else:
                apply_rows(spec, x, state, gs, r0, r1, plan_cols, lr, store if dc else None)
            if logger.is_log[v + 1] and logger.log(v + 1, xd[None]):
                break
            if cb is not None and (v + 1) % tick == 0:
                cb(v + 1)
    finally:
        if bar is not None:
            bar.stop()
    wall = time.perf_counter() - t0
    return _results(logger, problem, plan, xd[None], spec if isinstance(spec, OptimizerSpec) else None,
                    opt_name, [lr], [seed], "sequential", store.max_live, wall)[0]


# ---------------------------------------------------------------------------- public API
ENGINES = ("auto", "sequential", "batched")


def _setup(trace, dataset, model, optimizer, momentum, dampening, staleness_aware, dc_lambda,
           steps, device, batch_size, sharpness, dim, dtype, engine, problem_kwargs):
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r} (use {', '.join(ENGINES)})")
    if isinstance(optimizer, str):
        spec = OptimizerSpec(optimizer, momentum=momentum, dampening=dampening,
                             staleness_aware=staleness_aware, dc_lambda=dc_lambda)
    elif callable(optimizer):
        spec = optimizer
    else:
        raise InputError(f"optimizer must be a name ({', '.join(('sgd', 'momentum', 'shifted'))}) "
                         f"or a factory params -> torch.optim.Optimizer")
    plan = make_plan(trace, steps)
    problem = make_problem(dataset, model, device=device, dtype=dtype, dim=dim, sharpness=sharpness,
                           batch_size=batch_size, **problem_kwargs)
    return spec, plan, problem


#: Above this many parameters (on CPU) the sequential reference is chosen: batched kernels
#: become memory-bound (stacking versions and gradients of MBs each) and were measured at
#: 0.6–0.9× of sequential for 784-256-256-10 (269k parameters), 1.8–4.3× for 64-128-10 (9.8k).
BATCH_MAX_PARAMS_CPU = 100_000


def choose_engine(plan: Plan, problem: Problem, runs: int = 1) -> str:
    """``"batched"`` or ``"sequential"`` for this trace and problem (the ``auto`` rule).

    Batched in-flight gradients pay off when several rows share a dependency level (mean wave
    size ≥ 1.4: round robin has N, random async traces about √(πN/2)) and the model has a
    hand-batched kernel (linear/MLP, quadratic); ``vmap`` (the CNN) was measured slower than
    sequential on CPU, so the CNN is batched only on CUDA. On CPU, models above
    :data:`BATCH_MAX_PARAMS_CPU` parameters are replayed sequentially (also when several runs
    are asked for: one after the other). Several runs of a smaller model are always batched.
    See benchmarks/bench_trainer.py for the measurements."""
    from .batched import mean_wave_size

    if problem.kind == "model" and problem.device.type != "cuda":
        if problem.model.kind == "cnn" or problem.n_params > BATCH_MAX_PARAMS_CPU:
            return "sequential"
    if problem.kind == "quadratic":
        # gradients are trivial: per-wave bookkeeping dominates (measured 0.4–0.7× for one
        # run); batching 3+ runs shares the per-step overhead (1.5–1.7× for 4 runs)
        return "batched" if runs >= 3 else "sequential"
    if runs > 1:
        return "batched"
    # measured on digits/mlp:128: 1.2× at mean wave 1.5 (N = 2), 2× at 3.2, 3.7× at 8
    return "batched" if mean_wave_size(plan) >= 1.4 else "sequential"


def replay(trace: Trace, *, dataset: Any = "quadratic", model: str | None = None,
           optimizer: str | Callable = "sgd", lr: float, momentum: float = 0.0,
           dampening: bool = True, steps: int | None = None, device: str = "auto", seed: int = 0,
           batch_size: int = 32, sharpness: float | None = None, dim: int | None = None,
           dtype: Any = None, log_every: int = 1, divergence_factor: float = 1e3, engine: str = "auto",
           staleness_aware: bool = False, dc_lambda: float = 0.0,
           progress: bool | Callable[[int, int], None] = False, init: Any = None,
           data_seed: int = 0, eval_size: int = 1024) -> TrainResult:
    """Replay ``trace`` on a dataset/model with one optimizer and learning rate.

    Parameters
    ----------
    trace: an :class:`asyncsim.Trace`; its first ``steps`` updates (default all) are replayed.
    dataset: ``"quadratic"`` (with ``sharpness`` = λ_max and ``dim``), ``"teacher"``,
        ``"digits"``, a ``.pt``/``.npz`` path, a dict ``{"X", "y"}``, a Dataset or a Problem.
    model: ``"linear"``, ``"mlp:128"``, ``"mlp:256,256"``, ``"cnn"`` (not for the quadratic).
    optimizer: ``"sgd"``, ``"momentum"``, ``"shifted"`` (see :mod:`asyncsim.train.optim`), or a
        factory ``params -> torch.optim.Optimizer`` (sequential engine; gets the mean gradient).
    dampening: momentum with (paper eq. 9) or without (PyTorch convention) the (1−m) factor.
    staleness_aware / dc_lambda: η/max(τ,1) (Zhang et al. 2015), DC-ASGD λ (Zheng et al. 2017).
    device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``.
    dtype: float32/float64; default float64 for the quadratic, float32 for models.
    log_every: log the training loss every this many updates (and at the end); divergence
        (non-finite, or > ``divergence_factor`` × initial loss) is checked at logged updates.
    engine: ``"auto"``, ``"sequential"`` (the reference) or ``"batched"``.
    init: initial flat parameter vector (e.g. a minimum from :func:`asyncsim.train.find_minimum`).
    progress: True for a progress bar on stderr, or a callable ``(done, total)``.
    """
    lr = check_lr(lr)
    spec, plan, problem = _setup(trace, dataset, model, optimizer, momentum, dampening,
                                 staleness_aware, dc_lambda, steps, device, batch_size, sharpness,
                                 dim, dtype, engine, {"data_seed": data_seed, "eval_size": eval_size})
    x0 = _as_init(init, problem)
    eng = engine if engine != "auto" else choose_engine(plan, problem, 1)
    if not isinstance(spec, OptimizerSpec):
        eng = "sequential"
    if eng == "sequential":
        return replay_reference(plan, problem, spec, lr, seed=seed, x0=x0, log_every=log_every,
                                divergence_factor=divergence_factor, progress=progress)
    from .batched import replay_batched

    return replay_batched(plan, problem, spec, [lr], [seed], x0=x0, log_every=log_every,
                          divergence_factor=divergence_factor, progress=progress)[0]


def _as_init(init, problem: Problem):
    if init is None:
        return None
    import torch

    x0 = torch.as_tensor(np.asarray(init.detach().cpu() if hasattr(init, "detach") else init),
                         dtype=problem.dtype, device=problem.device).reshape(-1)
    if x0.numel() != problem.n_params:
        raise InputError(f"init has {x0.numel()} numbers; the problem has {problem.n_params} parameters")
    return x0


def _broadcast_runs(lrs, seeds, seed):
    lrs = [check_lr(v) for v in (np.atleast_1d(lrs).tolist() if lrs is not None else [])]
    seeds = [int(s) for s in np.atleast_1d(seeds).tolist()] if seeds is not None else [int(seed)]
    if not lrs:
        raise InputError("replay_many needs at least one learning rate")
    if len(lrs) == 1 and len(seeds) > 1:
        lrs = lrs * len(seeds)
    elif len(seeds) == 1 and len(lrs) > 1:
        seeds = seeds * len(lrs)
    elif len(lrs) != len(seeds):
        raise InputError(f"lrs ({len(lrs)}) and seeds ({len(seeds)}) must have equal lengths or one of length 1")
    return lrs, seeds


def replay_many(trace, lrs: Sequence[float] | float, seeds: Sequence[int] | None = None, *,
                seed: int = 0, engine: str = "auto", **kwargs) -> list[TrainResult]:
    """Independent runs over one trace (several learning rates and/or seeds) in one batched pass.

    ``lrs`` and ``seeds`` are zipped (one of them may have length 1 and is repeated). Every
    other keyword is as for :func:`replay`. Runs are batched along a leading run dimension
    (each run's parameters, minibatches and divergence are its own), bitwise equal to separate
    runs in float64 up to kernel rounding. ``engine="sequential"`` replays them one by one with
    the reference."""
    lrs, seeds = _broadcast_runs(lrs, seeds, seed)
    keys = ("dataset", "model", "optimizer", "momentum", "dampening", "staleness_aware", "dc_lambda",
            "steps", "device", "batch_size", "sharpness", "dim", "dtype")
    defaults = dict(dataset="quadratic", model=None, optimizer="sgd", momentum=0.0, dampening=True,
                    staleness_aware=False, dc_lambda=0.0, steps=None, device="auto", batch_size=32,
                    sharpness=None, dim=None, dtype=None)
    cfg = {k: kwargs.pop(k, defaults[k]) for k in keys}
    init = kwargs.pop("init", None)
    log_every = kwargs.pop("log_every", 1)
    divergence_factor = kwargs.pop("divergence_factor", 1e3)
    progress = kwargs.pop("progress", False)
    pk = {k: kwargs.pop(k) for k in ("data_seed", "eval_size") if k in kwargs}
    if kwargs:
        raise TypeError(f"replay_many() got unexpected keyword arguments {sorted(kwargs)}")
    spec, plan, problem = _setup(trace, cfg["dataset"], cfg["model"], cfg["optimizer"], cfg["momentum"],
                                 cfg["dampening"], cfg["staleness_aware"], cfg["dc_lambda"], cfg["steps"],
                                 cfg["device"], cfg["batch_size"], cfg["sharpness"], cfg["dim"],
                                 cfg["dtype"], engine, pk)
    x0 = _as_init(init, problem)
    eng = engine if engine != "auto" else choose_engine(plan, problem, len(lrs))
    if not isinstance(spec, OptimizerSpec):
        eng = "sequential"
    if eng == "sequential":
        return [replay_reference(plan, problem, spec, lr, seed=s, x0=x0, log_every=log_every,
                                 divergence_factor=divergence_factor, progress=progress)
                for lr, s in zip(lrs, seeds)]
    from .batched import replay_batched

    return replay_batched(plan, problem, spec, lrs, seeds, x0=x0, log_every=log_every,
                          divergence_factor=divergence_factor, progress=progress)
