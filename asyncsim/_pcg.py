"""numpy's exponential draws made for many PCG64 streams at once, value for value.

The vectorised engine's draws come from one PCG64 stream per worker (see
:mod:`asyncsim.rng`). Drawing them with numpy costs one generator call per
stream, about 0.7 us a worker whatever the number of draws: at 32,768 workers
and a few draws each that is most of a run. :class:`ExpLanes` instead steps
every stream's 128-bit state together on numpy uint64 columns and applies
numpy's own exponential ziggurat to the outputs, so that one numpy operation
serves all workers:

* PCG64 (``numpy/random/src/pcg64``): state' = state * MULT + inc (mod 2**128),
  output XSL-RR of the new state: ``rotr64(high ^ low, high >> 58)``;
* ``random_standard_exponential`` (``numpy/random/src/distributions``): from
  one 64-bit output ``r``, ``i = (r >> 3) & 0xFF``, ``R = r >> 11``; the draw
  is ``R * we[i]`` when ``R < ke[i]`` (about 97.8 % of draws), else a slower
  path that uses more outputs.

The ziggurat's tables (``we``, ``ke``) are not copied from numpy: they are read
off the installed numpy once per process (:func:`exp_tables`), by setting a
stream to states whose next output is chosen (PCG64's step is invertible) and
watching what numpy returns and how far the state moved. Draws off the fast
path are made by numpy itself from the stream's state at that point (through
:class:`~asyncsim.rng.StreamSet`), or, where hundreds come at once, their
acceptance test is made here too and only the doubtful ones are numpy's
(:meth:`ExpLanes._unlikely`), so every value and every state after it is
numpy's. The whole construction checks itself against numpy once per process
(:func:`available`) and is not used where it would differ.

Cost: about 45 numpy operations per step over the streams still drawing
(0.3-0.5 ns a stream each, 1-2 us of call overhead each), so 25-35 ns a draw
at thousands of streams and mostly call overhead at a few: the engine uses it
where streams are many and draws per stream few (``vector_engine._lanes_for``).
"""

from __future__ import annotations

import threading

import numpy as np

from .rng import _M32, _M64, _PCG_MULT, StreamSet

__all__ = ["ExpLanes", "available", "exp_tables"]

_MASK128 = (1 << 128) - 1
_MULT_INV = pow(_PCG_MULT, -1, 1 << 128)
_ML, _MH = np.uint64(_PCG_MULT & _M64), np.uint64(_PCG_MULT >> 64)
_B0, _B1 = np.uint64(_PCG_MULT & _M32), np.uint64((_PCG_MULT >> 32) & _M32)
_U32, _S32 = np.uint64(_M32), np.uint64(32)
_S3, _S8, _S58, _S63, _FF = np.uint64(3), np.uint64(8), np.uint64(58), np.uint64(63), np.uint64(0xFF)

_tables: tuple[np.ndarray, np.ndarray] | None | bool = False  # False: not read yet; None: unavailable


# ------------------------------------------------------------ reading the tables off numpy
_PROBE_INC = ((0xDA3E39CB94B95BDB0123456789ABCDEF << 1) | 1) & _MASK128
_PROBE_HIGH = 0x0123456789ABCDEF & ((1 << 58) - 1)  # top 6 bits 0: no rotation


