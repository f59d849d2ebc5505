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
    """

    kind = "round_robin"

    def __init__(self, scenario):
        super().__init__(scenario)
        self.turn = 0
        self.waiting = [None] * self.n

    def worker(self, m, w):
        env = m.env
        timeout = env.timeout
        comp = m.compute_next[w]
        apply_next = m.apply_next
        pull, push = m.pull_routes[w], m.push_routes[w]
        pull_hops = m.pull_hops[w] if pull is not None else None
        push_hops = m.push_hops[w] if push is not None else None
        n = self.n
        waiting = self.waiting
        while True:
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
