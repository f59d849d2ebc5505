"""Exact replay of a staleness trace: the public :func:`replay` / :func:`replay_many` and the one
place an engine is chosen (:func:`choose_engine`).

The engines sit side by side: :mod:`asyncsim.train.sequential` (the reference) and
:mod:`asyncsim.train.batched` (in-flight gradients and independent runs batched); both use the
replay plan and version store of :mod:`asyncsim.train.store`, the logging of
:mod:`asyncsim.train.curves` and the optimizer core of :mod:`asyncsim.train.optim`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import InputError
from .batched import mean_wave_size, replay_batched
from .curves import resolve_log_every
from .optim import OPTIMIZERS, OptimizerSpec, check_lr
from .outer import policy_of
from .problem import Problem, make_problem
from .result import TrainResult
from .sequential import replay_sequential
from .store import Plan, VersionStore, make_plan

if TYPE_CHECKING:
    from ..trace import Trace

__all__ = ["ENGINES", "Plan", "VersionStore", "choose_engine", "make_plan", "replay", "replay_many"]

ENGINES = ("auto", "sequential", "batched")

#: Above this many parameters (on CPU) the sequential reference is chosen: batched kernels
#: become memory-bound (stacking versions and gradients of MBs each) and were measured at
#: 0.6–0.9× of sequential for 784-256-256-10 (269k parameters), 1.8–4.3× for 64-128-10 (9.8k).
BATCH_MAX_PARAMS_CPU = 100_000

#: Optimizer keywords of :func:`replay` and their defaults (torch.optim's where they exist).
OPTIMIZER_KEYS: dict[str, Any] = dict(
    momentum=0.0, dampening=True, staleness_aware=False, dc_lambda=0.0, weight_decay=None,
    decoupled_weight_decay=None, momentum_init="zero", betas=(0.9, 0.999), eps=1e-8,
    clip_grad_norm=None, schedule=None)
#: Problem keywords of :func:`replay` and their defaults.
PROBLEM_KEYS: dict[str, Any] = dict(
    dataset="quadratic", model=None, loss=None, val_dataset=None, device="auto", batch_size=32,
    sharpness=None, dim=None, dtype=None, data_seed=0, eval_size=1024)
#: Run keywords of :func:`replay`.
RUN_KEYS: dict[str, Any] = dict(
    optimizer=None, steps=None, init=None, log_every=1, divergence_factor=1e3, unstable_factor=2.0,
    progress=False, log_val=True)
#: Outer-optimizer keywords of :func:`replay` for local SGD / DiLoCo traces (None: the trace's policy).
OUTER_KEYS: dict[str, Any] = dict(outer_lr=None, outer_momentum=None, nesterov=None, mixing=None)


def choose_engine(plan: Plan, problem: Problem, runs: int = 1) -> str:
    """``"batched"`` or ``"sequential"`` for this trace and problem (the ``auto`` rule).

    Batched in-flight gradients pay off when several rows share a dependency level (mean wave
    size ≥ 1.4: round robin has N, random async traces about √(πN/2)) and the model has a
    hand-batched kernel (linear/MLP, quadratic); ``vmap`` (the CNN, a user's module) was
    measured slower than sequential on CPU, so those are batched only on CUDA, and a module
    with buffers or dropout never. On CPU, models above :data:`BATCH_MAX_PARAMS_CPU`
    parameters are replayed sequentially (also when several runs are asked for: one after the
    other). Several runs of a smaller model are always batched.
    See benchmarks/bench_trainer.py for the measurements."""
    if not problem.functional or problem.stateful:
        return "sequential"
    cuda = problem.device.type == "cuda"
    if problem.kind == "module" and not cuda:
        return "sequential"
    if problem.kind == "model" and not cuda:
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


def _split_kwargs(kwargs: dict, where: str):
    opt = {k: kwargs.pop(k, v) for k, v in OPTIMIZER_KEYS.items()}
    prob = {k: kwargs.pop(k, v) for k, v in PROBLEM_KEYS.items()}
    run = {k: kwargs.pop(k, v) for k, v in RUN_KEYS.items()}
    run["outer"] = {k: kwargs.pop(k, v) for k, v in OUTER_KEYS.items()}
    if kwargs:
        raise TypeError(f"{where}() got unexpected keyword arguments {sorted(kwargs)}")
    return opt, prob, run


def _make_spec(optimizer, opt: dict):
    if optimizer is None:
        optimizer = "sgd"
    if isinstance(optimizer, str):
        return OptimizerSpec(optimizer, **opt)
    if callable(optimizer):
        return optimizer
    raise InputError(f"optimizer must be a name ({', '.join(OPTIMIZERS)}) "
                     f"or a factory params -> torch.optim.Optimizer")


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


def _write_back(problem: Problem, flat) -> None:
    """Copy flat parameters into a user's module (the batched engine trains copies)."""
    import torch

    if problem.kind != "module":
        return
    x = torch.as_tensor(flat, dtype=problem.dtype, device=problem.device)
    with torch.no_grad():
        for p, v in zip(problem.params, problem._views(x)):
            p.copy_(v)


def _run(trace, lrs, seeds, engine: str, kwargs: dict, where: str) -> tuple[list[TrainResult], Problem]:
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r} (use {', '.join(ENGINES)})")
    momentum_given = "momentum" in kwargs
    opt, prob, run = _split_kwargs(kwargs, where)
    policy = policy_of(trace) if hasattr(trace, "columns") else None
    if policy is not None:
        return _run_diloco(trace, policy, lrs, seeds, engine, opt, prob, run, momentum_given), None
    if any(v is not None for v in run["outer"].values()):
        raise InputError("outer_lr, outer_momentum, nesterov and mixing apply to local_sgd / DiLoCo traces only")
    spec = _make_spec(run["optimizer"], opt)
    plan = make_plan(trace, run["steps"])
    problem = make_problem(prob.pop("dataset"), prob.pop("model"), **prob)
    x0 = _as_init(run["init"], problem)
    log_every = resolve_log_every(run["log_every"], plan, problem)
    eng = engine if engine != "auto" else choose_engine(plan, problem, len(lrs))
    if not isinstance(spec, OptimizerSpec):
        eng = "sequential"
    if eng == "batched" and (problem.stateful or not problem.functional):
        raise InputError("the batched engine needs a module without buffers or dropout "
                         "(BatchNorm, Dropout): use engine='sequential' or 'auto'")
    common = dict(x0=x0, log_every=log_every, divergence_factor=run["divergence_factor"],
                  progress=run["progress"], unstable_factor=float(run["unstable_factor"]),
                  log_val=bool(run["log_val"]))
    if eng == "sequential":
        res = [replay_sequential(plan, problem, spec, lr, seed=s, **common) for lr, s in zip(lrs, seeds)]
    else:
        res = replay_batched(plan, problem, spec, lrs, seeds, **common)
    return res, problem


