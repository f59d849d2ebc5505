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

    def workers(self, n: int, purpose: str = "compute") -> list[np.random.Generator]:
        """``[worker(i, purpose) for i in range(n)]``, the same generators, built
        about ten times faster (see :func:`pcg64_batch`)."""
        keys = np.empty((n, 3), dtype=np.int64)
        keys[:, 0], keys[:, 1], keys[:, 2] = _DOMAINS["worker"], np.arange(n), _PURPOSES[purpose]
        return pcg64_batch(self.seed, keys)

    def server(self, purpose: str = "apply") -> np.random.Generator:
        return self._gen(_DOMAINS["server"], _PURPOSES[purpose])

    def link(self, index: int, purpose: str = "misc") -> np.random.Generator:
        return self._gen(_DOMAINS["link"], index, _PURPOSES[purpose])


# ------------------------------------------------------------ batch seeding
# numpy's SeedSequence (O'Neill's seed_seq_fe, numpy/random/bit_generator.pyx)
# with its pool of 4 words, computed for many spawn keys at once. numpy builds
# one SeedSequence and one PCG64 in about 11 us, 6 ms for a 512-worker run:
# about 40 % of a vectorised run. The mixing below is the same arithmetic on
# uint32 columns, one row per key; pcg64_batch checks itself against numpy
# once per process and falls back to numpy if they ever differ
# (tests/test_rng.py compares them on many seeds and keys).
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R, _XSHIFT, _M32 = 0xCA01F9DD, 0x4973F715, 16, 0xFFFFFFFF
_POOL = 4


def _words(x: int) -> list[int]:
    """numpy's _coerce_to_uint32_array for one non-negative int: little-endian 32-bit words."""
    if x < 0:
        raise ValueError("seeds and keys must be >= 0")
    out = [x & _M32] if x == 0 else []
    while x > 0:
        out.append(x & _M32)
        x >>= 32
    return out


def _seed_states(seed: int, keys: np.ndarray) -> np.ndarray:
    """PCG64's four 64-bit seed words, ``SeedSequence(seed, spawn_key=key)
    .generate_state(4, np.uint64)``, for each row of ``keys`` (each < 2**32)."""
    run = _words(int(seed))
    if len(run) < _POOL:
        run = run + [0] * (_POOL - len(run))
    k = len(keys)
    ent = [np.full(k, w, dtype=np.uint32) for w in run] + [keys[:, j].astype(np.uint32) for j in range(keys.shape[1])]
    h = _INIT_A

    def hashmix(v: np.ndarray) -> np.ndarray:
        nonlocal h
        v = v ^ np.uint32(h)
        h = (h * _MULT_A) & _M32
        v = v * np.uint32(h)
        return v ^ (v >> np.uint32(_XSHIFT))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = np.uint32(_MIX_L) * x - np.uint32(_MIX_R) * y
        return r ^ (r >> np.uint32(_XSHIFT))

    pool = [hashmix(ent[i] if i < len(ent) else np.zeros(k, np.uint32)) for i in range(_POOL)]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for src in range(_POOL, len(ent)):
        for dst in range(_POOL):
            pool[dst] = mix(pool[dst], hashmix(ent[src]))
    out = np.empty((k, 8), dtype=np.uint32)
    hb = _INIT_B
    for i in range(8):
        v = pool[i % _POOL] ^ np.uint32(hb)
        hb = (hb * _MULT_B) & _M32
        v = v * np.uint32(hb)
        out[:, i] = v ^ (v >> np.uint32(_XSHIFT))
    # 64-bit words from little-endian pairs of 32-bit words, as numpy does
    return out[:, 0::2].astype(np.uint64) | (out[:, 1::2].astype(np.uint64) << np.uint64(32))


class _FixedState:
    """A seed-sequence stand-in that hands PCG64 precomputed state words."""

    __slots__ = ("words",)

    def __init__(self, words: np.ndarray):
        self.words = words

    def generate_state(self, n_words: int, dtype=np.uint32) -> np.ndarray:
        if n_words != 4 or np.dtype(dtype) != np.uint64:  # pragma: no cover - PCG64 asks for exactly this
            raise ValueError("only PCG64's four 64-bit words are precomputed")
        return self.words


np.random.bit_generator.ISeedSequence.register(_FixedState)
_batch_ok: bool | None = None


def _batch_matches_numpy() -> bool:
    global _batch_ok
    if _batch_ok is None:
        probe = np.array([[0, 7, 0], [1, 3, 2]], dtype=np.int64)
        want = [np.random.SeedSequence(2**40 + 5, spawn_key=tuple(int(x) for x in r)).generate_state(4, np.uint64)
                for r in probe]
        _batch_ok = bool(np.array_equal(_seed_states(2**40 + 5, probe), np.array(want)))
    return _batch_ok


def pcg64_batch(seed: int, keys: np.ndarray) -> list[np.random.Generator]:
    """``Generator(PCG64(SeedSequence(seed, spawn_key=tuple(key))))`` for each row of ``keys``."""
    if len(keys) >= 8 and np.all(keys < 2**32) and np.all(keys >= 0) and _batch_matches_numpy():
        states = _seed_states(seed, keys)
        return [np.random.Generator(np.random.PCG64(_FixedState(st))) for st in states]
    return [np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=tuple(int(x) for x in r))))
            for r in keys]


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
