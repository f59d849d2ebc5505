"""Curves of a replay: which updates are logged, the logger both engines share, the verdict.

At each logged update k the training loss (on the problem's fixed evaluation subset) and, when
the problem has validation data, the validation metrics of the parameters after k updates are
recorded, next to the simulated time at which update k was applied (``t_applied``).

**Verdict** (:func:`verdict`), from the logged training losses ℓ_0 (initial), …, ℓ_end:

* ``diverged``: some ℓ_k is non-finite or above ``divergence_factor`` × ℓ_0 (1e3 by default);
  that run's replay stops at k.
* ``unstable``: not diverged, but the final loss is above the initial one (a loss that went
  2.30 → 45 → 5.78 is unstable, not fine), or a spike — some ℓ_k, or some mean minibatch loss
  b_k of the gradients computed since the previous log, above ``unstable_factor`` × ℓ_0 (2 by
  default) — left the run worse than it was before the spike (final loss above the lowest
  loss logged before the last spike).
* ``converged``: otherwise: the loss ended below its start and recovered from any spike (a
  transient rise near the stability edge that then decays is not instability).

Losses are assumed non-negative (cross-entropy, squared error, the quadratic).

**Batch loss.** The gradient rows compute their minibatch loss anyway; the engines average the
losses of the rows applied between two logs (on the device, no synchronisation) into the
``batch_loss`` curve — the running
training loss a torch loop prints — at no extra forward pass. It is the loss at the (stale)
parameters each row read, on its own minibatch; NaN at update 0 and for the quadratic.

**Cost of logging.** A log costs one forward pass over the evaluation (and validation) examples;
a gradient row about three forward passes over its minibatch. ``log_every="auto"``
(:func:`auto_log_every`) spaces the logs so that their work is at most 5 % of the gradient work
(and logs at most 1,000 times): the command line's default.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from .result import TrainResult

VERDICTS = ("converged", "unstable", "diverged")

#: Logged work (forward passes) allowed per unit of gradient work under ``log_every="auto"``.
LOG_BUDGET = 0.05


def log_points(T: int, log_every: int) -> np.ndarray:
    """Logged update counts: 0, every ``log_every``-th, and T."""
    log_every = max(int(log_every), 1)
    pts = np.arange(0, T + 1, log_every)
    if pts[-1] != T:
        pts = np.append(pts, T)
    return pts


def auto_log_every(plan, problem, max_points: int = 1000) -> int:
    """The logging interval of ``log_every="auto"``: logs cost ≤ :data:`LOG_BUDGET` of the
    gradient work (the problem's :meth:`~asyncsim.train.problem.Problem.log_cost` in gradient
    rows, times the mean rows per update), and at most ``max_points`` logs."""
    rows_per_step = plan.n_rows / max(plan.T, 1)
    every = math.ceil(problem.log_cost() / (LOG_BUDGET * rows_per_step))
    return int(max(1, every, math.ceil(plan.T / max_points)))


def resolve_log_every(log_every, plan, problem) -> int:
    if log_every is None or (isinstance(log_every, str) and log_every == "auto"):
        return auto_log_every(plan, problem)
    try:
        k = int(log_every)
    except (TypeError, ValueError):
        raise InputError(f"log_every must be an integer >= 1 or 'auto', got {log_every!r}") from None
    if k < 1:
        raise InputError(f"log_every must be >= 1, got {log_every}")
    return k


def verdict(loss, diverged: bool, unstable_factor: float = 2.0, batch_loss=None) -> str:
    """``converged | unstable | diverged`` from logged training losses (see module docstring);
    ``batch_loss`` (the mean minibatch loss between logs, aligned with ``loss``) also counts
    for spikes, so a spike between two sparse logs is not missed."""
    if diverged:
        return "diverged"
    loss = np.asarray(loss, dtype=np.float64)
    if len(loss) == 0:
        return "converged"
    l0, final = loss[0], loss[-1]
    peak = loss
    if batch_loss is not None and len(batch_loss) == len(loss):
        peak = np.fmax(loss, np.asarray(batch_loss, dtype=np.float64))
    with np.errstate(invalid="ignore", over="ignore"):
        if not final <= l0:
            return "unstable"
        spikes = np.flatnonzero(peak > unstable_factor * l0)
    if len(spikes) and final > loss[: spikes[-1]].min():
        return "unstable"
    return "converged"


class BatchLoss:
    """The running mean of the applied rows' minibatch losses between logs, kept on the device
    (by application, not computation, so both engines give the same curve)."""

    def __init__(self, problem, L: int):
        import torch

        self.on = bool(problem.tracks_loss)
        self.acc = torch.zeros(L, dtype=problem.dtype, device=problem.device) if self.on else None
        self.n = 0

    def add(self, loss) -> None:
        """Count one applied row's minibatch loss (a 0-d or (L,) tensor)."""
        self.acc.add_(loss)
        self.n += 1

    def take(self):
        """The mean since the last take (None when no row was computed), and a reset."""
        if not self.on or self.n == 0:
            return None
        out = self.acc / self.n
        self.acc = self.acc.new_zeros(self.acc.shape)
        self.n = 0
        return out


