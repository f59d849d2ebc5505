"""Faults in the simulated cluster: crash, restart, slowdown, link, random_crash.

Hand-computed traces on tiny deterministic scenarios (constant compute times,
no randomness, every time a binary fraction so the expected values are exact),
the accounting invariants over random fault schedules (hypothesis), the
long-run down fraction of random crashes against renewal theory, and parity of
the SimPy and heapq engines on faulted scenarios. Semantics:
docs/transfer-model.md, "Faults".
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncsim
from asyncsim.engine import simulate, supported_engines
from asyncsim.engine import _model
from asyncsim.scenario import load_scenario
from asyncsim.trace import LOST, Trace

from test_parity import assert_same, scenarios as parity_scenarios

NAN = math.nan


def sc_of(n, policy, faults, stop=None, compute=1.0, **extra):
    groups = compute if isinstance(compute, list) else [{"count": n, "compute": {"dist": "constant", "value": compute}}]
    return {"name": "f", "seed": 1, "workers": groups, "policy": policy, "faults": faults,
            "stop": stop or {"updates": 1000}, **extra}


def both(sc):
    """Run the reference and the heap engine; assert identical traces; return the reference."""
    ref = simulate(sc, engine="simpy")
    other = simulate(sc, engine="heap")
    ref.validate()  # (simulate does not validate its own output)
    assert_same(ref, other)
    assert ref.meta == other.meta
    for k, col in ref.down_intervals.items():
        np.testing.assert_array_equal(other.down_intervals[k], col)
    return ref


def rows(tr):
    c = tr.columns
    return [tuple(c[k].tolist()) for k in ("step", "worker", "read_version", "t_read", "t_done", "t_applied")]


def assert_rows(tr, step, worker, rv, t_read, t_done, t_applied):
    got = rows(tr)
    for name, g, e in zip(("step", "worker", "read_version", "t_read", "t_done", "t_applied"), got,
                          (step, worker, rv, t_read, t_done, t_applied)):
        np.testing.assert_array_equal(np.array(g, dtype=float), np.array(e, dtype=float), err_msg=name)


def down(tr):
    d = tr.down_intervals
    return list(zip(d["worker"].tolist(), d["t_down"].tolist(), d["t_up"].tolist()))


# ------------------------------------------------------------ hand-computed
def test_crash_and_restart_async():
    # N = 2, compute 1 s, no apply time. Worker 0 crashes at 2.5 (mid-gradient, read
    # version 3 at t = 2) and is back at 3.5, pulling version 5.
    tr = both(sc_of(2, {"kind": "async"}, [{"kind": "crash", "worker": 0, "at": 2.5, "restart_after": 1.0}],
                    {"updates": 7}))
    assert_rows(tr,
                step=[0, 1, 2, 3, LOST, 4, 5, 6],
                worker=[0, 1, 0, 1, 0, 1, 1, 0],
                rv=[0, 0, 1, 2, 3, 4, 5, 5],
                t_read=[0, 0, 1, 1, 2, 2, 3, 3.5],
                t_done=[1, 1, 2, 2, 2.5, 3, 4, 4.5],
                t_applied=[1, 1, 2, 2, NAN, 3, 4, 4.5])
    assert tr.staleness.tolist() == [0, 1, 1, 1, -1, 0, 0, 1]
    assert down(tr) == [(0, 2.5, 3.5)]
    s = tr.summary()
    assert (s["gradients"], s["applied"], s["dropped"], s["lost"]) == (8, 7, 0, 1)
    assert "stalled" not in tr.meta


def test_scheduled_restart_brings_a_crashed_worker_back():
    # crash without restart_after, then an explicit restart: the same trace as above
    tr = both(sc_of(2, {"kind": "async"}, [{"kind": "crash", "worker": 0, "at": 2.5},
                                          {"kind": "restart", "worker": 0, "at": 3.5}], {"updates": 7}))
    assert tr.t_done.tolist()[4] == 2.5 and tr.step.tolist()[4] == LOST
    assert down(tr) == [(0, 2.5, 3.5)]


def test_slowdown_multiplies_compute_started_in_window():
    # N = 1, compute 1 s; slowdown x3 in [1.5, 4): only the gradient started at t = 2 is slowed
    tr = both(sc_of(1, {"kind": "async"}, [{"kind": "slowdown", "workers": [0], "start": 1.5, "end": 4,
                                            "factor": 3.0}], {"updates": 4}))
    assert tr.t_done.tolist() == [1, 2, 5, 6]
    assert tr.t_read.tolist() == [0, 1, 2, 5]


def test_slowdown_keeps_common_random_numbers():
    # exponential compute: the slowed run's durations are the plain run's draws x factor
    base = {"name": "s", "seed": 9, "workers": [{"count": 1, "compute": {"dist": "exponential", "mean": 1.0}}],
            "policy": {"kind": "async"}, "stop": {"updates": 60}}
    plain = simulate(base, engine="heap")
    slow = both({**base, "faults": [{"kind": "slowdown", "workers": [0], "start": 10.0, "end": 30.0,
                                     "factor": 2.0}]})
    d0 = plain.t_done - plain.t_read
    d1 = slow.t_done - slow.t_read
    in_win = (slow.t_read >= 10.0) & (slow.t_read < 30.0)
    assert in_win.any() and (~in_win).any()
    np.testing.assert_allclose(d1, np.where(in_win, 2.0 * d0, d0), rtol=1e-9)


def test_link_fault_slows_then_blocks_transfers():
    # one worker on a 1 Gb/s star, 125 MB model: every transfer holds the links 1 s.
    # bandwidth x0.5 in [3, 6): the pull starting at 3 takes 2 s (the push at 6 does not);
    # link down in [8.5, 10): the push starting at 9 waits until 10.
    sc = sc_of(1, {"kind": "async"}, [{"kind": "link", "worker": 0, "start": 3.0, "end": 6.0, "factor": 0.5},
                                      {"kind": "link", "worker": 0, "start": 8.5, "end": 10.0, "factor": 0.0}],
               {"updates": 3}, network={"topology": "star", "bandwidth_gbps": 1.0},
               model={"parameters": 31_250_000, "bytes_per_parameter": 4})
    tr = both(sc)
    assert_rows(tr, step=[0, 1, 2], worker=[0, 0, 0], rv=[0, 1, 2],
                t_read=[1, 5, 8], t_done=[2, 6, 9], t_applied=[3, 7, 11])


def test_crash_while_queued_for_a_link_releases_nothing_it_does_not_hold():
    # circuit model: two workers share the server link (1 s per transfer); worker 1 queues
    # behind worker 0's pull and crashes while waiting: worker 0 is unaffected and worker 1
    # comes back and works normally (its queued request was withdrawn)
    sc = sc_of(2, {"kind": "async"}, [{"kind": "crash", "worker": 1, "at": 0.5, "restart_after": 4.0}],
               {"updates": 4}, network={"topology": "star", "bandwidth_gbps": 1.0, "sharing": "circuit"},
               model={"parameters": 31_250_000, "bytes_per_parameter": 4})
    tr = both(sc)
    # worker 1 had not started computing: no lost row; worker 0 cycles every 3 s alone
    assert LOST not in tr.step.tolist()
    w0 = tr.worker == 0
    assert tr.t_applied[w0].tolist()[:2] == [3.0, 6.0]
    assert down(tr) == [(1, 0.5, 4.5)]
    assert (tr.worker == 1).any()


def test_crash_during_a_shared_flow_withdraws_it_and_the_other_speeds_up():
    # fair model: both pulls share the server link (1 Gbit each at 1 Gb/s): 0.5 Gb/s each.
    # Worker 1 crashes at 0.5 (0.25 Gbit through); its flow is withdrawn and worker 0's
    # remaining 0.75 Gbit run at the full 1 Gb/s: its pull ends at 1.25, compute 1 s, push
    # 1 s alone (worker 1 is down until 4.5): applied at 3.25; the next cycle is 3 s alone.
    sc = sc_of(2, {"kind": "async"}, [{"kind": "crash", "worker": 1, "at": 0.5, "restart_after": 4.0}],
               {"updates": 4}, network={"topology": "star", "bandwidth_gbps": 1.0},
               model={"parameters": 31_250_000, "bytes_per_parameter": 4})
    tr = both(sc)
    assert LOST not in tr.step.tolist()
    w0 = tr.worker == 0
    np.testing.assert_allclose(tr.t_read[w0][:2], [1.25, 4.25], rtol=1e-12)
    np.testing.assert_allclose(tr.t_applied[w0][:2], [3.25, 6.25], rtol=1e-12)
    assert down(tr) == [(1, 0.5, 4.5)]
    # worker 1 pulls from 4.5 while worker 0 pushes (other direction): 1 s alone
    w1 = tr.worker == 1
    np.testing.assert_allclose(tr.t_read[w1][0], 5.5, rtol=1e-12)


def test_link_fault_on_a_shared_flow_caps_that_flow_only():
    # fair model, 40 Gb/s server link, two 10 Gb/s workers pulling 1 Gbit at t = 0; worker
    # 1's NIC runs at 0.1 x (1 Gb/s) in [0, 10): worker 1 gets 1 Gb/s, worker 0 the rest its
    # NIC allows (10 Gb/s): pulls end at 0.1 s and 1 s.
    sc = sc_of(2, {"kind": "sync"}, [{"kind": "link", "worker": 1, "start": 0.0, "end": 10.0, "factor": 0.1}],
               {"updates": 1}, network={"topology": "star", "bandwidth_gbps": 10.0, "server_bandwidth_gbps": 40},
               model={"parameters": 31_250_000, "bytes_per_parameter": 4})
    tr = both(sc)
    np.testing.assert_allclose(tr.t_read[np.argsort(tr.worker)], [0.1, 1.0], rtol=1e-12)


@pytest.mark.parametrize("down_for,t_pull", [(0.25, 2.0), (1.0, 2.5)])
def test_gradient_at_the_server_is_not_lost(down_for, t_pull):
    # N = 1, compute 1 s, apply 1 s: the worker crashes at 1.5 while its gradient is being
    # applied. The gradient is applied at 2; the worker pulls at the later of its restart
    # and that acknowledgement.
    tr = both(sc_of(1, {"kind": "async"}, [{"kind": "crash", "worker": 0, "at": 1.5, "restart_after": down_for}],
                    {"updates": 2}, server={"apply": {"dist": "constant", "value": 1.0}}))
    assert_rows(tr, step=[0, 1], worker=[0, 0], rv=[0, 1], t_read=[0, t_pull], t_done=[1, t_pull + 1],
                t_applied=[2, t_pull + 2])
    assert down(tr) == [(0, 1.5, 1.5 + down_for)]


def test_crash_while_pushing_loses_the_gradient_and_frees_the_link():
    # one worker, 1 s per transfer: pull [0, 1], compute [1, 2], push from 2; crash at 2.5,
    # back at 3. The push's links were released: the next cycle runs normally.
    sc = sc_of(1, {"kind": "async"}, [{"kind": "crash", "worker": 0, "at": 2.5, "restart_after": 0.5}],
               {"updates": 2}, network={"topology": "star", "bandwidth_gbps": 1.0},
               model={"parameters": 31_250_000, "bytes_per_parameter": 4})
    tr = both(sc)
    assert_rows(tr, step=[LOST, 0, 1], worker=[0, 0, 0], rv=[0, 0, 1], t_read=[1, 4, 7], t_done=[2.5, 5, 8],
                t_applied=[NAN, 6, 9])


def test_sync_timeout_proceeds_with_what_arrived():
    # N = 3, worker 2 crashes for good at 0.5; timeout 2.5: each round closes 2.5 s after
    # it opened with workers 0 and 1 (who arrived after 1 s)
    tr = both(sc_of(3, {"kind": "sync", "timeout": 2.5}, [{"kind": "crash", "worker": 2, "at": 0.5}],
                    {"updates": 2}))
    assert_rows(tr, step=[LOST, 0, 0, 1, 1], worker=[2, 0, 1, 0, 1], rv=[0, 0, 0, 1, 1],
                t_read=[0, 0, 0, 2.5, 2.5], t_done=[0.5, 1, 1, 3.5, 3.5], t_applied=[NAN, 2.5, 2.5, 5, 5])
    assert "stalled" not in tr.meta and down(tr)[0][0] == 2 and math.isnan(down(tr)[0][2])


def test_sync_timeout_drops_stragglers_like_backup():
    # worker 0 computes in 1 s, worker 1 in 4 s, timeout 2: every round applies worker 0's
    # gradient at its timeout and drops worker 1's (preempted at the close)
    groups = [{"count": 1, "compute": {"dist": "constant", "value": 1.0}},
              {"count": 1, "compute": {"dist": "constant", "value": 4.0}}]
    tr = both(sc_of(2, {"kind": "sync", "timeout": 2.0}, [], {"updates": 2}, compute=groups))
    assert_rows(tr, step=[-1, 0, -1, 1], worker=[1, 0, 1, 0], rv=[0, 0, 1, 1], t_read=[0, 0, 2, 2],
                t_done=[2, 1, 4, 3], t_applied=[NAN, 2, NAN, 4])


def test_sync_timeout_with_nothing_arrived_closes_at_next_arrival():
    groups = [{"count": 2, "compute": {"dist": "constant", "value": 3.0}}]
    tr = both(sc_of(2, {"kind": "sync", "timeout": 1.0}, [], {"updates": 1}, compute=groups))
    # the timeout fires at 1 with nothing; the first arrival (worker 0 at 3) closes the
    # round; worker 1, whose compute ends at the same instant but is processed after,
    # is still computing at the close and is preempted (dropped, recorded first)
    assert_rows(tr, step=[-1, 0], worker=[1, 0], rv=[0, 0], t_read=[0, 0], t_done=[3, 3], t_applied=[NAN, 3])


@pytest.mark.parametrize("extra", [[], [{"kind": "random_crash", "group": 0, "mtbf": {"dist": "constant", "value": 5.0},
                                         "repair": {"dist": "constant", "value": 1.0}}]])
@pytest.mark.parametrize("stop", [{"updates": 100}, {"time": 50.0}])
def test_sync_without_timeout_stalls_cleanly(extra, stop):
    # worker 2 (its own group) crashes for good at 2.5: round 2 can never complete. The
    # run ends at once (even with random crashes keeping the event queue busy).
    groups = [{"count": 2, "compute": {"dist": "constant", "value": 1.0}},
              {"count": 1, "compute": {"dist": "constant", "value": 1.0}}]
    tr = both(sc_of(3, {"kind": "sync"}, [{"kind": "crash", "worker": 2, "at": 2.5}] + extra, stop, compute=groups))
    assert tr.meta.get("stalled") is True
    assert tr.n_updates == 2 and tr.sim_time == 2.5
    assert tr.step.tolist()[-1] == LOST and tr.t_done.tolist()[-1] == 2.5


def test_everyone_down_for_good_stalls_with_empty_queue():
    tr = both(sc_of(2, {"kind": "async"}, [{"kind": "crash", "worker": 0, "at": 2.5},
                                          {"kind": "crash", "worker": 1, "at": 3.5}], {"updates": 50}))
    assert tr.meta.get("stalled") is True and tr.n_updates == 5 and tr.sim_time == 3.5
    assert [(w, a) for w, a, _ in down(tr)] == [(0, 2.5), (1, 3.5)]
    assert all(math.isnan(b) for _, _, b in down(tr))


def test_backup_absorbs_a_crashed_worker():
    # N = 4, K = 2, worker 3 dies for good at 0.5: every update still averages K = 2
    sc = {"name": "b", "seed": 4, "workers": [{"count": 4, "compute": {"dist": "exponential", "mean": 1.0}}],
          "policy": {"kind": "backup", "aggregate": 2}, "stop": {"updates": 300},
          "faults": [{"kind": "crash", "worker": 3, "at": 0.5}]}
    tr = both(sc)
    counts = np.bincount(tr.step[tr.step >= 0], minlength=tr.n_updates)
    assert np.all(counts == 2) and tr.n_updates == 300
    assert not np.any((tr.worker == 3) & (tr.t_read > 0.5))
    assert "stalled" not in tr.meta


def test_backup_with_fewer_than_k_live_workers_stalls():
    sc = sc_of(3, {"kind": "backup", "aggregate": 2}, [{"kind": "crash", "worker": 1, "at": 0.5},
                                                       {"kind": "crash", "worker": 2, "at": 0.75}], {"updates": 10})
    tr = both(sc)
    assert tr.meta.get("stalled") is True and tr.n_updates == 0 and tr.sim_time == 0.75
    assert tr.step.tolist() == [LOST, LOST]


def test_round_robin_skips_a_down_worker():
    # N = 3, worker 1 down in [0.5, 10.5): its turns are skipped; 0 and 2 alternate
    tr = both(sc_of(3, {"kind": "round_robin"}, [{"kind": "crash", "worker": 1, "at": 0.5, "restart_after": 10.0}],
                    {"updates": 4}))
    assert_rows(tr, step=[LOST, 0, 1, 2, 3], worker=[1, 0, 2, 0, 2], rv=[0, 0, 0, 1, 2],
                t_read=[0, 0, 0, 1, 1], t_done=[0.5, 1, 1, 2, 2], t_applied=[NAN, 1, 1, 2, 2])


def test_round_robin_applies_a_gradient_that_reached_the_server():
    # worker 2 (3 s gradients) crashes at 4 while its gradient (arrived at 3) waits for its
    # turn behind worker 1's (4.5 s): the gradient is applied, not lost
    groups = [{"count": 1, "compute": {"dist": "constant", "value": 1.0}},
              {"count": 1, "compute": {"dist": "constant", "value": 4.5}},
              {"count": 1, "compute": {"dist": "constant", "value": 3.0}}]
    tr = both(sc_of(3, {"kind": "round_robin"}, [{"kind": "crash", "worker": 2, "at": 4.0}], {"updates": 5},
                    compute=groups))
    assert LOST not in tr.step.tolist()
    assert tr.worker.tolist()[:3] == [0, 1, 2] and tr.t_applied.tolist()[:3] == [1.0, 4.5, 4.5]
    assert tr.worker.tolist()[3:] == [0, 1]  # then worker 2's turns are skipped


def test_ssp_bound_counts_live_workers_only():
    # bound 0 (lock step), N = 2: worker 1 is down in [0.5, 2.5); worker 0 goes on alone,
    # then worker 1 comes back at clock 2 (worker 0's) and lock step resumes
    tr = both(sc_of(2, {"kind": "ssp", "bound": 0}, [{"kind": "crash", "worker": 1, "at": 0.5, "restart_after": 2.0}],
                    {"updates": 6}))
    assert_rows(tr, step=[LOST, 0, 1, 2, 3, 4, 5], worker=[1, 0, 0, 0, 1, 1, 0], rv=[0, 0, 1, 2, 2, 4, 4],
                t_read=[0, 0, 1, 2, 2.5, 3.5, 3.5], t_done=[0.5, 1, 2, 3, 3.5, 4.5, 4.5],
                t_applied=[NAN, 1, 2, 3, 3.5, 4.5, 4.5])


def test_ssp_permanent_crash_does_not_block():
    tr = both(sc_of(2, {"kind": "ssp", "bound": 0}, [{"kind": "crash", "worker": 1, "at": 0.5}], {"updates": 5}))
    assert tr.t_applied[tr.step >= 0].tolist() == [1, 2, 3, 4, 5] and "stalled" not in tr.meta


def test_k_async_keeps_going_with_fewer_than_k_live_workers():
    tr = both(sc_of(3, {"kind": "k_async", "k": 3}, [{"kind": "crash", "worker": 1, "at": 0.5},
                                                    {"kind": "crash", "worker": 2, "at": 0.5}], {"updates": 4}))
    # worker 0 alone fills each batch of 3 with its own gradients
    assert tr.n_updates == 4 and set(tr.worker[tr.step >= 0].tolist()) == {0}


def test_down_intervals_clipped_to_the_run():
    # restarts after the end of the run are not known: t_up NaN
    tr = both(sc_of(2, {"kind": "async"}, [{"kind": "crash", "worker": 0, "at": 1.25, "restart_after": 1.0},
                                          {"kind": "crash", "worker": 0, "at": 5.5, "restart_after": 100.0},
                                          {"kind": "crash", "worker": 1, "at": 200.0}], {"time": 8.0}))
    assert tr.sim_time == 8.0
    d = down(tr)
    assert d[:2] == [(0, 1.25, 2.25), (0, 5.5, d[1][2])] and math.isnan(d[1][2]) and len(d) == 2


def test_faulted_trace_round_trips(tmp_path):
    tr = both(sc_of(2, {"kind": "async"}, [{"kind": "crash", "worker": 0, "at": 2.5, "restart_after": 1.0},
                                          {"kind": "crash", "worker": 1, "at": 6.5}], {"updates": 12}))
    for ext in ("parquet", "npz", "csv"):
        p = tmp_path / f"t.{ext}"
        tr.save(p)
        back = Trace.load(p)
        assert_same(tr, back)
        for k, col in tr.down_intervals.items():
            np.testing.assert_array_equal(back.down_intervals[k], col)


def test_vector_engine_declines_faults():
    from asyncsim.engine.vector_engine import why_not_vectorisable

    sc = load_scenario(sc_of(2, {"kind": "async"}, [{"kind": "crash", "worker": 0, "at": 2.5}]))
    assert "fault" in why_not_vectorisable(sc)
    assert supported_engines(sc) == ["heap", "simpy"]
    timed = load_scenario(sc_of(2, {"kind": "sync", "timeout": 1.0}, []))
    assert "timeout" in why_not_vectorisable(timed)


# ------------------------------------------------------------- random_crash
def test_random_crash_long_run_down_fraction():
    # Renewal-reward: the long-run fraction of time down is E[R] / (E[U] + E[R]) = 1/10
    # for up-times U ~ Exp(mean 9) and repairs R ~ Exp(mean 1). The estimate
    # sum(R)/sum(U + R) over n ~ T/10 = 2000 cycles has (delta method) standard deviation
    # sqrt(Var(R - p(U + R)) / n) / E[U + R] = sqrt((0.81 + 0.81) / 2000) / 10 = 0.0028;
    # we allow 4 standard deviations.
    T = 20000.0
    sc = {"name": "r", "seed": 11, "workers": [{"count": 1, "compute": {"dist": "constant", "value": 50.0}}],
          "policy": {"kind": "async"}, "stop": {"time": T},
          "faults": [{"kind": "random_crash", "group": 0, "mtbf": {"dist": "exponential", "mean": 9.0},
                      "repair": {"dist": "exponential", "mean": 1.0}}]}
    tr = simulate(sc, engine="heap")
    d = tr.down_intervals
    up = np.where(np.isnan(d["t_up"]), tr.sim_time, d["t_up"])
    frac = float(np.sum(up - d["t_down"]) / tr.sim_time)
    assert len(d["worker"]) > 1500
    assert abs(frac - 0.1) < 4 * 0.0028, frac


def test_random_crash_streams_are_per_worker():
    # adding a worker group does not change the failures of existing workers
    fa = [{"kind": "random_crash", "group": 0, "mtbf": {"dist": "exponential", "mean": 5.0},
           "repair": {"dist": "constant", "value": 1.0}}]
    a = simulate({"name": "a", "seed": 2, "workers": [{"count": 2, "compute": {"dist": "exponential", "mean": 1}}],
                  "policy": {"kind": "async"}, "stop": {"time": 60.0}, "faults": fa})
    b = simulate({"name": "a", "seed": 2, "workers": [{"count": 2, "compute": {"dist": "exponential", "mean": 1}},
                                                      {"count": 3, "compute": {"dist": "constant", "value": 1}}],
                  "policy": {"kind": "async"}, "stop": {"time": 60.0}, "faults": fa})
    assert down(a) == down(b)


# ------------------------------------------------------ random fault schedules
_draw_counts: list = []


@pytest.fixture
def count_compute_draws(monkeypatch):
    """Count each worker's compute draws (gradients started) in every Model built."""
    orig = _model.Model.__init__

    def init(self, *a, **k):
        orig(self, *a, **k)
        counts = [0] * self.n
        _draw_counts.append(counts)

        def wrap(i, f):
            def nxt():
                counts[i] += 1
                return f()
            return nxt

        self.compute_next = [wrap(i, f) for i, f in enumerate(self.compute_next)]

    monkeypatch.setattr(_model.Model, "__init__", init)
    _draw_counts.clear()
    yield _draw_counts


