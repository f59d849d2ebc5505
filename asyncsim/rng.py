"""Random streams: one ``numpy.random.SeedSequence`` per run, spawned per consumer.

Streams are addressed by a stable key rather than by spawn order, so adding a
worker never shifts the draws of the others and the same worker gets the same
stream under every policy (common random numbers across policies):

* ``worker(i, "compute")``  compute times of worker ``i`` (global index)
* ``worker(i, "network")``  per-hop latency draws of worker ``i``'s transfers
* ``worker(i, "faults")``   random crash / repair times of worker ``i``
* ``server("apply")``       server apply times

Every engine hands out :class:`BlockSampler`'s values (blocks of ``BLOCK``
draws per stream), so all engines see the same draws and produce identical
traces. How they get them differs: a run's compute streams are one
:class:`StreamSet` (the PCG64 states of all workers seeded in bulk by
:func:`pcg64_states`, one shared generator, no Python object per worker), and
the event engines' first chunk per worker is only as long as the run is
expected to need (:func:`draw_first`), continued chunk by chunk
(:func:`draw_chunk`); the values are the blocks' all the same
(tests/test_rng.py, tests/test_event_memory.py, tests/test_engine_regression.py).
"""

from __future__ import annotations

import array

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
        keys = _worker_keys(n, purpose)
        return pcg64_batch(self.seed, keys)

    def worker_set(self, n: int, purpose: str = "compute") -> "StreamSet | None":
        """The streams of ``workers(n, purpose)`` as one :class:`StreamSet`
        (``None`` where it would not match numpy: then use :meth:`workers`)."""
        keys = _worker_keys(n, purpose)
        seed, domain, p = self.seed, _DOMAINS["worker"], _PURPOSES[purpose]

        def restart(i: int | None) -> np.ndarray:  # stream i's first state, or (None) all of them
            if i is None:
                return pcg64_states(seed, _worker_keys(n, purpose))
            return pcg64_states(seed, np.array([[domain, i, p]], dtype=np.int64))[0]

        return stream_set(self.seed, keys, restart)

    def worker_states(self, n: int, purpose: str = "compute") -> tuple[np.ndarray, ...] | None:
        """The PCG64 states :meth:`worker_set` starts from, as four columns (state
        low, high, inc low, high: :func:`pcg64_columns`), without the set; ``None``
        where there would be no set."""
        keys = _worker_keys(n, purpose)
        return pcg64_columns(self.seed, keys) if _sets_match(keys) else None

    def worker_streams(self, n: int, purpose: str = "compute") -> "StreamSet | GeneratorSet":
        """:meth:`worker_set`, or where there is none the same interface over
        :meth:`workers`' generators."""
        return self.worker_set(n, purpose) or GeneratorSet(self, n, purpose)

    def server(self, purpose: str = "apply") -> np.random.Generator:
        return self._gen(_DOMAINS["server"], _PURPOSES[purpose])

    def link(self, index: int, purpose: str = "misc") -> np.random.Generator:
        return self._gen(_DOMAINS["link"], index, _PURPOSES[purpose])


def _worker_keys(n: int, purpose: str) -> np.ndarray:
    """The spawn keys of workers ``0 .. n-1``'s ``purpose`` streams, one row each (``Streams.worker``'s)."""
    keys = np.empty((n, 3), dtype=np.int64)
    keys[:, 0], keys[:, 1], keys[:, 2] = _DOMAINS["worker"], np.arange(n), _PURPOSES[purpose]
    return keys


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
    return _seed_words(seed, keys).T.copy()


