"""Mean-square (second-moment) stability of the i.i.d.-delay model.

With delays τ_t drawn i.i.d. from p, independent of the state, each optimizer's linearised update
is a scalar recursion x_{t+1} = a_{τ_t}ᵀ s_t on the history s_t = (x_t, x_{t−1}, ..., x_{t−n+1}),
i.e. s_{t+1} = A_{τ_t} s_t with A_k = (row 0: a_kᵀ; rows ≥ 1: shift). The second moment
M_t = E[s_t s_tᵀ] evolves by the positive linear map

    Φ(M) = Σ_k p_k A_k M A_kᵀ,

and the model is mean-square stable iff ρ(Φ) < 1. Because E[s sᵀ] ⪰ E[s] E[s]ᵀ, mean-square
stability implies mean stability, so this α* never exceeds the mean criterion's.

Velocities are eliminated exactly (x_{t+1} − x_t = v_{t+1} in both momentum forms), so

* ``sgd``:      a_k = e_0 − α e_k
* ``momentum``: a_k = (1+m) e_0 − m e_1 − α(1−m) e_k                (paper eq. 9)
* ``shifted``:  a_k = e_0 + (m − α(1−m)) e_k − m e_{k+1}             (paper eq. 10)

**The fast solver: a noise loop and one scalar renewal equation (O(K²) per α, O(K) memory).**
Each optimizer reads the past through one filtered signal u = B(z) x (sgd: B = −α; momentum:
B = −α(1−m); shifted: B = m − α(1−m) − m z⁻¹). Write its delayed read as its mean over τ plus a
noise, u_{t−τ_t} = Σ_k p_k u_{t−k} + w_t. Then

    D(z) x = w,   D(z) = z − 1 − P(z) B(z)  (momentum: z − (1+m) + m/z − P(z) B(z)),

the mean dynamics of :mod:`.characteristic` driven by w, with P(z) = Σ_k p_k z^{−k}. Given the
past, w_t has mean 0 (a martingale difference: the w are uncorrelated) and variance
Σ_k p_k u_{t−k}² − (Σ_k p_k u_{t−k})². With g the impulse response of B/D, u_t = Σ_s g_{t−1−s} w_s,
so V_t = E[w_t²] obeys the positive renewal equation V_t = Σ_s h_{t−1−s} V_s + (transient), with
h_j = Σ_k p_k g_{j−k}² − (Σ_k p_k g_{j−k})² ≥ 0 (the variance of g_{j−τ}). Such an equation is
stable iff Σ_j h_j < 1, and by Parseval

    F(α) = Σ_j h_j = (1/2π) ∫ |B(e^{iθ})|² (1 − |P(e^{iθ})|²) / |D(e^{iθ})|² dθ.

So the model is mean-square stable iff it is mean stable and F(α) < 1: α* is the first α > 0 at
which F reaches 1, or the mean criterion's α* if F stays below 1 up to it (constant delay: |P| = 1,
no noise, the two criteria agree). F is an H₂ norm of rational functions, computed exactly (no
quadrature, whose error blows up as roots approach the circle) by Åström's recursion (K. J. Åström,
*Introduction to Stochastic Control Theory*, 1970, ch. 5): the Schur–Cohn reduction of the
polynomial z^{K+1} D(z), O(K²) operations on O(K) numbers, which also certifies mean stability
(every reflection coefficient of modulus < 1). :func:`mean_square_alpha_star` evaluates F for a
grid of α at once, then refines the first crossing with Brent's method: ~0.25 s at K = 10³ and
~10 s at K = 10⁴ on a 2-core VM (docs/benchmarks.md), against a dense 2K × 2K eigenproblem.

**The dense reference (small K).** Φ is a positive map (it preserves the PSD cone), so ρ(Φ) is
itself an eigenvalue (Krein-Rutman); ρ(α) is continuous and ρ → 1⁻ as α → 0⁺, so the first α at
which ρ reaches 1 is the smallest α > 0 at which 1 is an eigenvalue of Φ_α. An eigenvector M with
Φ(M) = M satisfies M[i, j] = M[i−1, j−1] for i, j ≥ 1 (rows ≥ 1 of A_k shift), so M is Toeplitz:
M[i, j] = r_{|i−j|} (a stationary autocovariance). Φ(M) = M then reads

    r_0 = Σ_k p_k a_kᵀ R(r) a_k,      r_d = Σ_i ā_i r_{|i−d+1|}  (d = 1..n−1),   ā = Σ_k p_k a_k,

n equations linear in r whose coefficients are quadratic in α: (T0 + α T1 + α² T2) r = 0.
:func:`mean_square_alpha_star_dense` takes the smallest positive real eigenvalue of this quadratic
eigenvalue problem by companion linearisation (a 2n × 2n generalised eigenproblem: O(K³) time,
O(K²) memory; 42 s at K = 10³). The tests compare the two for K ≤ 200. :class:`SecondMomentModel`
also applies Φ in O(n²) (shift plus a new first row and column) for the matrix-free checks
(:func:`second_moment_growth`, :func:`spectral_radius_arnoldi`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
from scipy.optimize import brentq

from .characteristic import check_optimizer


@dataclass
class SecondMomentModel:
    """a_k = u_k + α w_k with u_k, w_k supported on ``idx[k]`` (a few entries each)."""

    n: int
    idx: np.ndarray  # (K+1, R) int, column indices into the history
    u: np.ndarray    # (K+1, R) α-free coefficients
    w: np.ndarray    # (K+1, R) coefficients of α
    p: np.ndarray

    def coef(self, alpha: float) -> np.ndarray:
        """a_k as a dense (K+1, n) array."""
        a = np.zeros((self.p.size, self.n))
        rows = np.repeat(np.arange(self.p.size), self.idx.shape[1])
        np.add.at(a, (rows, self.idx.ravel()), (self.u + alpha * self.w).ravel())
        return a

    def A(self, k: int, alpha: float) -> np.ndarray:
        """Dense A_k (tests and small references)."""
        A = np.zeros((self.n, self.n))
        A[0] = self.coef(alpha)[k]
        A[np.arange(1, self.n), np.arange(self.n - 1)] = 1.0
        return A

    def apply(self, M: np.ndarray, alpha: float) -> np.ndarray:
        """Φ(M) in O(n²): the shifted block plus a new first row/column."""
        p, idx = self.p, self.idx
        coefs = self.u + alpha * self.w                # (K+1, R)
        out = np.empty_like(M)
        out[1:, 1:] = M[:-1, :-1]
        abar = np.zeros(self.n)
        np.add.at(abar, idx.ravel(), (p[:, None] * coefs).ravel())
        out[0, 1:] = (abar @ M)[:-1]                  # E[a_τ]ᵀ M, shifted
        out[1:, 0] = (M @ abar)[:-1]
        q = 0.0
        R = idx.shape[1]
        for r in range(R):
            for s in range(R):
                q += np.dot(p * coefs[:, r] * coefs[:, s], M[idx[:, r], idx[:, s]])
        out[0, 0] = q
        return out

    def stationary_system(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """T0, T1, T2 with Φ_α(Toeplitz(r)) = Toeplitz(r) ⟺ (T0 + α T1 + α² T2) r = 0."""
        n, p, idx = self.n, self.p, self.idx
        T = [np.zeros((n, n)) for _ in range(3)]
        T[0][0, 0] = 1.0
        # row 0: −Σ_k p_k a_kᵀ R a_k, a_k = u_k + α w_k; coefficient of r_{|i−j|} is a_i a_j
        R = idx.shape[1]
        for r in range(R):
            for s in range(R):
                d = np.abs(idx[:, r] - idx[:, s])
                for order, val in ((0, self.u[:, r] * self.u[:, s]),
                                   (1, self.u[:, r] * self.w[:, s] + self.w[:, r] * self.u[:, s]),
                                   (2, self.w[:, r] * self.w[:, s])):
                    np.add.at(T[order][0], d, -p * val)
        # rows d ≥ 1: r_d − Σ_i ā_i r_{|i−d+1|}
        for order, c in ((0, self.u), (1, self.w)):
            abar = np.zeros(n)
            np.add.at(abar, idx.ravel(), (p[:, None] * c).ravel())
            nz = np.flatnonzero(abar)
            dd = np.arange(1, n)
            rows = np.repeat(dd, nz.size)
            cols = np.abs(np.tile(nz, dd.size) - (rows - 1))
            np.add.at(T[order], (rows, cols), -np.tile(abar[nz], dd.size))
        T[0][np.arange(1, n), np.arange(1, n)] += 1.0
        return T[0], T[1], T[2]


def build_model(p: np.ndarray, optimizer: str = "sgd", momentum: float = 0.0) -> SecondMomentModel:
    """The a_k = u_k + α w_k of each optimizer (see the module docstring)."""
    optimizer, m = check_optimizer(optimizer, momentum)
    p = np.asarray(p, dtype=float)
    K = p.size - 1
    k = np.arange(K + 1)
    zero = np.zeros(K + 1, dtype=np.int64)
    if optimizer == "sgd":
        n = K + 1
        idx = np.stack([zero, k], axis=1)
        u = np.stack([np.ones(K + 1), np.zeros(K + 1)], axis=1)
        w = np.stack([np.zeros(K + 1), -np.ones(K + 1)], axis=1)
    elif optimizer == "momentum":
        n = max(K, 1) + 1
        idx = np.stack([zero, zero + 1, k], axis=1)
        u = np.stack([np.full(K + 1, 1.0 + m), np.full(K + 1, -m), np.zeros(K + 1)], axis=1)
        w = np.stack([np.zeros(K + 1), np.zeros(K + 1), np.full(K + 1, -(1.0 - m))], axis=1)
    else:
        n = K + 2
        idx = np.stack([zero, k, k + 1], axis=1)
        u = np.stack([np.ones(K + 1), np.full(K + 1, m), np.full(K + 1, -m)], axis=1)
        w = np.stack([np.zeros(K + 1), np.full(K + 1, -(1.0 - m)), np.zeros(K + 1)], axis=1)
    return SecondMomentModel(n=n, idx=idx, u=u, w=w, p=p)


def second_moment_growth(model: SecondMomentModel, alpha: float, iters: int = 6000,
                         progress=None) -> tuple[float, float]:
    """log ρ(Φ_α) from the growth of the second moment itself: M_t = Φ_α^t(I) applied matrix-free
    (O(n²) per step, O(n²) memory), the average of log(tr M_{t+1}/tr M_t) over t in
    (iters/2, iters] and over (iters/4, iters/2] (their agreement shows the estimate has settled).

    The independent check of :func:`mean_square_alpha_star` at large K: it uses neither the noise
    loop nor the Toeplitz reduction, only the definition Φ(M) = Σ_k p_k A_k M A_kᵀ. A plain power
    iteration's one-step ratio does not settle (eigenvalues of modulus close to ρ with phases make it
    oscillate by ~1e-3 at K = 100 after 4000 steps); the average over a window does, to ~1e-6, which
    resolves α*(1 ± 1e-2) (log ρ ≈ ±1e-4 at K = 100, ±5e-5 at K = 300). O(iters·n²) time:
    ~16 s at K = 10³ on a 2-core VM."""
    M = np.eye(model.n)
    logs = np.zeros(iters + 1)
    for t in range(1, iters + 1):
        M = model.apply(M, alpha)
        s = float(np.trace(M))
        M /= s
        logs[t] = logs[t - 1] + math.log(s)
        if t % 256 == 0:
            M = 0.5 * (M + M.T)  # keep it symmetric against rounding drift
            if progress is not None:
                progress(t, iters)
    h, q = iters // 2, iters // 4
    return float((logs[iters] - logs[h]) / (iters - h)), float((logs[h] - logs[q]) / (h - q))


def _noise_polys(p: np.ndarray, alphas: np.ndarray, optimizer: str, m: float):
    """Coefficients (highest power first, degree n = K+2, one row per α) of A = z^{K+1} D(z) and of
    the two numerators whose H₂ norms over A give F: z·B(z) and z·B(z)·Q(z), Q(z) = z^K P(z)."""
    K = p.size - 1
    n = K + 2
    L = alphas.size
    A = np.zeros((L, n + 1))
    B1 = np.zeros((L, n + 1))
    B2 = np.zeros((L, n + 1))
    A[:, 0] = 1.0
    # z·Q(z) = Σ_k p_k z^{K+1−k}: coefficient index 1 + k; Q(z): index 2 + k
    if optimizer == "sgd":
        c = -alphas
        A[:, 1] = -1.0
        A[:, 1:K + 2] -= c[:, None] * p
        B1[:, n] = c
        B2[:, 1:K + 2] = c[:, None] * p
    elif optimizer == "momentum":
        c = -alphas * (1.0 - m)
        A[:, 1] = -(1.0 + m)
        A[:, 2] += m
        A[:, 1:K + 2] -= c[:, None] * p
        B1[:, n] = c
        B2[:, 1:K + 2] = c[:, None] * p
    else:  # shifted: B(z) = c − m z⁻¹
        c = m - alphas * (1.0 - m)
        A[:, 1] = -1.0
        A[:, 1:K + 2] -= c[:, None] * p
        A[:, 2:K + 3] += m * p
        B1[:, n - 1] = c
        B1[:, n] = -m
        B2[:, 1:K + 2] = c[:, None] * p
        B2[:, 2:K + 3] -= m * p
    return A, B1, B2


def noise_gain(p, alphas, optimizer: str = "sgd", momentum: float = 0.0, progress=None) -> np.ndarray:
    """F(α) = (1/2π) ∫ |B|² (1 − |P|²) / |D|² dθ for each α (module doc); ``inf`` where the mean
    dynamics are not stable (the Schur–Cohn test inside Åström's recursion fails).

    O(L·K²) time and O(L·K) memory for L values of α. ``progress(done, total)`` is called now and
    then with the recursion's progress.
    """
    optimizer, m = check_optimizer(optimizer, momentum)
    p = np.asarray(p, dtype=float)
    alphas = np.atleast_1d(np.asarray(alphas, dtype=float))
    A, B1, B2 = _noise_polys(p, alphas, optimizer, m)
    n = A.shape[1] - 1
    a0 = A[:, 0].copy()
    total = np.zeros(alphas.size)
    stable = np.ones(alphas.size, dtype=bool)
    every = max(1, n // 50)
    # Åström's recursion: A_{k−1} = (A_k − κ_k A_k^*)/z with κ_k = a_k/a_0 (reflection coefficient),
    # the numerators reduced alongside; I(B/A) = (1/a_0) Σ_k (b_k^{(k)})² / a_0^{(k)}
    with np.errstate(all="ignore"):
        for k in range(n, 0, -1):
            lead = A[:, 0]
            kappa = A[:, k] / lead
            stable &= np.abs(kappa) < 1.0
            b1 = B1[:, k] / lead
            b2 = B2[:, k] / lead
            total += b1 * B1[:, k] - b2 * B2[:, k]
            rev = A[:, k::-1][:, :k].copy()
            A = A[:, :k] - kappa[:, None] * rev
            B1 = B1[:, :k] - b1[:, None] * rev
            B2 = B2[:, :k] - b2[:, None] * rev
            if progress is not None and (n - k) % every == 0:
                progress(n - k, n)
        stable &= A[:, 0] > 0
        total += (B1[:, 0] ** 2 - B2[:, 0] ** 2) / A[:, 0]
        F = total / a0
    F[~stable | ~np.isfinite(F)] = np.inf
    return F


#: supports from which :func:`noise_gain_fft` is tried first
FFT_FROM_K = 1500
#: largest FFT grid it may use (64 M points: ~1 GiB of complex work arrays)
FFT_MAX = 1 << 22


def noise_gain_fft(p, alphas, optimizer: str, m: float, tol: float = 1e-11, decide: bool = False):
    """F(α) by the trapezoid rule on the unit circle; NaN where it has not settled.

    The rule on M points is exact up to the aliased Fourier coefficients of the integrand, which
    decay like r^M for r the largest root modulus of z^{K+1}D(z); the even points of a 2M grid are
    the M grid, so one FFT gives both sums and their difference e bounds the error. M doubles from
    16(K+2) to :data:`FFT_MAX` until |e| ≤ ``tol``·F for every α (with ``decide``, also accepted
    once |F − 1| > 10|e|: enough to tell on which side of 1 it lies). O(M log M) time, O(M)
    memory: for geometric delays (A-SGD) it settles at M ≈ 2¹⁸ even at K = 10⁵, where Åström's
    O(K²) recursion would take an hour; pmfs with roots very near the circle (flat pmfs at large
    K) do not settle, and the caller uses the recursion for those α.
    """
    p = np.asarray(p, dtype=float)
    alphas = np.atleast_1d(np.asarray(alphas, dtype=float))
    K = p.size - 1
    M = 1 << max(12, int(math.ceil(math.log2(16 * (K + 2)))))
    out = np.full(alphas.size, np.nan)
    todo = np.arange(alphas.size)
    # stop doubling once one FFT pass costs more than a quarter of the recursion (K² per α)
    m_max = FFT_MAX
    while m_max > M and m_max * math.log2(m_max) > (K + 2) ** 2 / 4:
        m_max >>= 1
    while M <= m_max and todo.size:
        P = np.fft.fft(p, M)
        z = np.exp(2j * np.pi * np.arange(M) / M)
        noise = 1.0 - (P.real ** 2 + P.imag ** 2)
        left = []
        for i in todo:
            a = alphas[i]
            if optimizer == "sgd":
                B = -a
                D = z - 1.0 - P * B
            elif optimizer == "momentum":
                B = -a * (1.0 - m)
                D = z - (1.0 + m) + m / z - P * B
            else:
                B = (m - a * (1.0 - m)) - m / z
                D = z - 1.0 - P * B
            f = (np.abs(B) ** 2) * noise / (D.real ** 2 + D.imag ** 2)
            full, half = float(f.mean()), float(f[::2].mean())
            err = abs(full - half)
            if err <= tol * max(abs(full), 1e-300) or (decide and abs(full - 1.0) > 10.0 * err):
                out[i] = full
            else:
                left.append(i)
        todo = np.asarray(left, dtype=np.int64)
        M <<= 1
    return out


def mean_square_alpha_star(p: np.ndarray, optimizer: str = "sgd", momentum: float = 0.0, *,
                           scale: float | None = None, grid: int = 24, progress=None) -> float:
    """Smallest α > 0 with F(α) = 1, or the mean criterion's α* if F < 1 up to it (module doc).

    ``scale`` is the mean criterion's α* (computed when not given): the upper end of the search.
    F is evaluated on a geometric grid of ``grid`` α in (0, scale] in one batched pass
    (O(grid·K²)), the bracket is narrowed by a second pass and refined by Brent's method to ~1e-14
    relative (about 10 more single-α passes). From K = :data:`FFT_FROM_K` F comes from
    :func:`noise_gain_fft` while it converges (O(K log K) per α), else from the recursion.
    O(K) memory (O(M) with the FFT). ``progress(done, total)`` reports passes.
    """
    optimizer, m = check_optimizer(optimizer, momentum)
    p = np.asarray(p, dtype=float)
    if scale is None:
        from .characteristic import mean_alpha_star

        scale = mean_alpha_star(p, optimizer, m)
    upper = float(scale)
    if not math.isfinite(upper) or upper <= 0:
        return upper
    if p.size == 1 or np.count_nonzero(p) == 1:
        return upper  # constant delay: no noise, the second moment follows the mean
    passes = [0]
    est_total = 20

    def report():
        passes[0] += 1
        if progress is not None:
            progress(min(passes[0], est_total - 1), est_total)

    # α*_ms can sit far below the mean criterion's (geometric delays: ~1/N against 4N − 2), so the
    # first pass is a geometric grid reaching down 9 decades, extended while F ≥ 1 at its bottom
    use_fft = p.size - 1 >= FFT_FROM_K

    def gain(al, decide=True):
        """F at the α values ``al``: α ≥ ``upper`` is mean-unstable (inf); the FFT rule where it
        settles, Åström's recursion for the rest."""
        al = np.atleast_1d(np.asarray(al, dtype=float))
        out = np.full(al.size, np.inf)
        inside = np.flatnonzero(al < upper)
        if inside.size and use_fft:
            out[inside] = noise_gain_fft(p, al[inside], optimizer, m, decide=decide)
            inside = inside[np.isnan(out[inside])]
        if inside.size:
            out[inside] = noise_gain(p, al[inside], optimizer, m)
        return out

    alphas = np.geomspace(upper * 1e-9, upper, grid)
    for _ in range(8):
        F = gain(alphas)
        report()
        F[-1] = np.inf  # α = scale is on the mean boundary itself
        j = int(np.flatnonzero(F >= 1.0)[0])
        if j > 0:
            break
        alphas = np.geomspace(alphas[0] * 1e-9, alphas[0], grid)
    else:
        raise ArithmeticError("mean-square α* below 1e-72 of the mean criterion's: no bracket")
    lo = float(alphas[j - 1])
    hi = float(alphas[j])
    if hi / lo > 1.05:
        # a second batched pass inside the bracket leaves Brent a short, well-scaled interval
        sub = np.linspace(lo, hi, grid + 2)[1:-1]
        Fs = gain(sub)
        report()
        k = np.flatnonzero(Fs >= 1.0)
        if k.size:
            hi = float(sub[k[0]])
            lo = float(sub[k[0] - 1]) if k[0] else lo
        else:
            lo = float(sub[-1])

    def g(a: float) -> float:
        v = float(gain(a, decide=False)[0])
        report()
        return min(v, 1e300) - 1.0

    if hi >= upper:
        # F may stay below 1 all the way to the mean boundary
        edge = upper * (1.0 - 1e-12)
        if g(edge) < 0.0:
            return upper
        hi = edge
    a = brentq(g, lo, hi, xtol=1e-15 * hi, rtol=4 * np.finfo(float).eps, maxiter=200)
    if progress is not None:
        progress(est_total, est_total)
    return float(a)


def dense_memory_bytes(K: int) -> int:
    """Peak memory of :func:`mean_square_alpha_star_dense` at support K (a few (2n)² arrays)."""
    n = K + 2
    return int(6 * (2 * n) ** 2 * 8)


def spectral_radius_arnoldi(model: SecondMomentModel, alpha: float, tol: float = 1e-12) -> float:
    """ρ(Φ_α) by Arnoldi (ARPACK) on the n²-vector, Φ applied in O(n²) — the independent check of
    the fast solver at large K (never forms the n² × n² operator)."""
    from scipy.sparse.linalg import LinearOperator, eigs

    n = model.n

    def mv(v):
        return model.apply(v.reshape(n, n), alpha).ravel()

    op = LinearOperator((n * n, n * n), matvec=mv, dtype=float)
    v0 = np.eye(n).ravel()
    # the Perron root is real and no eigenvalue has a larger real part ("LR"); "LM" can settle on
    # one of the many eigenvalues of modulus close to it
    val = eigs(op, k=4, which="LR", v0=v0, tol=tol, return_eigenvectors=False, ncv=min(n * n - 1, 48))
    return float(val.real.max())


def mean_square_alpha_star_dense(p: np.ndarray, optimizer: str = "sgd", momentum: float = 0.0, *,
                           scale: float | None = None) -> float:
    """The dense reference: smallest α > 0 at which the second-moment map has eigenvalue 1, from
    the 2n × 2n companion eigenproblem (module doc). O(K³) time, ~100 (K+2)² bytes.

    ``scale`` (default: the mean criterion's α*, an upper bound) only sets the size below which
    an eigenvalue counts as the trivial root α = 0.
    """
    optimizer, m = check_optimizer(optimizer, momentum)
    p = np.asarray(p, dtype=float)
    model = build_model(p, optimizer, m)
    T0, T1, T2 = model.stationary_system()
    n = model.n
    # companion linearisation of (T0 + α T1 + α² T2) r = 0 with y = (r, α r)
    Z, I = np.zeros((n, n)), np.eye(n)
    A = np.block([[Z, I], [-T0, -T1]])
    Bm = np.block([[I, Z], [Z, T2]])
    ev = sla.eigvals(A, Bm)
    ev = ev[np.isfinite(ev)]
    if scale is None:
        from .characteristic import mean_alpha_star

        scale = mean_alpha_star(p, optimizer, m)
    tiny = 1e-7 * scale
    real = ev[(np.abs(ev.imag) <= 1e-7 * np.maximum(np.abs(ev), 1e-300)) & (ev.real > tiny)].real
    if real.size == 0:
        return math.inf
    return float(real.min())