@st.composite
def faulted(draw):
    sc = draw(parity_scenarios())
    if sc["policy"]["kind"] == "allreduce":  # it does not model faults (the scenario is refused)
        sc["policy"] = {"kind": "sync"}
    n = sum(g["count"] for g in sc["workers"])
    horizon = 40.0
    faults = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["crash", "crash_restart", "restart", "slowdown", "link", "random_crash"]))
        w = draw(st.integers(0, n - 1))
        t = draw(st.floats(0.0, horizon))
        if kind == "crash":
            faults.append({"kind": "crash", "worker": w, "at": t})
        elif kind == "crash_restart":
            faults.append({"kind": "crash", "worker": w, "at": t, "restart_after": draw(st.floats(0.1, 10.0))})
        elif kind == "restart":
            faults.append({"kind": "restart", "worker": w, "at": t})
        elif kind == "slowdown":
            faults.append({"kind": "slowdown", "workers": [w], "start": t, "end": t + draw(st.floats(0.1, 20.0)),
                           "factor": draw(st.sampled_from([0.5, 2.0, 5.0]))})
        elif kind == "link" and "network" in sc:
            faults.append({"kind": "link", "worker": w, "start": t, "end": t + draw(st.floats(0.1, 10.0)),
                           "factor": draw(st.sampled_from([0.0, 0.25, 3.0]))})
        elif kind == "random_crash":
            faults.append({"kind": "random_crash", "group": draw(st.integers(0, len(sc["workers"]) - 1)),
                           "mtbf": {"dist": "exponential", "mean": draw(st.sampled_from([3.0, 20.0]))},
                           "repair": draw(st.sampled_from([{"dist": "constant", "value": 1.0},
                                                           {"dist": "exponential", "mean": 2.0}]))})
    if not faults:  # (a link fault drawn without a network)
        faults.append({"kind": "crash", "worker": 0, "at": draw(st.floats(0.0, horizon)), "restart_after": 1.0})
    sc["faults"] = faults
    if sc["policy"]["kind"] == "sync" and draw(st.booleans()):
        sc["policy"]["timeout"] = draw(st.floats(0.5, 5.0))
    return sc


