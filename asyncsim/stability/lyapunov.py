"""Trace criterion: the top Lyapunov exponent of the linearised recursion driven by a real trace.

For a 1-D quadratic with sharpness a and α = a·η, replaying a trace gives (DESIGN.md, and the
trainer's semantics in :mod:`asyncsim.train.optim`)

* ``sgd``:      x_{t+1} = x_t − α ĝ_t,                   ĝ_t = Σ_{rows j of step t} w_j x_{read_version_j}
* ``momentum``: v_{t+1} = m v_t − α(1−m) ĝ_t,  x_{t+1} = x_t + v_{t+1}        (paper eq. 9)
* ``shifted``:  for each row j: v_{w_j} ← m v_{w_j} − α(1−m) x_{read_version_j};
                x_{t+1} = x_t + Σ_j w_j v_{w_j}      (each worker keeps its velocity; paper eq. 10)

with w_j = 1/K_t for an update averaging K_t gradients (dropped rows contribute nothing). The
largest Lyapunov exponent λ(α) = lim (1/T) log ‖state_T‖ is estimated over the whole trace after a
burn-in, with periodic renormalisation (the log of each normaliser is accumulated), for a vector of
α values advanced together. This keeps every correlation of the real delays (who is slow, how
delays cluster) that the i.i.d. models drop. α* is where λ crosses 0.

Inlined for performance: the step loop runs in Python over plain lists, and each step is one or
two numpy operations on the vector of α values; for ``sgd``, runs of consecutive steps whose reads
all predate the run are applied at once (a cumulative sum), which removes most of the Python
iterations for round-robin-like traces.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from .characteristic import check_optimizer

#: largest ring of past iterates the trace criterion allocates (staleness ≈ 4·10⁶ at 48 α values)
MAX_RING_BYTES = 2 << 30

#: a pass renormalises when its bound on the state's size passes e^500 (one block adds ≤ e^100,
#: far from overflow at e^709)
_SGD_LOG_BUDGET = 500.0


class _Plan:
    """Per-step structure of a trace, precomputed once and reused for every α pass."""

    def __init__(self, trace):
        rows, ptr = trace.step_index()
        T = int(trace.n_updates)
        if T == 0 or rows.size == 0:
            raise InputError("the trace criterion needs a trace with at least one applied update")
        self.T = T
        cols = trace.columns
        self.rv = cols["read_version"][rows].astype(np.int64)
        self.worker = cols["worker"][rows].astype(np.int64)
        self.wt = trace.row_weights()[rows]
        self.ptr = ptr
        self.counts = np.diff(ptr)
        st = cols["staleness"][rows]
        self.D = int(st.max()) if st.size else 0
        self.n_workers = max(int(trace.n_workers), 1)
        self.R = 1 << int(math.ceil(math.log2(self.D + 2 + 64)))  # ring of x values
        need = self.R * 8 * 64  # the ring holds one float per α advanced together (≤ 64)
        if need > MAX_RING_BYTES:
            raise InputError(f"trace criterion: staleness up to {self.D:,} needs a {need / 2**30:.3g} GiB ring "
                             f"of past iterates (limit {MAX_RING_BYTES / 2**30:.3g} GiB); use "
                             f"--criterion mean or mean-square for this trace")
        # sgd blocks: a run [t0, t1) of steps all of whose reads are <= t0 can be applied at once
        maxrv = np.full(T, -1, dtype=np.int64)
        has = self.counts > 0
        np.maximum.at(maxrv, np.repeat(np.arange(T), self.counts), self.rv)
        self.maxrv = maxrv
        self.has = has
        self._lists = None
        self._steps: dict = {}

    def sgd_lists(self):
        """Row pointers and ring indices of the reads as Python lists (built once per plan)."""
        if self._lists is None:
            mask = self.R - 1
            rv_ring = self.rv & mask
            self._lists = (self.ptr.tolist(), rv_ring, rv_ring.tolist(), bool(np.all(self.wt == 1.0)))
        return self._lists

    def sgd_steps(self, max_len: int, forced: int, burn: int,
                  unique_workers: bool = False) -> list[tuple[int, int]]:
        """The (t0, t1) runs of a pass: blocks of :meth:`sgd_blocks`, also cut every ``forced``
        steps and at the burn-in, runs shorter than 8 split into single steps (cheaper one by one
        than through the vectorised block path). Cached per arguments."""
        key = (max_len, forced, burn, unique_workers)
        if key not in self._steps:
            T = self.T
            cuts = list(range(forced, T, forced))
            # a block ends where the burn-in does: a block spanning it would normalise away its
            # growth after the burn-in, and a short trace done in one block then measured λ = 0
            if 0 < burn < T:
                cuts.append(burn)
            starts = sorted(set(self.sgd_blocks(max_len, unique_workers)).union(cuts))
            starts.append(T)
            steps = []
            for b in range(len(starts) - 1):
                t0, t1 = starts[b], starts[b + 1]
                if t1 - t0 >= 8:
                    steps.append((t0, t1))
                else:
                    steps.extend((t, t + 1) for t in range(t0, t1))
            self._steps = {key: steps}  # one entry: the passes of one α* search share it
        return self._steps[key]

    def sgd_blocks(self, max_len: int, unique_workers: bool = False) -> list[int]:
        """Starts of runs [t0, t1) of at most ``max_len`` steps in which every read is ≤ t0 (and,
        with ``unique_workers``, no worker has two rows: each row's worker last pushed before t0)."""
        starts = []
        maxrv = self.maxrv
        if unique_workers:
            # a row whose worker also had a row at a step ≥ t0 must start a new run: treat the step
            # of the worker's previous row + 1 as if it were a read
            prev = np.full(self.rv.size, -1, dtype=np.int64)
            step = np.repeat(np.arange(self.T), self.counts)
            order = np.lexsort((step, self.worker))
            same = self.worker[order][1:] == self.worker[order][:-1]
            prev[order[1:][same]] = step[order[:-1][same]]
            maxprev = np.full(self.T, -1, dtype=np.int64)
            np.maximum.at(maxprev, step, prev + 1)
            maxrv = np.maximum(maxrv, maxprev)
            # a step with two rows of one worker is a run of its own (applied row by row)
            alone = np.zeros(self.T, dtype=bool)
            alone[step[prev == step]] = True
            if alone.any():
                maxrv = np.where(alone, self.T + 1, maxrv)
                lone = alone.tolist()
            else:
                lone = None
        else:
            lone = None
        maxrv = maxrv.tolist()
        t0 = 0
        T = self.T
        while t0 < T:
            starts.append(t0)
            t = t0 + 1
            if lone is None or not lone[t0]:
                lim = min(T, t0 + max_len)
                while t < lim and maxrv[t] <= t0:
                    t += 1
            t0 = t
        return starts


def lyapunov_exponents(trace_or_plan, alphas, optimizer: str = "sgd", momentum: float = 0.0,
                       burn_in: float = 0.1, history: list | None = None,
                       renorm_every: int | None = None) -> np.ndarray:
    """λ(α) per step for each α in ``alphas`` (natural log), after discarding ``burn_in`` of the steps.

    ``history``, a list, receives ``(step, accumulated log-growth per α)`` at every renormalisation
    after the burn-in, from which :mod:`.uncertainty` takes the growth of each trace segment."""
    optimizer, m = check_optimizer(optimizer, momentum)
    plan = trace_or_plan if isinstance(trace_or_plan, _Plan) else _Plan(trace_or_plan)
    alphas = np.asarray(alphas, dtype=float).reshape(-1)
    if np.any(~np.isfinite(alphas)) or np.any(alphas <= 0):
        raise InputError("α values must be finite and > 0")
    T = plan.T
    burn = min(int(burn_in * T), T - 1)
    # each pass bounds its growth itself (measured per block): only the caller's cadence is forced
    every = plan.R if renorm_every is None else max(1, int(renorm_every))
    if optimizer == "sgd":
        return _run_sgd(plan, alphas, burn, every, history)
    return _run_momentum(plan, alphas, optimizer, m, burn, every, history)


def _state_norm(H: np.ndarray, t: int, D: int, mask: int) -> np.ndarray:
    """Max-norm, per α, of the recursion's state after step ``t``: the iterates x_{t−D} .. x_t
    (reads go back at most D steps). Older entries of the ring are not state: measuring them
    too made a decaying run look flat (λ = 0) until the ring wrapped, so a trace shorter than
    the ring got α* ≈ 0."""
    lo = max(0, t - D)
    if t - lo + 1 >= H.shape[0]:
        return np.maximum(H.max(axis=0), -H.min(axis=0))
    a, b = lo & mask, t & mask
    # inlined for performance: slices of the ring (no gathered copy, no |H| temporary)
    parts = (H[a:b + 1],) if a <= b else (H[a:], H[:b + 1])
    return np.maximum.reduce([np.maximum(p.max(axis=0), -p.min(axis=0)) for p in parts])


def _run_sgd(plan: _Plan, alphas: np.ndarray, burn: int, every: int, history=None) -> np.ndarray:
    """The ``sgd`` recursion over the whole trace. ``every`` is the most steps between exact
    renormalisations (the caller's cadence for ``history``); overflow is prevented separately by
    a running bound on the state's size.

    Inlined for performance. Renormalising the ring costs O(D·L) (D = largest staleness, L = number
    of α): done every ~100 steps, as before, it was 90 % of a pass on a 1024-worker trace
    (D ≈ 1.5·10⁴). Now it happens only when a log-space bound on the state's max-norm, relative to
    the last renormalisation, passes :data:`_SGD_LOG_BUDGET` (a single step multiplies it by at
    most 1 + α_max, since Σ w_j = 1; a block's new iterates are measured, and a block of n steps
    grows it by at most 1 + α_max·n ≤ e^100), at the burn-in, at the
    end, every ``every`` steps and every R/2 steps (an underflow guard for decaying α). λ is the
    same as with any other renormalisation schedule: log‖S_T‖ = Σ log(normalisers) + log‖H_T‖.
    """
    L = alphas.size
    R = plan.R
    mask = R - 1
    H = np.zeros((R, L))
    H[0] = 1.0
    acc = np.zeros(L)
    wt = plan.wt
    ptr, rv_ring, rvm, unit = plan.sgd_lists()
    T = plan.T
    neg_a = -alphas
    g1 = math.log1p(float(alphas.max()))  # log-growth bound of one step
    budget = _SGD_LOG_BUDGET
    # one block grows the state by at most 1 + α_max·(its length): keep that under e^100
    max_len = max(1, min(int(math.expm1(100.0) / max(float(alphas.max()), 1e-300)), R - plan.D - 2))
    forced = max(1, min(int(every), R // 2))
    steps = plan.sgd_steps(max_len, forced, burn)
    since = 0
    bound = 0.0  # log of an upper bound on the state's max-norm since the last renormalisation
    burned = burn == 0
    log, isfinite = math.log, math.isfinite
    for t0, t1 in steps:
        r0, r1 = ptr[t0], ptr[t1]
        if t1 - t0 == 1:
            if r1 - r0 == 1:
                # inlined for performance: one row of weight 1 (asynchronous SGD)
                g = H[rvm[r0]]
            elif r1 == r0:
                H[(t0 + 1) & mask] = H[t0 & mask]
                g = None
            else:
                g = wt[r0:r1] @ H[rv_ring[r0:r1]]
            if g is not None:
                H[(t0 + 1) & mask] = H[t0 & mask] + neg_a * g
                bound += g1
        else:
            # every read of steps t0..t1-1 predates t0: x_{t+1} = x_{t0} − α Σ_{s<=t} ĝ_s
            G = H[rv_ring[r0:r1]]
            if not unit:
                G *= wt[r0:r1, None]
            if r1 - r0 == t1 - t0:  # one row per step
                per_step = np.add.accumulate(G, axis=0, out=G)
            else:
                per_step = np.zeros((t1 - t0, L))
                np.add.at(per_step, np.repeat(np.arange(t1 - t0), plan.counts[t0:t1]), G)
                np.add.accumulate(per_step, axis=0, out=per_step)
            per_step *= neg_a
            per_step += H[t0 & mask]
            s = (t0 + 1) & mask
            if s + (t1 - t0) <= R:
                H[s:s + (t1 - t0)] = per_step
            else:
                H[np.arange(t0 + 1, t1 + 1) & mask] = per_step
            big = max(float(per_step.max()), -float(per_step.min()))
            if big > 0.0:
                bound = max(bound, log(big)) if isfinite(big) else math.inf
        since += t1 - t0
        if not burned and t1 >= burn:
            nrm = _state_norm(H, t1, plan.D, mask)
            H /= nrm
            burned = True
            since, bound = 0, 0.0
        elif since >= forced or bound > budget or t1 == T:
            nrm = _state_norm(H, t1, plan.D, mask)
            H /= nrm
            if burned:
                acc += np.log(nrm)
                if history is not None:
                    history.append((t1, acc.copy()))
            since, bound = 0, 0.0
    with np.errstate(divide="ignore"):
        return acc / max(T - burn, 1)


def _run_momentum(plan: _Plan, alphas: np.ndarray, optimizer: str, m: float, burn: int, every: int,
                  history=None) -> np.ndarray:
    """The ``momentum`` and ``shifted`` recursions; the state is the iterates x_{t−D}..x_t and the
    velocity (one per worker for ``shifted``).

    Inlined for performance, as :func:`_run_sgd`: runs of steps whose reads all predate the run
    (for ``shifted`` also with no worker twice) are applied at once. With reads fixed, momentum's
    velocities are a first-order filter, v_{t0+j+1} = m^{j+1} v_{t0} + Σ_{i≤j} m^{j−i} c ĝ_{t0+i}
    (one product with the lower-triangular matrix of powers of m), and ``shifted`` updates each
    worker's velocity once, m V_w + c x_read; x is then a cumulative sum. Renormalisation is exact
    and happens when a log-space bound on the state's size passes :data:`_SGD_LOG_BUDGET` (a step
    multiplies it by at most 1 + m + α(1−m); a run's new values are measured, and a run of n steps
    grows it by at most 1 + n(1 + α)), at the burn-in, at the end and every ``every`` steps.
    """
    L = alphas.size
    R = plan.R
    mask = R - 1
    H = np.zeros((R, L))
    H[0] = 1.0
    acc = np.zeros(L)
    ptr, rv_ring, rvm, unit = plan.sgd_lists()
    wk = plan.worker.tolist()
    worker = plan.worker
    wt = plan.wt
    T = plan.T
    c = -alphas * (1.0 - m)
    amax = float(alphas.max())
    g1 = math.log(1.0 + m + amax * (1.0 - m))  # log-growth bound of one step
    budget = _SGD_LOG_BUDGET
    shifted = optimizer == "shifted"
    if shifted:
        V = np.zeros((plan.n_workers, L))
    else:
        v = np.zeros(L)
    max_len = max(1, min(int(math.expm1(100.0) / (1.0 + amax)), R - plan.D - 2, 4096))
    forced = max(1, min(int(every), R // 2))
    steps = plan.sgd_steps(max_len, forced, burn, unique_workers=shifted)
    longest = max((t1 - t0 for t0, t1 in steps), default=1)
    if not shifted:
        j = np.arange(longest)
        with np.errstate(under="ignore"):
            powers = np.tril(m ** np.maximum(j[:, None] - j[None, :], 0))  # m^{j−i}, i ≤ j
            mpow = m ** (j + 1.0)
    since = 0
    bound = 0.0
    burned = burn == 0
    for t0, t1 in steps:
        r0, r1 = ptr[t0], ptr[t1]
        n = t1 - t0
        if n == 1:
            t = t0
            xt = H[t & mask]
            if shifted:
                if r1 - r0 == 1:
                    vw = V[wk[r0]]
                    vw *= m
                    vw += c * H[rvm[r0]]
                    H[(t + 1) & mask] = xt + vw
                else:
                    step = np.zeros(L)
                    for j_ in range(r0, r1):
                        vw = V[wk[j_]]
                        vw *= m
                        vw += c * H[rvm[j_]]
                        step += wt[j_] * vw
                    H[(t + 1) & mask] = xt + step
            else:
                if r1 - r0 == 1:
                    g = H[rvm[r0]]
                elif r1 == r0:
                    g = 0.0
                else:
                    g = wt[r0:r1] @ H[rv_ring[r0:r1]]
                v *= m
                v += c * g
                H[(t + 1) & mask] = xt + v
            bound += g1
        else:
            X = H[rv_ring[r0:r1]]  # every read predates t0
            one = r1 - r0 == n     # one row per step
            if shifted:
                wb = worker[r0:r1]
                Vn = V[wb]
                Vn *= m
                X *= c
                Vn += X
                V[wb] = Vn
                contrib = Vn if unit else Vn * wt[r0:r1, None]
                newv = Vn
            else:
                contrib = X if unit else X * wt[r0:r1, None]
            if one:
                per_step = contrib
            else:
                per_step = np.zeros((n, L))
                np.add.at(per_step, np.repeat(np.arange(n), plan.counts[t0:t1]), contrib)
            if not shifted:
                # v_{t0+j+1} = m^{j+1} v_{t0} + Σ_{i≤j} m^{j−i} c ĝ_{t0+i}
                vs = powers[:n, :n] @ (per_step * c)
                vs += mpow[:n, None] * v
                v = vs[-1].copy()
                per_step = vs
            xs = np.add.accumulate(per_step, axis=0)
            xs += H[t0 & mask]
            s0 = (t0 + 1) & mask
            if s0 + n <= R:
                H[s0:s0 + n] = xs
            else:
                H[np.arange(t0 + 1, t1 + 1) & mask] = xs
            big = max(float(xs.max()), -float(xs.min()))
            if shifted:
                big = max(big, float(newv.max()), -float(newv.min()))
            else:
                big *= 2.0  # v_{t1} = x_{t1} − x_{t1−1}: |v| ≤ 2 max |x| over the run, no need to measure it
            if big > 0.0:
                bound = max(bound, math.log(big)) if math.isfinite(big) else math.inf
        since += n
        at_burn = not burned and t1 >= burn
        if at_burn or since >= forced or bound > budget or t1 == T:
            nrm = np.maximum(_state_norm(H, t1, plan.D, mask),
                             np.maximum(V.max(axis=0), -V.min(axis=0)) if shifted else np.abs(v))
            H /= nrm
            if shifted:
                V /= nrm
            else:
                v /= nrm
            # only the renormalisation at the burn-in ends it (before 2026-12 any renormalisation
            # did, so momentum's burn-in was ~80 steps whatever burn_in said)
            if burned:
                acc += np.log(nrm)
                if history is not None:
                    history.append((t1, acc.copy()))
            burned = burned or at_burn
            since, bound = 0, 0.0
    return acc / max(T - burn, 1)


def trace_alpha_star(trace, optimizer: str = "sgd", momentum: float = 0.0, *, burn_in: float = 0.1,
                     points: int = 48, rounds: int = 3, hi: float | None = None, progress=None) -> float:
    """α* of the trace criterion: the smallest α > 0 where λ(α) reaches 0.

    Round 1 evaluates λ on a geometric grid of ``points`` values in (hi/1000, hi] (hi defaults to
    4, or 4(1+m)/(1−m) with momentum, and is raised ×8 while the whole grid is stable); each later
    round refines the first bracket [last stable, first unstable] with a linear grid; the answer
    is the linear interpolation of λ's zero in the final bracket.
    """
    optimizer, m = check_optimizer(optimizer, momentum)
    plan = trace if isinstance(trace, _Plan) else _Plan(trace)
    done = [0]

    def lam_of(grid):
        out = lyapunov_exponents(plan, grid, optimizer, m, burn_in)
        done[0] += 1
        if progress is not None:
            progress(done[0], rounds + 1)
        return out

    if hi is None:
        hi = 4.0 * (1.0 + m) / (1.0 - m)
    lo = hi / 1000.0
    grid = np.geomspace(lo, hi, points)
    for _ in range(8):
        lam = lam_of(grid)
        if np.any(lam >= 0):
            break
        lo, hi = hi, hi * 8.0
        grid = np.geomspace(lo, hi, points)
    else:
        return math.inf
    for r in range(rounds):
        j = int(np.flatnonzero(lam >= 0)[0])
        if j == 0:
            a_lo, l_lo = 0.0, None
        else:
            a_lo, l_lo = float(grid[j - 1]), float(lam[j - 1])
        a_hi, l_hi = float(grid[j]), float(lam[j])
        if r == rounds - 1:
            break
        grid = np.linspace(a_lo, a_hi, points + 2)[1:-1]
        lam = lam_of(grid)
        if not np.any(lam >= 0):
            # the whole refined bracket is stable: the crossing is at a_hi's side
            grid = np.append(grid, a_hi)
            lam = np.append(lam, l_hi)
    if l_lo is None:
        return a_hi
    return a_lo + (a_hi - a_lo) * (-l_lo) / (l_hi - l_lo)
