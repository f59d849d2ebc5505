"""A training problem as the replay sees it: one flat parameter vector and batched functions.

:class:`Problem` is the interface; :func:`make_problem` builds one from a dataset and a model
name. Every function takes parameters with a leading batch dimension where it says so, so the
same problem serves the sequential reference (one row, one run), batched in-flight rows and
batched independent runs (several learning rates or seeds).
"""

from __future__ import annotations

from pathlib import Path
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

    #: True when the forward pass changes state that travels with versions (a module's
    #: buffers): the sequential engine then keeps each row's buffers (see
    #: :mod:`asyncsim.train.sequential`) and the batched engine is not available.
    stateful: bool = False
    #: False when gradients cannot be computed for stacked parameter sets (no batched engine).
    functional: bool = True
    #: True when :meth:`grad_one` / :meth:`grads` leave the minibatch loss they computed anyway
    #: in ``last_loss`` (0-d) / ``last_losses`` (B,): the engines average it between logs into
    #: the ``batch_loss`` curve at no extra forward pass.
    tracks_loss: bool = False
    last_loss = None
    last_losses = None

    def batch_indices(self, seed: int, step, worker, occurrence):
        """Minibatch indices (R, batch_size) on the device for trace rows, or None (no data,
        or every example in every gradient)."""
        return None

    def row_seeds(self, seed: int, step, worker, occurrence):
        """Per-row seeds of the forward pass's randomness (dropout), or None (deterministic)."""
        return None

    def bind(self, x) -> None:
        """Called by the sequential engine with its master vector before the replay."""

    def unbind(self) -> None:
        """Called after the replay (also after an error)."""

    def get_buffers(self):
        """Copies of the server's current buffers (stateful problems only)."""
        return None

    def set_buffers(self, bufs) -> None:
        """Make ``bufs`` (from :meth:`get_buffers`) the current buffers (stateful problems only)."""

    def log_cost(self) -> float:
        """Work of one log (loss and validation metrics) in units of one gradient row."""
        return 1.0

    def grad_one(self, x, idx, seed=None):
        """Gradient (P,) of one minibatch at parameters x (P,) — the sequential reference.
        ``seed``: the row's seed from :meth:`row_seeds` (None when deterministic)."""
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

    def grad_one(self, x, idx, seed=None):
        return self.lam * x

    def grads(self, X, idx):
        return X * self.lam

    def loss(self, X):
        return 0.5 * (X * X * self.lam).sum(-1)

    def hvp_at(self, x):
        lam = self.lam
        return (lambda v: lam * v), float(0.5 * (x * x * lam).sum())


class DataProblem(Problem):
    """A problem with data: an evaluation subset (``Xe``, ``ye``), optional validation data
    (``Xv``, ``yv``) and ``_eval(X, Xd, yd) -> (loss (L,), accuracy (L,) or None)``."""

    def loss(self, X):
        return self._eval(X, self.Xe, self.ye)[0]

    def val_metrics(self, X) -> dict[str, Any]:
        if self.Xv is None:
            return {}
        loss, acc = self._eval(X, self.Xv, self.yv)
        out = {"val_loss": loss}
        if acc is not None:
            out["val_accuracy"] = acc
        return out

    def log_cost(self) -> float:
        """One forward pass per evaluated example, against ~3 per example of a gradient row."""
        n = len(self.Xe) + (0 if self.Xv is None else len(self.Xv))
        return n / (3.0 * self.batch_size)


