"""The figure of docs/transfer-model.md: update rate against the server's link
bandwidth under the fair and the circuit transfer models.

    python benchmarks/network_figure.py [--out docs/img/network-fair-vs-circuit.png] [--updates 4000]

Scenario: scenarios/homogeneous-8.yaml (8 workers, 10 GbE NICs, a 100 MB
model), A-SGD and S-SGD, server link from 5 to 160 Gbit/s. Prints the table
it plots.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "network-fair-vs-circuit.png"))
    ap.add_argument("--updates", type=int, default=4000)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from asyncsim.engine import simulate
    from asyncsim.plots import save_figure
    from asyncsim.scenario import load_scenario

    base = load_scenario(ROOT / "scenarios" / "homogeneous-8.yaml").to_dict()
    bws = [5, 10, 20, 40, 80, 160]
    rows = []
    for kind in ("async", "sync"):
        for sharing in ("fair", "circuit"):
            rates = []
            for bw in bws:
                sc = {**base, "policy": {"kind": kind},
                      "network": {**base["network"], "server_bandwidth_gbps": bw, "sharing": sharing}}
                u = args.updates if kind == "async" else max(200, args.updates // 10)
                tr = simulate(sc, updates=u)
                rates.append(tr.n_updates / tr.sim_time * (8 if kind == "sync" else 1))
            rows.append((kind, sharing, rates))
            print(f"{kind:5} {sharing:7} " + " ".join(f"{r:7.2f}" for r in rates))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    style = {"fair": "-", "circuit": "--"}
    color = {"async": "tab:blue", "sync": "tab:orange"}
    for kind, sharing, rates in rows:
        label = f"{'A-SGD' if kind == 'async' else 'S-SGD (PS)'}, {sharing}"
        ax.plot(bws, rates, style[sharing], marker="o", color=color[kind], label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(bws, [str(b) for b in bws])
    ax.set_xlabel("server link bandwidth (Gbit/s)")
    ax.set_ylabel("gradients applied per second")
    ax.set_title("8 workers on 10 GbE NICs, 100 MB model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
