"""The reference engine: the policies' processes on SimPy.

Readable first: every worker is a SimPy process, every link direction a
``simpy.Resource(capacity=1)`` (FIFO), the server a FIFO lock (capacity 1)
that is taken without an event when free. Ties between events at the same
time follow SimPy's ``(time, priority, event id)`` order.

One exception, for memory: A-SGD without transfers or faults (the policies'
``_worker_plain``) keeps a computing worker as one entry of a
:class:`ComputeCalendar` instead of a suspended process. A process per
worker costs about 800 bytes while it waits (generator, frame, Process,
Timeout, queue entry), five times a short run's trace per worker at 32,768
workers; the calendar's entry costs about 60. The events and their order are
SimPy's own (tests/test_simpy_calendar.py runs both forms).
"""

from __future__ import annotations

import heapq
from array import array

import simpy
from simpy.events import NORMAL, Event

from ._model import Model
from ._run import finish, prepare

__all__ = ["run_simpy", "SimpyKernel"]


#: bits of an event id in a calendar key (2**40 events: a run of more would not fit in memory)
_EID_BITS = 40


class ComputeCalendar:
    """Workers waiting for a delay to pass (their computation), as one int each
    rather than a SimPy process and Timeout each, in SimPy's own event order.

    ``sleep(w, d)`` does what ``yield env.timeout(d)`` does for a process:
    it takes the next event id from the environment, so the wake-up is the
    event ``(now + d, NORMAL, id)`` exactly as the Timeout would have been, and
    at that event ``wake(w)`` is called, as the process would have resumed.
    The entries wait in the calendar, a heap of ints ``bits(time) << SW |
    id << WB | w`` (ints compare as (time, id): a non-negative float's bits
    sort like the float), and only the earliest one is always in SimPy's
    queue, with that time and id: the one SimPy would process next among
    them. Those queued are a stack (each was the earliest when it was
    queued), so when one is processed the next earliest is queued unless it
    already is. Every queued entry names the same plain event, whose
    callback list is put back each time it is processed (SimPy empties it):
    no object is made a wake-up. ``sleep`` and the wake-up are closures over
    the calendar's state (inlined for performance: no attribute lookups).

    Cost: O(log N) a sleep, about 56 bytes a sleeping worker."""

    def __init__(self, env: simpy.Environment, n: int, wake):
        self._wake = hook = [wake]  # (a list: clear() drops it)
        self.heap = heap = []  # the sleeping workers' keys
        queued: list[int] = []  # keys with an entry in SimPy's queue, latest (earliest time) last
        self.queued = queued
        ev = Event(env)
        ev._ok, ev._value = True, None
        tb = array("d", [0.0])
        tq = memoryview(tb).cast("B").cast("Q")  # the same 8 bytes: a float's bits
        wb = max(n, 1).bit_length()
        sw, wm, em = _EID_BITS + wb, (1 << wb) - 1, (1 << _EID_BITS) - 1
        eids, queue = env._eid, env._queue
        push, pop = heapq.heappush, heapq.heappop

        def sleep(w: int, delay: float) -> None:
            """Worker ``w`` waits ``delay`` (``yield env.timeout(delay)`` of its process)."""
            t = env._now + delay
            eid = next(eids)
            tb[0] = t
            key = tq[0] << sw | eid << wb | w
            push(heap, key)
            if heap[0] == key:  # the earliest now: SimPy must see it
                ev.callbacks = cb
                push(queue, (t, NORMAL, eid, ev))
                queued.append(key)

        def fire(_ev) -> None:
            ev.callbacks = cb  # (SimPy set it to None: the event is queued again, or will be)
            key = pop(heap)  # this entry: the earliest of all SimPy's events
            queued.pop()
            if heap:
                nxt = heap[0]
                if not queued or queued[-1] != nxt:
                    tq[0] = nxt >> sw
                    push(queue, (tb[0], NORMAL, (nxt >> wb) & em, ev))
                    queued.append(nxt)
            hook[0](key & wm)

        self._cb = cb = [fire]
        self.sleep = sleep

    def clear(self) -> None:
        """After the run: drop the entries and the wake-up callback (a closure over
        the run's state: it would keep the draws alive until a garbage collection),
        and the shared event's callback list (it and ``fire`` refer to each other)."""
        self.heap.clear()
        self.queued.clear()
        self._wake[0] = None
        self._cb.clear()


def _wake_order(delays: list[list[float]], noise: list[float], calendar: bool) -> list[tuple]:
    """Sleepers each waiting through their list of delays, beside a process that
    waits through ``noise`` (other events at the same times): the order of all
    wake-ups, as (time, who, k). The sleepers are processes on timeouts or, with
    ``calendar``, a :class:`ComputeCalendar`'s entries started from an urgent
    event at t = 0 each (as a process's Initialize is). The two orders are the
    same where the calendar follows SimPy's (:func:`calendar_matches_simpy`)."""
    env = simpy.Environment()
    log: list[tuple] = []

    def other():
        for k, d in enumerate(noise):
            yield env.timeout(d)
            log.append((env.now, "noise", k))

    env.process(other())
    if calendar:
        step = [0] * len(delays)

        def wake(w):
            log.append((env.now, w, step[w]))
            step[w] += 1
            if step[w] < len(delays[w]):
                cal.sleep(w, delays[w][step[w]])

        cal = ComputeCalendar(env, len(delays), wake)
        for w, ds in enumerate(delays):
            ev = Event(env)
            ev._ok, ev._value = True, None
            ev.callbacks.append(lambda _ev, w=w, ds=ds: cal.sleep(w, ds[0]))
            env.schedule(ev, simpy.events.URGENT)
    else:
        def sleeper(w, ds):
            for k, d in enumerate(ds):
                yield env.timeout(d)
                log.append((env.now, w, k))

        for w, ds in enumerate(delays):
            env.process(sleeper(w, ds))
    env.run()
    return log


