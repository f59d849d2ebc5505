"""Network graphs, routes and the transfer model against exact (deterministic) results."""

from __future__ import annotations

import numpy as np
import pytest

from asyncsim.engine import simulate
from asyncsim.network import build_network
from asyncsim.scenario import load_scenario

ENGINE = "simpy"


def scen(n=1, net=None, compute=0.5, apply=0.0, params=1_000_000, policy=None, updates=20, workers=None):
    sc = {
        "name": "n", "seed": 1,
        "workers": workers or [{"count": n, "compute": {"dist": "constant", "value": compute}}],
        "policy": policy or {"kind": "async"},
        "stop": {"updates": updates},
        "server": {"apply": {"dist": "constant", "value": apply}},
    }
    if net is not None:
        sc["network"] = net
    if params:
        sc["model"] = {"parameters": params, "bytes_per_parameter": 4}
    return sc


def lat(v):
    return {"dist": "constant", "value": v}


# ------------------------------------------------------------------ graphs
def test_star_graph_and_routes():
    sc = load_scenario(scen(3, {"topology": "star", "bandwidth_gbps": 10, "server_bandwidth_gbps": 40},
                            workers=[{"count": 2, "compute": lat(1.0)},
                                     {"count": 1, "compute": lat(1.0), "bandwidth_gbps": 1}]))
    net = build_network(sc)
    g = net.graph
    assert set(g.nodes) == {"server", "switch", "w0", "w1", "w2"}
    assert g.edges["server", "switch"]["bandwidth_gbps"] == 40
    assert g.edges["w0", "switch"]["bandwidth_gbps"] == 10
    assert g.edges["w2", "switch"]["bandwidth_gbps"] == 1
    assert net.pull[0].path == ("server", "switch", "w0")
    assert net.push[0].path == ("w0", "switch", "server")
    assert net.n_links == 2 * g.number_of_edges()
    # hold = bytes / smallest bandwidth on the path
    assert net.pull[0].hold == pytest.approx(4e6 * 8 / 10e9, rel=1e-15)
    assert net.pull[2].hold == pytest.approx(4e6 * 8 / 1e9, rel=1e-15)
    # pull and push of one worker use disjoint link directions (full duplex)
    assert not set(net.pull[0].links) & set(net.push[0].links)


def test_two_tier_placement_and_uplinks():
    net_spec = {"topology": "two_tier", "racks": 3, "bandwidth_gbps": 10, "oversubscription": 2}
    sc = load_scenario(scen(8, net_spec))
    g = build_network(sc).graph
    racks = [next(v for v in g.neighbors(f"w{i}")) for i in range(8)]
    assert racks == ["r0", "r0", "r0", "r1", "r1", "r1", "r2", "r2"]  # rack i*R//N
    assert g.edges["r0", "core"]["bandwidth_gbps"] == pytest.approx(3 * 10 / 2)
    assert g.edges["r2", "core"]["bandwidth_gbps"] == pytest.approx(2 * 10 / 2)
    assert g.edges["server", "core"]["bandwidth_gbps"] == 10
    sc = load_scenario(scen(net={**net_spec, "uplink_gbps": 7},
                            workers=[{"count": 2, "compute": lat(1.0), "placement": 2},
                                     {"count": 2, "compute": lat(1.0), "placement": [0, 1]}]))
    net = build_network(sc)
    g = net.graph
    assert [next(iter(g.neighbors(f"w{i}"))) for i in range(4)] == ["r2", "r2", "r0", "r1"]
    assert g.edges["r1", "core"]["bandwidth_gbps"] == 7
    assert net.pull[0].path == ("server", "core", "r2", "w0")


def test_custom_routes_tie_break_and_colocated_worker():
    def build(edges):
        e = [{"u": u, "v": v, "bandwidth_gbps": 1} for u, v in edges]
        sc = load_scenario(scen(net={"topology": "custom", "server": "a", "edges": e},
                                workers=[{"count": 2, "compute": lat(1.0), "placement": ["d", "a"]}]))
        return build_network(sc)

    # two equally short paths: the one with the smaller node indices (first-seen order) wins
    assert build([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]).pull[0].path == ("a", "b", "d")
    assert build([("a", "c"), ("a", "b"), ("c", "d"), ("b", "d")]).pull[0].path == ("a", "c", "d")
    net = build([("a", "b"), ("b", "d")])
    assert net.push[0].path == ("d", "b", "a")
    assert net.pull[1].path == ("a",) and net.pull[1].links == () and net.pull[1].hold == 0.0


