"""The reference engine: the policies' processes on SimPy.

Readable first: every worker is a SimPy process, every link direction a
``simpy.Resource(capacity=1)`` (FIFO), the server a FIFO lock (capacity 1)
that is taken without an event when free. Ties between events at the same
time follow SimPy's ``(time, priority, event id)`` order.
"""

from __future__ import annotations

import simpy

from ._model import Model
from ._run import finish, prepare

__all__ = ["run_simpy", "SimpyKernel"]


class SimpyKernel:
    """The kernel interface of :class:`~asyncsim.engine._model.Model` on SimPy."""

    Interrupt = simpy.Interrupt

    def __init__(self):
        self.env = simpy.Environment()

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
        queue = getattr(self.env, "_queue", None)
        if isinstance(queue, list):
            queue.clear()


def run_simpy(sc, *, updates, until, progress=None):
    """Simulate ``sc`` on SimPy; returns ``(columns, sim_time, n_updates)``."""
    kernel = SimpyKernel()
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
