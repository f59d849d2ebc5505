r"""Optimizer semantics for trace replay: a thin validating class and a functional core.

All optimizer state lives at the server (DESIGN.md "Trainer contracts"). Step t applies the
gradients ``g_j`` of its trace rows (row j computed at version ``read_version_j``; K_t rows,
weights 1/K_t) with the learning rate η_t = η · schedule(t) (t = the server update, from 0).
With per-row scale ``s_j`` (1, or 1/max(τ_j, 1) for the staleness-aware rate of Zhang et al.
2015) and, for DC-ASGD (Zheng et al. 2017), ``g_j ← g_j + λ g_j ⊙ g_j ⊙ (x_t − x_{read_j})``,
let ĝ_t = (1/K_t) Σ_j s_j g_j. In this order:

1. **clipping** (``clip_grad_norm=c``): ĝ_t ← ĝ_t · min(1, c / (‖ĝ_t‖ + 1e-6)), as
   ``torch.nn.utils.clip_grad_norm_`` on the server's averaged gradient (shifted momentum has
   no averaged gradient: each row is clipped before it enters its worker's velocity).
2. **weight decay** w at the server, on the *current* parameters x_t (the seed's code does
   this): coupled ĝ_t ← ĝ_t + w x_t (torch.optim.SGD/Adam's ``weight_decay``), or decoupled
   (AdamW-style, ``decoupled_weight_decay=True``, the default for ``adamw``) x_t ← x_t(1 − η_t w).
3. the update:

* ``sgd``:       x_{t+1} = x_t − η_t ĝ_t.
* ``momentum`` with dampening (Giladi et al. 2020, eq. 9):
  v_{t+1} = m v_t − η_t(1−m) ĝ_t;  x_{t+1} = x_t + v_{t+1}.
  ``dampening=False`` is PyTorch's convention b_{t+1} = m b_t + ĝ_t; x_{t+1} = x_t − η_t b_{t+1};
  ``dampening=d`` (a number) is torch.optim.SGD's b_{t+1} = m b_t + (1−d) ĝ_t.
  ``momentum_init="gradient"`` starts the buffer at the first gradient, undampened, exactly as
  torch.optim.SGD does (b_1 = ĝ_0; with eq. 9, v_1 = −η_0 ĝ_0); ``"zero"`` (default) starts it
  at 0, which makes the first step (1−m) times as long with dampening.
* ``shifted`` momentum: each worker w keeps its own velocity. For each row j of step t (in trace
  order), v_{w_j} ← m v_{w_j} − η_t(1−m) s_j g_j (the other conventions as above, per worker;
  with ``momentum_init="gradient"`` each worker's first row starts its velocity); the server
  adds the mean of the rows' updated velocities: x_{t+1} = x_t + (1/K_t) Σ_j v_{w_j}. For round
  robin with τ = N−1 this is the paper's v_{t+1} = m v_{t−τ} − η(1−m)∇f(x_{t−τ}).
* ``adam`` / ``adamw``: torch.optim.Adam / AdamW's update with server-side moments and step
  count (β = (0.9, 0.999), ε = 1e-8; AdamW's default weight decay 1e-2, decoupled).

Every tensor carries a leading run dimension L (independent runs batched together; L = 1 for a
single run); the learning rate is a float or an (L, 1) tensor.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import InputError

OPTIMIZERS = ("sgd", "momentum", "shifted", "adam", "adamw")
MOMENTUM_INITS = ("zero", "gradient")


# ------------------------------------------------------------------------- schedules
@dataclass(frozen=True)
class LRSchedule:
    """A learning-rate multiplier indexed by server update t = 0, 1, …: η_t = η · factor(t).

    Specs (strings): ``constant``; ``step:S:G`` (× G every S updates, torch's StepLR);
    ``cosine`` or ``cosine:MIN`` (torch's CosineAnnealingLR with T_max = the updates replayed
    and η_min = MIN·η); a ``warmup:W`` prefix, alone or joined with ``+`` (``warmup:100+cosine``):
    linear warm-up factor (t+1)/W for t < W (torch's LinearLR(start_factor=1/W,
    total_iters=W−1)), after which the rest of the schedule runs from t − W. A callable
    ``t -> factor`` works as well (like torch's LambdaLR)."""

    kind: str = "constant"
    warmup: int = 0
    step_size: int = 0
    gamma: float = 1.0
    min_factor: float = 0.0
    fn: Callable[[int], float] | None = field(default=None, compare=False)

    @property
    def is_constant(self) -> bool:
        return self.kind == "constant" and self.warmup == 0 and self.fn is None

    def factors(self, T: int) -> np.ndarray:
        """The multipliers of updates 0..T−1 (float64). Cost O(T)."""
        t = np.arange(int(T), dtype=np.float64)
        if self.fn is not None:
            f = np.array([float(self.fn(int(i))) for i in range(int(T))], dtype=np.float64)
            if not np.all(np.isfinite(f) & (f >= 0)):
                raise InputError("the learning-rate schedule returned a negative or non-finite factor")
            return f
        W = self.warmup
        u = np.maximum(t - W, 0.0)
        rest = max(int(T) - W, 1)
        if self.kind == "step":
            f = self.gamma ** np.floor(u / self.step_size)
        elif self.kind == "cosine":
            f = self.min_factor + (1.0 - self.min_factor) * (1.0 + np.cos(np.pi * u / rest)) / 2.0
        else:
            f = np.ones_like(t)
        if W:
            f = np.where(t < W, (t + 1.0) / W, f)
        return f

    def __repr__(self) -> str:
        if self.fn is not None:
            return "LRSchedule(callable)"
        parts = [f"warmup:{self.warmup}"] if self.warmup else []
        if self.kind == "step":
            parts.append(f"step:{self.step_size}:{self.gamma:g}")
        elif self.kind == "cosine":
            parts.append("cosine" + (f":{self.min_factor:g}" if self.min_factor else ""))
        elif not parts:
            parts.append("constant")
        return f"LRSchedule({'+'.join(parts)!r})"


def parse_schedule(spec: Any) -> LRSchedule:
    """An :class:`LRSchedule` from a spec string, a callable, None (constant) or an LRSchedule."""
    if spec is None:
        return LRSchedule()
    if isinstance(spec, LRSchedule):
        return spec
    if callable(spec):
        return LRSchedule(kind="lambda", fn=spec)
    text = str(spec).strip().lower()
    kw: dict[str, Any] = {}
    for part in text.split("+"):
        bits = [b.strip() for b in part.split(":")]
        name, args = bits[0], bits[1:]
        try:
            if name == "warmup" and len(args) == 1 and "warmup" not in kw:
                kw["warmup"] = int(args[0])
                if kw["warmup"] < 1:
                    raise ValueError
            elif name == "step" and len(args) == 2 and "kind" not in kw:
                kw.update(kind="step", step_size=int(args[0]), gamma=float(args[1]))
                if kw["step_size"] < 1 or not (math.isfinite(kw["gamma"]) and kw["gamma"] > 0):
                    raise ValueError
            elif name == "cosine" and len(args) <= 1 and "kind" not in kw:
                kw.update(kind="cosine", min_factor=float(args[0]) if args else 0.0)
                if not (0.0 <= kw["min_factor"] <= 1.0):
                    raise ValueError
            elif name == "constant" and not args and "kind" not in kw:
                kw["kind"] = "constant"
            else:
                raise ValueError
        except ValueError:
            raise InputError(f"bad learning-rate schedule {spec!r} (use constant, warmup:W, step:S:GAMMA, "
                             f"cosine[:MIN], or warmup:W+step:S:GAMMA / warmup:W+cosine)") from None
    return LRSchedule(**kw)


# ------------------------------------------------------------------------ the spec
@dataclass(frozen=True)
class OptimizerSpec:
    """Validated optimizer settings (the thin class; :func:`init_state`/:func:`apply_step` do the math)."""

    name: str = "sgd"
    momentum: float = 0.0
    dampening: bool | float = True
    staleness_aware: bool = False
    dc_lambda: float = 0.0
    weight_decay: float | None = None
    decoupled_weight_decay: bool | None = None
    momentum_init: str = "zero"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad_norm: float | None = None
    schedule: Any = None

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise InputError(f"unknown optimizer {self.name!r} (use {', '.join(OPTIMIZERS)})")
        m = float(self.momentum)
        if not (math.isfinite(m) and 0.0 <= m < 1.0):
            raise InputError(f"Invalid momentum value: {self.momentum} (need 0 <= m < 1)")
        if self.name in ("sgd", "adam", "adamw") and m != 0.0:
            raise InputError(f"momentum > 0 needs --optimizer momentum or shifted (adam has betas), "
                             f"not {self.name}")
        if not isinstance(self.dampening, bool):
            d = float(self.dampening)
            if not (math.isfinite(d) and 0.0 <= d <= 1.0):
                raise InputError(f"Invalid dampening value: {self.dampening} (need a bool or 0 <= d <= 1)")
        lam = float(self.dc_lambda)
        if not (math.isfinite(lam) and lam >= 0.0):
            raise InputError(f"Invalid dc_lambda value: {self.dc_lambda} (need >= 0)")
        w = self.wd
        if not (math.isfinite(w) and w >= 0.0):
            raise InputError(f"Invalid weight_decay value: {self.weight_decay} (need a finite w >= 0)")
        if self.momentum_init not in MOMENTUM_INITS:
            raise InputError(f"Invalid momentum_init {self.momentum_init!r} (use zero or gradient)")
        b1, b2 = (float(b) for b in self.betas)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise InputError(f"Invalid betas {self.betas} (need 0 <= beta < 1)")
        if not (math.isfinite(float(self.eps)) and float(self.eps) >= 0.0):
            raise InputError(f"Invalid eps value: {self.eps} (need >= 0)")
        if self.clip_grad_norm is not None:
            c = float(self.clip_grad_norm)
            if not (math.isfinite(c) and c > 0.0):
                raise InputError(f"Invalid clip_grad_norm value: {self.clip_grad_norm} (need a finite c > 0)")
        object.__setattr__(self, "schedule", parse_schedule(self.schedule))

    @property
    def wd(self) -> float:
        """The weight decay in force (AdamW's default 1e-2, as torch.optim.AdamW; else 0)."""
        if self.weight_decay is None:
            return 1e-2 if self.name == "adamw" else 0.0
        return float(self.weight_decay)

    @property
    def decoupled(self) -> bool:
        return self.name == "adamw" if self.decoupled_weight_decay is None else bool(self.decoupled_weight_decay)

    @property
    def needs_read_params(self) -> bool:
        """DC-ASGD needs the parameters a row was computed at when the row is applied."""
        return self.dc_lambda > 0.0

    @property
    def label(self) -> str:
        """A short human description (``adamw wd=0.01``)."""
        bits = [self.name]
        if self.name in ("momentum", "shifted"):
            bits.append(f"m={self.momentum:g}")
        if self.wd:
            bits.append(f"wd={self.wd:g}" + (" decoupled" if self.decoupled and self.name != "adamw" else ""))
        if not self.schedule.is_constant:
            bits.append(repr(self.schedule)[11:-1].strip("'"))
        return " ".join(bits)


def check_lr(lr) -> float:
    try:
        lr = float(lr)
    except (TypeError, ValueError):
        raise InputError(f"Invalid learning rate: {lr!r} (need a finite lr > 0)") from None
    if not (math.isfinite(lr) and lr > 0.0):
        raise InputError(f"Invalid learning rate: {lr} (need a finite lr > 0)")
    return lr


def lr_factors(spec: OptimizerSpec, T: int) -> np.ndarray | None:
    """Per-update learning-rate multipliers, or None for a constant schedule."""
    return None if spec.schedule.is_constant else spec.schedule.factors(T)


def init_state(spec: OptimizerSpec, x, n_workers: int) -> dict:
    """Server state for parameters x (L, P): velocity (L, P), per-worker velocities (N, L, P) or
    Adam's moments, plus the step count and the first-gradient flags of ``momentum_init``."""
    import torch

    st: dict[str, Any] = {"t": 0}
    if spec.name == "momentum":
        st["v"] = torch.zeros_like(x)
        st["started"] = False
    elif spec.name == "shifted":
        n = max(int(n_workers), 1)
        st["vw"] = torch.zeros((n, *x.shape), dtype=x.dtype, device=x.device)
        st["started_w"] = np.zeros(n, dtype=bool)
    elif spec.name in ("adam", "adamw"):
        st["m"] = torch.zeros_like(x)
        st["s"] = torch.zeros_like(x)
    return st


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


def _clip(g, c: float):
    """torch.nn.utils.clip_grad_norm_'s rule on a (…, P) gradient (norm over the last axis)."""
    import torch

    n = torch.linalg.vector_norm(g, dim=-1, keepdim=True)
    return g * torch.clamp(c / (n + 1e-6), max=1.0)


def _velocity(spec: OptimizerSpec, v, g, lr, first: bool):
    """One velocity update in place (see the module docstring); returns v."""
    m = spec.momentum
    if spec.dampening is True:  # paper eq. 9: v holds −η-scaled steps
        if first:
            v.copy_(-(lr * g) if not isinstance(lr, float) else g * -lr)
        else:
            v.mul_(m).sub_((lr * (1.0 - m)) * g)
    else:  # torch.optim.SGD's buffer b = m b + (1 − d) g
        d = 0.0 if spec.dampening is False else float(spec.dampening)
        if first:
            v.copy_(g)
        elif d == 0.0:
            v.mul_(m).add_(g)
        else:
            v.mul_(m).add_(g, alpha=1.0 - d)
    return v


def apply_step(spec: OptimizerSpec, x, state: dict, grads, workers, staleness, lr, x_reads=None):
    """Apply one server step in place on x (L, P).

    ``grads``: the step's row gradients (a list of (L, P) tensors, or a (K, L, P) tensor),
    ``workers``/``staleness``: per-row ints, ``lr``: η_t, a float or (L, 1) tensor,
    ``x_reads``: per-row parameters at the read version (DC-ASGD only)."""
    K = len(grads)
    wd = spec.wd
    torch_form = spec.dampening is not True
    simple = spec.dc_lambda == 0.0 and not spec.staleness_aware
    state["t"] += 1
    if spec.name == "shifted":
        gs = grads if simple else _row_grads(spec, x, grads, staleness, x_reads)
        vw, started = state["vw"], state["started_w"]
        first_of = spec.momentum_init == "gradient"
        acc = None
        for j in range(K):
            w = int(workers[j])
            g = gs[j]
            if spec.clip_grad_norm is not None:
                g = _clip(g, float(spec.clip_grad_norm))
            if wd and not spec.decoupled:
                g = g + wd * x
            _velocity(spec, vw[w], g, lr, first_of and not started[w])
            started[w] = True
            acc = vw[w].clone() if acc is None else acc.add_(vw[w])
        if K > 1:
            acc = acc / K
        if wd and spec.decoupled:
            x.mul_(1.0 - lr * wd)
        if torch_form:
            x.sub_(lr * acc)
        else:
            x.add_(acc)
        return x
    if simple:
        if K == 1:
            d = grads[0]
        else:
            d = grads.mean(0) if hasattr(grads, "dim") else sum(grads[1:], grads[0]) / K
    else:
        gs = _row_grads(spec, x, grads, staleness, x_reads)
        d = gs[0] if K == 1 else sum(gs[1:], gs[0]) / K
    if spec.clip_grad_norm is not None:
        d = _clip(d, float(spec.clip_grad_norm))
    if wd:
        if spec.decoupled:
            x.mul_(1.0 - lr * wd)
        else:
            d = d + wd * x
    if spec.name == "sgd":
        x.sub_(lr * d)  # (not add_(d, alpha=-lr): batched runs with an (L, 1) lr stay bitwise equal)
    elif spec.name == "momentum":
        first = spec.momentum_init == "gradient" and not state["started"]
        state["started"] = True
        v = _velocity(spec, state["v"], d, lr, first)
        if torch_form:
            x.sub_(lr * v)
        else:
            x.add_(v)
    else:  # adam / adamw: torch.optim.Adam's single-tensor update
        b1, b2 = (float(b) for b in spec.betas)
        t = state["t"]
        m, s = state["m"], state["s"]
        m.lerp_(d, 1.0 - b1)
        s.mul_(b2).addcmul_(d, d, value=1.0 - b2)
        bc1 = 1.0 - b1 ** t
        bc2_sqrt = (1.0 - b2 ** t) ** 0.5
        denom = (s.sqrt() / bc2_sqrt).add_(float(spec.eps))
        if isinstance(lr, float):
            x.addcdiv_(m, denom, value=-(lr / bc1))
        else:
            x.sub_((lr / bc1) * (m / denom))
    return x
