"""The state every event-driven engine shares: clock-free cluster state and recording.

A :class:`Model` holds what the policies' processes read and write (the
server's version, the server lock, the random samplers, the network routes,
the recorded rows) but no clock: time, timeouts, events and link resources
come from the *kernel* the engine passes in (SimPy's ``Environment`` for the
reference engine, :mod:`asyncsim.engine.heap_engine`'s heapq kernel for the
fast one). Both kernels run the very same policy processes
(:mod:`asyncsim.policies`), which is why their traces are identical.

Kernel interface used by the processes::

    env.now                 current simulated time
    env.timeout(d)          an event d seconds from now (always yielded at once)
    env.event()             an untriggered event with .succeed()
    env.process(gen)        start a process (returns a handle for interrupt)
    kernel.resource()       a FIFO link direction with request()/release(req),
                            scheduling exactly like ``simpy.Resource(capacity=1)``
    kernel.interrupt(h, c)  interrupt a process (cause c: "preempt" or "crash")
    kernel.cancel(res, req) withdraw a link request not yet granted
    kernel.Interrupt        the exception class thrown into it

Faults (scenarios with a ``faults:`` section; docs/transfer-model.md,
"Faults"): :meth:`Model.start_faults` starts one fault process per worker
that ever goes down. At a crash it records the worker's gradient as lost if
the worker was *active* (pulling, computing or pushing — ``active[w]``) and
had started computing (``cur[w]``), and interrupts it with cause ``"crash"``;
a worker whose gradient has reached the server is never interrupted (its
gradient is not lost). Workers check ``down[w]`` before each pull and wait
for ``up_ev[w]``. The policies get ``on_crash``/``on_up`` callbacks.
"""

from __future__ import annotations

import array
import itertools
import math
from collections import deque
from typing import Any, Callable

import numpy as np

from ..network import build_network
from ..network.fair import FlowNetwork
from ..rng import BlockSampler, Streams, draw_first, rest_blocks
from ..scenario import Scenario
from ..trace import DROPPED, LOST

__all__ = ["Model", "async_columns", "CRASH", "PREEMPT"]

#: interrupt causes
CRASH = "crash"
PREEMPT = "preempt"

#: Python floats prefetched over all of a run's compute streams: each stream
#: converts its block to floats this many / N at a time (between 8 and 128), so
#: the floats waiting to be used stay in cache (measured: at N = 512, chunks of
#: 16 make the heap engine's loop about 8 % faster than chunks of 128; at N = 8
#: chunks of 128 beat chunks of 16 by about as much)
_PREFETCH = 8192


def _float_iter(blocks, chunk: int):
    """An iterator over the values of an iterable of float64 arrays, converted to
    Python floats ``chunk`` at a time."""

    def chunks():
        for block in blocks:
            for i in range(0, len(block), chunk):
                yield block[i:i + chunk].tolist()

    return itertools.chain.from_iterable(chunks())


def _floats(blocks, chunk: int):
    """The values of an iterable of float64 arrays as an iterator's ``__next__``
    (a C-level call per value, inlined for performance), converted to Python
    floats ``chunk`` at a time."""
    return _float_iter(blocks, chunk).__next__


class _Rest:
    """The draws of worker ``i`` after its first ``first`` (``rng.rest_blocks``), as
    an iterable whose iterator is made only when asked for: ``itertools.chain``
    asks for it when the first block runs out, so a run that never gets that far
    holds no generator per worker (inlined for memory: a few hundred bytes a
    worker instead of a few kilobytes). With ``last`` (a float), it gives the
    running sums continuing from ``last`` instead, appending each block of
    sums to ``keep[i]`` (see :func:`_sums`)."""

    __slots__ = ("src", "i", "dist", "first", "chunk", "last", "keep")

    def __init__(self, src, i, dist, first, chunk, last=None, keep=None):
        self.src, self.i, self.dist, self.first, self.chunk = src, i, dist, first, chunk
        self.last, self.keep = last, keep

    def __iter__(self):
        blocks = rest_blocks(self.src, self.i, self.dist, self.first)
        if self.last is not None:
            blocks = _sums(blocks, self.last, self.keep.setdefault(self.i, []))
        return _float_iter(blocks, self.chunk)


