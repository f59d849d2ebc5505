"""S-SGD as data-parallel training runs it: all-reduce collectives, no parameter server.

``policy: {kind: allreduce, algorithm, bucket_mb, overlap, backward_fraction}``
(docs/synchronous-baselines.md). Each round (one update, N gradient rows,
staleness 0):

* every worker draws its compute time t_i (one draw from its compute stream
  per round, as under ``sync``); its forward pass takes (1 − f)·t_i and its
  backward pass f·t_i, producing the S gradient bytes at a uniform rate;
* the gradients are cut into buckets of ``bucket_mb`` MB (10⁶ bytes) in the
  order the backward pass produces them (the last one smaller; default: one
  bucket of the whole model). Bucket k is ready when its last byte is
  produced on *every* worker: at (1 − f)·t_max + f·t_max·E_k/S after the
  round starts, with E_k the bytes up to the end of bucket k and t_max the
  slowest worker's draw (the last bucket: at t_max);
* buckets are all-reduced one at a time, in order (one communication
  stream): bucket k's all-reduce starts at max(ready_k, end of bucket k−1)
  and lasts D(size_k), the algorithm's duration on the scenario's network
  (:mod:`asyncsim.collectives`, fair sharing, cached per size). Without
  ``overlap`` every bucket is ready at t_max (after the slowest backward);
* the update is applied when the last bucket's all-reduce ends, plus one
  ``server.apply`` draw (the optimizer step every worker takes); then every
  worker starts the next round.

Rows: worker i's gradient of round v has step = read_version = v,
t_read = the round's start (the parameters are local), t_done = start + t_i,
t_applied = the update time; rows in order of t_done (ties: worker order),
as ``sync`` records arrivals. Without a network, collectives take no time and
the trace equals ``sync``'s (tested).

Cost: O(N) per round for the draws, O(buckets) for the timeline; a handful
of events per round whatever N.
"""

from __future__ import annotations

import math

from ..collectives import Collectives
from .base import Policy, register

__all__ = ["Allreduce", "bucket_sizes"]


def bucket_sizes(nbytes: float, bucket_mb: float | None) -> list[float]:
    """Bucket sizes in bytes, in production order (equal buckets, the last one smaller)."""
    if bucket_mb is None or nbytes <= 0:
        return [float(nbytes)]
    b = bucket_mb * 1e6
    k = max(1, math.ceil(nbytes / b))
    return [b] * (k - 1) + [nbytes - b * (k - 1)]


@register
class Allreduce(Policy):
    """``allreduce``: S-SGD through all-reduce collectives (see the module docstring)."""

    kind = "allreduce"

    def __init__(self, scenario):
        super().__init__(scenario)
        spec = self.spec
        self.sizes = bucket_sizes(scenario.model_bytes, spec.bucket_mb)
        total = float(scenario.model_bytes)
        ends, acc = [], 0.0
        for b in self.sizes:
            acc += b
            ends.append(acc / total if total > 0 else 1.0)
        self.ends = ends
        self.f = float(spec.backward_fraction)
        self.overlap = bool(spec.overlap)

    def start(self, m) -> None:
        coll = Collectives(m.network, self.spec.algorithm, self.n, self.sc.node_of())
        self.durations = [coll.allreduce_time(b) for b in self.sizes]
        m.procs = [m.env.process(self._rounds(m))]

    def round_time(self, t_max: float) -> float:
        """Seconds from the round's start to the end of its last bucket's all-reduce."""
        f, overlap = self.f, self.overlap
        last = len(self.durations) - 1
        end = 0.0
        for k, d in enumerate(self.durations):
            if overlap and k < last:
                ready = t_max * ((1.0 - f) + f * self.ends[k])
            else:
                ready = t_max
            end = (ready if ready > end else end) + d
        return end

    def _rounds(self, m):
        env = m.env
        comps = m.compute_next
        n = self.n
        while True:
            t0 = env.now
            v = m.version
            draws = [c() for c in comps]
            t_max = max(draws)
            yield env.timeout(self.round_time(t_max))
            d = m.apply_next()
            if d > 0.0:
                yield env.timeout(d)
            done = [t0 + t for t in draws]
            order = sorted(range(n), key=done.__getitem__)
            m.applied_round(order, v, t0, [done[w] for w in order], env.now)

    def describe(self) -> dict:
        return {"kind": self.kind, "algorithm": self.spec.algorithm, "buckets": len(self.sizes),
                "allreduce_seconds": list(self.durations) if hasattr(self, "durations") else None}