def _run_diloco(trace, policy, lrs, seeds, engine, opt, prob, run, momentum_given) -> list[TrainResult]:
    """Replay a local SGD / DiLoCo-family trace (:mod:`asyncsim.train.diloco`), one run at a time."""
    from .diloco import replay_diloco
    from .outer import make_outer_plan

    policy = policy.with_overrides(**run["outer"])
    optimizer = run["optimizer"] if run["optimizer"] is not None else policy.inner_optimizer
    if optimizer == "momentum" and not momentum_given:
        opt["momentum"] = 0.9  # a "momentum" inner optimizer without a value: the usual 0.9
    spec = _make_spec(optimizer, opt)
    plan = make_outer_plan(trace, policy, run["steps"])
    problem = make_problem(prob.pop("dataset"), prob.pop("model"), **prob)
    x0 = _as_init(run["init"], problem)
    from .diloco import _LogPlan

    log_every = resolve_log_every(run["log_every"], _LogPlan(plan), problem)
    out = []
    for lr, s in zip(lrs, seeds):
        out.append(replay_diloco(plan, problem, spec, lr, seed=s, x0=x0, engine=engine, log_every=log_every,
                                 divergence_factor=run["divergence_factor"], progress=run["progress"],
                                 unstable_factor=float(run["unstable_factor"]), log_val=bool(run["log_val"])))
    if len(out) > 1 and problem.kind == "module":
        _write_back(problem, problem.init_params(0).cpu().numpy())
    return out