def _seed_words(seed: int, keys: np.ndarray) -> np.ndarray:
    """:func:`_seed_states` as four rows (word, key): ``_seed_states(...).T``.

    The pool is first filled and mixed from the seed's words alone, the same
    for every key: that part is done once on Python ints. Each later word is
    mixed into the four pool words at once (the hash constants follow one
    another in a fixed order whatever the data), so a key costs a few dozen
    numpy operations on (4, keys) columns whatever the number of keys."""
    run = _words(int(seed))
    if len(run) < _POOL:
        run = run + [0] * (_POOL - len(run))
    k = len(keys)
    h = _INIT_A

    def consts(n: int) -> list[int]:
        """The next ``n`` hash constants (hashmix's multiplier before and after each call)."""
        nonlocal h
        out = []
        for _ in range(n):
            before = h
            h = (h * _MULT_A) & _M32
            out.append((before, h))
        return out

    def hashmix_int(v: int) -> int:
        (x, m), = consts(1)
        v = ((v ^ x) * m) & _M32
        return v ^ (v >> _XSHIFT)

    def mix_int(x: int, y: int) -> int:
        r = (_MIX_L * x - _MIX_R * y) & _M32
        return r ^ (r >> _XSHIFT)

    pool = [hashmix_int(run[i]) for i in range(_POOL)]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = mix_int(pool[dst], hashmix_int(pool[src]))
    words = run[_POOL:] + [keys[:, j] for j in range(keys.shape[1])]
    s16 = np.uint32(_XSHIFT)
    ml, mr = np.uint32(_MIX_L), np.uint32(_MIX_R)
    P = V = T = None  # the pool as (4, keys) columns from the first word that differs between keys
    for w in words:
        c = consts(_POOL)  # one hashmix of the same word per pool word, in pool order
        if not isinstance(w, int) and len(w) and bool(np.all(w == w[0])):
            w = int(w[0])  # (a word the same for every key: hashed once, on ints)
        if isinstance(w, int):
            hv = [(((w ^ x) * m) & _M32) for x, m in c]
            hv = [v ^ (v >> _XSHIFT) for v in hv]
            if P is None:
                pool = [mix_int(pool[i], hv[i]) for i in range(_POOL)]
                continue
            v = np.array([(_MIX_R * v) & _M32 for v in hv], dtype=np.uint32)[:, None]
        else:
            if P is None:  # (in place from here: fresh pages cost more than the arithmetic)
                P = np.empty((_POOL, k), dtype=np.uint32)
                P[:] = np.array(pool, dtype=np.uint32)[:, None]
                V, T = np.empty_like(P), np.empty_like(P)
            xa = np.array([x for x, _ in c], dtype=np.uint32)[:, None]
            ma = np.array([m for _, m in c], dtype=np.uint32)[:, None]
            v = np.bitwise_xor(np.asarray(w, dtype=np.uint32), xa, out=V)
            v *= ma
            v ^= np.right_shift(v, s16, out=T)
            v *= mr
        r = np.multiply(P, ml, out=P)
        r -= v  # ml * P - mr * v
        r ^= np.right_shift(r, s16, out=T)
    if P is None:
        P = np.empty((_POOL, k), dtype=np.uint32)
        P[:] = np.array(pool, dtype=np.uint32)[:, None]
    hb = _INIT_B
    xb, mb = [], []
    for _ in range(8):
        xb.append(hb)
        hb = (hb * _MULT_B) & _M32
        mb.append(hb)
    O = np.empty((8, k), dtype=np.uint32)  # the eight 32-bit output words
    for j in range(8):
        o = np.bitwise_xor(P[j % _POOL], np.uint32(xb[j]), out=O[j])
        o *= np.uint32(mb[j])
        o ^= np.right_shift(o, s16, out=T[0] if T is not None else None)
    # 64-bit words from little-endian pairs of 32-bit words, as numpy makes them
    out = np.empty((_POOL, k), dtype=np.uint64)
    np.left_shift(O[1::2], np.uint64(32), out=out, dtype=np.uint64)
    out |= O[0::2]
    return out


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


# ----------------------------------------------------------- stream sets
# PCG64 (numpy/random/src/pcg64/pcg64.h): a 128-bit LCG, state' = state * MULT
# + inc. Seeding from the seed sequence's four words w (pcg64_set_seed,
# pcg64_srandom_r): s = w0:w1, i = w2:w3 (high:low), inc = 2 i + 1, state =
# ((inc + s) * MULT + inc) mod 2**128. Computed here for many streams at once
# on (high, low) uint64 columns; a StreamSet checks itself against numpy once
# per process and is not used if they ever differ.
_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645
_M64 = (1 << 64) - 1


def _mul64(x: np.ndarray, y: int) -> tuple[np.ndarray, np.ndarray]:
    """The full 128-bit products ``x * y`` (uint64 column times a 64-bit constant) as (high, low)."""
    m32 = np.uint64(_M32)
    s32 = np.uint64(32)
    x0, x1 = x & m32, x >> s32
    y0, y1 = np.uint64(y & _M32), np.uint64(y >> 32)
    p00, p01, p10, p11 = x0 * y0, x0 * y1, x1 * y0, x1 * y1
    mid = (p00 >> s32) + (p01 & m32) + (p10 & m32)
    return p11 + (p01 >> s32) + (p10 >> s32) + (mid >> s32), (mid << s32) | (p00 & m32)


