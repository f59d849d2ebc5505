"""The fast event-driven engine: the policies' processes on a plain-Python heapq kernel.

:class:`HeapKernel` implements the handful of SimPy operations the policies
use (``timeout``, ``event``/``succeed``, ``process``, ``interrupt`` and a
capacity-1 FIFO resource) with SimPy's exact scheduling rules, so the
processes — the very same generator code the SimPy engine runs — see the same
events in the same order and the trace is identical bit for bit (every time
is computed by the same floating-point operations in the same order).

Scheduling rules mirrored from SimPy 4 (``simpy/core.py``, ``events.py``,
``resources/base.py``, ``resources/resource.py``):

* the queue is ordered by (time, priority, scheduling order); ``URGENT``
  (process start, interruption) before ``NORMAL`` at equal times;
* ``timeout(d)`` schedules at ``now + d``; ``succeed()`` at ``now``;
* yielding an event already processed continues at once; yielding one that
  is triggered but not yet processed waits for its turn;
* ``Resource.request()`` grants the head of the queue at once when free (the
  request event is scheduled at ``now``); ``release()`` schedules a release
  event at ``now`` whose processing grants the next queued request;
* ``interrupt()`` schedules an URGENT interruption at ``now`` that detaches the
  process from what it waits on and throws ``Interrupt`` into it.

Speed comes from what is left out: no Event objects for timeouts (the heap
entry points at the generator), no callback lists, no Initialize/Process
events, one type test per event.
"""

from __future__ import annotations

import itertools
import math
from heapq import heappop, heappush
from types import GeneratorType

from ._model import Model
from ._run import finish, prepare

__all__ = ["HeapKernel", "Interrupt", "run_heap"]

_NORMAL0 = 1 << 62  # NORMAL keys count up from here, URGENT keys from 0


class Interrupt(Exception):
    """Thrown into a process by :meth:`HeapKernel.interrupt` (like ``simpy.Interrupt``)."""

    @property
    def cause(self):
        return self.args[0] if self.args else None


class _Stop(Exception):
    """Raised by the model when the run's last update has been applied."""


class Event:
    """An event processes wait on; ``waiters`` is ``None`` once processed."""

    __slots__ = ("_k", "waiters", "triggered")

    def __init__(self, kernel: "HeapKernel"):
        self._k = kernel
        self.waiters: list | None = []
        self.triggered = False

    def succeed(self, value=None) -> "Event":
        if self.triggered:
            raise RuntimeError(f"{self!r} has already been triggered")
        self.triggered = True
        k = self._k
        heappush(k._heap, (k.now, k._normal(), self))
        return self


class Resource:
    """A FIFO resource of capacity 1 that schedules exactly like ``simpy.Resource(env, 1)``."""

    __slots__ = ("_k", "user", "queue")

    def __init__(self, kernel: "HeapKernel"):
        self._k = kernel
        self.user = None
        self.queue: list[Event] = []

    def request(self) -> Event:
        req = Event(self._k)
        self.queue.append(req)
        self._trigger_put()
        return req

    def _trigger_put(self) -> None:
        # SimPy's BaseResource._trigger_put with Resource._do_put: only the head of
        # the queue is examined; it is granted if the resource is free.
        q = self.queue
        if q and self.user is None:
            req = q.pop(0)
            self.user = req
            req.succeed()

    def release(self, req: Event) -> None:
        if self.user is req:
            self.user = None
        k = self._k
        # the Release event: processed at `now`, then the next request is granted
        heappush(k._heap, (k.now, k._normal(), self._trigger_put))


