"""Streaming DiLoCo: P fragments synchronised on a staggered schedule, overlapped with compute.

``policy: {kind: streaming_diloco, inner_steps: H, fragments: P, mixing, ...}``
(docs/diloco.md). The model is cut into P fragments of S/P bytes. Sync
point j = 0, 1, 2, ... is reached by a worker when it has completed
(j + 1)·H/P inner steps; it belongs to fragment p = j mod P, so each fragment
syncs every H inner steps and one fragment syncs every H/P steps. Then:

* at sync point j every worker takes fragment p's pseudo-gradient (against
  the global fragment it last merged) and carries on with its inner steps;
* the fragment's all-reduce (S/P bytes, ``algorithm``) starts when every
  worker has reached sync point j, on one communication stream: all-reduces
  run one at a time in sync-point order (as ``allreduce`` runs its buckets),
  so one starting while the previous one runs waits for it;
* when it ends, one ``server.apply`` draw later, the outer update of fragment
  p is applied: one global outer update, version j + 1 (sync points and
  updates are in the same order);
* each worker merges the new global fragment at its first inner-step
  boundary at or after that time (``mixing``: θ ← mixing·θ_local +
  (1 − mixing)·θ_global); the emergent overlap, in inner steps, is
  local_start − the previous local_end. With constant compute t and a
  fragment all-reduce of D < H/P·t seconds it is ⌈D/t⌉ (tested);
* a worker about to take the last inner step before fragment p's next sync
  point that has not yet merged fragment p's previous result waits for it
  there and merges it, so every contribution has at least one inner step
  (local_end − local_start ≥ 1). It only happens when a fragment's
  communication, queued on the stream, takes about H inner steps or more:
  then H or P should grow.

Rows of update j (one per worker): step j, fragment p, read_version = the
version after the fragment's previous update (0 in its first round),
t_read / local_start = when / at which inner-step count the worker merged it
(0 and 0 in the first round), t_done = when it reached sync point j,
local_end = (j + 1)·H/P, outer_staleness = the updates of fragment p between
the read and this update (always 0 here, as a worker merges the fragment
before it contributes to it again; the staleness is P − 1 after the first
round: the other fragments' updates). Rows in order of t_done (ties: worker).

Cost: one event per inner step per worker (the merge test at each boundary
is O(1) amortised) and a few per update; memory O(N·H/P) per update for the
inner table, O(N) per sync point in flight (at most P + 1 of them).
"""

from __future__ import annotations

import math

from ..collectives import Collectives
from .base import Policy, register

__all__ = ["StreamingDiLoCo"]


@register
class StreamingDiLoCo(Policy):
    """``streaming_diloco``: staggered fragment syncs overlapped with inner steps (module docstring)."""

    kind = "streaming_diloco"

    def __init__(self, scenario):
        super().__init__(scenario)
        self.h = int(self.spec.inner_steps)
        self.p = int(self.spec.fragments)
        self.every = self.h // self.p
        #: sync point j -> its result time (known once its all-reduce has started)
        self.result_at: dict[int, float] = {}
        self._result_ev: dict[int, object] = {}
        self._all_in: dict[int, object] = {}
        self._pending: dict[int, list] = {}

    def start(self, m) -> None:
        m.start_outer_recording()
        coll = Collectives(m.network, self.spec.algorithm, self.n, self.sc.node_of())
        self.allreduce_seconds = coll.allreduce_time(float(self.sc.model_bytes) / self.p)
        m.procs = [m.env.process(self.worker(m, w)) for w in range(self.n)]
        m.procs.append(m.env.process(self._stream(m)))

    def _event(self, table: dict, j: int, m):
        ev = table.get(j)
        if ev is None:
            ev = table[j] = m.env.event()
        return ev

    def _stream(self, m):
        """The communication stream: sync point j's all-reduce and outer update, in order."""
        env = m.env
        big_d = self.allreduce_seconds
        p, every = self.p, self.every
        j = 0
        while True:
            yield self._event(self._all_in, j, m)
            del self._all_in[j]
            start = env.now
            d = m.apply_next()
            # the result time, known now: exactly the clock after the two waits below
            t_res = start + big_d if big_d > 0.0 else start
            if d > 0.0:
                t_res = t_res + d
            self.result_at[j] = t_res
            if big_d > 0.0:
                yield env.timeout(big_d)
            if d > 0.0:
                yield env.timeout(d)
            rows = sorted(self._pending.pop(j), key=lambda r: (r[3], r[0]))
            frag = j % p
            ost = [_count(j, frag, p) - _count(r[1], frag, p) for r in rows]
            m.applied_outer([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                            [r[3] for r in rows], ost, [r[4] for r in rows], (j + 1) * every, frag, env.now)
            self._event(self._result_ev, j, m).succeed()
            self._result_ev.pop(j - p - 1, None)  # (no worker can wait on it any more)
            self.result_at.pop(j - 2 * p - 1, None)
            j += 1

    def worker(self, m, w):
        env = m.env
        comp = m.compute_next[w]
        n, p, every = self.n, self.p, self.every
        result_at = self.result_at
        pending = self._pending
        inf = math.inf
        c = 0                              # completed inner steps
        cur = [(0, 0.0, 0)] * p            # per fragment: (read_version, t_read, local_start)
        nm = 0                             # the next sync point whose result this worker merges
        j = 0                              # the next sync point this worker reaches
        nxt = every                        # its inner-step count
        while True:
            t = env.now
            while nm < j and result_at.get(nm, inf) <= t:   # merge what has been applied by now
                cur[nm % p] = (nm + 1, t, c)
                nm += 1
            if c == nxt:                                      # sync point j: take the pseudo-gradient
                rv, tr, ls = cur[j % p]
                rows = pending.get(j)
                if rows is None:
                    rows = pending[j] = []
                rows.append((w, rv, tr, t, ls))
                if len(rows) == n:
                    self._event(self._all_in, j, m).succeed()
                j += 1
                nxt += every
            if c + 1 == nxt and j >= p and nm <= j - p:
                # the last inner step before sync point j, and the fragment's previous result is
                # not merged yet: wait for it here (so a contribution has at least one inner step)
                yield self._event(self._result_ev, j - p, m)
                t = env.now
                while nm < j and result_at.get(nm, inf) <= t:
                    cur[nm % p] = (nm + 1, t, c)
                    nm += 1
            dt = comp()
            m.inner_step(w, c, t, t + dt)
            yield env.timeout(dt)
            c += 1

    def describe(self) -> dict:
        return {"kind": self.kind, "inner_steps": self.h, "fragments": self.p, "algorithm": self.spec.algorithm,
                "fragment_allreduce_seconds": getattr(self, "allreduce_seconds", None)}


def _count(x: int, frag: int, p: int) -> int:
    """Sync points j' < x of fragment ``frag`` (j' ≡ frag mod p)."""
    return 0 if x <= frag else (x - frag + p - 1) // p
