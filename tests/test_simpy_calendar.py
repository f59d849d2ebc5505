"""SimPy's compute calendar (asyncsim.engine.simpy_engine.ComputeCalendar) and the
heap engine's server loop (asyncsim.engine._heap_async._run_server): the same
events in the same order as the readable forms they replace, ties included.

The references are SimPy itself: a process per sleeper waiting on
``env.timeout`` (for the calendar), and the SimPy engine with a process per
worker (for both the calendar's engine runs and the heap engine's loop)."""

from __future__ import annotations

import gc
from unittest import mock

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncsim import load_scenario, simulate
from asyncsim.engine import _model
from asyncsim.engine import simpy_engine
from asyncsim.engine.simpy_engine import CALENDAR_WORKERS, ComputeCalendar, SimpyKernel, _wake_order, run_simpy

# ------------------------------------------------------------------ the calendar alone


_DELAY = st.sampled_from([0.0, 0.5, 1.0, 1.5, 0.25])


@settings(max_examples=150, deadline=None)
@given(delays=st.lists(st.lists(_DELAY, min_size=1, max_size=8), min_size=1, max_size=12),
       noise=st.lists(_DELAY, max_size=10))
def test_calendar_wakes_sleepers_in_simpys_timeout_order(delays, noise):
    """Delays that tie all the time (and zero delays): the calendar's wake-ups and the
    other events interleave exactly as processes waiting on timeouts do."""
    assert _wake_order(delays, noise, True) == _wake_order(delays, noise, False)


def test_calendar_keeps_one_simpy_event_for_its_earliest_entry():
    """Only the earliest sleeper is in SimPy's queue (plus earlier heads not yet due:
    the stack); the rest wait as ints."""
    env = simpy.Environment()
    woke = []
    cal = ComputeCalendar(env, 1000, woke.append)
    for w in range(1000):
        cal.sleep(w, 1000.0 - w)  # each one earlier than the last: all queued (a stack)
    assert len(env._queue) == 1000 and len(cal.queued) == 1000
    env2 = simpy.Environment()
    cal2 = ComputeCalendar(env2, 1000, woke.append)
    for w in range(1000):
        cal2.sleep(w, 1.0 + w)  # each later than the first: one queued
    assert len(env2._queue) == 1 and len(cal2.heap) == 1000
    env2.run()
    assert woke == list(range(1000)) and env2.now == 1000.0
    env.run()
    assert woke[1000:] == list(range(999, -1, -1))


def test_calendar_is_used_from_the_crossover_or_when_asked():
    assert simpy_engine.calendar_matches_simpy()
    assert not SimpyKernel().use_calendar(CALENDAR_WORKERS - 1)
    assert SimpyKernel().use_calendar(CALENDAR_WORKERS)
    assert SimpyKernel(calendar=True).use_calendar(2)
    assert not SimpyKernel(calendar=False).use_calendar(10**6)


def test_a_simpy_the_calendar_does_not_match_gets_processes():
    """Where the self-check fails (another SimPy's internals), the engine keeps a
    process per worker, even when asked for the calendar; the trace is the same."""
    sc = _scenario("constant", "constant", {"updates": 300}, n=CALENDAR_WORKERS)
    with mock.patch.object(simpy_engine, "_calendar_ok", False):
        assert not SimpyKernel(calendar=True).use_calendar(10**6)
        with mock.patch.object(ComputeCalendar, "__init__", side_effect=AssertionError("used")):
            a = _run(sc, None)
    _same(a, _run(sc, True))


# ------------------------------------------------------------------ whole runs

COMPUTE = {
    "exponential": {"dist": "exponential", "mean": 1.0},
    "constant": {"dist": "constant", "value": 0.5},
    "empirical-zeros": {"dist": "empirical", "values": [-0.0, 0.0, 1.0, 2.0]},
}
APPLY = {
    "zero": {"dist": "constant", "value": 0.0},
    "constant": {"dist": "constant", "value": 0.05},
    "empirical-zeros": {"dist": "empirical", "values": [0.0, 0.0, 0.02, 0.3]},
    "exponential": {"dist": "exponential", "mean": 0.01},
}


def _scenario(compute, apply, stop, groups=1, kind="async", n=40):
    workers = [{"count": n, "compute": COMPUTE[compute]}]
    if groups == 2:
        workers.append({"count": 7, "compute": {"dist": "exponential", "mean": 0.3}})
    policy = {"kind": kind} if kind == "async" else {"kind": "k_async", "k": 1}
    return load_scenario({"name": "c", "seed": 11, "workers": workers, "policy": policy, "stop": stop,
                          "server": {"apply": APPLY[apply]}})


def _run(sc, calendar, progress=None):
    stop = sc.stop
    return run_simpy(sc, updates=stop.updates, until=stop.time, progress=progress, calendar=calendar)


def _same(a, b):
    assert a[0].keys() == b[0].keys()
    for c in a[0]:
        assert a[0][c].tobytes() == b[0][c].tobytes(), c  # (bit for bit: -0.0 kept)
    assert a[1:3] == b[1:3]


CASES = [(c, a) for c in COMPUTE for a in APPLY]
STOPS = {"updates": {"updates": 700}, "time": {"time": 9.0}, "both": {"updates": 400, "time": 6.0}}


