"""Collective steps as patterns of concurrent flows, timed by the fair network model.

A collective is a sequence of *steps*; a step is a *pattern*: a set of
concurrent point-to-point transfers ``(src, dst, bytes)`` between workers
that all start together, and the step ends when the last one has arrived
(the algorithms' steps are synchronous, as in the α-β model of
Thakur, Rabenseifner & Gropp, 2005). Its duration comes from a fluid drain:
the max-min fair rates (:func:`asyncsim.network.max_min_rates`) over the
scenario's link directions, recomputed when a transfer of the pattern ends,
plus each transfer's path latency (the sum of its hops' *mean* latencies:
a collective's duration is a number, cached per pattern and size).

As in the fair model, a link direction that only one transfer of the pattern
crosses is private to it and caps its rate; transfers with the same shared
directions, cap, size and latency form one class. A ring step over N ranks on
a star is then one class, whatever N, so a pattern costs O(N) to classify and
O(C²) to drain for C classes (C ≤ the number of distinct shared-link sets).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from ..network.maxmin import max_min_rates

__all__ = ["Pattern", "pattern_time", "Schedule"]

#: one step: ``(src, dst, bytes)`` transfers that start together
Pattern = Sequence[tuple[int, int, float]]
#: a collective: ``(pattern, repeats)`` in order (a pattern repeated k times back to back)
Schedule = list[tuple[Pattern, int]]


def pattern_time(net, pattern: Iterable[tuple[int, int, float]], capacity_bps: Sequence[float],
                 mean_latency: Sequence[float]) -> float:
    """Seconds from the start of a step until its last transfer has arrived.

    ``net``: the run's :class:`~asyncsim.network.Network` (its
    :meth:`~asyncsim.network.Network.peer_hops` gives every path);
    ``capacity_bps``: bit/s of every link direction; ``mean_latency``: mean
    latency of every direction's hop, seconds.
    """
    flows = []
    use: dict[int, int] = {}
    for a, b, nbytes in pattern:
        hops = net.peer_hops(a, b) if net is not None else ()
        flows.append((hops, nbytes * 8.0))
        for h in hops:
            use[h] = use.get(h, 0) + 1
    classes: dict[tuple, list] = {}   # (shared, cap, bits, latency) -> [weight]
    for hops, bits in flows:
        lat = 0.0
        for h in hops:  # summed in path order
            lat += mean_latency[h]
        if bits <= 0.0 or not hops:
            key = ((), math.inf, 0.0, lat)
        else:
            shared = tuple(sorted(h for h in hops if use[h] > 1))
            private = [capacity_bps[h] for h in hops if use[h] == 1]
            key = (shared, min(private) if private else math.inf, bits, lat)
        c = classes.get(key)
        if c is None:
            classes[key] = [1]
        else:
            c[0] += 1
    # fluid drain: every class's flows finish together (same size, same rate)
    end = 0.0
    live = []
    for (shared, cap, bits, lat), (w,) in classes.items():
        if bits <= 0.0:
            end = max(end, lat)
        else:
            live.append([shared, cap, bits, lat, w])   # remaining bits of each flow
    t = 0.0
    while live:
        rates = max_min_rates([c[0] for c in live], [c[4] for c in live], [c[1] for c in live], capacity_bps)
        dt = min(c[2] / r for c, r in zip(live, rates))
        t += dt
        still = []
        for c, r in zip(live, rates):
            left = c[2] - r * dt
            if left <= 1e-12 * c[2]:
                end = max(end, t + c[3])
            else:
                c[2] = left
                still.append(c)
        live = still
    return end


def schedule_time(net, schedule: Schedule, capacity_bps, mean_latency, cache: dict | None = None) -> float:
    """Total seconds of a collective: each pattern's time times its repeats, in order."""
    total = 0.0
    for pattern, repeats in schedule:
        if repeats <= 0 or not pattern:
            continue
        key = tuple(pattern) if cache is not None else None
        if key is not None and key in cache:
            d = cache[key]
        else:
            d = pattern_time(net, pattern, capacity_bps, mean_latency)
            if key is not None:
                cache[key] = d
        total += repeats * d
    return total
