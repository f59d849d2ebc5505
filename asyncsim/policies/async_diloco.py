"""Asynchronous DiLoCo: each worker's pseudo-gradient is applied on arrival at the server.

``policy: {kind: async_diloco, inner_steps: H, outer_lr, outer_momentum, ...}``
(docs/diloco.md). No barrier. Each worker repeats:

1. H inner steps back to back (one compute draw each) from the global
   parameters it last loaded (the initial parameters, version 0, at time 0);
2. a push of its pseudo-gradient (S = model bytes) to the parameter server
   over its route (``m.transfer`` with the push hops, as policy ``async``);
3. the server applies one outer update with that single pseudo-gradient
   (server lock, FIFO; one ``server.apply`` draw);
4. the worker pulls the current global parameters (S bytes; the version at
   the pull's start) and goes back to 1.

Rows (one per update): step = the update, read_version = the version the
worker pulled, t_read = when the pull ended (0 for the first round), t_done =
its last inner step's end (before the push), fragment 0, outer_staleness =
staleness = the outer updates the other workers applied meanwhile,
local_start/local_end = its inner-step count at the pull / at the push.
With N equal workers and constant times the server takes them in turn:
outer staleness N − 1 after the first round; one worker: 0, period
H·t + push + apply + pull (tested).

Cost per outer update: O(H) draws and inner-table rows, a handful of events
(one for the inner phase, the transfers', the apply); memory O(H) per update.
"""

from __future__ import annotations

from .base import Policy, register
from .diloco import inner_phase

__all__ = ["AsyncDiLoCo"]


@register
class AsyncDiLoCo(Policy):
    """``async_diloco``: pseudo-gradients pushed to the server and applied on arrival."""

    kind = "async_diloco"

    def start(self, m) -> None:
        m.start_outer_recording()
        super().start(m)

    def worker(self, m, w):
        env = m.env
        comp = m.compute_next[w]
        pull, pull_hops, push, push_hops = m.routes(w)
        h = int(self.spec.inner_steps)
        rv, t_read, c = 0, 0.0, 0
        while True:
            s = inner_phase(m, w, comp, c, t_read, h)
            yield env.timeout(s)
            t_done = env.now
            yield from self.push_and_apply(m, w, push, push_hops)
            st = m.version - rv
            m.applied_outer([w], rv, t_read, [t_done], st, c, c + h, 0, env.now)
            m.release_server()
            c += h
            rv = m.version                       # the server sends its current version
            if pull is not None:
                yield from m.transfer(w, pull, pull_hops)
            t_read = env.now

    def describe(self) -> dict:
        return {"kind": self.kind, "inner_steps": int(self.spec.inner_steps)}
