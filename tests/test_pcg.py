"""asyncsim._pcg: numpy's exponential draws for many PCG64 streams at once.

Every check is against numpy itself: its own generators (``Generator(PCG64(
SeedSequence(seed, spawn_key=key))).standard_exponential``) and its own answer
to a chosen next output (the tables' defining property)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncsim import _pcg
from asyncsim.rng import pcg64_columns, pcg64_states

pytestmark = pytest.mark.skipif(not _pcg.available(), reason="this numpy's PCG64 cannot be stepped here")


def _keys(n: int, purpose: int = 0) -> np.ndarray:
    keys = np.zeros((n, 3), dtype=np.int64)
    keys[:, 1] = np.arange(n)
    keys[:, 2] = purpose
    return keys


def _numpy(seed: int, n: int, k: int, purpose: int = 0) -> np.ndarray:
    return np.stack([np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(0, i, purpose))))
                     .standard_exponential(k) for i in range(n)])


def test_tables_have_their_defining_property():
    """For each layer ``i``: numpy's draw from the output with layer ``i`` and
    53-bit part ``R`` is ``R * we[i]`` using that one output exactly when
    ``R < ke[i]`` (checked at ``R = ke - 1`` and ``R = ke``, and far below)."""
    we, ke = _pcg.exp_tables()
    layers = [i for i in range(256) if ke[i] > 0]
    assert ke[1] == 0 and len(layers) == 255  # (the ziggurat's top layer never takes the fast path)
    R = [int(ke[i]) - 1 for i in layers]
    vals, fast = _pcg._probe([_pcg._output(r, i) for r, i in zip(R, layers)])
    assert fast.all()
    np.testing.assert_array_equal(vals, np.array(R, dtype=np.float64) * we[layers])
    _, fast = _pcg._probe([_pcg._output(int(ke[i]), i) for i in layers if ke[i] < 2**53])
    assert not fast.any()
    R = [int(ke[i]) // 3 for i in layers]
    vals, fast = _pcg._probe([_pcg._output(r, i) for r, i in zip(R, layers)])
    assert fast.all()
    np.testing.assert_array_equal(vals, np.array(R, dtype=np.float64) * we[layers])


@pytest.mark.parametrize("vector_slow", [1, 10**9], ids=["slow-path-vectorised", "slow-path-numpy"])
def test_lanes_equal_numpy_streams(vector_slow, monkeypatch):
    """3,000 streams x 120 draws (about 7,900 off the fast path, the tail and
    draws that start again included), drawn all together, for selections, for
    subsets kept to the streams still drawing and by numpy's own calls: every
    stream's values are its numpy generator's, in order."""
    monkeypatch.setattr(_pcg, "_VECTOR_SLOW", vector_slow)
    n, k, seed = 3000, 120, 2**33 + 17
    want = _numpy(seed, n, k)
    lanes = _pcg.ExpLanes(pcg64_columns(seed, _keys(n)))
    got = np.full((n, k), np.nan)
    done = np.zeros(n, dtype=int)
    rng = np.random.default_rng(5)
    for j in range(40):  # all, then random selections (each stream's next draw)
        sel = None if j % 4 == 0 else np.sort(rng.choice(n, size=int(rng.integers(1, n)), replace=False))
        x = lanes.draw(sel)
        idx = np.arange(n) if sel is None else sel
        got[idx, done[idx]] = x
        done[idx] += 1
    ids = np.flatnonzero(done < k)
    sub = lanes.subset(ids)
    while len(ids):  # a subset kept to the streams still short of k draws
        x = sub.draw()
        got[ids, done[ids]] = x
        done[ids] += 1
        keep = done[ids] < k
        if len(ids) > 50 and not keep.all():
            sub.keep(keep)
            ids = ids[keep]
        elif len(ids) <= 50:  # the last few by numpy's calls
            for j, w in enumerate(ids):
                out = np.empty(k - done[w])
                sub.finish_numpy(j, out)
                got[w, done[w]:] = out
                done[w] = k
            break
    np.testing.assert_array_equal(got, want)


def test_lanes_from_rows_and_stream_set_leave_them_alone():
    from asyncsim.rng import StreamSet

    st_rows = pcg64_states(7, _keys(64, purpose=2))
    before = st_rows.copy()
    ss = StreamSet(st_rows)
    for src in (st_rows, ss):
        lanes = _pcg.ExpLanes(src)
        got = np.stack([lanes.draw() for _ in range(30)], axis=1)
        np.testing.assert_array_equal(got, _numpy(7, 64, 30, purpose=2))
    np.testing.assert_array_equal(st_rows, before)
    np.testing.assert_array_equal(ss.state, before)


def test_unavailable_numpy_falls_back(monkeypatch):
    """Where the lanes cannot be used (another numpy layout, ``ASYNCSIM_STREAM_SET=0``)
    the vectorised engine draws with numpy's calls: the same trace."""
    import asyncsim
    from asyncsim.engine import vector_engine

    sc = asyncsim.load_scenario({"name": "f", "seed": 3, "workers": [{"count": 2100, "compute": {
        "dist": "exponential", "mean": 1.0}}], "policy": {"kind": "async"}, "stop": {"updates": 6000}})
    a = asyncsim.simulate(sc, engine="vector")
    monkeypatch.setattr(_pcg, "_ok", False)
    calls = []
    monkeypatch.setattr(vector_engine, "_lane_arrivals", lambda *a, **k: calls.append(1))
    b = asyncsim.simulate(sc, engine="vector")
    assert not calls
    for c in a.columns:
        np.testing.assert_array_equal(a.columns[c], b.columns[c])


_times = st.lists(st.one_of(st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
                            st.sampled_from([0.0, 1.0, 1.0 + 2**-50, 1.0 + 2**-49, 5e-324, 2.5])),
                  min_size=2, max_size=400)


@settings(max_examples=300, deadline=None)
@given(_times)
def test_stable_order_is_the_stable_argsort(xs):
    """The merge's sort (times' bits with their index packed in, sorted as values,
    near-equal groups sorted again) against numpy's stable argsort: ties,
    near-ties, zeros and subnormal times included."""
    from asyncsim.engine.vector_engine import _stable_argsort, _stable_order

    x = np.array(xs, dtype=np.float64)
    want = np.argsort(x, kind="stable")
    for f in (_stable_order, _stable_argsort):
        p, v = f(x)
        np.testing.assert_array_equal(p, want)
        np.testing.assert_array_equal(v, x[want])
