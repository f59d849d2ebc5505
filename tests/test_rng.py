"""asyncsim.rng's batch seeding against numpy's SeedSequence and PCG64."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncsim.rng import Streams, _seed_states, pcg64_batch


def _numpy_state(seed: int, key) -> np.ndarray:
    return np.random.SeedSequence(seed, spawn_key=tuple(int(k) for k in key)).generate_state(4, np.uint64)


@settings(max_examples=200, deadline=None)
@given(seed=st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 2**200)),
       keys=st.lists(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=5).map(tuple),
                     min_size=1, max_size=6).filter(lambda ks: len({len(k) for k in ks}) == 1))
def test_seed_states_equal_numpy(seed, keys):
    got = _seed_states(seed, np.array(keys, dtype=np.int64))
    want = np.array([_numpy_state(seed, k) for k in keys])
    np.testing.assert_array_equal(got, want)


def test_workers_are_the_keyed_generators():
    for seed in (0, 1, 12345, 2**63 + 11):
        s = Streams(seed)
        for purpose in ("compute", "network", "faults"):
            for n in (1, 7, 8, 300):  # below 8 keys numpy builds them itself
                batch = s.workers(n, purpose)
                for i in sorted({0, n // 2, n - 1}):
                    np.testing.assert_array_equal(batch[i].random(8), s.worker(i, purpose).random(8))


def test_batch_falls_back_to_numpy_for_keys_beyond_32_bits():
    keys = np.array([[0, 2**40 + i, 0] for i in range(10)], dtype=np.int64)
    gens = pcg64_batch(3, keys)
    for g, k in zip(gens, keys):
        want = np.random.Generator(np.random.PCG64(np.random.SeedSequence(3, spawn_key=tuple(int(x) for x in k))))
        np.testing.assert_array_equal(g.random(4), want.random(4))


# ----------------------------------------------------------- stream sets (issue 21)
from asyncsim.distributions import DistributionSpec  # noqa: E402
from asyncsim.rng import BLOCK, BlockSampler, GeneratorSet, StreamSet, draw_chunk, draw_first, pcg64_states  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(seed=st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 2**130)),
       keys=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**32 - 1), st.integers(0, 4)),
                     min_size=1, max_size=5))
def test_pcg64_states_equal_numpy(seed, keys):
    """The bulk seeding arithmetic gives numpy's PCG64 state and increment."""
    got = pcg64_states(seed, np.array(keys, dtype=np.int64))
    for row, k in zip(got, keys):
        st_ = np.random.PCG64(np.random.SeedSequence(seed, spawn_key=k)).state["state"]
        assert int(row[0]) | int(row[1]) << 64 == st_["state"]
        assert int(row[2]) | int(row[3]) << 64 == st_["inc"]


def test_stream_set_interleaved_equals_own_generators():
    """Streams of a set drawn in turns (integers use PCG64's buffered half word)
    give each stream's own generator's values; reset starts a stream again."""
    s = Streams(77)
    ss = s.worker_set(40, "compute")
    assert isinstance(ss, StreamSet)
    own = s.workers(40, "compute")
    rng = np.random.default_rng(0)
    for _ in range(200):
        i = int(rng.integers(40))
        k = int(rng.integers(1, 6))
        if rng.random() < 0.5:
            a, b = own[i].integers(0, 7, k), ss.use(i).integers(0, 7, k)
        else:
            a, b = own[i].exponential(2.0, k), ss.use(i).exponential(2.0, k)
        ss.keep(i)
        np.testing.assert_array_equal(a, b)
    ss.reset(3)
    np.testing.assert_array_equal(ss.use(3).random(5), s.worker(3, "compute").random(5))
    # a workers' set keeps no copy of its starts: reset computes stream i's again
    assert ss.start is None
    for i in (0, 17, 39):
        ss.reset(i)
        np.testing.assert_array_equal(ss.use(i).random(4), s.worker(i, "compute").random(4))
        ss.keep(i)
    # many resets: every start is computed at once and kept (8 here), the streams unchanged
    for k in range(12):
        ss.reset(k)
    assert ss.start is not None
    for i in (5, 30):
        ss.use(i).random(3)
        ss.keep(i)
        ss.reset(i)
        np.testing.assert_array_equal(ss.use(i).random(4), s.worker(i, "compute").random(4))
        ss.keep(i)
    net = s.worker_set(5, "network")
    net.use(4).random(9)
    net.reset(4)
    np.testing.assert_array_equal(net.use(4).random(3), s.worker(4, "network").random(3))


