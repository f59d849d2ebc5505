"""The DiLoCo family's simulation cost: seconds per million inner steps, heap and SimPy engines.

    python benchmarks/bench_diloco_sim.py [--repeats 5] [--rounds 40]

Scenario: scenarios/diloco-two-datacentres.yaml (16 GPUs, two data centres,
a 1.3B-parameter model) with H = 100 inner steps, ``--rounds`` outer rounds
(streaming_diloco, P = 4: 4 updates a round; async_diloco: 16). Every inner
step is one compute draw and one row of the inner table; diloco and
async_diloco take a handful of events per round or update, streaming_diloco
one per inner step (it looks for merges at every boundary). Prints the median
of ``--repeats`` runs (after a warm-up) and the heap engine's speed-up over
SimPy measured in the same loop.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path

from asyncsim.engine import simulate
from asyncsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
KINDS = (("diloco", {}, 1), ("streaming_diloco", {"policy.fragments": 4}, 4), ("async_diloco", {}, 16))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    base = load_scenario(ROOT / "scenarios" / "diloco-two-datacentres.yaml")
    print(f"{'policy':18} {'inner steps':>11} {'heap s/1M':>10} {'simpy s/1M':>11} {'heap ×':>7}")
    for kind, extra, per_round in KINDS:
        sc = base.with_overrides({"policy.kind": kind, "policy.inner_steps": 100, **extra})
        updates = args.rounds * per_round
        times: dict[str, list[float]] = {"heap": [], "simpy": []}
        inner = 0
        for r in range(args.repeats + 1):
            for engine in ("heap", "simpy"):
                gc.collect()
                t0 = time.perf_counter()
                tr = simulate(sc, updates=updates, engine=engine)
                dt = time.perf_counter() - t0
                inner = len(tr.inner["worker"])
                if r:  # (the first loop is the warm-up)
                    times[engine].append(dt)
        heap, simpy = (statistics.median(times[e]) for e in ("heap", "simpy"))
        ratio = statistics.median(s / h for h, s in zip(times["heap"], times["simpy"]))
        print(f"{kind:18} {inner:11,} {heap / inner * 1e6:10.2f} {simpy / inner * 1e6:11.2f} {ratio:7.2f}")


if __name__ == "__main__":
    main()