def _sums(blocks, last: float, keep: list):
    """Running sums of the blocks continuing from ``last`` (``np.cumsum``: the
    additions ``t = t + d`` one event at a time would make, in the same order),
    each block of sums also appended to ``keep``."""
    for block in blocks:
        times = block.copy()  # (the block may be the distribution's own array)
        times[0] += last
        np.cumsum(times, out=times)
        last = float(times[-1])
        keep.append(times)
        yield times


def first_draws(streams, chunk: int, times: bool = False):
    """Every worker's draws (with ``times``: their running sums) as per-worker
    ``__next__`` callables, from the first-block matrix of ``streams`` (a
    :class:`_WorkerStreams`) and a lazy :class:`_Rest` each. With ``times``,
    also returns the first-block sums matrix and the dict of later blocks."""
    first = streams.first
    mat = draw_first(streams.src, streams.groups, first)
    keep: dict[int, list] = {}
    if times:
        np.cumsum(mat, axis=1, out=mat)
    flat = array.array("d", mat.tobytes())  # the values as Python floats on demand
    lasts = mat[:, -1].tolist() if times else None
    chain = itertools.chain
    dists = streams.dists
    src = streams.src
    nxt = [chain(flat[w * first:(w + 1) * first],
                 _Rest(src, w, dists[w], first, chunk, lasts[w] if times else None, keep)).__next__
           for w in range(len(dists))]
    return (nxt, mat, keep) if times else nxt


def _draws(sampler: BlockSampler, chunk: int = 128):
    """The sampler's draws, one per call. They come from the blocks every engine
    draws (``BlockSampler.arrays()``), so every engine sees the same values."""
    return _floats(sampler.arrays(), chunk)


class _WorkerStreams:
    """The compute streams of a run: one stream set, the workers' distributions
    (and groups), and how many draws a first block holds (:func:`first_draws`)."""

    __slots__ = ("dists", "groups", "src", "first")

    def __init__(self, sc, src, first: int):
        self.dists, self.src, self.first = sc.compute_dists(), src, first
        self.groups = [(g.compute, g.count) for g in sc.workers]

    def __len__(self) -> int:
        return len(self.dists)


def _first_block(sc, updates: int | None, until: float | None) -> int:
    """How many draws a worker's first block holds: about twice the draws a
    worker is expected to make (gradients per update over N workers; with a
    time stop, the time over the fastest group's mean), at least 16 and at most
    a whole block. A short guess costs one redrawn block, never other values."""
    from ..rng import BLOCK

    n = max(sc.n_workers, 1)
    est = math.inf
    if updates is not None:
        kind = sc.policy.kind
        per_update = {"sync": n, "allreduce": n, "backup": n, "k_async": getattr(sc.policy, "k", 1)}.get(kind, 1)
        est = updates * per_update / n
    if until is not None:
        means = [float(g.compute.mean) for g in sc.workers]
        fastest = min(means) if means else 0.0
        est = min(est, until / fastest if fastest > 0 and math.isfinite(fastest) else math.inf)
    if not math.isfinite(est):
        return BLOCK
    return int(min(BLOCK, max(16, math.ceil(2 * est + 8))))


def _drawn_latency(hops: list) -> float:
    """The sum of a transfer's per-hop latencies, in path order: a constant hop
    is a float, a random one a sampler drawn from the worker's network stream."""
    lat = 0.0
    for h in hops:
        lat += h if h.__class__ is float else h()
    return lat


def by_worker(worker: np.ndarray) -> np.ndarray:
    """Row indices grouped by worker, in row order within a group (a 16-bit key
    sorts by radix)."""
    key = worker.astype(np.uint16) if len(worker) and int(worker.max()) < 1 << 16 else worker
    return np.argsort(key, kind="stable")


