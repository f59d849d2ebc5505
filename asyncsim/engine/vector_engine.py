"""The vectorised engine: numpy cumulative sums merged with one sort.

For scenarios in which no gradient ever waits for another one — no link
contention and no server queueing — every worker's timeline is a cumulative
sum of its own pre-drawn times, and the trace is those timelines merged in
time order. This engine computes exactly the numbers the event-driven
engines compute:

* times are built by ``np.cumsum`` over the same operands in the same order
  as the event engines add them (``numpy.add.accumulate`` on a 1-D array is a
  sequential left fold), or by the same additions one step at a time, so
  they are equal to the last bit;
* draws are the same :class:`~asyncsim.rng.BlockSampler` values, taken from
  the run's per-worker streams (all seeded in bulk): one matrix drawn with
  one numpy call per worker (:func:`~asyncsim.rng.draw_first`), or, for
  thousands of exponential workers making a few draws each, all streams
  stepped together on numpy columns (:class:`~asyncsim._pcg.ExpLanes`: numpy's
  own PCG64 and exponential ziggurat, value for value); draws beyond the end
  of the run are never used.

Cost: O(N) set-up (about 0.06 us a worker for the seeds, plus 0.6 us a worker
for numpy's call or 15-30 ns a draw on the lanes), O(U + N) draws,
cumulative sums and gathers, and one sort of the arrivals up to a horizon
with a 4.5-standard-deviation margin (O(U log U): the times sorted as values
with their index packed into the last bits, numpy's vectorised sort; near
and exact ties repaired in linear time). Memory: about 120 bytes an update
and 200 bytes a worker besides the trace.

Supported (:func:`why_not_vectorisable` says why not otherwise):

* ``async`` and ``k_async`` with zero apply time, without a network or with
  *constant uncontended* transfers (every hop latency constant and no link
  direction used by two workers, e.g. one worker, or a model of 0 bytes);
* ``sync`` and ``backup`` without a network (any apply time: rounds never
  overlap, so the server never queues);
* ``round_robin`` with any apply time, without a network or with constant
  uncontended transfers (a max-plus recurrence, vectorised across workers);
* ``allreduce`` without a network (it is then exactly ``sync``).

Simultaneous completions are the one thing a sort cannot order the way the
event engines do (their order depends on the history of event scheduling).
They need discrete compute times (``constant``, ``empirical``...) or a
floating-point coincidence; when one would affect the trace this engine
hands the whole run to the heapq engine, which gives the identical trace.
"""

from __future__ import annotations

import math

import numpy as np

from ..rng import BLOCK, Streams, draw_first
from ._model import async_columns

__all__ = ["why_not_vectorisable", "run_vector"]


class _Tie(Exception):
    """Two events at the same time whose order matters: use an event engine."""


def _zero_apply(sc) -> bool:
    a = sc.server.apply
    return a.dist == "constant" and float(a.value) == 0.0


def _transfer_times(sc):
    """Per-worker constant transfer parts ``(pull_hold, pull_lat, push_hold, push_lat)``
    as arrays, or a reason string when transfers are not constant and uncontended."""
    n = sc.n_workers
    if sc.network is None:
        z = np.zeros(n)
        return z, z, z, z
    from ..network import build_network

    net = build_network(sc)
    if not net.is_constant():
        return "network latencies are random"
    if not net.is_uncontended():  # (the routes know which link directions two workers share)
        return "workers share network links (contention is possible)"
    return (np.array([r.hold for r in net.pull]), np.array([r.fixed_latency for r in net.pull]),
            np.array([r.hold for r in net.push]), np.array([r.fixed_latency for r in net.push]))


def _no_transfer(sc) -> bool:
    t = _transfer_times(sc)
    return not isinstance(t, str) and all(not np.any(x) for x in t)


def _why_kasync(sc) -> str | None:
    if not _zero_apply(sc):
        return "a nonzero server apply time makes gradients queue at the server"
    t = _transfer_times(sc)
    if isinstance(t, str):
        return t
    zero = np.repeat([_mean_is_zero(g.compute) for g in sc.workers], [g.count for g in sc.workers])
    if np.any(zero & (t[0] + t[1] + t[2] + t[3] == 0)):
        # a worker whose gradients take no time arrives without end at t = 0: no number of
        # draws per worker covers the horizon (the draws doubled until memory ran out)
        return "some workers compute in zero time (every arrival is simultaneous)"
    return None


def _why_rounds(sc) -> str | None:
    # (a sync timeout belongs to the fault model and is ignored by every engine)
    return None if _no_transfer(sc) else f"{sc.policy.kind} with network transfers is not vectorised"


def _why_allreduce(sc) -> str | None:
    if sc.network is None:
        return None
    return "allreduce with a network runs on the event engines (a few events per update, whatever N)"


def _why_round_robin(sc) -> str | None:
    t = _transfer_times(sc)
    return t if isinstance(t, str) else None


#: the local SGD / DiLoCo family (asyncsim/policies/diloco.py): why the event engines run it
_WHY_DILOCO = ("the local SGD / DiLoCo policies (local_sgd, diloco, streaming_diloco, async_diloco) run on "
               "the event engines (they record inner steps and outer updates)")


def why_not_vectorisable(sc) -> str | None:
    """``None`` if the vectorised engine supports ``sc``, else the reason (one line)."""
    if sc.faults:
        return "the scenario has faults (crashes and slowdowns make workers wait on the fault timeline)"
    if getattr(sc.policy, "timeout", None) is not None:
        return "sync with a timeout (the round may close early)"
    entry = _SUPPORT.get(sc.policy.kind)
    if sc.policy.kind in ("local_sgd", "diloco", "streaming_diloco", "async_diloco"):
        return _WHY_DILOCO
    if entry is None:
        return f"policy {sc.policy.kind!r} is not vectorised (workers wait on each other)"
    return entry[0](sc)


