"""The heapq engine's hand-written event loop for ``async`` (and ``k_async`` with K = 1).

Inlined for performance: instead of resuming the policy's generator, each
worker is a small state machine, and the loop pushes exactly the heap
entries the generic kernel would push for :class:`asyncsim.policies.Async`'s
process — same times, same (time, scheduling order) keys, in the same order
— so the trace is the same to the last bit (tests/test_parity.py). The
sequence it mirrors, per worker::

    pull:     for each link (global order): request -> [grant event] ;
              hold timeout ; release each link -> [release event] ;
              latency timeout (if > 0)
    compute:  timeout
    push:     as pull
    server:   take it if free, else wait for the hand-over event ;
              apply timeout (if > 0) ; record ; hand over or go idle

Three loops: with a network (the circuit transfer model) the loop of
:func:`run_async_loop`, whose heap entries are ``(time, key, code)``:
``code >= 0`` resumes worker ``code`` at its current phase; ``code < 0`` is
link ``-code-1``'s release event, whose processing grants the head of that
link's queue (``simpy.Resource`` rules). Without one, :func:`_run_plain` (zero
apply time: one event a gradient) and :func:`_run_server` (the server's apply
time and queue), whose heap entries are one int each, ``bits(time)`` over the
scheduling order: about 56 bytes a pending event instead of 130, which at
32,768 workers and 3 gradients each is what keeps a run within 2x of its
trace. (The network loop keeps tuples: a route costs kilobytes a worker
anyway, and tuples were faster there.)

Two shortcuts leave the order of events unchanged: a release event is not
pushed when nobody waits for the link (processing it would do nothing), and
the entry a step schedules last skips the heap when nothing else is due at or
before its time (it would be popped next anyway).
"""

from __future__ import annotations

import heapq
import itertools
import math
import struct
from array import array
from collections import deque
from heapq import heappop, heappush

import numpy as np

from ._model import Draws, Model, async_columns

__all__ = ["run_async_loop"]

# worker phases (what the worker is waiting for)
_REQ, _HOLD, _LAT, _COMP, _SRV, _APPLY = range(6)

#: events between two looks at the clock in the plain loop (with a time limit)
_SEGMENT = 4096


class _NoKernel:
    """Just enough of a kernel for :class:`Model` to build samplers and routes."""

    env = None
    Interrupt = Exception

    @staticmethod
    def resource():
        return None


