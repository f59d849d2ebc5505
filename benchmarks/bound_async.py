"""The bound: the tightest plain-numpy program producing an async run's columns.

    python benchmarks/bound_async.py N UPDATES      # prints the time of one run

What the vectorised engine computes for ``async`` without a network (zero
apply time, exponential compute), written as directly as numpy allows and
with nothing the engine must do besides: one generator for all draws (no
per-worker streams, no seeding per worker), the same number of draws per
worker as the engine's first pass (the expected arrivals plus 4.5 standard
deviations: a program that does not know the horizon needs a margin too),
per-worker cumulative sums (one ``cumsum`` along the rows of a matrix), one
``argsort`` of the arrival times (of those up to the ``updates``-th smallest,
found by ``np.partition``, when there are more than twice as many), and
gathers for the columns, each written once. No checks, no
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
    if len(flat) > 2 * updates:                   # many more draws than needed: select first
        cand = np.flatnonzero(flat <= np.partition(flat, updates - 1)[updates - 1])
        sel = cand[np.argsort(flat[cand])[:updates]]
    else:
        sel = np.argsort(flat)[:updates]          # the merge: the first `updates` arrivals
    t = flat[sel]
    worker = np.floor_divide(sel, c, out=np.empty(updates, np.int32), casting="unsafe")
    step = np.arange(updates, dtype=np.int64)
    # version read = 1 + global index of the worker's previous arrival (0 for its first):
    # the arrivals' global indices in a matrix after a column of -1, read one to the left
    g = np.empty((n, c + 1), dtype=np.int64)
    g[:, 0] = -1
    pos = np.add(sel, worker, dtype=np.int64)     # (in place from here: fresh pages cost)
    pos += 1
    g.ravel()[pos] = step
    pos -= 1
    rv = g.ravel().take(pos, out=pos)
    rv += 1
    pad = np.empty(updates + 1)                   # t_read: t_applied of step rv - 1, 0 first
    pad[0] = 0.0
    pad[1:] = t
    return {"step": step, "worker": worker, "read_version": rv, "staleness": step - rv,
            "t_read": pad.take(rv), "t_done": pad[1:], "t_applied": t}


if __name__ == "__main__":
    n, u = int(sys.argv[1]), int(float(sys.argv[2]))
    t0 = time.perf_counter()
    bound_async(n, u)
    print(f"{time.perf_counter() - t0:.4f}")