# --------------------------------------------------------------------- draws
class _Source:
    """Where one stream's draws come from: a stream of a :class:`~asyncsim.rng.StreamSet`
    (``sset`` and ``i``) or, where there is no set, a generator of its own."""

    __slots__ = ("sset", "i", "rng", "remake")

    def __init__(self, sset, i, rng=None, remake=None):
        self.sset, self.i, self.rng, self.remake = sset, i, rng, remake

    def gen(self) -> np.random.Generator:
        return self.rng if self.sset is None else self.sset.use(self.i)

    def done(self) -> None:
        if self.sset is not None:
            self.sset.keep(self.i)

    def restart(self) -> None:
        if self.sset is None:
            self.rng = self.remake()
        else:
            self.sset.reset(self.i)


class _Stream:
    """The first ``n`` draws of one distribution from one stream, as an array.

    The values are the ones :class:`~asyncsim.rng.BlockSampler` hands out
    (tests/test_parity.py checks it): whole blocks of ``BLOCK``. A family with
    ``prefix_draws`` is drawn in whole blocks up to the last one, then only
    the part of the last block that is needed: its first values are the
    block's (the property, tested per family). Should more be needed later,
    the stream is started again and drawn from its start.
    """

    __slots__ = ("dist", "src", "blocks", "n", "partial")

    def __init__(self, dist, src: _Source, partial: bool = False):
        self.dist, self.src = dist, src
        self.blocks: list[np.ndarray] = []
        self.n = 0
        self.partial = partial  # the last block was drawn in part (or elsewhere): start again

    def _draw(self, n: int) -> None:
        if n <= self.n:
            return
        src = self.src
        if self.partial:  # the generator is past a part-block: start again
            src.restart()
            self.blocks, self.n, self.partial = [], 0, False
        sample, rng = self.dist.sample, src.gen()
        while self.n + BLOCK <= n:
            self.blocks.append(np.asarray(sample(rng, BLOCK), dtype=np.float64))
            self.n += BLOCK
        if self.n < n:
            if self.dist.prefix_draws:
                self.blocks.append(np.asarray(sample(rng, n - self.n), dtype=np.float64))
                self.n, self.partial = n, True
            else:
                self.blocks.append(np.asarray(sample(rng, BLOCK), dtype=np.float64))
                self.n += BLOCK
        src.done()

    def first(self, n: int) -> np.ndarray:
        self._draw(n)
        if len(self.blocks) > 1:
            self.blocks = [np.concatenate(self.blocks)]
        return self.blocks[0][:n]

    def fill(self, out: np.ndarray) -> None:
        """Copy the first ``len(out)`` draws into ``out`` (no intermediate array)."""
        n = len(out)
        self._draw(n)
        i = 0
        for b in self.blocks:
            k = min(len(b), n - i)
            out[i:i + k] = b[:k]
            i += k
            if i == n:
                break


_UNSET = object()


