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
import bisect
import itertools
import math
from collections import deque
from typing import Any, Callable

import numpy as np

from ..network import build_network
from ..network.fair import FlowNetwork
from ..rng import BlockSampler, Streams, draw_chunk, draw_first
from ..scenario import Scenario
from ..trace import DROPPED, LOST

__all__ = ["Model", "async_columns", "CRASH", "PREEMPT"]

#: interrupt causes
CRASH = "crash"
PREEMPT = "preempt"

#: Python floats prefetched over all of a run's compute streams by the policies'
#: per-worker iterators (Model.compute_next): each converts this many / N at a
#: time (between 8 and 128), so the floats waiting to be used stay in cache
#: (measured: at N = 512, pieces of 16 make the heap engine's loop about 8 %
#: faster than pieces of 128; at N = 8 pieces of 128 beat pieces of 16 by about
#: as much)
_PREFETCH = 8192


def _floats(blocks, chunk: int):
    """The values of an iterable of float64 arrays as an iterator's ``__next__``
    (a C-level call per value, inlined for performance), converted to Python
    floats ``chunk`` at a time."""

    def chunks():
        for block in blocks:
            for i in range(0, len(block), chunk):
                yield block[i:i + chunk].tolist()

    return itertools.chain.from_iterable(chunks()).__next__


def _draws(sampler: BlockSampler, chunk: int = 128):
    """The sampler's draws, one per call. They come from the blocks every engine
    draws (``BlockSampler.arrays()``), so every engine sees the same values."""
    return _floats(sampler.arrays(), chunk)


class _WorkerStreams:
    """The compute streams of a run: one stream set, the worker groups'
    distributions and sizes, and how many draws each group's first chunk holds
    (:class:`Draws`)."""

    __slots__ = ("groups", "src", "firsts")

    def __init__(self, sc, src, firsts):
        self.src = src
        self.groups = [(g.compute, g.count) for g in sc.workers]
        firsts = [firsts] * len(self.groups) if isinstance(firsts, int) else firsts
        self.firsts = [max(1, int(f)) for f in firsts]  # (a chunk holds at least one draw)

    def __len__(self) -> int:
        return sum(k for _, k in self.groups)


#: the largest first chunk per worker (values); a worker that needs more
#: continues in chunks as long as what it has drawn (4 Mi values: 32 MiB)
_MAX_FIRST = 1 << 22