def _probe(outputs: list[int], second: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """numpy's ``standard_exponential()`` on a stream whose next 64-bit output is
    each of ``outputs`` (and the one after it ``second``, if given): the values,
    and whether numpy used that one output only (the ziggurat's fast path)."""
    rows, after = [], []
    for u in outputs:
        post = (_PROBE_HIGH << 64) | (int(u) ^ _PROBE_HIGH)
        inc = _PROBE_INC
        if second is not None:  # an increment that makes the step after `post` output `second`
            for h in (_PROBE_HIGH, _PROBE_HIGH ^ 1):  # (one of the two makes it odd)
                inc = (((h << 64) | (int(second) ^ h)) - post * _PCG_MULT) & _MASK128
                if inc & 1:
                    break
        pre = ((post - inc) * _MULT_INV) & _MASK128  # the state one step before `post`
        rows.append([pre & _M64, pre >> 64, inc & _M64, inc >> 64])
        after.append(post)
    ss = StreamSet(np.array(rows, dtype=np.uint64).reshape(-1, 4))
    vals = np.empty(len(outputs))
    for i in range(len(outputs)):
        vals[i] = ss.use(i).standard_exponential()
    st = ss.state
    one = np.array([(int(a) | (int(b) << 64)) == p for a, b, p in zip(st[:, 0], st[:, 1], after)], dtype=bool)
    return vals, one


def _output(R: int, i: int) -> int:
    """The 64-bit output whose ziggurat layer is ``i`` and whose 53-bit part is ``R``."""
    return (R << 11) | (i << 3)


def _read_tables() -> tuple[np.ndarray, np.ndarray]:
    """``(we, ke)``: for each layer ``i``, numpy's fast-path draw is ``R * we[i]``
    exactly when ``R < ke[i]`` (``ke[i] = 0``: that layer never takes it).

    ``we[i]`` is the draw for ``R = 1`` (in a layer never fast, that draw kept
    by a next output of 0). ``ke[i]`` is found by bisection on
    ``R``, first in a window of 16 around ``we[i-1] / we[i] * 2**53`` (the
    ziggurat's ratio of successive layers, which the table matches to a few
    units), over all of ``[0, 2**53]`` where the window does not hold it.
    About 700 numpy calls, a few ms, once per process."""
    layers = list(range(256))
    we, fast1 = _probe([_output(1, i) for i in layers])
    top = [i for i in layers if i > 0 and not fast1[i]]
    if top:  # (layer 1 is never fast) then U = 0, which keeps any draw of the layer: x = we[i]
        we[top] = _probe([_output(1, i) for i in top], second=0)[0]
    lo = [0] * 256
    hi = [1 << 53] * 256
    # windows: [c - 8, c + 8) holds ke when R = c - 8 is fast and R = c + 8 is slow
    cand = {}
    for i in range(2, 256):
        if we[i] > 0 and we[i - 1] > 0:
            c = int(we[i - 1] / we[i] * 2.0**53)
            if 8 <= c <= (1 << 53) - 8:
                cand[i] = c
    if cand:
        keys = list(cand)
        tests = [_output(cand[i] - 8, i) for i in keys] + [_output(cand[i] + 8, i) for i in keys]
        _, f = _probe(tests)
        for j, i in enumerate(keys):
            if f[j] and not f[len(keys) + j]:
                lo[i], hi[i] = cand[i] - 7, cand[i] + 8  # fast below lo - 1 .. ke in [lo, hi]
    # bisection: invariant R < lo fast, R >= hi slow (R = 2**53 never occurs: slow by definition)
    while True:
        todo = [i for i in layers if lo[i] < hi[i]]
        if not todo:
            break
        mid = {i: (lo[i] + hi[i]) // 2 for i in todo}
        _, f = _probe([_output(mid[i], i) for i in todo])
        for i, fast in zip(todo, f):
            if fast:
                lo[i] = mid[i] + 1
            else:
                hi[i] = mid[i]
    ke = np.array(lo, dtype=np.uint64)
    return np.asarray(we, dtype=np.float64), ke


def exp_tables() -> tuple[np.ndarray, np.ndarray] | None:
    """The installed numpy's exponential ziggurat tables ``(we, ke)`` (read once
    per process), or ``None`` where they cannot be read (no :class:`StreamSet`)."""
    global _tables
    if _tables is False:
        from .rng import _known_layout, _set_matches_numpy

        try:
            _tables = _read_tables() if _known_layout() and _set_matches_numpy() else None
        except Exception:  # pragma: no cover - an unexpected numpy: numpy's own calls instead
            _tables = None
    return _tables


_ok: bool | None = None


def available() -> bool:
    """Whether :class:`ExpLanes` gives numpy's values on this numpy (checked once
    per process: 64 streams, 40 draws each, against numpy's own generators,
    slow-path draws included)."""
    global _ok
    if _ok is None:
        _ok = False
        if exp_tables() is not None:
            try:
                from .rng import pcg64_states

                seed = 2**40 + 7
                keys = np.zeros((64, 3), dtype=np.int64)
                keys[:, 1] = np.arange(64)
                lanes = ExpLanes(pcg64_states(seed, keys))
                got = np.stack([lanes.draw() for _ in range(40)], axis=1)
                want = np.stack([np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(0, i, 0))))
                                 .standard_exponential(40) for i in range(64)])
                _ok = bool(np.array_equal(got, want))
            except Exception:  # pragma: no cover - defensive: numpy's own calls instead
                _ok = False
    return _ok


