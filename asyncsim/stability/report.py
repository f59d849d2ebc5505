"""``analyze``: every requested criterion for one source, the LR rules and the disagreement warning."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import InputError
from ..trace import Trace
from .criteria import CRITERIA, DESCRIPTIONS, get_criterion, pmf_of
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
    warnings: list[str] = field(default_factory=list)

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


def analyze(source: Trace | Sequence[float], criteria: str | Sequence[str] = CRITERIA, optimizer: str = "sgd",
            momentum: float = 0.0,
            base_lr: float | None = None, sharpness: float | None = None) -> StabilityReport:
    """α* of ``source`` (pmf array or :class:`~asyncsim.Trace`) under each criterion.

    The trace criterion is skipped (not an error) when the source is a pmf and ``criteria`` is the
    default; asking for it explicitly with a pmf raises :class:`InputError`.
    """
    if isinstance(criteria, str):
        criteria = CRITERIA if criteria == "all" else (criteria,)
    names = [get_criterion(c, optimizer, momentum).name for c in criteria]
    if not isinstance(source, Trace) and "trace" in names:
        if tuple(criteria) == CRITERIA:
            names = [n for n in names if n != "trace"]
        else:
            get_criterion("trace", optimizer, momentum).alpha_star(source)  # raises the clear error
    if not names:
        raise InputError("no stability criterion selected")
    if base_lr is not None and sharpness is not None:
        raise InputError("give either a base learning rate or a sharpness, not both")
    p = pmf_of(source)
    tau_mean = pmf_mean(p)
    alpha = {n: float(get_criterion(n, optimizer, momentum).alpha_star(source)) for n in names}
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
                           warnings=disagreement_warnings(alpha))
