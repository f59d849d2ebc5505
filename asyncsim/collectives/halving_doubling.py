"""Recursive halving and doubling all-reduce (Rabenseifner's algorithm).

Reduce-scatter by recursive halving: in step k = 1..log2 N every rank
exchanges S/2^k bytes with the rank at distance N/2^k (``rank XOR N/2^k``);
then all-gather by recursive doubling, the same exchanges in reverse order.
Uncontended: 2(N − 1)/N · S/B + 2 log2(N) · α — the ring's bandwidth term
with log2 N instead of N − 1 latency terms (Thakur, Rabenseifner & Gropp,
2005). N must be a power of two (the scenario is checked).
"""

from __future__ import annotations

from ._pattern import Schedule

__all__ = ["halving_doubling_schedule"]


def halving_doubling_schedule(ranks: list[int], nbytes: float) -> Schedule:
    n = len(ranks)
    if n < 2:
        return []
    if n & (n - 1):
        raise ValueError(f"halving_doubling needs a power-of-two number of ranks, not {n}")
    steps = []
    d, size = n // 2, nbytes / 2
    while d >= 1:
        steps.append([(ranks[i], ranks[i ^ d], size) for i in range(n)])
        d //= 2
        size /= 2
    return [(p, 1) for p in steps] + [(p, 1) for p in reversed(steps)]
