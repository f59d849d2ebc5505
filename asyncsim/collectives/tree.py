"""Double binary tree all-reduce (the shape of NCCL's tree algorithm), not pipelined.

Two balanced binary trees over the ranks, each carrying half of the data:
tree 1 is the in-order tree of the ranks (the root is the middle rank, each
subtree the middle of its range), tree 2 the same tree with every rank
shifted by one, so that most interior nodes of one tree are leaves of the
other and a rank's NIC is seldom busy in both. All-reduce = reduce (level
by level, from the deepest up, every node sends its half to its parent) then
broadcast (level by level down). Both trees run in the same steps.

This variant does not pipeline chunks through the tree (NCCL does), so its
bandwidth term is about 2·depth·(S/2)/B per tree instead of ~S/B: it shows
the tree's strength (2·depth latency terms instead of the ring's 2(N − 1))
at small sizes, and overstates its cost for large buckets.
"""

from __future__ import annotations

from ._pattern import Schedule

__all__ = ["tree_schedule", "inorder_parents"]


def inorder_parents(n: int) -> tuple[list[int], list[int]]:
    """Parent (−1 for the root) and depth of every position 0..n−1 in the in-order balanced tree."""
    parent = [-1] * n
    depth = [0] * n
    stack = [(0, n - 1, -1, 0)]
    while stack:
        lo, hi, p, d = stack.pop()
        if lo > hi:
            continue
        mid = (lo + hi) // 2
        parent[mid], depth[mid] = p, d
        stack.append((lo, mid - 1, mid, d + 1))
        stack.append((mid + 1, hi, mid, d + 1))
    return parent, depth


def tree_schedule(ranks: list[int], nbytes: float) -> Schedule:
    n = len(ranks)
    if n < 2:
        return []
    parent, depth = inorder_parents(n)
    half = nbytes / 2
    trees = []
    for shift in (0, 1):
        # position i of the tree holds rank ranks[(i + shift) % n]
        edges = [(ranks[(i + shift) % n], ranks[(parent[i] + shift) % n], depth[i]) for i in range(n)
                 if parent[i] >= 0]
        trees.append(edges)
    dmax = max(depth)
    up = [[(c, p, half) for t in trees for c, p, d in t if d == level] for level in range(dmax, 0, -1)]
    down = [[(p, c, half) for t in trees for c, p, d in t if d == level] for level in range(1, dmax + 1)]
    return [(step, 1) for step in up + down if step]
