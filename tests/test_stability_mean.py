"""Mean (first-moment) criterion against closed forms and a brute-force numpy.roots reference."""

import math

import numpy as np
import pytest

from asyncsim.errors import InputError
from asyncsim.stability import families, lr_rules
from asyncsim.stability import alpha_star as public_alpha_star
from asyncsim.stability.characteristic import mean_alpha_star, winding_number


def alpha_star(p, optimizer="sgd", momentum=0.0):
    """The boundary-locus solver of asyncsim.stability.characteristic."""
    return mean_alpha_star(p, optimizer, momentum)


# ---------------------------------------------------------------- brute-force reference
def char_poly(p, alpha, optimizer="sgd", m=0.0):
    """Coefficients (highest power first) of z^{K+1}·h(z): the characteristic polynomial."""
    p = np.asarray(p, float)
    K = p.size - 1
    if optimizer == "sgd":
        # z^{K+1} − z^K + α Σ p_k z^{K−k}
        c = np.zeros(K + 2)
        c[0], c[1] = 1.0, -1.0
        c[1:] += alpha * p
        return c
    c = np.zeros(K + 3)
    if optimizer == "momentum":
        # z^{K+2} − (1+m) z^{K+1} + m z^K + α(1−m) Σ p_k z^{K+1−k}
        c[0], c[1], c[2] = 1.0, -(1 + m), m
        c[1:K + 2] += alpha * (1 - m) * p
        return c
    # shifted: z^{K+2} − z^{K+1} + (α(1−m) − m) Σ p_k z^{K+1−k} + m Σ p_k z^{K−k}
    c[0], c[1] = 1.0, -1.0
    c[1:K + 2] += (alpha * (1 - m) - m) * p
    c[2:K + 3] += m * p
    return c


def max_root(p, alpha, optimizer="sgd", m=0.0):
    return np.abs(np.roots(char_poly(p, alpha, optimizer, m))).max()


def brute_alpha_star(p, optimizer="sgd", m=0.0):
    """Scan α upward in 1% steps from 1e-4 to the first unstable value, then bisect."""
    a_prev, a = 0.0, 1e-4
    while max_root(p, a, optimizer, m) < 1.0:
        a_prev, a = a, a * 1.01
        assert a < 1e4
    lo, hi = a_prev, a
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if max_root(p, mid, optimizer, m) < 1.0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


def _random_pmf(K, seed):
    rng = np.random.default_rng(seed)
    p = rng.random(K + 1) ** 3  # uneven weights
    return p / p.sum()


PMFS = {
    "constant5": families.constant(5),
    "uniform0-10": families.uniform(0, 10),
    "uniform3-12": families.uniform(3, 12),
    "gaussian5": families.gaussian(5),
    "geometric2": families.geometric(2),   # K = 39
    "random30": _random_pmf(30, 1),
    "random64": _random_pmf(64, 2),
}
OPTS = [("sgd", 0.0), ("momentum", 0.5), ("momentum", 0.9), ("shifted", 0.5), ("shifted", 0.9)]


# ---------------------------------------------------------------------------- tests
def test_constant_delay_closed_form():
    for tau in range(0, 65):
        a = alpha_star(families.constant(tau))
        assert a == pytest.approx(2 * math.sin(math.pi / (4 * tau + 2)), rel=0, abs=1e-9)
        if tau >= 1:
            assert abs(1 / a - (2 * tau + 1) / math.pi) < 0.05


@pytest.mark.parametrize("name", list(PMFS))
@pytest.mark.parametrize("optimizer,m", OPTS)
def test_against_numpy_roots(name, optimizer, m):
    p = PMFS[name]
    assert p.size - 1 <= 64
    a = mean_alpha_star(p, optimizer, m)
    ref = brute_alpha_star(p, optimizer, m)
    assert a == pytest.approx(ref, rel=1e-8)
    # and it is a threshold: stable just below, unstable just above (independent root check)
    assert max_root(p, a * (1 - 1e-6), optimizer, m) < 1.0 < max_root(p, a * (1 + 1e-6), optimizer, m)


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_geometric_is_4n_minus_2(n):
    # z² − (1 + q − α/N) z + q = 0 with q = 1 − 1/N reaches z = −1 at α = 2N(1 + q) = 4N − 2
    assert alpha_star(families.geometric(n)) == pytest.approx(4 * n - 2, rel=0, abs=1e-6)


def test_momentum_tau0_closed_form():
    for m in (0.0, 0.3, 0.5, 0.9, 0.99):
        opt = "sgd" if m == 0 else "momentum"
        assert alpha_star(families.constant(0), opt, m) == pytest.approx(
            2 * (1 + m) / (1 - m), rel=1e-10)


@pytest.mark.parametrize("tau", [2, 3, 5, 10, 20])
def test_momentum_monotone_in_m(tau):
    ms = [0.0, 0.2, 0.5, 0.8, 0.9]
    mom = [alpha_star(families.constant(tau), optimizer="momentum", momentum=m) for m in ms]
    shf = [alpha_star(families.constant(tau), optimizer="shifted", momentum=m) for m in ms]
    assert all(b < a for a, b in zip(mom, mom[1:])), mom       # larger m lowers α* (τ ≥ 2)
    assert all(b > a for a, b in zip(shf, shf[1:])), shf       # shifted: larger m raises α*


