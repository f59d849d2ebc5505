"""Random streams: one ``numpy.random.SeedSequence`` per run, spawned per consumer.

Streams are addressed by a stable key rather than by spawn order, so adding a
worker never shifts the draws of the others and the same worker gets the same
stream under every policy (common random numbers across policies):

* ``worker(i, "compute")``  compute times of worker ``i`` (global index)
* ``worker(i, "network")``  per-hop latency draws of worker ``i``'s transfers
* ``worker(i, "faults")``   random crash / repair times of worker ``i``
* ``server("apply")``       server apply times

Every engine draws through :class:`BlockSampler` with the same block size, so
all engines consume each stream identically and produce identical traces.
"""

from __future__ import annotations

import numpy as np

#: Draws are made this many at a time per stream (never one call per event).
BLOCK = 1024

_DOMAINS = {"worker": 0, "server": 1, "link": 2, "plan": 3}
_PURPOSES = {"compute": 0, "network": 1, "faults": 2, "apply": 3, "misc": 4}


class Streams:
    """Keyed random generators derived from one seed."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._root = np.random.SeedSequence(self.seed)

    def _gen(self, *key: int) -> np.random.Generator:
        ss = np.random.SeedSequence(self._root.entropy, spawn_key=tuple(int(k) for k in key))
        return np.random.Generator(np.random.PCG64(ss))

    def worker(self, index: int, purpose: str = "compute") -> np.random.Generator:
        return self._gen(_DOMAINS["worker"], index, _PURPOSES[purpose])

    def server(self, purpose: str = "apply") -> np.random.Generator:
        return self._gen(_DOMAINS["server"], _PURPOSES[purpose])

    def link(self, index: int, purpose: str = "misc") -> np.random.Generator:
        return self._gen(_DOMAINS["link"], index, _PURPOSES[purpose])


class BlockSampler:
    """Hands out draws of one distribution from one generator, ``BLOCK`` at a time.

    ``next()`` is the per-event call (inlined for performance: a list pop-free
    index into a pre-drawn block). ``take(n)`` returns the next ``n`` draws as an
    array, consuming the stream exactly as ``n`` calls of ``next()`` would.
    """

    __slots__ = ("dist", "rng", "_buf", "_i", "_n")

    def __init__(self, dist, rng: np.random.Generator, block: int = BLOCK):
        self.dist = dist
        self.rng = rng
        self._n = block
        self._buf: list[float] = []
        self._i = 0

    def _refill(self) -> None:
        self._buf = np.asarray(self.dist.sample(self.rng, self._n), dtype=np.float64).tolist()
        self._i = 0

    def next(self) -> float:
        i = self._i
        if i >= len(self._buf):
            self._refill()
            i = 0
        self._i = i + 1
        return self._buf[i]

    def arrays(self):
        """Yield the stream's draws as float64 arrays, block after block (the rest of
        a partly used block first), consuming it exactly as ``next()`` calls would."""
        if self._i < len(self._buf):
            rest = np.asarray(self._buf[self._i:], dtype=np.float64)
            self._i = len(self._buf)
            yield rest
        while True:
            block = np.asarray(self.dist.sample(self.rng, self._n), dtype=np.float64)
            self._buf, self._i = [], 0  # (next() after this refills: the block is handed out)
            yield block

    def take(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.float64)
        filled = 0
        while filled < n:
            if self._i >= len(self._buf):
                self._refill()
            k = min(n - filled, len(self._buf) - self._i)
            out[filled : filled + k] = self._buf[self._i : self._i + k]
            self._i += k
            filled += k
        return out
