"""The event engines' memory per worker (issue 21, second pass) and the draws behind it.

Every worker's compute draws live in one flat buffer (``_model.Draws``): a
first chunk sized from the run, then chunks appended when a worker runs out
(``rng.draw_chunk``). The values must be BlockSampler's 1024-block values
whatever the chunk sizes (the traces' hashes in test_engine_regression.py
check the engines end to end); the tests here check the pieces against
BlockSampler directly, and the memory a run takes per worker against bounds
set from measurements.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
from pydantic import TypeAdapter

from asyncsim.distributions import DistributionSpec
from asyncsim.engine import _model, simulate
from asyncsim.memory import event_worker_bytes
from asyncsim.rng import BLOCK, BlockSampler, GeneratorSet, Streams, draw_chunk, draw_first
from asyncsim.scenario import load_scenario

FAMILIES = [
    {"dist": "constant", "value": 0.25},
    {"dist": "exponential", "mean": 0.7},
    {"dist": "exponential", "mean": 1.0},
    {"dist": "shifted_exponential", "shift": 0.1, "mean": 0.5},
    {"dist": "lognormal", "mean": 1.0, "cv": 2.0},
    {"dist": "gamma", "mean": 1.0, "cv": 0.5},
    {"dist": "uniform", "low": 0.1, "high": 0.4},
    {"dist": "normal", "mean": 0.5, "std": 1.0},
    {"dist": "weibull", "shape": 1.5, "scale": 1.0},
    {"dist": "pareto", "shape": 2.5, "scale": 0.2},
    {"dist": "empirical", "values": [0.1, 0.2, 0.7]},
    {"dist": "mixture", "components": [{"weight": 0.8, "dist": "gamma", "mean": 1.0, "cv": 0.5},
                                       {"weight": 0.2, "dist": "empirical", "values": [3.0, 4.0, 5.0]}]},
]


def _dist(spec):
    return TypeAdapter(DistributionSpec).validate_python(spec)


def test_every_family_is_covered():
    """FAMILIES names every distribution family (a new one must be added here)."""
    from asyncsim.distributions import _SIMPLE, Mixture

    assert {s["dist"] for s in FAMILIES} == {c.model_fields["dist"].default for c in (*_SIMPLE, Mixture)}


@pytest.mark.parametrize("spec", FAMILIES, ids=lambda s: s["dist"])
@pytest.mark.parametrize("first,sizes", [(1, [1, 1, 3, 700, 400, 1500]), (7, [1017, 1, 1030]),
                                         (1000, [24, 1024, 5]), (BLOCK, [1, 2047])])
@pytest.mark.parametrize("bulk", [True, False], ids=["stream-set", "generators"])
def test_chunks_continue_the_block_values(spec, first, sizes, bulk):
    """draw_first's rows then draw_chunk's chunks (their sizes crossing 1024-block
    boundaries) are each stream's BlockSampler values, for every family: those with
    prefix_draws give exactly the chunk asked for, the others the rest of a block."""
    d = _dist(spec)
    s = Streams(9)
    src = s.worker_set(5, "compute") if bulk else GeneratorSet(s, 5, "compute")
    mat = draw_first(src, [(d, 5)], first)
    for w in (3, 0):  # streams are independent: worker 3 first
        got, done = [mat[w]], first
        for k in sizes:
            c = draw_chunk(src, w, d, done, k)
            assert len(c) >= 1
            if d.prefix_draws:
                assert len(c) == k
            else:
                assert done % BLOCK + len(c) == BLOCK or (done % BLOCK == 0 and len(c) == BLOCK)
            got.append(c)
            done += len(c)
        want = BlockSampler(d, s.worker(w, "compute")).take(done)
        np.testing.assert_array_equal(np.concatenate(got), want)


def _sc(n=6, groups=None, **kw):
    workers = groups or [{"count": n, "compute": {"dist": "exponential", "mean": 1.0}}]
    return load_scenario({"name": "d", "seed": 3, "workers": workers, "policy": {"kind": "async"},
                          "stop": {"updates": 100}, **kw})


@pytest.mark.parametrize("times", [False, True])
@pytest.mark.parametrize("firsts", [[1, 2], [3, 1], [1024, 5]])
def test_draws_buffer_hands_out_the_block_values(times, firsts):
    """Draws over two groups with tiny first chunks: reading every worker's values one
    by one (refills included, workers interleaved) gives its BlockSampler values (with
    ``times``: their running sums, as the additions t + d would), and every position
    read is owned by its worker."""
    sc = _sc(groups=[{"count": 3, "compute": {"dist": "lognormal", "mean": 1.0, "cv": 0.8}},
                     {"count": 2, "compute": {"dist": "mixture", "components": [
                         {"weight": 0.5, "dist": "exponential", "mean": 1.0},
                         {"weight": 0.5, "dist": "constant", "value": 2.0}]}}])
    s = Streams(sc.seed)
    dr = _model.Draws(_model._WorkerStreams(sc, s.worker_streams(5, "compute"), firsts), times=times)
    pos = dr.starts()
    assert pos == [dr.start(w) for w in range(5)]
    got: list[list[float]] = [[] for _ in range(5)]
    read: list[list[int]] = [[] for _ in range(5)]
    rng = np.random.default_rng(0)
    for w in rng.integers(0, 5, 3000).tolist():  # interleaved, ~600 values a worker
        i = pos[w]
        if dr.buf[i] < 0.0:
            i = dr.refill(i)
        got[w].append(dr.buf[i])
        read[w].append(i)
        pos[w] = i + 1
    dists = sc.compute_dists()
    for w in range(5):
        want = BlockSampler(dists[w], s.worker(w, "compute")).take(len(got[w]))
        if times:
            t, sums = 0.0, []
            for d in want.tolist():
                t = t + d
                sums.append(t)
            want = np.array(sums)
        np.testing.assert_array_equal(np.array(got[w]), want)
        assert (dr.owners(np.array(read[w])) == w).all()


def test_values_iterators_hand_out_each_workers_draws():
    """Draws.values (the policies' compute_next): workers interleaved, pieces and
    refills included, each gets its own BlockSampler values."""
    import itertools

    sc = _sc(n=4)
    s = Streams(sc.seed)
    dr = _model.Draws(_model._WorkerStreams(sc, s.worker_streams(4, "compute"), 2))
    nxt = [itertools.chain.from_iterable(dr.values(w, piece=3)).__next__ for w in range(4)]
    order = [1, 1, 0, 1, 1, 1, 0] + [3] * 40 + [1] * 9
    got = [nxt[w]() for w in order]
    for w in (0, 1, 3):
        want = BlockSampler(sc.compute_dists()[w], s.worker(w, "compute")).take(order.count(w)).tolist()
        assert [g for g, o in zip(got, order) if o == w] == want


def test_first_chunks_follow_the_groups_rates():
    """A group twice as fast draws about twice as much: its first chunk is about the
    expected draws plus 1.5 sd of a renewal count (cv 1 here) plus 2."""
    sc = load_scenario({"name": "f", "seed": 1, "policy": {"kind": "async"}, "stop": {"updates": 30_000},
                        "workers": [{"count": 100, "compute": {"dist": "exponential", "mean": 1.0}},
                                    {"count": 100, "compute": {"dist": "exponential", "mean": 0.5}}]})
    slow, fast = _model._first_block(sc, 30_000, None)
    e_slow, e_fast = 100.0, 200.0  # 30,000 updates shared 1 : 2 over 100 + 100 workers
    assert slow == int(np.ceil(e_slow + 1.5 * np.sqrt(e_slow) + 2))
    assert fast == int(np.ceil(e_fast + 1.5 * np.sqrt(e_fast) + 2))
    # a time stop caps the guess at the time over the mean; sync draws once a round per worker
    assert _model._first_block(sc, 30_000, 10.0)[1] == int(np.ceil(20 + 1.5 * np.sqrt(20) + 2))
    sync = sc.model_copy(update={"policy": load_scenario({"name": "s", "policy": {"kind": "sync"},
                                                          "workers": [{"count": 1, "compute": {
                                                              "dist": "constant", "value": 1}}],
                                                          "stop": {"updates": 1}}).policy})
    assert _model._first_block(sync, 50, None) == [int(np.ceil(50 + 1.5 * np.sqrt(50) + 2))] * 2
    assert _model._first_block(sc, None, None) == [BLOCK, BLOCK]


def _peak_per_worker(sc, engine):
    simulate(sc, updates=50, engine=engine)  # imports and caches outside the measurement
    tracemalloc.start()
    try:
        tr = simulate(sc, engine=engine)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = sum(c.nbytes for c in tr.columns.values())
    return (peak - size) / sc.n_workers


def _async(n, updates, apply=0.0, **kw):
    return load_scenario({"name": "m", "seed": 1, "workers": [{"count": n, "compute": {"dist": "exponential",
                                                                                    "mean": 1.0}}],
                          "policy": {"kind": "async"}, "stop": {"updates": updates},
                          "server": {"apply": {"dist": "constant", "value": apply}}, **kw})


@pytest.mark.parametrize("engine,apply,bound", [("heap", 0.0, 150), ("heap", 1e-6, 200), ("simpy", 0.0, 200),
                                                ("simpy", 1e-6, 200)])
def test_event_engines_hold_a_few_hundred_bytes_per_worker(engine, apply, bound):
    """4,096 workers, 10^4 updates (about 2.4 gradients each): beyond the trace's own
    size, a run's peak traced memory per worker stays under the bound (measured 84 B
    for the heap engine's plain loop, 103 B for its server loop, 94 B for SimPy's
    compute calendar; 148 B, 263 B and 1.1 KB with a tuple a heap entry, the general
    loop and a process per worker; before the flat draw buffer 1.0 KB, 1.0 KB and
    1.8 KB)."""
    per = _peak_per_worker(_async(4096, 10_000, apply), engine)
    assert per < bound, per


NET_RANDOM = {"network": {"topology": "star", "bandwidth_gbps": 10, "sharing": "circuit",
                          "latency": {"dist": "exponential", "mean": 5e-5}}, "model": {"parameters": 100_000}}
NET_CONST = {"network": {"topology": "star", "bandwidth_gbps": 10, "sharing": "circuit",
                         "latency": {"dist": "constant", "value": 5e-5}}, "model": {"parameters": 100_000}}
FAULTS = {"faults": [{"kind": "random_crash", "group": 0, "mtbf": {"dist": "exponential", "mean": 50.0},
                      "repair": {"dist": "exponential", "mean": 1.0}}]}


@pytest.mark.parametrize("engine", ["heap", "simpy"])
@pytest.mark.parametrize("case", ["async", "apply", "ssp", "net-const", "net-random", "faults"])
def test_memory_estimate_per_worker_matches_the_measured_cost(engine, case):
    """memory.event_worker_bytes against the traced peak per worker beyond the trace
    (2,048 workers, 2 gradients each): never below it, at most 4x above it (so a large
    run is refused only when it would not fit)."""
    n = 2048
    kw = {"net-const": NET_CONST, "net-random": NET_RANDOM, "faults": FAULTS}.get(case, {})
    sc = _async(n, 2 * n, 1e-6 if case == "apply" else 0.0, **kw)
    if case == "ssp":
        sc = sc.model_copy(update={"policy": load_scenario({"name": "p", "policy": {"kind": "ssp", "bound": 2},
                                                            "workers": [{"count": 1, "compute": {
                                                                "dist": "constant", "value": 1}}],
                                                            "stop": {"updates": 1}}).policy})
    measured = _peak_per_worker(sc, engine)
    est = event_worker_bytes(sc, engine)
    assert measured <= est <= 4 * measured, (measured, est)


def test_simpy_processes_are_freed_when_the_run_returns():
    """The run breaks the process <-> event cycles itself (and empties the queue): with
    the garbage collector off, no SimPy process outlives simulate()."""
    import simpy

    sc = _async(300, 2000)
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        tr = simulate(sc, engine="simpy")
        alive = sum(type(o) is simpy.Process for o in gc.get_objects())
    finally:
        if was:
            gc.enable()
    assert len(tr) == 2000 and alive == 0


@pytest.mark.parametrize("compute", [{"dist": "empirical", "values": [-0.0, 0.0, 1.0, 2.0]},
                                     {"dist": "constant", "value": 0.5},
                                     {"dist": "empirical", "values": [1.0, 2.0, 3.0]}])
@pytest.mark.parametrize("time_stop", [False, True])
def test_plain_loop_orders_ties_as_simpy(compute, time_stop):
    """The heap engine's plain loop keys its heap by the times' bits and the scheduling
    order: with times that tie all the time (and times of -0.0, keyed as 0.0) its trace
    is SimPy's, bit for bit, with first chunks far too short (refills everywhere)."""
    from unittest import mock

    stop = {"time": 40.0} if time_stop else {"updates": 1500}
    sc = load_scenario({"name": "t", "seed": 4, "workers": [{"count": 24, "compute": compute}],
                        "policy": {"kind": "async"}, "stop": stop})
    with mock.patch.object(_model, "_first_block", lambda sc, updates, until: [2]):
        a, b = simulate(sc, engine="heap"), simulate(sc, engine="simpy")
    for c in a.columns:
        np.testing.assert_array_equal(a.columns[c], b.columns[c])
        assert a.columns[c].tobytes() == b.columns[c].tobytes(), c  # (-0.0 kept)
    assert a.sim_time == b.sim_time and len(a) > 0