def test_large_support_fast_path_exact():
    tau = 10_000
    assert alpha_star(families.constant(tau)) == pytest.approx(2 * math.sin(math.pi / (4 * tau + 2)), rel=1e-9)


def test_winding_number_counts_roots_outside():
    # argument principle vs numpy.roots: winding = 1 − (#roots outside the unit circle)
    p = PMFS["random30"]
    for optimizer, m in OPTS:
        a = mean_alpha_star(p, optimizer, m)
        for f in (0.5, 0.99, 1.01, 1.5, 3.0):
            roots = np.roots(char_poly(p, a * f, optimizer, m))
            outside = int(np.sum(np.abs(roots) > 1.0))
            assert winding_number(p, a * f, optimizer, m, 1 << 14) == 1 - outside


def test_lr_rules_reproduce_eq8_at_constant_delay():
    eta0 = 0.1
    for tau in (0, 1, 4, 16, 64):
        a = alpha_star(families.constant(tau))
        x = math.pi / (4 * tau + 2)
        # η0·α*/2 = η0 sin(x) and eq. 8 gives η0·x: their ratio is exactly sin(x)/x
        assert lr_rules.lr_from_base(a, eta0) / lr_rules.paper_rule(eta0, tau) == pytest.approx(
            math.sin(x) / x, rel=1e-12)
        assert lr_rules.lr_from_sharpness(a, 2 / eta0) == pytest.approx(lr_rules.lr_from_base(a, eta0), rel=1e-12)


def test_families_and_specs():
    g = families.gaussian(5)
    assert g[0] == 0 and g.size == 11 and g.sum() == pytest.approx(1.0)
    # the paper's definition: Pr(k − ½ ≤ z ≤ k + ½), z ~ N(μ, 1), on 1..2μ, renormalised
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    w = np.array([cdf(k + 0.5 - 5) - cdf(k - 0.5 - 5) for k in range(1, 11)])
    assert np.allclose(g[1:], w / w.sum(), rtol=1e-9, atol=1e-15)  # erf differences lose digits in the tails
    g4 = families.parse_pmf_spec("gaussian:16:4")
    w4 = np.array([cdf((k + 0.5 - 16) / 4) - cdf((k - 0.5 - 16) / 4) for k in range(1, 33)])
    assert g4.size == 33 and np.allclose(g4[1:], w4 / w4.sum(), rtol=1e-9, atol=1e-15)
    geo = families.geometric(8)
    assert geo.sum() == pytest.approx(1.0)
    assert (7 / 8) ** geo.size < 1e-12 * 1.2  # truncated where the tail < 1e-12
    assert np.array_equal(families.parse_pmf_spec("uniform:2:4"), families.uniform(2, 4))
    assert np.array_equal(families.parse_pmf_spec("constant:3"), families.constant(3))
    for bad in ("bogus:3", "constant", "uniform:5:2", "constant:x", "geometric:0", ""):
        with pytest.raises(InputError) as ei:
            families.parse_pmf_spec(bad)
        assert "\n" not in str(ei.value)


@pytest.mark.parametrize("name", ["constant5", "gaussian5", "random30"])
@pytest.mark.parametrize("optimizer,m", OPTS)
def test_public_api_agrees(name, optimizer, m):
    # asyncsim.stability.alpha_star (the public entry point) must give the same mean α*
    p = PMFS[name]
    assert public_alpha_star(p, criterion="mean", optimizer=optimizer, momentum=m) == pytest.approx(
        mean_alpha_star(p, optimizer, m), rel=1e-8)


def test_bad_inputs():
    with pytest.raises(InputError):
        public_alpha_star([0.5, -0.1, 0.6])
    with pytest.raises(InputError):
        mean_alpha_star(families.constant(2), optimizer="adam")
    with pytest.raises(InputError):
        mean_alpha_star(families.constant(2), optimizer="momentum", momentum=1.0)
    with pytest.raises(InputError):
        public_alpha_star(families.constant(2), criterion="trace")  # needs a Trace


def test_a_grazing_locus_returns_the_grid_value_not_an_error():
    """A jackknife pmf of a short async trace whose boundary locus grazes the real axis: the
    certificate's cells shrank past their cap and it raised. The value agrees with numpy.roots."""
    import numpy as np

    from asyncsim.stability.characteristic import mean_alpha_star

    p = np.array([10, 7, 5, 1.5, 0.5]) / 24.0
    a = mean_alpha_star(p)

    def stable(al):
        c = np.zeros(p.size + 1)
        c[0], c[1] = 1.0, -1.0
        c[1:] += al * p
        return np.max(np.abs(np.roots(c))) < 1.0

    assert stable(a * (1 - 1e-6)) and not stable(a * (1 + 1e-6))
    assert all(stable(x) for x in np.linspace(1e-3, a * 0.999, 400))   # and it is the first crossing
