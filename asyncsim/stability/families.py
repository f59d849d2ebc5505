"""Delay distributions (pmfs over τ = 0, 1, ..., K) and the ``--pmf`` spec parser.

A pmf is a 1-D float array ``p`` with ``p[k] = P(τ = k)`` summing to 1.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

__all__ = ["constant", "uniform", "gaussian", "geometric", "parse_pmf_spec", "as_pmf", "pmf_mean"]


def constant(tau: int) -> np.ndarray:
    """Every gradient exactly ``tau`` updates stale."""
    tau = int(tau)
    if tau < 0:
        raise InputError(f"constant delay must be >= 0, got {tau}")
    p = np.zeros(tau + 1)
    p[tau] = 1.0
    return p


def uniform(lo: int, hi: int) -> np.ndarray:
    """τ uniform on the integers ``lo..hi`` (inclusive)."""
    lo, hi = int(lo), int(hi)
    if lo < 0 or hi < lo:
        raise InputError(f"uniform delay needs 0 <= lo <= hi, got {lo}..{hi}")
    p = np.zeros(hi + 1)
    p[lo:] = 1.0 / (hi - lo + 1)
    return p


def gaussian(mu: float) -> np.ndarray:
    """The paper's discretised Gaussian: σ = 1 on the support 1..2μ, renormalised."""
    mu = float(mu)
    if not mu >= 1:
        raise InputError(f"gaussian delay needs mu >= 1, got {mu}")
    k_max = int(round(2 * mu))
    k = np.arange(k_max + 1)
    p = np.exp(-0.5 * (k - mu) ** 2)
    p[0] = 0.0
    return p / p.sum()


def geometric(n: float, tail: float = 1e-12) -> np.ndarray:
    """p_k = (1/N)(1 − 1/N)^k — the staleness of A-SGD with N exponential workers —
    truncated where the remaining tail mass falls below ``tail`` and renormalised."""
    n = float(n)
    if not n >= 1:
        raise InputError(f"geometric delay needs N >= 1, got {n}")
    if n == 1:
        return np.ones(1)
    q = 1.0 - 1.0 / n
    k_max = int(math.ceil(math.log(tail) / math.log(q)))  # q^(k_max+1) < tail
    p = (1.0 / n) * q ** np.arange(k_max + 1)
    return p / p.sum()


def as_pmf(p, *, name: str = "pmf") -> np.ndarray:
    """Validate and normalise a pmf given as a sequence of non-negative weights."""
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{name} must be a non-empty 1-D array of probabilities")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or arr.sum() <= 0:
        raise InputError(f"{name} must hold finite, non-negative weights with a positive sum")
    arr = arr / arr.sum()
    nz = np.flatnonzero(arr)
    return arr[: nz[-1] + 1].copy()


def pmf_mean(p: np.ndarray) -> float:
    return float(np.dot(np.arange(len(p)), p))


_SPECS = {
    "constant": (constant, (int,), "constant:T"),
    "uniform": (uniform, (int, int), "uniform:LO:HI"),
    "gaussian": (gaussian, (float,), "gaussian:MU"),
    "geometric": (geometric, (float,), "geometric:N"),
}


def parse_pmf_spec(spec: str) -> np.ndarray:
    """``constant:T``, ``uniform:LO:HI``, ``gaussian:MU`` or ``geometric:N`` -> pmf.

    Also accepts an explicit list ``pmf:0.5,0.3,0.2``."""
    spec = spec.strip()
    name, _, rest = spec.partition(":")
    if name == "pmf":
        try:
            return as_pmf([float(x) for x in rest.split(",")], name="--pmf")
        except ValueError:
            raise InputError(f"--pmf {spec!r}: 'pmf:' takes comma-separated numbers") from None
    if name not in _SPECS:
        forms = ", ".join(v[2] for v in _SPECS.values())
        raise InputError(f"--pmf {spec!r}: unknown family {name!r} (use {forms}, or pmf:p0,p1,...)")
    fn, types, form = _SPECS[name]
    args = rest.split(":") if rest else []
    if len(args) != len(types):
        raise InputError(f"--pmf {spec!r}: expected {form}")
    try:
        values = [t(a) for t, a in zip(types, args)]
    except ValueError:
        raise InputError(f"--pmf {spec!r}: expected {form} with numbers") from None
    return fn(*values)
