"""The local SGD / DiLoCo family's simulation against independent truths.

Closed forms with constant times, the round times recomputed from the very
streams the engine draws from, SimPy/heap parity (columns and the inner
table), the schema's errors and the trace's new columns in every format.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _cli import cli
from test_parity import scenarios as cluster_scenarios  # (the parity tests' random clusters)
from asyncsim.engine import choose_engine, simulate
from asyncsim.errors import InputError, ScenarioError, TraceError
from asyncsim.rng import BlockSampler, Streams
from asyncsim.scenario import load_scenario
from asyncsim.trace import EXTRA_COLUMNS, INNER_COLUMNS, Trace

KINDS = ("local_sgd", "diloco", "streaming_diloco", "async_diloco")


def const(v):
    return {"dist": "constant", "value": v}


def scen(kind="diloco", n=4, compute=0.25, net=None, params=None, apply=0.0, updates=12, time=None, seed=3,
         groups=None, **policy):
    d = {"name": "dl", "seed": seed,
         "workers": groups or [{"count": n, "compute": compute if isinstance(compute, dict) else const(compute)}],
         "server": {"apply": apply if isinstance(apply, dict) else const(apply)},
         "policy": {"kind": kind, **policy},
         "stop": {"updates": updates} if time is None else {"time": time}}
    if net is not None:
        d["network"] = net
    if params:
        d["model"] = {"parameters": params, "bytes_per_parameter": 4}
    return load_scenario(d)


STAR = {"topology": "star", "bandwidth_gbps": 10, "latency": const(1e-4)}


def ring_time(n, nbytes, gbps=10, hop_latency=1e-4):
    """Uncontended ring all-reduce on a star (two hops a step): 2(N−1)/N·S/B + 2(N−1)·α."""
    return 2 * (n - 1) / n * nbytes * 8 / (gbps * 1e9) + 2 * (n - 1) * 2 * hop_latency


# ----------------------------------------------------------------- schema
@pytest.mark.parametrize("policy, field", [
    ({"kind": "streaming_diloco", "inner_steps": 6, "fragments": 4}, "policy.fragments"),
    ({"kind": "diloco", "fragments": 2}, "policy.fragments"),
    ({"kind": "async_diloco", "mixing": 0.5}, "policy.mixing"),
    ({"kind": "streaming_diloco", "fragments": 2, "mixing": 1.0}, "policy.mixing"),
    ({"kind": "streaming_diloco", "fragments": 2, "mixing": -0.1}, "policy.mixing"),
    ({"kind": "diloco", "inner_steps": 0}, "policy.inner_steps"),
    ({"kind": "diloco", "outer_lr": 0}, "policy.outer_lr"),
    ({"kind": "local_sgd", "outer_momentum": 1.0}, "policy.outer_momentum"),
    ({"kind": "diloco", "inner_optimizer": "lamb"}, "policy.inner_optimizer"),
    ({"kind": "diloco", "algorithm": "halving_doubling"}, "policy.algorithm"),  # 3 workers
])
def test_bad_policy_values_name_the_field(policy, field):
    with pytest.raises(ScenarioError) as e:
        load_scenario({"workers": [{"count": 3, "compute": const(1)}], "policy": policy})
    assert e.value.field == field and "\n" not in str(e.value)


def test_defaults_per_kind():
    ls = scen("local_sgd").policy
    assert (ls.outer_lr, ls.outer_momentum, ls.nesterov, ls.inner_optimizer) == (1.0, 0.0, False, "sgd")
    for kind in ("diloco", "streaming_diloco", "async_diloco"):
        p = scen(kind).policy
        assert (p.outer_lr, p.outer_momentum, p.nesterov, p.inner_optimizer, p.fragments) == \
               (0.7, 0.9, True, "adamw", 1)
    assert scen("streaming_diloco").policy.mixing == 0.5 and scen("diloco").policy.mixing == 0.0


def test_faults_refused_in_one_line(tmp_path):
    f = tmp_path / "f.yaml"
    f.write_text("workers: [{count: 2, compute: {dist: constant, value: 1}}]\npolicy: {kind: diloco}\n"
                 "faults: [{kind: crash, worker: 0, at: 1.0}]\n")
    code, _, err = cli(["validate", str(f)])
    assert code == 2 and "faults" in err and "diloco" in err
    assert len(err.strip().splitlines()) == 1


def test_event_engines_only():
    sc = scen("diloco")
    assert choose_engine(sc) == "heap"
    with pytest.raises(InputError, match="DiLoCo policies .* event engines"):
        choose_engine(sc, "vector")


# ------------------------------------------------------------ closed forms
def test_diloco_rounds_from_the_same_streams():
    """No network: round k ends max_w Σ (its H draws) + apply after the previous one, the draws
    recomputed here from the run's own streams (one SeedSequence, one stream per worker)."""
    comp = {"dist": "lognormal", "mean": 0.3, "cv": 0.5}
    app = {"dist": "exponential", "mean": 0.02}
    n, h, u = 5, 7, 9
    sc = scen("diloco", n=n, compute=comp, apply=app, inner_steps=h, updates=u, seed=11)
    tr = simulate(sc)
    streams = Streams(11)
    draws = [BlockSampler(d, g) for d, g in zip(sc.compute_dists(), streams.workers(n, "compute"))]
    apply = BlockSampler(sc.server.apply, streams.server("apply"))
    t = 0.0
    ta = tr.t_applied.reshape(u, n)
    for k in range(u):
        sums = [math.fsum(s.next() for _ in range(h)) for s in draws]
        t_round = t
        t = t + max(sums) + apply.next()
        np.testing.assert_allclose(ta[k], t, rtol=1e-12)
        rows = slice(k * n, (k + 1) * n)
        np.testing.assert_allclose(np.sort(tr.t_done[rows]), np.sort(np.array(sums) + t_round), rtol=1e-12)
        assert np.all(tr.t_read[rows] == tr.t_read[k * n]) and np.all(tr.step[rows] == k)
    assert np.all(tr.staleness == 0) and np.all(tr.outer_staleness == 0) and np.all(tr.fragment == 0)
    np.testing.assert_array_equal(tr.local_end - tr.local_start, h)
    assert len(tr.inner["worker"]) == u * n * h


