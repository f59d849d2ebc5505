"""The mean criterion with a fitted geometric tail: the fit, its test, and coverage of the long-run α*."""

import math

import numpy as np
import pytest
from _traces import async_exponential, round_robin
from scipy.stats import chi2

from asyncsim.stability import families
from asyncsim.stability.characteristic import mean_alpha_star
from asyncsim.stability.tail import _chi2_geometric, fit_geometric_tail, mean_fitted_tail
from asyncsim.stability.uncertainty import segment_counts

SEEDS = 40
UPDATES = 5000


def test_fit_recovers_a_geometric_law_and_completes_the_tail():
    # 10⁵ i.i.d. draws of p_k = (1/8)(7/8)^k: the MLE r̂ = m/(1+m) has sd ≈ r(1−r)/√(n r) ≈ 4e-4
    rng = np.random.default_rng(1)
    counts = np.bincount(rng.geometric(1 / 8, size=100_000) - 1).astype(float)
    fit = fit_geometric_tail(counts)
    assert fit.threshold == 0 and fit.p_value > 0.01
    assert fit.rate == pytest.approx(7 / 8, abs=2e-3)
    assert fit.pmf.sum() == pytest.approx(1.0, rel=1e-12)
    assert fit.rate ** (fit.pmf.size - 1) < 1e-11          # the tail runs until 1e-12 is left
    assert fit.pmf.size - 1 > 2 * fit.observed_support
    # on the completed pmf, the mean criterion is the geometric closed form 4N̂ − 2 with N̂ = 1/(1−r̂)
    assert mean_alpha_star(fit.pmf) == pytest.approx(4 / (1 - fit.rate) - 2, rel=1e-8)


def test_chi2_test_is_calibrated_under_the_null():
    # i.i.d. geometric samples of 2000: rejections at 5 % over 300 samples ~ Binomial(300, 0.05)
    # (mean 15, sd 3.8); the test with a fitted r is slightly conservative, so allow 4..27
    rng = np.random.default_rng(2)
    rejected = 0
    for _ in range(300):
        x = np.bincount(rng.geometric(1 / 5, size=2000) - 1).astype(float)
        m = float(np.dot(np.arange(x.size), x) / x.sum())
        p, bins = _chi2_geometric(x, m / (1 + m))
        assert bins >= 10
        rejected += p < 0.05
    assert 4 <= rejected <= 27


def test_dispersion_correction_undoes_duplicated_counts():
    # counting every delay 4 times multiplies the χ² statistic by 4 (wrong p); the between-segment
    # dispersion is then ≈ 4 too, and the corrected statistic is the original's
    rng = np.random.default_rng(3)
    seg = np.stack([np.bincount(rng.geometric(1 / 5, size=500) - 1, minlength=80)[:80] for _ in range(20)]).astype(float)
    x = seg.sum(axis=0)
    m = float(np.dot(np.arange(x.size), x) / x.sum())
    r = m / (1 + m)
    p_iid, bins = _chi2_geometric(x, r)
    p_dup, _ = _chi2_geometric(4 * x, r)
    p_corr, _ = _chi2_geometric(4 * x, r, 4 * seg)
    stat = chi2.isf(p_iid, bins - 2)
    assert p_dup < p_iid
    assert chi2.isf(p_corr, bins - 2) == pytest.approx(stat, rel=0.2)  # dispersion estimated: measured 8 % off


def test_non_geometric_delays_move_the_threshold_or_give_no_fit():
    # two speeds of workers: a mixture of two geometric laws, rejected from τ ≥ 0
    tr = async_exponential(8, 40_000, seed=4, mean=[1.0] * 4 + [4.0] * 4)
    fit = fit_geometric_tail(segment_counts(tr))
    assert fit is None or fit.threshold > 0
    # round robin: every delay is N − 1, nothing geometric to fit
    assert fit_geometric_tail(segment_counts(round_robin(8, 5000))) is None
    out, notes = mean_fitted_tail(segment_counts(round_robin(8, 5000)), updates=5000)
    assert out is None and "no geometric tail" in notes[0]


def test_long_run_value_of_asgd_n8():
    """The long-run value the coverage test uses, two ways: the closed form α* = 4N − 2 of the
    geometric pmf (DESIGN.md), and the certified boundary locus on that pmf; and the long run of the
    reference A-SGD generator is that geometric law (fit on 3·10⁵ updates: r → 1 − 1/N)."""
    assert mean_alpha_star(families.geometric(8)) == pytest.approx(30.0, abs=1e-9)
    tr = async_exponential(8, 300_000, seed=10_000)
    fit = fit_geometric_tail(segment_counts(tr))
    assert fit.threshold == 0 and fit.p_value > 0.01
    assert fit.rate == pytest.approx(7 / 8, abs=5e-4)


