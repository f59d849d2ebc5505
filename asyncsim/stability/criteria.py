"""The three stability criteria, one class each, behind one interface: ``alpha_star(source)``.

A *source* is a delay pmf (1-D array indexed by τ) or an :class:`asyncsim.Trace`. The mean and
mean-square criteria use the trace's update-weighted pmf (``trace.delay_pmf()``: weights 1/K for
an update averaging K gradients); the trace criterion needs the trace itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..trace import Trace
from .characteristic import check_optimizer, mean_alpha_star
from .families import _check_support, as_pmf
from .lyapunov import trace_alpha_star
from .meansquare import mean_square_alpha_star

CRITERIA = ("mean", "mean-square", "trace")

#: Plain-words description of each criterion, for tables and warnings.
DESCRIPTIONS = {
    "mean": "mean (first-moment) criterion",
    "mean-square": "mean-square (second-moment, i.i.d. delays) criterion",
    "trace": "trace criterion (actual delay sequence)",
}


def pmf_of(source) -> np.ndarray:
    """The delay pmf of a source: the array itself (validated) or ``trace.delay_pmf()``."""
    if isinstance(source, Trace):
        if not source.applied.any():
            raise InputError("the trace has no applied updates: no delay distribution to analyse")
        st = source.columns["staleness"][source.applied]
        _check_support(int(st.max()), "trace staleness")  # before bincount allocates max+1 floats
        return as_pmf(source.delay_pmf())
    if isinstance(source, str):
        raise InputError("a pmf source must be an array (use families.parse_pmf_spec for a spec string)")
    return as_pmf(source)


@dataclass(frozen=True)
class Criterion:
    """Base class: validated optimizer settings; subclasses implement :meth:`alpha_star`."""

    optimizer: str = "sgd"
    momentum: float = 0.0
    name = ""

    def __post_init__(self):
        check_optimizer(self.optimizer, self.momentum)

    def alpha_star(self, source) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class MeanCriterion(Criterion):
    """The paper's criterion: stability of E[x_t] (Giladi et al. 2020, eq. 5, 9, 10)."""

    name = "mean"

    def alpha_star(self, source) -> float:
        return mean_alpha_star(pmf_of(source), self.optimizer, self.momentum)


@dataclass(frozen=True)
class MeanSquareCriterion(Criterion):
    """Stability of E[x_t²] when delays are i.i.d. from the pmf (never above the mean criterion)."""

    name = "mean-square"

    def alpha_star(self, source) -> float:
        p = pmf_of(source)
        upper = mean_alpha_star(p, self.optimizer, self.momentum)
        return mean_square_alpha_star(p, self.optimizer, self.momentum, scale=upper)


@dataclass(frozen=True)
class TraceCriterion(Criterion):
    """Top Lyapunov exponent of the recursion driven by the actual trace (correlations kept)."""

    name = "trace"
    burn_in: float = 0.1

    def alpha_star(self, source) -> float:
        if not isinstance(source, Trace):
            raise InputError("the trace criterion needs a trace (a delay pmf alone drops the correlations "
                             "it measures); use --trace or a scenario, or choose mean / mean-square")
        return trace_alpha_star(source, self.optimizer, self.momentum, burn_in=self.burn_in)


_CLASSES = {"mean": MeanCriterion, "mean-square": MeanSquareCriterion, "trace": TraceCriterion}


def get_criterion(name: str, optimizer: str = "sgd", momentum: float = 0.0) -> Criterion:
    """The criterion object for a name in :data:`CRITERIA` (``mean_square`` accepted too)."""
    key = str(name).replace("_", "-").lower()
    if key not in _CLASSES:
        raise InputError(f"criterion must be one of {', '.join(CRITERIA)}, got {name!r}")
    return _CLASSES[key](optimizer=optimizer, momentum=float(momentum))
