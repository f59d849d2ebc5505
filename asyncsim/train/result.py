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
    ``divergence_factor`` × the initial loss; ``diverged_step`` is that k.
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

    @property
    def updates_per_s(self) -> float:
        return self.steps / self.wall_time_s if self.wall_time_s and self.wall_time_s > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (non-finite numbers become ``None``; no per-step arrays)."""
        d = {
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
        """The logged curve as columns ``step``, ``sim_time``, ``loss`` (what ``save_metrics`` writes)."""
        return {"step": np.asarray(self.log_step, dtype=np.int64),
                "sim_time": np.asarray(self.sim_time, dtype=np.float64),
                "loss": np.asarray(self.loss, dtype=np.float64)}

    def save_metrics(self, path: str | Path) -> Path:
        """Per-logged-step loss and simulated time, as CSV (``.csv``) or Parquet (otherwise)."""
        path = Path(path)
        cols = self.metrics_table()
        with atomic_path(path) as tmp:
            if path.suffix.lower() == ".csv":
                lines = ["step,sim_time,loss"]
                lines += [f"{s},{t!r},{v!r}" for s, t, v in
                          zip(cols["step"].tolist(), cols["sim_time"].tolist(), cols["loss"].tolist())]
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
        pos = np.isfinite(loss) & (loss > 0)
        ax1.plot(np.asarray(r.log_step)[pos], loss[pos], label=lab)
        ax2.plot(np.asarray(r.sim_time)[pos], loss[pos], label=lab)
        if r.diverged and r.diverged_step is not None:
            ax1.axvline(r.diverged_step, color="red", ls=":", lw=1)
    for ax, xl in ((ax1, "update"), (ax2, "simulated time (s)")):
        ax.set_xlabel(xl)
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if any(lab for lab in (labels or [])) or len(results) > 1:
        ax1.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
