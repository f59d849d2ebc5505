"""Sharpness a = λ_max of the training-loss Hessian, from Hessian-vector products.

``method="lanczos"`` (default): Lanczos with full reorthogonalisation; stops when the top Ritz
pair's residual bound β_k |s_k| ≤ ``tol`` · |θ| (measured here: 1e-6 in 15–17 HVPs).
``method="power"``: power iteration on H, stopped when the Rayleigh quotient changes by less
than ``tol`` relative (it converges at rate λ_2/λ_1 — the top two eigenvalues of a network's
Hessian are often within 5%, so a loose ``tol`` can leave it several percent off; it returns the
eigenvalue of largest *magnitude*). Each HVP reuses one first-order graph (double backward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .problem import Problem, make_problem
from .._repr import dataclass_repr


@dataclass
class SharpnessResult:
    """λ_max estimate, the number of Hessian-vector products used, and whether ``tol`` was met."""

    __repr__ = dataclass_repr  # arrays by shape (asyncsim._repr)

    value: float
    method: str
    hvps: int
    converged: bool
    residual: float
    loss: float

    def to_dict(self) -> dict[str, Any]:
        return {"sharpness": self.value, "method": self.method, "hvps": self.hvps,
                "converged": self.converged, "residual": self.residual, "loss": self.loss}


def _lanczos(hvp, v0, tol: float, max_iter: int):
    import torch

    P = v0.numel()
    max_iter = min(max_iter, P)
    Q = torch.empty((max_iter + 1, P), dtype=v0.dtype, device=v0.device)
    Q[0] = v0 / torch.linalg.vector_norm(v0)
    alphas: list[float] = []
    betas: list[float] = []
    theta, resid = float("nan"), float("inf")
    for k in range(max_iter):
        w = hvp(Q[k])
        alpha = float(w @ Q[k])
        alphas.append(alpha)
        # Full reorthogonalisation (twice is enough, "twice is enough" — Parlett) keeps the
        # Krylov basis orthogonal so no spurious copies of λ_max appear.
        for _ in range(2):
            w = w - Q[: k + 1].T @ (Q[: k + 1] @ w)
        beta = float(torch.linalg.vector_norm(w))
        Tm = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        evals, evecs = np.linalg.eigh(Tm)
        theta = float(evals[-1])
        resid = abs(beta * evecs[-1, -1])
        if resid <= tol * max(abs(theta), 1e-30) or beta <= 1e-14 * max(abs(theta), 1e-30):
            return theta, k + 1, True, resid
        betas.append(beta)
        Q[k + 1] = w / beta
    return theta, max_iter, max_iter >= P, resid


def _power(hvp, v0, tol: float, max_iter: int):
    import torch

    v = v0 / torch.linalg.vector_norm(v0)
    theta_prev = None
    theta = float("nan")
    for k in range(max_iter):
        w = hvp(v)
        theta = float(w @ v)
        n = float(torch.linalg.vector_norm(w))
        if n == 0.0:
            return 0.0, k + 1, True, 0.0
        if theta_prev is not None and abs(theta - theta_prev) <= tol * abs(theta):
            return theta, k + 1, True, abs(theta - theta_prev)
        theta_prev = theta
        v = w / n
    return theta, max_iter, False, float("nan") if theta_prev is None else abs(theta - theta_prev)


def sharpness_info(problem: Any = "quadratic", model: str | None = None, *, params=None,
                   method: str = "lanczos", tol: float = 1e-6, max_iter: int = 100, seed: int = 0,
                   device="auto", dtype="float64", **problem_kwargs) -> SharpnessResult:
    """Like :func:`sharpness` but returns a :class:`SharpnessResult` (value, HVPs, convergence)."""
    import torch

    if method not in ("lanczos", "power"):
        raise InputError(f"unknown sharpness method {method!r} (use lanczos or power)")
    if not (tol > 0 and math.isfinite(tol)):
        raise InputError(f"tol must be > 0, got {tol}")
    if int(max_iter) < 1:
        raise InputError(f"max_iter must be >= 1, got {max_iter}")
    if dtype == "float64" and model is not None and not isinstance(model, str):
        dtype = None  # a user's module keeps its own dtype
    prob = problem if isinstance(problem, Problem) else make_problem(
        problem, model, device=device, dtype=dtype, **problem_kwargs)
    if params is None:
        x = prob.init_params(seed)
    else:
        x = torch.as_tensor(np.asarray(params.detach().cpu() if hasattr(params, "detach") else params),
                            dtype=prob.dtype, device=prob.device).reshape(-1)
        if x.numel() != prob.n_params:
            raise InputError(f"params has {x.numel()} numbers; the problem has {prob.n_params}")
    hvp, loss = prob.hvp_at(x)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A4B]))
    v0 = torch.as_tensor(rng.standard_normal(prob.n_params), dtype=prob.dtype, device=prob.device)
    fn = _lanczos if method == "lanczos" else _power
    value, n, ok, resid = fn(hvp, v0, float(tol), int(max_iter))
    return SharpnessResult(value=float(value), method=method, hvps=int(n), converged=bool(ok),
                           residual=float(resid), loss=float(loss))


def sharpness(problem: Any = "quadratic", model: str | None = None, *, params=None,
              method: str = "lanczos", tol: float = 1e-6, max_iter: int = 100, seed: int = 0,
              device="auto", dtype="float64", **problem_kwargs) -> float:
    """λ_max of the Hessian of the full training loss at ``params``.

    Parameters
    ----------
    problem: a :class:`~asyncsim.train.problem.Problem`, or a dataset spec as for
        :func:`~asyncsim.train.replay` (``"quadratic"``, ``"digits"``, a file…), with ``model``.
    params: flat parameter vector (default: the problem's initial parameters for ``seed``).
    method: ``"lanczos"`` (default) or ``"power"``; ``tol``: relative tolerance;
        ``max_iter``: cap on Hessian-vector products.
    dtype: float64 by default (HVPs in float32 limit the accuracy to about 1e-6).
    problem_kwargs: ``dim``, ``sharpness`` (quadratic), ``batch_size``, ``data_seed``, ``loss``
        (with a user's ``nn.Module`` as ``model``, which keeps its own dtype), ...
    """
    return sharpness_info(problem, model, params=params, method=method, tol=tol, max_iter=max_iter,
                          seed=seed, device=device, dtype=dtype, **problem_kwargs).value
