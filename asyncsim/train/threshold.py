"""Empirical stability threshold: the largest learning rate whose replay of a trace does not
diverge, by bracketing and bisection on η — each round one batched pass over several LRs.

With ``from_minimum=True`` (the paper's protocol) training first reaches a minimum without
delay (plain minibatch SGD, :func:`find_minimum`), the sharpness a is measured there, and every
replay starts from it. The result is printed next to the stability module's predictions
α*/a for each criterion (``asyncsim.stability``), when that module is available.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from .problem import Problem, make_problem
from .optim import check_lr
from .replay import replay_many
from .sharpness import sharpness_info
from .._repr import dataclass_repr


@dataclass
class ThresholdResult:
    """Bracket [lr_stable, lr_diverged] of the divergence threshold and what it was compared with.

    ``lr``: the largest learning rate found not to diverge (= ``lr_stable``); ``alpha`` = a·lr.
    ``evaluations``: every (lr, diverged, diverged_step) replayed. ``predictions``: criterion →
    {alpha_star, lr} from :mod:`asyncsim.stability` (empty with ``predictions_error`` set when
    that module is unavailable)."""

    __repr__ = dataclass_repr  # arrays by shape (asyncsim._repr)

    lr_stable: float | None
    lr_diverged: float | None
    sharpness: float
    rounds: int
    evaluations: list[tuple[float, bool, int | None]]
    from_minimum: bool
    steps: int
    optimizer: str
    momentum: float
    predictions: dict[str, dict[str, float | None]] = field(default_factory=dict)
    predictions_error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def lr(self) -> float | None:
        return self.lr_stable

    @property
    def alpha(self) -> float | None:
        return None if self.lr_stable is None else self.lr_stable * self.sharpness

    def to_dict(self) -> dict[str, Any]:
        return {
            "lr": self.lr_stable, "lr_diverged": self.lr_diverged, "sharpness": self.sharpness,
            "alpha": self.alpha,
            "alpha_diverged": None if self.lr_diverged is None else self.lr_diverged * self.sharpness,
            "rounds": self.rounds, "replays": len(self.evaluations),
            "evaluations": [{"lr": lr, "diverged": d, "diverged_step": s} for lr, d, s in self.evaluations],
            "from_minimum": self.from_minimum, "steps": self.steps, "optimizer": self.optimizer,
            "momentum": self.momentum, "predictions": self.predictions,
            "predictions_error": self.predictions_error, "notes": self.notes,
        }


def _no_delay_trace(steps: int):
    from ..trace import Trace

    s = np.arange(steps, dtype=np.int64)
    t = (s + 1).astype(np.float64)
    return Trace.from_columns({"step": s, "worker": np.zeros(steps, dtype=np.int32), "read_version": s,
                               "t_read": t - 1, "t_done": t, "t_applied": t},
                              n_workers=1, sim_time=float(steps), n_updates=steps)


def find_minimum(problem: Problem, *, steps: int = 500, lr: float | None = None, seed: int = 0,
                 init=None, log_every: int = 50):
    """Parameters after ``steps`` of plain minibatch SGD without delay (a minimum's neighbourhood).

    ``lr`` defaults to min(0.5, 1/a₀) with a₀ the sharpness at the start (stable for GD)."""
    if problem.kind == "quadratic":
        return problem.init_params(seed) * 0.0 if init is None else init
    if lr is None:
        a0 = sharpness_info(problem, params=init, seed=seed, tol=1e-3, max_iter=30).value
        lr = min(0.5, 1.0 / a0) if a0 > 0 else 0.1
    r = replay_many(_no_delay_trace(int(steps)), [lr], seeds=[seed], dataset=problem, optimizer="sgd",
                    init=init, log_every=log_every)[0]
    if r.diverged:
        raise InputError(f"pre-training without delay diverged at step {r.diverged_step} (lr={lr:g}); "
                         f"give a smaller pre-training lr")
    import torch

    return torch.as_tensor(r.params, dtype=problem.dtype, device=problem.device)


CRITERIA = ("mean", "mean-square", "trace")


def _alpha_of(v) -> float:
    """α* from a number, an object with ``alpha_star`` or a dict with key ``alpha_star``."""
    if isinstance(v, dict):
        v = v.get("alpha_star", v.get("alpha"))
    return float(getattr(v, "alpha_star", v))


def stability_predictions(trace, optimizer: str, momentum: float, a: float):
    """α* per criterion from :mod:`asyncsim.stability` (and lr = α*/a); ``(dict, error or None)``.

    Uses ``asyncsim.stability.alpha_star(trace, criterion=..., optimizer=..., momentum=...)``,
    or failing that ``asyncsim.stability.analyze(trace, ...)`` (a mapping criterion → α* or a
    result with ``alpha_star``/``criteria``)."""
    try:
        from .. import stability as st
    except Exception as exc:  # pragma: no cover - the package exists
        return {}, f"asyncsim.stability unavailable ({exc})"
    kw = {} if optimizer == "sgd" else {"optimizer": optimizer, "momentum": momentum}
    out: dict[str, dict[str, float | None]] = {}
    errors = []

    def put(crit, val):
        val = _alpha_of(val)
        out[crit] = {"alpha_star": val, "lr": val / a if a > 0 else None}

    fn = getattr(st, "alpha_star", None)
    if fn is not None:
        for crit in CRITERIA:
            try:
                put(crit, fn(trace, criterion=crit, **kw))
            except Exception as exc:  # a criterion not implemented for this optimizer
                errors.append(f"{crit}: {type(exc).__name__}: {exc}".splitlines()[0])
        return out, ("; ".join(errors) or None)
    an = getattr(st, "analyze", None)
    if an is None:
        return {}, "asyncsim.stability has neither alpha_star nor analyze yet"
    try:
        res = an(trace, **kw)
        table = res.to_dict() if hasattr(res, "to_dict") else res
        if isinstance(table, dict) and isinstance(table.get("criteria"), dict):
            table = table["criteria"]
        for crit in CRITERIA:
            for key in (crit, crit.replace("-", "_")):
                if isinstance(table, dict) and key in table:
                    put(crit, table[key])
                    break
    except Exception as exc:
        return out, f"asyncsim.stability.analyze failed: {type(exc).__name__}: {exc}".splitlines()[0]
    return out, None if out else "asyncsim.stability.analyze gave no per-criterion alpha_star"


def empirical_threshold(trace, dataset: Any = "quadratic", model: str | None = None,
                        optimizer: str = "sgd", *, momentum: float = 0.0, dampening: bool = True,
                        from_minimum: bool = False, steps: int | None = None, seed: int = 0,
                        batch_size: int = 32, sharpness: float | None = None, dim: int | None = None,
                        device="auto", dtype=None, rtol: float = 0.01, lrs_per_round: int = 4,
                        max_rounds: int = 40, divergence_factor: float = 1e3,
                        log_every: int | None = None, pretrain_steps: int = 500,
                        pretrain_lr: float | None = None, predictions: bool = True,
                        engine: str = "auto", loss=None, val_dataset=None,
                        **optimizer_kwargs) -> ThresholdResult:
    """Largest non-diverging learning rate for replaying ``trace`` (bisection on η).

    The sharpness a is measured (Lanczos) at the starting point; the search starts around the
    GD limit 2/a, widens by 4× until a stable and a diverging LR bracket the threshold, then
    shrinks the bracket with ``lrs_per_round`` geometrically spaced LRs per round — one batched
    :func:`~asyncsim.train.replay_many` pass — until lr_diverged/lr_stable − 1 ≤ ``rtol``.
    If divergence is not monotone in η, the bracket is [largest stable below the smallest
    diverging, smallest diverging] and a note says so.

    ``model`` may be a user's ``nn.Module`` (with ``loss``, ``dataset`` as for
    :func:`~asyncsim.train.replay`; the module is left unchanged), and ``optimizer_kwargs`` are
    :func:`~asyncsim.train.replay`'s optimizer keywords (``weight_decay``, ``schedule``, …).
    Cost: (rounds × ``lrs_per_round``) replays of ``steps`` updates, batched per round where
    the engine allows.
    """
    if not (rtol > 0):
        raise InputError(f"rtol must be > 0, got {rtol}")
    if int(lrs_per_round) < 1:
        raise InputError(f"lrs_per_round must be >= 1, got {lrs_per_round}")
    k = int(lrs_per_round)
    if pretrain_lr is not None:
        check_lr(pretrain_lr)
    problem = make_problem(dataset, model, device=device, dtype=dtype, dim=dim, sharpness=sharpness,
                           batch_size=batch_size, loss=loss, val_dataset=val_dataset)
    T = int(trace.n_updates if steps is None else steps)
    x0 = None
    if from_minimum and problem.kind != "quadratic":
        x0 = find_minimum(problem, steps=pretrain_steps, lr=pretrain_lr, seed=seed)
    a = sharpness_info(problem, params=x0, seed=seed, tol=1e-5, max_iter=80).value
    if not (a > 0):
        raise InputError(f"the Hessian's largest eigenvalue at the start is {a:g} (not > 0): no threshold to find")
    if log_every is None:
        log_every = max(1, T // 200)
    evals: dict[float, tuple[bool, int | None]] = {}

    def run(lrs):
        lrs = [float(v) for v in lrs if float(v) not in evals]
        if not lrs:
            return
        res = replay_many(trace, lrs, seeds=[seed], dataset=problem, optimizer=optimizer,
                          momentum=momentum, dampening=dampening, steps=T, init=x0,
                          log_every=log_every, divergence_factor=divergence_factor, engine=engine,
                          log_val=False, **optimizer_kwargs)
        for lr, r in zip(lrs, res):
            evals[lr] = (r.diverged, r.diverged_step)

    def bracket():
        div = sorted(lr for lr, (d, _) in evals.items() if d)
        hi = div[0] if div else None
        stable = sorted(lr for lr, (d, _) in evals.items() if not d and (hi is None or lr < hi))
        lo = stable[-1] if stable else None
        return lo, hi

    ref = 2.0 / a
    run([ref * 4.0 ** (i - k + 1) for i in range(k)])  # ..., ref/16, ref/4, ref
    rounds = 1
    notes: list[str] = []
    while rounds < max_rounds:
        lo, hi = bracket()
        if lo is None:
            low = min(evals)
            run([low * 4.0 ** -(i + 1) for i in range(k)])
        elif hi is None:
            high = max(evals)
            run([high * 4.0 ** (i + 1) for i in range(k)])
        elif hi / lo - 1.0 <= rtol:
            break
        else:
            ratio = hi / lo
            run([lo * ratio ** ((i + 1) / (k + 1)) for i in range(k)])
        rounds += 1
    lo, hi = bracket()
    if any(not d and hi is not None and lr > hi for lr, (d, _) in evals.items()):
        notes.append("divergence was not monotone in the learning rate (a larger LR did not diverge)")
    if lo is None:
        notes.append("every learning rate tried diverged")
    if hi is None:
        notes.append("no learning rate tried diverged")
    if lo is not None and hi is not None and hi / lo - 1.0 > rtol:
        notes.append(f"stopped after {max_rounds} rounds before reaching rtol={rtol}")
    opt_name = optimizer if isinstance(optimizer, str) else "custom"
    preds, err = ({}, "not requested")
    if predictions:
        preds, err = stability_predictions(trace, opt_name, momentum, a)
    return ThresholdResult(lr_stable=lo, lr_diverged=hi, sharpness=a, rounds=rounds,
                           evaluations=sorted((lr, d, s) for lr, (d, s) in evals.items()),
                           from_minimum=bool(from_minimum), steps=T, optimizer=opt_name,
                           momentum=float(momentum), predictions=preds, predictions_error=err,
                           notes=notes)