def _add128(ah, al, bh, bl):
    lo = al + bl
    return ah + bh + (lo < al).astype(np.uint64), lo


def _mul128(ah, al, m: int):
    """``(a * m) mod 2**128`` for a (high, low) column and a 128-bit constant."""
    mh, ml = m >> 64, m & _M64
    hi, lo = _mul64(al, ml)
    return hi + ah * np.uint64(ml) + al * np.uint64(mh), lo


def pcg64_states(seed: int, keys: np.ndarray) -> np.ndarray:
    """PCG64's state right after ``PCG64(SeedSequence(seed, spawn_key=key))``
    for each row of ``keys`` (each < 2**32): columns state (low, high), inc
    (low, high), as numpy's little-endian ``__uint128_t`` lays them out."""
    sl, sh, il, ih = pcg64_columns(seed, keys)
    out = np.empty((len(sl), 4), dtype=np.uint64)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = sl, sh, il, ih
    return out


def pcg64_columns(seed: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`pcg64_states` as four columns: state low, high, inc low, high."""
    w = _seed_words(seed, keys)
    one = np.uint64(1)
    ih, il = (w[2] << one) | (w[3] >> np.uint64(63)), (w[3] << one) | one  # inc = 2 i + 1
    sh, sl = _add128(ih, il, w[0], w[1])
    sh, sl = _mul128(sh, sl, _PCG_MULT)
    sh, sl = _add128(sh, sl, ih, il)
    return sl, sh, il, ih


class StreamSet:
    """Many keyed streams as one array of PCG64 states and one :class:`numpy.random.Generator`.

    ``use(i)`` points the shared generator at stream ``i``'s state and returns
    it: what it draws then are exactly the values of stream ``i``'s own
    generator (``Streams.worker(i, purpose)``), and drawing advances that
    stream's state in place. ``keep(i)`` stores the generator's buffered half
    word (PCG64's ``next_uint32``, used by ``integers``) with the stream; call
    it before using another stream. ``reset(i)`` returns stream ``i`` to its
    start: kept in ``start``, or with ``restart`` (``restart(i)``: stream
    ``i``'s first state, computed again, about 0.1 ms; ``restart(None)``: all
    of them) not kept, and ``states`` is then used in place, until resets
    become many (more than 8 or N / 512: then every start is computed at once,
    6 ms at N = 32,768, and kept). No Python object per stream, 40 bytes a
    stream (72 keeping the starts; inlined for
    performance: building 32,768 ``Generator`` objects took 0.3 s; switching
    streams costs about 0.2 us).

    The generator's bit-generator struct (numpy's documented
    ``ctypes.state_address``: ``{pcg64_random_t *state; int has_uint32;
    uint32 uinteger}``) is pointed at this object's array and pointed back
    when the object goes away. :func:`stream_set` checks the layout and the
    seeding arithmetic against numpy once per process and gives ``None``
    (per-stream generators, as before) where they differ.
    """

    __slots__ = ("state", "start", "buf", "gen", "_pv", "_orig", "_base", "_restart", "_resets", "__weakref__")

    def __init__(self, states: np.ndarray, restart=None):
        import ctypes

        self._restart = restart
        self._resets = max(8, len(states) // 512)  # resets left before every start is kept
        self.start = states if restart is None else None
        #: current states, one row per stream (PCG64's state and inc, low word first)
        self.state = (np.array(states, dtype=np.uint64, order="C") if restart is None
                      else np.ascontiguousarray(states, dtype=np.uint64))
        #: each stream's has_uint32 and uinteger, as one 64-bit word
        self.buf = np.zeros(len(states), dtype=np.uint64)
        self.gen = np.random.Generator(np.random.PCG64(0))
        addr = self.gen.bit_generator.ctypes.state_address
        self._pv = np.ctypeslib.as_array((ctypes.c_uint64 * 2).from_address(addr))
        self._orig = int(self._pv[0])
        self._base = self.state.ctypes.data

    def use(self, i: int) -> np.random.Generator:
        pv = self._pv
        pv[0] = self._base + 32 * i
        pv[1] = self.buf[i]
        return self.gen

    def keep(self, i: int) -> None:
        self.buf[i] = self._pv[1]

    def reset(self, i: int) -> None:
        if self.start is None:
            self._resets -= 1
            if self._resets >= 0:
                self.state[i] = self._restart(i)
                self.buf[i] = 0
                return
            self.start = self._restart(None)  # many resets: keep every start
        self.state[i] = self.start[i]
        self.buf[i] = 0

    def pointers(self) -> list[int]:
        """Each stream's state address, for a loop that sets ``self._pv[0]`` itself."""
        return (np.uint64(self._base) + np.uint64(32) * np.arange(len(self.state), dtype=np.uint64)).tolist()

    def __del__(self):
        try:
            self._pv[0] = self._orig
            self._pv[1] = 0
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


_set_ok: bool | None = None


def _known_layout() -> bool:
    """Whether this numpy's PCG64 struct is one a :class:`StreamSet` may write into: numpy 1.17
    to 2.x (the layout checked by the tests), unless ``ASYNCSIM_STREAM_SET=0``. The self-check
    in :func:`_set_matches_numpy` writes into the struct too, so an unknown numpy is never probed."""
    import os

    if os.environ.get("ASYNCSIM_STREAM_SET", "1") == "0":
        return False
    v = np.lib.NumpyVersion(np.__version__)
    return v >= "1.17.0" and v < "3.0.0"


def _set_matches_numpy() -> bool:
    global _set_ok
    if _set_ok is None:
        try:
            probe = np.array([[0, 7, 0], [1, 3, 2], [0, 2**32 - 1, 4]], dtype=np.int64)
            seed = 2**40 + 5
            ss = StreamSet(pcg64_states(seed, probe))
            ok = True
            first = []
            for i in range(len(probe)):  # the streams interleaved: part of each, then the rest
                g = ss.use(i)
                first.append((g.integers(0, 5, 3), g.random(2)))
                ss.keep(i)
            for i, r in enumerate(probe):
                ref = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=tuple(int(x) for x in r))))
                a = ref.integers(0, 5, 3), ref.random(3)
                b = np.concatenate([first[i][1], ss.use(i).random(1)])
                ss.keep(i)
                ok &= bool(np.array_equal(a[0], first[i][0]) and np.array_equal(a[1], b))
            _set_ok = ok
        except Exception:  # pragma: no cover - another numpy layout: per-stream generators instead
            _set_ok = False
    return _set_ok


