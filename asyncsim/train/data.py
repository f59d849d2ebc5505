"""Datasets for trace-driven training (nothing is downloaded) and the order-free minibatch sampler.

* ``quadratic``: f(x) = ½ Σ λ_i x_i² with λ_max = ``sharpness`` (the exact linear system of the
  stability theory; deterministic gradients, no data).
* ``teacher``: regression on the outputs of a random teacher network (generated from ``data_seed``).
* ``digits``: scikit-learn's bundled 8×8 digits (1,797 images, 10 classes).
* a user's own tensors: a ``.pt`` file holding a dict (or a ``.npz``) with keys ``X`` and ``y``
  (optionally ``X_val``/``y_val``); integer ``y`` means classification, float ``y`` regression.

Minibatches are drawn *with replacement* by a counter-based hash of (seed, step, worker,
occurrence, position) — the splitmix64 finaliser — so a gradient's minibatch depends only on its
trace row, never on the order in which rows are computed. That is what lets the batched replay
compute rows in any grouping and still match the sequential reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

DATASETS = ("quadratic", "teacher", "digits")

#: Largest sharpness the quadratic accepts (see :func:`quadratic`).
MAX_SHARPNESS = 1e100


@dataclass
class Dataset:
    """Arrays of one dataset (numpy, float64 features) plus what the loss needs to know.

    ``task`` is ``"quadratic"``, ``"regression"`` or ``"classification"``. For the quadratic
    ``eigenvalues`` holds λ (descending, λ[0] = sharpness) and the arrays are ``None``.
    """

    name: str
    task: str
    X_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    n_classes: int | None = None
    eigenvalues: np.ndarray | None = None
    input_shape: tuple[int, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return 0 if self.X_train is None else int(self.X_train.shape[0])

    @property
    def n_inputs(self) -> int:
        return int(np.prod(self.input_shape)) if self.input_shape else 0

    @property
    def n_outputs(self) -> int:
        if self.task == "classification":
            return int(self.n_classes)
        if self.y_train is None:
            return 0
        return 1 if self.y_train.ndim == 1 else int(self.y_train.shape[1])


def quadratic(dim: int = 1, sharpness: float = 1.0, condition: float = 10.0) -> Dataset:
    """f(x) = ½ Σ λ_i x_i², λ log-spaced from ``sharpness`` down to ``sharpness/condition``."""
    dim = int(dim)
    if dim < 1:
        raise InputError(f"quadratic dimension must be >= 1, got {dim}")
    if not (np.isfinite(sharpness) and 0 < sharpness <= MAX_SHARPNESS):
        # Above 1e100 the initial loss ½·a·dim and the losses of a diverging run (up to 1e3 ×
        # that, and beyond between logs) leave no room in float64, and lr = α/a underflows.
        raise InputError(f"sharpness must be a positive number <= {MAX_SHARPNESS:g}, got {sharpness}")
    if dim == 1:
        lam = np.array([float(sharpness)])
    else:
        lam = float(sharpness) * np.geomspace(1.0, 1.0 / float(condition), dim)
    return Dataset(name="quadratic", task="quadratic", eigenvalues=lam, input_shape=(dim,),
                   meta={"dim": dim, "sharpness": float(sharpness)})


def _split(X: np.ndarray, y: np.ndarray, val_fraction: float, seed: int):
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5D17]))
    perm = rng.permutation(len(X))
    n_val = int(round(len(X) * float(val_fraction)))
    val, tr = perm[:n_val], perm[n_val:]
    return X[tr], y[tr], X[val], y[val]


def teacher(dim: int = 16, n: int = 2048, hidden: int = 32, outputs: int = 1, noise: float = 0.01,
            data_seed: int = 0, val_fraction: float = 0.2) -> Dataset:
    """Regression on a random tanh teacher network: y = W2 tanh(W1 x) + noise, x ~ N(0, I)."""
    if dim < 1 or n < 2:
        raise InputError(f"teacher needs dim >= 1 and n >= 2, got dim={dim}, n={n}")
    rng = np.random.default_rng(np.random.SeedSequence([int(data_seed), 0x7EAC]))
    X = rng.standard_normal((n, dim))
    W1 = rng.standard_normal((dim, hidden)) / np.sqrt(dim)
    W2 = rng.standard_normal((hidden, outputs)) / np.sqrt(hidden)
    y = np.tanh(X @ W1) @ W2 + noise * rng.standard_normal((n, outputs))
    if outputs == 1:
        y = y[:, 0]
    Xtr, ytr, Xv, yv = _split(X, y, val_fraction, data_seed)
    return Dataset(name="teacher", task="regression", X_train=Xtr, y_train=ytr, X_val=Xv, y_val=yv,
                   input_shape=(dim,), meta={"hidden": hidden, "noise": noise})


def digits(data_seed: int = 0, val_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8×8 digits, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = d.data.astype(np.float64) / 16.0
    y = d.target.astype(np.int64)
    Xtr, ytr, Xv, yv = _split(X, y, val_fraction, data_seed)
    return Dataset(name="digits", task="classification", X_train=Xtr, y_train=ytr, X_val=Xv,
                   y_val=yv, n_classes=10, input_shape=(1, 8, 8))


def from_arrays(X, y, X_val=None, y_val=None, *, name: str = "tensors", data_seed: int = 0,
                val_fraction: float = 0.2) -> Dataset:
    """Wrap user arrays; integer ``y`` → classification, float ``y`` → regression.

    ``X`` may be (n, features) or (n, C, H, W) (images, for the CNN)."""
    X = np.asarray(X.detach().cpu().numpy() if hasattr(X, "detach") else X)
    y = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y)
    if X.ndim < 2 or len(X) != len(y) or len(X) < 2:
        raise InputError(f"{name}: X must be (n, ...) with n >= 2 matching y; got X {X.shape}, y {y.shape}")
    if not np.issubdtype(X.dtype, np.number) or not np.all(np.isfinite(X)):
        raise InputError(f"{name}: X must be finite numbers")
    classification = np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_
    if X_val is None:
        Xtr, ytr, Xv, yv = _split(X, y, val_fraction, data_seed)
    else:
        Xtr, ytr = X, y
        Xv = np.asarray(X_val.detach().cpu().numpy() if hasattr(X_val, "detach") else X_val)
        yv = np.asarray(y_val.detach().cpu().numpy() if hasattr(y_val, "detach") else y_val)
    Xtr, Xv = Xtr.astype(np.float64), Xv.astype(np.float64)
    if classification:
        ytr, yv = ytr.astype(np.int64), yv.astype(np.int64)
        if ytr.ndim != 1 or ytr.min() < 0:
            raise InputError(f"{name}: class labels y must be a 1-D array of integers >= 0")
        n_classes = int(max(ytr.max(), yv.max() if yv.size else 0)) + 1
        task = "classification"
    else:
        ytr, yv = ytr.astype(np.float64), yv.astype(np.float64)
        n_classes = None
        task = "regression"
    return Dataset(name=name, task=task, X_train=Xtr, y_train=ytr, X_val=Xv, y_val=yv,
                   n_classes=n_classes, input_shape=tuple(Xtr.shape[1:]))


def load_file(path: str | Path, *, data_seed: int = 0, val_fraction: float = 0.2) -> Dataset:
    """Load a user's ``.pt`` (dict of tensors) or ``.npz`` with keys ``X`` and ``y``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such dataset file")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        elif p.suffix in (".pt", ".pth"):
            import torch

            d = torch.load(p, map_location="cpu", weights_only=True)
        else:
            raise InputError(f"{p}: dataset files must be .pt or .npz")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{p}: cannot read dataset ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if not isinstance(d, dict) or "X" not in d or "y" not in d:
        raise InputError(f"{p}: a dataset file must hold a dict with keys 'X' and 'y'")
    return from_arrays(d["X"], d["y"], d.get("X_val"), d.get("y_val"), name=p.stem,
                       data_seed=data_seed, val_fraction=val_fraction)


