"""Learning-rate rules: turning α* = a·η* into a learning rate.

* from an S-SGD learning rate η0 that sits at plain GD's edge (a = 2/η0): η = η0·α*/2;
* from a measured sharpness a (λ_max of the Hessian): η = α*/a;
* the paper's closed rule (Giladi et al. 2020, eq. 8): η ≈ π η0 / (4(E[τ] + 0.5)), which follows
  from 1/α* ≈ (2τ+1)/π at constant delay.
"""

from __future__ import annotations

import math

from ..errors import InputError

__all__ = ["lr_from_base", "lr_from_sharpness", "paper_rule"]


def _positive(v, what: str) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number > 0, got {v!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"{what} must be a finite number > 0, got {v}")
    return v


def lr_from_base(alpha_star: float, base_lr: float) -> float:
    """η = η0·α*/2: η0 is the S-SGD learning rate, taken to be at GD's edge a·η0 = 2."""
    return _positive(base_lr, "base learning rate") * float(alpha_star) / 2.0


def lr_from_sharpness(alpha_star: float, a: float) -> float:
    """η = α*/a for a measured sharpness a = λ_max(Hessian)."""
    return float(alpha_star) / _positive(a, "sharpness")


def paper_rule(base_lr: float, mean_tau: float) -> float:
    """The paper's eq. 8: η ≈ π η0 / (4(E[τ] + 0.5))."""
    mean_tau = float(mean_tau)
    if not (math.isfinite(mean_tau) and mean_tau >= 0):
        raise InputError(f"mean staleness must be a finite number >= 0, got {mean_tau}")
    return math.pi * _positive(base_lr, "base learning rate") / (4.0 * (mean_tau + 0.5))
