"""Intervals for α* from finite traces: coverage of the long-run value over independent seeds."""

import numpy as np
import pytest
from _traces import async_exponential

from asyncsim.stability import families
from asyncsim.stability.lyapunov import _Plan, trace_alpha_star
from asyncsim.stability.meansquare import mean_square_alpha_star
from asyncsim.stability.uncertainty import jackknife, segment_counts, trace_interval

SEEDS = 40
UPDATES = 5000


@pytest.mark.slow
def test_trace_and_mean_square_intervals_cover_long_run_value():
    # long-run values: the trace criterion on one trace 60× longer; for mean-square the exact
    # geometric pmf (A-SGD with N exponential workers has geometric staleness, p = 1/N)
    long_run_trace = trace_alpha_star(async_exponential(8, 300_000, seed=10_000))
    long_run_ms = mean_square_alpha_star(families.geometric(8))
    hit_tr = hit_ms = 0
    widths = []
    for seed in range(SEEDS):
        tr = async_exponential(8, UPDATES, seed=seed)
        plan = _Plan(tr)
        a = trace_alpha_star(plan)
        iv = trace_interval(plan, a)
        hit_tr += iv.lo <= long_run_trace <= iv.hi
        widths.append(iv.half_width / a)
        ms = mean_square_alpha_star(tr.delay_pmf())
        jv = jackknife(mean_square_alpha_star, segment_counts(tr), ms, tr.n_updates)
        hit_ms += jv.lo <= long_run_ms <= jv.hi
    assert hit_tr >= 0.9 * SEEDS, (hit_tr, long_run_trace)
    assert hit_ms >= 0.9 * SEEDS, (hit_ms, long_run_ms)
    # and the intervals are informative: a few per cent at 5000 updates, not everything
    assert 0.005 < np.median(widths) < 0.1


def test_updates_for_one_percent_scales_like_one_over_sqrt_t():
    tr = async_exponential(8, 8000, seed=3)
    a = trace_alpha_star(tr)
    iv = trace_interval(tr, a)
    need = iv.updates_for(0.01)
    # by construction: a half-width h at T updates shrinks to 1 % at T (h / 0.01 α*)²
    assert need == pytest.approx(tr.n_updates * (iv.half_width / (0.01 * a)) ** 2, abs=1)
    assert iv.lo < a < iv.hi
