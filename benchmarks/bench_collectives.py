"""All-reduce S-SGD: simulation cost per update as the cluster grows.

    python benchmarks/bench_collectives.py [--repeats 5] [--updates 200]

Scenario: N GPUs (8 per node), 400 Gb/s NICs on a star, NVLink inside the
nodes, a 1.3B-parameter model with bf16 gradients (2.6 GB) in 25 MB buckets
(104 of them), overlapped. For N = 64, 1024 and 8192 and the ring and
hierarchical algorithms it prints the wall time of the set-up (routes and the
collective's pattern durations, computed once per bucket size) and of each
simulated update (medians), and how that per-update time grows against
N = 64: O(N) for the N compute draws per round; O(N²) would be 16384× at
N = 8192.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from asyncsim.engine import simulate
from asyncsim.network import topology


def scenario(n: int, algorithm: str, updates: int) -> dict:
    return {"name": f"ar-{n}", "seed": 1,
            "workers": [{"count": n, "gpus_per_node": 8, "compute": {"dist": "lognormal", "mean": 0.5, "cv": 0.05}}],
            "network": {"topology": "star", "bandwidth_gbps": 400, "intra_node_gbps": 3600,
                        "latency": {"dist": "constant", "value": 2e-6}},
            "model": {"parameters": 1_300_000_000, "bytes_per_parameter": 2},
            "policy": {"kind": "allreduce", "algorithm": algorithm, "bucket_mb": 25},
            "stop": {"updates": updates}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--updates", type=int, default=200)
    args = ap.parse_args()
    print(f"{'algorithm':>12} {'N':>6} {'set-up (s)':>11} {'ms/update':>10} {'updates/s':>10} {'× N=64':>8}")
    for alg in ("ring", "hierarchical"):
        base = None
        for n in (64, 1024, 8192):
            setups, per = [], []
            for r in range(args.repeats + 1):
                topology._LAST.clear()
                gc.collect()
                t0 = time.perf_counter()
                simulate(scenario(n, alg, 1))
                t1 = time.perf_counter()
                gc.collect()
                topology._LAST.clear()
                t2 = time.perf_counter()
                simulate(scenario(n, alg, args.updates + 1))
                t3 = time.perf_counter()
                if r:  # the first round is a warm-up
                    setups.append(t1 - t0)
                    per.append(((t3 - t2) - (t1 - t0)) / args.updates)
            s, p = statistics.median(setups), statistics.median(per)
            base = base or p
            print(f"{alg:>12} {n:>6} {s:>11.3f} {p * 1e3:>10.3f} {1 / p:>10.0f} {p / base:>8.1f}")


if __name__ == "__main__":
    main()
