"""Each policy's exact semantics on small deterministic cases (docs/transfer-model.md)."""

from __future__ import annotations

import numpy as np
import pytest

from asyncsim.engine import simulate
from asyncsim.policies import POLICIES, Policy
from asyncsim.scenario import POLICY_KINDS

ENGINE = "simpy"


def const(v):
    return {"dist": "constant", "value": v}


def scen(workers, policy, updates=12, apply=0.0, **extra):
    sc = {"name": "p", "seed": 1, "workers": workers, "policy": policy, "stop": {"updates": updates},
          "server": {"apply": const(apply)}}
    sc.update(extra)
    return sc


def test_registry_covers_every_kind():
    assert set(POLICIES) == set(POLICY_KINDS)
    for kind, cls in POLICIES.items():
        assert issubclass(cls, Policy) and cls.kind == kind and cls.__doc__


def test_async_server_is_fifo_with_apply_time():
    # 3 workers finish at t = 1 together; applies of 0.5 s queue in arrival (worker) order.
    tr = simulate(scen([{"count": 3, "compute": const(1.0)}], {"kind": "async"}, updates=6, apply=0.5),
                  engine=ENGINE)
    assert list(tr.worker[:3]) == [0, 1, 2]
    np.testing.assert_allclose(tr.t_applied[:3], [1.5, 2.0, 2.5])
    np.testing.assert_allclose(tr.t_done[:3], [1.0, 1.0, 1.0])
    # worker 0 was acknowledged at 1.5, pulled version 1, finished at 2.5 and queued behind worker 2
    assert tr.worker[3] == 0 and tr.read_version[3] == 1 and tr.t_read[3] == 1.5
    np.testing.assert_allclose(tr.t_applied[3], 3.0)
    assert list(tr.staleness[:4]) == [0, 1, 2, 2]


def test_kasync_non_closing_workers_restart_at_once():
    tr = simulate(scen([{"count": 5, "compute": {"dist": "exponential", "mean": 1.0}}], {"kind": "k_async", "k": 3},
                       updates=400, apply=0.05), engine=ENGINE)
    rows, ptr = tr.step_index()
    closing = np.zeros(len(tr), bool)
    closing[rows[ptr[1:] - 1]] = True  # the last row of each update closed it
    for w in range(5):
        r = np.flatnonzero(tr.worker == w)
        prev, nxt = r[:-1], r[1:]
        # acknowledged after the apply if it closed the batch, else at once
        expect = np.where(closing[prev], tr.t_applied[prev], tr.t_done[prev])
        np.testing.assert_allclose(tr.t_read[nxt], expect, rtol=0, atol=1e-12)


def test_backup_with_network_drops_late_pushes_with_real_t_done():
    net = {"topology": "star", "bandwidth_gbps": 10, "latency": const(0.001)}
    sc = scen([{"count": 6, "compute": {"dist": "exponential", "mean": 0.1}}], {"kind": "backup", "aggregate": 3},
              updates=300, apply=0.002, network=net, model={"parameters": 1_000_000})
    tr = simulate(sc, engine=ENGINE)
    a = tr.applied
    assert np.all(np.bincount(tr.step[a]) == 3)
    # round v closed at its apply's start = t_applied - 0.002 (constant apply, the server is
    # never busy between rounds); a dropped row is either preempted (t_done == that close
    # time) or a late push (computed before the close, arrived after it)
    close_t = {}
    for v in range(300):
        close_t[v] = tr.t_applied[a & (tr.step == v)][0] - 0.002
    kinds = set()
    for i in np.flatnonzero(~a):
        v = tr.read_version[i]
        if v not in close_t:
            continue
        if np.isclose(tr.t_done[i], close_t[v], rtol=0, atol=1e-9):
            kinds.add("preempted")
        else:
            assert tr.t_done[i] < close_t[v] + 1e-12
            kinds.add("late")
    assert kinds == {"preempted", "late"}
    assert np.all(np.isnan(tr.t_applied[~a])) and np.all(tr.staleness[~a] == -1)


def test_sync_everyone_pulls_the_new_version():
    tr = simulate(scen([{"count": 4, "compute": {"dist": "exponential", "mean": 1.0}}], {"kind": "sync"},
                       updates=50, apply=0.1), engine=ENGINE)
    rows, ptr = tr.step_index()
    for v in range(1, 50):
        r = rows[ptr[v]:ptr[v + 1]]
        assert np.all(tr.read_version[r] == v)
        # everyone read right after the previous update was applied
        np.testing.assert_allclose(tr.t_read[r], tr.t_applied[rows[ptr[v - 1]]])


def test_round_robin_waits_for_its_turn():
    # worker 1 is much faster but its gradients are taken only at its turns
    workers = [{"count": 1, "compute": const(3.0)}, {"count": 1, "compute": const(1.0)}]
    tr = simulate(scen(workers, {"kind": "round_robin"}, updates=6), engine=ENGINE)
    assert list(tr.worker) == [0, 1, 0, 1, 0, 1]
    np.testing.assert_allclose(tr.t_applied, [3, 3, 6, 6, 9, 9])
    np.testing.assert_allclose(tr.t_done[1], 1.0)        # finished early, applied at its turn


@pytest.mark.parametrize("kind", sorted(POLICY_KINDS))
def test_every_policy_runs_with_a_contended_two_tier_network(kind):
    pol = {"kind": kind, **({"aggregate": 3} if kind == "backup" else {}), **({"k": 2} if kind == "k_async" else {}),
           **({"bound": 1} if kind == "ssp" else {})}
    net = {"topology": "two_tier", "racks": 2, "bandwidth_gbps": 10, "oversubscription": 3,
           "latency": {"dist": "exponential", "mean": 0.0005}}
    sc = scen([{"count": 6, "compute": {"dist": "gamma", "mean": 0.05, "cv": 0.5}}], pol, updates=200, apply=0.001,
              network=net, model={"parameters": 2_000_000})
    tr = simulate(sc, engine=ENGINE)
    assert tr.n_updates == 200
    assert tr.sim_time == tr.t_applied[tr.applied][-1]
