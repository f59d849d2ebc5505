"""Ring all-reduce (reduce-scatter then all-gather around one ring of the ranks).

2(N − 1) steps; in each, every rank sends S/N bytes to its successor. So an
uncontended ring all-reduce of S bytes over links of bandwidth B with path
latency α takes

    2(N − 1)/N · S/B + 2(N − 1) · α,

the relation behind nccl-tests' bus bandwidth (doc/PERFORMANCE.md: busBW =
algBW · 2(n − 1)/n for all-reduce). The ring visits the ranks in worker
order, so consecutive workers are neighbours (contiguous placement keeps
most steps inside a rack or a node).
"""

from __future__ import annotations

from ._pattern import Schedule

__all__ = ["ring_schedule"]


def ring_schedule(ranks: list[int], nbytes: float) -> Schedule:
    """The ring all-reduce of ``nbytes`` over ``ranks`` (in ring order)."""
    n = len(ranks)
    if n < 2:
        return []
    chunk = nbytes / n
    step = [(ranks[i], ranks[(i + 1) % n], chunk) for i in range(n)]
    return [(step, 2 * (n - 1))]
