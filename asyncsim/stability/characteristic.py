"""Characteristic equations of the mean (first-moment) dynamics and the boundary-locus solver.

Taking expectations over i.i.d. delays τ ~ p of the linearised update x_{t+1} = x_t − α x_{t−τ_t}
gives a linear recursion for E[x_t] whose characteristic equation (Giladi et al., ICLR 2020,
eq. 5 for SGD, eq. 9-10 for momentum) is

* ``sgd``:      z − 1 + α P(z) = 0
* ``momentum``: z − (1+m) + m/z + α(1−m) P(z) = 0            (momentum with dampening)
* ``shifted``:  z − 1 − P(z)(m − m/z − α(1−m)) = 0             (each worker keeps its velocity)

with P(z) = Σ_k p_k z^{−k}. Each is linear in α: h(z; α) = D(z) + α(1−m)P(z) = 0, so on the unit
circle z = e^{iθ} the α at which a root sits exactly on the circle is the *boundary locus*
α(θ) = −D(z) / ((1−m) P(z)); it is a crossing when α(θ) is real and positive.

Why the smallest such α is α*: multiplied by z^{K+1}, h is a polynomial of degree K+2 (K+1 for
SGD) whose roots at α = 0 are z = 1 (and z = m) and z = 0; for small α > 0 the root at 1 moves
inside (z ≈ 1 − α/(1+E[τ]) to first order) and the others stay near 0, so all roots are inside.
Roots move continuously with α, so the first α > 0 with a root on |z| = 1 is the smallest positive
real value of α(θ). :func:`mean_alpha_star` finds it from one FFT of the zero-padded pmf (α(θ) on
a grid of ≥ 16(K+2) points, fine enough to resolve z^{−K}), refines the sign changes of Im α(θ)
with Brent's method on P(e^{iθ}) evaluated directly, and verifies with the argument principle
that no root has left the disc before α* (see :func:`mean_alpha_star`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq

from ..errors import InputError

OPTIMIZERS = ("sgd", "momentum", "shifted")


def check_optimizer(optimizer: str, momentum: float) -> tuple[str, float]:
    """Validate the optimizer name and momentum (0 <= m < 1)."""
    if optimizer not in OPTIMIZERS:
        raise InputError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    try:
        m = float(momentum)
    except (TypeError, ValueError):
        raise InputError(f"Invalid momentum value: {momentum!r}") from None
    if not (0.0 <= m < 1.0):
        raise InputError(f"Invalid momentum value: {momentum} (need 0 <= m < 1)")
    if optimizer == "sgd" and m != 0.0:
        raise InputError("momentum > 0 needs optimizer 'momentum' or 'shifted'")
    return optimizer, m


def _d_of_z(z: np.ndarray, P: np.ndarray, optimizer: str, m: float) -> np.ndarray:
    """The α-free part D(z) of h(z; α) = D(z) + α(1−m)P(z)."""
    if optimizer == "sgd":
        return z - 1.0
    if optimizer == "momentum":
        return z - (1.0 + m) + m / z
    return z - 1.0 - P * (m - m / z)


def locus(theta, p: np.ndarray, optimizer: str = "sgd", m: float = 0.0) -> np.ndarray:
    """α(θ) = −D(e^{iθ}) / ((1−m) P(e^{iθ})), P evaluated directly (O(K) per θ)."""
    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    k = np.arange(p.size)
    P = np.exp(-1j * np.outer(theta, k)) @ p
    z = np.exp(1j * theta)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -_d_of_z(z, P, optimizer, m) / ((1.0 - m) * P)


def _grid(p: np.ndarray, M: int):
    """z and P(z) on the M-point unit-circle grid θ_j = 2πj/M (numpy's FFT is Σ p_k e^{−2πijk/M})."""
    P = np.fft.fft(p, M)
    theta = 2.0 * np.pi * np.arange(M) / M
    return theta, np.exp(1j * theta), P


def winding_number(p: np.ndarray, alpha: float, optimizer: str, m: float, M: int,
                   radius: float = 1.0) -> int:
    """Winding number of h(z; α) around 0 along |z| = ``radius`` (M-point grid): by the argument
    principle, the number of roots of z^{K+1} h(z) inside the circle minus the K+1 poles at 0
    (so 1 when every root is inside)."""
    p = np.asarray(p, dtype=float)
    theta = 2.0 * np.pi * np.arange(M) / M
    z = radius * np.exp(1j * theta)
    P = np.fft.fft(p * radius ** -np.arange(p.size, dtype=float), M)  # P(r e^{iθ}) = Σ p_k r^{-k} e^{-ikθ}
    h = _d_of_z(z, P, optimizer, m) + alpha * (1.0 - m) * P
    dphi = np.angle(np.roll(h, -1) / h)
    return int(round(dphi.sum() / (2.0 * np.pi)))


def mean_alpha_star(p: np.ndarray, optimizer: str = "sgd", momentum: float = 0.0, *,
                    oversample: int = 16, verify: bool = True, max_refine: int = 8) -> float:
    """α* of the mean criterion for the pmf ``p`` (exact to ~1e-12 relative; see module doc).

    ``verify`` checks the answer is the *first* crossing: at α* exactly one root sits on the
    unit circle, and the winding number along |z| = 1 + η (η = 16 grid spacings, so the root on
    the circle is resolved) must be 1, i.e. no root has already left the disc.
    """
    optimizer, m = check_optimizer(optimizer, momentum)
    p = np.asarray(p, dtype=float)
    K = p.size - 1
    M = 1 << max(12, int(math.ceil(math.log2(oversample * (K + 2)))))
    for _attempt in range(3):
        a = _mean_alpha_star_grid(p, optimizer, m, M, max_refine)
        if not verify or not math.isfinite(a):
            return a
        eta = 16 * 2.0 * np.pi / M
        if winding_number(p, a, optimizer, m, M, radius=1.0 + eta) == 1:
            return a
        M *= 4  # a crossing fell between grid points: resolve finer and retry
    raise ArithmeticError(f"mean-criterion α* could not be verified (K = {K}, optimizer {optimizer})")


def _mean_alpha_star_grid(p: np.ndarray, optimizer: str, m: float, M: int, max_refine: int) -> float:
    theta, z, P = _grid(p, M)
    half = M // 2
    theta, z, P = theta[: half + 1], z[: half + 1], P[: half + 1]  # conjugate symmetry: θ ∈ [0, π]
    with np.errstate(divide="ignore", invalid="ignore"):
        al = -_d_of_z(z, P, optimizer, m) / ((1.0 - m) * P)
    im, re = al.imag, al.real
    cands: list[tuple[float, float, float]] = []  # (estimate, θ_a, θ_b)
    # interior sign changes of Im α(θ) on (0, π): θ = 0 is the trivial root z = 1 at α = 0 and
    # θ = π is real by symmetry, both handled apart
    f = im[1:half]
    ok = np.isfinite(f)
    s = np.sign(f)
    idx = np.flatnonzero(ok[:-1] & ok[1:] & (s[:-1] * s[1:] <= 0) & (s[:-1] != 0)) + 1
    if idx.size:
        fa, fb = im[idx], im[idx + 1]
        w = fa / (fa - fb)
        est = re[idx] + w * (re[idx + 1] - re[idx])
        good = np.isfinite(est) & (est > 0)
        order = np.argsort(est[good])[: max_refine]
        for j in np.flatnonzero(good)[order]:
            cands.append((float(est[j]), float(theta[idx[j]]), float(theta[idx[j] + 1])))
    best = math.inf
    for est, ta, tb in sorted(cands):
        if est > 2.0 * best:
            break
        g = lambda t: float(locus(t, p, optimizer, m)[0].imag)  # noqa: E731
        ga, gb = g(ta), g(tb)
        if ga == 0.0:
            t = ta
        elif gb == 0.0:
            t = tb
        elif ga * gb > 0:
            continue  # the grid's sign change was rounding noise
        else:
            t = brentq(g, ta, tb, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=200)
        v = complex(locus(t, p, optimizer, m)[0])
        # a sign change through a pole of α(θ) (P = 0) is not a crossing
        if math.isfinite(v.real) and v.real > 0 and abs(v.imag) <= 1e-7 * max(1.0, abs(v)):
            best = min(best, v.real)
    v = complex(locus(math.pi, p, optimizer, m)[0])
    if math.isfinite(v.real) and v.real > 0:
        best = min(best, v.real)
    return best