def stream_set(seed: int, keys: np.ndarray, restart=None) -> StreamSet | None:
    """A :class:`StreamSet` of ``SeedSequence(seed, spawn_key=key)`` streams, one per
    row of ``keys``; ``None`` where it would not match numpy (keys of 2**32 or
    more, or a numpy whose PCG64 is laid out otherwise). ``restart``: see
    :class:`StreamSet`."""
    return StreamSet(pcg64_states(seed, keys), restart) if _sets_match(keys) else None


def _sets_match(keys: np.ndarray) -> bool:
    """Whether a :class:`StreamSet` of these keys would match numpy (see :func:`stream_set`)."""
    if len(keys) and (np.any(keys >= 2**32) or np.any(keys < 0)):
        return False
    return _known_layout() and _batch_matches_numpy() and _set_matches_numpy()


class GeneratorSet:
    """:class:`StreamSet`'s interface over one generator per stream (where a
    StreamSet would not match numpy)."""

    def __init__(self, streams: Streams, n: int, purpose: str):
        self.streams, self.purpose = streams, purpose
        self.gens = streams.workers(n, purpose)

    def use(self, i: int) -> np.random.Generator:
        return self.gens[i]

    def keep(self, i: int) -> None:
        pass

    def reset(self, i: int) -> None:
        self.gens[i] = self.streams.worker(i, self.purpose)


