"""Distributions: exact moments against large samples, validation, repr, streams."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from asyncsim.distributions import parse_distribution
from asyncsim.rng import BLOCK, BlockSampler, Streams

SPECS = [
    {"dist": "constant", "value": 1.5},
    {"dist": "exponential", "mean": 0.4},
    {"dist": "shifted_exponential", "shift": 0.1, "mean": 0.4},
    {"dist": "lognormal", "mean": 1.0, "cv": 0.5},
    {"dist": "gamma", "mean": 2.0, "cv": 0.3},
    {"dist": "uniform", "low": 1.0, "high": 2.0},
    {"dist": "normal", "mean": 0.3, "std": 0.5},   # heavily truncated: exercises the truncated moments
    {"dist": "normal", "mean": 5.0, "std": 0.5},
    {"dist": "weibull", "shape": 1.5, "scale": 2.0},
    {"dist": "pareto", "shape": 5.0, "scale": 1.0},
    {"dist": "empirical", "values": [1.0, 2.0, 3.5, 0.25]},
    {"dist": "mixture", "components": [{"weight": 9, "dist": "exponential", "mean": 1.0},
                                       {"weight": 1, "dist": "constant", "value": 4.0}]},
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["dist"])
def test_moments_match_samples(spec):
    d = parse_distribution(spec)
    n = 200_000
    x = d.sample(np.random.default_rng(12345), n)
    assert x.shape == (n,) and x.dtype == np.float64 and np.all(x >= 0)
    # CLT: the sample mean has std sigma/sqrt(n); the sample variance has std
    # sqrt((m4 - sigma^4)/n) (m4 estimated from the sample). 5 standard errors.
    se_mean = math.sqrt(d.variance / n)
    assert abs(x.mean() - d.mean) <= 5 * se_mean + 1e-12
    m4 = np.mean((x - x.mean()) ** 4)
    se_var = math.sqrt(max(m4 - x.var() ** 2, 0) / n)
    assert abs(x.var() - d.variance) <= 5 * se_var + 1e-12


def test_heavy_tailed_moments_are_infinite():
    d = parse_distribution({"dist": "pareto", "shape": 1.0, "scale": 1.0})
    assert d.mean == math.inf and d.variance == math.inf


@pytest.mark.parametrize("spec,field", [
    ({"dist": "exponential", "mean": -1}, "mean"),
    ({"dist": "exponential", "mean": 0}, "mean"),
    ({"dist": "lognormal", "mean": 1, "cv": -0.1}, "cv"),
    ({"dist": "gamma", "mean": 1, "cv": 0}, "cv"),
    ({"dist": "weibull", "shape": 0, "scale": 1}, "shape"),
    ({"dist": "constant", "value": -2}, "value"),
    ({"dist": "exponential", "mean": 1, "rate": 2}, "rate"),
])
def test_bad_parameters_name_the_field(spec, field):
    with pytest.raises(ValidationError) as info:
        parse_distribution(spec)
    assert field in [str(p) for p in info.value.errors()[0]["loc"]]


def test_repr_is_readable():
    assert repr(parse_distribution({"dist": "exponential", "mean": 4.4})) == "Exponential(mean=4.4)"
    assert repr(parse_distribution({"dist": "lognormal", "mean": 1, "cv": 0.3})) == "LogNormal(mean=1.0, cv=0.3)"
    mix = parse_distribution(SPECS[-1])
    assert repr(mix) == "Mixture(0.9*Exponential(mean=1.0), 0.1*Constant(value=4.0))"


def test_block_sampler_next_and_take_consume_identically():
    d = parse_distribution({"dist": "gamma", "mean": 1.0, "cv": 0.5})
    a = BlockSampler(d, np.random.default_rng(7))
    b = BlockSampler(d, np.random.default_rng(7))
    seq = [a.next() for _ in range(2 * BLOCK + 17)]
    got = np.concatenate([b.take(5), b.take(BLOCK), b.take(BLOCK + 12)])
    assert np.array_equal(np.asarray(seq), got)


def test_streams_are_keyed_not_ordered():
    s1, s2 = Streams(42), Streams(42)
    # asking for other streams first does not shift worker 3's draws
    s2.worker(0); s2.server(); s2.worker(9, "network")
    assert np.array_equal(s1.worker(3).random(5), s2.worker(3).random(5))
    assert not np.array_equal(Streams(42).worker(3).random(5), Streams(42).worker(4).random(5))
    assert not np.array_equal(Streams(42).worker(3).random(5), Streams(43).worker(3).random(5))
    assert not np.array_equal(Streams(1).worker(0, "compute").random(5), Streams(1).worker(0, "network").random(5))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["dist"])
def test_prefix_draws_claim_holds(spec):
    """A family that claims ``prefix_draws`` gives, for a draw of k values, the
    first k values of any longer draw from the same state (the vectorised engine
    then draws exactly what it needs); mixture and the truncated normal draw
    ahead for the whole batch and must not claim it."""
    d = parse_distribution(spec)
    if spec["dist"] in ("mixture", "normal"):
        assert not d.prefix_draws
        return
    assert d.prefix_draws
    for seed in range(5):
        long = d.sample(Streams(seed).worker(3, "compute"), 3 * BLOCK)
        for k in (1, 2, 7, 511, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 333):
            short = d.sample(Streams(seed).worker(3, "compute"), k)
            np.testing.assert_array_equal(short, long[:k])