class ModelProblem(DataProblem):
    """A functional model on a dataset with minibatches drawn by (seed, step, worker)."""

    kind = "model"
    tracks_loss = True

    def __init__(self, dataset: Dataset, model: ModelSpec, device, dtype, batch_size: int | None = 32,
                 eval_size: int | None = 1024, hessian_size: int = 8192):
        import torch

        if dataset.task not in ("classification", "regression"):
            raise InputError(f"dataset {dataset.name!r} has no data for a model")
        self.dataset = dataset
        self.model = model
        self.device = device
        self.dtype = dtype
        self.full_batch = batch_size is None
        self.batch_size = dataset.n_train if batch_size is None else int(batch_size)
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        if eval_size is None:
            eval_size = dataset.n_train
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

        if self.full_batch:
            return None
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
    def grad_one(self, x, idx, seed=None):
        import torch

        # One autograd leaf per tensor, each a view of the master vector (a single flat leaf
        # made backward 2-3x slower, DESIGN.md "Trainer: measured facts").
        leaves = [p.detach().requires_grad_(True) for p in self._views(x)]
        Xb, yb = (self.X, self.y) if idx is None else (self.X[idx], self.y[idx])
        out = self.model.forward(leaves, Xb)
        loss = self._per_sample(out, yb).mean()
        gs = torch.autograd.grad(loss, leaves)
        self.last_loss = loss.detach()
        return torch.cat([g.reshape(-1) for g in gs])

    def grads(self, X, idx):
        import torch

        B = X.shape[0]
        leaves = [p.detach().requires_grad_(True) for p in self._views_batched(X)]
        if idx is None:  # full batch: every row sees every example
            Xb, yb = self.X.expand(B, *self.X.shape), self.y.expand(B, *self.y.shape)
        else:
            Xb, yb = self.X[idx], self.y[idx]
        out = self.model.forward_batched(leaves, Xb)
        # Rows are independent, so the gradient of the sum of per-row mean losses w.r.t. the
        # stacked parameters is each row's own gradient.
        rows = self._per_sample(out, yb).mean(1)
        gs = torch.autograd.grad(rows.sum(), leaves)
        self.last_losses = rows.detach()
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


def _is_module(model) -> bool:
    if model is None or isinstance(model, str):
        return False
    import torch

    return isinstance(model, torch.nn.Module)


def make_problem(dataset: Any = "quadratic", model: Any = None, *, device="auto",
                 dtype=None, dim: int | None = None, sharpness: float | None = None,
                 batch_size: int | None = 32, data_seed: int = 0, val_fraction: float = 0.2,
                 eval_size: int | None = 1024, loss=None, val_dataset=None) -> Problem:
    """Build a :class:`Problem`: a dataset (name, file, dict or :class:`Dataset`) and a model
    spec (``linear``, ``mlp:128``, ``cnn``; ignored for ``quadratic`` unless given, which is an
    error). ``dtype`` defaults to float64 for the quadratic and float32 for models.

    ``model`` may be the user's own ``torch.nn.Module``, with ``loss`` (a callable
    ``loss(output, target)`` returning the mean loss; default cross-entropy for integer targets,
    mean squared error otherwise), ``dataset`` as ``(X, y)`` tensors or arrays, a dict
    ``{"X", "y"[, "X_val", "y_val"]}`` or a ``torch.utils.data.Dataset`` of ``(x, y)`` pairs,
    and ``val_dataset`` likewise: see :class:`asyncsim.train.module.ModuleProblem`."""
    import torch

    if isinstance(dataset, Problem):
        return dataset
    from .module import ModuleProblem, is_user_spec, load_user_module, resolve_loss

    if is_user_spec(model):
        model = load_user_module(model)
    loss = resolve_loss(loss)
    if _is_module(model):
        name = "tensors"
        if isinstance(dataset, (str, Path, Dataset)):  # a named dataset or file, as arrays
            ds = load_dataset(dataset, dim=dim, data_seed=data_seed, val_fraction=val_fraction)
            if ds.task == "quadratic":
                raise InputError("the quadratic dataset has no data for a module; give data")
            dataset = {"X": ds.X_train, "y": ds.y_train}
            if val_dataset is None and ds.X_val is not None and len(ds.X_val):
                val_dataset = (ds.X_val, ds.y_val)
            name = ds.name
        return ModuleProblem(model, loss, dataset, batch_size=batch_size, device=device, dtype=dtype,
                             val_dataset=val_dataset, eval_size=eval_size, name=name)
    if loss is not None or val_dataset is not None:
        raise InputError("loss= and val_dataset= go with a user nn.Module as model=")
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
