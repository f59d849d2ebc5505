"""Stale-synchronous parallel."""

from __future__ import annotations

from .base import Policy, register

__all__ = ["SSP"]


@register
class SSP(Policy):
    """``ssp`` (``bound: s``): asynchronous SGD where no worker runs more than s
    clocks ahead of the slowest.

    Worker w's clock c_w is the number of its gradients applied so far; it
    computes its gradient number c (0-based) at clock c. Before starting clock
    c — before its pull — it waits until every worker has had at least c − s
    gradients applied (min_j c_j ≥ c − s). With s = 0 no worker starts a new
    gradient before all others have caught up. Otherwise exactly like
    ``async`` (FIFO server, push acknowledged after the apply).
    """

    kind = "ssp"

    def __init__(self, scenario):
        super().__init__(scenario)
        self.s = int(self.spec.bound)
        self.clock = [0] * self.n
        self.min_clock = 0
        self.at_min = self.n
        self.gate = None

    def start(self, m) -> None:
        self.gate = m.env.event()
        super().start(m)

    def _live_min(self, m) -> None:
        """Faults: recompute the minimum clock over live workers; open the gate if it rose."""
        live = [c for c, d in zip(self.clock, m.down) if not d]
        new = min(live) if live else 1 << 62
        old = self.min_clock
        self.min_clock = new
        if new > old:
            gate = self.gate
            self.gate = m.env.event()
            gate.succeed()

    def on_crash(self, m, w: int) -> None:
        self._live_min(m)

    def on_up(self, m, w: int) -> None:
        others = [c for j, (c, d) in enumerate(zip(self.clock, m.down)) if not d and j != w]
        if others:
            self.clock[w] = max(self.clock[w], min(others))
        self._live_min(m)

    def _tick(self, m, w: int) -> None:
        """Worker w's gradient was applied: advance its clock and maybe the minimum."""
        if m.faults is not None:
            self.clock[w] += 1
            self._live_min(m)
            return
        c = self.clock[w]
        self.clock[w] = c + 1
        if c == self.min_clock:
            self.at_min -= 1
            if self.at_min == 0:
                self.min_clock += 1
                self.at_min = sum(1 for x in self.clock if x == self.min_clock)
                gate = self.gate
                self.gate = m.env.event()
                gate.succeed()

    def worker(self, m, w):
        env = m.env
        timeout = env.timeout
        comp = m.compute_next[w]
        apply_next = m.apply_next
        pull, pull_hops, push, push_hops = m.routes(w)
        s = self.s
        clock = self.clock
        faulty = m.faults is not None
        while True:
            if faulty:
                while True:
                    while m.down[w]:
                        yield m.up_ev[w]
                    while self.min_clock < clock[w] - s:
                        yield self.gate
                    if not m.down[w]:
                        break
                r = yield from self.work_with_faults(m, w, comp, pull, pull_hops, push, push_hops)
                if r is None:  # crashed: start over once back up
                    continue
                rv, t_read, t_done = r
            else:
                while self.min_clock < clock[w] - s:
                    yield self.gate
                rv = m.version
                if pull is not None:
                    yield from m.transfer(w, pull, pull_hops)
                t_read = env.now
                yield timeout(comp())
                t_done = env.now
                if push is not None:
                    yield from m.transfer(w, push, push_hops)
            yield from m.acquire_server()
            d = apply_next()
            if d > 0.0:
                yield timeout(d)
            m.applied1(w, rv, t_read, t_done, env.now)
            self._tick(m, w)
            m.release_server()