class Draws:
    """Every worker's compute draws (BlockSampler's values: the same in every
    engine) in one flat ``array('d')``, no Python object per worker.

    Worker ``w``'s values lie in chunks, each followed by the sentinel
    ``-(w + 1)`` (draws are >= 0): its first chunk in the first region of the
    buffer (row ``w`` of its group's block, ``firsts[g] + 1`` slots a row, all
    drawn in one loop by :func:`~asyncsim.rng.draw_first`), later chunks
    appended at the buffer's end by :meth:`refill` when the worker reaches
    its sentinel (:func:`~asyncsim.rng.draw_chunk`: as many values as it has
    drawn so far, so a worker that runs past its guess makes O(log) refills).
    With ``times`` the values are each worker's running sums (``np.cumsum``:
    the additions ``t = t + d`` one event at a time would make, in the same
    order, from 0.0: never -0.0), for the heap engine's plain loop; with
    ``bits`` too, the buffer is an ``array('Q')`` of the same bytes, so reading
    it gives each float's bit pattern (a non-negative float's bits sort like
    the float; a sentinel's are >= 2**63).

    Memory: 8 bytes a value drawn plus 8 a chunk; a run sized well holds
    about the draws it makes (``_first_block``). A reader keeps its own
    positions (the heap engine's loops, SimPy's async processes: from
    :meth:`start`, reading on to the sentinel, then :meth:`refill`) or
    iterates :meth:`values`.
    """

    __slots__ = ("buf", "src", "groups", "firsts", "times", "drawn", "g0", "off0")

    def __init__(self, streams: _WorkerStreams, times: bool = False, bits: bool = False):
        self.src, self.groups, self.firsts, self.times = streams.src, streams.groups, streams.firsts, times
        self.g0 = list(itertools.accumulate([k for _, k in self.groups], initial=0))[:-1]
        total = sum(k * (f + 1) for (_, k), f in zip(self.groups, self.firsts))
        self.buf = buf = array.array("Q", [0]) * total if bits else array.array("d", [0.0]) * total
        flat = np.frombuffer(buf, dtype=np.float64)
        off = 0
        rows = vals = None
        self.off0 = []  # each group's first position
        for (dist, k), f, row0 in zip(self.groups, self.firsts, self.g0):
            self.off0.append(off)
            if not k:
                continue
            rows = flat[off:off + k * (f + 1)].reshape(k, f + 1)
            vals = rows[:, :f]
            draw_first(self.src, [(dist, k)], f, out=vals, start=row0)
            if times:
                vals[:, 0] += 0.0  # (the kernels' first time is 0.0 + d: +0.0 for a draw of -0.0)
                np.cumsum(vals, axis=1, out=vals)
            rows[:, f] = -np.arange(row0 + 1, row0 + k + 1, dtype=np.float64)
            off += k * (f + 1)
        del flat, rows, vals  # (the buffer grows later: no view may outlive this)
        #: values handed out so far by workers that refilled (others: their first chunk)
        self.drawn: dict[int, int] = {}

    def start(self, w: int) -> int:
        """Worker ``w``'s first position in the buffer."""
        g = bisect.bisect_right(self.g0, w) - 1
        return self.off0[g] + (w - self.g0[g]) * (self.firsts[g] + 1)

    def starts(self) -> list[int]:
        """Each worker's first position in the buffer."""
        out: list[int] = []
        off = 0
        for (_, k), f in zip(self.groups, self.firsts):
            out.extend(range(off, off + k * (f + 1), f + 1))
            off += k * (f + 1)
        return out

    def refill(self, i: int) -> int:
        """Position ``i`` holds a worker's sentinel: append its next chunk (and a
        sentinel) and return the position of the chunk's first value."""
        buf = self.buf
        w = -int(self._at(i)) - 1
        g = bisect.bisect_right(self.g0, w) - 1
        dist, first = self.groups[g][0], self.firsts[g]
        done = self.drawn.get(w, first)
        vals = draw_chunk(self.src, w, dist, done, min(max(first, done), _MAX_FIRST))
        chunk = np.empty(len(vals) + 1, dtype=np.float64)
        chunk[:-1] = vals
        chunk[-1] = -(w + 1.0)  # its sentinel
        if self.times:
            chunk[0] += self._at(i - 1)  # the worker's last time: the value before its sentinel
            np.cumsum(chunk[:-1], out=chunk[:-1])
        j = len(buf)
        buf.frombytes(chunk.view(np.uint8))
        self.drawn[w] = done + len(vals)
        return j

    def _at(self, i: int) -> float:
        """The value at position ``i`` as a float (in either typecode)."""
        return float(np.frombuffer(self.buf, dtype=np.float64, count=1, offset=8 * i)[0])

    def values(self, w: int, piece: int = 8):
        """Worker ``w``'s values in order, ``piece`` at a time as lists of floats
        (for ``itertools.chain.from_iterable``: then a C-level call per value,
        inlined for performance), refilling as it goes. Holds one piece."""
        buf = self.buf
        i = self.start(w)
        end = i + self.firsts[bisect.bisect_right(self.g0, w) - 1]  # its first sentinel
        while True:
            while i < end:
                k = min(end, i + piece)
                yield buf[i:k].tolist()
                i = k
            i = self.refill(end)
            end = len(buf) - 1  # the chunk just appended runs to the buffer's last slot

    def owners(self, positions: np.ndarray) -> np.ndarray:
        """The worker whose value sits at each of ``positions`` (int32): the
        sentinel that ends its chunk names it. O(buffer + positions)."""
        flat = np.frombuffer(self.buf, dtype=np.float64)
        ends = np.flatnonzero(flat < 0.0)
        owner = np.repeat((-flat[ends] - 1.0).astype(np.int32), np.diff(ends, prepend=-1))
        return owner[positions]