def run_async_loop(sc, *, updates, until, progress=None):
    """Simulate an async scenario; returns ``(columns, sim_time, n_updates)``.

    Without a network the run goes to one of two loops with one int a heap
    entry: :func:`_run_plain` (zero apply time) or :func:`_run_server`; with
    one (the circuit transfer model), to the loop below."""
    m = Model(sc, _NoKernel(), updates=updates, until=until, progress=progress)
    n = m.n
    zero_apply = sc.server.apply.dist == "constant" and float(sc.server.apply.value) == 0.0
    stop_at = updates if updates is not None else -1
    # progress: every 1/200 of the updates, or with only a time stop the time
    # reached over it every _SEGMENT gradients
    if progress is not None and updates is not None:
        prog_every = max(1, math.ceil(updates / 200))

        def report(count: int, t: float) -> None:
            progress(min(1.0, count / updates))
    elif progress is not None and until is not None:
        prog_every = _SEGMENT

        def report(count: int, t: float) -> None:
            progress(min(1.0, t / until))
    else:
        prog_every, report = 0, None
    if m.network is None:
        run = _run_plain if zero_apply else _run_server
        return run(m, n, updates, until, report, stop_at, prog_every)
    apply_next = m.apply_next
    heap: list = []
    push = heappush
    pop = heappop
    normal = itertools.count(1 << 62).__next__
    routes = (m.pull_routes, m.push_routes)
    hops = (m.pull_hops, m.push_hops)
    n_links = len(m.links)
    l_user = [None] * n_links
    l_queue = [[] for _ in range(n_links)]

    # per-worker state (lists: 3.11 specialises their item access)
    phase = [0] * n
    direction = [0] * n   # 0: pulling, 1: pushing
    pos = [0] * n         # index of the link being requested
    cur_route = [None] * n  # the route of the transfer in progress
    t_read = [0.0] * n
    t_done = [0.0] * n
    s_queue: deque = deque()
    busy = False

    # typed growable columns (8 bytes a value, not a Python float's 32)
    rec_w, rec_tr, rec_td, rec_ta = array("i"), array("d"), array("d"), array("d")
    a_w, a_tr, a_td, a_ta = rec_w.append, rec_tr.append, rec_td.append, rec_ta.append
    count = 0
    next_prog = prog_every or -1
    check_at = min(x for x in (stop_at, next_prog, 1 << 62) if x > 0)
    horizon = until if until is not None else math.inf
    # The entry a step schedules *last* may skip the heap when nothing else is
    # due at or before its time: it would be popped next anyway (inlined for
    # performance; the order of events is unchanged).
    nxt_t = 0.0
    nxt_w = -1

    def sched(t: float, w: int) -> None:
        nonlocal nxt_t, nxt_w
        if heap and heap[0][0] <= t:
            push(heap, (t, normal(), w))
        else:
            nxt_t, nxt_w = t, w

    def latency(w: int, d: int) -> float:
        r = routes[d][w]
        lat = r.fixed_latency
        if lat is None:
            lat = 0.0
            for h in hops[d][w]:
                lat += h if h.__class__ is float else h()
        return lat

    def request(li: int, w: int, t: float) -> None:
        """Request link li for worker w (last action of a step)."""
        q = l_queue[li]
        if l_user[li] is None:  # SimPy grants the head of the queue: here w (q is empty)
            if q:  # pragma: no cover - a free link with waiters has a release event pending
                q.append(w)
                h = q.pop(0)
                l_user[li] = h
                push(heap, (t, normal(), h))
                return
            l_user[li] = w
            sched(t, w)
        else:
            q.append(w)

    def begin_transfer(w: int, d: int, t: float) -> bool:
        """Start worker w's pull (d = 0) or push (d = 1); False if it took no time."""
        r = cur_route[w] = routes[d][w]
        links = r.links
        direction[w] = d
        if links:
            pos[w] = 0
            phase[w] = _REQ
            request(links[0], w, t)
            return True
        lat = latency(w, d)
        if lat > 0.0:
            phase[w] = _LAT
            sched(t + lat, w)
            return True
        return False

    def draw(w: int) -> float:
        """Worker w's next compute time: the buffer's next value (Draws), refilled at its sentinel."""
        i = dpos[w]
        d = dbuf[i]
        if d < 0.0:
            i = refill(i)
            d = dbuf[i]
        dpos[w] = i + 1
        return d

    def start_compute(w: int, t: float) -> None:
        t_read[w] = t
        phase[w] = _COMP
        sched(t + draw(w), w)

    def after_push(w: int, t: float) -> None:
        nonlocal busy
        if busy:
            phase[w] = _SRV
            s_queue.append(w)
        else:
            busy = True
            start_apply(w, t)

    def start_apply(w: int, t: float) -> None:
        d = 0.0 if zero_apply else apply_next()
        if d > 0.0:
            phase[w] = _APPLY
            sched(t + d, w)
        else:
            finish_apply(w, t)

    class _Done(Exception):
        pass

    def checkpoint(t: float) -> None:
        nonlocal next_prog, check_at
        if count == next_prog:
            next_prog += prog_every
            report(count, t)
        if count == stop_at:
            raise _Done
        check_at = min(x for x in (stop_at, next_prog, 1 << 62) if x > count)

    def finish_apply(w: int, t: float) -> None:
        nonlocal busy, count
        a_w(w)
        a_tr(t_read[w])
        a_td(t_done[w])
        a_ta(t)
        count += 1
        if count == check_at:
            checkpoint(t)
        if s_queue:
            push(heap, (t, normal(), s_queue.popleft()))
        else:
            busy = False
        if not begin_transfer(w, 0, t):
            start_compute(w, t)

    dr = Draws(m.compute)
    dbuf, refill = dr.buf, dr.refill
    dpos = array("q", dr.starts())
    if until is not None:
        # the time limit is an entry after every other one at that time: nothing
        # later is popped, and nothing later takes the shortcut past the heap
        # (the loop does not look at the clock: inlined for performance)
        push(heap, (horizon, 1 << 63, -n_links - 1))
    try:
        for w in range(n):  # processes start in worker order at t = 0
            if not begin_transfer(w, 0, 0.0):
                start_compute(w, 0.0)
            if nxt_w >= 0:  # not the last action of the start-up: schedule normally
                push(heap, (nxt_t, normal(), nxt_w))
                nxt_w = -1
        while True:
            if nxt_w >= 0:
                t, w = nxt_t, nxt_w
                nxt_w = -1
            else:
                if not heap:
                    break
                t, key, w = pop(heap)
                if w < 0:  # a link's release event: grant the head of its queue
                    li = -w - 1
                    if li == n_links:  # the time limit
                        break
                    q = l_queue[li]
                    if q and l_user[li] is None:
                        h = q.pop(0)
                        l_user[li] = h
                        if heap and heap[0][0] <= t:  # sched(t, h) inlined
                            push(heap, (t, normal(), h))
                        else:
                            nxt_t, nxt_w = t, h
                    continue
            p = phase[w]
            # phases in order of frequency with a network: link grants, holds, latencies
            if p == _REQ:
                r = cur_route[w]
                links = r.links
                i = pos[w] + 1
                # a free link is granted at once; when nothing else is due by t the
                # grant is the next event, so the next link is requested right away
                # (inlined for performance: the order of events is unchanged)
                while i < len(links):
                    li = links[i]
                    if l_user[li] is None and not l_queue[li]:  # free: granted (request() inlined)
                        l_user[li] = w
                        if heap and heap[0][0] <= t:
                            pos[w] = i
                            push(heap, (t, normal(), w))
                            break
                        i += 1
                    else:
                        pos[w] = i
                        request(li, w, t)
                        break
                else:
                    phase[w] = _HOLD
                    t2 = t + r.hold
                    if heap and heap[0][0] <= t2:
                        push(heap, (t2, normal(), w))
                    else:
                        nxt_t, nxt_w = t2, w
            elif p == _HOLD:
                r = cur_route[w]
                for li in r.links:
                    l_user[li] = None
                    if l_queue[li]:  # a release with nobody waiting is a no-op event: skipped
                        push(heap, (t, normal(), -li - 1))
                lat = r.fixed_latency
                if lat is None:
                    lat = latency(w, direction[w])
                if lat > 0.0:
                    phase[w] = _LAT
                    t2 = t + lat
                    if heap and heap[0][0] <= t2:
                        push(heap, (t2, normal(), w))
                    else:
                        nxt_t, nxt_w = t2, w
                elif direction[w] == 0:
                    start_compute(w, t)
                else:
                    after_push(w, t)
            elif p == _LAT:
                if direction[w] == 0:  # pulled: start computing (start_compute inlined)
                    t_read[w] = t
                    phase[w] = _COMP
                    t2 = t + draw(w)
                    if heap and heap[0][0] <= t2:
                        push(heap, (t2, normal(), w))
                    else:
                        nxt_t, nxt_w = t2, w
                elif busy:  # pushed: the server is busy, queue (after_push inlined)
                    phase[w] = _SRV
                    s_queue.append(w)
                else:
                    busy = True
                    d = 0.0 if zero_apply else apply_next()
                    if d > 0.0:
                        phase[w] = _APPLY
                        sched(t + d, w)
                        continue
                    # finish_apply(w, t) inlined for performance (the network hot path)
                    a_w(w)
                    a_tr(t_read[w])
                    a_td(t_done[w])
                    a_ta(t)
                    count += 1
                    if count == check_at:
                        checkpoint(t)
                    if s_queue:
                        push(heap, (t, normal(), s_queue.popleft()))
                    else:
                        busy = False
                    r = cur_route[w] = routes[0][w]
                    links = r.links
                    if not links:
                        if not begin_transfer(w, 0, t):
                            start_compute(w, t)
                        continue
                    # begin the pull (begin_transfer and request inlined for a route with links)
                    direction[w] = 0
                    pos[w] = 0
                    phase[w] = _REQ
                    li = links[0]
                    if l_user[li] is None and not l_queue[li]:  # free: granted
                        l_user[li] = w
                        if heap and heap[0][0] <= t:
                            push(heap, (t, normal(), w))
                        else:
                            nxt_t, nxt_w = t, w
                    else:
                        request(li, w, t)
            elif p == _COMP:
                t_done[w] = t
                r = cur_route[w] = routes[1][w]
                links = r.links
                if links:  # start the push (begin_transfer and request inlined for the usual case)
                    direction[w] = 1
                    pos[w] = 0
                    phase[w] = _REQ
                    li = links[0]
                    if l_user[li] is None and not l_queue[li]:  # free: granted
                        l_user[li] = w
                        if heap and heap[0][0] <= t:
                            push(heap, (t, normal(), w))
                        else:
                            nxt_t, nxt_w = t, w
                    else:
                        request(li, w, t)
                    continue
                if not begin_transfer(w, 1, t):  # a push that takes no time
                    after_push(w, t)
            elif p == _APPLY:
                finish_apply(w, t)
            else:  # _SRV
                start_apply(w, t)
    except _Done:
        pass

    # the loop's state goes before the columns are made
    del heap, dr, dbuf, dpos, t_done, refill
    m.release()  # (the streams: nothing more is drawn)

    worker = _i32(rec_w)
    k = len(worker)
    step = np.arange(k, dtype=np.int64)
    # read_version: the pull starts right after the worker's own previous update
    # (version = its step + 1), or at t = 0 (version 0)
    rv = np.zeros(k, dtype=np.int64)
    if k:
        order = np.argsort(worker, kind="stable")
        same = np.concatenate([[False], worker[order][1:] == worker[order][:-1]])
        prev = np.concatenate([[0], order[:-1] + 1])
        rv[order] = np.where(same, prev, 0)
    cols = {"step": step, "worker": worker, "read_version": rv, "staleness": step - rv,
            "t_read": _f64(rec_tr), "t_done": _f64(rec_td), "t_applied": _f64(rec_ta)}
    return cols, _sim_time(rec_ta, count, stop_at, until), count