@pytest.mark.parametrize("kind", ["diloco", "local_sgd"])
def test_diloco_round_is_compute_plus_ring_allreduce(kind):
    n, h, t, params, apply = 6, 5, 0.25, 2_000_000, 0.003
    sc = scen(kind, n=n, compute=t, net=STAR, params=params, apply=apply, inner_steps=h, updates=6)
    tr = simulate(sc)
    d = ring_time(n, params * 4)
    period = h * t + d + apply
    np.testing.assert_allclose(np.unique(tr.t_applied), period * np.arange(1, 7), rtol=1e-12)
    s = tr.summary()
    assert s["time_per_outer_round"] == pytest.approx(period, rel=1e-12)
    assert s["communication_fraction"] == pytest.approx((d + apply) / period, rel=1e-9)
    assert s["inner_gradients"] == 6 * n * h and s["outer_updates"] == 6
    assert s["gradient_rate"] == pytest.approx(n * h / period, rel=1e-12)


def test_streaming_overlap_is_ceil_allreduce_over_step():
    """Constant compute t, fragment all-reduce D < H/P·t: update j is applied at
    (j+1)·(H/P)·t + D + apply, and each worker merges it ⌈(D + apply)/t⌉ inner steps after its
    sync point (the emergent overlap)."""
    n, h, p, t, params, apply = 4, 12, 3, 0.25, 1_500_000, 0.001
    sc = scen("streaming_diloco", n=n, compute=t, net=STAR, params=params, apply=apply, inner_steps=h,
              fragments=p, updates=15)
    d = ring_time(n, params * 4 / p)
    assert d + apply < (h // p) * t  # (the stream never queues, nobody waits)
    tr = simulate(sc)
    L = h // p
    j = np.arange(15)
    np.testing.assert_allclose(tr.t_applied.reshape(15, n)[:, 0], (j + 1) * L * t + d + apply, rtol=1e-12)
    np.testing.assert_array_equal(tr.fragment.reshape(15, n)[:, 0], j % p)
    np.testing.assert_array_equal(tr.local_end.reshape(15, n)[:, 0], (j + 1) * L)
    overlap = math.ceil((d + apply) / t)
    later = tr.step >= p
    prev_end = tr.local_end[later] - h                 # the same fragment's previous sync point
    np.testing.assert_array_equal(tr.local_start[later] - prev_end, overlap)
    np.testing.assert_array_equal(tr.local_start[~later], 0)
    assert np.all(tr.outer_staleness == 0)
    np.testing.assert_array_equal(tr.staleness[later], p - 1)
    np.testing.assert_array_equal(tr.staleness[~later], tr.step[~later])
    np.testing.assert_allclose(tr.t_read[later], tr.local_start[later] * t, rtol=1e-12)


def test_streaming_blocks_when_a_fragment_takes_longer_than_h_steps():
    """P = 1, H = 2, t = 1, no network, apply 3.5 (> H·t): sync point 0 at t = 2, its update at
    5.5; the worker waits before its last inner step ahead of each sync point (c = 3, 5, ...)
    for the previous result, merges it and takes one step: updates at 5.5 + 4.5·k (3.5 s of
    apply + that step), every later contribution one inner step long."""
    sc = scen("streaming_diloco", n=2, compute=1.0, apply=3.5, inner_steps=2, fragments=1, mixing=0.0,
              updates=5)
    tr = simulate(sc)
    np.testing.assert_allclose(np.unique(tr.t_applied), 5.5 + 4.5 * np.arange(5))
    later = tr.step >= 1
    np.testing.assert_array_equal(tr.local_end[later] - tr.local_start[later], 1)
    np.testing.assert_allclose(tr.t_read[later], 5.5 + 4.5 * (tr.step[later] - 1))
    np.testing.assert_array_equal(tr.local_end, 2 * (tr.step + 1))


@pytest.mark.parametrize("h, p", [(1, 1), (2, 2), (8, 4), (6, 1)])
def test_streaming_contributions_never_empty(h, p):
    """Whatever the communication costs (here a slow network and random compute), every
    contribution has at least one inner step, and the inner table agrees with the rows."""
    sc = scen("streaming_diloco", n=3, compute={"dist": "exponential", "mean": 0.05}, net=STAR,
              params=20_000_000, apply=0.01, inner_steps=h, fragments=p, updates=40)
    tr = simulate(sc)
    assert np.all(tr.local_end - tr.local_start >= 1)
    inner = tr.inner
    for i in range(len(tr)):  # t_done is the end of the worker's inner step local_end − 1
        w, le = tr.worker[i], tr.local_end[i]
        k = np.flatnonzero((inner["worker"] == w) & (inner["local_step"] == le - 1))
        assert len(k) == 1 and inner["t_done"][k[0]] == tr.t_done[i]


def test_async_diloco_one_worker_period():
    h, t, params, apply = 6, 0.5, 1_000_000, 0.01
    sc = scen("async_diloco", n=1, compute=t, net=STAR, params=params, apply=apply, inner_steps=h, updates=5)
    tr = simulate(sc)
    xfer = params * 4 * 8 / 10e9 + 2 * 1e-4             # one transfer: S/B + two hop latencies
    # round 1: H·t + push + apply; then each round adds pull + H·t + push + apply
    first = h * t + xfer + apply
    np.testing.assert_allclose(tr.t_applied, first + (xfer + first) * np.arange(5), rtol=1e-12)
    assert np.all(tr.staleness == 0) and np.all(tr.outer_staleness == 0)
    np.testing.assert_array_equal(tr.local_start, h * np.arange(5))


@pytest.mark.parametrize("n", [3, 8])
def test_async_diloco_equal_workers_take_turns(n):
    """N equal workers, constant times: the server takes them round robin, so after the first round
    every pseudo-gradient is N − 1 outer updates stale (worker i's first: i)."""
    sc = scen("async_diloco", n=n, compute=0.1, apply=0.01, inner_steps=4, updates=10 * n)
    tr = simulate(sc)
    np.testing.assert_array_equal(tr.worker, np.tile(np.arange(n), 10))
    np.testing.assert_array_equal(tr.outer_staleness[:n], np.arange(n))
    np.testing.assert_array_equal(tr.outer_staleness[n:], n - 1)
    np.testing.assert_array_equal(tr.staleness, tr.outer_staleness)
    s = tr.summary()
    assert s["outer_staleness_max"] == n - 1
    # a worker's period: H·t + its apply (the others' applies overlap its inner steps)
    steady = tr.t_applied[n:].reshape(-1, n)
    np.testing.assert_allclose(np.diff(steady, axis=0), 4 * 0.1 + 0.01, rtol=1e-9)


# ------------------------------------------------------------------ parity
def _same(a, b, label):
    assert a.n_updates == b.n_updates and a.sim_time == b.sim_time, label
    assert set(a.columns) == set(b.columns) == set(list(a.columns)[:7]) | set(EXTRA_COLUMNS), label
    for k in a.columns:
        assert a.columns[k].dtype == b.columns[k].dtype, (label, k)
        np.testing.assert_array_equal(a.columns[k], b.columns[k], err_msg=f"{label}: {k}")
    for k in INNER_COLUMNS:
        np.testing.assert_array_equal(a.inner[k], b.inner[k], err_msg=f"{label}: inner {k}")


TWO_DC = {"topology": "two_tier", "racks": 2, "bandwidth_gbps": 25, "uplink_gbps": 5,
          "latency": {"dist": "uniform", "low": 1e-5, "high": 1e-3}}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("net, stop", [(None, {"updates": 30}), (TWO_DC, {"time": 6.0})],
                         ids=["plain", "two-dc-time"])
def test_simpy_and_heap_identical(kind, net, stop):
    extra = {"fragments": 2, "inner_steps": 4} if kind == "streaming_diloco" else {"inner_steps": 3}
    sc = scen(kind, compute={"dist": "exponential", "mean": 0.05},
              groups=[{"count": 3, "compute": {"dist": "exponential", "mean": 0.05}},
                      {"count": 2, "compute": {"dist": "gamma", "mean": 0.08, "cv": 0.7}}],
              net=net, params=500_000 if net else None, apply={"dist": "exponential", "mean": 0.004},
              updates=stop.get("updates"), time=stop.get("time"), **extra)
    a, b = simulate(sc, engine="simpy"), simulate(sc, engine="heap")
    a.validate()
    _same(a, b, kind)
    assert a.n_updates > 3
    if "time" in stop:
        assert a.sim_time == 6.0 and a.inner["t_done"].max() <= 6.0


# ------------------------------------------------------------- trace files
@pytest.mark.parametrize("suffix", [".parquet", ".npz", ".csv"])
@pytest.mark.parametrize("kind", ["streaming_diloco", "async_diloco"])
def test_round_trip_every_format(tmp_path, suffix, kind):
    extra = {"fragments": 2, "inner_steps": 4} if kind == "streaming_diloco" else {}
    tr = simulate(scen(kind, compute={"dist": "exponential", "mean": 0.1}, updates=20, **extra))
    back = Trace.load(tr.save(tmp_path / f"t{suffix}"))
    _same(tr, back, suffix)
    assert back.scenario["policy"]["kind"] == kind and back.summary() == tr.summary()


def test_parquet_refuses_an_inner_table_beyond_its_footer(tmp_path, monkeypatch):
    import asyncsim.trace as T

    tr = simulate(scen("diloco", updates=3))
    monkeypatch.setattr(T, "_THRIFT_MAX", (1 << 20) + 10)  # (2 GiB in real life)
    with pytest.raises(TraceError, match=r"does not fit in a Parquet file's metadata: save the trace as \.npz"):
        tr.save(tmp_path / "t.parquet")
    assert not (tmp_path / "t.parquet").exists()
    _same(tr, Trace.load(tr.save(tmp_path / "t.npz")), "npz")


def test_plain_traces_carry_no_extra_columns(tmp_path):
    tr = simulate(load_scenario({"workers": [{"count": 2, "compute": const(1)}], "stop": {"updates": 5}}))
    assert not tr.has_outer_columns and len(tr.inner["worker"]) == 0
    for suffix in (".parquet", ".npz", ".csv"):
        back = Trace.load(tr.save(tmp_path / f"p{suffix}"))
        assert set(back.columns) == set(tr.columns) and not back.has_outer_columns
    assert "outer_updates" not in tr.summary()


def _npz_with(tmp_path, edit):
    tr = simulate(scen("async_diloco", n=3, updates=9))
    path = tr.save(tmp_path / "t.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    return bad


@pytest.mark.parametrize("edit, words", [
    (lambda a: a.pop("local_end"), "local_end"),
    (lambda a: a.__setitem__("local_end", a["local_start"] - 1), "'local_end'"),
    (lambda a: a.__setitem__("outer_staleness", a["outer_staleness"] + 5), "'outer_staleness'"),
    (lambda a: a.__setitem__("fragment", a["fragment"] - 1), "'fragment'"),
    (lambda a: a.__setitem__("inner__worker", a["inner__worker"] + 7), "inner table"),
    (lambda a: a.__setitem__("inner__t_done", a["inner__t_start"] - 1), "inner table"),
])
def test_bad_extra_columns_refused_in_one_line(tmp_path, edit, words):
    bad = _npz_with(tmp_path, edit)
    with pytest.raises(TraceError) as e:
        Trace.load(bad)
    msg = str(e.value)
    assert words in msg and "bad.npz" in msg and "\n" not in msg


def test_simulate_json_keys(tmp_path):
    import json

    f = tmp_path / "s.yaml"
    f.write_text("workers: [{count: 4, compute: {dist: constant, value: 0.5}}]\n"
                 "policy: {kind: diloco, inner_steps: 10}\nstop: {updates: 3}\n")
    code, stdout, err = cli(["simulate", str(f), "--json", "--out", str(tmp_path / "t.parquet")])
    assert code == 0, err
    out = json.loads(stdout)
    assert out["outer_updates"] == 3 and out["inner_gradients"] == 120 and out["pseudo_gradients"] == 12
    assert out["inner_steps_per_second"] == pytest.approx(8.0) and out["communication_fraction"] == 0.0
    assert out["outer_staleness_mean"] == 0.0 and out["outer_staleness_max"] == 0


# -------------------------------------------------------------------- plan
def test_plan_compares_the_family_on_inner_gradient_rates(tmp_path):
    """Speed-ups against the all-reduce baseline count inner gradients (N·H per DiLoCo round);
    the outer-level columns are reported; varied H reaches every kind of the family, and
    fragments only streaming_diloco."""
    from asyncsim.plan import PlanSpec, SerialBackend, expand, run_plan

    n, t, params = 4, 0.5, 1_000_000
    sc = scen("streaming_diloco", n=n, compute=t, net=STAR, params=params, inner_steps=4, fragments=2,
              time=40.0)
    plan = PlanSpec(sc, vary=[("policy.inner_steps", [4, 8])],
                    policies=["diloco", "streaming_diloco", "async_diloco"], time=40.0, base_lr=0.1,
                    baseline="allreduce", criteria="mean")
    pts = expand(plan)
    assert {p.policy for p in pts} == {"diloco", "streaming_diloco", "async_diloco", "allreduce"}
    assert all(p.task.scenario["policy"].get("fragments", 1) == (2 if p.policy == "streaming_diloco" else 1)
               for p in pts if p.policy != "allreduce")
    res = run_plan(plan, tmp_path / "out", SerialBackend(), report=False)
    rows = {(r["policy.inner_steps"], r["policy"]): r for r in res.rows}
    d = ring_time(n, params * 4)
    for h in (4, 8):
        base = rows[(h, "allreduce")]
        dl = rows[(h, "diloco")]
        # diloco at constant times: N·H inner gradients per H·t + D; allreduce: N per t + D
        # (and the inner steps of the round under way at the end: min(H, ⌊rest / t⌋) per worker)
        rounds = math.floor(40.0 / (h * t + d))
        inner = n * (rounds * h + min(h, math.floor((40.0 - rounds * (h * t + d)) / t)))
        assert dl["outer_updates"] == rounds and dl["inner_gradients"] == inner
        assert dl["gradient_rate"] == pytest.approx(inner / 40.0, rel=1e-12)
        assert dl["speedup_throughput"] == pytest.approx(dl["gradient_rate"] / base["gradient_rate"], rel=1e-12)
        assert dl["communication_fraction"] > 0 and dl["time_per_outer_round"] > h * t
        assert rows[(h, "async_diloco")]["outer_staleness_max"] >= 1
        # synchronous DiLoCo's trace criterion is the closed form's α* (staleness 0), and the
        # row's lr is lr_fraction · α*/a with a = 2/base_lr, the inner learning rate
        from asyncsim.stability.diloco import diloco_alpha_star

        assert dl["alpha_star"] == pytest.approx(diloco_alpha_star(h, 0.7, 0.9, True), rel=1e-5)
        assert dl["lr"] == pytest.approx(0.5 * dl["alpha_star"] / (2 / 0.1), rel=1e-12)
        assert dl["criterion"] == "trace" and math.isfinite(dl["outer_lr_max"])
        # first-order progress: inner steps per worker per second × α*, against updates/s × α*
        assert dl["step_rate"] == pytest.approx(inner / n / 40.0, rel=1e-12)
        assert dl["stability_adjusted_speed"] == pytest.approx(
            dl["step_rate"] * dl["alpha_star"] / (base["update_rate"] * base["alpha_star"]), rel=1e-12)


def test_plan_report_draws_each_diloco_rows_stable_region(tmp_path):
    """plan reports the stable region in (η, η_o) of every DiLoCo row: the record carries the one
    `asyncsim stability` computes on the row's own trace, and the report draws it."""
    from asyncsim.plan import PlanSpec, SerialBackend, run_plan
    from asyncsim.stability import analyze

    sc = scen("diloco", n=4, compute={"dist": "lognormal", "mean": 0.5, "cv": 0.3}, net=STAR, params=1_000_000,
              inner_steps=4, time=60.0)
    plan = PlanSpec(sc, policies=["diloco", "async_diloco"], time=60.0, base_lr=0.1, baseline="allreduce",
                    criteria="mean")
    res = run_plan(plan, tmp_path / "out", SerialBackend(), report=True)
    assert (tmp_path / "out" / "figures" / "diloco-regions.png").stat().st_size > 1000
    assert "Stable regions of the DiLoCo rows" in (tmp_path / "out" / "report.md").read_text()
    store = tmp_path / "out" / "points"
    recs = [json.loads(f.read_text()) for f in store.rglob("*.json")]
    by_policy = {r["scenario"]["policy"]["kind"]: r for r in recs}
    for kind in ("diloco", "async_diloco"):
        rec = by_policy[kind]
        tr = simulate(load_scenario(rec["scenario"]), time=60.0)
        want = analyze(tr, base_lr=0.1).diloco["stable_region"]
        got = rec["stability"]["stable_region"]
        assert got["method"] == want["method"] == ("closed-form" if kind == "diloco" else "trace")
        np.testing.assert_allclose(np.array(got["outer_lr_max"], dtype=float),
                                   np.array(want["outer_lr_max"], dtype=float), rtol=1e-12)
    assert len(res.rows) == 3


def test_validate_shows_the_outer_schedule(tmp_path):
    import json

    f = tmp_path / "v.yaml"
    f.write_text("workers: [{count: 4, compute: {dist: constant, value: 1}}]\n"
                 "policy: {kind: streaming_diloco, inner_steps: 8, fragments: 2}\n")
    code, out, _ = cli(["validate", str(f)])
    assert code == 0 and "streaming_diloco, H = 8, P = 2" in out
    code, out, _ = cli(["validate", "--json", str(f)])
    assert json.loads(out)["files"][0]["inner_steps"] == 8


# ------------------------------------------------------- random scenarios

@st.composite
def diloco_scenarios(draw):
    sc = draw(cluster_scenarios())
    kind = draw(st.sampled_from(KINDS))
    p = draw(st.sampled_from([1, 2, 3])) if kind == "streaming_diloco" else 1
    pol = {"kind": kind, "inner_steps": p * draw(st.integers(1, 4))}
    if kind == "streaming_diloco":
        pol.update(fragments=p, mixing=draw(st.sampled_from([0.0, 0.5])))
    n = sum(g["count"] for g in sc["workers"])
    if kind != "async_diloco":
        pol["algorithm"] = draw(st.sampled_from(["ring", "tree"] + (["halving_doubling"] if n & (n - 1) == 0 else [])))
    sc["policy"] = pol
    if "updates" in sc["stop"]:
        sc["stop"] = {"updates": min(sc["stop"]["updates"], 60)}
    return sc


@settings(max_examples=int(os.environ.get("ASYNCSIM_PARITY_EXAMPLES", "150")) // 6, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(diloco_scenarios())
def test_random_diloco_scenarios_identical_and_valid(sc):
    s = load_scenario(sc)
    a, b = simulate(s, engine="simpy"), simulate(s, engine="heap")
    a.validate()
    _same(a, b, str(sc))
    assert np.all(a.local_end - a.local_start >= 1)
    # every inner step ended by the end of the run, and each worker's steps are back to back
    inner = a.inner
    assert np.all(inner["t_done"] <= a.sim_time)
    for w in range(a.n_workers):
        mine = np.sort(inner["local_step"][inner["worker"] == w])
        np.testing.assert_array_equal(mine, np.arange(len(mine)))


# ------------------------------------------------------------ end to end
def test_simulated_local_sgd_h1_replays_as_allreduce_sgd():
    """End to end through both halves of the issue: local_sgd with H = 1, outer lr 1, no momentum,
    simulated on the same cluster as all-reduce S-SGD (no network: the same round times), replays
    to S-SGD's loss curve on the quadratic (same minibatch keys), and every DiLoCo kind's simulated
    trace replays (the replay accepts every row the simulator writes)."""
    from asyncsim.train import replay

    comp = {"dist": "lognormal", "mean": 0.3, "cv": 0.4}
    ls = simulate(scen("local_sgd", n=4, compute=comp, inner_steps=1, updates=25, seed=5))
    ar = simulate(load_scenario({"name": "ar", "seed": 5, "workers": [{"count": 4, "compute": comp}],
                                 "policy": {"kind": "allreduce"}, "stop": {"updates": 25}}))
    np.testing.assert_array_equal(ls.t_applied, ar.t_applied)
    kw = dict(dataset="quadratic", dim=8, sharpness=1.0, lr=0.3, log_every=1, device="cpu")
    a, b = replay(ls, optimizer="sgd", **kw), replay(ar, optimizer="sgd", **kw)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12, atol=1e-300)
    np.testing.assert_array_equal(a.sim_time, b.sim_time)
    for kind, extra in (("diloco", {}), ("streaming_diloco", {"fragments": 2}), ("async_diloco", {})):
        tr = simulate(scen(kind, n=3, compute={"dist": "exponential", "mean": 0.1}, net=STAR,
                           params=5_000_000, inner_steps=4, updates=12, **extra))
        res = replay(tr, dataset="quadratic", dim=4, sharpness=1.0, lr=0.05, device="cpu")
        assert res.steps == 12 and not res.diverged
