"""Synchronous SGD and synchronous SGD with backup workers."""

from __future__ import annotations

from .base import Policy, register

__all__ = ["Backup", "Sync"]


@register
class Backup(Policy):
    """``backup`` (``aggregate: K``): each round, the first K gradients to arrive
    make the update; the other N − K are dropped.

    Round v: every worker pulls version v and computes. When the K-th gradient
    of round v *arrives* at the server the round closes: every worker still
    computing is preempted at that instant (its row is recorded dropped with
    t_done = the preemption time; its compute draw is consumed), the server
    applies the K gradients (one apply draw; rows in arrival order), and then
    every waiting worker pulls the new version. A worker whose push was in
    flight when the round closed finishes the push; its row is dropped on
    arrival (t_done = its real compute end) and it pulls as soon as the new
    version exists.
    """

    kind = "backup"

    def __init__(self, scenario):
        super().__init__(scenario)
        self.k = self._k()
        self.arrived: list = []
        self.open = True
        self.round_ev = None
        n = self.n
        self.computing = [False] * n
        self.cur_rv = [0] * n
        self.cur_tread = [0.0] * n

    def _k(self) -> int:
        return int(self.spec.aggregate)

    def start(self, m) -> None:
        self.round_ev = m.env.event()
        super().start(m)

    def worker(self, m, w):
        env = m.env
        timeout = env.timeout
        comp = m.compute_next[w]
        pull, push = m.pull_routes[w], m.push_routes[w]
        pull_hops = m.pull_hops[w] if pull is not None else None
        push_hops = m.push_hops[w] if push is not None else None
        k = self.k
        n = self.n
        computing = self.computing
        Interrupt = m.kernel.Interrupt
        interrupt = m.kernel.interrupt
        while True:
            rv = m.version
            if pull is not None:
                yield from m.transfer(w, pull, pull_hops)
            t_read = env.now
            self.cur_rv[w] = rv
            self.cur_tread[w] = t_read
            computing[w] = True
            try:
                yield timeout(comp())
            except Interrupt:
                # Preempted: the closing worker recorded our row; wait for the new version.
                if m.version == rv:
                    yield self.round_ev
                continue
            computing[w] = False
            t_done = env.now
            if push is not None:
                yield from m.transfer(w, push, push_hops)
            if not (self.open and m.version == rv):
                # Late: the round closed while we were pushing.
                m.dropped(w, rv, t_read, t_done)
                if m.version == rv:
                    yield self.round_ev
                continue
            arrived = self.arrived
            arrived.append((w, rv, t_read, t_done))
            if len(arrived) < k:
                yield self.round_ev
                continue
            # This arrival closes the round: preempt the workers still computing
            # (in worker order), then apply the K gradients.
            self.open = False
            now = env.now
            for j in range(n):
                if computing[j]:
                    computing[j] = False
                    m.dropped(j, self.cur_rv[j], self.cur_tread[j], now)
                    interrupt(m.procs[j])
            if m.server_busy:  # never in practice: rounds do not overlap
                ev = env.event()
                m.server_queue.append(ev)
                yield ev
            else:
                m.server_busy = True
            d = m.apply_next()
            if d > 0.0:
                yield timeout(d)
            rows = arrived[:]
            arrived.clear()
            ev = self.round_ev
            self.round_ev = env.event()
            self.open = True
            m.applied(rows, env.now)
            m.release_server()
            ev.succeed()
            # the closing worker pulls at once; the others when ev is processed


@register
class Sync(Backup):
    """``sync``: S-SGD, the backup policy with K = N (nothing is ever dropped).

    Every worker pulls version v, computes and pushes; when all N gradients
    have arrived the server applies their mean (one apply draw) and everyone
    pulls v + 1. ``timeout`` (faults) is not modelled by this engine.
    """

    kind = "sync"

    def _k(self) -> int:
        return self.n
