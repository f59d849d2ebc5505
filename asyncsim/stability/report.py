"""``analyze``: every requested criterion for one source, the LR rules and the disagreement warning."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import InputError
from ..trace import Trace
from .characteristic import mean_alpha_star
from .criteria import CRITERIA, DESCRIPTIONS, get_criterion, pmf_of
from .lyapunov import _Plan, trace_alpha_star
from .meansquare import mean_square_alpha_star
from .families import pmf_mean
from .lr_rules import lr_from_base, lr_from_sharpness, paper_rule
from .._repr import dataclass_repr

#: Criteria whose α* differ by more than this factor trigger a warning.
DISAGREEMENT_FACTOR = 2.0


@dataclass
class StabilityReport:
    """Result of :func:`analyze`. ``alpha_star`` maps criterion → α*; ``conservative`` names the
    criterion with the smallest α*; ``lr`` (when a base LR or sharpness was given) maps criterion →
    recommended learning rate, plus ``paper_rule``; ``warnings`` are sentences for people."""

    __repr__ = dataclass_repr  # arrays by shape (asyncsim._repr)

    alpha_star: dict[str, float]
    conservative: str
    optimizer: str = "sgd"
    momentum: float = 0.0
    staleness_mean: float = 0.0
    lr: dict[str, float] | None = None
    base_lr: float | None = None
    sharpness: float | None = None
    warnings: list[str] = field(default_factory=list, repr=False)
    #: per criterion, a 95 % interval [lo, hi] for α* (trace sources only; see :mod:`.uncertainty`)
    alpha_star_ci: dict[str, list[float]] = field(default_factory=dict)
    #: per criterion, updates that would bring the interval's half-width under 1 % of α*
    updates_for_1pct: dict[str, int] = field(default_factory=dict, repr=False)
    #: criteria skipped (memory, size) and intervals not computed, one sentence each
    notes: list[str] = field(default_factory=list, repr=False)
    #: local SGD / DiLoCo traces: policy, outer_lr_max, stable_region (:mod:`.diloco`)
    diloco: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def alpha_star_conservative(self) -> float:
        return self.alpha_star[self.conservative]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``alpha_star`` is the conservative value; per criterion in
        ``alpha_star_by_criterion``."""
        return {
            "alpha_star": self.alpha_star_conservative,
            "alpha_star_by_criterion": dict(self.alpha_star),
            "conservative": self.conservative,
            "criteria": list(self.alpha_star),
            "optimizer": self.optimizer,
            "momentum": self.momentum,
            "staleness_mean": self.staleness_mean,
            "base_lr": self.base_lr,
            "sharpness": self.sharpness,
            "lr": dict(self.lr) if self.lr is not None else None,
            "warnings": list(self.warnings),
            "alpha_star_ci": {k: list(v) for k, v in self.alpha_star_ci.items()},
            "updates_for_1pct": dict(self.updates_for_1pct),
            "notes": list(self.notes),
            **({} if self.diloco is None else {"diloco": self.diloco, "outer_lr_max": self.diloco["outer_lr_max"],
                                               "stable_region": self.diloco["stable_region"]}),
        }


def disagreement_warnings(alpha_star: dict[str, float], factor: float = DISAGREEMENT_FACTOR) -> list[str]:
    """One sentence when the largest and smallest α* differ by more than ``factor``."""
    vals = {k: v for k, v in alpha_star.items() if v is not None and math.isfinite(v) and v > 0}
    if len(vals) < 2:
        return []
    lo = min(vals, key=vals.get)
    hi = max(vals, key=vals.get)
    if vals[hi] <= factor * vals[lo]:
        return []
    why = {
        ("mean", "trace"): "the average dynamics are stable while actual trajectories of this cluster diverge",
        ("mean", "mean-square"): "the average dynamics are stable while the spread of individual "
                                 "trajectories grows without bound",
        ("mean-square", "trace"): "the i.i.d.-delay model is stable but the correlated delays of this "
                                  "cluster make actual trajectories diverge",
    }.get((hi, lo), f"a learning rate chosen from the {hi} criterion is unstable by the {lo} criterion")
    return [f"The {DESCRIPTIONS[hi]} allows α* = {vals[hi]:.4g} but the {DESCRIPTIONS[lo]} only "
            f"{vals[lo]:.4g} ({vals[hi] / vals[lo]:.1f}× smaller): {why}. "
            f"Use the conservative value ({lo})."]


#: the mean-square jackknife solves the criterion SEGMENTS more times: only below this support
CI_MAX_SUPPORT_MS = 3000


