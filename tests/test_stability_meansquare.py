"""Mean-square criterion against the explicit Kronecker-product second-moment operator."""

import numpy as np
import pytest

from asyncsim.stability import families
from asyncsim.stability import alpha_star as public_alpha_star
from asyncsim.stability.characteristic import mean_alpha_star
from asyncsim.stability.meansquare import build_model, mean_square_alpha_star

OPTS = [("sgd", 0.0), ("momentum", 0.5), ("shifted", 0.5), ("shifted", 0.9)]


def _random_pmf(K, seed):
    rng = np.random.default_rng(seed)
    p = rng.random(K + 1)
    return p / p.sum()


# ---------------------------------------------------------------- brute-force reference
def dense_A(p, alpha, optimizer, m):
    """A_k written out from the recursions with velocities kept explicitly (not eliminated):
    sgd s = (x_t..x_{t−K}); momentum s = (v_t, x_t..x_{t−K}); shifted s = (x_t..x_{t−K}, v_t..v_{t−K})."""
    K = len(p) - 1
    As = []
    for k in range(K + 1):
        if optimizer == "sgd":
            A = np.zeros((K + 1, K + 1))
            A[0, 0] += 1.0
            A[0, k] -= alpha
            A[np.arange(1, K + 1), np.arange(K)] = 1.0
        elif optimizer == "momentum":
            n = K + 2
            A = np.zeros((n, n))
            A[0, 0] = m                      # v' = m v − α(1−m) x_{t−k}
            A[0, 1 + k] -= alpha * (1 - m)
            A[1] = A[0]                      # x' = x_t + v'
            A[1, 1] += 1.0
            A[np.arange(2, n), np.arange(1, n - 1)] = 1.0
        else:
            n = 2 * (K + 1)
            A = np.zeros((n, n))
            v0 = K + 1                       # v' = m v_{t−k} − α(1−m) x_{t−k}
            A[v0, v0 + k] = m
            A[v0, k] -= alpha * (1 - m)
            A[0] = A[v0]                     # x' = x_t + v'
            A[0, 0] += 1.0
            A[np.arange(1, K + 1), np.arange(K)] = 1.0
            A[np.arange(v0 + 1, n), np.arange(v0, n - 1)] = 1.0
        As.append(A)
    return As


def kron_radius(p, alpha, optimizer, m):
    As = dense_A(p, alpha, optimizer, m)
    op = sum(pk * np.kron(A, A) for pk, A in zip(p, As))
    return np.abs(np.linalg.eigvals(op)).max()


def brute_ms_alpha_star(p, optimizer, m):
    a_prev, a = 0.0, 1e-2  # scan upward in 4% steps to the first unstable α, then bisect
    while kron_radius(p, a, optimizer, m) < 1.0:
        a_prev, a = a, a * 1.04
    lo, hi = a_prev, a
    while hi - lo > 1e-10 * hi:
        mid = 0.5 * (lo + hi)
        if kron_radius(p, mid, optimizer, m) < 1.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------------------- tests
@pytest.mark.parametrize("optimizer,m", OPTS)
def test_fast_operator_matches_kronecker(optimizer, m):
    rng = np.random.default_rng(3)
    p = _random_pmf(5, 4)
    model = build_model(p, optimizer, m)
    alpha = 0.37
    op = sum(pk * np.kron(model.A(k, alpha), model.A(k, alpha)) for k, pk in enumerate(p))
    M = rng.standard_normal((model.n, model.n))
    assert np.allclose(model.apply(M, alpha).ravel(), op @ M.ravel(), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("optimizer,m", OPTS)
@pytest.mark.parametrize("pmf", ["uniform0-4", "random4", "geometric-short"])
def test_alpha_star_matches_kronecker_bisection(optimizer, m, pmf):
    p = {"uniform0-4": families.uniform(0, 4), "random4": _random_pmf(4, 7),
         "geometric-short": np.array([0.5, 0.25, 0.125, 0.125])}[pmf]
    # the reference keeps the velocities in the state (a different, larger operator)
    ref = brute_ms_alpha_star(p, optimizer, m)
    assert mean_square_alpha_star(p, optimizer, m) == pytest.approx(ref, rel=1e-8)


@pytest.mark.parametrize("optimizer,m", OPTS)
@pytest.mark.parametrize("tau", [0, 1, 3, 8, 20])
def test_constant_delay_equals_mean(optimizer, m, tau):
    p = families.constant(tau)
    assert mean_square_alpha_star(p, optimizer, m) == pytest.approx(mean_alpha_star(p, optimizer, m), rel=1e-8)


@pytest.mark.parametrize("optimizer,m", OPTS)
def test_never_above_mean(optimizer, m):
    pmfs = [families.uniform(0, 10), families.uniform(5, 9), families.gaussian(6), families.geometric(4),
            _random_pmf(20, 1), _random_pmf(40, 2)]
    for p in pmfs:
        ms = mean_square_alpha_star(p, optimizer, m)
        assert 0 < ms <= mean_alpha_star(p, optimizer, m) * (1 + 1e-9)


def test_public_api_agrees():
    for p in (families.uniform(0, 6), families.geometric(4)):
        for optimizer, m in OPTS:
            assert public_alpha_star(p, criterion="mean-square", optimizer=optimizer, momentum=m) == \
                pytest.approx(mean_square_alpha_star(p, optimizer, m), rel=1e-6)