# ------------------------------------------------------------ the streams, stepped together
class ExpLanes:
    """Standard-exponential draws from many PCG64 streams, one step for a set of
    streams at a time, each stream's values exactly numpy's
    (``Generator.standard_exponential`` on that stream) in order.

    ``states``: the streams' PCG64 states, ``(streams, 4)`` uint64 rows (state
    low, high, inc low, high: :func:`~asyncsim.rng.pcg64_states`, or a
    :class:`~asyncsim.rng.StreamSet`; both left as they are) or those four
    columns (:func:`~asyncsim.rng.pcg64_columns`; drawing advances them). ``draw(sel)``
    makes the next draw of each stream in ``sel`` (indices; all streams when
    omitted) and returns the values in that order. Memory: 32 bytes a stream,
    plus a workspace of 15 columns of the streams' number (kept per thread up to
    65,536 streams). Use :func:`available` first.
    """

    def __init__(self, states: np.ndarray):
        tab = exp_tables()
        if tab is None:  # pragma: no cover - callers check available()
            raise RuntimeError("numpy's exponential tables could not be read")
        we, ke = tab
        self.we, self.ke = we, ke.view(np.int64)  # (ke < 2**53: compared with int64 draws)
        if isinstance(states, tuple):  # columns (rng.pcg64_columns): used as they are
            self.lo, self.hi, self.il, self.ih = states
        else:
            st = states.state if isinstance(states, StreamSet) else states
            self.lo, self.hi = st[:, 0].copy(), st[:, 1].copy()
            self.il, self.ih = st[:, 2].copy(), st[:, 3].copy()
        self._ws: _Work | None = None
        self._fe_cache = None

    def subset(self, sel: np.ndarray) -> "ExpLanes":
        """The streams ``sel`` as lanes of their own (copies; these here are left as
        they are). Drawing for all of a subset is cheaper than for a selection,
        step after step, once most streams are done."""
        sub = object.__new__(ExpLanes)
        sub.we, sub.ke, sub._ws, sub._fe_cache = self.we, self.ke, None, self._fe_cache
        sub.lo, sub.hi, sub.il, sub.ih = self.lo[sel], self.hi[sel], self.il[sel], self.ih[sel]
        return sub

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the streams where ``mask`` is true (renumbered in order)."""
        self.lo, self.hi, self.il, self.ih = self.lo[mask], self.hi[mask], self.il[mask], self.ih[mask]

    def finish_numpy(self, i: int, out: np.ndarray) -> None:
        """Fill ``out`` with stream ``i``'s next draws by numpy itself (one call: where
        only a few streams are left to draw, cheaper than steps of the lanes)."""
        sc = _scratch(1)
        st = sc.state
        st[0] = self.lo[i], self.hi[i], self.il[i], self.ih[i]
        sc.use(0).standard_exponential(out=out)
        self.lo[i], self.hi[i] = st[0, 0], st[0, 1]

    def draw(self, sel: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """The next draw of each stream in ``sel`` (all when omitted), in that order,
        written into ``out`` when given (float64, the selection's length)."""
        k = len(self.lo) if sel is None else len(sel)
        ws = self._ws
        if ws is None or ws.n < k:
            ws = self._ws = _work(len(self.lo))
        if sel is None:
            lo, hi, il, ih = self.lo, self.hi, self.il, self.ih
        else:
            lo, hi, il, ih = (np.take(a, sel, out=g[:k]) for a, g in zip((self.lo, self.hi, self.il, self.ih), ws.g))
        nlo, nhi = ws.nlo[:k], ws.nhi[:k]
        o = _step(lo, hi, il, ih, ws, nlo, nhi)
        val = np.empty(k) if out is None else out
        slow = self._fast(o, ws, val)
        if len(slow) >= _VECTOR_SLOW:
            self._unlikely(slow, val, ws.layer[:k].view(np.int64), nlo, nhi, lo, hi, il, ih)
        elif len(slow):  # numpy's own draws there, from the states before this step
            val[slow], nlo[slow], nhi[slow] = self._numpy_draws(lo[slow], hi[slow], il[slow], ih[slow])
        if sel is None:
            self.lo[:], self.hi[:] = nlo, nhi
        else:
            self.lo[sel], self.hi[sel] = nlo, nhi
        return val

    def _fast(self, out: np.ndarray, ws: "_Work | None" = None, val: np.ndarray | None = None) -> np.ndarray:
        """The ziggurat's fast path on 64-bit outputs (consumed) into ``val``, layers
        into ``ws.layer``: the positions where the fast path does not apply."""
        k = len(out)
        if ws is None:
            ws = _Work(k)
            val = np.empty(k)
        out >>= _S3
        layer = np.bitwise_and(out, _FF, out=ws.layer[:k]).view(np.int64)  # (indices as intp: no cast)
        out >>= _S8
        R = out.view(np.int64)
        val[:] = R
        val *= self.we.take(layer, out=ws.f[:k])
        return np.flatnonzero(np.greater_equal(R, self.ke.take(layer, out=ws.t[:k].view(np.int64)), out=ws.b[:k]))

    def _unlikely(self, pos, val, layer, nlo, nhi, lo, hi, il, ih) -> None:
        """numpy's ``standard_exponential_unlikely`` for the draws at ``pos``, in place
        (their values and the states after them).

        In a layer ``i >= 1`` numpy takes one more output ``U`` (as a double) and keeps
        the draw ``x`` when ``(fe[i-1] - fe[i]) U + fe[i] < exp(-x)``, else draws
        again from there. That test and the draw again (when it takes the fast path)
        are made here for all of them at once; ``fe[i] = exp(-x_i)`` (``x_i = we[i]
        2**53``, the layer's edge; 1 above the top layer) is computed, not read off
        numpy, so a test whose two sides are within 1e-9 of each other is left to
        numpy, as are the tail (layer 0: ``r - log1p(-U)``) and draws again that
        miss the fast path: numpy draws those from the state before the draw.
        Worth it from a few hundred such draws (``_VECTOR_SLOW``): below, the
        numpy operations' overhead is more than numpy's own calls."""
        fe, dfe = self._fe()
        L = layer[pos]
        x = val[pos]
        u = _step(nlo[pos], nhi[pos], il[pos], ih[pos])  # U: the next output, as a double
        u >>= np.uint64(11)
        lhs = u.astype(np.float64)
        lhs *= 2.0**-53
        lhs *= dfe.take(L)
        lhs += fe.take(L)
        rhs = np.exp(-x)
        yes = lhs < rhs * (1 - 1e-9)
        yes &= L > 0
        no = lhs > rhs * (1 + 1e-9)
        no &= L > 0
        p = pos[yes]
        nlo[p], nhi[p] = u.nlo[yes], u.nhi[yes]  # (val[p] is x already)
        # the draw again, from the state after U
        p = pos[no]
        o = _step(u.nlo[no], u.nhi[no], il[p], ih[p])
        x2 = np.empty(len(o))
        slow = self._fast(o, _Work(len(o)), x2)
        done = np.ones(len(o), dtype=bool)
        done[slow] = False
        q = p[done]
        val[q], nlo[q], nhi[q] = x2[done], o.nlo[done], o.nhi[done]
        # numpy's own: the tail, the close calls and the draws again that are slow again
        left = np.concatenate([pos[~(yes | no)], p[slow]])
        if len(left):
            val[left], nlo[left], nhi[left] = self._numpy_draws(lo[left], hi[left], il[left], ih[left])

    def _fe(self):
        if self._fe_cache is None:
            fe = np.exp(-(self.we * 2.0**53))
            fe[0] = 1.0  # above the top layer (layer 0's own edge is unused: the tail is numpy's)
            dfe = np.zeros(256)
            dfe[1:] = fe[:-1] - fe[1:]
            self._fe_cache = (fe, dfe)
        return self._fe_cache

    def _numpy_draws(self, lo, hi, il, ih):
        k = len(lo)
        sc = _scratch(k)
        st = sc.state
        st[:k, 0], st[:k, 1], st[:k, 2], st[:k, 3] = lo, hi, il, ih
        pv, se = sc._pv, sc.gen.standard_exponential  # (sc.use(j) inlined: one pointer write a draw)
        pv[1] = 0
        v = []
        for a in range(sc._base, sc._base + 32 * k, 32):
            pv[0] = a
            v.append(se())
        return np.array(v), st[:k, 0].copy(), st[:k, 1].copy()


class _Work:
    """Scratch columns for :func:`_step` and the fast path (reused: fresh pages cost
    more than the arithmetic)."""

    def __init__(self, n: int):
        self.n = n
        e = lambda: np.empty(n, dtype=np.uint64)  # noqa: E731
        self.a0, self.a1, self.mid, self.t, self.u = e(), e(), e(), e(), e()
        self.layer, self.o = e(), e()
        self.nlo, self.nhi = e(), e()
        self.g = [e(), e(), e(), e()]
        self.f = np.empty(n)
        self.b = np.empty(n, dtype=bool)


_cache = threading.local()
#: from this many draws off the fast path in one step, :meth:`ExpLanes._unlikely` (else numpy's calls)
_VECTOR_SLOW = 200
#: a workspace up to this many streams is kept for the next run (15 columns of 8 bytes a stream:
#: 7.9 MB at 65,536), so that repeated runs do not pay for fresh pages
_KEEP_STREAMS = 1 << 16


def _scratch(k: int) -> StreamSet:
    """This thread's scratch :class:`StreamSet` of at least ``k`` streams (numpy's own draws)."""
    sc = getattr(_cache, "scratch", None)
    if sc is None or len(sc.state) < k:
        sc = _cache.scratch = StreamSet(np.zeros((max(k, 1024), 4), dtype=np.uint64))
    return sc


def _work(n: int) -> _Work:
    """A :class:`_Work` for ``n`` streams: this thread's kept one when it is large enough."""
    ws = getattr(_cache, "ws", None)
    if ws is not None and ws.n >= n:
        return ws
    ws = _Work(n)
    if n <= _KEEP_STREAMS:
        _cache.ws = ws
    return ws


class _Out(np.ndarray):
    """The outputs of :func:`_step` with the new state words attached (``.nlo``, ``.nhi``)."""


def _step(lo, hi, il, ih, ws: _Work | None = None, nlo=None, nhi=None) -> np.ndarray:
    """One PCG64 step of every stream: the 64-bit outputs, and the new (low,
    high) state words in ``nlo``, ``nhi`` (fresh arrays when not given: then they
    are also the result's ``.nlo``, ``.nhi``). The inputs are left as they were."""
    k = len(lo)
    if ws is None:
        ws = _Work(k)
    if nlo is None:
        nlo, nhi = np.empty(k, dtype=np.uint64), np.empty(k, dtype=np.uint64)
    a0, a1, mid, t, u = ws.a0[:k], ws.a1[:k], ws.mid[:k], ws.t[:k], ws.u[:k]
    # (high, low) of lo * MULT_low: the 64 x 64 -> 128 product on 32-bit halves
    np.bitwise_and(lo, _U32, out=a0)
    np.right_shift(lo, _S32, out=a1)
    np.multiply(a0, _B0, out=mid)
    mid >>= _S32
    np.multiply(a0, _B1, out=t)
    np.bitwise_and(t, _U32, out=a0)  # (a0 is reused: low half of a0 * B1)
    mid += a0
    t >>= _S32
    np.multiply(a1, _B0, out=u)
    np.right_shift(u, _S32, out=a0)
    t += a0
    u &= _U32
    mid += u
    a1 *= _B1
    t += a1
    mid >>= _S32
    t += mid  # t: high word of lo * MULT_low
    # new state = state * MULT + inc (mod 2**128)
    np.multiply(hi, _ML, out=nhi)
    np.multiply(lo, _MH, out=u)
    nhi += u
    nhi += t
    nhi += ih
    np.multiply(lo, _ML, out=nlo)
    nlo += il
    np.less(nlo, il, out=ws.b[:k])
    nhi += ws.b[:k]  # the carry out of the low word
    # XSL-RR output of the new state
    x = np.bitwise_xor(nhi, nlo, out=t)
    r = np.right_shift(nhi, _S58, out=u)
    out = np.right_shift(x, r, out=ws.o[:k]).view(_Out)
    np.negative(r, out=r)
    r &= _S63
    x <<= r
    out |= x
    out.nlo, out.nhi = nlo, nhi
    return out
