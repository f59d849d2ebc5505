"""K-async SGD: any K arrived gradients make one update (A-SGD is K = 1: asynchronous.py)."""

from __future__ import annotations

from array import array

from .base import Policy, register

__all__ = ["KAsync"]


@register
class KAsync(Policy):
    """``k_async`` (``k: K``): any K arrived gradients make one update (their mean).

    Gradients are batched in arrival order: the K-th arrival closes a batch,
    which then queues for the server (FIFO) and is applied with one apply-time
    draw. A worker whose push does not close a batch is acknowledged at once
    and pulls the current version immediately; the worker whose push closes a
    batch is acknowledged after that batch has been applied. With K = 1 this
    is exactly :class:`Async`.
    """

    kind = "k_async"

    def __init__(self, scenario):
        super().__init__(scenario)
        self.k = self._k()
        self.pending: list = []

    def _k(self) -> int:
        return int(self.spec.k)

    def start(self, m) -> None:
        # Without transfers, async rows can be recorded as (worker, t_done, t_applied)
        # and the rest derived (asyncsim.engine._model.async_columns).
        m.async_compact = self.k == 1 and m.network is None and m.faults is None
        if not m.async_compact:
            super().start(m)
        elif not self._start_calendar(m):
            m.procs = [m.env.process(self._worker_plain(m, w)) for w in range(self.n)]

    def _start_calendar(self, m) -> bool:
        """:meth:`_worker_plain`'s events, in the same order, with each computing
        worker an entry of the kernel's compute calendar
        (:class:`~asyncsim.engine.simpy_engine.ComputeCalendar`) rather than a
        suspended process: the process's steps become callbacks of the events it
        would have waited for (its compute, the server's hand-over, the apply
        time). False (nothing started) if the kernel has no calendar.
        Cost: about 70 bytes a worker (its calendar entry and buffer position)."""
        calendar = getattr(m.kernel, "calendar", None)
        if calendar is None or not m.kernel.use_calendar(self.n):
            return False
        env = m.env
        timeout, event = env.timeout, env.event
        apply_next = m.apply_next
        queue = m.server_queue
        buf, refill = m.draws.buf, m.draws.refill
        pos = array("q", m.draws.starts())  # each worker's buffer position of its next compute time
        a_w, a_td, a_ta = m.appenders[1], m.appenders[4], m.appenders[5]

        def computed(w: int) -> None:  # its compute time is over: to the server
            t_done = env._now
            if m.server_busy:
                ev = event()
                ev.callbacks.append(lambda _ev: serve(w, t_done))
                queue.append(ev)
                return
            m.server_busy = True
            serve(w, t_done)

        def serve(w: int, t_done: float) -> None:  # handed the server: the apply time
            d = apply_next()
            if d > 0.0:
                timeout(d).callbacks.append(lambda _ev: applied(w, t_done))
            else:
                applied(w, t_done)

        def applied(w: int, t_done: float) -> None:
            now = env._now
            if not m.done:
                a_w(w)
                a_td(t_done)
                a_ta(now)
                d = m.version + 1
                m.version = d
                if d == m.check_at:
                    m.checkpoint(d, now)
            if queue:
                queue.popleft().succeed()
            else:
                m.server_busy = False
            i = pos[w]  # (yield timeout(d) for its next compute time)
            d = buf[i]
            if d < 0.0:  # the end of its chunk
                i = refill(i)
                d = buf[i]
            pos[w] = i + 1
            sleep(w, d)

        sleep = calendar(self.n, computed).sleep
        for w in range(self.n):  # each process's first step, in worker order (a first chunk holds a value)
            i = pos[w]
            pos[w] = i + 1
            sleep(w, buf[i])
        return True

    def _worker_plain(self, m, w):
        """:meth:`worker` for K = 1 without a network, inlined for performance
        (the same events in the same order; it records three columns). The
        worker's compute times are read from the run's buffer at the position
        it keeps (:class:`~asyncsim.engine._model.Draws`: no object per worker;
        a process's frame, 8 bytes a local, is most of what a worker costs)."""
        env = m.env
        timeout = env.timeout
        buf, refill = m.draws.buf, m.draws.refill
        i = m.draws.start(w)  # the buffer position of its next compute time
        a_w, a_td, a_ta = m.appenders[1], m.appenders[4], m.appenders[5]
        while True:
            d = buf[i]
            if d < 0.0:  # the end of its chunk
                i = refill(i)
                d = buf[i]
            i += 1
            yield timeout(d)
            t_done = env.now
            if m.server_busy:
                ev = env.event()
                m.server_queue.append(ev)
                yield ev
                ev = None  # (the frame would keep the event)
                now = env.now
            else:
                m.server_busy = True
                now = t_done
            d = m.apply_next()
            if d > 0.0:
                yield timeout(d)
                now = env.now
            if not m.done:
                a_w(w)
                a_td(t_done)
                a_ta(now)
                d = m.version + 1
                m.version = d
                if d == m.check_at:
                    m.checkpoint(d, now)
            if m.server_queue:
                m.server_queue.popleft().succeed()
            else:
                m.server_busy = False

    def worker(self, m, w):
        env = m.env
        timeout = env.timeout
        comp = m.compute_next[w]
        apply_next = m.apply_next
        pull, pull_hops, push, push_hops = m.routes(w)
        k = self.k
        pending = self.pending
        queue = m.server_queue
        a_step, a_w, a_rv, a_tr, a_td, a_ta = m.appenders
        compact = m.async_compact
        faulty = m.faults is not None
        work = self.work_with_faults
        now = env.now
        while True:
            if faulty:
                r = yield from work(m, w, comp, pull, pull_hops, push, push_hops)
                if r is None:  # crashed: start over once back up
                    continue
                rv, t_read, t_done = r
            else:
                rv = m.version                      # the server sends its current version
                if pull is not None:
                    yield from m.transfer(w, pull, pull_hops)
                    t_read = env.now
                else:
                    t_read = now                    # the ack time (inlined for performance)
                yield timeout(comp())
                t_done = env.now
                if push is not None:
                    yield from m.transfer(w, push, push_hops)
            # the gradient has arrived at the server: a crash from here on loses nothing
            if k == 1:
                # inlined for performance: acquire the server, apply, record, release
                if m.server_busy:
                    ev = env.event()
                    queue.append(ev)
                    yield ev
                else:
                    m.server_busy = True
                d = apply_next()
                if d > 0.0:
                    yield timeout(d)
                # record the row and advance the version (inlined Model.applied)
                now = env.now
                if not m.done:
                    step = m.version
                    if compact:  # step, read_version and t_read follow from these
                        a_w(w)
                        a_td(t_done)
                        a_ta(now)
                    else:
                        a_step(step)
                        a_w(w)
                        a_rv(rv)
                        a_tr(t_read)
                        a_td(t_done)
                        a_ta(now)
                    step += 1
                    m.version = step
                    if step == m.check_at:
                        m.checkpoint(step, now)
                if queue:
                    queue.popleft().succeed()
                else:
                    m.server_busy = False
            else:
                pending.append((w, rv, t_read, t_done))
                now = env.now
                if len(pending) == k:
                    rows = pending[:]
                    pending.clear()
                    if m.server_busy:
                        ev = env.event()
                        queue.append(ev)
                        yield ev
                    else:
                        m.server_busy = True
                    d = apply_next()
                    if d > 0.0:
                        yield timeout(d)
                    now = env.now
                    m.applied(rows, now)
                    if queue:
                        queue.popleft().succeed()
                    else:
                        m.server_busy = False
