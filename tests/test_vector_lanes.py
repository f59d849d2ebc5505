"""The vectorised engine's lanes (asyncsim._pcg: all workers' streams stepped
together) and its draw matrix with extensions give the event engines' traces."""

from __future__ import annotations

import numpy as np
import pytest

import asyncsim
from asyncsim import _pcg
from asyncsim.engine import vector_engine

pytestmark = pytest.mark.skipif(not _pcg.available(), reason="this numpy's PCG64 cannot be stepped here")


def _sc(workers, stop, policy=None, seed=1):
    return asyncsim.load_scenario({"name": "lanes", "seed": seed, "workers": workers,
                                   "policy": policy or {"kind": "async"}, "stop": stop})


def _same(a, b):
    assert set(a.columns) == set(b.columns)
    for c in a.columns:
        np.testing.assert_array_equal(a.columns[c], b.columns[c], err_msg=c)
    assert a.sim_time == b.sim_time


@pytest.fixture
def spy(monkeypatch):
    calls = []
    orig = vector_engine._lane_arrivals

    def wrapped(*a, **k):
        r = orig(*a, **k)
        calls.append(r)
        return r

    monkeypatch.setattr(vector_engine, "_lane_arrivals", wrapped)
    return calls


EXP = {"dist": "exponential", "mean": 1.0}


@pytest.mark.parametrize("case", [
    ([{"count": 2100, "compute": EXP}], {"updates": 6000}, None),
    ([{"count": 2100, "compute": EXP}], {"updates": 2000}, {"kind": "k_async", "k": 3}),
    ([{"count": 2100, "compute": EXP}], {"time": 3.0}, None),
    ([{"count": 1200, "compute": EXP}, {"count": 900, "compute": {"dist": "exponential", "mean": 2.5}}],
     {"updates": 5000}, None),
], ids=["async", "k_async", "time-stop", "two-groups"])
@pytest.mark.parametrize("seed", [1, 2])
def test_lanes_equal_heap(case, seed, spy):
    workers, stop, policy = case
    sc = _sc(workers, stop, policy, seed)
    _same(asyncsim.simulate(sc, engine="vector"), asyncsim.simulate(sc, engine="heap"))
    assert spy and spy[0] is not None  # (the lanes were used)


@pytest.mark.parametrize("full,tail", [(0.0, 0), (1.1, 0), (1.1, 10**9), (0.6, 10**9), (0.6, 0), (0.3, 40)],
                         ids=["all-workers-only", "subsets-only", "numpy-calls-only", "all-then-numpy",
                              "all-then-subsets", "mixed"])
def test_lanes_phases_equal_heap(full, tail, spy, monkeypatch):
    """Every phase of the lanes' drawing on its own and mixed: all workers at once,
    subsets kept to those still short, the last ones by numpy's calls."""
    monkeypatch.setattr(vector_engine, "_LANES_MIN_WORKERS", 1)
    monkeypatch.setattr(vector_engine, "_LANES_FULL", full)
    monkeypatch.setattr(vector_engine, "_LANES_NUMPY_TAIL", tail)
    for seed, n, u in ((3, 300, 2000), (4, 64, 900), (5, 500, 400)):
        sc = _sc([{"count": n, "compute": {"dist": "exponential", "mean": 0.7}}], {"updates": u}, seed=seed)
        _same(asyncsim.simulate(sc, engine="vector"), asyncsim.simulate(sc, engine="heap"))
    assert len(spy) == 3 and all(r is not None for r in spy)


def test_lanes_short_of_the_target_fall_back(monkeypatch, spy):
    """Fewer than m + 1 arrivals before the lanes' target (forced: a target 100x
    too early): the general path starts the streams again, same trace."""
    orig = vector_engine._lane_arrivals

    def early(lanes, scale, rate, m, until):
        return orig(lanes, scale, rate * 100.0, m, until)

    monkeypatch.setattr(vector_engine, "_lane_arrivals", early)
    sc = _sc([{"count": 2100, "compute": EXP}], {"updates": 5000}, seed=8)
    _same(asyncsim.simulate(sc, engine="vector"), asyncsim.simulate(sc, engine="heap"))


def test_lanes_chosen_only_where_cheaper():
    """Lanes for thousands of workers making a few draws each; numpy's calls
    otherwise (few workers, or many draws each), per the measured costs."""
    d = vector_engine._Draws(_sc([{"count": 4096, "compute": EXP}], {"updates": 10}))
    assert vector_engine._lanes_for(d, 3.0) is not None
    d = vector_engine._Draws(_sc([{"count": 4096, "compute": EXP}], {"updates": 10}))
    assert vector_engine._lanes_for(d, 100.0) is None
    d = vector_engine._Draws(_sc([{"count": 64, "compute": EXP}], {"updates": 10}))
    assert vector_engine._lanes_for(d, 3.0) is None
    d = vector_engine._Draws(_sc([{"count": 4096, "compute": {"dist": "lognormal", "mean": 1.0, "cv": 0.5}}],
                                 {"updates": 10}))
    assert vector_engine._lanes_for(d, 3.0) is None  # (exponential only)


def test_regression_traces_through_the_lanes(monkeypatch):
    """The byte-identity cases (tests/data/engine_traces.json, computed before
    issue 21) that the lanes can take, taken by the lanes: the same hashes."""
    import json
    from pathlib import Path

    from _regression_cases import cases, trace_hash

    monkeypatch.setattr(vector_engine, "_LANES_MIN_WORKERS", 1)
    monkeypatch.setattr(vector_engine, "_LANES_MAX_DRAWS", 1e9)
    ref = json.loads((Path(__file__).parent / "data" / "engine_traces.json").read_text())
    used = []
    orig = vector_engine._lane_arrivals
    monkeypatch.setattr(vector_engine, "_lane_arrivals", lambda *a: used.append(1) or orig(*a))
    for name, spec in cases():
        sc = asyncsim.load_scenario(spec)
        if "vector" not in asyncsim.engine.supported_engines(sc):
            continue
        before = len(used)
        h = trace_hash(asyncsim.simulate(sc, engine="vector"))
        if len(used) > before:
            assert h == ref[name]["hash"], name
    assert used
