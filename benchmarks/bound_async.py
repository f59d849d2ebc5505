"""The bound: the tightest plain-numpy program producing an async run's columns.

    python benchmarks/bound_async.py N UPDATES      # prints the time of one run

What the vectorised engine computes for ``async`` without a network (zero
apply time, exponential compute), written as directly as numpy allows and
with nothing the engine must do besides: one generator for all draws (no
per-worker streams, no seeding per worker), the number of draws per worker of
the engine's first pass when the issue was written (the expected arrivals
plus 4.5 standard deviations: a program that does not know the horizon needs
a margin too; ``tight=True``: the engine's smaller matrix now, without the
extensions that make the engine's exact),
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


def draws_per_worker(n: int, updates: int, tight: bool = False) -> int:
    """Draws per worker for N identical exponential workers: the expected
    arrivals plus 4.5 standard deviations plus 8 (the issue's bound; the
    vectorised engine's first pass when the issue was written), or with
    ``tight`` the engine's draw matrix now (``vector_engine._MatrixArrivals``:
    the expected arrivals by a target 4.5 standard deviations of the total
    late, plus 2.5 standard deviations plus 2; the engine then extends the
    few workers still short, which this bound does not)."""
    mean = updates / n
    if tight:
        share = (updates + 1) / n * (1 + 4.5 / math.sqrt(updates + 1))
        return int(math.ceil(share + 2.5 * math.sqrt(share) + 2))
    return int(math.ceil(mean * 1.005 + 4.5 * math.sqrt(mean) + 8))


def bound_async(n: int, updates: int, mean: float = 1.0, seed: int = 1, tight: bool = False) -> dict[str, np.ndarray]:
    """The seven trace columns of an async run of ``updates`` updates on ``n``
    exponential(``mean``) workers (values from one generator, not asyncsim's
    per-worker streams: the same computation, not the same numbers). ``tight``:
    the engine's smaller draw matrix (:func:`draws_per_worker`)."""
    c = draws_per_worker(n, updates, tight)
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
    bound_async(n, u, tight="--tight" in sys.argv)
    print(f"{time.perf_counter() - t0:.4f}")