@pytest.mark.parametrize("compute,apply", CASES)
@pytest.mark.parametrize("stop", sorted(STOPS))
def test_calendar_run_is_the_process_run(compute, apply, stop):
    """The SimPy engine with the calendar and with a process per worker: the same
    trace, bit for bit, for compute and apply times that tie, queue at the server
    and take zero time, with each stop; first chunks of 2 draws (refills everywhere)."""
    sc = _scenario(compute, apply, STOPS[stop], groups=2)
    with mock.patch.object(_model, "_first_block", lambda sc, updates, until: [2] * len(sc.workers)):
        _same(_run(sc, True), _run(sc, False))


@pytest.mark.parametrize("compute,apply", CASES)
@pytest.mark.parametrize("stop", sorted(STOPS))
def test_heap_server_loop_is_the_process_run(compute, apply, stop):
    """The heap engine (its loops without a network: the plain loop at zero apply
    time, the server loop otherwise) against SimPy with a process per worker."""
    sc = _scenario(compute, apply, STOPS[stop], groups=2)
    with mock.patch.object(_model, "_first_block", lambda sc, updates, until: [2] * len(sc.workers)):
        ref = _run(sc, False)
        tr = simulate(sc, engine="heap")
    for c in ref[0]:
        assert tr.columns[c].tobytes() == np.asarray(ref[0][c]).tobytes(), c
    assert tr.sim_time == ref[1] and len(tr) == ref[2]


def test_progress_is_reported_alike():
    """Progress reports come at the same updates with the calendar and without."""
    sc = _scenario("exponential", "constant", {"updates": 1000}, kind="k_async")
    seen = {True: [], False: []}
    for cal in (True, False):
        out = _run(sc, cal, progress=seen[cal].append)
        assert out[2] == 1000
    assert seen[True] == seen[False] and seen[True][-1] == 1.0 and len(seen[True]) >= 100


def test_large_runs_use_the_calendar_and_match_the_heap_engine():
    """From the crossover the SimPy engine uses the calendar on its own: 600 workers,
    with server queueing; the trace is the heap engine's."""
    sc = load_scenario({"name": "l", "seed": 3, "workers": [{"count": 600, "compute": COMPUTE["exponential"]}],
                        "policy": {"kind": "async"}, "stop": {"updates": 3000},
                        "server": {"apply": {"dist": "constant", "value": 0.002}}})
    with mock.patch.object(ComputeCalendar, "__init__", side_effect=ComputeCalendar.__init__,
                           autospec=True) as made:
        a = simulate(sc, engine="simpy")
    assert made.call_count == 1
    b = simulate(sc, engine="heap")
    for c in a.columns:
        assert a.columns[c].tobytes() == b.columns[c].tobytes(), c


def test_calendar_state_is_freed_when_the_run_returns():
    """With the garbage collector off, no calendar and no draw buffer outlives the run
    (the wake-up closures would keep them: the run drops them)."""
    sc = _scenario("exponential", "constant", {"updates": 3000}, n=CALENDAR_WORKERS)
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        tr = simulate(sc, engine="simpy")
        alive = [type(o).__name__ for o in gc.get_objects() if type(o) in (ComputeCalendar, _model.Draws)]
    finally:
        if was:
            gc.enable()
    assert len(tr) == 3000 and alive == []


def test_the_self_check_catches_a_calendar_out_of_order():
    """A calendar whose wake-ups jump ahead of other events at the same time (its
    entries queued as urgent) fails the once-per-process check."""
    with mock.patch.object(simpy_engine, "_calendar_ok", None):
        assert simpy_engine.calendar_matches_simpy()
    with mock.patch.object(simpy_engine, "_calendar_ok", None), mock.patch.object(simpy_engine, "NORMAL", 0):
        assert not simpy_engine.calendar_matches_simpy()


@pytest.mark.parametrize("case", ["plain", "server", "network"])
def test_heap_loops_report_progress_with_a_time_stop(case):
    """With only a time stop the heap engine's async loops report the time reached
    over the stop every 4,096 gradients (they reported nothing before the end), in
    order, never past 1; the trace is unchanged by it."""
    sc = {"name": "p", "seed": 2, "workers": [{"count": 64, "compute": {"dist": "exponential", "mean": 1.0}}],
          "policy": {"kind": "async"}, "stop": {"time": 800.0}}
    if case == "server":
        sc["server"] = {"apply": {"dist": "constant", "value": 1e-4}}
    if case == "network":
        sc["network"] = {"topology": "star", "bandwidth_gbps": 100, "sharing": "circuit",
                         "latency": {"dist": "constant", "value": 1e-5}}
        sc["model"] = {"parameters": 1000}
    sc = load_scenario(sc)
    seen: list[float] = []
    tr = simulate(sc, engine="heap", progress=seen.append)
    assert len(tr) > 40_000 and len(seen) >= len(tr) // 4096 - 1
    assert seen == sorted(seen) and 0.0 < seen[0] and seen[-1] <= 1.0
    ref = simulate(sc, engine="heap")
    for c in tr.columns:
        assert tr.columns[c].tobytes() == ref.columns[c].tobytes(), c
