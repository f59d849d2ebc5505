"""Plan results store, table assembly and Pareto front (no simulation needed)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from asyncsim.plan.grid import PlanSpec, expand
from asyncsim.plan.report import pareto_front
from asyncsim.plan.store import ResultStore, build_rows, read_table, write_table
from asyncsim.scenario import load_scenario

SCEN = {"name": "s", "seed": 1, "workers": [{"count": 4, "compute": {"dist": "exponential", "mean": 1.0}}],
        "cost_per_worker_hour": 2.0}


def fake_record(rate, tau, alpha, ttt=None):
    rec = {"summary": {"update_rate": rate, "gradient_rate": 2 * rate, "time_per_update": 1 / rate,
                       "utilisation_mean": 0.5, "staleness_mean": tau, "staleness_p50": tau,
                       "staleness_p99": 2 * tau, "staleness_max": 3 * tau, "dropped": 0},
           "stability": {"alpha_star": {"mean": alpha * 2, "mean-square": alpha * 1.5, "trace": alpha},
                         "conservative": "trace", "alpha_star_conservative": alpha,
                         "warnings": ["mean criterion is 2x the trace criterion"] if tau else []},
           "lr_max": alpha, "lr": alpha / 2, "train": None}
    if ttt is not None:
        rec["train"] = {"time_to_target": ttt, "steps_to_target": 10, "final_loss": 0.01, "diverged": False}
    return rec


def test_store_roundtrip_and_corrupt_files_count_as_missing(tmp_path):
    st = ResultStore(tmp_path)
    rec = fake_record(2.0, 1.0, 0.5)
    rec["summary"]["staleness_mean"] = float("nan")  # non-finite numbers are stored as null
    st.save("abc", rec)
    back = st.load("abc")
    assert back["summary"]["staleness_mean"] is None and back["key"] == "abc"
    assert st.has("abc") and not st.has("zzz")
    st.path("bad").write_text('{"key": "bad", "format": 1, "summ')   # a torn write (cannot happen via save)
    assert not st.has("bad")
    st.path("other").write_text(json.dumps({"key": "not-other", "format": 1}))
    assert not st.has("other")
    assert st.finished(["abc", "bad", "other", "zzz"]) == {"abc"}
    assert [p.name for p in st.points_dir.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_rows_speedups_and_costs():
    plan = PlanSpec(load_scenario(SCEN), vary=[("workers.0.count", [2, 4])], policies=["async"], updates=10)
    pts = expand(plan)
    recs = {}
    vals = {(0, "async"): (8.0, 3.0, 0.3, 10.0), (0, "sync"): (2.0, 0.0, 2.0, 40.0),
            (1, "async"): (12.0, 5.0, 0.2, float("nan")), (1, "sync"): (3.0, 0.0, 2.0, 30.0)}
    for p in pts:
        recs[p.task.key] = fake_record(*vals[(p.index, p.policy)])
    rows = build_rows(pts, recs)
    assert [(r["workers.0.count"], r["policy"]) for r in rows] == [(2, "async"), (2, "sync"), (4, "async"),
                                                                  (4, "sync")]
    assert [r["speedup_throughput"] for r in rows] == [4.0, 1.0, 4.0, 1.0]   # gradient rates
    assert rows[0]["speedup_to_target"] == 4.0 and rows[1]["speedup_to_target"] == 1.0
    assert math.isnan(rows[2]["speedup_to_target"])  # A-SGD never reached the target there
    assert {r["baseline"] for r in rows} == {"sync"}
    # cost: price x workers per hour; to target: that x hours to target
    assert rows[0]["cost_per_hour"] == 4.0 and rows[2]["cost_per_hour"] == 8.0
    assert rows[0]["cost_to_target"] == pytest.approx(4.0 * 10.0 / 3600)
    assert rows[1]["cost_per_1k_updates"] == pytest.approx(4.0 * 0.5 * 1000 / 3600)
    assert rows[0]["alpha_star_mean_square"] == 0.3 * 1.5 and rows[0]["criterion"] == "trace"
    assert rows[0]["warnings"] and not rows[1]["warnings"]


def test_table_roundtrip_with_mixed_type_column(tmp_path):
    rows = [{"x": 1, "policy": "async", "update_rate": 1.5}, {"x": "big", "policy": "sync", "update_rate": 2.0}]
    p = write_table(rows, ["x"], tmp_path / "r.parquet", metadata={"a": float("nan")})
    back = read_table(p)
    assert [r["x"] for r in back] == ["1", "big"] and [r["update_rate"] for r in back] == [1.5, 2.0]
    assert list(back[0])[:2] == ["x", "policy"]


def _brute_front(xs, ys):
    idx = [i for i in range(len(xs)) if np.isfinite(xs[i]) and np.isfinite(ys[i])]
    keep = [i for i in idx if not any((xs[j] <= xs[i] and ys[j] <= ys[i]) and (xs[j] < xs[i] or ys[j] < ys[i])
                                      for j in idx)]
    # among exact duplicates keep the first, as the sweep does
    out, seen = [], set()
    for i in sorted(keep, key=lambda i: (xs[i], ys[i], i)):
        if (xs[i], ys[i]) not in seen:
            seen.add((xs[i], ys[i]))
            out.append(i)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_pareto_front_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    xs = rng.integers(0, 8, n).astype(float)   # small integers: ties on purpose
    ys = rng.integers(0, 8, n).astype(float)
    xs[rng.random(n) < 0.1] = np.nan
    assert pareto_front(xs.tolist(), ys.tolist()) == _brute_front(xs, ys)


# ------------------------------------------------------------------ backends (Ray: see test_plan_run.py)
def _square_or_fail(x):
    """Module-level so spawned pool workers can import it."""
    from asyncsim.errors import InputError

    if x < 0:
        raise InputError(f"bad point {x}")
    return x * x


@pytest.mark.parametrize("make", ["serial", "local"])
def test_backends_report_each_result_once_and_propagate_point_errors(make):
    from asyncsim.errors import InputError
    from asyncsim.plan.backends import LocalBackend, SerialBackend

    be = SerialBackend() if make == "serial" else LocalBackend(2)
    got = []
    be.map(_square_or_fail, list(range(7)), lambda item, res: got.append((item, res)))
    assert sorted(got) == [(i, i * i) for i in range(7)]
    got.clear()
    with pytest.raises(InputError, match="bad point -1"):
        be.map(_square_or_fail, [0, 1, -1, 2], lambda item, res: got.append(item))
    assert -1 not in got and len(got) == len(set(got))


def test_inert_keys_flag_a_varied_key_that_changes_nothing():
    from asyncsim.plan.store import inert_keys

    def row(bw, n, pol, rate):
        return {"network.bandwidth_gbps": bw, "workers.0.count": n, "policy": pol, "update_rate": rate,
                "gradient_rate": rate, "staleness_mean": 1.0}

    rows = [row(bw, n, pol, n * (2 if pol == "async" else 1)) for bw in (1, 10) for n in (2, 4)
            for pol in ("async", "sync")]
    assert inert_keys(rows, ["network.bandwidth_gbps", "workers.0.count"]) == ["network.bandwidth_gbps"]
    rows[0]["update_rate"] = 99.0   # one row differs: the key did something
    assert inert_keys(rows, ["network.bandwidth_gbps", "workers.0.count"]) == []


def test_budget_warning_when_a_policy_ran_out_before_another_reached_the_target():
    from asyncsim.plan.store import budget_warnings

    rows = [{"grid_point": 0, "workers.0.count": 8, "policy": "async", "sim_time": 738.0,
             "time_to_target": float("nan")},
            {"grid_point": 0, "workers.0.count": 8, "policy": "sync", "sim_time": 3000.0, "time_to_target": 2190.0}]
    w = budget_warnings(rows, ["workers.0.count"])
    assert len(w) == 1 and "async at workers.0.count=8 ran out of budget at 738 s" in w[0] and "2190" in w[0]
    rows[0]["sim_time"] = 2500.0   # it had the time and did not get there: no budget problem
    assert budget_warnings(rows, ["workers.0.count"]) == []
    rows[0]["sim_time"] = 738.0
    rows[1]["time_to_target"] = float("nan")   # nobody reached it: nothing to compare
    assert budget_warnings(rows, ["workers.0.count"]) == []


def test_cluster_price_and_decisions():
    from asyncsim.plan.store import cluster_price, decide

    sc = {"cost_per_worker_hour": 2.0, "workers": [{"count": 4}, {"count": 2, "cost_per_hour": 5.0}]}
    assert cluster_price(sc) == 4 * 2.0 + 2 * 5.0
    assert cluster_price({"workers": [{"count": 3}]}) is None
    assert cluster_price({"workers": [{"count": 3, "cost_per_hour": 1.0}, {"count": 1}]}) is None  # half priced
    rows = [{"n": 4, "policy": "async", "time_to_target": 50.0, "cost_to_target": 3.0},
            {"n": 8, "policy": "async", "time_to_target": 20.0, "cost_to_target": 4.0},
            {"n": 16, "policy": "async", "time_to_target": 15.0, "cost_to_target": 9.0},
            {"n": 16, "policy": "sync", "time_to_target": float("nan"), "cost_to_target": float("nan")}]
    d = decide(rows, ["n"], deadline=30.0, budget=5.0)
    assert d["cheapest_within_deadline"]["n"] == 8          # 4 workers miss the deadline
    assert d["fastest_within_budget"]["n"] == 8             # 16 workers cost too much
    assert decide(rows, ["n"], deadline=1.0)["cheapest_within_deadline"] is None


def test_stability_adjusted_speed_weighs_update_rate_by_alpha_star():
    from asyncsim.plan.store import stability_adjusted_speed

    base = {"update_rate": 1.0, "alpha_star": 2.0, "gradient_rate": 8.0}       # S-SGD, N = 8
    row = {"update_rate": 8.0, "alpha_star": 0.25, "gradient_rate": 8.0}       # A-SGD, same gradients/s
    # 8x the steps of 1/8 the size: the same first-order progress per second
    assert stability_adjusted_speed(row, base) == pytest.approx(1.0)
    assert stability_adjusted_speed({**row, "alpha_star": 0.5}, base) == pytest.approx(2.0)
    assert math.isnan(stability_adjusted_speed(row, None))
    assert math.isnan(stability_adjusted_speed(row, {**base, "alpha_star": float("nan")}))


def test_stability_adjusted_speed_predicts_first_order_progress_on_the_quadratic():
    """Independent check of the definition: replay A-SGD and S-SGD traces of one cluster on the
    quadratic at the same small learning rate; the loss's decay per simulated second compares
    like their update rates (each update one step), not like their gradient rates."""
    import numpy as np

    import asyncsim
    from asyncsim.train import replay

    cl = {"name": "q", "seed": 5, "workers": [{"count": 4, "compute": {"dist": "exponential", "mean": 1.0}}],
          "stop": {"time": 400.0}}
    slope, rate = {}, {}
    for kind in ("async", "sync"):
        tr = asyncsim.simulate({**cl, "policy": {"kind": kind}})
        res = replay(tr, dataset="quadratic", sharpness=1.0, dim=1, lr=0.005, optimizer="sgd", log_every=10)
        t, y = np.asarray(res.sim_time), np.log(np.asarray(res.loss))
        slope[kind] = -np.polyfit(t, y, 1)[0]
        rate[kind] = tr.n_updates / tr.sim_time
    # one eigenvalue a = 1: log loss falls 2·a·lr per update (to first order in lr)
    assert slope["async"] / slope["sync"] == pytest.approx(rate["async"] / rate["sync"], rel=0.05)