def _first_block(sc, updates: int | None, until: float | None) -> list[int]:
    """How many draws each worker group's first chunk holds (:class:`Draws`):
    the draws a worker of the group is expected to make, ``e`` (gradients per
    update times updates, shared out by the groups' rates: 1 / mean compute
    time; with a time stop at most the time over the group's mean), plus
    1.5 standard deviations of a renewal count (``cv * sqrt(e)``, cv of the
    compute time between 0.25 and 2) plus 2, at least 1 and at most
    ``_MAX_FIRST``. A short guess costs a refill (one draw call), never other
    values; with no estimate, a whole block."""
    from ..rng import BLOCK

    n = max(sc.n_workers, 1)
    kind = sc.policy.kind
    means = [_positive(g.compute.mean) for g in sc.workers]
    rate = sum(g.count / m for g, m in zip(sc.workers, means))
    out = []
    for g, m in zip(sc.workers, means):
        est = math.inf
        if updates is not None:
            if kind in ("sync", "allreduce", "backup"):
                est = float(updates)  # every worker computes once a round
            else:
                total = float(updates) * (getattr(sc.policy, "k", 1) if kind == "k_async" else 1)
                est = total / m / rate if math.isfinite(rate) and rate > 0 else total / n
        if until is not None:
            est = min(est, until / m)
        if not math.isfinite(est):
            out.append(BLOCK)
            continue
        try:
            cv = float(g.compute.coefficient_of_variation)
        except (ArithmeticError, ValueError, TypeError):
            cv = 1.0
        cv = min(max(cv if cv == cv else 1.0, 0.25), 2.0)
        out.append(int(min(_MAX_FIRST, max(1, math.ceil(est + 1.5 * cv * math.sqrt(est) + 2)))))
    return out


def _positive(x) -> float:
    """A mean compute time as a positive float: 0 a tiny time (the group is the
    fastest), NaN or an error infinite (it draws little)."""
    try:
        x = float(x)
    except (ArithmeticError, ValueError, TypeError):
        return math.inf
    if x != x:
        return math.inf
    return x if x > 0 else 1e-300


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
        # whose draws lie in one flat buffer, first chunks sized from the run (Draws).
        self.compute = _WorkerStreams(sc, streams.worker_streams(n, "compute"), _first_block(sc, updates, until))
        self._compute_next = None
        self._draws = None
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
            # (no list of N Nones: 16 bytes a worker at 32,768 workers is a tenth of a short run's trace)
            self.pull_routes = self.push_routes = self.pull_hops = self.push_hops = None
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
    def draws(self) -> Draws:
        """The workers' compute times (:class:`Draws`; made on first use: the heap
        engine's plain async loop draws its own way)."""
        if self._draws is None:
            self._draws = Draws(self.compute)
        return self._draws

    @property
    def compute_next(self) -> list:
        """Each worker's next compute time, one per call (made on first use; the
        async processes read :attr:`draws` themselves, with no object per
        worker): an iterator over :meth:`Draws.values` (about 600 bytes a worker;
        a C-level call per draw)."""
        if self._compute_next is None:
            chain, draws = itertools.chain.from_iterable, self.draws
            piece = max(8, min(128, _PREFETCH // max(self.n, 1)))
            self._compute_next = [chain(draws.values(w, piece)).__next__ for w in range(self.n)]
        return self._compute_next

    @compute_next.setter
    def compute_next(self, value: list) -> None:
        self._compute_next = value

    def release(self) -> None:
        """The run is over: drop its processes, streams and draws (the kernel's
        ``release`` breaks the reference cycles between processes and events, so
        they are freed now rather than at some later garbage collection; the
        columns are made after this, so a run's peak is not both at once)."""
        procs = getattr(self, "procs", None) or []
        release = getattr(self.kernel, "release", None)
        if release is not None:
            release(procs)
        self.procs = []
        self.compute = self._draws = self._compute_next = None
        self.server_queue.clear()  # (waiters' events hold callbacks over the run's state)

    # ---------------------------------------------------------------- recording

    def routes(self, w: int):
        """``(pull, pull_hops, push, push_hops)`` of worker ``w`` (all ``None`` without a network)."""
        if self.pull_routes is None:
            return None, None, None, None
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
