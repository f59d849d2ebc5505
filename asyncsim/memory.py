"""Memory estimates before allocations that scale with updates and workers.

A run's memory grows with the gradient rows of its trace and with its number
of workers. :func:`check_simulation` estimates both before an engine starts
and refuses, with an :class:`~asyncsim.errors.InputError` (one line, exit 2 on
the command line), a run that cannot fit::

    this run needs ~7.3 TiB of memory (4.1e10 gradient rows); at most
    109,000,000 updates fit in 22.9 GiB of memory

instead of allocating until the machine swaps or the kernel kills it.

The costs are measured peaks (``/usr/bin/time -f %M`` of ``asyncsim simulate
-o t.parquet``, minus a 10-update run, on the development VM; docs/robustness.md):
about 115–180 bytes per gradient row on the vectorised engine and 150–190 on
the event engines (trace columns, engine temporaries, summary and the Parquet
writer together), 280 for round robin on the vectorised engine; 2.4–3 KB per
worker on the vectorised engine; 28–56 MiB whatever the size (pyarrow's pool,
modules imported on the way) plus the 64 MiB of freed memory the command keeps
(:mod:`asyncsim._alloc`). The estimate uses 200 (300) bytes per row, 4 KB per
worker and 128 MiB, so it errs on the side of refusing a run that would just
have fitted (tests/test_hardening.py checks it against measured peaks).

The event engines' cost per worker depends on what a worker holds
(:func:`event_worker_bytes`; peak traced memory beyond the trace, 4,096
workers, issue 21's third pass; tests/test_event_memory.py checks the
estimate against it): A-SGD without transfers or faults 80–130 bytes (one
int a worker in the heap engine's loops or in SimPy's compute calendar from
512 workers, and its compute draws in one flat buffer); the heap engine's
loop with transfers about 300 bytes; a process per worker 1.0–2.5 KB
(SimPy's, or the policies' processes on the heap engine); network routes
2–3.5 KB more, random per-hop latencies another 10 KB (a 1,024-draw block and
a generator per worker), random crashes 20 KB more (two blocks and a
generator). The estimate rounds each up (256 and 512 bytes, 3 KB, 4 KB, 14
KB and 28 KB): at most 4x what a run takes.

"Available" is the smallest of ``MemAvailable`` (``/proc/meminfo``), the
cgroup's ``memory.max`` minus its ``memory.current``, and the
``ASYNCSIM_MEMORY_LIMIT`` environment variable (bytes, or a number with
``K``/``M``/``G``/``T`` and an optional ``iB``/``B``), read at each check.
Where none of them can be read, nothing is refused.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from . import _alloc
from .errors import InputError

__all__ = ["available_bytes", "format_bytes", "check_simulation", "simulation_bytes", "check_bytes",
           "event_worker_bytes", "BYTES_PER_ROW", "BYTES_PER_WORKER", "FIXED_BYTES"]

#: measured peak bytes per gradient row (see the module docstring), by engine family
BYTES_PER_ROW = {"vector": 200, "event": 200, "vector_round_robin": 300}
#: measured bytes per worker, by engine family (the event engines' base cost: see
#: :func:`event_worker_bytes`)
BYTES_PER_WORKER = {"vector": 4 << 10, "event": 3 << 10, "heap_async": 512, "async_plain": 256}
#: the event engines' extra bytes per worker: network routes, random per-hop latencies,
#: random crashes (see the module docstring)
EVENT_NETWORK_BYTES, EVENT_RANDOM_LATENCY_BYTES, EVENT_RANDOM_CRASH_BYTES = 4 << 10, 14 << 10, 28 << 10
#: bytes a run takes whatever its size: pyarrow's memory pool and modules imported on the way
#: (measured 28-56 MiB) plus the freed memory the command keeps for reuse (asyncsim._alloc.TOP_PAD)
FIXED_BYTES = (64 << 20) + _alloc.TOP_PAD

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def _parse_size(text: str) -> int | None:
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([KMGTP]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes() -> int | None:
    """Bytes this process may still allocate (see the module docstring), or ``None`` if unknown."""
    found: list[int] = []
    env = os.environ.get("ASYNCSIM_MEMORY_LIMIT")
    if env:
        v = _parse_size(env)
        if v is None:
            raise InputError(f"ASYNCSIM_MEMORY_LIMIT={env!r}: expected a size such as 8GiB or 500M")
        found.append(v)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    limit, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        found.append(max(limit - used, 0))
    return min(found) if found else None


def _float(x: float | int) -> float:
    try:
        return float(x)
    except OverflowError:  # an int beyond float range (updates: 10**400)
        return math.inf


def format_bytes(n: float | int) -> str:
    """``7.3 TiB``, ``512 MiB``, ``1.2e+30 B`` for sizes beyond any unit."""
    n = _float(n)
    if not math.isfinite(n):
        return ">1e308 B"
    for unit, scale in (("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            v = n / scale
            return f"{v:.3g} {unit}" if v < 10_000 else f"{float(n):.2g} B"
    return f"{int(n)} B"


def check_bytes(need: float, what: str, *, hint: str = "") -> None:
    """Refuse (:class:`InputError`) when ``need`` bytes exceed what is available."""
    avail = available_bytes()
    if avail is not None and need > avail:
        raise InputError(f"{what} needs ~{format_bytes(need)} of memory; {format_bytes(avail)} is available"
                         + (f": {hint}" if hint else ""))


def _mean(d) -> float:
    try:
        m = float(d.mean)
    except (ArithmeticError, ValueError, TypeError):
        return math.inf
    return m if m == m else math.inf


def _rows_per_update(sc) -> int:
    kind = sc.policy.kind
    n = sc.n_workers
    if kind in ("async", "ssp", "round_robin"):
        return 1
    if kind == "k_async":
        return int(sc.policy.k)
    if kind in ("local_sgd", "diloco", "streaming_diloco", "async_diloco"):
        # one row per contribution plus its inner-table rows (counted as rows: an upper bound)
        per = 1 + int(sc.policy.inner_steps) // int(sc.policy.fragments)
        return per if kind == "async_diloco" else n * per
    return n  # sync and backup record every worker's gradient each round (others: the same bound)


def _gradient_rate(sc) -> float:
    """An upper bound on gradients per simulated second (no contention, no queueing, no faults)."""
    transfer = 0.0
    net = sc.network
    if sc.model_bytes > 0 and net is not None and getattr(net, "bandwidth_gbps", None):
        transfer = 2 * sc.model_bytes * 8 / (float(net.bandwidth_gbps) * 1e9)  # pull and push
    cycles = [_mean(g.compute) + (transfer if g.bandwidth_gbps is None
                                  else 2 * sc.model_bytes * 8 / (float(g.bandwidth_gbps) * 1e9))
              for g in sc.workers]
    apply = _mean(sc.server.apply)
    per_update = _rows_per_update(sc)
    if sc.policy.kind in ("sync", "backup"):
        # a round takes at least the slowest group's mean (sync) plus the apply
        slowest = max(cycles) if sc.policy.kind == "sync" else min(cycles)
        round_time = slowest + apply
        return math.inf if round_time == 0 else per_update / round_time
    rate = sum(math.inf if c == 0 else g.count / c for c, g in zip(cycles, sc.workers))
    if sc.policy.kind in ("local_sgd", "diloco", "streaming_diloco", "async_diloco"):
        rate *= 1.0 + int(sc.policy.fragments) / int(sc.policy.inner_steps)  # inner rows and their outer rows
    if apply > 0:
        rate = min(rate, per_update / apply)
    return rate


def event_worker_bytes(sc, engine: str = "heap") -> float:
    """Estimated bytes per worker of simulating ``sc`` on an event engine (``heap`` or
    ``simpy``): the base cost (the heap engine's async loop, or a process per
    worker) plus network routes, random per-hop latencies and random crashes
    where the scenario has them (an average over the workers). O(workers' groups
    + faults)."""
    net = sc.network
    faults = sc.faults or []
    kind = sc.policy.kind
    one = kind == "async" or (kind == "k_async" and int(sc.policy.k) == 1)
    loop = engine == "heap" and not faults and (net is None or net.sharing == "circuit") and one
    if one and not faults and net is None and engine == "simpy":
        from .engine.simpy_engine import CALENDAR_WORKERS  # (imports SimPy: only for its engine)

        plain = sc.n_workers >= CALENDAR_WORKERS
    else:
        plain = loop and net is None
    per = float(BYTES_PER_WORKER["async_plain" if plain else "heap_async" if loop else "event"])
    if net is not None:
        per += EVENT_NETWORK_BYTES
        lat = [getattr(net, "latency", None), getattr(net, "intra_node_latency", None)]
        lat += [e.latency for e in getattr(net, "edges", ())]
        if any(d is not None and d.dist != "constant" for d in lat):
            per += EVENT_RANDOM_LATENCY_BYTES
    n = max(sc.n_workers, 1)
    groups = {f.group for f in faults if f.kind == "random_crash"}
    crashing = sum(g.count for i, g in enumerate(sc.workers) if i in groups)
    return per + EVENT_RANDOM_CRASH_BYTES * crashing / n


def simulation_bytes(sc, updates: int | None, until: float | None, engine: str | None = None) -> tuple[float, float]:
    """``(estimated bytes, estimated gradient rows)`` of simulating ``sc`` on ``engine``
    (``None``: the cheapest engine's per-worker cost)."""
    fam = "vector" if engine in (None, "vector") else "event"
    per_row = BYTES_PER_ROW["vector_round_robin" if fam == "vector" and sc.policy.kind == "round_robin" else fam]
    n = sc.n_workers
    if updates is not None:
        rows: float | int = int(updates) * _rows_per_update(sc) + n  # (exact: updates may be 10**400)
    else:
        rate = _gradient_rate(sc)
        rows = math.inf if math.isinf(rate) else float(until) * rate + n
    per_worker = BYTES_PER_WORKER["vector"] if fam == "vector" else event_worker_bytes(sc, engine)
    return FIXED_BYTES + rows * per_row + n * per_worker, rows


def check_simulation(sc, updates: int | None, until: float | None, engine: str | None = None) -> None:
    """Refuse a simulation that cannot fit in memory, or whose time stop can never arrive."""
    if updates is None and until is not None and math.isinf(_gradient_rate(sc)):
        raise InputError(f"scenario {sc.name!r}: gradients take no time (compute, transfer and apply times are "
                         f"all 0 for some workers), so stop.time = {until:g} s is never reached: use stop.updates")
    need, rows = simulation_bytes(sc, updates, until, engine)
    avail = available_bytes()
    if avail is None or need <= avail:
        return
    fam = "vector" if engine in (None, "vector") else "event"
    per_row = BYTES_PER_ROW["vector_round_robin" if fam == "vector" and sc.policy.kind == "round_robin" else fam]
    per_worker = BYTES_PER_WORKER["vector"] if fam == "vector" else event_worker_bytes(sc, engine)
    fixed = FIXED_BYTES + sc.n_workers * (per_worker + per_row)  # (one row in flight per worker)
    per_update = _rows_per_update(sc) * per_row
    fit = max(int((avail - fixed) // per_update), 0) if avail > fixed else 0
    what = f"{_float(rows):.2g} gradient rows" if math.isfinite(_float(rows)) else ">1e308 gradient rows"
    if fit == 0:
        hint = f"{sc.n_workers:,} workers alone need ~{format_bytes(fixed)}"
    else:
        hint = f"at most {fit:,} updates fit"
    raise InputError(f"this run needs ~{format_bytes(need)} of memory ({what}); {hint} in "
                     f"{format_bytes(avail)} of memory")
