"""The paper's theory figures (Giladi et al., ICLR 2020) plus α* by criterion vs cluster size.

``write_all(out_dir)`` writes, atomically, PNGs of:

* ``fig6_constant_delay.png``   — 1/α* vs τ for constant delay, with the line (2τ+1)/π;
* ``fig7_uniform.png``          — 1/α* vs E[τ] for uniform delays on 1..b, as the paper draws it
  (constant delay τ = E[τ] for reference);
* ``fig8_gaussian.png``         — 1/α* vs E[τ] for the discretised Gaussian (σ = 1, interval masses);
* ``fig10_momentum.png``        — 1/(aη) vs τ for momentum with dampening, several m (paper's axis);
* ``fig4_shifted_momentum.png`` — 1/(aη) vs τ for shifted momentum, several m (paper's axis);
* ``criteria_vs_workers.png``   — α* by criterion vs N for A-SGD clusters with exponential compute
  times (simulated with :func:`asyncsim.simulate`), next to round robin's 2 sin(π/(4N−2)).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..plots import save_figure
from . import families
from .characteristic import mean_alpha_star
from .lyapunov import trace_alpha_star
from .meansquare import mean_square_alpha_star


def _save(fig, path: Path) -> Path:
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def _fig():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    ax.grid(True, alpha=0.3)
    return plt, fig, ax


def fig6(path: Path, taus=range(0, 33)) -> Path:
    plt, fig, ax = _fig()
    taus = np.asarray(list(taus))
    inv = [1.0 / mean_alpha_star(families.constant(int(t))) for t in taus]
    ax.plot(taus, inv, "o", ms=4, label="exact 1/α* (mean criterion)")
    ax.plot(taus, (2 * taus + 1) / math.pi, "-", label="(2τ+1)/π")
    ax.set_xlabel("delay τ")
    ax.set_ylabel("1/α*")
    ax.set_title("Fig. 6: constant delay, SGD")
    ax.legend()
    out = _save(fig, path)
    return out


def _vs_mean(path: Path, family: str, title: str, mus=range(1, 33)) -> Path:
    plt, fig, ax = _fig()
    mus = np.asarray(list(mus))
    if family == "uniform":
        # the paper's Fig. 7: τ uniform on 1..b, E[τ] = (b+1)/2
        pmfs = [families.uniform(1, b) for b in range(1, 2 * int(mus.max()))]
        label = "uniform on 1..b"
    else:
        pmfs = [families.gaussian(int(mu)) for mu in mus]
        label = "discretised Gaussian, σ = 1"
    ax.plot([families.pmf_mean(p) for p in pmfs], [1 / mean_alpha_star(p) for p in pmfs], "o", ms=4,
            label=f"{label}: mean criterion")
    ax.plot(mus, [1 / mean_alpha_star(families.constant(int(m))) for m in mus], "-",
            label="constant delay τ = E[τ]")
    ax.set_xlabel("mean delay E[τ]")
    ax.set_ylabel("1/α*")
    ax.set_title(title)
    ax.legend()
    out = _save(fig, path)
    return out


def _momentum(path: Path, optimizer: str, title: str, ms=(0.0, 0.5, 0.9), taus=range(0, 21)) -> Path:
    plt, fig, ax = _fig()
    taus = np.asarray(list(taus))
    for m in ms:
        opt = "sgd" if m == 0 else optimizer
        a = [mean_alpha_star(families.constant(int(t)), opt, m) for t in taus]
        ax.plot(taus, 1.0 / np.asarray(a), "o-", ms=3, label=f"m = {m:g}" + (" (SGD)" if m == 0 else ""))
    ax.set_xlabel("delay τ")
    ax.set_ylabel("1/(a·η*)")
    ax.set_title(title)
    ax.legend()
    out = _save(fig, path)
    return out


def async_cluster_trace(n_workers: int, updates: int, seed: int = 0):
    """An A-SGD trace of N workers with exponential compute times (mean 1), via asyncsim.simulate."""
    import asyncsim

    sc = asyncsim.load_scenario({
        "name": f"async-exponential-{n_workers}", "seed": int(seed),
        "workers": [{"count": int(n_workers), "compute": {"dist": "exponential", "mean": 1.0}}],
        "policy": {"kind": "async"}, "stop": {"updates": int(updates)},
    })
    return asyncsim.simulate(sc, updates=int(updates), seed=int(seed))


def criteria_vs_workers(path: Path, ns=(2, 4, 8, 16, 32), updates: int = 40_000, seed: int = 0) -> Path:
    plt, fig, ax = _fig()
    ns = np.asarray(list(ns))
    mean, ms, tr = [], [], []
    for n in ns:
        trace = async_cluster_trace(int(n), updates, seed)
        p = trace.delay_pmf()
        ma = mean_alpha_star(p)
        mean.append(ma)
        ms.append(mean_square_alpha_star(p, scale=ma))
        tr.append(trace_alpha_star(trace))
    rr = [2 * math.sin(math.pi / (4 * (n - 1) + 2)) for n in ns]
    ax.loglog(ns, mean, "o-", label="A-SGD, mean criterion")
    ax.loglog(ns, ms, "s-", label="A-SGD, mean-square criterion")
    ax.loglog(ns, tr, "^-", label="A-SGD, trace criterion")
    ax.loglog(ns, rr, "k--", label="round robin (τ = N−1), exact")
    ax.axhline(2.0, color="grey", lw=0.8, ls=":", label="GD / S-SGD edge α = 2")
    ax.set_xticks(ns)
    ax.set_xticklabels([str(int(n)) for n in ns])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("workers N")
    ax.set_ylabel("α* = a·η")
    ax.set_title(f"α* by criterion, exponential compute times ({updates:,} updates)")
    ax.legend(fontsize=8)
    out = _save(fig, path)
    return out


def write_all(out_dir, updates: int = 40_000, seed: int = 0) -> list[Path]:
    """Write every figure into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    return [
        fig6(out / "fig6_constant_delay.png"),
        _vs_mean(out / "fig7_uniform.png", "uniform", "Fig. 7: uniform delays, SGD"),
        _vs_mean(out / "fig8_gaussian.png", "gaussian", "Fig. 8: discretised Gaussian delays, SGD"),
        _momentum(out / "fig10_momentum.png", "momentum", "Fig. 10: momentum (with dampening), constant delay"),
        _momentum(out / "fig4_shifted_momentum.png", "shifted", "Fig. 4 (left): shifted momentum, constant delay"),
        criteria_vs_workers(out / "criteria_vs_workers.png", updates=updates, seed=seed),
    ]
