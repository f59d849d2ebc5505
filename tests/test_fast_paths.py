"""The engines' fast paths against their plain references.

* the vectorised engine's merge of sorted runs (radix passes plus local
  repair) against ``np.argsort(kind="stable")``;
* ``BlockSampler.arrays()`` against ``next()`` / ``take()`` (same stream use);
* the trace validator's all-applied fast path rejects what the masked path
  rejects.

Engine-level equality of the traces is tests/test_parity.py's job.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncsim.distributions import Exponential
from asyncsim.engine.vector_engine import _merge
from asyncsim.errors import TraceError
from asyncsim.rng import BlockSampler, Streams
from asyncsim.trace import Trace


def _merge_order(a: np.ndarray, n_runs: int) -> np.ndarray:
    """The merge's order, after checking its sorted values are ``a[order]``."""
    order, srt = _merge(a, n_runs)
    np.testing.assert_array_equal(srt, a[order])
    return order


def _runs(seed: int, n_runs: int, length: int, scale: float, step: float | None) -> np.ndarray:
    """``n_runs`` sorted runs concatenated; with ``step``, times on a grid (exact ties)."""
    rng = np.random.default_rng(seed)
    d = rng.exponential(scale, size=(n_runs, length))
    if step is not None:
        d = np.maximum(np.round(d / step), 1) * step
    return np.cumsum(d, axis=1).ravel()


@pytest.mark.parametrize("n_runs", [1, 2, 4, 5, 17, 64, 512])
def test_merge_order_equals_stable_argsort(n_runs):
    a = _runs(n_runs, n_runs, 200_000 // n_runs + 1, 1.0, None)
    np.testing.assert_array_equal(_merge_order(a, n_runs), np.argsort(a, kind="stable"))


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_runs=st.integers(1, 80), length=st.integers(1, 300),
       scale=st.sampled_from([1e-9, 1e-3, 1.0, 1e6]),
       step=st.sampled_from([None, None, 0.5, 1e-7]))
def test_merge_order_property(seed, n_runs, length, scale, step):
    """Exact ties (grid times) and near-ties (times closer than the 32-bit
    quantum: the local repair) included."""
    a = _runs(seed, n_runs, length, scale, step)
    np.testing.assert_array_equal(_merge_order(a, n_runs), np.argsort(a, kind="stable"))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_runs=st.integers(5, 80), length=st.integers(1, 300),
       step=st.sampled_from([None, 0.5]), frac=st.floats(0.0, 0.6))
def test_merge_prefix_equals_stable_argsort(seed, n_runs, length, step, frac):
    """Asked for the first ``need`` entries only (selection, then a sort of those)."""
    a = _runs(seed, n_runs, length, 1.0, step)
    need = max(1, int(len(a) * frac))
    order, srt = _merge(a, n_runs, need)
    want = np.argsort(a, kind="stable")
    assert len(order) >= need
    np.testing.assert_array_equal(order[:need], want[:need])
    np.testing.assert_array_equal(srt[:need], a[want[:need]])


def test_merge_order_many_collisions_is_linear():
    """A million near-equal times in 64 runs (most quantised values shared by several
    runs): the one-lexsort repair gives the stable order (the old per-group loop
    took a Python iteration and an argsort per group)."""
    rng = np.random.default_rng(3)
    a = (np.sort(rng.random((64, 16_000)), axis=1) * 1e-6 + 1.0).ravel()
    order, srt = _merge(a, 64)
    np.testing.assert_array_equal(order, np.argsort(a, kind="stable"))
    np.testing.assert_array_equal(srt, a[order])


def test_merge_order_repairs_quantisation_collisions():
    # pairs of times 1 ulp-ish apart in different runs share a quantised value and
    # arrive in index order, not time order: the repair must swap them
    base = np.linspace(1.0, 1e6, 50_000)
    a = np.concatenate([base + 1e-7, base])  # run 0 is later than run 1 at every index
    order = _merge_order(a, 40)  # (as if 40 runs: forces the radix path)
    np.testing.assert_array_equal(order, np.argsort(a, kind="stable"))


def test_merge_order_all_zero_and_empty():
    z = np.zeros(100)
    np.testing.assert_array_equal(_merge_order(z, 50), np.arange(100))
    assert len(_merge_order(np.zeros(0), 50)) == 0


@pytest.mark.parametrize("used", [0, 1, 1023, 1024, 1500])
def test_blocksampler_arrays_consume_like_next(used):
    d = Exponential(mean=2.0)
    a = BlockSampler(d, Streams(5).worker(3, "compute"))
    b = BlockSampler(d, Streams(5).worker(3, "compute"))
    head = [a.next() for _ in range(used)]
    it = a.arrays()
    got = np.concatenate([next(it) for _ in range(3)])
    want = b.take(used + len(got))
    np.testing.assert_array_equal(np.array(head + got.tolist()), want)
    # and next() after the arrays went on from where they stopped
    assert a.next() == b.next()


def _applied_columns(n: int = 50) -> dict[str, np.ndarray]:
    """A valid all-applied async trace (the validator's fast path)."""
    step = np.arange(n, dtype=np.int64)
    t = np.arange(1, n + 1, dtype=float)
    rv = np.maximum(step - 2, 0)
    return {"step": step, "worker": (step % 3).astype(np.int32), "read_version": rv,
            "t_read": t - 0.5, "t_done": t.copy(), "t_applied": t + 0.1}


@pytest.mark.parametrize("column,index,value,match", [
    ("staleness", 7, 5, "staleness"),
    ("read_version", 7, 9, "newer"),
    ("t_read", 3, np.nan, "finite"),
    ("t_done", 3, np.inf, "finite"),
    ("t_done", 3, 0.0, "t_done < t_read"),
    ("t_applied", 10, np.inf, "finite t_applied"),
    ("t_applied", 10, 1.0, "t_applied < t_done|non-decreasing"),
    ("step", 49, 60, "n_updates"),
    ("worker", 0, 7, "worker ids"),
])
def test_all_applied_fast_path_rejects(column, index, value, match):
    cols = _applied_columns()
    Trace.from_columns(cols, n_workers=3, n_updates=50)  # valid as built
    cols = {k: v.copy() for k, v in cols.items()}
    cols["staleness"] = cols["step"] - cols["read_version"]
    cols[column] = cols[column].astype(float) if np.isnan(value) or np.isinf(value) else cols[column]
    cols[column][index] = value
    if column in ("step", "read_version"):
        cols["staleness"] = cols["step"] - cols["read_version"]
    with pytest.raises(TraceError, match=match):
        Trace.from_columns(cols, n_workers=3, n_updates=50, sim_time=100.0)


def test_all_finite_helper_overflowing_sum():
    from asyncsim.trace import _all_finite

    big = np.full(4, 1e308)
    with np.errstate(over="ignore"):
        assert not np.isfinite(big.sum())
    assert _all_finite(big)
    assert not _all_finite(np.array([1.0, np.nan])) and not _all_finite(np.array([np.inf, -np.inf]))