def _f64(a: array) -> np.ndarray:
    """A recorded ``array('d')`` as a float64 column (no copy)."""
    return np.frombuffer(a, dtype=np.float64) if len(a) else np.empty(0)


def _i32(a: array) -> np.ndarray:
    """A recorded ``array('i')`` as an int32 column (no copy)."""
    return np.frombuffer(a, dtype=np.int32) if len(a) else np.empty(0, np.int32)


def _sim_time(rec_ta: array, count: int, stop_at: int, until: float | None) -> float:
    """A loop's simulated time: its last apply at an updates stop, else the time stop."""
    if count == stop_at:
        return float(rec_ta[-1])
    if until is not None:
        return float(until)
    return float(rec_ta[-1]) if rec_ta else 0.0  # pragma: no cover - an updates stop always ends at stop_at


#: bits of an event's scheduling number in a plain-loop heap key (2**40 events: a run of more
#: would not fit in memory)
_SEQ_BITS = 40
#: a float whose bits are at least this is negative: a sentinel (times are never -0.0)
_SIGN = 1 << 63


def _run_plain(m, n, updates, until, report, stop_at, prog_every):
    """No network, zero apply time: a worker's gradient is applied the moment it is
    computed, so the loop is one heap entry per update. Only which entry each
    update popped is recorded; t_applied and the worker come afterwards from
    the buffer of times, t_read is the worker's previous apply (or 0) and
    t_done = t_applied.

    Inlined for performance and memory (no Python object per worker beyond its
    heap entry, no map from times to workers):

    * the workers' event times come ready-made in one flat buffer
      (:class:`._model.Draws` with ``times``: each worker's running sums, in
      chunks that end with a sentinel naming the worker), read as the floats'
      bit patterns; a worker's next time is the slot after its current one,
      or at its sentinel the first of the chunk :meth:`~._model.Draws.refill`
      appends;
    * a heap entry is one int, ``bits(time) << 40 | k`` for the ``k``-th event
      scheduled: ints compare as (time, scheduling order), exactly the
      generic kernel's (and SimPy's) order, ties included (a non-negative
      float's bits sort like the float). ``pushed[k]`` is the buffer
      position of the ``k``-th scheduled time.
    """
    dr = Draws(m.compute, times=True, bits=True)
    bits = dr.buf
    refill = dr.refill
    pushed = array("q", dr.starts())  # the buffer position of the k-th scheduled event
    shift, mask, sign = _SEQ_BITS, (1 << _SEQ_BITS) - 1, _SIGN
    heap = [bits[i] << shift | k for k, i in enumerate(pushed)]  # start-up, in worker order
    heapq.heapify(heap)
    rec = array("q")  # the scheduling number of the entry each update popped
    a_k = rec.append
    a_p = pushed.append
    seq = len(pushed)
    horizon = until if until is not None else math.inf
    horizon_key = math.inf if until is None else (int(np.float64(until).view(np.uint64)) + 1) << shift
    replace = heapq.heapreplace
    # The run in segments that end at a progress report, at the stop or (with
    # a time limit) every _SEGMENT events: the event loop itself keeps no
    # counter and does not look at the clock (inlined for performance). Past
    # the time limit, the records made after it are cut off; the extra draws
    # they used are never seen (streams are per worker).
    if stop_at > 0:
        marks = {stop_at}
        if prog_every:
            marks.update(range(prog_every, stop_at, prog_every))
        if until is not None:
            marks.update(range(_SEGMENT, stop_at, _SEGMENT))
        ends = sorted(marks)
    else:
        ends = itertools.count(_SEGMENT, _SEGMENT)
    count = 0
    key = 0
    for end in ends:
        # the whole async process is these lines (each worker has exactly one
        # pending event, so pop + push is one heapreplace)
        for _ in itertools.repeat(None, end - count):
            key = heap[0]
            k = key & mask
            a_k(k)
            i = pushed[k] + 1
            b = bits[i]
            if b >= sign:  # the worker's sentinel: its next chunk
                i = refill(i)
                b = bits[i]
            a_p(i)
            replace(heap, b << shift | seq)
            seq += 1
        count = end
        if key >= horizon_key or end == stop_at:
            break
        if prog_every and end % prog_every == 0:
            report(count, struct.unpack("<d", (key >> shift).to_bytes(8, "little"))[0])
    # the loop's state goes before the columns are made (the bound methods too)
    del heap, refill, a_k, a_p
    m.release()  # (the streams: nothing more is drawn)
    popped = np.frombuffer(rec, dtype=np.int64) if len(rec) else np.empty(0, np.int64)
    idx = np.frombuffer(pushed, dtype=np.int64)[popped]
    del popped, rec, pushed
    t_app = np.frombuffer(bits, dtype=np.float64)[idx]
    worker = dr.owners(idx)
    del idx, bits, dr
    if count and t_app[-1] > horizon:  # cut off the records past the time limit
        count = int(np.searchsorted(t_app, horizon, side="right"))
        worker, t_app = worker[:count], t_app[:count]
    cols = async_columns(worker, t_app.copy(), t_app)
    sim_time = float(t_app[-1]) if count == stop_at else float(until)
    return cols, sim_time, count