class _Draws:
    """Per-worker arrays of draws from the run's compute streams.

    The streams are one :class:`~asyncsim.rng.StreamSet` (no Python object per
    worker); a worker's :class:`_Stream` is made only when it is asked for
    draws one worker at a time. :meth:`matrix` draws every worker's first
    ``n`` values in one loop straight into a matrix.
    """

    def __init__(self, sc):
        self.streams = streams = Streams(sc.seed)
        self.groups = [(g.compute, g.count) for g in sc.workers]
        self.n = sc.n_workers
        self._sset = self._gens = _UNSET  # made on first use (the lanes need neither)
        self.compute: dict[int, _Stream] = {}  # made on demand (one worker at a time)
        self._dists = None
        #: matrix() has drawn every stream in part (later draws start again)
        self.used = False
        self.apply = _Stream(sc.server.apply, _Source(None, 0, streams.server("apply"), lambda: streams.server("apply")))

    @property
    def sset(self):
        """The run's compute streams as one :class:`~asyncsim.rng.StreamSet` (``None``
        where there is none: then :attr:`gens`)."""
        if self._sset is _UNSET:
            self._sset = self.streams.worker_set(self.n, "compute")
        return self._sset

    @property
    def gens(self):
        if self._gens is _UNSET:
            self._gens = None if self.sset is not None else self.streams.workers(self.n, "compute")
        return self._gens

    def _stream(self, w: int) -> _Stream:
        s = self.compute.get(w)
        if s is None:
            if self._dists is None:
                self._dists = [d for d, k in self.groups for _ in range(k)]
            if self.sset is not None:
                src = _Source(self.sset, w)
            else:
                src = _Source(None, w, self.gens[w], lambda w=w: self.streams.worker(w, "compute"))
            s = self.compute[w] = _Stream(self._dists[w], src, partial=self.used)
        return s

    def ensure(self, w: int, n: int) -> np.ndarray:
        return self._stream(w).first(n)

    def matrix(self, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """The first ``n`` compute draws of every worker, one row per worker."""
        out = np.empty((self.n, n)) if out is None else out
        if self.sset is None or self.used or self.compute or not all(d.prefix_draws for d, _ in self.groups):
            for w in range(self.n):
                self._stream(w).fill(out[w])
            return out
        # fresh streams: all drawn in one loop (rng.draw_first); they are then past a
        # part-block, so later draws start again
        self.used = True
        return draw_first(self.sset, self.groups, n, out)

    def group_matrices(self, counts) -> list[np.ndarray] | None:
        """:meth:`matrix` per worker group, ``counts[g]`` draws for group ``g``; ``None``
        where that does not apply (streams already drawn, or families without
        ``prefix_draws``): then draw worker by worker."""
        if self.sset is None or self.used or self.compute or not all(d.prefix_draws for d, _ in self.groups):
            return None
        self.used = True
        out, row0 = [], 0
        for (dist, k), c in zip(self.groups, counts):
            out.append(draw_first(self.sset, [(dist, k)], int(c), start=row0))
            row0 += k
        return out

    def ensure_apply(self, n: int) -> np.ndarray:
        return self.apply.first(n)


def _all_exponential(draws) -> bool:
    """Whether every worker group's compute is exponential (what the lanes and the matrix with extensions draw)."""
    from ..distributions import Exponential

    return all(type(d) is Exponential for d, _ in draws.groups)


def _exp_scales(draws) -> np.ndarray:
    """Each worker's exponential mean (every group's compute exponential: :func:`_all_exponential`)."""
    return np.repeat([float(d.mean_) for d, _ in draws.groups], [k for _, k in draws.groups])


def _lanes_for(draws, per_worker: float):
    """An :class:`~asyncsim._pcg.ExpLanes` over the run's fresh compute streams when
    drawing them together is cheaper than one numpy call per worker (else ``None``).

    Measured on this project's 2-core VM: numpy's call costs ~0.7 us a worker;
    a step of the lanes ~25-40 ns a worker still drawing plus ~60 us of
    overhead, so lanes win from a few thousand workers at a few tens of draws
    each (``per_worker``: the draws a worker is expected to make)."""
    if draws.used or draws.compute or draws.n < _LANES_MIN_WORKERS:
        return None
    if per_worker > _LANES_MAX_DRAWS or not _all_exponential(draws):
        return None
    from .._pcg import ExpLanes, available

    if not available():
        return None
    states = draws.sset if draws._sset is not _UNSET and draws.sset is not None else \
        draws.streams.worker_states(draws.n, "compute")
    if states is None:
        return None
    draws.used = True  # the streams end part-drawn: later draws start them again
    return ExpLanes(states)


class _MatrixArrivals:
    """Async arrivals of identical exponential workers (one group, no network) as
    one draw matrix plus a few extensions, for a run of ``m`` gradients.

    The target is the time by which ``m + 1`` arrivals are expected, plus 4.5
    standard deviations. Each worker draws its expected arrivals by then plus
    2.5 standard deviations plus 2 (numpy's call per worker:
    :func:`~asyncsim.rng.draw_first`), not 4.5 standard deviations plus 8: the
    matrix is up to a third smaller, and the few workers still short of the
    target (about 0.6 %) continue their own streams, a block at a time, until
    they pass it. ``arrive``: the matrix's
    rows (each worker's cumulative times), then the extensions; ``locate``
    gives the worker and the previous arrival of any of them. Cost: O(N) numpy
    calls, O(m + N) work; ``make`` returns ``None`` (the general path) where
    this does not apply or the target holds fewer than ``m + 1`` arrivals."""

    @classmethod
    def make(cls, draws, m: int, rate: np.ndarray, cv2: np.ndarray):
        if len(draws.groups) != 1 or not _all_exponential(draws) or m < 1:
            return None
        if draws.sset is None or draws.used or draws.compute:
            return None
        n = draws.n
        margin = 1 + 4.5 / math.sqrt(m + 1)
        share = (m + 1) / n * margin  # a worker's expected arrivals by the target
        c = int(math.ceil(share + 2.5 * math.sqrt(share) + 2))
        self = cls()
        self.n, self.c = n, c
        self.target = target = (m + 1) / float(rate.sum()) * margin
        M = draws.matrix(c)  # (the streams are left after these c draws: draw_first)
        np.cumsum(M, axis=1, out=M)
        short = np.flatnonzero(M[:, -1] <= target)
        ext_t, ext_w, ext_p = [], [], []
        if len(short):
            mean = draws.groups[0][0].mean_
            sset = draws.sset
            pos = n * c
            block = np.empty(max(8, c // 4) + 1)
            k = len(block) - 1
            for w in short.tolist():  # each continues its own stream where the matrix left it
                gen = sset.use(w)
                prev = w * c + c - 1
                for times in _fold_on(float(M[w, -1]), target, gen.standard_exponential, block, mean):
                    ext_t.append(times.copy())
                    ext_w.append(np.full(k, w, dtype=np.int32))
                    ext_p.append(np.concatenate([[prev], np.arange(pos, pos + k - 1)]))
                    prev, pos = pos + k - 1, pos + k
        self.arrive = np.concatenate([M.ravel()] + ext_t) if ext_t else M.ravel()
        self.ext_w = np.concatenate(ext_w) if ext_w else np.empty(0, dtype=np.int32)
        self.ext_p = np.concatenate(ext_p).astype(np.int64) if ext_p else np.empty(0, dtype=np.int64)
        self.within = int(np.count_nonzero(self.arrive <= target))
        if self.within <= m:
            return None  # (rare) the general path, which starts the streams again
        return self

    def locate(self, sel: np.ndarray):
        nc, c = self.n * self.c, self.c
        worker = np.floor_divide(sel, c, out=np.empty(len(sel), dtype=np.int32), casting="unsafe")
        before = np.where(np.multiply(worker, c, dtype=np.int64) == sel, -1, sel - 1)  # -1: a worker's first
        e = np.flatnonzero(sel >= nc)
        if len(e):
            worker[e] = self.ext_w[sel[e] - nc]
            before[e] = self.ext_p[sel[e] - nc]
        return worker, before

    def async_versions(self, sel: np.ndarray, step: np.ndarray):
        """The workers and versions read of the async gradients ``sel`` (in order,
        global indices ``step``): the matrix's after a column of -1, where the entry
        left of a gradient is the global index of the worker's previous one (-1
        before its first; a selected gradient's previous one is selected: it
        arrived earlier), then the few extensions. Few passes, no temporaries of
        the matrix's size (fresh pages cost more than the arithmetic)."""
        n, c = self.n, self.c
        nc = n * c
        worker = np.floor_divide(sel, c, out=np.empty(len(sel), dtype=np.int32), casting="unsafe")
        e = np.flatnonzero(sel >= nc)
        g = np.empty(n * (c + 1) + 1, dtype=np.int64)  # (the last entry: where extensions write)
        g[: n * (c + 1)].reshape(n, c + 1)[:, 0] = -1
        pos = np.add(sel, worker, dtype=np.int64)  # flat index in g, minus 1
        pos += 1
        if len(e):
            pos[e] = len(g) - 1
        g[pos] = step
        pos -= 1
        rv = g.take(pos, out=pos)
        rv += 1
        if len(e):
            j = sel[e] - nc
            worker[e] = self.ext_w[j]
            gext = np.full(len(self.ext_w), -1, dtype=np.int64)
            gext[j] = step[e]
            q = self.ext_p[j]  # each one's previous arrival: in the matrix or an extension
            inm = q < nc
            rv[e] = np.where(inm, g[np.where(inm, q + q // c + 1, 0)], gext[np.where(inm, 0, q - nc)]) + 1
        return worker, rv


#: at most this many workers left short: each finishes by numpy's calls, this many draws a call
_LANES_NUMPY_TAIL, _LANES_BLOCK = 64, 8
#: all workers draw while more than this fraction of them is short of the horizon
_LANES_FULL = 0.6
#: the lanes are used from this many workers ...
_LANES_MIN_WORKERS = 2048
#: ... making at most this many draws each on average
_LANES_MAX_DRAWS = 16


def _fold_on(t: float, horizon: float, fill, block: np.ndarray, scale: float):
    """One worker's next arrival times from ``t`` (its last) on, a block at a time,
    until one passes ``horizon``: ``fill(out)`` writes its stream's next standard
    exponential draws into ``out``, scaled by ``scale`` (``mean *
    standard_exponential()``: numpy's exponential) and summed from ``t`` left to
    right (the event engines' left fold). Yields each block's times, a view of
    ``block[1:]`` that the next block overwrites. O(draws)."""
    while t <= horizon:
        block[0] = t
        fill(out=block[1:])
        if scale != 1.0:
            block[1:] *= scale
        np.cumsum(block, out=block)
        yield block[1:]
        t = float(block[-1])


def _lane_arrivals(lanes, scale: np.ndarray, rate: np.ndarray, m: int | None, until: float | None):
    """Every worker's arrival times (cumulative sums of its compute draws, in
    draw order: the event engines' left folds) up to the horizon, drawn step by
    step for the workers still short of it.

    With ``m``: the workers draw until they pass the time by which ``m + 1``
    arrivals are expected plus 4.5 standard deviations (``rate``: each worker's
    arrivals per second), so the arrivals up to it hold the ``m + 1`` smallest
    of all. With ``until``: until every worker passes it.

    Returns ``(arrive, worker, prev, target, within)``, one entry per arrival
    drawn, step by step: the time, the worker (int32), and the index of the
    worker's previous arrival (-1 for its first); ``target``: a time every
    worker has passed, with (given ``m``) ``within > m`` arrivals up to it. Or
    ``None`` where fewer than ``m + 1`` arrivals lie before the target (its
    margin makes that about 3e-6 of runs): the general path then.

    Cost O(arrivals drawn) numpy work, about ``m + N`` of them, in O(max draws
    per worker) steps; memory 20 bytes an arrival drawn and ~150 a worker."""
    n = len(scale)
    unit = bool(np.all(scale == 1.0))
    t = np.zeros(n)
    lastpos = np.full(n, -1, dtype=np.int64)
    all_w = np.arange(n, dtype=np.int32)
    if m is None:
        target = float(until)
        cap = int(target * rate.sum() * 1.05) + 2 * n + 1024
    else:
        target = (m + 1) / float(rate.sum()) * (1 + 4.5 / math.sqrt(m + 1))
        cap = int((m + 1) * (1 + 4.5 / math.sqrt(m + 1)) * 1.02) + 2 * n + 1024
    buf = {"t": np.empty(cap), "w": np.empty(cap, dtype=np.int32), "p": np.empty(cap, dtype=np.int64)}
    total = 0

    def room(k):
        if total + k > len(buf["t"]):
            for key, v in buf.items():  # (rare: the estimate was short) grow
                buf[key] = np.concatenate([v[:total], np.empty(max(total + k, 2 * len(v)) - total, dtype=v.dtype)])

    def extend(horizon):
        """Draw until every worker is past ``horizon``: all workers while most are
        short of it (no gathers), then only those (as lanes of their own, with
        their times, last positions and ids alongside), and the last few each
        by numpy's calls, a block at a time (every value drawn is recorded: the
        streams stay where the record ends)."""
        nonlocal total
        while np.count_nonzero(t <= horizon) > _LANES_FULL * n:
            room(n)
            end = total + n
            x = lanes.draw(None, out=buf["t"][total:end])
            if not unit:
                x *= scale
            x += t
            t[:] = x
            buf["w"][total:end] = all_w
            buf["p"][total:end] = lastpos
            np.add(all_w, total, out=lastpos, dtype=np.int64)
            total = end
        ids = np.flatnonzero(t <= horizon).astype(np.int32)
        if not len(ids):
            return
        sub = lanes.subset(ids)
        tc, pc, sc = t[ids], lastpos[ids], None if unit else scale[ids]
        while len(ids) > _LANES_NUMPY_TAIL:
            k = len(ids)
            room(k)
            end = total + k
            x = sub.draw(None, out=buf["t"][total:end])
            if sc is not None:
                x *= sc
            x += tc
            tc = x
            buf["w"][total:end] = ids
            buf["p"][total:end] = pc
            pc = np.arange(total, end)
            total = end
            short = x <= horizon
            if not short.all():  # (the workers done are left as they are: extend runs once)
                sub.keep(short)
                ids, tc, pc = ids[short], tc[short], pc[short]
                if sc is not None:
                    sc = sc[short]
        block = np.empty(_LANES_BLOCK + 1)
        k = _LANES_BLOCK
        for j in range(len(ids)):  # the last few
            pj, w = int(pc[j]), int(ids[j])

            def fill(out, j=j):
                sub.finish_numpy(j, out)

            for times in _fold_on(float(tc[j]), horizon, fill, block, 1.0 if sc is None else sc[j]):
                room(k)
                buf["t"][total:total + k] = times
                buf["w"][total:total + k] = w
                buf["p"][total] = pj
                buf["p"][total + 1:total + k] = np.arange(total, total + k - 1)
                pj = total + k - 1
                total += k

    extend(target)
    arrive = buf["t"][:total]
    if m is not None:
        within = int(np.count_nonzero(arrive <= target))
        if within <= m:
            return None  # (about 3e-6 of runs) fewer than m + 1 arrivals by the target
    else:
        within = None
    return arrive, buf["w"][:total], buf["p"][:total], target, within


def _merge(arrive: np.ndarray, n_runs: int, need: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``order = np.argsort(arrive, kind="stable")`` and ``arrive[order]`` for
    ``arrive`` made of ``n_runs`` sorted runs of non-negative finite times
    (checked against both in tests). With ``need``, only the first ``need``
    entries of both are guaranteed (they are a prefix of the full answer; there
    may be more).

    Few runs: timsort, which merges the runs. Many runs: numpy's default
    argsort (introsort, vectorised where the CPU allows: measured 1.5-3x
    faster than a stable sort or a two-pass 16-bit radix sort from 6e5 to 1e7
    times), then the groups of equal times are put back in index order, all
    in one ``lexsort`` (linear: without ties it is one comparison pass).
    Asked for ``need`` entries out of many more, the times up to the
    ``need``-th smallest (``np.partition``, linear) are selected first, in
    index order, and only those are sorted.
    """
    if n_runs <= _TIMSORT_RUNS or len(arrive) < 2:
        p = np.argsort(arrive, kind="stable")
        return p, arrive[p]
    if need is not None and 0 < need < len(arrive) // 2:
        kth = np.partition(arrive, need - 1)[need - 1]
        sel = np.flatnonzero(arrive <= kth)  # index order: a stable sort of them is the stable prefix
        p, v = _stable_order(arrive[sel])
        return sel[p], v
    return _stable_order(arrive)


def _stable_order(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable argsort of ``x`` (non-negative, no NaN) and the sorted values (see :func:`_merge`).

    numpy sorts values about three times faster than it argsorts them, so the
    order is sorted as values: each time's bits (a non-negative double's bits
    order like the double) with its last ``b`` bits replaced by its index
    (``2**b >= len(x)``), sorted with ``np.sort``, give the order of the times
    up to those ``b`` bits, index order among equal ones. Where neighbours
    agree in all other bits (a relative difference below ``2**(b-52)``; rare)
    the group is sorted again on the exact times, and equal times go back into
    index order: the stable argsort exactly (tests/test_pcg.py). Beyond 2**24
    times (``_PACK_BITS``) numpy's argsort instead. Cost O(n log n): see
    ``benchmarks/bench_bound.py --merge``; the repair O(near ones)."""
    n = len(x)
    b = max(int(n - 1).bit_length(), 1)
    if n < 2 or b > _PACK_BITS or not (x.dtype == np.float64 and x.flags.c_contiguous):
        return _stable_argsort(x)
    mask = np.int64((1 << b) - 1)
    key = np.bitwise_and(x.view(np.int64), ~mask)
    key |= np.arange(n, dtype=np.int64)
    key.sort()
    if key[0] < 0:  # (a negative time or sign bit: not ours to pack)
        return _stable_argsort(x)
    p = key & mask
    v = x[p]
    if np.any(v[1:] < v[:-1]):
        # out of order only within groups that agree above the last b bits: those
        # sorted again on (time, index)
        key >>= np.int64(b)
        grp, idx = _runs(np.flatnonzero(key[1:] == key[:-1]))
        seg = p[idx]
        o = np.lexsort((seg, x[seg], grp))
        p[idx] = seg[o]
        v[idx] = x[p[idx]]
    return p, v


#: up to 2**24 times the index is packed into the times' last bits: beyond, times that agree in
#: all the others (within about n 2**(b-52) of each other, so a fraction of about n**2 2**-52 of
#: neighbours: 6 % at 2**24) would make the repair a sort of its own
_PACK_BITS = 24


def _stable_argsort(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_stable_order` by ``np.argsort`` (the plain reference; also where packing does not apply)."""
    p = np.argsort(x)
    v = x[p]
    tie = np.flatnonzero(v[1:] == v[:-1])
    if len(tie):  # the runs of equal values, each sorted back into index order
        grp, idx = _runs(tie)
        seg = p[idx]
        p[idx] = seg[np.lexsort((seg, grp))]
    return p, v


def _runs(join: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted positions ``join`` (``i``: entries ``i`` and ``i + 1`` belong
    together), the runs they make: each member's run number and position."""
    start = np.ones(len(join), dtype=bool)
    start[1:] = join[1:] != join[:-1] + 1
    first = join[start]
    size = np.diff(np.append(np.flatnonzero(start), len(join))) + 1
    grp = np.repeat(np.arange(len(first)), size)
    return grp, np.arange(len(grp)) - np.repeat(np.cumsum(size) - size, size) + first[grp]


#: up to this many sorted runs, timsort's merging beats the sort
_TIMSORT_RUNS = 4


def _variance_or(d) -> float:
    """The distribution's variance; where it is not finite, that of an
    exponential with the same mean (``mean**2``)."""
    try:
        v = float(d.variance)
    except Exception:  # pragma: no cover - defensive
        v = math.nan
    return v if math.isfinite(v) and v >= 0 else _mean_or(d) ** 2


def _mean_is_zero(d) -> bool:
    try:
        return float(d.mean) == 0.0
    except Exception:  # pragma: no cover - defensive
        return False


def _mean_or(d, default=1.0) -> float:
    try:
        m = float(d.mean)
    except Exception:  # pragma: no cover - defensive
        return default
    return m if math.isfinite(m) and m > 0 else default


# ------------------------------------------------------------ async, k_async
def _run_kasync(sc, K, updates, until, progress):
    n = sc.n_workers
    draws = _Draws(sc)
    ph, pl, h, l = _transfer_times(sc)
    # per group, then per worker (a worker group shares one distribution)
    group_size = [g.count for g in sc.workers]
    cyc = np.repeat([_mean_or(g.compute) for g in sc.workers], group_size) + ph + pl + h + l
    rate = 1.0 / np.maximum(cyc, 1e-300)
    # Expected arrivals per worker plus 4.5 standard deviations, so that one pass
    # almost always suffices (short workers are extended below). A renewal count
    # by time T has mean T/mu and variance about (T/mu) cv^2 (cv of the cycle;
    # 1 where it is unknown or infinite); the factor 1.005 covers the spread of
    # the horizon itself. Exponential compute, 2e5 updates at N = 512: about 25 %
    # more draws than are used; no second pass in 60 seeds (the Poisson tail puts
    # it near 0.3 % of runs).
    # (cycles of 1e-300 s: their square underflows to 0, and 0/0 made the counts NaN)
    cv2 = np.repeat([_variance_or(g.compute) for g in sc.workers], group_size) / np.maximum(cyc**2, 1e-300)
    if updates is not None:
        mean = updates * K * rate / rate.sum()
    else:
        mean = until * rate
    counts = np.ceil(mean * 1.005 + 4.5 * np.sqrt(mean * np.maximum(cv2, 0.05)) + 8).astype(np.int64)
    has_net = bool(np.any(ph) or np.any(pl) or np.any(h) or np.any(l))
    # many workers, few draws each: all streams stepped together (asyncsim._pcg)
    lanes = None if has_net else _lanes_for(draws, float(mean.max()) if len(mean) else 0.0)
    same = False
    locate = mat = None  # locate, where set: (worker, index of the worker's previous arrival or -1) of arrivals
    if lanes is not None:
        got = _lane_arrivals(lanes, _exp_scales(draws), rate, None if updates is None else updates * K, until)
        if got is None:
            lanes = None  # (the general path below starts the streams again)
        else:
            arrive, lane_w, lane_prev, target, within = got

            def locate(sel):
                return lane_w[sel], lane_prev[sel]
    if lanes is None and not has_net and updates is not None and (mat := _MatrixArrivals.make(draws, updates * K, rate, cv2)):
        arrive, target, locate, within = mat.arrive, mat.target, mat.locate, mat.within
    if locate is not None:
        if within is None or within > 0.8 * len(arrive):
            order, srt = _stable_order(arrive)
        else:  # the arrivals up to the target hold the m + 1 smallest: only those sorted
            order = np.flatnonzero(arrive <= target)
            p, srt = _stable_order(arrive[order])
            order = order[p]
    while locate is None:
        same = not has_net and bool(np.all(counts == counts[0]))
        if same:
            # one row per worker: a cumsum along rows is each worker's own left fold
            c = int(counts[0])
            arrive = draws.matrix(c)
            np.cumsum(arrive, axis=1, out=arrive)
            arrive = arrive.ravel()
            last = arrive[c - 1::c]
        elif not has_net and (mats := draws.group_matrices(counts[np.cumsum(group_size) - group_size])) is not None:
            # one matrix per worker group (each group's workers draw alike), no object per worker
            for a in mats:
                np.cumsum(a, axis=1, out=a)
            last = np.concatenate([a[:, -1] for a in mats])
            arrive = np.concatenate([a.ravel() for a in mats])
            del mats
        else:
            arr_l, rd_l, dn_l = [], [], []
            for w in range(n):
                c = draws.ensure(w, int(counts[w]))[: counts[w]]
                if has_net:
                    # the event engines' additions in order: pull hold, pull latency, compute,
                    # push hold, push latency (adding 0.0 leaves a float unchanged)
                    seq = np.empty((len(c), 5))
                    seq[:, 0], seq[:, 1], seq[:, 2], seq[:, 3], seq[:, 4] = ph[w], pl[w], c, h[w], l[w]
                    cs = np.cumsum(seq.ravel()).reshape(-1, 5)
                    arr_l.append(cs[:, 4])
                    rd_l.append(cs[:, 1])
                    dn_l.append(cs[:, 2])
                else:
                    arr_l.append(np.cumsum(c))
            last = np.array([x[-1] for x in arr_l])
            arrive = np.concatenate(arr_l)
        order, srt = _merge(arrive, n, None if updates is None else updates * K + 1)
        if updates is not None:
            m = updates * K
            horizon = srt[m - 1] if len(order) >= m else math.inf
        else:
            horizon = until
        short = last <= horizon
        if not short.any():
            break
        counts = np.where(short, counts * 2, counts)
    if updates is not None:
        m = updates * K
        t_sorted = srt[:m + 1]
    else:
        t_sorted = srt
        m = int(np.searchsorted(t_sorted, until, side="right")) // K * K
        t_sorted = t_sorted[:m + 1]
    # An arrival tied with the next one (the (m+1)-th included: it could
    # precede the m-th in the event engines) changes the order: hand over.
    if len(t_sorted) > 1 and np.any(t_sorted[1:] == t_sorted[:-1]):
        raise _Tie
    sel = order[:m]
    t_arr = t_sorted[:m]
    if mat is not None and K == 1:
        worker = None  # (the matrix's own columns below)
    elif locate is not None:
        worker, before = locate(sel)  # (before: flat index of the worker's previous arrival, -1 before its first)
    elif same:
        worker = np.floor_divide(sel, c, out=np.empty(m, dtype=np.int32), casting="unsafe")
    else:
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        worker = (np.searchsorted(offsets, sel, side="right") - 1).astype(np.int32)
    sim_time = float(t_arr[-1]) if updates is not None else float(until)
    if K == 1 and not has_net:
        # every arrival is applied on its own, at once: the async columns
        if locate is None and not same:
            return async_columns(worker, t_arr.copy(), t_arr), sim_time, m
        # gf holds each selected gradient's global index, after a -1: the entry a
        # gradient's `pos` points at is the global index of the worker's previous
        # gradient (-1 before its first), and its version read is that + 1 (a selected
        # gradient's previous one is selected: it arrived earlier). Few passes and no
        # temporaries of the draws' size (inlined for performance: fresh pages cost
        # more than the arithmetic).
        step = np.arange(m, dtype=np.int64)
        if mat is not None:
            worker, rv = mat.async_versions(sel, step)
        elif locate is not None:  # the arrivals' flat order, then a -1 in front
            gf = np.empty(len(arrive) + 1, dtype=np.int64)
            gf[0] = -1
            gf[1:][sel] = step
            pos = np.add(before, 1, dtype=np.int64)
        else:  # one row per worker, after a column of -1
            g = np.empty((n, c + 1), dtype=np.int64)
            g[:, 0] = -1
            gf = g.ravel()
            pos = np.add(sel, worker, dtype=np.int64)  # flat index in g, minus 1
            pos += 1
            gf[pos] = step
            pos -= 1
            del g
        if mat is None:
            rv = gf.take(pos, out=pos)
            rv += 1
            del gf
        # the pull is the previous gradient's apply: t_applied of step rv - 1, t = 0 for
        # the first; t_done shares a buffer whose first entry is that 0
        buf = np.empty(m + 1)
        buf[0] = 0.0
        buf[1:] = t_arr
        cols = {"step": step, "worker": worker, "read_version": rv, "staleness": np.subtract(step, rv),
                "t_read": buf.take(rv), "t_done": buf[1:], "t_applied": t_arr}
        return cols, sim_time, m
    if locate is not None:
        first = before < 0
        prev = np.maximum(before, 0)
    else:
        first = sel == (sel // c * c if same else offsets[worker])  # the worker's first gradient
        prev = np.maximum(sel - 1, 0)            # flat index of the worker's previous gradient
    gidx = np.empty(len(arrive), dtype=np.int64)
    gidx[sel] = np.arange(m, dtype=np.int64)  # (a selected arrival's previous one is selected)
    # version read = updates complete after the worker's previous arrival (global index g)
    rv = np.where(first, 0, (gidx[prev] + 1) // K)
    if has_net:
        t_read = np.concatenate(rd_l)[sel]
        t_done = np.concatenate(dn_l)[sel]
    else:  # the pull is instantaneous at the previous arrival; t_done is the arrival
        t_read = np.where(first, 0.0, arrive[prev])
        t_done = t_arr
    if K == 1:
        t_app = t_arr
        step = np.arange(m, dtype=np.int64)
        t_app_rows = t_arr
    else:
        t_app = t_arr.reshape(-1, K)[:, -1] if m else np.empty(0)
        step = np.arange(m, dtype=np.int64) // K
        t_app_rows = np.repeat(t_app, K)
    cols = {
        "step": step,
        "worker": worker,
        "read_version": rv,
        "t_read": t_read,
        "t_done": t_done.copy() if t_done is t_app_rows else t_done,
        "t_applied": t_app_rows,
    }
    return cols, sim_time, m // K


# -------------------------------------------------------------- sync, backup
def _run_rounds(sc, K, updates, until, progress):
    n = sc.n_workers
    draws = _Draws(sc)
    if updates is not None:
        R = updates
    else:
        per = _mean_or(sc.server.apply, 0.0) + max(_mean_or(g.compute) for g in sc.workers)
        R = int(until / max(per, 1e-300) * 1.1) + 16
    while True:
        C = draws.matrix(R).T  # (R, N)
        S = draws.ensure_apply(R)[:R]
        srt = np.sort(C, axis=1)
        ck = srt[:, K - 1]
        seq = np.empty(2 * R)
        seq[0::2], seq[1::2] = ck, S
        cs = np.cumsum(seq)
        close = cs[0::2] - 0.0     # C_v = T_v + ck_v
        T_next = cs[1::2]          # T_{v+1} = C_v + s_v
        if updates is not None or T_next[-1] > until:
            break
        R *= 2
    T = np.concatenate([[0.0], T_next[:-1]])
    if updates is None:
        # rounds fully applied by `until`, plus a last round closed (drops recorded) but not applied
        R_app = int(np.searchsorted(T_next, until, side="right"))
        R_rows = R_app + (1 if R_app < R and close[R_app] <= until and K < n else 0)
    else:
        R_app = R_rows = R
    C, T, close = C[:R_rows], T[:R_rows], close[:R_rows]
    done = T[:, None] + C
    # simultaneous completions within a round change the row order: hand over
    ds = np.sort(done, axis=1)
    if n > 1 and np.any(np.diff(ds, axis=1) == 0):
        raise _Tie
    rank = np.argsort(np.argsort(done, axis=1, kind="stable"), axis=1, kind="stable")
    applied = rank < K
    # row order in a round: dropped rows in worker order (recorded at the close),
    # then the K applied rows in arrival order (recorded at the apply's end)
    key = np.where(applied, n + rank, np.arange(n)[None, :])
    if R_rows > R_app:
        key[R_app, applied[R_app]] = 2 * n + 1  # last round: its update was not applied by `until`
    row_order = np.argsort(key, axis=1, kind="stable")
    keep = np.take_along_axis(key, row_order, axis=1) <= 2 * n
    vv = np.repeat(np.arange(R_rows), n).reshape(R_rows, n)
    w_idx = row_order
    app = np.take_along_axis(applied, row_order, axis=1)
    t_done = np.take_along_axis(done, row_order, axis=1)
    t_done = np.where(app, t_done, close[:, None])
    t_read = np.broadcast_to(T[:, None], (R_rows, n))
    t_app = np.where(app, T_next[:R_rows][:, None], np.nan)
    keep_f = keep.ravel()
    cols = {
        "step": np.where(app, vv, -1).ravel()[keep_f].astype(np.int64),
        "worker": w_idx.ravel()[keep_f].astype(np.int32),
        "read_version": vv.ravel()[keep_f].astype(np.int64),
        "t_read": np.ascontiguousarray(t_read).ravel()[keep_f],
        "t_done": t_done.ravel()[keep_f],
        "t_applied": t_app.ravel()[keep_f],
    }
    sim_time = float(T_next[R_app - 1]) if updates is not None else float(until)
    return cols, sim_time, R_app


# --------------------------------------------------------------- round robin
def _run_round_robin(sc, updates, until, progress):
    n = sc.n_workers
    draws = _Draws(sc)
    ph, pl, h, l = _transfer_times(sc)
    if updates is not None:
        U = updates
    else:
        per = _mean_or(sc.server.apply, 0.0) + max(_mean_or(g.compute) for g in sc.workers) / n
        U = int(until / max(per, 1e-300) * 1.1) + 2 * n
    while True:
        rounds = -(-U // n)
        C = draws.matrix(rounds).T  # (rounds, N)
        S = draws.ensure_apply(rounds * n)[: rounds * n]
        t_read = np.empty(rounds * n)
        t_done = np.empty(rounds * n)
        A = np.empty(rounds * n)
        ack = np.zeros(n)  # each worker's previous ack (version 0 read at t = 0)
        a_prev = -math.inf
        s_pos = S > 0.0
        if n < 16:
            # scalar loop (a per-round numpy call costs more than N scalar steps)
            Cl, Sl, ackl = C.tolist(), S.tolist(), [0.0] * n
            phl, pll, hl, ll = ph.tolist(), pl.tolist(), h.tolist(), l.tolist()
            tr_l, td_l, a_l = [], [], []
            for t in range(rounds * n):
                w = t % n
                rd = (ackl[w] + phl[w]) + pll[w]
                dn = rd + Cl[t // n][w]
                d = (dn + hl[w]) + ll[w]
                a = d if d >= a_prev else a_prev
                s = Sl[t]
                if s > 0.0:
                    a = a + s
                tr_l.append(rd)
                td_l.append(dn)
                a_l.append(a)
                ackl[w] = a
                a_prev = a
            t_read[:], t_done[:], A[:] = tr_l, td_l, a_l
        else:
            for r in range(rounds):
                rd = (ack + ph) + pl
                dn = rd + C[r]
                d = (dn + h) + l
                sl = slice(r * n, (r + 1) * n)
                s = S[sl]
                if not s_pos[sl].any():
                    a = np.maximum.accumulate(np.concatenate([[a_prev], d]))[1:]
                else:  # max-plus recurrence with apply times: sequential within the round
                    a = np.empty(n)
                    ap = a_prev
                    for i in range(n):
                        x = d[i] if d[i] >= ap else ap
                        if s[i] > 0.0:
                            x = x + s[i]
                        a[i] = ap = x
                t_read[sl], t_done[sl], A[sl] = rd, dn, a
                ack = a
                a_prev = a[-1]
        if updates is not None or A[-1] > until:
            break
        U *= 2
    if updates is None:
        U = int(np.searchsorted(A, until, side="right"))
    step = np.arange(U, dtype=np.int64)
    cols = {
        "step": step,
        "worker": (step % n).astype(np.int32),
        "read_version": np.maximum(step - (n - 1), 0),
        "t_read": t_read[:U],
        "t_done": t_done[:U],
        "t_applied": A[:U],
    }
    sim_time = float(A[U - 1]) if updates is not None else float(until)
    return cols, sim_time, U


#: policy kind -> (why not supported, run): the vectorised engine's policies
_SUPPORT = {
    "async": (_why_kasync, lambda sc, u, t, p: _run_kasync(sc, 1, u, t, p)),
    "k_async": (_why_kasync, lambda sc, u, t, p: _run_kasync(sc, int(sc.policy.k), u, t, p)),
    "sync": (_why_rounds, lambda sc, u, t, p: _run_rounds(sc, sc.n_workers, u, t, p)),
    "backup": (_why_rounds, lambda sc, u, t, p: _run_rounds(sc, int(sc.policy.aggregate), u, t, p)),
    "round_robin": (_why_round_robin, _run_round_robin),
    # without a network all-reduce S-SGD is exactly sync (tests/test_collectives.py)
    "allreduce": (_why_allreduce, lambda sc, u, t, p: _run_rounds(sc, sc.n_workers, u, t, p)),
}


def run_vector(sc, *, updates, until, progress=None):
    """Simulate ``sc`` (which must be vectorisable) and return ``(columns, sim_time, n_updates)``."""
    why = why_not_vectorisable(sc)
    if why is not None:
        raise ValueError(f"not vectorisable: {why}")
    if updates is not None and until is not None:
        # both in the file: whichever comes first -- simplest exactly: run the event engine
        from .heap_engine import run_heap

        return run_heap(sc, updates=updates, until=until, progress=progress)
    try:
        cols, sim_time, n_up = _SUPPORT[sc.policy.kind][1](sc, updates, until, progress)
    except _Tie:
        from .heap_engine import run_heap

        return run_heap(sc, updates=updates, until=until, progress=progress)
    if "staleness" not in cols:
        step = cols["step"]
        cols["staleness"] = np.where(step >= 0, step - cols["read_version"], -1)
    return cols, sim_time, n_up
