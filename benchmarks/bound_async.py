"""The bound: the tightest plain-numpy program producing an async run's columns.

    python benchmarks/bound_async.py N UPDATES      # prints the time of one run

What the vectorised engine computes for ``async`` without a network (zero
apply time, exponential compute), written as directly as numpy allows and
with nothing the engine must do besides: one generator for all draws (no
per-worker streams, no seeding per worker), the same number of draws per
worker as the engine's first pass (the expected arrivals plus 4.5 standard
deviations: a program that does not know the horizon needs a margin too),
per-worker cumulative sums (one ``cumsum`` along the rows of a matrix), one
``argsort`` of all arrival times, and gathers for the columns. No checks, no
ties handled, no trace object. ``benchmarks/bench_bound.py`` measures the
engine against it (the issue-21 ratio "vector / bound").
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np


def draws_per_worker(n: int, updates: int) -> int:
    """The vectorised engine's first-pass draws per worker for N identical
    exponential workers (asyncsim/engine/vector_engine.py, ``_run_kasync``)."""
    mean = updates / n
    return int(math.ceil(mean * 1.005 + 4.5 * math.sqrt(mean) + 8))


def bound_async(n: int, updates: int, mean: float = 1.0, seed: int = 1) -> dict[str, np.ndarray]:
    """The seven trace columns of an async run of ``updates`` updates on ``n``
    exponential(``mean``) workers (values from one generator, not asyncsim's
    per-worker streams: the same computation, not the same numbers)."""
    c = draws_per_worker(n, updates)
    arrive = np.random.default_rng(seed).exponential(mean, size=(n, c))
    np.cumsum(arrive, axis=1, out=arrive)         # each worker's arrival times
    flat = arrive.ravel()
    sel = np.argsort(flat)[:updates]              # the merge: the first `updates` arrivals
    t = flat[sel]
    worker = (sel // c).astype(np.int32)
    g = np.zeros((n, c), dtype=np.int64)          # global index + 1 of each arrival
    g.ravel()[sel] = np.arange(1, updates + 1)
    # version read = 1 + global index of the worker's previous arrival (0 for its first)
    rv = np.concatenate([np.zeros((n, 1), np.int64), g[:, :-1]], axis=1).ravel()[sel]
    t_read = t[rv - 1]
    t_read[rv == 0] = 0.0
    step = np.arange(updates, dtype=np.int64)
    return {"step": step, "worker": worker, "read_version": rv, "staleness": step - rv,
            "t_read": t_read, "t_done": t.copy(), "t_applied": t}


if __name__ == "__main__":
    n, u = int(sys.argv[1]), int(float(sys.argv[2]))
    t0 = time.perf_counter()
    bound_async(n, u)
    print(f"{time.perf_counter() - t0:.4f}")