def _run_server(m, n, updates, until, report, stop_at, prog_every):
    """No network, an apply time: the worker's gradient waits for the server
    (FIFO) and takes the apply time there. The general loop's events in the
    same order, without its transfers' phases, with the plain loop's heap
    entries (one int each: the general loop's ``(time, key, worker)`` tuples
    cost about 130 bytes a pending event, this about 56):

    * an entry is ``bits(time) << SW | k << WB | code`` for the ``k``-th entry
      scheduled: ints compare as (time, scheduling order), the kernel's (and
      SimPy's) order, ties included; ``code`` < n resumes worker ``code``, n is
      the time limit (after everything else at its time: k all ones);
    * a time's bits go through a one-float buffer (``tb`` and ``tq`` are the
      same 8 bytes);
    * as in the general loop, the entry a step schedules last skips the heap
      when nothing else is due at or before its time (it would be popped next).

    Cost: O(log N) a gradient (two heap operations), 20 bytes a gradient for
    the three recorded columns, about 70 bytes a worker beside the draws.
    """
    dr = Draws(m.compute)
    dbuf, refill = dr.buf, dr.refill
    dpos = array("q", dr.starts())
    apply_next = m.apply_next
    WB = (n + 1).bit_length()
    SW = _SEQ_BITS + WB
    WM = (1 << WB) - 1
    nseq = itertools.count(0, 1 << WB).__next__  # k << WB for the k-th entry scheduled
    tb = array("d", [0.0])
    tq = memoryview(tb).cast("B").cast("Q")
    heap: list = []
    push, pop = heappush, heappop
    phase = bytearray([_COMP]) * n  # _COMP, _SRV or _APPLY
    t_done = array("d", bytes(8 * n))
    s_queue: deque = deque()
    busy = False
    rec_w, rec_td, rec_ta = array("i"), array("d"), array("d")
    a_w, a_td, a_ta = rec_w.append, rec_td.append, rec_ta.append
    count = 0
    next_prog = prog_every or -1
    check_at = min(x for x in (stop_at, next_prog, 1 << 62) if x > 0)
    if until is not None:
        tb[0] = until
        push(heap, tq[0] << SW | ((1 << _SEQ_BITS) - 1) << WB | n)
    for w in range(n):  # processes start in worker order at t = 0 (a first chunk holds a value)
        i = dpos[w]
        dpos[w] = i + 1
        tb[0] = 0.0 + dbuf[i]
        push(heap, tq[0] << SW | nseq() | w)
    nxt_w = -1
    nxt_t = 0.0
    nxt_b = 0
    while True:
        if nxt_w >= 0:
            t, tbits, w = nxt_t, nxt_b, nxt_w
            nxt_w = -1
        else:
            if not heap:
                break
            key = pop(heap)
            w = key & WM
            if w == n:  # the time limit
                break
            tq[0] = tbits = key >> SW
            t = tb[0]
        p = phase[w]
        if p == _COMP:  # computed: to the server
            t_done[w] = t
            if busy:
                phase[w] = _SRV
                s_queue.append(w)
                continue
            busy = True
            p = _SRV  # the server is its own at once
        if p == _SRV:  # the server is its own: the apply time
            d = apply_next()
            if d > 0.0:
                phase[w] = _APPLY
                t2 = t + d
                tb[0] = t2
                b = tq[0]
                if heap and heap[0] >> SW <= b:
                    push(heap, b << SW | nseq() | w)
                else:
                    nxt_t, nxt_b, nxt_w = t2, b, w
                continue
        # (_APPLY, or no apply time) the gradient is applied at t: record it, hand the
        # server over, compute again
        a_w(w)
        a_td(t_done[w])
        a_ta(t)
        count += 1
        if count == check_at:
            if count == next_prog:
                next_prog += prog_every
                report(count, t)
            if count == stop_at:
                break
            check_at = min(x for x in (stop_at, next_prog, 1 << 62) if x > count)
        if s_queue:
            push(heap, tbits << SW | nseq() | s_queue.popleft())
        else:
            busy = False
        phase[w] = _COMP
        i = dpos[w]
        d = dbuf[i]
        if d < 0.0:
            i = refill(i)
            d = dbuf[i]
        dpos[w] = i + 1
        t2 = t + d
        tb[0] = t2
        b = tq[0]
        if heap and heap[0] >> SW <= b:
            push(heap, b << SW | nseq() | w)
        else:
            nxt_t, nxt_b, nxt_w = t2, b, w
    # the loop's state goes before the columns are made
    del heap, dr, dbuf, dpos, t_done, refill, phase, s_queue
    m.release()  # (the streams: nothing more is drawn)

    cols = async_columns(_i32(rec_w), _f64(rec_td), _f64(rec_ta))
    return cols, _sim_time(rec_ta, count, stop_at, until), count