class HeapKernel:
    """A minimal SimPy-compatible kernel on ``heapq`` (see the module docstring)."""

    Interrupt = Interrupt

    def __init__(self):
        self.env = self
        self.now = 0.0
        self._heap: list = []
        self._normal = itertools.count(_NORMAL0).__next__
        self._urgent = itertools.count(0).__next__
        self._cancelled: set[int] = set()

    # ------------------------------------------------------- kernel interface
    #: ``yield env.timeout(d)`` yields the float ``d`` itself (inlined for
    #: performance: no Timeout object); the loop schedules ``now + d``.
    timeout = staticmethod(float)

    def event(self) -> Event:
        return Event(self)

    def process(self, gen):
        heappush(self._heap, (self.now, self._urgent(), gen))
        return gen

    def resource(self) -> Resource:
        return Resource(self)

    def interrupt(self, gen, cause=None) -> None:
        heappush(self._heap, (self.now, self._urgent(), lambda: self._interrupt(gen, cause)))

    @staticmethod
    def cancel(resource, req) -> None:
        """Withdraw a request not yet granted (``simpy.Request.cancel``)."""
        if not req.triggered:
            resource.queue.remove(req)

    def _interrupt(self, gen, cause=None) -> None:
        if gen.gi_frame is None:  # finished
            return
        cancelled = self._cancelled
        for entry in self._heap:  # detach it from its pending timeout
            if entry[2] is gen and entry[1] not in cancelled:
                cancelled.add(entry[1])
                break
        else:
            self._detach(gen)
        try:
            y = gen.throw(Interrupt(cause))
        except StopIteration:
            return
        if y is not None:
            self._wait(gen, y)

    def _detach(self, gen) -> None:  # pragma: no cover - the policies interrupt only during a timeout
        raise NotImplementedError("interrupting a process that waits on an event")

    def _wait(self, gen, y) -> None:
        """``gen`` yielded ``y``: a delay (float) or an event to wait for; an event
        already processed lets it go on at once."""
        while True:
            if type(y) is float:
                heappush(self._heap, (self.now + y, self._normal(), gen))
                return
            if y.waiters is not None:
                y.waiters.append(gen)
                return
            try:
                y = gen.send(None)
            except StopIteration:
                return

    # ------------------------------------------------------------------- loop
    def run(self, until: float = math.inf) -> None:
        """Process every event with time <= ``until`` (or until a :class:`_Stop`)."""
        heap = self._heap
        pop = heappop
        push = heappush
        normal = self._normal
        gen_t = GeneratorType
        ev_t = Event
        cancelled = self._cancelled
        wait = self._wait
        # inlined for performance: one loop, one type test per event
        while heap:
            t, key, target = pop(heap)
            if t > until:
                heappush(heap, (t, key, target))
                return
            self.now = t
            tt = type(target)
            if tt is gen_t:
                if cancelled and key in cancelled:
                    cancelled.discard(key)
                    continue
                try:
                    y = target.send(None)
                except StopIteration:
                    continue
                if type(y) is float:
                    push(heap, (t + y, normal(), target))
                else:
                    wait(target, y)
            elif tt is ev_t:
                ws = target.waiters
                target.waiters = None
                for g in ws:
                    try:
                        y = g.send(None)
                    except StopIteration:
                        continue
                    wait(g, y)
            else:
                target()

    def peek(self) -> float:
        return self._heap[0][0] if self._heap else math.inf

    def release(self, procs) -> None:
        """After the run: empty the queue, so the processes (a generator and the
        kernel refer to each other through it) are freed at once. O(events)."""
        self._heap.clear()


class FaultHeapKernel(HeapKernel):
    """:class:`HeapKernel` that remembers which event each process waits on, so a
    crash can interrupt a process queued for a link (SimPy removes the process
    from its target's callbacks; here it leaves the event's waiter list). Used
    only for scenarios with faults, keeping the plain kernel's wait path lean."""

    def __init__(self):
        super().__init__()
        self._target: dict = {}

    def _detach(self, gen) -> None:
        ev = self._target.get(gen)
        if ev is None or ev.waiters is None or gen not in ev.waiters:  # pragma: no cover - defensive
            raise RuntimeError("interrupted process waits on nothing")
        ev.waiters.remove(gen)

    def _wait(self, gen, y) -> None:
        while True:
            if type(y) is float:
                heappush(self._heap, (self.now + y, self._normal(), gen))
                return
            if y.waiters is not None:
                y.waiters.append(gen)
                self._target[gen] = y
                return
            try:
                y = gen.send(None)
            except StopIteration:
                return


def _raise_stop() -> None:
    raise _Stop


def run_heap(sc, *, updates, until, progress=None):
    """Simulate ``sc`` on the heapq kernel; same result as the SimPy engine.

    ``async`` (and ``k_async`` with K = 1) without a network or with the
    circuit transfer model run on a hand-written loop that mirrors the kernel
    event for event (:mod:`._heap_async`); everything else runs the policy's
    processes on :class:`HeapKernel`."""
    from ..policies import KAsync

    policy = prepare(sc)
    circuit = sc.network is None or sc.network.sharing == "circuit"
    if isinstance(policy, KAsync) and policy.k == 1 and not sc.faults and circuit:
        from ._heap_async import run_async_loop

        return run_async_loop(sc, updates=updates, until=until, progress=progress)
    kernel = FaultHeapKernel() if sc.faults else HeapKernel()
    m = Model(sc, kernel, updates=updates, until=until, progress=progress)
    m.stop_cb = _raise_stop
    policy.start(m)
    m.start_faults(policy)
    try:
        if until is None:
            kernel.run()
        else:
            chunks = 200 if progress is not None else 1
            for i in range(1, chunks + 1):
                kernel.run(until * i / chunks if i < chunks else until)
                if progress is not None:
                    progress(i / chunks)
    except _Stop:
        pass
    return finish(m)
