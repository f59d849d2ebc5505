"""A training problem as the replay sees it: one flat parameter vector and batched functions.

:class:`Problem` is the interface; :func:`make_problem` builds one from a dataset and a model
name. Every function takes parameters with a leading batch dimension where it says so, so the
same problem serves the sequential reference (one row, one run), batched in-flight rows and
batched independent runs (several learning rates or seeds).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from .data import Dataset, load_dataset, minibatch_indices
from .device import resolve_device, resolve_dtype
from .models import ModelSpec, parse_model


class Problem:
    """Base class. Subclasses: :class:`QuadraticProblem`, :class:`ModelProblem`."""

    kind: str = "?"
    n_params: int
    device: Any
    dtype: Any
    dataset: Dataset
    batch_size: int = 0

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def model_name(self) -> str | None:
        return None

    def init_params(self, seed: int):
        """Flat initial parameters (P,) on the device."""
        raise NotImplementedError

    def batch_indices(self, seed: int, step, worker, occurrence):
        """Minibatch indices (R, batch_size) on the device for trace rows, or None (no data)."""
        return None

    def grad_one(self, x, idx):
        """Gradient (P,) of one minibatch at parameters x (P,) — the sequential reference."""
        raise NotImplementedError

    def grads(self, X, idx):
        """Gradients (B, P) of B minibatches at B parameter vectors X (B, P), in one call."""
        raise NotImplementedError

    def loss(self, X):
        """Training loss (L,) at parameters X (L, P) (on a fixed evaluation subset)."""
        raise NotImplementedError

    def val_metrics(self, X) -> dict[str, Any]:
        """Validation metrics, each a tensor (L,): ``val_loss`` and, for classification,
        ``val_accuracy``. Empty when the problem has no validation data."""
        return {}

    def hvp_at(self, x):
        """``(hvp, loss)`` at x: hvp(v) is the Hessian of the full training loss times v (P,)."""
        raise NotImplementedError


class QuadraticProblem(Problem):
    """f(x) = ½ Σ λ_i x_i²: gradient λ ⊙ x (deterministic), Hessian diag(λ).

    The initial point is x0 = 1 (every coordinate) for every seed; pass ``init=`` to replay for
    another."""

    kind = "quadratic"

    def __init__(self, dataset: Dataset, device, dtype):
        import torch

        self.dataset = dataset
        self.device = device
        self.dtype = dtype
        self.lam = torch.as_tensor(dataset.eigenvalues, dtype=dtype, device=device)
        self.n_params = int(self.lam.numel())

    @property
    def sharpness(self) -> float:
        return float(self.dataset.eigenvalues.max())

    def init_params(self, seed: int):
        import torch

        return torch.ones(self.n_params, dtype=self.dtype, device=self.device)

    def grad_one(self, x, idx):
        return self.lam * x

    def grads(self, X, idx):
        return X * self.lam

    def loss(self, X):
        return 0.5 * (X * X * self.lam).sum(-1)

    def hvp_at(self, x):
        lam = self.lam
        return (lambda v: lam * v), float(0.5 * (x * x * lam).sum())


class ModelProblem(Problem):
    """A functional model on a dataset with minibatches drawn by (seed, step, worker)."""

    kind = "model"

    def __init__(self, dataset: Dataset, model: ModelSpec, device, dtype, batch_size: int = 32,
                 eval_size: int = 1024, hessian_size: int = 8192):
        import torch

        if dataset.task not in ("classification", "regression"):
            raise InputError(f"dataset {dataset.name!r} has no data for a model")
        self.dataset = dataset
        self.model = model
        self.device = device
        self.dtype = dtype
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        self.n_params = model.n_params
        self.sizes = model.sizes
        self.shapes = model.shapes
        self.classification = dataset.task == "classification"
        ydt = torch.long if self.classification else dtype

        def t(a, dt):
            return torch.as_tensor(np.ascontiguousarray(a), device=device).to(dt)

        self.X = t(dataset.X_train, dtype)
        self.y = t(dataset.y_train, ydt)
        if not self.classification and self.y.ndim == 1:
            self.y = self.y[:, None]
        self.n_train = int(self.X.shape[0])
        self.Xe, self.ye = self.X[:eval_size], self.y[:eval_size]
        self.Xh, self.yh = self.X[:hessian_size], self.y[:hessian_size]
        if dataset.X_val is not None and len(dataset.X_val):
            self.Xv = t(dataset.X_val, dtype)
            self.yv = t(dataset.y_val, ydt)
            if not self.classification and self.yv.ndim == 1:
                self.yv = self.yv[:, None]
        else:
            self.Xv = self.yv = None

    @property
    def model_name(self) -> str:
        return self.model.name

    def init_params(self, seed: int):
        import torch

        return torch.as_tensor(self.model.init(seed), device=self.device).to(self.dtype)

    def batch_indices(self, seed, step, worker, occurrence):
        import torch

        idx = minibatch_indices(seed, step, worker, occurrence, self.batch_size, self.n_train)
        return torch.as_tensor(idx, device=self.device)

    # -------------------------------------------------------------- internals
    def _views(self, x):
        return [p.view(s) for p, s in zip(x.split(self.sizes), self.shapes)]

    def _views_batched(self, X):
        B = X.shape[0]
        return [p.reshape(B, *s) for p, s in zip(X.split(self.sizes, dim=1), self.shapes)]

    def _per_sample(self, out, y):
        """Per-sample loss: cross-entropy (classification) or mean squared error over outputs."""
        import torch.nn.functional as F

        if self.classification:
            C = out.shape[-1]
            return F.cross_entropy(out.reshape(-1, C), y.reshape(-1), reduction="none").view(y.shape)
        return ((out - y) ** 2).mean(-1)

    # ---------------------------------------------------------------- gradients
    def grad_one(self, x, idx):
        import torch

        # One autograd leaf per tensor, each a view of the master vector (a single flat leaf
        # made backward 2-3x slower, DESIGN.md "Trainer: measured facts").
        leaves = [p.detach().requires_grad_(True) for p in self._views(x)]
        out = self.model.forward(leaves, self.X[idx])
        loss = self._per_sample(out, self.y[idx]).mean()
        gs = torch.autograd.grad(loss, leaves)
        return torch.cat([g.reshape(-1) for g in gs])

    def grads(self, X, idx):
        import torch

        B = X.shape[0]
        leaves = [p.detach().requires_grad_(True) for p in self._views_batched(X)]
        out = self.model.forward_batched(leaves, self.X[idx])
        # Rows are independent, so the gradient of the sum of per-row mean losses w.r.t. the
        # stacked parameters is each row's own gradient.
        loss = self._per_sample(out, self.y[idx]).mean(1).sum()
        gs = torch.autograd.grad(loss, leaves)
        return torch.cat([g.reshape(B, -1) for g in gs], dim=1)

    # ------------------------------------------------------------------- losses
    def _eval(self, X, Xd, yd):
        import torch

        with torch.no_grad():
            L = X.shape[0]
            out = self.model.forward_batched(self._views_batched(X), Xd.expand(L, *Xd.shape))
            per = self._per_sample(out, yd.expand(L, *yd.shape))
            loss = per.mean(1)
            acc = None
            if self.classification:
                acc = (out.argmax(-1) == yd).to(X.dtype).mean(1)
        return loss, acc

    def loss(self, X):
        return self._eval(X, self.Xe, self.ye)[0]

    def val_metrics(self, X):
        if self.Xv is None:
            return {}
        loss, acc = self._eval(X, self.Xv, self.yv)
        out = {"val_loss": loss}
        if acc is not None:
            out["val_accuracy"] = acc
        return out

    def accuracy(self, X):
        """Training accuracy (L,) on the evaluation subset (classification only)."""
        return self._eval(X, self.Xe, self.ye)[1]

    def hvp_at(self, x):
        import torch

        leaves = [p.detach().requires_grad_(True) for p in self._views(x)]
        out = self.model.forward(leaves, self.Xh)
        loss = self._per_sample(out, self.yh).mean()
        # First-order graph built once, reused by every Hessian-vector product (double
        # backward), the cheapest HVP measured (DESIGN.md).
        gs = torch.autograd.grad(loss, leaves, create_graph=True)
        sizes, shapes = self.sizes, self.shapes

        def hvp(v):
            vs = [p.view(s) for p, s in zip(v.split(sizes), shapes)]
            dot = sum((g * u).sum() for g, u in zip(gs, vs))
            hs = torch.autograd.grad(dot, leaves, retain_graph=True)
            return torch.cat([h.reshape(-1) for h in hs]).detach()

        return hvp, float(loss.detach())


def default_model(dataset: Dataset) -> str | None:
    if dataset.task == "quadratic":
        return None
    if dataset.name == "teacher":
        return "mlp:32"
    return "mlp:64"


def make_problem(dataset: Any = "quadratic", model: str | None = None, *, device="auto",
                 dtype=None, dim: int | None = None, sharpness: float | None = None,
                 batch_size: int = 32, data_seed: int = 0, val_fraction: float = 0.2,
                 eval_size: int = 1024) -> Problem:
    """Build a :class:`Problem`: a dataset (name, file, dict or :class:`Dataset`) and a model
    spec (``linear``, ``mlp:128``, ``cnn``; ignored for ``quadratic`` unless given, which is an
    error). ``dtype`` defaults to float64 for the quadratic and float32 for models."""
    import torch

    if isinstance(dataset, Problem):
        return dataset
    dev = resolve_device(device)
    ds = load_dataset(dataset, dim=dim, sharpness=sharpness, data_seed=data_seed,
                      val_fraction=val_fraction)
    if ds.task == "quadratic":
        if model not in (None, "", "none"):
            raise InputError(f"the quadratic dataset trains its parameters directly; got model {model!r}")
        return QuadraticProblem(ds, dev, resolve_dtype(dtype, torch.float64))
    if sharpness is not None:
        raise InputError("--sharpness applies to the quadratic dataset only")
    spec = parse_model(model or default_model(ds), ds.input_shape, ds.n_outputs)
    return ModelProblem(ds, spec, dev, resolve_dtype(dtype, torch.float32), batch_size=batch_size,
                        eval_size=eval_size)
