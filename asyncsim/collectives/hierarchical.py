"""Hierarchical all-reduce for nodes of several GPUs.

With m nodes of g GPUs each:

1. reduce-scatter inside every node (a ring over its g GPUs on the
   intra-node links): g − 1 steps of S/g bytes;
2. all-reduce across nodes of each GPU's 1/g of the data, on g parallel
   rings ("rails": GPU j of every node), each over its GPU's own NIC:
   2(m − 1) steps of (S/g)/m bytes;
3. all-gather inside every node: g − 1 steps of S/g bytes.

Uncontended: 2(g − 1)/g · S/B_intra + 2(m − 1)/m · (S/g)/B_inter, plus
2(g − 1) intra-node and 2(m − 1) inter-node path latencies.
"""

from __future__ import annotations

from ._pattern import Schedule

__all__ = ["hierarchical_schedule"]


def hierarchical_schedule(nodes: list[list[int]], nbytes: float) -> Schedule:
    """``nodes``: the ranks of every node, in order (all of the same size)."""
    g = len(nodes[0])
    m = len(nodes)
    out: Schedule = []
    intra = []
    if g > 1:
        chunk = nbytes / g
        intra = [(node[j], node[(j + 1) % g], chunk) for node in nodes for j in range(g)]
        out.append((intra, g - 1))
    if m > 1:
        chunk = nbytes / g / m
        rails = [[node[j] for node in nodes] for j in range(g)]
        out.append(([(r[k], r[(k + 1) % m], chunk) for r in rails for k in range(m)], 2 * (m - 1)))
    if g > 1:
        out.append((intra, g - 1))
    return out