def analyze(source: Trace | Sequence[float], criteria: str | Sequence[str] = CRITERIA, optimizer: str = "sgd",
            momentum: float = 0.0, base_lr: float | None = None, sharpness: float | None = None, *,
            uncertainty: bool = True, progress: Callable[[str, int, int], None] | None = None) -> StabilityReport:
    """α* of ``source`` (pmf array or :class:`~asyncsim.Trace`) under each criterion.

    The trace criterion is skipped (not an error) when the source is a pmf and ``criteria`` is the
    default; asking for it explicitly with a pmf raises :class:`InputError`. Criteria run in order
    of cost (mean, mean-square, trace); with the default criteria one that would not fit in memory
    is skipped with a note. For a trace, ``uncertainty`` adds a 95 % interval per criterion
    (:mod:`.uncertainty`). ``progress(description, done, total)`` is called as work proceeds.
    """
    if isinstance(criteria, str):
        criteria = CRITERIA if criteria == "all" else (criteria,)
    if isinstance(source, Trace):
        from .diloco import diloco_report, is_diloco

        if is_diloco(source):  # the outer recursion of local SGD / DiLoCo (docs/theory.md)
            return diloco_report(source, criteria, base_lr, sharpness, progress)
    names = [get_criterion(c, optimizer, momentum).name for c in criteria]
    default = tuple(criteria) == CRITERIA
    if not isinstance(source, Trace) and "trace" in names:
        if default:
            names = [n for n in names if n != "trace"]
        else:
            get_criterion("trace", optimizer, momentum).alpha_star(source)  # raises the clear error
    if not names:
        raise InputError("no stability criterion selected")
    if base_lr is not None and sharpness is not None:
        raise InputError("give either a base learning rate or a sharpness, not both")
    names = sorted(dict.fromkeys(names), key=CRITERIA.index)  # order of cost
    p = pmf_of(source)
    tau_mean = pmf_mean(p)
    notes: list[str] = []
    alpha: dict[str, float] = {}
    plan = None
    report = progress or (lambda *a: None)
    for n in names:
        report(f"{n} criterion", 0, 1)
        try:
            if n == "mean":
                alpha[n] = mean_alpha_star(p, optimizer, momentum)
            elif n == "mean-square":
                upper = alpha.get("mean") or mean_alpha_star(p, optimizer, momentum)
                alpha[n] = mean_square_alpha_star(p, optimizer, momentum, scale=upper,
                                                  progress=lambda d, t: report("mean-square criterion", d, t))
            else:
                plan = _Plan(source)
                alpha[n] = trace_alpha_star(plan, optimizer, momentum,
                                            progress=lambda d, t: report("trace criterion", d, t))
        except InputError as exc:
            if not default:
                raise
            notes.append(f"{n} criterion skipped: {exc}")
        report(f"{n} criterion", 1, 1)
    if not alpha:
        raise InputError("; ".join(notes) or "no stability criterion could be computed")
    ci: dict[str, list[float]] = {}
    need: dict[str, int] = {}
    if uncertainty and isinstance(source, Trace):
        _intervals(source, p, alpha, plan, optimizer, momentum, ci, need, notes, report)
    finite = {k: v for k, v in alpha.items() if math.isfinite(v)}
    conservative = min(finite or alpha, key=(finite or alpha).get)
    lr = None
    if base_lr is not None:
        lr = {n: lr_from_base(a, base_lr) for n, a in alpha.items()}
        lr["paper_rule"] = paper_rule(base_lr, tau_mean)
    elif sharpness is not None:
        lr = {n: lr_from_sharpness(a, sharpness) for n, a in alpha.items()}
        # the paper's rule needs an S-SGD rate: the GD edge for this sharpness, η0 = 2/a
        lr["paper_rule"] = paper_rule(2.0 / float(sharpness), tau_mean)
    return StabilityReport(alpha_star=alpha, conservative=conservative, optimizer=optimizer,
                           momentum=float(momentum), staleness_mean=tau_mean, lr=lr,
                           base_lr=None if base_lr is None else float(base_lr),
                           sharpness=None if sharpness is None else float(sharpness),
                           warnings=disagreement_warnings(alpha), alpha_star_ci=ci,
                           updates_for_1pct=need, notes=notes)


def _intervals(trace, p, alpha, plan, optimizer, m, ci, need, notes, report) -> None:
    """Fill ``ci`` / ``need`` per criterion (:mod:`.uncertainty`); a note where one is not given."""
    from .uncertainty import jackknife, segment_counts, trace_interval

    T = int(trace.n_updates)
    try:
        counts = segment_counts(trace)
    except InputError as exc:
        notes.append(f"no intervals: {exc}")
        return
    for n, a in alpha.items():
        if not math.isfinite(a):
            continue
        report(f"interval, {n}", 0, 1)
        try:
            if n == "mean":
                iv = jackknife(lambda q: mean_alpha_star(q, optimizer, m), counts, a, T)
            elif n == "mean-square":
                if p.size - 1 > CI_MAX_SUPPORT_MS:
                    notes.append(f"no interval for mean-square: support {p.size - 1} > {CI_MAX_SUPPORT_MS} "
                                 f"(the jackknife would solve it 20 more times)")
                    continue
                iv = jackknife(lambda q: mean_square_alpha_star(q, optimizer, m), counts, a, T)
            else:
                iv = trace_interval(plan, a, optimizer, m)
        except InputError as exc:
            notes.append(f"no interval for {n}: {exc}")
            continue
        ci[n] = [float(iv.lo), float(iv.hi)]
        need[n] = iv.updates_for(0.01)
        report(f"interval, {n}", 1, 1)
    if "mean" in ci:
        notes.append("the mean criterion's interval is a jackknife spread; with geometric-like delays its "
                     "estimate is biased low by sampling noise and the interval need not cover the "
                     "long-run value (docs/theory.md)")
