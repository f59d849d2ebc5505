"""Hand-made reference traces, independent of the engines.

Used as brute-force references for engine tests and as inputs for stability and
trainer tests. Each builds plain columns with a straightforward event loop.
"""

from __future__ import annotations

import heapq

import numpy as np

from asyncsim.trace import Trace


def constant_delay(tau: int, updates: int, dt: float = 1.0) -> Trace:
    """Every update applies one gradient of staleness exactly ``tau`` (after a warm-up
    where read_version is clipped at 0). Equivalent to round robin with N = tau + 1."""
    return round_robin(tau + 1, updates, dt)


def round_robin(n_workers: int, updates: int, dt: float = 1.0) -> Trace:
    """Round robin: step t is worker t mod N's gradient, read at version max(t - (N-1), 0)."""
    step = np.arange(updates, dtype=np.int64)
    worker = (step % n_workers).astype(np.int32)
    read_version = np.maximum(step - (n_workers - 1), 0)
    t_app = (step + 1) * dt
    t_read = read_version * dt
    return Trace.from_columns(
        {"step": step, "worker": worker, "read_version": read_version,
         "t_read": t_read, "t_done": t_app, "t_applied": t_app},
        n_workers=n_workers, sim_time=float(updates * dt), n_updates=updates,
    )


def async_exponential(n_workers: int, updates: int, seed: int = 0, mean=1.0) -> Trace:
    """A-SGD with exponential compute times (per-worker means allowed), no network,
    instantaneous apply: each finished gradient is applied at once and the worker
    pulls the new version immediately."""
    rng = np.random.default_rng(seed)
    means = np.broadcast_to(np.asarray(mean, dtype=float), (n_workers,))
    heap = [(rng.exponential(means[w]), w) for w in range(n_workers)]
    heapq.heapify(heap)
    read = np.zeros(n_workers, dtype=np.int64)
    t_read = np.zeros(n_workers)
    cols = {k: [] for k in ("step", "worker", "read_version", "t_read", "t_done")}
    for t in range(updates):
        now, w = heapq.heappop(heap)
        cols["step"].append(t); cols["worker"].append(w); cols["read_version"].append(read[w])
        cols["t_read"].append(t_read[w]); cols["t_done"].append(now)
        read[w] = t + 1
        t_read[w] = now
        heapq.heappush(heap, (now + rng.exponential(means[w]), w))
    arrays = {k: np.asarray(v) for k, v in cols.items()}
    arrays["t_applied"] = arrays["t_done"]
    return Trace.from_columns(arrays, n_workers=n_workers, sim_time=float(arrays["t_done"][-1]),
                              n_updates=updates)


def sync(n_workers: int, updates: int, seed: int = 0, mean: float = 1.0) -> Trace:
    """S-SGD: every update averages all N gradients, all of staleness 0."""
    rng = np.random.default_rng(seed)
    times = rng.exponential(mean, size=(updates, n_workers))
    t_end = np.cumsum(times.max(axis=1))
    t_start = np.concatenate([[0.0], t_end[:-1]])
    step = np.repeat(np.arange(updates), n_workers)
    worker = np.tile(np.arange(n_workers), updates).astype(np.int32)
    t_read = np.repeat(t_start, n_workers)
    t_done = t_read + times.ravel()
    t_app = np.repeat(t_end, n_workers)
    return Trace.from_columns(
        {"step": step, "worker": worker, "read_version": step, "t_read": t_read,
         "t_done": t_done, "t_applied": t_app},
        n_workers=n_workers, sim_time=float(t_end[-1]), n_updates=updates,
    )