# ------------------------------------------------------- exact cycle lengths
@pytest.mark.parametrize("kind", ["star", "two_tier", "custom"])
def test_single_worker_cycle_is_exact(kind):
    """One worker: every cycle lasts c + 2 (L + B/W) + s exactly (issue 2's closed form)."""
    c, s, params = 0.25, 0.003, 2_000_000
    B = params * 4
    if kind == "star":
        net = {"topology": "star", "bandwidth_gbps": 10, "server_bandwidth_gbps": 4, "latency": lat(0.001)}
        L, W, workers = 2 * 0.001, 4e9 / 8, None
    elif kind == "two_tier":
        net = {"topology": "two_tier", "racks": 2, "bandwidth_gbps": 10, "oversubscription": 4,
               "latency": lat(0.0005)}
        L, W, workers = 3 * 0.0005, 10e9 / 4 / 8, None   # uplink = 1 NIC x 10 / 4
    else:
        net = {"topology": "custom", "server": "s", "latency": lat(0.002), "edges": [
            {"u": "s", "v": "x", "bandwidth_gbps": 3, "latency": lat(0.010)},
            {"u": "x", "v": "y", "bandwidth_gbps": 8}]}
        L, W = 0.010 + 0.002, 3e9 / 8
        workers = [{"count": 1, "compute": lat(c), "placement": "y"}]
    tr = simulate(scen(1, net, compute=c, apply=s, params=params, updates=30, workers=workers), engine=ENGINE)
    cycle = c + 2 * (L + B / W) + s
    np.testing.assert_allclose(np.diff(tr.t_applied), cycle, rtol=1e-12)
    np.testing.assert_allclose(tr.t_read[0], L + B / W, rtol=1e-12)
    assert np.all(tr.staleness == 0)


def test_zero_bytes_pays_latency_only_and_colocated_is_free():
    tr = simulate(scen(1, {"topology": "star", "bandwidth_gbps": 1, "latency": lat(0.01)}, compute=0.5,
                       params=0), engine=ENGINE)
    np.testing.assert_allclose(np.diff(tr.t_applied), 0.5 + 2 * 0.02, rtol=1e-12)
    net = {"topology": "custom", "server": "a", "latency": lat(0.01),
           "edges": [{"u": "a", "v": "b", "bandwidth_gbps": 1}]}
    tr = simulate(scen(net=net, compute=0.5, workers=[{"count": 1, "compute": lat(0.5), "placement": "a"}]),
                  engine=ENGINE)
    np.testing.assert_allclose(np.diff(tr.t_applied), 0.5, rtol=1e-12)


def test_shared_server_link_queues_fifo_under_circuit():
    # Sync, 3 workers: the three pulls of version 0 leave at t = 0 and queue for the server's
    # link: they complete at B/W, 2B/W, 3B/W (+ latency), in worker order.
    B, W, l = 4e6, 10e9 / 8, 0.001
    tr = simulate(scen(3, {"topology": "star", "bandwidth_gbps": 10, "latency": lat(l), "sharing": "circuit"},
                       compute=1.0, policy={"kind": "sync"}, updates=2), engine=ENGINE)
    first = tr.step == 0
    order = np.argsort(tr.worker[first])
    np.testing.assert_allclose(tr.t_read[first][order], [B / W + 2 * l, 2 * B / W + 2 * l, 3 * B / W + 2 * l],
                               rtol=1e-12)


def test_star_saturates_at_W_over_B_full_duplex():
    """Circuit model, many workers on a star: updates per second -> W/B, not W/(2B) (pulls
    and pushes use opposite directions of the server link). Under saturation both directions
    are busy back to back, so the count of updates in a window of length D is D W/B +- 2.
    (Under fair sharing, flows that share the link finish in clumps and leave it idle now
    and then: tests/test_network_fair.py.)"""
    W_gbps, params = 1.0, 250_000             # B = 1 MB, B/W = 8 ms
    B = params * 4
    rate = W_gbps * 1e9 / 8 / B               # 125 updates / s
    net = {"topology": "star", "bandwidth_gbps": 10, "server_bandwidth_gbps": W_gbps, "latency": lat(1e-4),
           "sharing": "circuit"}
    sc = scen(64, net, params=params, updates=3000,
              workers=[{"count": 64, "compute": {"dist": "exponential", "mean": 0.01}}])
    tr = simulate(sc, engine=ENGINE)
    t = tr.t_applied
    t0, t1 = t[500], t[-1]
    n_in = np.count_nonzero((t > t0) & (t <= t1))
    assert abs(n_in - (t1 - t0) * rate) <= 2
    # and with the same scenario but half the server bandwidth, half the rate
    sc["network"] = {**net, "server_bandwidth_gbps": W_gbps / 2}
    t = simulate(sc, engine=ENGINE).t_applied
    assert abs(np.count_nonzero((t > t[500]) & (t <= t[-1])) - (t[-1] - t[500]) * rate / 2) <= 2


def test_random_latency_uses_the_workers_network_stream():
    from asyncsim.distributions import Exponential
    from asyncsim.rng import BlockSampler, Streams

    net = {"topology": "star", "bandwidth_gbps": 10, "latency": {"dist": "exponential", "mean": 0.01}}
    tr = simulate(scen(1, net, compute=0.5, params=0, updates=50), engine=ENGINE)
    # per cycle: pull = 2 hop draws, push = 2 hop draws, in path order
    d = BlockSampler(Exponential(mean=0.01), Streams(1).worker(0, "network")).take(4 * 50)
    pull = d[0::4] + d[1::4]
    np.testing.assert_allclose(tr.t_read - np.concatenate([[0.0], tr.t_applied[:-1]]), pull[:50],
                               rtol=0, atol=1e-12 * tr.sim_time)