def draw_chunk(src, i: int, dist, done: int, k: int) -> np.ndarray:
    """Stream ``i``'s BlockSampler values from draw ``done`` on, for a stream left
    where :func:`draw_first` (``n = done``) or the previous call left it: the
    continuation of an event engine's draws one chunk at a time.

    A family with ``prefix_draws`` consumes its generator value after value,
    so the next ``k`` values drawn from where the stream stands are draws
    ``done`` to ``done + k`` of its 1024-blocks, across block boundaries too
    (nothing is redrawn). Another family's values depend on the block they are
    drawn in: this gives the rest of the block holding draw ``done`` (the stream
    started again and redrawn up to that block; only the first call, since
    :func:`draw_first` leaves the stream at a block's end) or, at a block
    boundary, the next whole block, whatever ``k``. O(values drawn)."""
    if dist.prefix_draws:
        out = np.asarray(dist.sample(src.use(i), k), dtype=np.float64)
        src.keep(i)
        return out
    r = done % BLOCK
    sample = dist.sample
    if r:
        src.reset(i)
        for _ in range(done // BLOCK + 1):  # up to the block that holds draw `done`
            block = np.asarray(sample(src.use(i), BLOCK), dtype=np.float64)
            src.keep(i)
        return block[r:]
    block = np.asarray(sample(src.use(i), BLOCK), dtype=np.float64)
    src.keep(i)
    return block


def draw_first(src, groups, n: int, out: np.ndarray | None = None, start: int = 0) -> np.ndarray:
    """Every stream's first ``n`` draws (BlockSampler's values), one row per
    stream; ``groups``: ``[(dist, count), ...]`` in stream order from stream
    ``start`` on. The streams
    are left part-drawn: continue one with :func:`draw_chunk`.

    On a :class:`StreamSet` with families that have ``prefix_draws``, one
    pointer write and one draw call per stream and block (inlined for
    performance: no object per stream); exponential draws are ``mean *
    standard_exponential()``, numpy's own formula (``random_exponential``), so
    the scaling is done once per group. Otherwise each stream draws whole
    blocks and the first ``n`` values are kept. Either way a family with
    ``prefix_draws`` is left exactly ``n`` draws in and another at the end of
    the block holding draw ``n - 1`` (what :func:`draw_chunk` continues from)."""
    total = sum(k for _, k in groups)
    out = np.empty((total, n)) if out is None else out
    cuts = [(j, min(j + BLOCK, n)) for j in range(0, n, BLOCK)]
    if not isinstance(src, StreamSet):
        row0 = 0
        for dist, count in groups:
            sample, prefix = dist.sample, dist.prefix_draws
            for w in range(row0, row0 + count):
                rng = src.use(start + w)
                for a, b in cuts:  # (a prefix family is left exactly n draws in, as on a StreamSet)
                    out[w, a:b] = sample(rng, b - a) if prefix else sample(rng, BLOCK)[:b - a]
                src.keep(start + w)
            row0 += count
        return out
    pv, gen, ptrs, bufs = src._pv, src.gen, src.pointers()[start:start + total], src.buf[start:start + total]
    row0 = 0
    from .distributions import Exponential

    for dist, count in groups:
        rows = out[row0:row0 + count]
        mine = ptrs[row0:row0 + count]
        if type(dist) is Exponential:
            se = gen.standard_exponential
            if len(cuts) == 1:
                for p, r in zip(mine, rows):
                    pv[0] = p
                    se(out=r)
            else:
                for p, r in zip(mine, rows):
                    pv[0] = p
                    for a, b in cuts:
                        se(out=r[a:b])
            if dist.mean_ != 1.0:  # (x * 1.0 is x)
                rows *= dist.mean_
        else:
            sample, prefix = dist.sample, dist.prefix_draws
            for w, (p, r) in enumerate(zip(mine, rows), row0):
                pv[0] = p
                pv[1] = bufs[w]
                for a, b in cuts:
                    r[a:b] = sample(gen, b - a) if prefix else sample(gen, BLOCK)[:b - a]
                bufs[w] = pv[1]
        row0 += count
    return out


_EMPTY = array.array("d")


class BlockSampler:
    """Hands out draws of one distribution from one generator, ``BLOCK`` at a time.

    ``next()`` is the per-event call (inlined for performance: a list pop-free
    index into a pre-drawn block). ``take(n)`` returns the next ``n`` draws as an
    array, consuming the stream exactly as ``n`` calls of ``next()`` would. The
    block is an ``array('d')`` (8 KB, not a list of Python floats' 32 KB: the
    event engines hold one per worker for random network latencies and two for
    random crashes).
    """

    __slots__ = ("dist", "rng", "_buf", "_i", "_n")

    def __init__(self, dist, rng: np.random.Generator, block: int = BLOCK):
        self.dist = dist
        self.rng = rng
        self._n = block
        self._buf = _EMPTY
        self._i = 0

    def _refill(self) -> None:
        self._buf = array.array("d", np.ascontiguousarray(self.dist.sample(self.rng, self._n), dtype=np.float64)
                                .tobytes())
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
            self._buf, self._i = _EMPTY, 0  # (next() after this refills: the block is handed out)
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
