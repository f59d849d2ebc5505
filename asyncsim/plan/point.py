"""Evaluate one plan point: simulate → summary → stability → learning rate → (train) → time to target.

:func:`evaluate` is a pure function of its :class:`~asyncsim.plan.grid.Task`
(resolved scenario + settings, seed included), so any backend on any machine
returns the same record for it. It is a module-level function (picklable) that
imports the heavy modules lazily, so pool workers start quickly.

The learning rate (Giladi et al. 2020, section 3): with sharpness ``a`` (given,
measured, or ``a = 2/η0`` from an S-SGD base rate η0, the GD stability edge
α = 2), the largest stable rate is ``lr_max = α*/a`` with α* the most
conservative of the three criteria, and the recommended rate is
``lr = lr_fraction · lr_max`` (default one half: a rate *at* the edge does not
converge along the sharpest direction). With ``--train`` the point's own trace
is replayed at ``lr`` and the time to target is the simulated wall-clock time
(``t_applied`` of the update) of the first logged update whose training loss
is at or below the target.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from .grid import Task

__all__ = ["evaluate", "time_to_target", "CRITERIA", "SUMMARY_KEYS"]

CRITERIA = ("mean", "mean-square", "trace")
SUMMARY_KEYS = ("updates", "gradients", "applied", "dropped", "workers", "sim_time", "update_rate",
                "gradient_rate", "time_per_update", "staleness_mean", "staleness_p50", "staleness_p99",
                "staleness_max", "utilisation_mean", "utilisation_min")
#: At most this many (sim_time, loss) pairs are kept per point for the report's curves.
CURVE_POINTS = 400
#: Loss is logged about this many times per replay (time-to-target resolution: steps / LOG_POINTS).
LOG_POINTS = 1000


def _thin(x: np.ndarray, y: np.ndarray, n: int = CURVE_POINTS) -> tuple[list, list]:
    if len(x) <= n:
        return np.asarray(x, float).tolist(), np.asarray(y, float).tolist()
    idx = np.unique(np.linspace(0, len(x) - 1, n).round().astype(int))
    return np.asarray(x, float)[idx].tolist(), np.asarray(y, float)[idx].tolist()


def _sharpness_of(settings: dict[str, Any]) -> float | None:
    if settings.get("sharpness") is not None:
        return float(settings["sharpness"])
    if settings.get("base_lr") is not None:
        return 2.0 / float(settings["base_lr"])  # η0 is the S-SGD (GD) edge: α = a·η0 = 2
    return None


def evaluate(task: Task) -> dict[str, Any]:
    """Run one point and return its record (JSON-able; see :mod:`asyncsim.plan.store`)."""
    from .. import simulate
    from ..scenario import validate_scenario
    from ..stability import analyze

    s = task.settings
    t0 = time.perf_counter()
    sc = validate_scenario(task.scenario, source="<plan point>")
    trace = simulate(sc, updates=s.get("updates"), seed=s["seed"], engine=s.get("engine") or "auto")
    t1 = time.perf_counter()
    summ = trace.summary()
    summary = {k: summ.get(k) for k in SUMMARY_KEYS}
    summary["staleness_pmf"] = list(summ.get("staleness_pmf") or [])[:256]
    diloco = trace.has_outer_columns
    if diloco:
        # the outer-level quantities; summary["gradient_rate"] counts inner gradients (docs/diloco.md)
        summary["outer"] = {k: summ.get(k) for k in OUTER_KEYS}

    a = _sharpness_of(s)
    criteria = tuple(s.get("criteria") or CRITERIA)
    if diloco:
        # the outer recursion driven by the trace is the one criterion for these traces
        # (asyncsim.stability.diloco): its α* is the inner one at the policy's outer parameters
        criteria = ("trace",)
    rep = analyze(trace, criteria=criteria, optimizer=s.get("optimizer", "sgd"),
                  momentum=float(s.get("momentum", 0.0)), base_lr=s.get("base_lr"),
                  sharpness=s.get("sharpness") if s.get("base_lr") is None else None,
                  fitted_tail=False)  # plans rank by the criteria's α*; the fitted tail is not used here
    alpha = {c: (None if rep.alpha_star.get(c) is None else float(rep.alpha_star[c])) for c in criteria}
    cons = rep.conservative
    a_cons = alpha.get(cons) if cons else None
    if a_cons is None:
        finite = [v for v in alpha.values() if v is not None and math.isfinite(v)]
        a_cons = min(finite) if finite else None
    t2 = time.perf_counter()
    stability = {"alpha_star": alpha, "conservative": cons, "alpha_star_conservative": a_cons,
                 "warnings": [str(w) for w in (rep.warnings or [])],
                 # 95 % intervals of α* from the trace, per criterion (asyncsim.stability.uncertainty)
                 "alpha_star_ci": {k: [float(x) for x in v] for k, v in (getattr(rep, "alpha_star_ci", None)
                                                                         or {}).items()}}
    dl = getattr(rep, "diloco", None)
    if dl:  # the outer learning rate's bound at half the inner edge, and the policy's own
        stability["outer_lr_max"] = dl.get("outer_lr_max")
        stability["outer_lr"] = (dl.get("policy") or {}).get("outer_lr")
        # the stable region in (inner α or η, outer lr): the report's DiLoCo figure
        stability["stable_region"] = dl.get("stable_region")
    lr_max = a_cons / a if (a is not None and a_cons is not None) else None
    lr = s.get("lr_fraction", 0.5) * lr_max if lr_max is not None else None

    record: dict[str, Any] = {
        "scenario": task.scenario, "settings": s, "summary": summary, "stability": stability,
        "sharpness": a, "lr_max": lr_max, "lr": lr, "train": None,
    }
    tr = s.get("train")
    if tr is not None:
        record["train"] = _train(trace, tr, s, lr, a)
    t3 = time.perf_counter()
    record["timing"] = {"simulate_s": t1 - t0, "stability_s": t2 - t1, "train_s": t3 - t2}
    return record


#: the outer-level summary keys a DiLoCo family point records (Trace.outer_summary)
OUTER_KEYS = ("outer_updates", "pseudo_gradients", "inner_gradients", "inner_steps_per_second",
              "time_per_outer_round", "communication_fraction", "outer_staleness_mean", "outer_staleness_max",
              "fragments")


def _no_train(error: str) -> dict[str, Any]:
    return {"error": error, "time_to_target": None, "final_loss": None, "diverged": False, "steps": 0,
            "curve": {"sim_time": [], "loss": []}}


def _train(trace, tr: dict[str, Any], s: dict[str, Any], lr: float | None, a: float | None) -> dict[str, Any]:
    from ..train import replay

    if lr is None or not lr > 0:
        return _no_train("no stable learning rate")
    total = tr.get("steps") or int(trace.n_updates)
    total = min(int(total), int(trace.n_updates))
    kw: dict[str, Any] = {}
    if tr["dataset"] == "quadratic" and a is not None:
        kw["sharpness"] = a  # the quadratic's λ_max is the sharpness the lr was derived from

    if trace.has_outer_columns:
        # a DiLoCo trace: the inner optimizer is the policy's (the replay reads it from the trace)
        kw["optimizer"] = None
    else:
        kw.update(optimizer=s.get("optimizer", "sgd"), momentum=float(s.get("momentum", 0.0)))

    def run(steps):
        return replay(trace, dataset=tr["dataset"], model=tr.get("model"),
                      lr=float(lr), steps=steps, seed=int(s["seed"]),
                      batch_size=int(tr.get("batch_size") or 32), log_every=max(1, steps // LOG_POINTS),
                      device="cpu", **kw)

    # --until-target: replay prefixes of doubling length (1/16 of the trace, 1/8, ...) and stop at
    # the first that reaches the target. A prefix's replay is the start of the full one (the
    # minibatches are keyed by step and worker), so the answer is the same at no more than twice
    # the cost of the prefix that was needed.
    lengths = [total]
    if tr.get("until_target"):
        lengths = sorted({max(1, math.ceil(total / 2 ** j)) for j in range(4, -1, -1)})
    for steps in lengths:
        res = run(steps)
        ttt, stt = res.time_to_target(float(tr["target"]))  # from the replay's loss curve vs t_applied
        if ttt is not None or res.diverged:
            break
    sim_time = np.asarray(res.sim_time, dtype=float)
    loss = np.asarray(res.loss, dtype=float)
    ttt, stt = (float("nan"), float("nan")) if ttt is None else (ttt, float(stt))
    xs, ys = _thin(sim_time, loss)
    return {"time_to_target": ttt, "steps_to_target": stt, "final_loss": float(res.final_loss),
            "diverged": bool(res.diverged), "verdict": res.verdict, "diverged_step": res.diverged_step,
            "steps": int(res.steps),
            "initial_loss": float(res.initial_loss), "curve": {"sim_time": xs, "loss": ys}}