def load_dataset(spec: Any = "quadratic", *, dim: int | None = None, sharpness: float | None = None,
                 data_seed: int = 0, val_fraction: float = 0.2) -> Dataset:
    """A :class:`Dataset` from a name (``quadratic``, ``teacher``, ``digits``), a ``.pt``/``.npz``
    path, a dict ``{"X":…, "y":…}`` or a :class:`Dataset` (returned as is)."""
    if isinstance(spec, Dataset):
        return spec
    if isinstance(spec, dict):
        if "X" not in spec or "y" not in spec:
            raise InputError("a dataset dict needs keys 'X' and 'y'")
        return from_arrays(spec["X"], spec["y"], spec.get("X_val"), spec.get("y_val"),
                           data_seed=data_seed, val_fraction=val_fraction)
    if isinstance(spec, Path) or (isinstance(spec, str) and (spec.endswith((".pt", ".pth", ".npz"))
                                                             or "/" in spec)):
        return load_file(spec, data_seed=data_seed, val_fraction=val_fraction)
    if spec == "quadratic":
        return quadratic(dim=dim or 1, sharpness=1.0 if sharpness is None else sharpness)
    if spec == "teacher":
        return teacher(dim=dim or 16, data_seed=data_seed, val_fraction=val_fraction)
    if spec == "digits":
        return digits(data_seed=data_seed, val_fraction=val_fraction)
    raise InputError(f"unknown dataset {spec!r} (use one of {', '.join(DATASETS)} or a .pt/.npz file)")


# --------------------------------------------------------------------- minibatch indices
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 with good avalanche (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def minibatch_indices(seed: int, step: np.ndarray, worker: np.ndarray, occurrence: np.ndarray,
                      batch_size: int, n: int) -> np.ndarray:
    """Indices (rows, batch_size) into a training set of size ``n``, a pure function of
    (seed, step, worker, occurrence, position): sampling with replacement, order-free."""
    step = np.asarray(step, dtype=np.int64).astype(np.uint64)
    worker = np.asarray(worker, dtype=np.int64).astype(np.uint64)
    occ = np.asarray(occurrence, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        k = _mix(np.full(step.shape, np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)) ^ _GOLDEN)
        k = _mix(k ^ (step * _GOLDEN))
        k = _mix(k ^ ((worker << np.uint64(20)) + occ + np.uint64(1)))
        pos = np.arange(1, batch_size + 1, dtype=np.uint64) * _GOLDEN
        h = _mix(k[:, None] + pos[None, :])
    return (h % np.uint64(n)).astype(np.int64)