def test_fitted_tail_interval_covers_long_run_value():
    """≥ 90 % of 40 seeds for the 95 % interval (issue 15). Measured: 40/40 at 5000 updates (the
    empirical pmf's jackknife interval: see test_empirical_mean_interval_does_not_cover)."""
    long_run = 4 * 8 - 2
    hits, widths = 0, []
    for seed in range(SEEDS):
        tr = async_exponential(8, UPDATES, seed=seed)
        out, _ = mean_fitted_tail(segment_counts(tr), updates=UPDATES)
        lo, hi = out["ci"]
        hits += lo <= long_run <= hi
        widths.append((hi - lo) / 2 / out["alpha_star"])
    assert hits >= 0.9 * SEEDS, hits
    assert 1e-3 < np.median(widths) < 0.05  # informative: well under the 50 % spread of the empirical one


def test_empirical_mean_interval_does_not_cover():
    # the reason for the fitted tail: on the empirical pmf the mean criterion sits far below 30
    tr = async_exponential(8, UPDATES, seed=0)
    assert mean_alpha_star(tr.delay_pmf()) < 25
    out, _ = mean_fitted_tail(segment_counts(tr), updates=UPDATES)
    assert out["alpha_star"] == pytest.approx(30, rel=0.01)


@pytest.mark.soak
def test_fitted_tail_interval_covers_at_40k_updates():
    # the trace length (the empirical pmf gives α* ≈ 16 there). Measured: 39/40.
    hits = 0
    for seed in range(SEEDS):
        tr = async_exponential(8, 40_000, seed=seed)
        out, _ = mean_fitted_tail(segment_counts(tr), updates=40_000)
        hits += out["ci"][0] <= 30 <= out["ci"][1]
    assert hits >= 0.9 * SEEDS, hits


def test_huge_completed_support_is_skipped_with_a_note(monkeypatch):
    # a 10,000-worker trace completes to support ~276,000: the grid would need 1.3 GiB, so the
    # fitted tail is skipped with a note instead of pushing the run over its memory budget
    import asyncsim.stability.tail as tail

    monkeypatch.setattr(tail, "MAX_BYTES", 1 << 16)  # N = 8 needs 640 KiB
    tr = async_exponential(8, UPDATES, seed=1)
    out, notes = mean_fitted_tail(segment_counts(tr), updates=UPDATES)
    assert out is None and "skipped" in notes[0] and "MiB" in notes[0]


def test_analyze_names_the_two_mean_values_apart():
    from asyncsim.stability import analyze

    tr = async_exponential(8, UPDATES, seed=2)
    rep = analyze(tr, criteria=("mean",))
    assert rep.alpha_star["mean"] == pytest.approx(mean_alpha_star(tr.delay_pmf()), rel=1e-12)
    assert rep.mean_fitted_tail["alpha_star"] == pytest.approx(30, rel=0.01)
    assert rep.to_dict()["mean_fitted_tail"]["threshold"] == 0
    off = analyze(tr, criteria=("mean",), fitted_tail=False)
    assert off.mean_fitted_tail is None and off.alpha_star == rep.alpha_star
    assert not any("fitted tail" in n for n in off.notes)


def test_fitted_tail_interval_covers_on_simulated_traces_with_fresh_seeds(tmp_path):
    """The same coverage on the simulator's own traces, with seeds the test level was not chosen on
    (1000..1039; measured by the lead: 39/40 at N = 8, 38/40 at N = 16 with long-run value 62)."""
    import asyncsim

    f = tmp_path / "a8.yaml"
    f.write_text("name: a8\nseed: 1\nworkers:\n  - {count: 8, compute: {dist: exponential, mean: 1.0}}\n"
                 "policy: {kind: async}\nstop: {updates: 5000}\n")
    sc = asyncsim.load_scenario(f)
    hits = 0
    for seed in range(1000, 1000 + SEEDS):
        out, _ = mean_fitted_tail(segment_counts(asyncsim.simulate(sc, updates=UPDATES, seed=seed)), updates=UPDATES)
        hits += out is not None and out["ci"][0] <= 30 <= out["ci"][1]
    assert hits >= 0.9 * SEEDS, hits
