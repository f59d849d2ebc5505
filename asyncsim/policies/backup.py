"""Synchronous SGD with backup workers: the first K of N gradients make the update.

Plain S-SGD through the parameter server is the K = N case (synchronous.py).
"""

from __future__ import annotations

from .base import Policy, register

__all__ = ["Backup"]

_CRASH = "crash"
_PREEMPT = "preempt"


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

    Faults (docs/transfer-model.md, "Faults"): a crashed worker simply does
    not arrive, so up to N − K losses per round are absorbed; a restarted
    worker pulls the current version and may still make its round. When fewer
    workers than the round still needs can ever arrive (permanent crashes),
    the run stalls: it ends at once with ``stalled``. ``sync`` with a
    ``timeout`` closes a round ``timeout`` seconds after it opened with the
    gradients it has (at the next arrival if it has none) and never stalls
    while a worker lives.
    """

    kind = "backup"

    def __init__(self, scenario):
        super().__init__(scenario)
        self.k = self._k()
        #: gradients that close the current round (k, or 1 once a sync timeout fired)
        self.k_eff = self.k
        self.timeout = getattr(self.spec, "timeout", None)
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
        if self.timeout is not None:
            m.env.process(self._timer(m, 0))

    # ------------------------------------------------------------------ faults
    def on_crash(self, m, w: int) -> None:
        self.computing[w] = False  # its gradient was recorded lost by the model
        if m.perm_down[w]:
            self._check_stall(m)

    def _check_stall(self, m) -> None:
        """Stall when the open round can never collect its K gradients (no timeout)."""
        if self.timeout is not None or m.faults is None or not self.open:
            return
        have = {r[0] for r in self.arrived}
        possible = len(self.arrived) + sum(1 for j in range(self.n) if not m.perm_down[j] and j not in have)
        if possible < self.k:
            m.stall()

    def _timer(self, m, v: int):
        """Sync timeout of round ``v``: close it with what has arrived, or at the next arrival."""
        yield m.env.timeout(self.timeout)
        if m.version != v or not self.open:
            return
        if self.arrived:
            yield from self._close(m)
        else:
            self.k_eff = 1

    # ------------------------------------------------------------------ worker
    def worker(self, m, w):
        env = m.env
        timeout = env.timeout
        comp = m.compute_next[w]
        pull, pull_hops, push, push_hops = m.routes(w)
        computing = self.computing
        Interrupt = m.kernel.Interrupt
        faulty = m.faults is not None
        while True:
            if faulty:
                while m.down[w]:
                    yield m.up_ev[w]
                m.active[w] = True
            rv = m.version
            try:
                if pull is not None:
                    yield from m.transfer(w, pull, pull_hops)
                t_read = env.now
                self.cur_rv[w] = rv
                self.cur_tread[w] = t_read
                computing[w] = True
                d = comp()
                if faulty:
                    m.cur[w] = (rv, t_read)
                    d *= m.faults.compute_factor(w, t_read)
                try:
                    yield timeout(d)
                except Interrupt as e:
                    if e.cause == _CRASH:
                        raise
                    # Preempted: the closing worker recorded our row; wait for the new version.
                    if m.version == rv:
                        yield self.round_ev
                    continue
                computing[w] = False
                t_done = env.now
                if push is not None:
                    yield from m.transfer(w, push, push_hops)
            except Interrupt:
                continue  # crashed (faults): the model recorded the loss; wait until back up
            if faulty:  # arrived at the server: a crash from here on loses nothing
                m.active[w] = False
                m.cur[w] = None
            if not (self.open and m.version == rv):
                # Late: the round closed while we were pushing.
                m.dropped(w, rv, t_read, t_done)
                if m.version == rv:
                    yield self.round_ev
                continue
            arrived = self.arrived
            arrived.append((w, rv, t_read, t_done))
            if len(arrived) < self.k_eff:
                yield self.round_ev
                continue
            yield from self._close(m)
            # the closing worker pulls at once; the others when the round event is processed

    def _close(self, m):
        """Generator: close the round now: preempt the workers still computing (in
        worker order), then apply the gradients that arrived."""
        env = m.env
        self.open = False
        now = env.now
        computing = self.computing
        faulty = m.faults is not None
        interrupt = m.kernel.interrupt
        for j in range(self.n):
            if computing[j]:
                computing[j] = False
                m.dropped(j, self.cur_rv[j], self.cur_tread[j], now)
                if faulty:
                    m.active[j] = False
                    m.cur[j] = None
                interrupt(m.procs[j], _PREEMPT)
        if m.server_busy:  # never in practice: rounds do not overlap
            ev = env.event()
            m.server_queue.append(ev)
            yield ev
        else:
            m.server_busy = True
        d = m.apply_next()
        if d > 0.0:
            yield env.timeout(d)
        rows = self.arrived[:]
        self.arrived.clear()
        ev = self.round_ev
        self.round_ev = env.event()
        self.open = True
        self.k_eff = self.k
        m.applied(rows, env.now)
        m.release_server()
        ev.succeed()
        if self.timeout is not None:
            env.process(self._timer(m, m.version))
        if faulty and any(m.perm_down):
            self._check_stall(m)