def replay(trace: Trace, *, lr: float, engine: str = "auto", seed: int = 0, **kwargs: Any) -> TrainResult:
    """Replay ``trace`` on a dataset/model with one optimizer and learning rate.

    Parameters
    ----------
    trace: an :class:`asyncsim.Trace`; its first ``steps`` updates (default all) are replayed.
    dataset: ``"quadratic"`` (with ``sharpness`` = λ_max and ``dim``), ``"teacher"``,
        ``"digits"``, a ``.pt``/``.npz`` path, a dict ``{"X", "y"}``, a Dataset or a Problem;
        with a user module also ``(X, y)`` tensors or a ``torch.utils.data.Dataset``.
    model: ``"linear"``, ``"mlp:128"``, ``"mlp:256,256"``, ``"cnn"`` (not for the quadratic),
        or the user's own ``torch.nn.Module``, trained **in place** (its parameters hold the
        final values afterwards); see :mod:`asyncsim.train.module`.
    loss: with a module, ``loss(output, target)`` (default cross-entropy for integer targets,
        MSE otherwise). val_dataset: validation data in the same forms as ``dataset``.
    batch_size: examples per gradient (drawn with replacement per row), or None: full batch.
    optimizer: ``"sgd"``, ``"momentum"``, ``"shifted"``, ``"adam"``, ``"adamw"`` (see
        :mod:`asyncsim.train.optim`), or a factory ``params -> torch.optim.Optimizer``
        (sequential engine; gets the mean gradient of each step).
    momentum, dampening: momentum with (``True``, paper eq. 9) or without (``False``, PyTorch)
        the (1−m) factor, or torch.optim.SGD's dampening d (a number).
    momentum_init: ``"zero"`` (default) or ``"gradient"`` (torch.optim.SGD's first buffer).
    weight_decay, decoupled_weight_decay: at the server on the current parameters; coupled
        (``+ w x``) or decoupled (``x(1 − η w)``, AdamW). Default 0, AdamW 1e-2 decoupled.
    betas, eps: Adam's. clip_grad_norm: clip the step's mean gradient to this norm.
    schedule: learning-rate schedule by server update: ``"constant"``, ``"warmup:W"``,
        ``"step:S:GAMMA"``, ``"cosine[:MIN]"``, ``"warmup:W+cosine"``…, or ``t -> factor``.
    staleness_aware / dc_lambda: η/max(τ,1) (Zhang et al. 2015), DC-ASGD λ (Zheng et al. 2017).
    device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``.
    dtype: float32/float64; default float64 for the quadratic, float32 for models, the
        module's own for a module.
    log_every: log every this many updates (and at the end), or ``"auto"`` (logs ≤ 5 % of the
        gradient work, :func:`asyncsim.train.curves.auto_log_every`); divergence is checked at
        logged updates. log_val: log validation metrics too (default True).
    divergence_factor / unstable_factor: the verdict's thresholds (:mod:`asyncsim.train.curves`).
    engine: ``"auto"``, ``"sequential"`` (the reference) or ``"batched"``.
    init: initial flat parameter vector (e.g. a minimum from :func:`asyncsim.train.find_minimum`).
    progress: True for a progress bar on stderr, or a callable ``(done, total)``.

    **Local SGD / DiLoCo traces** (policy ``local_sgd``, ``diloco``, ``streaming_diloco``,
    ``async_diloco`` in the trace's scenario) are replayed with one replica per worker
    (:mod:`asyncsim.train.diloco`): ``lr`` is then the inner learning rate, ``optimizer`` the
    inner optimizer (default: the policy's ``inner_optimizer``; ``momentum`` defaults to 0.9
    for a momentum inner optimizer), and ``outer_lr``, ``outer_momentum``, ``nesterov``,
    ``mixing`` override the policy's outer settings. ``engine`` is ``auto``, ``sequential`` or
    ``batched`` (workers stacked). The replicas' memory is estimated first and a replay that
    would not fit is refused with one line.

    Cost: one gradient per applied trace row (forward + backward over its batch) plus one
    evaluation per logged update; memory: parameters, optimizer state, ≤ N pending gradients.
    """
    lr = check_lr(lr)
    res, problem = _run(trace, [lr], [int(seed)], engine, dict(kwargs), "replay")
    if problem is not None and res[0].engine != "sequential":
        _write_back(problem, res[0].params)
    return res[0]


def replay_many(trace, lrs: Sequence[float] | float, seeds: Sequence[int] | None = None, *,
                seed: int = 0, engine: str = "auto", **kwargs) -> list[TrainResult]:
    """Independent runs over one trace (several learning rates and/or seeds) in one batched pass.

    ``lrs`` and ``seeds`` are zipped (one of them may have length 1 and is repeated). Every
    other keyword is as for :func:`replay`. Runs are batched along a leading run dimension
    (each run's parameters, minibatches and divergence are its own), bitwise equal to separate
    runs in float64 up to kernel rounding. ``engine="sequential"`` replays them one by one with
    the reference. A user's module is left as it was handed over (each run's final parameters
    are in its result's ``params``)."""
    lrs, seeds = _broadcast_runs(lrs, seeds, seed)
    res, problem = _run(trace, lrs, seeds, engine, dict(kwargs), "replay_many")
    if problem is not None and problem.kind == "module":
        _write_back(problem, problem.init_params(0).cpu().numpy())
    return res

