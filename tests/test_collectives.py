"""All-reduce collectives and the ``allreduce`` policy against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncsim.cli import run
from asyncsim.collectives import Collectives, schedule_for
from asyncsim.engine import simulate
from asyncsim.errors import ScenarioError
from asyncsim.network import build_network
from asyncsim.policies.allreduce import bucket_sizes
from asyncsim.scenario import load_scenario

COLS = ["step", "worker", "read_version", "staleness", "t_read", "t_done", "t_applied"]


def lat(v):
    return {"dist": "constant", "value": v}


def sc_of(n=8, net=None, policy=None, params=25_000_000, compute=0.5, gpus=1, updates=4, apply=0.0, **w):
    d = {"name": "ar", "seed": 2, "workers": [{"count": n, "compute": compute if isinstance(compute, dict)
                                                else lat(compute), "gpus_per_node": gpus, **w}],
         "policy": {"kind": "allreduce", **(policy or {})}, "stop": {"updates": updates},
         "server": {"apply": lat(apply)}}
    if params:
        d["model"] = {"parameters": params}
    if net is not None:
        d["network"] = net
    return d


def coll(sc, algorithm=None):
    sc = load_scenario(sc)
    return Collectives(build_network(sc), algorithm or sc.policy.algorithm, sc.n_workers, sc.node_of())


def both(sc):
    a, b = simulate(sc, engine="simpy"), simulate(sc, engine="heap")
    for c in COLS:
        np.testing.assert_array_equal(getattr(a, c), getattr(b, c), err_msg=c)
    return a


STAR = {"topology": "star", "bandwidth_gbps": 10, "latency": lat(1e-5)}


# ------------------------------------------------------------ closed forms
@pytest.mark.parametrize("n", [2, 3, 8, 33])
def test_ring_is_the_nccl_tests_relation(n):
    """2(N−1)/N · S/B + 2(N−1)·α (nccl-tests doc/PERFORMANCE.md: busBW = algBW · 2(n−1)/n)."""
    S, B, alpha = 1e8, 10e9 / 8, 2 * 1e-5        # α: two hops (NIC out, NIC in) per step
    got = coll(sc_of(n, STAR)).allreduce_time(S)
    assert got == pytest.approx(2 * (n - 1) / n * S / B + 2 * (n - 1) * alpha, rel=1e-9)


@pytest.mark.parametrize("n", [2, 4, 16])
def test_halving_doubling(n):
    S, B, alpha = 1e8, 10e9 / 8, 2e-5
    got = coll(sc_of(n, STAR, {"algorithm": "halving_doubling"})).allreduce_time(S)
    assert got == pytest.approx(2 * (n - 1) / n * S / B + 2 * math.log2(n) * alpha, rel=1e-9)


def test_tree_by_hand_on_three_ranks():
    # reduce: ranks 0 and 2 send S/2 to 1 (tree 1), 1 and 0 send S/2 to 2 (tree 2): rank 0's NIC
    # carries two flows out, ranks 1 and 2 two flows in, so every flow gets B/2 and the level
    # takes (S/2)/(B/2) = S/B; the broadcast mirrors it. 2 S/B + 2 α.
    S, B, alpha = 1e8, 10e9 / 8, 2e-5
    assert coll(sc_of(3, STAR, {"algorithm": "tree"})).allreduce_time(S) == pytest.approx(2 * S / B + 2 * alpha,
                                                                                          rel=1e-9)


@pytest.mark.parametrize("g,m", [(8, 8), (4, 2), (2, 5), (8, 1), (1, 4)])
def test_hierarchical(g, m):
    """2(g−1)/g · S/B_intra + 2(m−1)/m · (S/g)/B_inter, plus the path latencies."""
    S, b_intra, b_inter, l_intra, l_net = 1.4e10, 3600e9 / 8, 400e9 / 8, 1e-6, 2e-6
    net = {"topology": "star", "bandwidth_gbps": 400, "latency": lat(l_net), "intra_node_gbps": 3600,
           "intra_node_latency": lat(l_intra)}
    c = coll(sc_of(g * m, net, {"algorithm": "hierarchical"}, gpus=g))
    want = (2 * (g - 1) / g * S / b_intra + 2 * (m - 1) / m * (S / g) / b_inter
            + 2 * (g - 1) * 2 * l_intra + 2 * (m - 1) * 2 * l_net)
    assert c.allreduce_time(S) == pytest.approx(want, rel=1e-9)


def test_gpus_of_one_node_use_only_their_intra_node_links():
    net = {**STAR, "intra_node_gbps": 100}
    sc = load_scenario(sc_of(8, net, gpus=4))
    nw = build_network(sc)
    dirs = nw.directions
    assert [dirs[h] for h in nw.peer_hops(0, 3)] == [("w0", "n0"), ("n0", "w3")]
    assert [dirs[h] for h in nw.peer_hops(3, 4)] == [("w3", "switch"), ("switch", "w4")]
    # the parameter server's routes are unchanged by the nodes
    assert nw.pull[5].path == ("server", "switch", "w5")
    # a ring with consecutive ranks: 6 of the 8 steps' flows stay inside a node
    S = 1e8
    ring_nodes = coll(sc_of(8, net, gpus=4)).allreduce_time(S)
    ring_flat = coll(sc_of(8, STAR)).allreduce_time(S)
    assert ring_nodes == pytest.approx(ring_flat, rel=1e-9)  # the NIC hops still bind every step


# --------------------------------------------------------------- contention
def _two_tier(placement=None, oversub=4.0):
    net = {"topology": "two_tier", "racks": 2, "bandwidth_gbps": 10, "oversubscription": oversub,
           "latency": lat(1e-5)}
    extra = {"placement": placement} if placement is not None else {}
    return sc_of(8, net, **extra)


def test_contiguous_ring_ignores_oversubscription_interleaved_pays_for_it():
    S, N = 1e8, 8
    base = coll(_two_tier(oversub=1.0)).allreduce_time(S)
    contiguous = coll(_two_tier(oversub=4.0)).allreduce_time(S)
    # contiguous ranks: one flow per uplink direction per step, 10 Gb/s (= a NIC) available
    assert contiguous == pytest.approx(base, rel=1e-12)
    # two racks of four, ranks alternating: every flow crosses racks; a rack's uplink (4 x 10 / 4 =
    # 10 Gb/s) carries its four ranks' flows at 2.5 Gb/s each; four hops of latency per step
    inter = coll(_two_tier([0, 1] * 4, oversub=4.0)).allreduce_time(S)
    want = 2 * (N - 1) * ((S / N) * 8 / 2.5e9 + 4 * 1e-5)
    assert inter == pytest.approx(want, rel=1e-9)
    # and without oversubscription interleaving costs only the extra hops' latency
    inter1 = coll(_two_tier([0, 1] * 4, oversub=1.0)).allreduce_time(S)
    assert inter1 == pytest.approx(2 * (N - 1) * ((S / N) * 8 / 10e9 + 4 * 1e-5), rel=1e-9)


# ------------------------------------------------------------ the policy
def test_no_overlap_iteration_is_compute_plus_collective():
    c, S = 0.5, 1e8
    tr = both(sc_of(8, STAR, {"overlap": False, "bucket_mb": 25}, apply=0.002, updates=5))
    d = coll(sc_of(8, STAR)).allreduce_time(25e6)
    assert bucket_sizes(S, 25) == [25e6] * 4
    np.testing.assert_allclose(np.diff(np.unique(tr.t_applied)), c + 4 * d + 0.002, rtol=1e-9)
    assert np.all(tr.staleness == 0) and np.all(np.bincount(tr.step) == 8)


def _iteration_by_hand(t, f, sizes, dur):
    """The semantics, written out: bucket k is ready when its last byte is produced,
    (1 − f) t + f t E_k / S; one bucket at a time, in order."""
    S = sum(sizes)
    end, acc = 0.0, 0.0
    for k, (b, d) in enumerate(zip(sizes, dur)):
        acc += b
        ready = (1 - f) * t + f * t * acc / S
        end = max(end, ready) + d
    return end


@pytest.mark.parametrize("bucket_mb", [0.5, 5, 25, 100])
def test_overlapped_buckets_follow_the_pipeline(bucket_mb):
    c, f, S = 0.5, 0.667, 1e8
    tr = both(sc_of(8, STAR, {"bucket_mb": bucket_mb, "backward_fraction": f}, updates=3))
    sizes = bucket_sizes(S, bucket_mb)
    cl = coll(sc_of(8, STAR))
    dur = [cl.allreduce_time(b) for b in sizes]
    want = _iteration_by_hand(c, f, sizes, dur)
    np.testing.assert_allclose(np.diff(np.unique(tr.t_applied)), want, rtol=1e-9)
    # limits: communication faster than production -> backward end + the last bucket;
    # slower -> forward + first bucket's production + every bucket back to back
    K = len(sizes)
    if all(d < f * c * b / S for b, d in zip(sizes, dur)):
        assert want == pytest.approx(c + dur[-1], rel=1e-9)
    if min(dur) > f * c * max(sizes) / S:
        assert want == pytest.approx((1 - f) * c + f * c * sizes[0] / S + sum(dur), rel=1e-9)
    assert K == math.ceil(S / (bucket_mb * 1e6))


def test_slowest_worker_sets_every_bucket():
    comp = {"dist": "lognormal", "mean": 0.5, "cv": 0.3}
    tr = both(sc_of(8, STAR, {"bucket_mb": 10}, compute=comp, updates=6))
    cl = coll(sc_of(8, STAR))
    sizes = bucket_sizes(1e8, 10)
    dur = [cl.allreduce_time(b) for b in sizes]
    for v in range(6):
        rows = tr.step == v
        t0 = tr.t_read[rows][0]
        t_max = (tr.t_done[rows] - t0).max()
        want = _iteration_by_hand(t_max, 0.667, sizes, dur)
        assert tr.t_applied[rows][0] - t0 == pytest.approx(want, rel=1e-9)
        assert np.all(np.diff(tr.t_done[rows]) >= 0)          # rows in order of t_done


def test_without_network_allreduce_is_sync():
    base = {"name": "a", "seed": 4, "workers": [{"count": 6, "compute": {"dist": "gamma", "mean": 0.3, "cv": 0.4}}],
            "server": {"apply": lat(0.01)}, "stop": {"updates": 40}}
    a = simulate({**base, "policy": {"kind": "sync"}}, engine="simpy")
    b = both({**base, "policy": {"kind": "allreduce", "bucket_mb": 1}})
    for c in COLS:
        np.testing.assert_array_equal(getattr(a, c), getattr(b, c), err_msg=c)


def test_allreduce_feeds_stability_and_the_trainer():
    from asyncsim.stability import analyze
    from asyncsim.train import replay

    tr = simulate(sc_of(4, STAR, {"bucket_mb": 25}, compute={"dist": "exponential", "mean": 0.3}, updates=60))
    assert np.all(tr.staleness == 0)
    rep = analyze(tr, criteria=("mean", "trace"))
    assert rep.alpha_star["mean"] == pytest.approx(2.0, rel=1e-6)     # τ = 0: gradient descent's edge
    res = replay(tr, dataset="quadratic", sharpness=1.0, optimizer="sgd", lr=0.5)
    assert not res.diverged


def test_plan_with_the_allreduce_baseline(tmp_path, capsys):
    import json
    import yaml

    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({**sc_of(4, STAR, compute={"dist": "exponential", "mean": 0.3}, updates=50),
                                 "policy": {"kind": "async"}}))
    rc = run(["plan", str(p), "--vary", "workers.0.count=2,4", "--criteria", "mean", "--workers", "1",
              "--out", str(tmp_path / "o"), "--no-report", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    from asyncsim.plan.store import read_table

    rows = read_table(tmp_path / "o" / "results.parquet")
    assert {r["policy"] for r in rows} == {"async", "allreduce"}
    assert {r["baseline"] for r in rows} == {"allreduce"}
    for r in rows:
        base = next(b for b in rows if b["policy"] == "allreduce" and b["grid_point"] == r["grid_point"])
        assert r["speedup_throughput"] == pytest.approx(r["gradient_rate"] / base["gradient_rate"], rel=1e-12)
    assert json.loads(out.out)["n_rows"] == 4


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize("patch,needle", [
    ({"policy": {"kind": "allreduce", "algorithm": "butterfly"}}, "policy.algorithm"),
    ({"policy": {"kind": "allreduce", "bucket_mb": 0}}, "policy.bucket_mb"),
    ({"policy": {"kind": "allreduce", "bucket_mb": -3}}, "policy.bucket_mb"),
    ({"policy": {"kind": "allreduce", "backward_fraction": 1.5}}, "policy.backward_fraction"),
    ({"policy": {"kind": "allreduce", "backward_fraction": -0.1}}, "policy.backward_fraction"),
    ({"workers": [{"count": 6, "gpus_per_node": 4, "compute": lat(1.0)}]}, "workers.0.gpus_per_node"),
    ({"workers": [{"count": 8, "gpus_per_node": 4, "compute": lat(1.0)}]}, "network.intra_node_gbps"),
    ({"workers": [{"count": 6, "compute": lat(1.0)}],
      "policy": {"kind": "allreduce", "algorithm": "halving_doubling"}}, "policy.algorithm"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, patch, needle):
    import yaml

    d = {**sc_of(8, STAR), **patch}
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d))
    assert run(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    with pytest.raises(ScenarioError):
        load_scenario(d)


def test_schedules_cover_every_rank():
    for alg in ("ring", "tree", "halving_doubling"):
        sched = schedule_for(alg, list(range(8)), [0] * 8, 1e6)
        senders = {a for pat, _ in sched for a, _, _ in pat}
        assert senders == set(range(8)), alg
