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

**How α* is found without forming the n² × n² operator.** Φ is a positive map (it preserves the
PSD cone), so ρ(Φ) is itself an eigenvalue (Krein-Rutman); ρ(α) is continuous and ρ → 1⁻ as
α → 0⁺, so the first α at which ρ reaches 1 is the smallest α > 0 at which 1 is an eigenvalue of
Φ_α. An eigenvector M with Φ(M) = M satisfies M[i, j] = M[i−1, j−1] for i, j ≥ 1 (rows ≥ 1 of A_k
shift), so M is Toeplitz: M[i, j] = r_{|i−j|} (a stationary autocovariance). Φ(M) = M then reads

    r_0 = Σ_k p_k a_kᵀ R(r) a_k,      r_d = Σ_i ā_i r_{|i−d+1|}  (d = 1..n−1),   ā = Σ_k p_k a_k,

n equations linear in r whose coefficients are quadratic in α: (T0 + α T1 + α² T2) r = 0. α* is
the smallest positive real eigenvalue of this quadratic eigenvalue problem, solved by companion
linearisation (a 2n × 2n generalised eigenproblem, O(n³)). :class:`SecondMomentModel` also
applies Φ in O(n²) (shift plus a new first row and column) for checks and power iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

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


def spectral_radius(model: SecondMomentModel, alpha: float, iters: int = 2000) -> float:
    """ρ(Φ_α) by power iteration on the PSD cone from M = I (a check, not used for α*)."""
    M = np.eye(model.n)
    logs = 0.0
    for _ in range(iters):
        M = model.apply(M, alpha)
        s = np.trace(M)
        M /= s
        logs += math.log(s)
    # the trace ratio over the last step converges to ρ (Perron root of the positive map)
    return float(np.trace(model.apply(M, alpha)))


def mean_square_alpha_star(p: np.ndarray, optimizer: str = "sgd", momentum: float = 0.0, *,
                           scale: float | None = None) -> float:
    """Smallest α > 0 at which the second-moment map has eigenvalue 1 (see the module doc).

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