_calendar_ok: bool | None = None


def calendar_matches_simpy() -> bool:
    """Whether :class:`ComputeCalendar` orders events as this SimPy does: it writes
    SimPy's queue and takes its event ids itself (``env._queue``, ``env._eid``),
    so it is checked once per process on a fixed pattern of tied and zero
    delays against processes on timeouts (0.3 ms); where it fails or
    SimPy's internals differ, the engine keeps a process per worker."""
    global _calendar_ok
    if _calendar_ok is None:
        delays = [[(3 * w + k) % 4 * 0.5 for k in range(6)] for w in range(9)]
        noise = [0.5, 0.0, 1.0, 0.5, 0.0, 1.5]
        try:
            _calendar_ok = _wake_order(delays, noise, True) == _wake_order(delays, noise, False)
        except Exception:  # pragma: no cover - another SimPy's internals
            _calendar_ok = False
    return _calendar_ok


#: from this many workers the policies that can keep computing workers in a
#: :class:`ComputeCalendar` do (the measured crossover: below it a process per
#: worker is faster, above it the calendar is: 0.99-1.06x at 512 workers, 1.2-1.3x at
#: 2,048, 2.6-3.2x at 32,768;
#: benchmarks/bench_bound.py --calendar)
CALENDAR_WORKERS = 512


class SimpyKernel:
    """The kernel interface of :class:`~asyncsim.engine._model.Model` on SimPy.

    ``calendar``: whether the policies that can keep computing workers in a
    :class:`ComputeCalendar` do (True, False: a process per worker
    throughout; None: from :data:`CALENDAR_WORKERS` workers)."""

    Interrupt = simpy.Interrupt

    def __init__(self, calendar: bool | None = None):
        self.env = simpy.Environment()
        self.calendar_mode = calendar
        self.calendars: list[ComputeCalendar] = []

    def use_calendar(self, n: int) -> bool:
        """Whether a policy with ``n`` workers should use :meth:`calendar` (never
        where :func:`calendar_matches_simpy` fails)."""
        want = n >= CALENDAR_WORKERS if self.calendar_mode is None else bool(self.calendar_mode)
        return want and calendar_matches_simpy()

    def calendar(self, n: int, wake) -> ComputeCalendar:
        """A :class:`ComputeCalendar` for ``n`` workers calling ``wake(w)``."""
        cal = ComputeCalendar(self.env, n, wake)
        self.calendars.append(cal)
        return cal

    def resource(self):
        return simpy.Resource(self.env, capacity=1)

    @staticmethod
    def interrupt(proc, cause=None) -> None:
        proc.interrupt(cause)

    @staticmethod
    def cancel(resource, req) -> None:
        """Withdraw a request not yet granted."""
        req.cancel()

    def release(self, procs) -> None:
        """After the run: a waiting process and the event it waits on refer to each
        other (``Process.target``, the event's ``callbacks``); cut that and empty the
        event queue so the processes are freed at once (32,768 of them hold about
        30 MB) instead of by a later garbage collection. O(processes)."""
        for p in procs:
            ev = p.target
            if ev is not None:
                ev.callbacks = None
        for cal in self.calendars:
            cal.clear()
        queue = getattr(self.env, "_queue", None)
        if isinstance(queue, list):
            queue.clear()


def run_simpy(sc, *, updates, until, progress=None, calendar: bool | None = None):
    """Simulate ``sc`` on SimPy; returns ``(columns, sim_time, n_updates)``.
    ``calendar``: see :class:`SimpyKernel` (the same trace either way)."""
    kernel = SimpyKernel(calendar)
    env = kernel.env
    m = Model(sc, kernel, updates=updates, until=until, progress=progress)
    policy = prepare(sc)
    stop = env.event()
    m.stop_cb = stop.succeed
    policy.start(m)
    m.start_faults(policy)
    if until is None:
        try:
            env.run(until=stop)
        except RuntimeError:
            # "No scheduled events left but until event was not triggered": the
            # cluster stalled (faults); anything else is a real error
            if env.peek() != float("inf"):
                raise
    elif updates is not None:
        # both stops: whichever comes first
        step, peek = env.step, env.peek
        while not m.done and peek() <= until:
            step()
    else:
        # a stall (faults) ends the run early: stop env.run(until=t) at the stop event
        stop.callbacks.append(simpy.core.StopSimulation.callback)
        # Events at exactly `until` are processed (run(until=t) stops before them).
        chunks = 200 if progress is not None else 1
        for i in range(1, chunks + 1):
            t = until * i / chunks
            if m.done:
                break
            if t > env.now:
                env.run(until=min(t, until))
            if progress is not None:
                progress(i / chunks)
        while not m.done and env.peek() <= until:
            env.step()
    return finish(m)