def async_columns(worker: np.ndarray, t_done: np.ndarray, t_applied: np.ndarray,
                  order: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Trace columns of an async run without network transfers from three recorded ones.

    Every gradient is applied on its own, in row order, so step = row index;
    a worker pulls at the instant its previous gradient was applied (no
    network), so its read_version is that step + 1 and its t_read that
    t_applied (0 and 0.0 for its first gradient). Recording three columns
    instead of six is inlined for performance; the values are the same.
    """
    k = len(worker)
    step = np.arange(k, dtype=np.int64)
    if not k:
        rv, t_read = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    else:
        if order is None:
            order = by_worker(worker)
        prev = np.empty(k, dtype=np.int64)  # the worker's previous row, or -1
        prev[order[0]] = -1
        o1, o0 = order[1:], order[:-1]
        prev[o1] = np.where(worker[o1] == worker[o0], o0, -1)
        rv = prev + 1
        t_read = t_applied[prev]
        t_read[rv == 0] = 0.0
    return {"step": step, "worker": worker.astype(np.int32, copy=False), "read_version": rv,
            "staleness": step - rv, "t_read": t_read, "t_done": t_done, "t_applied": t_applied}


class Model:
    """Cluster state shared by the processes of one run (see module docstring)."""

    def __init__(self, sc: Scenario, kernel: Any, *, updates: int | None, until: float | None,
                 progress: Callable[[float], None] | None = None):
        self.sc = sc
        self.kernel = kernel
        self.env = kernel.env
        self.n = n = sc.n_workers
        streams = Streams(sc.seed)
        # Every engine draws BlockSampler's values from each stream (common random
        # numbers); the compute streams are one StreamSet (no generator per worker)
        # whose first blocks are sized from the run (rng.sized_blocks).
        self.compute = _WorkerStreams(sc, streams.worker_streams(n, "compute"), _first_block(sc, updates, until))
        self.chunk = max(8, min(128, _PREFETCH // max(n, 1)))
        self._compute_next = None
        self.apply_next = _draws(BlockSampler(sc.server.apply, streams.server("apply")))
        self.network = net = build_network(sc)
        #: the flow-level model's flows (network.sharing: fair), else None
        self.flows = None
        if net is not None:
            # the transfer model is chosen here, in one place (docs/transfer-model.md)
            if net.sharing == "circuit":
                self.links = [kernel.resource() for _ in range(net.n_links)]
            else:
                self.links = []
                self.flows = FlowNetwork(self.env, [bw * 1e9 for bw in net.capacity_gbps])
                self.transfer = self._transfer_fair
            self.pull_hops, self.push_hops = [], []
            random_hops = any(d.dist != "constant" for routes in (net.pull, net.push) for r in routes
                              for d in r.latencies)
            net_rngs = streams.workers(n, "network") if random_hops else [None] * n
            for i in range(n):
                rng = net_rngs[i]
                samplers: dict[int, BlockSampler] = {}
                for routes, out in ((net.pull, self.pull_hops), (net.push, self.push_hops)):
                    hops = []
                    for d in routes[i].latencies:
                        if d.dist == "constant":
                            hops.append(float(d.value))
                        else:  # one sampler per distinct distribution, all on the worker's stream
                            s = samplers.get(id(d))
                            if s is None:
                                s = samplers[id(d)] = BlockSampler(d, rng)
                            hops.append(s.next)
                    out.append(hops)
            self.pull_routes, self.push_routes = net.pull, net.push
        else:
            self.links = []
            self.pull_routes = self.push_routes = [None] * n
            self.pull_hops = self.push_hops = [None] * n
        # server state
        self.version = 0
        self.server_busy = False
        self.server_queue: deque = deque()
        # stop and progress
        self.stop_updates = updates
        self.stop_time = until
        self.done = False
        self.t_last = 0.0
        self.stop_cb: Callable[[], None] = lambda: None
        self.progress = progress
        if progress is not None and updates is not None:
            self._progress_every = max(1, math.ceil(updates / 200))
        else:
            self._progress_every = 0
        self._next_progress = self._progress_every or -1
        self._stop_at = updates if updates is not None else -1
        #: the next version at which checkpoint() must run (progress or stop)
        self.check_at = self._next_check()
        # Recorded rows: one growable typed column per field (inlined for
        # performance: array.array appends are ~3x cheaper than numpy item writes).
        self._c_step = array.array("q")
        self._c_worker = array.array("i")
        self._c_rv = array.array("q")
        self._c_tr = array.array("d")
        self._c_td = array.array("d")
        self._c_ta = array.array("d")
        #: set by a policy that records only (worker, t_done, t_applied): see async_columns
        self.async_compact = False
        # faults (None and unused without a faults: section)
        self.stalled = False
        self.faults = None
        self.down_rows: list[list] = []
        if sc.faults:
            from ..faults import FaultTimeline

            self.faults = FaultTimeline(sc.faults, n, sc.worker_groups(),
                                        streams)
            self.down = [False] * n
            self.perm_down = [False] * n
            self.up_ev: list = [None] * n
            self.active = [False] * n
            self.cur: list = [None] * n
            self._open_down: list = [None] * n
            self.transfer = self._transfer_faults if self.flows is None else self._transfer_fair_faults
            self.nbytes = float(sc.model_bytes)
        #: the six column appenders (step, worker, read_version, t_read, t_done, t_applied)
        self.appenders = (self._c_step.append, self._c_worker.append, self._c_rv.append, self._c_tr.append,
                          self._c_td.append, self._c_ta.append)

    @property
    def compute_next(self) -> list:
        """Each worker's next compute time, one per call (made on first use: the
        heap engine's plain async loop draws its own way and never needs them)."""
        if self._compute_next is None:
            self._compute_next = first_draws(self.compute, self.chunk)
        return self._compute_next

    @compute_next.setter
    def compute_next(self, value: list) -> None:
        self._compute_next = value

    # ---------------------------------------------------------------- recording

    def routes(self, w: int):
        """``(pull, pull_hops, push, push_hops)`` of worker ``w`` (all ``None`` without a network)."""
        return self.pull_routes[w], self.pull_hops[w], self.push_routes[w], self.push_hops[w]
    def applied(self, rows: list, t: float) -> None:
        """Record ``rows`` [(worker, read_version, t_read, t_done), ...] as one update
        applied at time ``t`` (step = current version), then advance the version."""
        if self.done:
            return
        step = self.version
        for w, rv, tr, td in rows:
            self._c_step.append(step)
            self._c_worker.append(w)
            self._c_rv.append(rv)
            self._c_tr.append(tr)
            self._c_td.append(td)
            self._c_ta.append(t)
        self._advance(step + 1, t)

    def applied_round(self, workers: list[int], rv: int, tr: float, td: list[float], t: float) -> None:
        """:meth:`applied` for rows that share their read_version and t_read (one
        synchronous round; ``td`` in the order of ``workers``), recorded a column
        at a time (inlined for performance: thousands of rows per update)."""
        if self.done:
            return
        k = len(workers)
        step = self.version
        self._c_step.extend([step] * k)
        self._c_worker.extend(workers)
        self._c_rv.extend([rv] * k)
        self._c_tr.extend([tr] * k)
        self._c_td.extend(td)
        self._c_ta.extend([t] * k)
        self._advance(step + 1, t)

    def applied1(self, w: int, rv: int, tr: float, td: float, t: float) -> None:
        """:meth:`applied` for a single row."""
        self.applied(((w, rv, tr, td),), t)

    def _advance(self, version: int, t: float) -> None:
        self.version = version
        if version == self.check_at:
            self.checkpoint(version, t)

    def _next_check(self) -> int:
        c = [x for x in (self._next_progress, self._stop_at) if x > self.version]
        return min(c) if c else -1

    def checkpoint(self, version: int, t: float) -> None:
        """Progress report and stop test; runs when the version reaches ``check_at``.

        Processes that record inline (inlined for performance) call it exactly
        as :meth:`_advance` does."""
        if version == self._next_progress:
            self._next_progress += self._progress_every
            self.progress(min(1.0, version / self.stop_updates))
        if version == self._stop_at:
            self.t_last = t
            self.done = True
            self.stop_cb()
        self.check_at = self._next_check()

    def _unapplied(self, step: int, w: int, rv: int, tr: float, td: float) -> None:
        """Record a gradient that was never applied (t_applied NaN)."""
        if self.done:
            return
        self._c_step.append(step)
        self._c_worker.append(w)
        self._c_rv.append(rv)
        self._c_tr.append(tr)
        self._c_td.append(td)
        self._c_ta.append(math.nan)

    def dropped(self, w: int, rv: int, tr: float, td: float) -> None:
        """Record a dropped gradient (step -1, t_applied NaN)."""
        self._unapplied(DROPPED, w, rv, tr, td)

    def lost(self, w: int, rv: int, tr: float, t: float) -> None:
        """Record a gradient lost to a crash at ``t`` (step -2, t_applied NaN)."""
        self._unapplied(LOST, w, rv, tr, t)

    # ------------------------------------------------------------------ faults
    def start_faults(self, policy) -> None:
        """Start the fault processes (after the policy's processes)."""
        self.policy = policy
        if self.faults is None:
            return
        for w in range(self.n):
            if self.faults.next_down(w, 0.0) is not None:
                self.env.process(self._fault_proc(w))

    def _fault_proc(self, w: int):
        """Worker ``w``'s down intervals, one after another (the timeline is exogenous)."""
        env = self.env
        tl = self.faults
        t = 0.0
        while True:
            iv = tl.next_down(w, t)
            if iv is None:
                return
            a, b = iv
            if a > env.now:
                yield env.timeout(a - env.now)
            self.crash(w, b)
            if b == math.inf:
                return
            yield env.timeout(b - env.now)
            self.restore(w)
            t = b

    def crash(self, w: int, t_up: float) -> None:
        """Worker ``w`` goes down now (until ``t_up``; ``inf``: for good)."""
        now = self.env.now
        self.down[w] = True
        self.perm_down[w] = t_up == math.inf
        self.up_ev[w] = self.env.event()
        if not self.done:
            row = [w, now, math.nan]
            self.down_rows.append(row)
            self._open_down[w] = row
        if self.active[w]:
            self.active[w] = False
            cur = self.cur[w]
            if cur is not None:
                self.lost(w, cur[0], cur[1], now)
                self.cur[w] = None
            self.kernel.interrupt(self.procs[w], CRASH)
        self.policy.on_crash(self, w)

    def restore(self, w: int) -> None:
        """Worker ``w`` is back up now: wake it (it pulls the current version)."""
        self.down[w] = False
        row = self._open_down[w]
        if row is not None and not self.done:
            row[2] = self.env.now
        self._open_down[w] = None
        ev = self.up_ev[w]
        self.up_ev[w] = None
        self.policy.on_up(self, w)
        ev.succeed()

    def stall(self) -> None:
        """No update can ever happen again (faults): end the run now, cleanly."""
        if self.done:
            return
        self.stalled = True
        self.t_last = self.env.now
        self.done = True
        self.stop_cb()

    def down_intervals(self) -> dict[str, np.ndarray]:
        """The down-interval side table (t_up NaN: still down at the end of the run)."""
        rows = self.down_rows
        return {"worker": np.array([r[0] for r in rows], dtype=np.int32),
                "t_down": np.array([r[1] for r in rows], dtype=np.float64),
                "t_up": np.array([r[2] for r in rows], dtype=np.float64)}

    def columns(self) -> dict[str, np.ndarray]:
        """The recorded rows as trace columns: numpy views of the recording buffers
        (no copy: the model is done with them; a run's peak memory is then about
        the trace's own size, not twice it)."""
        if self.async_compact:
            return async_columns(np.frombuffer(self._c_worker, dtype=np.int32), np.frombuffer(self._c_td),
                                 np.frombuffer(self._c_ta))
        step = np.frombuffer(self._c_step, dtype=np.int64) if len(self._c_step) else np.empty(0, np.int64)
        rv = np.frombuffer(self._c_rv, dtype=np.int64) if len(self._c_rv) else np.empty(0, np.int64)

        def f64(a):
            return np.frombuffer(a, dtype=np.float64) if len(a) else np.empty(0, np.float64)

        worker = np.frombuffer(self._c_worker, dtype=np.int32) if len(self._c_worker) else np.empty(0, np.int32)
        staleness = step - rv
        staleness[step < 0] = -1
        return {
            "step": step,
            "worker": worker,
            "read_version": rv,
            "staleness": staleness,
            "t_read": f64(self._c_tr),
            "t_done": f64(self._c_td),
            "t_applied": f64(self._c_ta),
        }

    # ------------------------------------------- DiLoCo family recording (issue 20)
    #: the extra columns and the inner table (asyncsim.trace.EXTRA_COLUMNS, INNER_COLUMNS) of
    #: the local SGD / DiLoCo policies: ColumnRecorders made by start_outer_recording, else None
    outer_cols = None
    inner_cols = None

    def start_outer_recording(self) -> None:
        """Make this run record the DiLoCo family's extra columns and inner table."""
        from ..trace import EXTRA_COLUMNS, INNER_COLUMNS, ColumnRecorder

        self.outer_cols = ColumnRecorder(EXTRA_COLUMNS)
        self.inner_cols = ColumnRecorder(INNER_COLUMNS)

    def applied_outer(self, workers: list[int], rv, tr, td: list[float], ost, ls, le, fragment: int,
                      t: float) -> None:
        """Record one outer update's rows (``workers``, ``td``: lists in row order; ``rv``, ``tr``,
        ``ost`` (outer staleness), ``ls``, ``le`` (local_start, local_end): lists or one value
        for all) applied at ``t`` to ``fragment``, then advance the version. O(rows)."""
        if self.done:
            return
        k = len(workers)
        step = self.version

        def many(v):
            return v if isinstance(v, list) else [v] * k

        self._c_step.extend([step] * k)
        self._c_worker.extend(workers)
        self._c_rv.extend(many(rv))
        self._c_tr.extend(many(tr))
        self._c_td.extend(td)
        self._c_ta.extend([t] * k)
        self.outer_cols.extend(k, fragment=fragment, outer_staleness=ost, local_start=ls, local_end=le)
        self._advance(step + 1, t)

    def inner_steps(self, w: int, first: int, t_start, t_done) -> None:
        """Record worker ``w``'s inner steps ``first``, ``first + 1``, ... (their start and end
        times: arrays or floats). Rows ending after the run's end are trimmed by
        :meth:`inner_table`. O(steps)."""
        if self.done:
            return
        k = len(t_start) if hasattr(t_start, "__len__") else 1
        self.inner_cols.extend(k, worker=w, local_step=np.arange(first, first + k), t_start=t_start,
                               t_done=t_done)

    def inner_step(self, w: int, step: int, t_start: float, t_done: float) -> None:
        """:meth:`inner_steps` for one step (the per-event path). O(1)."""
        if not self.done:
            self.inner_cols.append(w, step, t_start, t_done)

    def outer_columns(self) -> dict[str, np.ndarray]:
        """The extra columns (empty dict when this run does not record them)."""
        return {} if self.outer_cols is None else self.outer_cols.columns()

    def inner_table(self, sim_time: float) -> dict[str, np.ndarray] | None:
        """The inner-gradient table: steps that ended by ``sim_time``, ordered by (t_done, worker)."""
        if self.inner_cols is None:
            return None
        d = self.inner_cols.columns()
        keep = d["t_done"] <= sim_time
        order = np.lexsort((d["local_step"][keep], d["worker"][keep], d["t_done"][keep]))
        return {k: v[keep][order] for k, v in d.items()}

    # ----------------------------------------------------------------- network
    def transfer(self, w: int, route, hops: list):
        """Generator: one transfer of worker ``w`` along ``route`` (circuit model).

        Requests every link direction of the path in the global order, holds
        them for ``route.hold`` seconds, releases them, then waits the sum of
        the per-hop latencies (drawn in path order from ``w``'s network stream).
        Zero-duration waits are not yielded.
        """
        links = route.links
        if links:
            res = self.links
            reqs = []
            for li in links:
                req = res[li].request()
                yield req
                reqs.append(req)
            yield self.env.timeout(route.hold)
            for li, req in zip(links, reqs):
                res[li].release(req)
        lat = route.fixed_latency
        if lat is None:
            lat = _drawn_latency(hops)
        if lat > 0.0:
            yield self.env.timeout(lat)

    @staticmethod
    def _fault_bandwidths(route, f: float) -> list[float]:
        """The route's hop bandwidths with the worker's own link (the hop at its
        end of the path) at ``f`` times its bandwidth."""
        own = route.own
        return [bw * (f if i == own else 1.0) for i, bw in enumerate(route.bandwidths)]

    def _fault_hold(self, w: int, route, f: float) -> float:
        """Link hold time with worker ``w``'s own link at ``f`` times its bandwidth."""
        if not route.links or len(route.path) < 2:
            return route.hold
        return self.nbytes * 8.0 / (min(self._fault_bandwidths(route, f)) * 1e9)

    def _fault_cap(self, route, f: float) -> float:
        """The fair model's rate limit (bit/s) of a flow whose worker's own link
        runs at ``f`` times its bandwidth: the smallest bandwidth among the
        directions of its path no other worker uses, with the own link scaled;
        an own link that other workers share too limits this flow alone (to
        ``f`` times its bandwidth) and the others not at all."""
        if f == 1.0:
            return route.cap
        bws = self._fault_bandwidths(route, f)
        caps = [bw for h, bw in zip(route.hops, bws) if h not in route.shared]
        if route.hops[route.own] in route.shared and f < 1.0:
            caps.append(bws[route.own])
        return min(caps) * 1e9 if caps else math.inf

    def _transfer_fair(self, w: int, route, hops: list):
        """Generator: one transfer of worker ``w`` along ``route`` (fair model,
        :mod:`asyncsim.network.fair`).

        A path with a direction other workers use too is a flow of the run's
        :class:`~asyncsim.network.fair.FlowNetwork`; a path of private
        directions only takes exactly ``route.hold``. Then the per-hop
        latencies, as in :meth:`transfer`.
        """
        if route.links:
            if route.shared:
                yield self.flows.start(route.shared, route.cap, route.bits).event
            else:
                yield self.env.timeout(route.hold)
        lat = route.fixed_latency
        if lat is None:
            lat = _drawn_latency(hops)
        if lat > 0.0:
            yield self.env.timeout(lat)

    def _transfer_fair_faults(self, w: int, route, hops: list):
        """:meth:`_transfer_fair` with link faults and crash clean-up.

        A transfer starting while worker ``w``'s link is down (factor 0) waits
        until the window ends and checks again; otherwise its worker's own link
        runs at the window's factor (:meth:`_fault_cap`). Interrupted by a
        crash, its flow is withdrawn (the others speed up at once)."""
        env = self.env
        f = yield from self._link_wait(w)
        if route.links:
            if route.shared:
                flow = self.flows.start(route.shared, self._fault_cap(route, f), route.bits)
                try:
                    yield flow.event
                except self.kernel.Interrupt:
                    self.flows.cancel(flow)
                    raise
            else:
                yield env.timeout(route.hold if f == 1.0 else self._fault_hold(w, route, f))
        lat = route.fixed_latency
        if lat is None:
            lat = _drawn_latency(hops)
        if lat > 0.0:
            yield env.timeout(lat)

    def _link_wait(self, w: int):
        """Generator: wait while worker ``w``'s link is down; returns its bandwidth factor now."""
        env = self.env
        tl = self.faults
        while True:
            f, until = tl.link_factor(w, env.now)
            if until > env.now:
                yield env.timeout(until - env.now)
            else:
                return f

    def _transfer_faults(self, w: int, route, hops: list):
        """:meth:`transfer` with link faults and crash clean-up.

        A transfer starting while worker ``w``'s link is down (factor 0) waits
        until the window ends and checks again; otherwise its hold time uses
        the worker's own link at the window's bandwidth factor. Interrupted by
        a crash, it withdraws its pending link request and releases the links
        it holds, then lets the interrupt propagate.
        """
        env = self.env
        f = yield from self._link_wait(w)
        hold = route.hold if f == 1.0 else self._fault_hold(w, route, f)
        links = route.links
        res = self.links
        reqs: list = []
        pending = None
        try:
            if links:
                for li in links:
                    pending = req = res[li].request()
                    yield req
                    pending = None
                    reqs.append((li, req))
                yield env.timeout(hold)
                held, reqs = reqs, []
                for li, req in held:
                    res[li].release(req)
        except self.kernel.Interrupt:
            if pending is not None:
                li = links[len(reqs)]
                if pending.triggered:
                    res[li].release(pending)
                else:
                    self.kernel.cancel(res[li], pending)
            for li, req in reqs:
                res[li].release(req)
            raise
        lat = route.fixed_latency
        if lat is None:
            lat = _drawn_latency(hops)
        if lat > 0.0:
            yield env.timeout(lat)

    # ------------------------------------------------------------------ server
    def acquire_server(self):
        """Generator: wait for the server (FIFO, capacity 1). A free server is taken
        at once without an event (inlined for performance); a busy one hands
        itself over on release by succeeding the next waiter's event."""
        if self.server_busy:
            ev = self.env.event()
            self.server_queue.append(ev)
            yield ev
        else:
            self.server_busy = True

    def release_server(self) -> None:
        """Hand the server to the next waiter, or mark it idle."""
        if self.server_queue:
            self.server_queue.popleft().succeed()
        else:
            self.server_busy = False
