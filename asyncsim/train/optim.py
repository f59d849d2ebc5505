r"""Optimizer semantics for trace replay: a thin validating class and a functional core.

Step t applies the gradients ``g_j`` of its trace rows (row j computed at version
``read_version_j``; K_t rows, weights 1/K_t). With per-row scale ``s_j`` (1, or 1/max(τ_j, 1) for
the staleness-aware rate of Zhang et al. 2015) and, for DC-ASGD (Zheng et al. 2017),
``g_j ← g_j + λ g_j ⊙ g_j ⊙ (x_t − x_{read_j})``, let ĝ_t = (1/K_t) Σ_j s_j g_j. Then

* ``sgd``:       x_{t+1} = x_t − η ĝ_t.
* ``momentum`` with dampening (Giladi et al. 2020, eq. 9):
  v_{t+1} = m v_t − η(1−m) ĝ_t;  x_{t+1} = x_t + v_{t+1}.
  ``dampening=False`` is PyTorch's convention: v_{t+1} = m v_t + ĝ_t;  x_{t+1} = x_t − η v_{t+1}
  (the same trajectory as dampened momentum with η' = η/(1−m)).
* ``shifted`` momentum: each worker w keeps its own velocity. For each row j of step t (in trace
  order), v_{w_j} ← m v_{w_j} − η(1−m) s_j g_j (dampening=False: v_{w_j} ← m v_{w_j} + s_j g_j);
  the server adds the mean of the rows' updated velocities: x_{t+1} = x_t + (1/K_t) Σ_j v_{w_j}
  (dampening=False: x_{t+1} = x_t − η (1/K_t) Σ_j v_{w_j}). For round robin with τ = N−1 this is
  the paper's v_{t+1} = m v_{t−τ} − η(1−m)∇f(x_{t−τ}).

Every tensor carries a leading run dimension L (independent runs batched together; L = 1 for a
single run); the learning rate is a float or an (L, 1) tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InputError

OPTIMIZERS = ("sgd", "momentum", "shifted")


@dataclass(frozen=True)
class OptimizerSpec:
    """Validated optimizer settings (the thin class; :func:`init_state`/:func:`apply_step` do the math)."""

    name: str = "sgd"
    momentum: float = 0.0
    dampening: bool = True
    staleness_aware: bool = False
    dc_lambda: float = 0.0

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise InputError(f"unknown optimizer {self.name!r} (use {', '.join(OPTIMIZERS)})")
        m = float(self.momentum)
        if not (math.isfinite(m) and 0.0 <= m < 1.0):
            raise InputError(f"Invalid momentum value: {self.momentum} (need 0 <= m < 1)")
        if self.name == "sgd" and m != 0.0:
            raise InputError("momentum > 0 needs --optimizer momentum or shifted")
        lam = float(self.dc_lambda)
        if not (math.isfinite(lam) and lam >= 0.0):
            raise InputError(f"Invalid dc_lambda value: {self.dc_lambda} (need >= 0)")

    @property
    def needs_read_params(self) -> bool:
        """DC-ASGD needs the parameters a row was computed at when the row is applied."""
        return self.dc_lambda > 0.0


def check_lr(lr) -> float:
    lr = float(lr)
    if not (math.isfinite(lr) and lr > 0.0):
        raise InputError(f"Invalid learning rate: {lr} (need a finite lr > 0)")
    return lr


def init_state(spec: OptimizerSpec, x, n_workers: int) -> dict:
    """Optimizer state for parameters x (L, P): velocity (L, P) or per-worker velocities (N, L, P)."""
    import torch

    if spec.name == "momentum":
        return {"v": torch.zeros_like(x)}
    if spec.name == "shifted":
        return {"vw": torch.zeros((max(int(n_workers), 1), *x.shape), dtype=x.dtype, device=x.device)}
    return {}


def _row_grads(spec, x, grads, staleness, x_reads):
    """Per-row effective gradients s_j (g_j + DC term), as a list."""
    out = []
    for j, g in enumerate(grads):
        if spec.dc_lambda > 0.0:
            # DC-ASGD (Zheng et al. 2017): first-order Taylor compensation of the delay,
            # the Hessian approximated by λ g⊙g.
            g = g + spec.dc_lambda * g * g * (x - x_reads[j])
        if spec.staleness_aware:
            tau = int(staleness[j])
            if tau > 1:
                g = g / tau
        out.append(g)
    return out


def apply_step(spec: OptimizerSpec, x, state: dict, grads, workers, staleness, lr, x_reads=None):
    """Apply one server step in place on x (L, P).

    ``grads``: the step's row gradients (a list of (L, P) tensors, or a (K, L, P) tensor),
    ``workers``/``staleness``: per-row ints, ``lr``: float or (L, 1) tensor,
    ``x_reads``: per-row parameters at the read version (DC-ASGD only)."""
    K = len(grads)
    simple = spec.dc_lambda == 0.0 and not spec.staleness_aware
    if spec.name == "shifted":
        gs = list(grads) if not simple else grads
        if not simple:
            gs = _row_grads(spec, x, grads, staleness, x_reads)
        vw = state["vw"]
        m = spec.momentum
        acc = None
        for j in range(K):
            w = int(workers[j])
            if spec.dampening:
                vw[w] = m * vw[w] - (lr * (1.0 - m)) * gs[j]
            else:
                vw[w] = m * vw[w] + gs[j]
            acc = vw[w].clone() if acc is None else acc.add_(vw[w])
        if K > 1:
            acc = acc / K
        if spec.dampening:
            x.add_(acc)
        else:
            x.sub_(lr * acc)
        return x
    if simple:
        if K == 1:
            d = grads[0]
        else:
            d = grads.mean(0) if hasattr(grads, "dim") else sum(grads[1:], grads[0]) / K
    else:
        gs = _row_grads(spec, x, grads, staleness, x_reads)
        d = gs[0] if K == 1 else sum(gs[1:], gs[0]) / K
    if spec.name == "sgd":
        x.sub_(lr * d)
    elif spec.dampening:  # paper eq. 9
        v = state["v"]
        v.mul_(spec.momentum).sub_((lr * (1.0 - spec.momentum)) * d)
        x.add_(v)
    else:  # PyTorch convention
        v = state["v"]
        v.mul_(spec.momentum).add_(d)
        x.sub_(lr * v)
    return x
