"""asyncsim.rng's batch seeding against numpy's SeedSequence and PCG64."""

from __future__ import annotations

import numpy as np
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
