"""A user's own ``torch.nn.Module``, loss and data as a replay :class:`~asyncsim.train.problem.Problem`.

The module is trained **in place**: for the sequential engine its parameters are rebound as views
of the replay's master vector (``p.data`` only; the ``Parameter`` objects the user holds stay the
same), so every update is the module's own parameters moving, and after the replay each
parameter holds its final value in its own storage again, as after a torch training loop.
Parameters with ``requires_grad=False`` are constants (not trained, not counted).

* **Data**: ``(X, y)`` tensors or arrays, a dict ``{"X", "y"[, "X_val", "y_val"]}``, a
  ``TensorDataset`` or any map-style ``torch.utils.data.Dataset`` of ``(x, y)`` pairs (stacked
  once: O(n) time and memory). Validation data only when given (``val_dataset=`` or the dict's
  ``X_val``/``y_val``); nothing is split off silently.
* **Batches**: ``batch_size=None`` is full batch (every example in every gradient, no
  sampling); an integer draws each row's minibatch with replacement from (seed, step, worker,
  occurrence), as for the built-in models.
* **Loss**: ``loss(output, target)`` returning the mean over the batch (``F.cross_entropy``,
  ``nn.MSELoss()``, …); default cross-entropy for integer targets, mean squared error otherwise.
* **Modes**: gradients are computed in training mode, logged losses, validation metrics and
  Hessian-vector products in evaluation mode (under ``no_grad`` where no gradient is needed);
  the module is left in the mode it came in.
* **Buffers** (BatchNorm's running statistics) and **dropout**: see
  :mod:`asyncsim.train.sequential`. A module with buffers or dropout is replayed by the
  sequential engine; one without (``functional``) can also use the batched engine
  (``torch.func.functional_call`` + ``vmap``).
* **dtype/device**: the module is moved (``module.to``) to the device asked for (``auto``: CUDA
  when available) and, when ``dtype`` is given, to that dtype; otherwise its own dtype is kept.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .data import minibatch_indices
from .device import resolve_device, resolve_dtype
from .problem import DataProblem

_RNG_SALT = np.uint64(0xD50F)


def _tensor(a, what: str):
    import torch

    if isinstance(a, torch.Tensor):
        return a.detach()
    try:
        return torch.as_tensor(np.asarray(a))
    except Exception as exc:
        raise InputError(f"{what}: expected a tensor or array, got {type(a).__name__} ({exc})") from None


def as_tensors(data, what: str = "dataset"):
    """``(X, y)`` from the accepted dataset forms (module docstring); ``None`` passes through."""
    import torch

    if data is None:
        return None
    if isinstance(data, dict):
        if "X" not in data or "y" not in data:
            raise InputError(f"{what}: a dict needs keys 'X' and 'y'")
        return _tensor(data["X"], f"{what}['X']"), _tensor(data["y"], f"{what}['y']")
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise InputError(f"{what}: expected (X, y), got a sequence of {len(data)} items")
        return _tensor(data[0], f"{what} X"), _tensor(data[1], f"{what} y")
    from torch.utils.data import Dataset as TorchDataset, TensorDataset

    if isinstance(data, TensorDataset):
        if len(data.tensors) != 2:
            raise InputError(f"{what}: a TensorDataset of (X, y) is needed, got {len(data.tensors)} tensors")
        return data.tensors[0].detach(), data.tensors[1].detach()
    if isinstance(data, TorchDataset) and hasattr(data, "__len__"):
        n = len(data)
        if n < 1:
            raise InputError(f"{what}: the dataset is empty")
        xs, ys = [], []
        for i in range(n):
            item = data[i]
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise InputError(f"{what}[{i}]: items must be (x, y) pairs")
            xs.append(torch.as_tensor(item[0]))
            ys.append(torch.as_tensor(item[1]))
        return torch.stack(xs), torch.stack(ys)
    raise InputError(f"{what}: expected (X, y), a dict with X and y, or a torch Dataset; "
                     f"got {type(data).__name__}")


LOSSES = ("cross_entropy", "mse")


def _load_attr(spec: str, what: str):
    """The object NAME of the Python file PATH in ``PATH.py:NAME`` (the user's own file,
    imported as a module — as pytest imports a conftest)."""
    import importlib.util
    from pathlib import Path

    path, _, name = spec.rpartition(":")
    p = Path(path)
    if not path.endswith(".py") or not name.isidentifier():
        raise InputError(f"{what} {spec!r}: expected FILE.py:NAME")
    if not p.is_file():
        raise InputError(f"{what} {spec!r}: no such file {p}")
    try:
        mod_spec = importlib.util.spec_from_file_location(f"asyncsim_user_{p.stem}", p)
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
    except Exception as exc:
        raise InputError(f"{p}: cannot import ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if not hasattr(mod, name):
        raise InputError(f"{p}: has no {name!r}")
    return getattr(mod, name)


def is_user_spec(spec) -> bool:
    """True for a ``FILE.py:NAME`` string."""
    return isinstance(spec, str) and ".py:" in spec


def load_user_module(spec: str):
    """``FILE.py:NAME`` → an ``nn.Module``: NAME is a module, or a callable (a class or a
    function, called without arguments) returning one."""
    import torch

    obj = _load_attr(spec, "--model")
    if not isinstance(obj, torch.nn.Module) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise InputError(f"--model {spec!r}: calling it failed ({type(exc).__name__}: {exc})".splitlines()[0]) \
                from None
    if not isinstance(obj, torch.nn.Module):
        raise InputError(f"--model {spec!r}: expected a torch.nn.Module or a callable returning one, "
                         f"got {type(obj).__name__}")
    return obj


def resolve_loss(spec):
    """A loss callable from ``cross_entropy``, ``mse``, ``FILE.py:NAME`` or a callable (None: default)."""
    import torch.nn.functional as F

    if spec is None or callable(spec):
        return spec
    if spec == "cross_entropy":
        return F.cross_entropy
    if spec == "mse":
        return F.mse_loss
    if is_user_spec(spec):
        fn = _load_attr(spec, "--loss")
        if not callable(fn):
            raise InputError(f"--loss {spec!r}: not callable")
        return fn
    raise InputError(f"unknown loss {spec!r} (use {', '.join(LOSSES)} or FILE.py:NAME)")


def _default_loss(y):
    import torch.nn.functional as F

    if not y.is_floating_point():
        return F.cross_entropy
    return F.mse_loss


class ModuleProblem(DataProblem):
    """A user's ``nn.Module`` + loss + data (module docstring). Cost per gradient row: one
    forward and backward pass of the module over the row's batch."""

    kind = "module"
    tracks_loss = True

    def __init__(self, module, loss=None, dataset=None, *, batch_size: int | None = None, device="auto",
                 dtype=None, val_dataset=None, eval_size: int | None = None, hessian_size: int = 8192,
                 name: str = "tensors"):
        import torch

        if dataset is None or isinstance(dataset, str):
            raise InputError("a user nn.Module needs dataset=(X, y), a dict with X and y, or a torch Dataset"
                             + (f"; got {dataset!r}" if isinstance(dataset, str) else ""))
        dev = resolve_device(device)
        own = [p for p in module.parameters() if p.requires_grad]
        if not own:
            raise InputError("the module has no trainable parameters (requires_grad=True)")
        dt = resolve_dtype(dtype, own[0].dtype)
        if any(p.dtype != own[0].dtype for p in own) and dtype is None:
            raise InputError("the module's parameters have mixed dtypes; pass dtype=")
        module.to(device=dev, dtype=dt)
        self.module = module
        self.device, self.dtype = dev, dt
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.shapes = [tuple(p.shape) for p in self.params]
        self.sizes = [p.numel() for p in self.params]
        self.n_params = int(sum(self.sizes))
        self.buffer_names = [n for n, _ in module.named_buffers()]
        self.buffers = [b for _, b in module.named_buffers()]
        self.stateful = bool(self.buffers)
        drop = torch.nn.modules.dropout._DropoutNd
        self.random = any(isinstance(m, drop) and m.p > 0 for m in module.modules())
        self.functional = not self.stateful and not self.random
        self._x0 = torch.cat([p.detach().reshape(-1) for p in self.params]).clone()

        X, y = as_tensors(dataset)
        if X.ndim < 1 or len(X) != len(y) or len(X) < 1:
            raise InputError(f"dataset: X and y need the same number of examples (>= 1); got "
                             f"X {tuple(X.shape)}, y {tuple(y.shape)}")
        self.X = X.to(device=dev, dtype=dt if X.is_floating_point() else X.dtype)
        self.y = y.to(device=dev, dtype=dt if y.is_floating_point() else y.dtype)
        self.n_train = int(len(X))
        val = as_tensors(val_dataset, "val_dataset")
        if val is None and isinstance(dataset, dict) and "X_val" in dataset and "y_val" in dataset:
            val = as_tensors({"X": dataset["X_val"], "y": dataset["y_val"]}, "dataset (X_val, y_val)")
        if val is not None:
            Xv, yv = val
            if len(Xv) != len(yv) or len(Xv) < 1:
                raise InputError(f"val_dataset: X and y need the same number of examples (>= 1); got "
                                 f"X {tuple(Xv.shape)}, y {tuple(yv.shape)}")
            self.Xv = Xv.to(device=dev, dtype=dt if Xv.is_floating_point() else Xv.dtype)
            self.yv = yv.to(device=dev, dtype=dt if yv.is_floating_point() else yv.dtype)
        else:
            self.Xv = self.yv = None
        self.loss_fn = loss if loss is not None else _default_loss(self.y)
        if not callable(self.loss_fn):
            raise InputError(f"loss must be a callable loss(output, target), got {type(loss).__name__}")
        self.classification = not self.y.is_floating_point()
        self.full_batch = batch_size is None
        self.batch_size = self.n_train if batch_size is None else int(batch_size)
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1 (or None for full batch), got {batch_size}")
        n_eval = self.n_train if eval_size is None else min(int(eval_size), self.n_train)
        self.Xe, self.ye = self.X[:n_eval], self.y[:n_eval]
        self.Xh, self.yh = self.X[:hessian_size], self.y[:hessian_size]
        self._name = name
        self._probe()
        self._bound = None
        self._was_training = module.training
        self._rng_state = None

    def _probe(self) -> None:
        """One forward pass and loss on two examples (evaluation mode, no gradient), so a module
        that does not fit the data fails here with one line instead of deep inside the replay."""
        import torch

        was = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                out = self.module(self.X[:2])
                val = self.loss_fn(out, self.y[:2])
            if not (isinstance(val, torch.Tensor) and val.numel() == 1):
                raise InputError(f"loss must return one number (the batch mean), got "
                                 f"{type(val).__name__} {tuple(getattr(val, 'shape', ()))}")
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"the module {type(self.module).__name__} does not run on the data: "
                             f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
        finally:
            self.module.train(was)

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        return self._name

    @property
    def model_name(self) -> str:
        return type(self.module).__name__

    def init_params(self, seed: int):
        """The module's parameters as it was handed over (the seed draws minibatches and dropout)."""
        return self._x0.clone()

    # ------------------------------------------------------------------ rows
    def batch_indices(self, seed, step, worker, occurrence):
        import torch

        if self.full_batch:
            return None
        idx = minibatch_indices(seed, step, worker, occurrence, self.batch_size, self.n_train)
        return torch.as_tensor(idx, device=self.device)

    def row_seeds(self, seed, step, worker, occurrence):
        if not self.random:
            return None
        # the minibatch hash at a salted seed: one 63-bit seed per (seed, step, worker, occurrence)
        h = minibatch_indices(int(seed) ^ int(_RNG_SALT), step, worker, occurrence, 1, 2 ** 62)
        return h[:, 0]

    # ------------------------------------------------------------------ binding
    def _views(self, x):
        return [p.view(s) for p, s in zip(x.split(self.sizes), self.shapes)]

    def bind(self, x) -> None:
        import torch

        for p, v in zip(self.params, self._views(x)):
            p.data = v
        self._bound = x
        self._was_training = self.module.training
        self.module.train()
        if self.random:
            self._rng_state = torch.random.get_rng_state()

    def unbind(self) -> None:
        import torch

        if self._bound is None:
            return
        for p in self.params:
            p.data = p.data.clone()  # the final values, in the parameter's own storage
        self._bound = None
        self.module.train(self._was_training)
        if self._rng_state is not None:
            torch.random.set_rng_state(self._rng_state)  # the user's global generator, untouched
            self._rng_state = None

    def is_bound(self, x) -> bool:
        b = self._bound
        return b is not None and x.data_ptr() == b.data_ptr() and x.shape == b.shape

    def get_buffers(self):
        return [b.clone() for b in self.buffers]

    def set_buffers(self, bufs) -> None:
        if bufs is None:
            return
        for b, src in zip(self.buffers, bufs):
            b.copy_(src)

    def _state(self, x, leaves=None):
        d = dict(zip(self.names, leaves if leaves is not None else self._views(x)))
        d.update(zip(self.buffer_names, self.buffers))
        return d

    # ------------------------------------------------------------------ gradients
    def _batch(self, idx):
        return (self.X, self.y) if idx is None else (self.X[idx], self.y[idx])

    def grad_one(self, x, idx, seed=None):
        import torch

        Xb, yb = self._batch(idx)
        if seed is not None:
            torch.manual_seed(int(seed))
        if self.is_bound(x):  # the module's own parameters are views of x: a plain torch step
            loss = self.loss_fn(self.module(Xb), yb)
            gs = torch.autograd.grad(loss, self.params, allow_unused=True, materialize_grads=True)
        else:
            from torch.func import functional_call

            leaves = [p.detach().requires_grad_(True) for p in self._views(x)]
            was = self.module.training
            self.module.train()
            try:
                loss = self.loss_fn(functional_call(self.module, self._state(x, leaves), (Xb,)), yb)
            finally:
                self.module.train(was)
            gs = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
        self.last_loss = loss.detach()
        return torch.cat([g.reshape(-1) for g in gs])

    def grads(self, X, idx):
        """Gradients (B, P) at B parameter vectors: ``vmap`` of ``grad`` over
        ``functional_call`` (functional modules only: no buffers, no dropout)."""
        import torch
        from torch.func import functional_call, grad_and_value, vmap

        if not self.functional:
            raise InputError("the batched engine needs a module without buffers or dropout; "
                             "use engine='sequential'")
        names, sizes, shapes, module, loss_fn = self.names, self.sizes, self.shapes, self.module, self.loss_fn
        B = X.shape[0]

        def f(flat, xb, yb):
            d = {n: p.view(s) for n, p, s in zip(names, flat.split(sizes), shapes)}
            return loss_fn(functional_call(module, d, (xb,)), yb)

        was = module.training
        module.train()
        try:
            if idx is None:
                G, vals = vmap(grad_and_value(f), in_dims=(0, None, None))(X, self.X, self.y)
            else:
                G, vals = vmap(grad_and_value(f))(X, self.X[idx], self.y[idx])
        finally:
            module.train(was)
        self.last_losses = vals.detach()
        return G.reshape(B, -1)

    # ------------------------------------------------------------------ evaluation
    def _eval(self, X, Xd, yd):
        import torch
        from torch.func import functional_call

        losses, accs = [], []
        was = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                for l in range(X.shape[0]):
                    x = X[l]
                    out = self.module(Xd) if self.is_bound(x) else functional_call(self.module, self._state(x), (Xd,))
                    losses.append(self.loss_fn(out, yd).reshape(()))
                    if self.classification and out.ndim == 2:
                        accs.append((out.argmax(-1) == yd).to(self.dtype).mean())
        finally:
            self.module.train(was)
        return torch.stack(losses).to(self.dtype), (torch.stack(accs) if accs else None)

    def hvp_at(self, x):
        import torch
        from torch.func import functional_call

        leaves = [p.detach().requires_grad_(True) for p in self._views(x)]
        was = self.module.training
        self.module.eval()
        try:
            loss = self.loss_fn(functional_call(self.module, self._state(x, leaves), (self.Xh,)), self.yh)
        finally:
            self.module.train(was)
        gs = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True, materialize_grads=True)
        sizes, shapes = self.sizes, self.shapes

        def hvp(v):
            vs = [p.view(s) for p, s in zip(v.split(sizes), shapes)]
            dot = sum((g * u).sum() for g, u in zip(gs, vs))
            hs = torch.autograd.grad(dot, leaves, retain_graph=True, allow_unused=True, materialize_grads=True)
            return torch.cat([h.reshape(-1) for h in hs]).detach()

        return hvp, float(loss.detach())
