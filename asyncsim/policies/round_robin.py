"""Round-robin server: the seed paper's constant-delay model."""

from __future__ import annotations

from .base import Policy, register

__all__ = ["RoundRobin"]


@register
class RoundRobin(Policy):
    """``round_robin``: the server takes gradients in the fixed worker order
    0, 1, ..., N−1, 0, ...

    A worker whose gradient arrives before its turn waits (its push is
    acknowledged only after its turn's apply), then pulls. All workers start
    from version 0, so the first N − 1 updates have staleness equal to their
    step (warm-up) and every later gradient has staleness exactly N − 1
    (Giladi et al. 2020, the constant-delay model τ = N − 1).

    Faults: the turn passes over a worker that is down and has no gradient
    waiting at the server (at its crash if it holds the turn, and whenever the
    turn moves on); a gradient that reached the server before its worker
    crashed is still applied at its turn.
    """

    kind = "round_robin"

    def __init__(self, scenario):
        super().__init__(scenario)
        self.turn = 0
        self.waiting = [None] * self.n
        #: faults: the turn's holder has been let through and not yet applied
        self.serving = False

    def _settle(self, m) -> None:
        """Faults: move the turn past absent workers (down, nothing at the server);
        release the holder's waiting gradient if there is one."""
        n = self.n
        for _ in range(n):
            j = self.turn
            ev = self.waiting[j]
            if ev is not None:
                self.waiting[j] = None
                self.serving = True
                ev.succeed()
                return
            if not m.down[j]:
                return
            self.turn = (j + 1) % n

    def on_crash(self, m, w: int) -> None:
        if not self.serving:
            self._settle(m)

    def on_up(self, m, w: int) -> None:
        if not self.serving:
            self._settle(m)

    def worker(self, m, w):
        env = m.env
        timeout = env.timeout
        comp = m.compute_next[w]
        apply_next = m.apply_next
        pull, pull_hops, push, push_hops = m.routes(w)
        n = self.n
        waiting = self.waiting
        faulty = m.faults is not None
        while True:
            if faulty:
                r = yield from self.work_with_faults(m, w, comp, pull, pull_hops, push, push_hops)
                if r is None:  # crashed: start over once back up
                    continue
                rv, t_read, t_done = r
                if self.turn != w or self.serving:
                    ev = env.event()
                    waiting[w] = ev
                    yield ev
                self.serving = True
                yield from m.acquire_server()
                d = apply_next()
                if d > 0.0:
                    yield timeout(d)
                m.applied1(w, rv, t_read, t_done, env.now)
                m.release_server()
                self.serving = False
                self.turn = (w + 1) % n
                self._settle(m)
                continue
            rv = m.version
            if pull is not None:
                yield from m.transfer(w, pull, pull_hops)
            t_read = env.now
            yield timeout(comp())
            t_done = env.now
            if push is not None:
                yield from m.transfer(w, push, push_hops)
            if self.turn != w:
                ev = env.event()
                waiting[w] = ev
                yield ev
            # Our turn: the previous turn's apply has finished, so the server is free.
            yield from m.acquire_server()
            d = apply_next()
            if d > 0.0:
                yield timeout(d)
            m.applied1(w, rv, t_read, t_done, env.now)
            m.release_server()
            nxt = (w + 1) % n
            self.turn = nxt
            ev = waiting[nxt]
            if ev is not None:
                waiting[nxt] = None
                ev.succeed()