class Logger:
    """Collects the logged losses (and validation metrics) of L runs and detects divergence
    (the only host synchronisation of a replay)."""

    def __init__(self, problem, plan, L: int, log_every: int, factor: float, log_val: bool = True):
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
        self.log_val = bool(log_val)
        self.steps: list[int] = []
        self.losses: list[np.ndarray] = []
        self.vals: dict[str, list[np.ndarray]] = {}
        self.batch: list[np.ndarray] = []
        self.active = np.ones(L, dtype=bool)
        self.diverged_step: list[int | None] = [None] * L
        self.stopped_at = np.full(L, -1, dtype=np.int64)  # index into the log of the last entry kept
        self.initial: np.ndarray | None = None

    def log(self, k: int, X, batch_loss=None) -> bool:
        """Log the loss of X (L, P) after k updates (and ``batch_loss`` (L,), the mean minibatch
        loss since the previous log, or None); return True when every run has stopped."""
        vals = self.problem.loss(X).detach().double().cpu().numpy()
        self.batch.append(np.full(self.L, np.nan) if batch_loss is None
                          else batch_loss.detach().double().cpu().numpy().reshape(self.L))
        if self.log_val:
            for name, v in self.problem.val_metrics(X).items():
                self.vals.setdefault(name, []).append(v.detach().double().cpu().numpy())
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


def results(logger: Logger, problem, plan, X, spec, opt_name: str, lrs, seeds, engine: str,
            max_live: int, wall: float, unstable_factor: float = 2.0) -> list[TrainResult]:
    """One :class:`TrainResult` per run from the logger and the final parameters X (L, P)."""
    logger.finish()
    steps_arr = np.asarray(logger.steps, dtype=np.int64)
    loss_arr = np.stack(logger.losses) if logger.losses else np.zeros((0, logger.L))
    batch_arr = np.stack(logger.batch) if logger.batch else np.zeros((0, logger.L))
    t_step = np.concatenate([[0.0], plan.t_step])
    val_curves = {k: np.stack(v) for k, v in logger.vals.items()} if logger.vals else None
    if val_curves is None:
        val = problem.val_metrics(X)
        val = {k: v.detach().double().cpu().numpy() for k, v in val.items()}
    Xc = X.detach().double().cpu().numpy()
    out = []
    for r in range(logger.L):
        n = int(logger.stopped_at[r]) + 1
        ls = steps_arr[:n]
        lo = loss_arr[:n, r]
        bl = batch_arr[:n, r]
        div = logger.diverged_step[r] is not None
        curves = {k: v[:n, r] for k, v in val_curves.items()} if val_curves is not None else {}
        final_val = {k: (float(v[-1]) if len(v) else None) for k, v in curves.items()} if curves else \
            {k: float(v[r]) for k, v in val.items()}
        out.append(TrainResult(
            diverged=div,
            diverged_step=logger.diverged_step[r],
            final_loss=float(lo[-1]) if n else float("nan"),
            steps=int(ls[-1]) if n else 0,
            log_step=ls,
            loss=lo,
            sim_time=t_step[ls],
            initial_loss=float(logger.initial[r]) if logger.initial is not None else float("nan"),
            val_loss=None if div else final_val.get("val_loss"),
            val_accuracy=None if div else final_val.get("val_accuracy"),
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
            params=Xc[r],
            verdict=verdict(lo, div, unstable_factor, bl),
            val_curves=curves,
            batch_loss=bl if np.isfinite(bl).any() else None,
        ))
    return out


def progress_callback(progress, total: int):
    """A callable(done) from ``progress``: True → a rich bar on stderr, a callable → itself."""
    if not progress:
        return None, None
    if callable(progress):
        return (lambda done: progress(done, total)), None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    bar.start()
    task = bar.add_task("replay", total=total)
    return (lambda done: bar.update(task, completed=done)), bar