def check_invariants(tr, started, k):
    c = tr.columns
    step, w = c["step"], c["worker"]
    s = tr.summary()
    assert s["gradients"] == s["applied"] + s["dropped"] + s["lost"]
    assert s["dropped"] == int(np.sum(step == -1)) and s["applied"] == int(np.sum(step >= 0))
    # every gradient started is recorded exactly once, except those still in flight at
    # the end. With K = 1 that is at most one per worker: it is computing, pushing or
    # waiting for the server. With K > 1 a worker whose push does not close a batch
    # goes on at once, so closed batches can queue at the server holding several of
    # its gradients. Each queued batch blocks the worker that closed it, so with
    # c workers computing and b blocked (c + b <= n), at most c + (K - 1) + K b
    # <= K (n + 1) - 1 gradients are in flight: in cycles, in the open batch and in
    # the queued batches.
    per_worker = np.bincount(w, minlength=tr.n_workers)
    gap = np.asarray(started) - per_worker
    assert np.all(gap >= 0), (started, per_worker.tolist())
    if k == 1:
        assert np.all(gap <= 1), (started, per_worker.tolist())
    else:
        assert gap.sum() <= k * (tr.n_workers + 1) - 1, (started, per_worker.tolist())
    # a lost gradient is lost at one of its worker's crash times
    d = tr.down_intervals
    crash_at = set(zip(d["worker"].tolist(), d["t_down"].tolist()))
    for i in np.flatnonzero(step == LOST):
        assert (int(w[i]), float(c["t_done"][i])) in crash_at
    # no gradient is computed while its worker is down
    up = np.where(np.isnan(d["t_up"]), np.inf, d["t_up"])
    for wk, a, b in zip(d["worker"], d["t_down"], up):
        mine = (w == wk) & (step != LOST)
        overlap = mine & (c["t_read"] < b) & (c["t_done"] > a)
        assert not overlap.any()


@settings(max_examples=int(os.environ.get("ASYNCSIM_FAULT_EXAMPLES", "120")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(faulted())
def test_random_fault_schedules_parity_and_accounting(count_compute_draws, sc):
    # every engine that claims support (simpy and heap; vector declines faults) gives the
    # reference's trace, and the accounting holds
    engines = supported_engines(load_scenario(sc))
    assert "simpy" in engines and "heap" in engines
    runs = {}
    for e in ["simpy"] + [e for e in engines if e != "simpy"]:
        count_compute_draws.clear()
        runs[e] = simulate(sc, engine=e)
        if e == "heap":
            heap_counts = count_compute_draws[0]
    ref = runs["simpy"]
    for e, tr in runs.items():
        assert_same(ref, tr, f"{e}: {sc}")
        assert ref.meta == tr.meta
        for k, col in ref.down_intervals.items():
            np.testing.assert_array_equal(tr.down_intervals[k], col)
    # draws counted on the heap engine, which stops at the very event that ends the run
    # (SimPy finishes the events of that instant first; they record nothing but may draw)
    k = sc["policy"].get("k", 1) if sc["policy"]["kind"] == "k_async" else 1
    check_invariants(ref, heap_counts, k)
