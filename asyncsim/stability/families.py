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
    _check_support(tau, f"constant:{tau}")
    p = np.zeros(tau + 1)
    p[tau] = 1.0
    return p


def uniform(lo: int, hi: int) -> np.ndarray:
    """τ uniform on the integers ``lo..hi`` (inclusive)."""
    lo, hi = int(lo), int(hi)
    if lo < 0 or hi < lo:
        raise InputError(f"uniform delay needs 0 <= lo <= hi, got {lo}..{hi}")
    _check_support(hi, f"uniform:{lo}:{hi}")
    p = np.zeros(hi + 1)
    p[lo:] = 1.0 / (hi - lo + 1)
    return p


#: largest support K a named pmf may have (8·10⁶ floats = 64 MB; the mean criterion's grid
#: is 16 K points): beyond it a spec is refused with the memory it would take
MAX_SUPPORT = 8_000_000


def _check_support(k_max: float, what: str) -> int:
    if not math.isfinite(k_max) or k_max > MAX_SUPPORT:
        need = "unbounded" if not math.isfinite(k_max) else f"{16 * 16 * (k_max + 2) / 2**30:.3g} GiB"
        raise InputError(f"{what}: support up to τ = {k_max:.4g} is too large (the analysis would need "
                         f"{need}; limit τ <= {MAX_SUPPORT:,})")
    return int(k_max)


def gaussian(mu: float, sigma: float = 1.0) -> np.ndarray:
    """The paper's discretised Gaussian: Pr(τ = k) = Pr(k − ½ ≤ z ≤ k + ½), z ~ N(μ, σ²), on
    k = 1..round(2μ), renormalised (Giladi et al. 2020 use σ = 1; the authors' ``normal``
    schedule has σ ≈ N/4)."""
    from scipy.special import ndtr

    mu, sigma = float(mu), float(sigma)
    if not (math.isfinite(mu) and mu >= 1):
        raise InputError(f"gaussian delay needs a finite mu >= 1, got {mu}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise InputError(f"gaussian delay needs a finite sigma > 0, got {sigma}")
    k_max = _check_support(round(2 * mu), f"gaussian:{mu:g}")
    k = np.arange(k_max + 1, dtype=float)
    # interval masses from the side of the mean where they do not cancel (upper tail via ndtr(−x))
    lo, hi = (k - 0.5 - mu) / sigma, (k + 0.5 - mu) / sigma
    p = np.where(hi <= 0, ndtr(hi) - ndtr(lo), ndtr(-lo) - ndtr(-hi))
    p[0] = 0.0
    if not p.sum() > 0:
        raise InputError(f"gaussian:{mu:g}:{sigma:g} puts no probability on 1..{k_max}")
    return p / p.sum()


def geometric(n: float, tail: float = 1e-12) -> np.ndarray:
    """p_k = (1/N)(1 − 1/N)^k — the staleness of A-SGD with N exponential workers —
    truncated where the remaining tail mass falls below ``tail`` and renormalised."""
    n = float(n)
    if not (math.isfinite(n) and n >= 1):
        raise InputError(f"geometric delay needs a finite N >= 1, got {n}")
    if n == 1:
        return np.ones(1)
    q = 1.0 - 1.0 / n
    k_max = _check_support(math.ceil(math.log(tail) / math.log1p(-1.0 / n)), f"geometric:{n:g}")
    p = (1.0 / n) * q ** np.arange(k_max + 1)
    return p / p.sum()


def as_pmf(p, *, name: str = "pmf") -> np.ndarray:
    """Validate and normalise a pmf given as a sequence of non-negative weights."""
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{name} must be a non-empty 1-D array of probabilities")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or not arr.max() > 0:
        raise InputError(f"{name} must hold finite, non-negative weights with a positive sum")
    arr = arr / arr.max()  # first by the largest, so weights near 1e308 do not overflow the sum
    arr = arr / arr.sum()
    nz = np.flatnonzero(arr)
    return arr[: nz[-1] + 1].copy()


def pmf_mean(p: np.ndarray) -> float:
    return float(np.dot(np.arange(len(p)), p))


_SPECS = {
    "constant": (constant, (int,), "constant:T"),
    "uniform": (uniform, (int, int), "uniform:LO:HI"),
    "gaussian": (gaussian, (float, float), "gaussian:MU[:SIGMA]"),
    "geometric": (geometric, (float,), "geometric:N"),
}


def parse_pmf_spec(spec: str) -> np.ndarray:
    """``constant:T``, ``uniform:LO:HI``, ``gaussian:MU[:SIGMA]`` or ``geometric:N`` -> pmf.

    Also accepts an explicit list ``pmf:0.5,0.3,0.2``."""
    spec = spec.strip()
    name, _, rest = spec.partition(":")
    if name == "pmf":
        try:
            items = rest.split(",")
            _check_support(len(items) - 1, "--pmf pmf:...")
            return as_pmf([float(x) for x in items], name="--pmf")
        except ValueError:
            raise InputError(f"--pmf {spec!r}: 'pmf:' takes comma-separated numbers") from None
    if name not in _SPECS:
        forms = ", ".join(v[2] for v in _SPECS.values())
        raise InputError(f"--pmf {spec!r}: unknown family {name!r} (use {forms}, or pmf:p0,p1,...)")
    fn, types, form = _SPECS[name]
    args = rest.split(":") if rest else []
    if name == "gaussian" and len(args) == 1:
        types = types[:1]
    if len(args) != len(types):
        raise InputError(f"--pmf {spec!r}: expected {form}")
    try:
        values = [t(a) for t, a in zip(types, args)]
    except (ValueError, OverflowError):
        raise InputError(f"--pmf {spec!r}: expected {form} with numbers") from None
    return fn(*values)
