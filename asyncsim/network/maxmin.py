"""Max-min fair rate allocation by progressive filling.

Given flows over capacitated links, the max-min fair allocation is the one in
which no flow's rate can be raised without lowering the rate of a flow that
has no more than it (Bertsekas & Gallager, *Data Networks*, §6.5.2; the
bandwidth-sharing model of SimGrid's flow-level network and of
ASTRA-sim's congestion-aware backend). Progressive filling computes it: raise
every unfrozen flow's rate together; when a link fills up, freeze the flows
crossing it at their current rate; repeat until every flow is frozen. A flow
may also carry its own rate limit (``cap``, e.g. its NIC when the NIC is
crossed by no other flow), which acts as a private link of that capacity.

Flows are given in *classes*: ``weights[c]`` identical flows that cross the
same links with the same cap, each getting the class's rate. Aggregating
identical flows keeps the cost independent of how many there are.

Cost: O(C · (L + C)) per allocation for C classes over L distinct links
(each round freezes at least one class and scans the links and classes).
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["max_min_rates", "progressive_filling"]


def max_min_rates(links: Sequence[Sequence[int]], weights: Sequence[float], caps: Sequence[float],
                  capacity) -> list[float]:
    """Max-min fair rate of one flow of each class.

    ``links[c]``: the link indices class ``c`` crosses (each at most once);
    ``weights[c]``: how many flows the class holds (> 0); ``caps[c]``: the
    rate limit of each of its flows (``inf`` for none); ``capacity[l]``: the
    capacity of link ``l`` (anything indexable). Rates are in the capacity's
    units. A class that crosses no link and has no cap gets ``inf``.

    The arithmetic is deterministic: the same input gives the same floats.
    A flow alone on its links gets exactly the smallest of its links'
    capacities and its cap (no rounding is introduced).
    """
    if len(links) <= 4:
        rates = _disjoint(links, weights, caps, capacity)
        if rates is not None:
            return rates
    return progressive_filling(links, weights, caps, capacity)


def _disjoint(links, weights, caps, capacity) -> list[float] | None:
    """Rates when no two classes share a link (else ``None``): each class gets
    its cap or its tightest link's equal share, the very division progressive
    filling makes (inlined for performance: a star's pull and push classes)."""
    seen: set[int] = set()
    for ls in links:
        for li in ls:
            if li in seen:
                return None
            seen.add(li)
    out = []
    for ls, w, cap in zip(links, weights, caps):
        r = cap
        for li in ls:
            s = float(capacity[li]) / w
            if s < r:
                r = s
        out.append(r)
    return out


def progressive_filling(links, weights, caps, capacity) -> list[float]:
    """The general algorithm behind :func:`max_min_rates` (same arguments)."""
    nc = len(links)
    rate = [math.inf] * nc
    rem: dict[int, float] = {}   # capacity not yet given to frozen flows
    cnt: dict[int, float] = {}   # unfrozen flows (weighted) on the link
    for c in range(nc):
        w = weights[c]
        for li in links[c]:
            if li in cnt:
                cnt[li] += w
            else:
                rem[li] = float(capacity[li])
                cnt[li] = w
    unfrozen = list(range(nc))
    while unfrozen:
        # the tightest constraint: a link's equal share, or a class's own cap
        share, tight = math.inf, -1
        for li, k in cnt.items():
            if k > 0:
                s = rem[li] / k if rem[li] > 0.0 else 0.0
                if s < share:
                    share, tight = s, li
        cap_min = min(caps[c] for c in unfrozen)
        if cap_min <= share:
            if cap_min == math.inf:  # nothing constrains what is left
                break
            level = cap_min
            freeze = [c for c in unfrozen if caps[c] <= level]
        else:
            level = share
            freeze = [c for c in unfrozen if tight in links[c]]
        frozen = set(freeze)
        for c in freeze:
            rate[c] = level
            w = weights[c]
            for li in links[c]:
                cnt[li] -= w
                rem[li] -= w * level
        unfrozen = [c for c in unfrozen if c not in frozen]
        for li in [li for li, k in cnt.items() if k <= 0]:
            del cnt[li]
    return rate
