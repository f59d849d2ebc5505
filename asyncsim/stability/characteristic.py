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
real value of α(θ). :func:`mean_alpha_star` finds a candidate from one FFT of the zero-padded pmf
(α(θ) on a grid of ≥ 16(K+2) points, fine enough to resolve z^{−K}), refines the sign changes of
Im α(θ) with Brent's method on P(e^{iθ}) evaluated directly, and then **certifies** it
(:func:`certify_no_crossing`): no θ ∈ (0, π] has α(θ) on the real segment (0, α_c(1 − 10⁻⁷)].

The certificate is a Lipschitz bound, not a sampled check. q(θ) = min_{α ∈ [0, ᾱ]} |D + αN| is
L-Lipschitz in θ with L = max|D'| + ᾱ max|N'| (N = (1−m)P, |P'| ≤ E[τ], so L = O(1 + ᾱE[τ])), so
a cell [a, b] with q(a) + q(b) > L(b − a) holds no crossing; cells that fail are halved, so the
grid is refined only near the places where the locus comes close to the segment. Near θ = 0
(where α(0) = 0 is the trivial root z = 1) S(θ) = Im(D conj N) has S(0) = 0, S'(0) = (1−m)² > 0 and
|S''| ≤ L₂ (bounded from the moments of p), so S > 0, hence α(θ) is not real, on (0, S'(0)/L₂].
A cell that cannot be certified down to width 10⁻¹³ is a genuine (near-)crossing: its α replaces
the candidate and the certificate is run again, so a crossing missed by the grid (two sign
changes in one cell, or a locus that only touches the real axis) is found, not reported as an
error. The result is certain up to floating-point rounding of D and N (~10⁻¹³).
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


#: the certificate covers (0, α*(1 − CERT_GAP)]: a second crossing closer than this to the one
#: found could only change α* by less than CERT_GAP relative
CERT_GAP = 1e-7


def grid_size(K: int, oversample: int = 16) -> int:
    """Points M of the unit-circle grid used for support K: a power of two ≥ oversample·(K+2)."""
    return 1 << max(12, int(math.ceil(math.log2(oversample * (int(K) + 2)))))


def memory_bytes(K: int, oversample: int = 16) -> int:
    """Peak memory of :func:`mean_alpha_star` at support K: ~10 complex arrays of the grid."""
    return int(10 * 16 * grid_size(K, oversample))


def mean_alpha_star(p: np.ndarray, optimizer: str = "sgd", momentum: float = 0.0, *,
                    oversample: int = 16, certify: bool = True, max_refine: int = 8) -> float:
    """α* of the mean criterion for the pmf ``p`` (exact to ~1e-12 relative; see module doc).

    The grid candidate is certified to be the *first* crossing by :func:`certify_no_crossing`;
    a crossing the grid missed is found by the certificate and replaces it. O(K log K) time for
    the grid plus O(K) per refined cell; memory :func:`memory_bytes`.
    """
    optimizer, m = check_optimizer(optimizer, momentum)
    p = np.asarray(p, dtype=float)
    K = p.size - 1
    M = grid_size(K, oversample)
    a = _mean_alpha_star_grid(p, optimizer, m, M, max_refine)
    if not certify:
        return a
    if not math.isfinite(a):
        a = _upper_bound(p, optimizer, m)
    for _round in range(64):
        try:
            found = certify_no_crossing(p, optimizer, m, a * (1.0 - CERT_GAP), M)
        except _OverBudget:
            return a  # see certify_no_crossing: the grid candidate, not proved first
        if found is None:
            return a
        a = found
    raise ArithmeticError(f"mean-criterion certificate did not settle (K = {K}, optimizer {optimizer})")


def _upper_bound(p: np.ndarray, optimizer: str, m: float) -> float:
    """A start for the certificate when the grid found no crossing: α(π) if real and positive."""
    v = complex(locus(math.pi, p, optimizer, m)[0])
    if math.isfinite(v.real) and v.real > 0:
        return v.real
    raise ArithmeticError("no crossing of the unit circle found for the mean criterion")


def _lipschitz(p: np.ndarray, optimizer: str, m: float, alpha_hi: float):
    """(L, S'(0), L₂, max|N''|): Lipschitz constant of q on [0, ᾱ], slope of S at 0, bound on
    |S''| and on |N''|, for the (D, N) pair of :func:`_cert_dn`."""
    k = np.arange(p.size, dtype=float)
    e1 = float(p @ k)
    e2 = float(p @ k ** 2)
    if optimizer == "shifted":
        # D = z − 1, N = (1−m) u/v with u = P, v = 1 − m P/z (|v| ≥ 1 − m): bounds on |N|, |N'|, |N''|
        v0, v1, v2 = 1.0 - m, m * (e1 + 1.0), m * (e2 + 2.0 * e1 + 1.0)
        n0 = 1.0
        n1 = (1.0 - m) * (e1 / v0 + v1 / v0 ** 2)
        n2 = (1.0 - m) * (e2 / v0 + 2.0 * e1 * v1 / v0 ** 2 + v2 / v0 ** 2 + 2.0 * v1 ** 2 / v0 ** 3)
        d0, d1, d2, s1 = 2.0, 1.0, 1.0, 1.0
    else:
        n0, n1, n2 = 1.0 - m, (1.0 - m) * e1, (1.0 - m) * e2     # max |N|, |N'|, |N''|
        if optimizer == "sgd":
            d0, d1, d2 = 2.0, 1.0, 1.0
        else:
            d0, d1, d2 = 2.0 * (1.0 + m), 1.0 + m, 1.0 + m
        s1 = (1.0 - m) ** 2
    L = d1 + alpha_hi * n1
    L2 = d2 * n0 + 2.0 * d1 * n1 + d0 * n2
    return L, s1, L2, n2


def _cert_dn(z: np.ndarray, P: np.ndarray, optimizer: str, m: float):
    """The (D, N) pair the certificate works with: h = D + αN up to a factor that never vanishes.
    For shifted momentum D = (z − 1)(1 − mP/z) varies as fast as P; dividing h by 1 − mP/z
    (|mP/z| ≤ m < 1) leaves D = z − 1, with a Lipschitz constant of O(1) instead of O(m E[τ])."""
    if optimizer == "shifted":
        return z - 1.0, (1.0 - m) * P / (1.0 - m * P / z)
    return _d_of_z(z, P, optimizer, m), (1.0 - m) * P


def _q_of(D: np.ndarray, N: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """q = min over α ∈ [lo, hi] of |D + αN| (the distance of the locus −D/N to the segment, ×|N|)."""
    nn = N.real ** 2 + N.imag ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.minimum(np.maximum(-(D.real * N.real + D.imag * N.imag) / nn, lo), hi)
    t = np.where(nn > 0, t, lo)
    return np.abs(D + t * N)


def _cert_dn1(z: np.ndarray, P: np.ndarray, P1: np.ndarray, optimizer: str, m: float):
    """(D, N, |D'|, |N'|) of :func:`_cert_dn` with P1 = dP/dθ, for the local Lipschitz bound."""
    D, N = _cert_dn(z, P, optimizer, m)
    if optimizer == "shifted":
        v = 1.0 - m * P / z
        dv = -m * (P1 - 1j * P) / z
        dN = (1.0 - m) * (P1 * v - P * dv) / v ** 2
        dD = np.ones(z.shape)
    else:
        dN = (1.0 - m) * P1
        dD = np.abs(1j * z - 1j * m / z) if optimizer == "momentum" else np.ones(z.shape)
    return D, N, dD, np.abs(dN)


def _dn(theta: np.ndarray, p: np.ndarray, optimizer: str, m: float, chunk: int = 1 << 21):
    """:func:`_cert_dn1` at θ, P and P' evaluated directly (O(K) per θ, chunked)."""
    k = np.arange(p.size)
    P = np.empty(theta.size, dtype=complex)
    P1 = np.empty(theta.size, dtype=complex)
    step = max(1, chunk // max(p.size, 1))
    for i in range(0, theta.size, step):
        E = np.exp(-1j * np.outer(theta[i:i + step], k))
        P[i:i + step] = E @ p
        P1[i:i + step] = -1j * (E @ (k * p))
    return _cert_dn1(np.exp(1j * theta), P, P1, optimizer, m)


def _grid1(p: np.ndarray, M: int):
    """θ, z, P and P' = dP/dθ on the M-point grid (two FFTs)."""
    theta, z, P = _grid(p, M)
    P1 = -1j * np.fft.fft(np.arange(p.size) * p, M)
    return theta, z, P, P1


def _refine_at(p: np.ndarray, optimizer: str, m: float, theta: float, fallback: float) -> float:
    """The crossing α near θ: Brent on Im α(θ) in the smallest bracket around θ with a sign change."""
    g = lambda t: float(locus(t, p, optimizer, m)[0].imag)  # noqa: E731
    for h in (1e-13, 1e-11, 1e-9, 1e-7, 1e-5):
        ta, tb = max(theta - h, 0.0), min(theta + h, math.pi)
        ga, gb = g(ta), g(tb)
        if np.isfinite(ga) and np.isfinite(gb) and ga * gb < 0:
            t = brentq(g, ta, tb, xtol=1e-16, rtol=4 * np.finfo(float).eps, maxiter=200)
            v = complex(locus(t, p, optimizer, m)[0])
            if math.isfinite(v.real) and v.real > 0 and abs(v.imag) <= 1e-7 * abs(v):
                return min(v.real, fallback) if abs(v.real - fallback) < 1e-6 * fallback else v.real
    return fallback


class _OverBudget(Exception):
    """The certificate would need more than its budget of evaluations."""


def certify_no_crossing(p: np.ndarray, optimizer: str, m: float, alpha_hi: float, M: int,
                        w_min: float = 1e-13, max_cells: int = 1 << 18,
                        fft_cap: int = 1 << 23, budget: float = 3e8) -> float | None:
    """``None`` if no θ ∈ (0, π] has the locus α(θ) on the real segment (0, ``alpha_hi``]
    (proved by the Lipschitz bound of the module doc); otherwise the α of a crossing found below
    ``alpha_hi``/(1 − CERT_GAP), to be used as the new candidate.

    Work is capped at ``budget`` operations (point evaluations × support): the bound
    max|N''| ≤ E[τ²] makes cells tiny where ᾱ·E[τ²] is huge (geometric delays with N ≳ 100 give
    α* = 4N − 2 and E[τ²] ≈ 2N²); past the cap :class:`_OverBudget` is raised and
    :func:`mean_alpha_star` returns the grid candidate unproved (it is exact in every case the
    tests compare against numpy.roots)."""
    p = np.asarray(p, dtype=float)
    L, s1, L2, n2 = _lipschitz(p, optimizer, m, alpha_hi)
    theta0 = s1 / L2 if L2 > 0 else math.pi  # S > 0 on (0, theta0]: no real α there
    tol = 1e-14 * (2.0 + alpha_hi)  # rounding of D + αN (|D| = O(1), |N| ≤ 1)
    # α ladder for cells where the whole segment fails: on [A_{i−1}, A_i] the slope bound is
    # |D'| + A_i|N'|, far smaller than ᾱ|N'| where the locus sits at small α (near θ = 0)
    ladder = alpha_hi * np.concatenate([[0.0], np.geomspace(2.0 ** -40, 1.0, 41)])
    half = M // 2
    theta, z, P, P1 = _grid1(p, M)
    sl = slice(0, half + 1)
    pts = _cert_dn1(z[sl], P[sl], P1[sl], optimizer, m)  # D, N, |D'|, |N'| at the grid points
    theta = theta[sl]
    del z, P, P1

    def ok(w, ea, eb):
        """Cells (width w, endpoint values ea, eb) proved free of crossings with α ∈ (0, ᾱ]."""
        Da, Na, dDa, dNa = ea
        Db, Nb, dDb, dNb = eb
        dN = np.minimum(dNa, dNb) + n2 * w / 2.0
        dD = np.minimum(dDa, dDb)
        Lc = np.minimum(dD + alpha_hi * dN, L)
        res = _q_of(Da, Na, 0.0, alpha_hi) + _q_of(Db, Nb, 0.0, alpha_hi) > Lc * w + 2 * tol
        idx = np.flatnonzero(~res)
        if idx.size:
            lo_, hi_ = ladder[None, :-1], ladder[None, 1:]  # all rungs at once: (cells, rungs)
            Lc = np.minimum(dD[idx, None] + hi_ * dN[idx, None], L)
            qs = (_q_of(Da[idx, None], Na[idx, None], lo_, hi_)
                  + _q_of(Db[idx, None], Nb[idx, None], lo_, hi_))
            res[idx] = np.all(qs > Lc * w[idx, None] + 2 * tol, axis=1)
        return res

    a, b = theta[:-1], theta[1:]
    ea = tuple(x[:-1] for x in pts)
    eb = tuple(x[1:] for x in pts)
    best = None
    work = 0.0
    for _depth in range(80):
        bad = ~ok(b - a, ea, eb) & (b > theta0)
        if not bad.any():
            return best
        a, b = a[bad], b[bad]
        ea, eb = tuple(x[bad] for x in ea), tuple(x[bad] for x in eb)
        if a.size > max_cells:
            # the locus grazes the real axis (a tangency makes cells shrink without end): as for
            # the work budget, the grid candidate is returned unproved
            raise _OverBudget(f"more than {max_cells} cells")
        small = (b - a) < w_min
        if small.any():
            # cells at the resolution limit: a crossing if the locus is real and in (0, ᾱ] there
            mid = 0.5 * (a[small] + b[small])
            Dm, Nm = _dn(mid, p, optimizer, m)[:2]
            with np.errstate(divide="ignore", invalid="ignore"):
                v = -Dm / Nm
            good = np.isfinite(v) & (v.real > 0) & (v.real < alpha_hi) & (np.abs(v.imag) <= 1e-7 * np.abs(v))
            if good.any():
                j = int(np.argmin(np.where(good, v.real, np.inf)))
                cand = _refine_at(p, optimizer, m, float(mid[j]), float(v.real[j]))
                best = cand if best is None else min(best, cand)
            keep = ~small
            a, b = a[keep], b[keep]
            ea, eb = tuple(x[keep] for x in ea), tuple(x[keep] for x in eb)
            if best is not None:
                return best
            if a.size == 0:
                return None
        mid = 0.5 * (a + b)
        work += mid.size * p.size
        if work > budget:
            raise _OverBudget
        Mf = M << (_depth + 1)  # the midpoints of depth-d cells lie on this grid
        if a.size * p.size > 4 * Mf * math.log2(Mf) and Mf <= fft_cap:
            # many cells to refine: one FFT of the finer grid is cheaper than direct sums
            _t, zf, Pf, P1f = _grid1(p, Mf)
            j = np.rint(mid * Mf / (2.0 * np.pi)).astype(np.int64)
            em = _cert_dn1(zf[j], Pf[j], P1f[j], optimizer, m)
            del _t, zf, Pf, P1f
        else:
            em = _dn(mid, p, optimizer, m)
        a, b = np.concatenate([a, mid]), np.concatenate([mid, b])
        ea = tuple(np.concatenate([x, y]) for x, y in zip(ea, em))
        eb = tuple(np.concatenate([y, x]) for x, y in zip(eb, em))
    raise ArithmeticError("mean-criterion certificate did not converge")


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
    # θ = π is real by symmetry unless P(−1) = 0 (a pole: rounding leaves a huge imaginary part)
    if math.isfinite(v.real) and v.real > 0 and abs(v.imag) <= 1e-7 * max(1.0, abs(v.real)):
        best = min(best, v.real)
    return best
