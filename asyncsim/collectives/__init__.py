"""Collective algorithms for S-SGD through all-reduce (``policy.kind: allreduce``).

One module per algorithm, each turning (ranks, bytes) into a schedule of
steps (patterns of concurrent flows; :mod:`._pattern`); :class:`Collectives`
is the one place an algorithm is chosen, and times a schedule on the
scenario's network with the fair (max-min) sharing model, caching every
pattern's duration. See docs/synchronous-baselines.md.

Cost: building a schedule is O(N) per step pattern (O(N log N) for the
tree); a pattern's duration is computed once per (pattern, size); a
simulated update then costs O(buckets), whatever N.
"""

from __future__ import annotations

from ._pattern import Schedule, pattern_time, schedule_time
from .halving_doubling import halving_doubling_schedule
from .hierarchical import hierarchical_schedule
from .ring import ring_schedule
from .tree import tree_schedule

__all__ = ["Collectives", "ALGORITHMS", "schedule_for", "pattern_time"]

ALGORITHMS = ("ring", "tree", "halving_doubling", "hierarchical")


def schedule_for(algorithm: str, ranks: list[int], node_of: list[int], nbytes: float) -> Schedule:
    """The schedule of one all-reduce of ``nbytes`` (the chooser)."""
    if algorithm == "ring":
        return ring_schedule(ranks, nbytes)
    if algorithm == "tree":
        return tree_schedule(ranks, nbytes)
    if algorithm == "halving_doubling":
        return halving_doubling_schedule(ranks, nbytes)
    if algorithm == "hierarchical":
        nodes: dict[int, list[int]] = {}
        for r in ranks:
            nodes.setdefault(node_of[r], []).append(r)
        return hierarchical_schedule(list(nodes.values()), nbytes)
    raise ValueError(f"unknown all-reduce algorithm {algorithm!r} (expected one of {', '.join(ALGORITHMS)})")


class Collectives:
    """All-reduce durations on one scenario's network (``None``: instantaneous transfers)."""

    def __init__(self, network, algorithm: str, n_workers: int, node_of: list[int]):
        self.net = network
        self.algorithm = algorithm
        self.ranks = list(range(n_workers))
        self.node_of = node_of
        self._cache: dict = {}
        self._by_size: dict[float, float] = {}
        if network is not None:
            import math

            self.capacity = [bw * 1e9 for bw in network.capacity_gbps]
            self.latency = [float(d.mean) for _, _, _, d in network.edges for _ in (0, 1)]
            if not all(math.isfinite(x) and x >= 0 for x in self.latency):
                from ..errors import ScenarioError

                raise ScenarioError("a link latency has no finite mean, which the allreduce policy's "
                                    "collectives need (they pay each hop's mean latency)", field="network.latency")

    def allreduce_time(self, nbytes: float) -> float:
        """Seconds for one all-reduce of ``nbytes`` bytes (cached per size)."""
        d = self._by_size.get(nbytes)
        if d is None:
            if self.net is None:
                d = 0.0
            else:
                sched = schedule_for(self.algorithm, self.ranks, self.node_of, nbytes)
                d = schedule_time(self.net, sched, self.capacity, self.latency, self._cache)
            self._by_size[nbytes] = d
        return d
