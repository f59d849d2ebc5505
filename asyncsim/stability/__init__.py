"""Stability thresholds of asynchronous SGD: delay distribution → largest stable α = a·η.

Three criteria (see DESIGN.md, "The stability mathematics"):

* ``mean`` — the paper's first-moment criterion (Giladi et al., ICLR 2020): exact, any pmf up to
  K = 10⁴ in well under a second (:mod:`.characteristic`);
* ``mean-square`` — second-moment stability with i.i.d. delays (:mod:`.meansquare`);
* ``trace`` — the top Lyapunov exponent of the recursion driven by an actual trace (:mod:`.lyapunov`).

>>> from asyncsim.stability import alpha_star, families
>>> round(alpha_star(families.constant(4)), 6)    # 2 sin(π/18)
0.347296
"""

from __future__ import annotations

from . import families, lr_rules
from .criteria import (CRITERIA, MeanCriterion, MeanSquareCriterion, TraceCriterion, get_criterion,
                       pmf_of)
from .families import parse_pmf_spec
from .lr_rules import lr_from_base, lr_from_sharpness, paper_rule
from .report import StabilityReport, analyze, disagreement_warnings

__all__ = [
    "CRITERIA", "MeanCriterion", "MeanSquareCriterion", "TraceCriterion", "StabilityReport",
    "alpha_star", "analyze", "disagreement_warnings", "families", "get_criterion", "lr_rules",
    "lr_from_base", "lr_from_sharpness", "paper_rule", "parse_pmf_spec", "pmf_of",
]


def alpha_star(source, criterion: str = "mean", optimizer: str = "sgd", momentum: float = 0.0,
               **opts) -> float:
    """α* of ``source`` (a pmf array indexed by τ, or an :class:`asyncsim.Trace`) under one criterion.

    ``criterion`` is ``"mean"``, ``"mean-square"`` or ``"trace"`` (the last needs a Trace);
    ``optimizer`` is ``"sgd"``, ``"momentum"`` (with dampening) or ``"shifted"``.
    Extra ``opts`` go to the trace criterion (``burn_in``). A local SGD / DiLoCo trace has only
    the trace criterion of its outer recursion (:mod:`.diloco`): α* of the inner steps.
    """
    from .diloco import diloco_alpha_star_of

    a = diloco_alpha_star_of(source, criterion, **opts)
    if a is not None:
        return a
    crit = get_criterion(criterion, optimizer, momentum)
    if opts:
        if crit.name != "trace":
            raise TypeError(f"unexpected options for the {crit.name} criterion: {sorted(opts)}")
        crit = TraceCriterion(optimizer=optimizer, momentum=float(momentum), **opts)
    return float(crit.alpha_star(source))
