"""Mean criterion on every pmf (certified first crossing) and the O(K²) mean-square solver.

References: numpy.roots of the characteristic polynomial (scan + bisection, as in
benchmarks/bench_stability.py), a batched Schur–Cohn test written here (it decides whether every
root is inside the unit disc without computing the roots), the dense 2K × 2K eigenproblem, and
ρ(Φ) of the second-moment operator by Arnoldi at large K.
"""

import numpy as np
import pytest

from asyncsim.stability import families
from asyncsim.stability.characteristic import mean_alpha_star
from asyncsim.stability.meansquare import (build_model, mean_square_alpha_star, mean_square_alpha_star_dense,
                                           spectral_radius_arnoldi)


def sgd_poly(p, alpha):
    """z^{K+1} − z^K + α Σ_k p_k z^{K−k}, highest power first; rows for each α."""
    alpha = np.atleast_1d(alpha)
    K = p.shape[-1] - 1
    c = np.zeros(alpha.shape + (K + 2,))
    c[..., 0] = 1.0
    c[..., 1] = -1.0
    c[..., 1:] += alpha[..., None] * p
    return c


def schur_cohn_stable(c):
    """All roots strictly inside |z| = 1, for each row of coefficients (Jury's reduction)."""
    c = np.array(c, dtype=float)
    ok = np.ones(c.shape[:-1], dtype=bool)
    for k in range(c.shape[-1] - 1, 0, -1):
        kap = c[..., k] / c[..., 0]
        ok &= np.abs(kap) < 1.0
        rev = c[..., k::-1][..., :k].copy()
        c = c[..., :k] - kap[..., None] * rev
    return ok & (c[..., 0] > 0)


def roots_bisection(p):
    K = p.size - 1

    def unstable(a):
        return np.abs(np.roots(sgd_poly(p, a)[0])).max() >= 1.0

    lo, hi = 0.0, 1e-4
    while not unstable(hi):
        lo, hi = hi, hi * 1.25
    while hi - lo > 1e-11 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if unstable(mid) else (mid, hi)
    return 0.5 * (lo + hi)


def _check_first_crossing(pmfs, alphas, rel=1e-6):
    """Stable on a grid below α*(1 − rel) (so no earlier crossing on it), unstable at α*(1 + rel)."""
    K = max(p.size for p in pmfs) - 1
    P = np.zeros((len(pmfs), K + 1))
    for i, p in enumerate(pmfs):
        P[i, : p.size] = p  # trailing zeros: extra roots at 0, harmless
    a = np.asarray(alphas)
    grid = a[:, None] * np.concatenate([np.geomspace(1e-3, 0.99, 24), [1 - rel]])[None, :]
    below = schur_cohn_stable(sgd_poly(P[:, None, :], grid))
    above = schur_cohn_stable(sgd_poly(P, a * (1 + rel)))
    return below.all(axis=1), ~above


def _uniform_pairs(full):
    his = range(129) if full else [h for h in range(129) if h <= 24 or h in (64, 127, 128)]
    return [(lo, hi) for hi in his for lo in range(hi + 1)]


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.soak)])
def test_uniform_scan_certified(full):
    pairs = _uniform_pairs(full)
    pmfs = [families.uniform(lo, hi) for lo, hi in pairs]
    alphas = [mean_alpha_star(p) for p in pmfs]
    stable_below, unstable_above = _check_first_crossing(pmfs, alphas)
    bad = [(pairs[i], alphas[i]) for i in np.flatnonzero(~(stable_below & unstable_above))]
    assert not bad, bad[:5]
    # numpy.roots on a sample of them, by scan + bisection
    for i in range(0, len(pairs), 97):
        assert alphas[i] == pytest.approx(roots_bisection(pmfs[i]), rel=1e-8), pairs[i]


def test_uniform_1_14_is_the_issue_value():
    assert mean_alpha_star(families.uniform(1, 14)) == pytest.approx(0.274276, abs=5e-7)


def test_random_pmfs_against_roots():
    rng = np.random.default_rng(15)
    pmfs = []
    for i in range(150):
        K = int(rng.integers(0, 65))
        p = rng.random(K + 1) ** rng.choice([1, 4])
        p[rng.random(K + 1) < rng.choice([0.0, 0.5, 0.9])] = 0.0
        p[-1] = max(p[-1], 1e-3)
        pmfs.append(p / p.sum())
    alphas = [mean_alpha_star(p) for p in pmfs]
    stable_below, unstable_above = _check_first_crossing(pmfs, alphas)
    assert stable_below.all() and unstable_above.all()
    for i in range(0, 150, 10):
        assert alphas[i] == pytest.approx(roots_bisection(pmfs[i]), rel=1e-8)


# ----------------------------------------------------------------- mean-square, O(K²) vs dense
OPTS = [("sgd", 0.0), ("momentum", 0.5), ("shifted", 0.5), ("shifted", 0.9)]


@pytest.mark.parametrize("optimizer,m", OPTS)
def test_fast_mean_square_matches_dense(optimizer, m):
    rng = np.random.default_rng(2)
    for K in (1, 2, 5, 17, 60, 200):
        p = rng.random(K + 1) ** 2
        p /= p.sum()
        assert mean_square_alpha_star(p, optimizer, m) == pytest.approx(
            mean_square_alpha_star_dense(p, optimizer, m), rel=1e-8), K
    for p in (families.uniform(0, 30), families.uniform(7, 9), families.geometric(8, tail=1e-9),
              families.gaussian(12, 3)):
        assert mean_square_alpha_star(p, optimizer, m) == pytest.approx(
            mean_square_alpha_star_dense(p, optimizer, m), rel=1e-8)


def test_geometric_mean_square_far_below_mean():
    p = families.geometric(8)
    ms = mean_square_alpha_star(p)
    assert ms == pytest.approx(mean_square_alpha_star_dense(p), rel=1e-8)
    assert ms < mean_alpha_star(p) / 10


def test_large_K_against_arnoldi():
    """K = 150: ρ(Φ) by Arnoldi on the 151² state, Φ applied in O(K²), brackets 1 at α*."""
    rng = np.random.default_rng(9)
    p = rng.random(151)
    p /= p.sum()
    a = mean_square_alpha_star(p)
    model = build_model(p)
    lo = spectral_radius_arnoldi(model, a * (1 - 1e-4))
    hi = spectral_radius_arnoldi(model, a * (1 + 1e-4))
    assert lo < 1.0 < hi
    assert abs(lo - 1.0) < 1e-3 and abs(hi - 1.0) < 1e-3


@pytest.mark.parametrize("optimizer,m", [("sgd", 0.0), ("momentum", 0.5), ("shifted", 0.5)])
def test_mean_square_against_second_moment_growth(optimizer, m):
    """Independent of both the noise loop and the Toeplitz reduction: Φ^t(I) applied by its
    definition, O(K²) a step. Its log-growth per step must change sign across α*: negative at
    α*(1 − 1e-2), positive at α*(1 + 1e-2), in both averaging windows (log ρ ≈ ∓1e-4). K = 80."""
    from asyncsim.stability.meansquare import second_moment_growth

    rng = np.random.default_rng(21)
    p = rng.random(81)
    p /= p.sum()
    a = mean_square_alpha_star(p, optimizer, m)
    model = build_model(p, optimizer, m)
    below = second_moment_growth(model, a * (1 - 1e-2), iters=4000)
    above = second_moment_growth(model, a * (1 + 1e-2), iters=4000)
    assert max(below) < 0 < min(above), (below, above)
