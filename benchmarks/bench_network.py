"""The flow-level network: its cost against the circuit model, set-up time, and the largest run.

    python benchmarks/bench_network.py [--repeats 5] [--updates 20000] [--big-updates 100000] [--quick]

Part 1: a contended star (every transfer crosses the server's link; 10 GbE
NICs, a 100 GbE server link, a 4 MB model, exponential compute with mean
0.5 s): simulated updates per wall-clock second at N = 64 and 4096, fair and
circuit, on the heap and SimPy engines; ratios fair / circuit in the same run.

Part 2: network set-up (``build_network``: topology, routes, shared-link
classification) at N = 4096 and 32768 for star and two_tier (16 racks), and
the ratio of the two (linear growth gives 8).

Part 3: the largest run: a contended star with 32768 workers and 10^5
updates under fair sharing, end to end through ``asyncsim.simulate``, with
the process's peak resident memory.

Medians of ``--repeats`` runs after a warm-up; cases take turns run after run.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import resource
import time

from asyncsim.engine import simulate
from asyncsim.network import build_network, topology
from asyncsim.scenario import load_scenario


def star(n: int, updates: int, sharing: str) -> dict:
    return {"name": f"star-{n}-{sharing}", "seed": 1,
            "workers": [{"count": n, "compute": {"dist": "exponential", "mean": 0.5}}],
            "network": {"topology": "star", "bandwidth_gbps": 10, "server_bandwidth_gbps": 100,
                        "latency": {"dist": "constant", "value": 1e-5}, "sharing": sharing},
            "model": {"parameters": 1_000_000}, "stop": {"updates": updates}}


def timed(fn) -> float:
    gc.collect()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--updates", type=int, default=20000)
    ap.add_argument("--big-updates", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat (a smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.updates, args.big_updates = 1, 2000, 5000

    print("## Part 1: contended star, simulated updates per wall-clock second")
    print(f"{'N':>6} {'engine':>6} {'fair':>10} {'circuit':>10} {'fair/circuit time':>18} {'fair: updates/sim s':>20}")
    for n in (64, 4096):
        for engine in ("heap", "simpy"):
            u = args.updates
            scs = {sh: load_scenario(star(n, u, sh)) for sh in ("fair", "circuit")}
            rates = {}
            for sh, sc in scs.items():  # warm-up (and the simulated rate)
                tr = simulate(sc, engine=engine)
                rates[sh] = tr.n_updates / tr.sim_time
            times = {sh: [] for sh in scs}
            for _ in range(args.repeats):
                for sh, sc in scs.items():
                    times[sh].append(timed(lambda: simulate(sc, engine=engine)))
            med = {sh: statistics.median(v) for sh, v in times.items()}
            print(f"{n:>6} {engine:>6} {u / med['fair']:>10.0f} {u / med['circuit']:>10.0f} "
                  f"{med['fair'] / med['circuit']:>18.2f} {rates['fair']:>20.1f}")

    print("\n## Part 2: network set-up time (build_network), seconds")
    print(f"{'topology':>9} {'N=4096':>9} {'N=32768':>9} {'ratio (8x workers)':>19}")
    for topo in ("star", "two_tier"):
        med = {}
        for n in (4096, 32768):
            spec = star(n, 10, "fair")
            if topo == "two_tier":
                spec["network"] = {**spec["network"], "topology": "two_tier", "racks": 16}
            sc = load_scenario(spec)
            ts = []
            for _ in range(args.repeats + 1):
                topology._LAST.clear()
                ts.append(timed(lambda: build_network(sc)))
            med[n] = statistics.median(ts[1:])
        print(f"{topo:>9} {med[4096]:>9.4f} {med[32768]:>9.4f} {med[32768] / med[4096]:>19.2f}")

    print(f"\n## Part 3: contended star, N = 32768, {args.big_updates} updates, fair, end to end")
    sc = load_scenario(star(32768, args.big_updates, "fair"))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    tr = simulate(sc)
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"{dt:.1f} s wall ({tr.n_updates / dt:.0f} updates/s), peak RSS {rss / 2**10:.0f} MiB "
          f"(before: {rss0 / 2**10:.0f} MiB), "
          f"{tr.n_updates / tr.sim_time:.1f} updates per simulated second, "
          f"mean staleness {tr.staleness.mean():.0f}")


if __name__ == "__main__":
    main()
