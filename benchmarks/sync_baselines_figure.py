"""The figures of docs/synchronous-baselines.md.

    python benchmarks/sync_baselines_figure.py [--outdir docs/img]

1. Iteration time against bucket size (scenarios/allreduce-8x8-h100-7b.yaml,
   hierarchical and ring): tiny buckets pay the collectives' latency once
   per bucket, huge ones lose the overlap with the backward pass.
2. Gradients per second against cluster size for A-SGD and S-SGD through a
   parameter server and S-SGD through ring all-reduce (a ResNet-50-like
   job: 100 MB of fp32 gradients, 25 GbE NICs, a 100 GbE server link).

Prints the tables it plots.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outdir", default=str(ROOT / "docs" / "img"))
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from asyncsim.engine import simulate
    from asyncsim.plots import save_figure
    from asyncsim.scenario import load_scenario

    out = Path(args.outdir)
    # ---------------------------------------------------------------- 1
    base = load_scenario(ROOT / "scenarios" / "allreduce-8x8-h100-7b.yaml").to_dict()
    sizes = [0.1, 0.3, 1, 3, 10, 25, 100, 300, 1000, 3000, 14000]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    print("iteration time (s) against bucket size (MB), 64 GPUs, 7B model")
    print("bucket_mb " + " ".join(f"{s:>8}" for s in sizes))
    for alg, color in (("hierarchical", "tab:blue"), ("ring", "tab:orange")):
        for overlap, style in ((True, "-"), (False, "--")):
            ys = []
            for mb in sizes:
                sc = {**base, "policy": {**base["policy"], "algorithm": alg, "bucket_mb": mb, "overlap": overlap}}
                tr = simulate(sc, updates=20)
                ys.append(tr.sim_time / tr.n_updates)
            label = f"{alg}, {'overlap' if overlap else 'no overlap'}"
            print(f"{label:26} " + " ".join(f"{y:8.3f}" for y in ys))
            ax.plot(sizes, ys, style, marker="o", ms=3, color=color, label=label)
    ax.axhline(1.7, color="grey", lw=0.8, ls=":")
    ax.text(sizes[0], 1.5, "mean compute per step (1.7 s)", fontsize=7, color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [1.5, 2, 3, 5, 10, 20, 50, 100]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks([0.1, 1, 10, 100, 1000, 10000], ["0.1", "1", "10", "100", "1000", "10⁴"])
    ax.set_xlabel("gradient bucket size (MB)")
    ax.set_ylabel("seconds per iteration")
    ax.set_title("8 nodes x 8 GPUs, 7B parameters (bf16 gradients)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, out / "sync-bucket-size.png")

    # ---------------------------------------------------------------- 2
    job = {"name": "resnet-like", "seed": 3,
           "workers": [{"count": 8, "compute": {"dist": "lognormal", "mean": 0.2, "cv": 0.08}}],
           "network": {"topology": "star", "bandwidth_gbps": 25, "server_bandwidth_gbps": 100,
                       "latency": {"dist": "constant", "value": 5e-6}},
           "model": {"parameters": 25_000_000, "bytes_per_parameter": 4},
           "server": {"apply": {"dist": "constant", "value": 0.002}}}
    ns = [4, 8, 16, 32, 64, 128, 256]
    pols = [("async", {"kind": "async"}, "A-SGD via parameter server"),
            ("sync", {"kind": "sync"}, "S-SGD via parameter server"),
            ("allreduce", {"kind": "allreduce", "algorithm": "ring", "bucket_mb": 25}, "S-SGD via ring all-reduce")]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    print("\ngradients per second against workers (100 MB model, 25 GbE NICs, 100 GbE server link)")
    print("workers   " + " ".join(f"{n:>8}" for n in ns))
    for kind, pol, label in pols:
        ys = []
        for n in ns:
            sc = {**job, "workers": [{**job["workers"][0], "count": n}], "policy": pol}
            tr = simulate(sc, updates=3000 if kind == "async" else 150)
            ys.append(len(tr.step[tr.step >= 0]) / tr.sim_time)
        print(f"{kind:9} " + " ".join(f"{y:8.1f}" for y in ys))
        ax.plot(ns, ys, marker="o", label=label)
    ax.plot(ns, [n / 0.2 for n in ns], ":", color="grey", label="compute only (N / 0.2 s)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    yt = [10, 20, 50, 100, 200, 500, 1000]
    ax.set_yticks(yt, [str(t) for t in yt])
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("workers (GPUs)")
    ax.set_ylabel("gradients per second")
    ax.set_title("ResNet-50-like job: 100 MB fp32 gradients")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, out / "sync-baselines-scaling.png")
    print(f"wrote {out / 'sync-bucket-size.png'} and {out / 'sync-baselines-scaling.png'}")


if __name__ == "__main__":
    main()
