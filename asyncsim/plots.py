"""Plots of traces that people would rather look at than read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._io import atomic_path
from .trace import Trace


def save_figure(fig, path: str | Path, *, dpi: int = 110, **savefig_kw) -> Path:
    """Write a matplotlib figure as PNG atomically (temp file + rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, **savefig_kw)
    finally:
        plt.close(fig)
    return path


def plot_timeline(trace: Trace, path: str | Path, *, t_max: float | None = None, max_workers: int = 16,
                  title: str | None = None) -> Path:
    """Gantt chart of one run: each worker's compute intervals, the wait until the
    server applied the gradient, and each applied update labelled with its staleness.

    Shows the first ``t_max`` simulated seconds (default: about 12 updates per worker).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = trace.columns
    nw = min(trace.n_workers, max_workers)
    if t_max is None:
        k = min(len(trace) - 1, 12 * nw) if len(trace) else 0
        t_max = float(np.sort(c["t_done"])[k]) if len(trace) else 1.0
    sel = (c["t_read"] <= t_max) & (c["worker"] < nw)
    fig, ax = plt.subplots(figsize=(11, 0.45 * nw + 1.8))
    cmap = plt.get_cmap("viridis")
    tau_max = max(int(c["staleness"][sel].max(initial=0)), 1)
    for i in np.flatnonzero(sel):
        w, a, b, ta, st = int(c["worker"][i]), c["t_read"][i], c["t_done"][i], c["t_applied"][i], int(c["staleness"][i])
        dropped = c["step"][i] < 0
        color = "lightgray" if dropped else cmap(st / tau_max * 0.9)
        ax.broken_barh([(a, b - a)], (w - 0.35, 0.7), facecolors=color, edgecolors="black", linewidth=0.4)
        if not dropped and np.isfinite(ta):
            if ta > b:
                ax.plot([b, ta], [w, w], color="gray", linewidth=0.8)
            ax.plot([ta], [w], marker="|", color="black", markersize=9)
            if ta - a > t_max / 60:
                ax.text((a + b) / 2, w, f"τ={st}", ha="center", va="center", fontsize=7,
                        color="white" if st / tau_max > 0.4 else "black")
        elif dropped:
            ax.text((a + b) / 2, w, "dropped" if c["step"][i] == -1 else "lost", ha="center", va="center",
                    fontsize=6, color="dimgray")
    d = trace.down_intervals
    for w, a, b in zip(d["worker"].tolist(), d["t_down"].tolist(), d["t_up"].tolist()):
        if w < nw and a <= t_max:
            b = t_max if not np.isfinite(b) else min(b, t_max)
            ax.broken_barh([(a, b - a)], (w - 0.45, 0.9), facecolors="none", edgecolors="tab:red",
                           hatch="///", linewidth=0.8)
            ax.text((a + b) / 2, w, "down", ha="center", va="center", fontsize=7, color="tab:red")
    ax.set_xlim(0, t_max)
    ax.set_ylim(-0.7, nw - 0.3)
    ax.set_yticks(range(nw))
    ax.set_yticklabels([f"worker {w}" for w in range(nw)])
    ax.invert_yaxis()
    ax.set_xlabel("simulated time (s)")
    policy = (trace.scenario or {}).get("policy", {}).get("kind", "")
    ax.set_title(title or f"{(trace.scenario or {}).get('name', 'trace')} ({policy}): bars = computing a gradient, "
                 "line = waiting to be applied, | = applied (label: staleness τ), hatched = down", fontsize=10)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, tau_max / 0.9))
    fig.colorbar(sm, ax=ax, pad=0.01, label="staleness τ")
    fig.tight_layout()
    return save_figure(fig, path)
