"""Local SGD and DiLoCo: H inner steps per worker, then one synchronous outer update.

``policy: {kind: diloco | local_sgd, inner_steps: H, outer_lr, outer_momentum,
nesterov, inner_optimizer, algorithm}`` (docs/diloco.md). Timing model, per
outer round k (one update, N rows, staleness 0):

* every worker loads the global parameters at the round's start t₀ (the
  previous update's apply end; 0 for the first round) and runs H inner steps
  back to back, each one draw of its compute distribution (its gradient and
  local optimizer step): inner step i of worker w runs from t₀ + s_{w,i} to
  t₀ + s_{w,i+1}, with s the running sum of its draws;
* when the slowest worker has finished, the pseudo-gradients (S = model bytes)
  are all-reduced with ``algorithm`` on the scenario's network
  (:mod:`asyncsim.collectives`, fair sharing; no network: no time), then one
  outer update is applied (one ``server.apply`` draw: the outer optimizer step
  every worker takes) and every worker starts round k + 1 from it.

So a round lasts max_w Σ_i d_{w,i} + D(S) + apply; with constant compute t and
an uncontended ring, H·t + 2(N − 1)/N·S/B + 2(N − 1)·latency + apply (tested).

Rows: worker w's contribution of round k has step = read_version = k,
t_read = t₀, t_done = its last inner step's end, t_applied = the update time,
fragment 0, outer_staleness 0, local_start = kH, local_end = (k + 1)H; rows in
order of t_done (ties: worker order), as ``allreduce`` records them. The inner
table gets every inner step.

``local_sgd`` is the same timing with the local SGD defaults (outer lr 1, no
outer momentum, SGD inner steps): its parameters are then the workers' average.

Cost per outer round: O(N·H) draws and inner-table rows, four events whatever
N and H; memory O(N·H) per round for the inner table (24 bytes a row) and
O(N) for the rows.
"""

from __future__ import annotations

import numpy as np

from ..collectives import Collectives
from .base import Policy, register

__all__ = ["DiLoCo", "LocalSGD", "inner_phase"]


def inner_phase(m, w: int, comp, first: int, t0: float, h: int) -> float:
    """Draw worker ``w``'s next ``h`` inner steps (from ``comp``) starting at ``t0`` and record
    them in the inner table as steps ``first``, ``first + 1``, ...; returns the phase's
    length s = Σ draws, so the last step ends at exactly ``t0 + s`` (the running sums are a
    left fold, the additions ``t = t + d`` one at a time would make)."""
    ends = np.cumsum(np.fromiter((comp() for _ in range(h)), dtype=np.float64, count=h))
    starts = np.empty(h)
    starts[0] = 0.0
    starts[1:] = ends[:-1]
    m.inner_steps(w, first, t0 + starts, t0 + ends)
    return float(ends[-1])


@register
class DiLoCo(Policy):
    """``diloco``: H inner steps per worker, an all-reduce of the pseudo-gradients, one outer
    update (see the module docstring)."""

    kind = "diloco"

    def __init__(self, scenario):
        super().__init__(scenario)
        self.h = int(self.spec.inner_steps)

    def start(self, m) -> None:
        m.start_outer_recording()
        coll = Collectives(m.network, self.spec.algorithm, self.n, self.sc.node_of())
        self.allreduce_seconds = coll.allreduce_time(float(self.sc.model_bytes))
        m.procs = [m.env.process(self._rounds(m))]

    def _rounds(self, m):
        env = m.env
        comps = m.compute_next
        n, h = self.n, self.h
        big_d = self.allreduce_seconds
        k = 0
        while True:
            t0 = env.now
            v = m.version
            lengths = [inner_phase(m, w, comps[w], k * h, t0, h) for w in range(n)]
            yield env.timeout(max(lengths))   # the barrier: the slowest worker's last inner step
            if big_d > 0.0:
                yield env.timeout(big_d)      # the all-reduce of the pseudo-gradients
            d = m.apply_next()
            if d > 0.0:
                yield env.timeout(d)          # the outer optimizer step
            done = [t0 + s for s in lengths]
            order = sorted(range(n), key=done.__getitem__)
            m.applied_outer(order, v, t0, [done[w] for w in order], 0, k * h, (k + 1) * h, 0, env.now)
            k += 1

    def describe(self) -> dict:
        return {"kind": self.kind, "inner_steps": self.h, "algorithm": self.spec.algorithm,
                "allreduce_seconds": getattr(self, "allreduce_seconds", None)}


@register
class LocalSGD(DiLoCo):
    """``local_sgd``: DiLoCo's timing with the local SGD defaults (parameter averaging)."""

    kind = "local_sgd"