def test_stream_set_refuses_keys_beyond_32_bits():
    assert Streams(1).worker_set(3) is not None
    from asyncsim.rng import stream_set

    assert stream_set(1, np.array([[0, 2**33, 0]], dtype=np.int64)) is None


@pytest.mark.parametrize("spec", [
    {"dist": "exponential", "mean": 0.7}, {"dist": "exponential", "mean": 1.0},
    {"dist": "normal", "mean": 0.5, "std": 1.0},
    {"dist": "mixture", "components": [{"weight": 0.8, "dist": "gamma", "mean": 1.0, "cv": 0.5},
                                       {"weight": 0.2, "dist": "empirical", "values": [3.0, 4.0, 5.0]}]},
    {"dist": "empirical", "values": [0.1, 0.2, 0.7]}, {"dist": "lognormal", "mean": 1.0, "cv": 2.0},
])
@pytest.mark.parametrize("first", [1, 16, 1000, BLOCK, 2500])
@pytest.mark.parametrize("bulk", [True, False], ids=["stream-set", "generators"])
def test_first_draws_then_rest_equal_blocksampler(spec, first, bulk):
    """draw_first's rows then draw_chunk's continuation are every stream's
    BlockSampler values (1024-blocks), whatever the first block's size, for
    every family (those whose draws depend on the block size draw whole blocks)."""
    from pydantic import TypeAdapter

    d = TypeAdapter(DistributionSpec).validate_python(spec)
    s = Streams(5)
    src = s.worker_set(6, "compute") if bulk else GeneratorSet(s, 6, "compute")
    mat = draw_first(src, [(d, 6)], first)
    # the rest of worker 4 first, then worker 1: streams are independent
    for w in (4, 1):
        parts, done = [], first
        for k in (7, 1500, 600):
            parts.append(draw_chunk(src, w, d, done, k))
            done += len(parts[-1])
        rest = np.concatenate(parts)
        want = BlockSampler(d, s.worker(w, "compute")).take(first + len(rest))
        np.testing.assert_array_equal(mat[w], want[:first])
        np.testing.assert_array_equal(rest, want[first:])


@pytest.mark.parametrize("engine", ["vector", "heap", "simpy"])
def test_stream_set_switched_off_gives_the_same_trace(monkeypatch, tmp_path, engine):
    """ASYNCSIM_STREAM_SET=0 (and a numpy outside the known layouts) falls back to one
    generator per stream; the trace is the same."""
    import asyncsim
    from asyncsim.rng import stream_set

    f = tmp_path / "s.yaml"
    f.write_text("name: s\nseed: 1\nworkers:\n  - {count: 6, compute: {dist: exponential, mean: 0.4}}\n"
                 "  - {count: 3, compute: {dist: lognormal, mean: 1.0, cv: 0.5}}\n"
                 "policy: {kind: async}\nstop: {updates: 100}\n")
    sc = asyncsim.load_scenario(f)
    on = asyncsim.simulate(sc, updates=3000, seed=5, engine=engine)
    monkeypatch.setenv("ASYNCSIM_STREAM_SET", "0")
    assert stream_set(1, np.array([[0, 1, 0]], dtype=np.int64)) is None
    off = asyncsim.simulate(sc, updates=3000, seed=5, engine=engine)
    for k in on.columns:
        assert np.array_equal(on.columns[k], off.columns[k], equal_nan=True), k
