"""The figure and tables of docs/diloco.md (the cross-data-centre example).

    python benchmarks/diloco_figure.py [--outdir docs/img] [--time 3600]

scenarios/diloco-two-datacentres.yaml (16 GPUs, two data centres joined by a
10 Gbit/s link, a 1.3B-parameter model) simulated for ``--time`` seconds under
diloco, streaming_diloco (P = 4) and async_diloco for several H, and under
all-reduce S-SGD (ring, the gradients in one bucket: on this link more buckets only add latency).
Left: wall clock per outer round divided by H, the seconds each inner step
costs (all-reduce: its time per step). Right: the communication fraction
(share of the workers' time not spent computing). Then the stable region of
async_diloco in (inner lr, outer lr) (docs/img/diloco-async-region.png).
Prints the tables it plots.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HS = (20, 40, 100, 200, 400)
KINDS = (("diloco", {}, "tab:blue"), ("streaming_diloco", {"fragments": 4}, "tab:green"),
         ("async_diloco", {}, "tab:red"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outdir", default=str(ROOT / "docs" / "img"))
    ap.add_argument("--time", type=float, default=3600.0)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from asyncsim.engine import simulate
    from asyncsim.plots import save_figure
    from asyncsim.scenario import load_scenario

    base = load_scenario(ROOT / "scenarios" / "diloco-two-datacentres.yaml").to_dict()
    mean_step = 0.35
    ar = {**base, "policy": {"kind": "allreduce", "algorithm": "ring"}}
    tr = simulate(ar, time=args.time)
    s = tr.summary()
    ar_step = s["time_per_update"]
    ar_comm = 1.0 - s["utilisation_mean"]
    print(f"allreduce (ring, one bucket): {ar_step:.3f} s per step, "
          f"communication fraction {ar_comm:.3f}, {s['gradient_rate']:.1f} gradients/s")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    ax1.plot(HS, [ar_step] * len(HS), "k--", marker="s", ms=3, label="all-reduce S-SGD")
    ax2.plot(HS, [ar_comm] * len(HS), "k--", marker="s", ms=3, label="all-reduce S-SGD")
    ax1.plot(HS, [mean_step] * len(HS), ":", color="grey", lw=1.0, label="mean inner step (no communication)")
    print(f"{'policy':18} {'H':>4} {'s/round':>9} {'comm':>6} {'grad/s':>8} {'x AR':>6} "
          f"{'outer tau mean':>14} {'max':>4}")
    for kind, extra, color in KINDS:
        per_round, comm = [], []
        for h in HS:
            sc = {**base, "policy": {**base["policy"], "kind": kind, "inner_steps": h, **extra}}
            out = simulate(sc, time=args.time).summary()
            per_round.append(out["time_per_outer_round"])
            comm.append(out["communication_fraction"])
            print(f"{kind:18} {h:4d} {out['time_per_outer_round']:9.2f} {out['communication_fraction']:6.3f} "
                  f"{out['gradient_rate']:8.1f} {out['gradient_rate'] / s['gradient_rate']:6.2f} "
                  f"{out['outer_staleness_mean']:14.2f} {out['outer_staleness_max']:4d}")
        label = kind + (f" (P = {extra['fragments']})" if extra else "")
        ax1.plot(HS, [r / h for r, h in zip(per_round, HS)], "-", marker="o", ms=3, color=color, label=label)
        ax2.plot(HS, comm, "-", marker="o", ms=3, color=color, label=label)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xticks(HS, [str(h) for h in HS])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("inner steps per outer round H")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_yscale("log")
    ticks = [0.3, 0.5, 1, 2, 5]
    ax1.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax1.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax1.set_ylabel("wall clock per outer round ÷ H (s per inner step)")
    ax2.set_ylabel("communication fraction of wall time")
    ax2.set_ylim(0, 1)
    ax1.legend(fontsize=7)
    ax1.set_title("16 GPUs, 2 data centres, 10 Gbit/s between", fontsize=9)
    ax2.set_title("share of GPU time not computing", fontsize=9)
    fig.tight_layout()
    path = save_figure(fig, Path(args.outdir) / "diloco-two-dc.png")
    print(f"wrote {path}")

    # the stable region of async_diloco (H = 100, the DiLoCo defaults) in (inner lr, outer lr), from
    # the trace criterion of its outer recursion (asyncsim.stability.diloco), with a = 2 / 0.1
    from asyncsim.stability import analyze
    from asyncsim.stability.diloco import plot_region

    sc = {**base, "policy": {**base["policy"], "kind": "async_diloco", "inner_steps": 100}}
    rep = analyze(simulate(sc, time=args.time), criteria=("trace",), base_lr=0.1)
    print(f"async_diloco: alpha* {rep.alpha_star['trace']:.3g}, outer lr bound at alpha*/2 "
          f"{rep.diloco['outer_lr_max']:.3g}")
    path = plot_region(rep.diloco["stable_region"], Path(args.outdir) / "diloco-async-region.png",
                       title="async_diloco, H = 100, μ = 0.9 (Nesterov)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
