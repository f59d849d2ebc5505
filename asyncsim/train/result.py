"""Result of one trace replay: logged loss by step and by simulated time, divergence, metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path
from ..plots import save_figure
from .._repr import dataclass_repr


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class TrainResult:
    """One replay of a trace.

    ``log_step[i]`` is a number of applied updates k, ``loss[i]`` the training loss of the
    parameters after k updates (k = 0: the initial parameters) and ``sim_time[i]`` the trace's
    simulated time at which update k was applied (``t_applied`` of step k−1; 0 for k = 0).
    A diverged run stops at the first logged step whose loss is non-finite or above
    ``divergence_factor`` × the initial loss; ``diverged_step`` is that k. ``verdict`` is
    ``converged``, ``unstable`` or ``diverged`` (rule: :mod:`asyncsim.train.curves`).
    ``val_curves`` maps ``val_loss`` (and ``val_accuracy`` for classification) to arrays
    aligned with ``log_step`` (empty without validation data or when not logged);
    ``batch_loss[i]`` is the mean minibatch loss of the gradients applied between logs i−1
    and i (NaN at 0; None for the quadratic).
    """

    __repr__ = dataclass_repr  # arrays by shape (asyncsim._repr)

    diverged: bool
    diverged_step: int | None
    final_loss: float
    steps: int
    log_step: np.ndarray
    loss: np.ndarray
    sim_time: np.ndarray
    initial_loss: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    device: str = "cpu"
    lr: float = float("nan")
    seed: int = 0
    optimizer: str = "sgd"
    momentum: float = 0.0
    dataset: str = ""
    model: str | None = None
    engine: str = ""
    max_live_versions: int = 1
    wall_time_s: float = float("nan")
    params: np.ndarray | None = field(default=None, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)
    verdict: str = ""
    val_curves: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    batch_loss: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if not self.verdict:
            self.verdict = "diverged" if self.diverged else "converged"

    @property
    def updates_per_s(self) -> float:
        return self.steps / self.wall_time_s if self.wall_time_s and self.wall_time_s > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (non-finite numbers become ``None``; no per-step arrays)."""
        d = {
            "verdict": self.verdict,
            "diverged": bool(self.diverged),
            "diverged_step": None if self.diverged_step is None else int(self.diverged_step),
            "final_loss": _num(self.final_loss),
            "initial_loss": _num(self.initial_loss),
            "steps": int(self.steps),
            "val_loss": _num(self.val_loss),
            "val_accuracy": _num(self.val_accuracy),
            "lr": _num(self.lr),
            "seed": int(self.seed),
            "optimizer": self.optimizer,
            "momentum": float(self.momentum),
            "dataset": self.dataset,
            "model": self.model,
            "device": self.device,
            "engine": self.engine,
            "max_live_versions": int(self.max_live_versions),
            "wall_time_s": _num(self.wall_time_s),
            "sim_time": _num(self.sim_time[-1]) if len(self.sim_time) else None,
        }
        d.update({k: v for k, v in self.extra.items() if k not in d})
        return d

    def metrics_table(self) -> dict[str, np.ndarray]:
        """Columns ``step``, ``sim_time``, ``loss`` and any validation curves, per logged update."""
        out = {"step": np.asarray(self.log_step, dtype=np.int64),
               "sim_time": np.asarray(self.sim_time, dtype=np.float64),
               "loss": np.asarray(self.loss, dtype=np.float64)}
        if self.batch_loss is not None:
            out["batch_loss"] = np.asarray(self.batch_loss, dtype=np.float64)
        for k, v in self.val_curves.items():
            out[k] = np.asarray(v, dtype=np.float64)
        return out

    def time_to_target(self, target: float) -> tuple[float | None, int | None]:
        """``(simulated time, update)`` of the first logged update whose training loss is
        ≤ ``target``, or ``(None, None)`` when none is (a diverged run never reaches it after
        diverging: its curve stops there)."""
        loss = np.asarray(self.loss, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            hit = np.flatnonzero(np.isfinite(loss) & (loss <= float(target)))
        if not len(hit):
            return None, None
        i = int(hit[0])
        return float(self.sim_time[i]), int(self.log_step[i])

    def save_metrics(self, path: str | Path) -> Path:
        """Per-logged-update loss, validation metrics and simulated time, as CSV (``.csv``) or
        Parquet (otherwise)."""
        path = Path(path)
        cols = self.metrics_table()
        with atomic_path(path) as tmp:
            if path.suffix.lower() == ".csv":
                names = list(cols)
                lists = [cols[k].tolist() for k in names]
                lines = [",".join(names)]
                lines += [",".join(repr(v) if isinstance(v, float) else str(v) for v in row) for row in zip(*lists)]
                tmp.write_text("\n".join(lines) + "\n")
            else:
                import json

                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.table({k: pa.array(v) for k, v in cols.items()})
                meta = json.dumps({k: v for k, v in self.to_dict().items()}, default=str)
                table = table.replace_schema_metadata({b"asyncsim": meta.encode()})
                pq.write_table(table, tmp)
        return path

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """PNG with loss vs step and loss vs simulated wall-clock, side by side."""
        return plot_results([self], path, title=title)


def plot_results(results, path: str | Path, labels=None, title: str | None = None) -> Path:
    """Loss vs step (left) and vs simulated wall-clock (right) for one or more results."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for i, r in enumerate(results):
        lab = labels[i] if labels else (f"lr={r.lr:g}" if len(results) > 1 else None)
        loss = np.asarray(r.loss, dtype=float)
        with np.errstate(invalid="ignore"):
            pos = np.isfinite(loss) & (loss > 0) & (loss < 1e300)  # log axes overflow beyond
        ax1.plot(np.asarray(r.log_step)[pos], loss[pos], label=lab)
        line = ax2.plot(np.asarray(r.sim_time)[pos], loss[pos], label=lab)[0]
        vl = r.val_curves.get("val_loss") if r.val_curves else None
        if vl is not None and len(vl) == len(loss):
            vl = np.asarray(vl, dtype=float)
            with np.errstate(invalid="ignore"):
                vp = np.isfinite(vl) & (vl > 0) & (vl < 1e300)
            vlab = "validation" if len(results) == 1 else None
            ax1.plot(np.asarray(r.log_step)[vp], vl[vp], ls="--", color=line.get_color(), label=vlab)
            ax2.plot(np.asarray(r.sim_time)[vp], vl[vp], ls="--", color=line.get_color(), label=vlab)
        if r.diverged and r.diverged_step is not None:
            ax1.axvline(r.diverged_step, color="red", ls=":", lw=1)
    for ax, xl in ((ax1, "update"), (ax2, "simulated time (s)")):
        ax.set_xlabel(xl)
        ax.set_ylabel("loss (dashed: validation)" if any(r.val_curves for r in results) else "training loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if any(lab for lab in (labels or [])) or len(results) > 1:
        ax1.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
