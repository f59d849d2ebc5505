"""The flow-level (fair) network model: max-min allocation, closed forms, physics,
an independent fluid model, circuit byte-identity and engine parity."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncsim.engine import simulate
from asyncsim.errors import ScenarioError
from asyncsim.network import build_network, max_min_rates
from asyncsim.network.maxmin import progressive_filling
from asyncsim.scenario import load_scenario

from _fluid import fluid_async_star, naive_max_min

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
COLS = ["step", "worker", "read_version", "staleness", "t_read", "t_done", "t_applied"]


def lat(v):
    return {"dist": "constant", "value": v}


def scen(workers, net, params=31_250_000, policy=None, updates=1, apply=0.0):
    return {"name": "f", "seed": 1, "workers": workers, "network": net, "policy": policy or {"kind": "sync"},
            "model": {"parameters": params, "bytes_per_parameter": 4}, "stop": {"updates": updates},
            "server": {"apply": lat(apply)}}


def both(sc):
    """SimPy and heap traces (asserted identical); returns the SimPy one."""
    a, b = simulate(sc, engine="simpy"), simulate(sc, engine="heap")
    for c in COLS:
        np.testing.assert_array_equal(getattr(a, c), getattr(b, c), err_msg=c)
    assert a.sim_time == b.sim_time and a.n_updates == b.n_updates
    return a


# ------------------------------------------------------------ max-min rates
def test_nic_capped_flows_leave_the_rest_of_the_shared_link():
    # 40 Gb/s server link, four 1 Gb/s and four 10 Gb/s workers pulling at once
    links = [(0,)] * 8
    caps = [1.0] * 4 + [10.0] * 4
    assert progressive_filling(links, [1] * 8, caps, [40.0]) == [1.0] * 4 + [9.0] * 4
    # the same as two classes of four
    assert max_min_rates([(0,), (0,)], [4, 4], [1.0, 10.0], [40.0]) == [1.0, 9.0]


def test_parking_lot():
    # L links of capacity 1; one long flow crosses all, one short flow per link: all get 1/2
    for L in (1, 2, 5):
        links = [tuple(range(L))] + [(i,) for i in range(L)]
        assert progressive_filling(links, [1] * (L + 1), [math.inf] * (L + 1), [1.0] * L) == [0.5] * (L + 1)
    # unequal capacities (Bertsekas & Gallager's example shape): link 0 = 1, link 1 = 3.
    # long flow over both, one short on each: link 0 binds first (1/2 each), the short flow
    # on link 1 takes the rest, 3 - 1/2.
    assert progressive_filling([(0, 1), (0,), (1,)], [1, 1, 1], [math.inf] * 3, [1.0, 3.0]) == [0.5, 0.5, 2.5]


@st.composite
def instances(draw):
    n_links = draw(st.integers(1, 6))
    n_cls = draw(st.integers(1, 7))
    links = [tuple(sorted(draw(st.sets(st.integers(0, n_links - 1), min_size=1, max_size=n_links))))
             for _ in range(n_cls)]
    weights = [draw(st.integers(1, 4)) for _ in range(n_cls)]
    caps = [draw(st.one_of(st.just(math.inf), st.floats(0.1, 10))) for _ in range(n_cls)]
    cap = [draw(st.floats(0.5, 20)) for _ in range(n_links)]
    return links, weights, caps, cap


@settings(max_examples=300, deadline=None)
@given(instances())
def test_allocation_is_max_min_fair(inst):
    """The definition, checked directly: feasible, and every flow is at its cap or has a
    bottleneck link (saturated, and no flow on it gets more)."""
    links, weights, caps, cap = inst
    r = max_min_rates(links, weights, caps, cap)
    assert r == progressive_filling(links, weights, caps, cap)
    load = [0.0] * len(cap)
    for ls, w, x, cp in zip(links, weights, r, caps):
        assert 0 < x <= cp * (1 + 1e-12)
        for li in ls:
            load[li] += w * x
    for li, c in enumerate(cap):
        assert load[li] <= c * (1 + 1e-9)
    for c, (ls, x) in enumerate(zip(links, r)):
        if x >= caps[c] * (1 - 1e-9):
            continue
        assert any(load[li] >= cap[li] * (1 - 1e-9) and all(r[d] <= x * (1 + 1e-9)
                                                             for d in range(len(links)) if li in links[d])
                   for li in ls), (c, r)
    # and the textbook per-flow algorithm agrees when classes are expanded into flows
    if all(math.isinf(x) for x in caps):
        flat = [ls for ls, w in zip(links, weights) for _ in range(w)]
        ref = naive_max_min(flat, dict(enumerate(cap)))
        np.testing.assert_allclose([x for x, w in zip(r, weights) for _ in range(w)], ref, rtol=1e-9)


def test_disjoint_fast_path_is_the_reference():
    rng = np.random.default_rng(5)
    for _ in range(200):
        k = int(rng.integers(1, 5))
        links = [(2 * c, 2 * c + 1) if rng.random() < 0.5 else (2 * c,) for c in range(k)]
        w = [int(x) for x in rng.integers(1, 50, k)]
        caps = [float(x) if rng.random() < 0.7 else math.inf for x in rng.uniform(0.1, 10, k)]
        cap = list(rng.uniform(1, 100, 2 * k))
        assert max_min_rates(links, w, caps, cap) == progressive_filling(links, w, caps, cap)


# ---------------------------------------------------------- closed forms (exact)
def test_one_flow_alone_takes_bytes_over_bandwidth_plus_latencies():
    # one worker, async: cycle = c + 2 (L + B/W) + s, with the NIC (4 Gb/s) the bottleneck
    c, s, l, B = 0.25, 0.003, 0.001, 8e6
    tr = both(scen([{"count": 1, "compute": lat(c), "bandwidth_gbps": 4}],
                   {"topology": "star", "bandwidth_gbps": 10, "latency": lat(l)}, params=2_000_000,
                   policy={"kind": "async"}, updates=20, apply=s))
    W = 4e9 / 8
    np.testing.assert_allclose(np.diff(tr.t_applied), c + 2 * (2 * l + B / W) + s, rtol=1e-12)
    np.testing.assert_allclose(tr.t_read[0], 2 * l + B / W, rtol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 7])
def test_k_equal_flows_on_one_link_finish_together_at_kB_over_C(k):
    B, l = 125e6, 0.001                                    # 1 Gbit
    tr = both(scen([{"count": k, "compute": lat(1.0)}],
                   {"topology": "star", "bandwidth_gbps": 10, "server_bandwidth_gbps": 2, "latency": lat(l)}))
    np.testing.assert_allclose(tr.t_read, k * B * 8 / 2e9 + 2 * l, rtol=1e-9)
    # the pushes start together too and share the other direction the same way
    np.testing.assert_allclose(tr.t_applied, 2 * (k * B * 8 / 2e9 + 2 * l) + 1.0, rtol=1e-9)


def test_slow_nics_get_their_rate_and_fast_ones_the_rest():
    # the example: 40 Gb/s server link, four 1 Gb/s and four 10 Gb/s workers, 1 Gbit each
    tr = both(scen([{"count": 4, "compute": lat(5.0), "bandwidth_gbps": 1},
                    {"count": 4, "compute": lat(5.0), "bandwidth_gbps": 10}],
                   {"topology": "star", "bandwidth_gbps": 10, "server_bandwidth_gbps": 40}))
    by_worker = tr.t_read[np.argsort(tr.worker)]
    np.testing.assert_allclose(by_worker[:4], 1.0, rtol=1e-9)        # 1 Gbit at 1 Gb/s throughout
    np.testing.assert_allclose(by_worker[4:], 1 / 9, rtol=1e-9)      # 9 Gb/s each while all eight pull


def test_lock_step_cycle_by_hand():
    """Sync, N = 6 on a star with a 20 Gb/s server link and 10 Gb/s NICs: each phase's six
    flows share the server link, 20/6 Gb/s each, so a round lasts
    2 (B·8/(20e9/6) + 2 l) + c + s."""
    N, c, s, l, params = 6, 0.05, 0.002, 2e-4, 2_500_000
    bits = params * 4 * 8
    tr = both(scen([{"count": N, "compute": lat(c)}],
                   {"topology": "star", "bandwidth_gbps": 10, "server_bandwidth_gbps": 20, "latency": lat(l)},
                   params=params, updates=10, apply=s))
    cycle = 2 * (bits / (20e9 / 6) + 2 * l) + c + s
    np.testing.assert_allclose(np.diff(np.unique(tr.t_applied)), cycle, rtol=1e-9)
    # two-tier, 2 racks of 3, uplinks 10/ (3*10/4 = 7.5 Gb/s), server link 100: each rack's
    # three flows share its uplink, 2.5 Gb/s each
    tr = both(scen([{"count": N, "compute": lat(c)}],
                   {"topology": "two_tier", "racks": 2, "bandwidth_gbps": 10, "oversubscription": 4,
                    "server_bandwidth_gbps": 100, "latency": lat(l)}, params=params, updates=10, apply=s))
    cycle = 2 * (bits / 2.5e9 + 3 * l) + c + s
    np.testing.assert_allclose(np.diff(np.unique(tr.t_applied)), cycle, rtol=1e-9)


def test_custom_topology_shares_only_the_common_link():
    # server s -- x (4 Gb/s) -- {y: 10, z: 1}; workers at y, y and z pull 1 Gbit at once.
    # z's flow is capped by its private 1 Gb/s link; the two y flows share s-x and x-y:
    # s-x has 4 - 1 = 3 Gb/s left for them, 1.5 each (x-y's 10 do not bind), so they are
    # done at 1/1.5 s; z stays at its cap and is done at 1 s.
    net = {"topology": "custom", "server": "s", "edges": [
        {"u": "s", "v": "x", "bandwidth_gbps": 4}, {"u": "x", "v": "y", "bandwidth_gbps": 10},
        {"u": "x", "v": "z", "bandwidth_gbps": 1}]}
    tr = both(scen([{"count": 3, "compute": lat(5.0), "placement": ["y", "y", "z"]}], net))
    np.testing.assert_allclose(tr.t_read[np.argsort(tr.worker)], [1 / 1.5, 1 / 1.5, 1.0], rtol=1e-9)


# ------------------------------------------------------------------ physics
def _rate(sc, engine="heap"):
    tr = simulate(sc, engine=engine)
    return tr.n_updates / tr.sim_time


def _async_star(server_gbps, n=8, updates=3000):
    return {"name": "p", "seed": 2, "workers": [{"count": n, "compute": {"dist": "exponential", "mean": 0.4}}],
            "network": {"topology": "star", "bandwidth_gbps": 10, "server_bandwidth_gbps": server_gbps,
                        "latency": lat(5e-4)},
            "model": {"parameters": 25_000_000}, "server": {"apply": lat(0.001)}, "stop": {"updates": updates}}


def test_faster_server_link_raises_the_update_rate_where_it_binds():
    rates = [_rate(_async_star(bw)) for bw in (10, 20, 40, 1000)]
    assert rates[0] < rates[1] < rates[2] <= rates[3] * (1 + 1e-9)
    # with 8 x 10 Gb/s NICs a 1000 Gb/s server link no longer binds: within 1 % of 80 Gb/s
    assert rates[3] == pytest.approx(_rate(_async_star(80)), rel=0.01)
    # under circuit the server link's bandwidth above the NICs' changes nothing (issue 13)
    circ = [_rate({**_async_star(bw), "network": {**_async_star(bw)["network"], "sharing": "circuit"}})
            for bw in (10, 1000)]
    assert circ[0] == circ[1]


def test_oversubscription_and_uplinks_slow_the_cluster_once_they_bind():
    def two_tier(**net):
        sc = load_scenario(ROOT / "scenarios" / "two-tier-oversubscribed.yaml").to_dict()
        sc["network"] = {**sc["network"], **net}
        sc["stop"] = {"updates": 3000}
        return sc

    r = {o: _rate(two_tier(oversubscription=o)) for o in (1, 4, 16, 64)}
    # 16 x 25 Gb/s per rack behind a 100 Gb/s server link: the uplink binds from 400/o < 100/4 ...
    assert r[1] >= r[4] * (1 - 1e-9)
    assert r[4] > r[16] > r[64]
    assert _rate(two_tier(uplink_gbps=10)) < _rate(two_tier(uplink_gbps=100))


# --------------------------------------------- an independent fluid model
def test_async_star_matches_an_independent_fluid_model():
    """Update rate and mean staleness against tests/_fluid.py (its own draws): the
    difference must lie within 4 combined standard errors from batch means."""
    n, mean, params, nic, srv, l, U = 12, 0.02, 1_000_000, 10, 15, 1e-4, 12_000
    bits = params * 4 * 8
    sc = {"name": "x", "seed": 11, "workers": [{"count": n, "compute": {"dist": "exponential", "mean": mean}}],
          "network": {"topology": "star", "bandwidth_gbps": nic, "server_bandwidth_gbps": srv, "latency": lat(l)},
          "model": {"parameters": params}, "stop": {"updates": U}}
    tr = simulate(sc, engine="heap")
    ta_ref, st_ref = fluid_async_star(n, mean, bits, nic * 1e9, srv * 1e9, l, U, seed=3)

    def batch(ta, stale, k=20):
        cut = len(ta) // 10                       # warm-up
        ta, stale = ta[cut:], stale[cut:]
        m = len(ta) // k
        rates = [m / (ta[(i + 1) * m - 1] - ta[i * m]) for i in range(k)]
        st_ = [stale[i * m:(i + 1) * m].mean() for i in range(k)]
        return (np.mean(rates), np.std(rates, ddof=1) / math.sqrt(k), np.mean(st_), np.std(st_, ddof=1) / math.sqrt(k))

    a = batch(tr.t_applied, tr.staleness)
    b = batch(ta_ref, st_ref)
    assert abs(a[0] - b[0]) <= 4 * math.hypot(a[1], b[1]), (a, b)
    assert abs(a[2] - b[2]) <= 4 * math.hypot(a[3], b[3]), (a, b)
    # and the contention is real: far below the uncontended rate n / (mean + 2 (B/W + 2 l))
    assert a[0] < 0.9 * n / (mean + 2 * (bits / (nic * 1e9) + 2 * l))


# ------------------------------------------------------------ circuit: same bytes
def _hash(tr) -> str:
    m = hashlib.sha256()
    for c in COLS:
        m.update(np.ascontiguousarray(getattr(tr, c)).tobytes())
    return m.hexdigest()


def _synthetic():
    base = lambda **kw: {"name": "s", "seed": 3, "model": {"parameters": 2_000_000}, "stop": {"updates": 800}, **kw}
    yield "star-hetero-async", base(
        workers=[{"count": 5, "compute": {"dist": "exponential", "mean": 0.02}},
                 {"count": 3, "compute": {"dist": "lognormal", "mean": 0.03, "cv": 0.5}, "bandwidth_gbps": 1}],
        network={"topology": "star", "bandwidth_gbps": 10, "server_bandwidth_gbps": 20,
                 "latency": {"dist": "exponential", "mean": 1e-4}}, server={"apply": lat(0.001)})
    yield "two-tier-sync", base(
        workers=[{"count": 12, "compute": {"dist": "gamma", "mean": 0.05, "cv": 0.3}}],
        network={"topology": "two_tier", "racks": 3, "bandwidth_gbps": 10, "oversubscription": 4,
                 "latency": lat(5e-5)}, policy={"kind": "sync"})
    yield "two-tier-kasync-place", base(
        workers=[{"count": 4, "compute": {"dist": "exponential", "mean": 0.03}, "placement": [2, 0, 1, 2]},
                 {"count": 4, "compute": {"dist": "exponential", "mean": 0.05}}],
        network={"topology": "two_tier", "racks": 3, "bandwidth_gbps": 10, "uplink_gbps": 5},
        policy={"kind": "k_async", "k": 2})
    yield "custom-ssp", base(
        workers=[{"count": 3, "compute": {"dist": "exponential", "mean": 0.03}, "placement": ["c", "d", "d"]}],
        network={"topology": "custom", "server": "a", "edges": [
            {"u": "a", "v": "b", "bandwidth_gbps": 5}, {"u": "b", "v": "c", "bandwidth_gbps": 2},
            {"u": "b", "v": "d", "bandwidth_gbps": 1, "latency": {"dist": "uniform", "low": 0, "high": 1e-3}}]},
        policy={"kind": "ssp", "bound": 1})
    yield "star-backup-faults", base(
        workers=[{"count": 6, "compute": {"dist": "exponential", "mean": 0.03}}],
        network={"topology": "star", "bandwidth_gbps": 10}, policy={"kind": "backup", "aggregate": 4},
        faults=[{"kind": "link", "worker": 1, "start": 0.1, "end": 0.5, "factor": 0.2},
                {"kind": "link", "worker": 2, "start": 0.2, "end": 0.3, "factor": 0.0},
                {"kind": "crash", "worker": 3, "at": 0.4, "restart_after": 0.3}])
    yield "star-rr", base(workers=[{"count": 4, "compute": {"dist": "exponential", "mean": 0.03}}],
                          network={"topology": "star", "bandwidth_gbps": 10}, policy={"kind": "round_robin"})


def test_circuit_keeps_the_old_traces_byte_for_byte():
    ref = json.loads((DATA / "circuit_traces.json").read_text())
    for name, sc in _synthetic():
        sc["network"]["sharing"] = "circuit"
        for eng in ("simpy", "heap"):
            assert _hash(simulate(sc, engine=eng)) == ref["synthetic"][f"{name}:{eng}"], (name, eng)
    for key, h in ref["bundled"].items():
        fname, eng = key.split(":")
        sc = load_scenario(ROOT / "scenarios" / fname).to_dict()
        sc["network"]["sharing"] = "circuit"
        assert _hash(simulate(sc, updates=1500, engine=eng)) == h, key


def test_fair_parity_on_the_synthetic_scenarios():
    for name, sc in _synthetic():
        both(sc)


# ------------------------------------------------------------------ routing
def test_routes_match_networkx_shortest_paths():
    """Closed-form star / two_tier routes are the paths the networkx routing finds."""
    import networkx as nx

    sc = load_scenario(scen([{"count": 7, "compute": lat(1.0), "placement": [3, 0, 0, 2, 1, 3, 3]}],
                            {"topology": "two_tier", "racks": 4, "bandwidth_gbps": 10, "oversubscription": 2}))
    net = build_network(sc)
    g = net.graph
    dirs = net.directions
    for w in range(7):
        p = net.pull[w].path
        assert list(p) in list(nx.all_shortest_paths(g, "server", f"w{w}"))
        assert [dirs[h] for h in net.pull[w].hops] == list(zip(p[:-1], p[1:]))
        assert [dirs[h] for h in net.push[w].hops] == list(zip(p[::-1][:-1], p[::-1][1:]))
        assert net.pull[w].bandwidths == tuple(g.edges[a, b]["bandwidth_gbps"] for a, b in zip(p[:-1], p[1:]))
    # the uplinks and the server link are shared, the NICs private
    shared = {dirs[h] for r in net.pull + net.push for h in r.shared}
    assert ("server", "core") in shared and ("r3", "core") in shared
    assert not any(d[0].startswith("w") or d[1].startswith("w") for d in shared)


def test_network_is_built_once_per_scenario(monkeypatch):
    from asyncsim.network import topology

    calls = []
    real = topology._build
    monkeypatch.setattr(topology, "_build", lambda sc: calls.append(1) or real(sc))
    sc = load_scenario(_async_star(20, updates=50))
    simulate(sc)                      # engine="auto": the vector engine's check, then the run
    assert len(calls) == 1


def test_no_networkx_for_star_and_two_tier():
    import subprocess
    import sys

    code = ("import sys; from asyncsim.engine import simulate; "
            f"simulate({_async_star(20, updates=50)!r}); "
            "print('networkx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("net,needle", [
    ({"topology": "star", "bandwidth_gbps": 10, "sharing": "tcp"}, "network.sharing"),
    ({"topology": "star", "bandwidth_gbps": 0}, "bandwidth_gbps"),
    ({"topology": "star", "bandwidth_gbps": -1}, "bandwidth_gbps"),
])
def test_bad_network_is_one_line(net, needle):
    with pytest.raises(ScenarioError) as e:
        load_scenario(scen([{"count": 2, "compute": lat(1.0)}], net))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_worker_without_a_path_is_one_line():
    net = {"topology": "custom", "server": "a", "edges": [{"u": "a", "v": "b", "bandwidth_gbps": 1},
                                                          {"u": "c", "v": "d", "bandwidth_gbps": 1}]}
    with pytest.raises(ScenarioError) as e:
        simulate(scen([{"count": 1, "compute": lat(1.0), "placement": "d"}], net))
    assert "no path" in str(e.value) and "\n" not in str(e.value)
