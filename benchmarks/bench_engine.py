"""Engine throughput: gradient rows per second of every engine, medians of several runs.

    python benchmarks/bench_engine.py [--repeats 3] [--updates 200000] [--quick] [--keep-freed-memory]

Part 1 (issue 2): the SimPy engine on async N = 8, 64, 512 without network
against a minimal SimPy loop doing only the two timeouts per update (compute
and apply) with pre-drawn times; target engine >= 0.7x the minimal loop.

Part 2 (issue 6): every engine that supports the scenario, ratios against the
SimPy engine measured in the same run, on async N = 8, 64, 512 without network
and async N = 64 on a contended star; and 10^6 updates at N = 512 on the
vectorised engine (time and peak memory, tracemalloc).

All timings are wall-clock on whatever machine runs this (shared machines are
noisy: compare ratios from the same run). The engines of a case take turns,
run after run, after a warm-up round, so that drifts in the machine's speed
reach them alike; each run starts with the previous run's garbage collected.

``--keep-freed-memory`` first calls :func:`asyncsim.keep_freed_memory`, as the
``asyncsim`` command does for itself: glibc then reuses freed pages instead of
returning them to the kernel. Without it, a fast engine's run spends much of
its time in page faults on the arrays it allocates (the column "faults/run").
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc

import numpy as np

import asyncsim
from asyncsim.engine import supported_engines
from asyncsim.scenario import load_scenario


def scenario(n: int, updates: int, network: bool = False, apply: float | None = 1e-6) -> dict:
    sc = {
        "name": f"bench-async-{n}{'-star' if network else ''}",
        "seed": 1,
        "workers": [{"count": n, "compute": {"dist": "exponential", "mean": 1.0}}],
        # a small nonzero apply time, so the engine does the same two timeouts per
        # update as the minimal loop
        "server": {"apply": {"dist": "constant", "value": 1e-6}},
        "policy": {"kind": "async"},
        "stop": {"updates": updates},
    }
    if apply is None:
        del sc["server"]  # zero apply time (the default): no server queueing
    if network:
        # contended: every transfer crosses the server's 10 Gb/s link (0.8 ms per
        # 1 MB model each way); 64 workers computing 50 ms gradients offer about
        # 1280 updates/s against a capacity of 1250/s, so transfers queue
        sc["workers"][0]["compute"] = {"dist": "exponential", "mean": 0.05}
        # (the circuit model, on which issue 6's target was set; the fair model's
        # engines are measured by benchmarks/bench_network.py)
        sc["network"] = {"topology": "star", "bandwidth_gbps": 10, "latency": {"dist": "constant", "value": 5e-5},
                         "sharing": "circuit"}
        sc["model"] = {"parameters": 1_000_000, "bytes_per_parameter": 4}
    return sc


def minimal_simpy(n: int, updates: int) -> float:
    """Rows/s of a bare SimPy loop: per update one compute timeout and one apply timeout."""
    import simpy

    rng = np.random.default_rng(0)
    draws = rng.exponential(1.0, size=(n, int(updates / n * 1.3) + 200)).tolist()
    env = simpy.Environment()
    count = [0]
    stop = env.event()

    def worker(w):
        timeout = env.timeout
        d = iter(draws[w])
        while True:
            yield timeout(next(d))
            yield timeout(1e-6)
            count[0] += 1
            if count[0] == updates:
                stop.succeed()

    for w in range(n):
        env.process(worker(w))
    t = time.perf_counter()
    env.run(until=stop)
    return updates / (time.perf_counter() - t)


def engine_rate(sc: dict, engine: str) -> float:
    t = time.perf_counter()
    tr = asyncsim.simulate(sc, engine=engine)
    return len(tr) / (time.perf_counter() - t)


def _faults() -> int:
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def interleaved(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median rate and minor page faults per run of each function, the functions
    taking turns (a warm-up round, then ``repeats`` rounds) so that drifts in
    the machine's speed reach all of them alike. Each run starts after a
    ``gc.collect()`` (untimed): otherwise the cyclic garbage a SimPy run leaves
    is collected during the next run and billed to it (measured: 17.6 ms
    instead of 13.0 for the vectorised engine at N = 512). The collector stays
    on during the run, so an engine pays for collecting its own garbage."""
    for fn in fns.values():
        fn()
    rates: dict[str, list[float]] = {k: [] for k in fns}
    faults = dict.fromkeys(fns, 0)
    for _ in range(repeats):
        for k, fn in fns.items():
            gc.collect()
            f0 = _faults()
            rates[k].append(fn())
            faults[k] += _faults() - f0
    return {k: (statistics.median(rates[k]), faults[k] / repeats) for k in fns}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--updates", type=int, default=200_000)
    ap.add_argument("--quick", action="store_true", help="fewer updates (smoke run)")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="tune glibc malloc as the asyncsim command does (asyncsim.keep_freed_memory)")
    args = ap.parse_args(argv)
    if args.keep_freed_memory and not asyncsim.keep_freed_memory(children=False):
        print("# (keep_freed_memory: not glibc, no effect)")
    u = 20_000 if args.quick else args.updates
    r = args.repeats
    print(f"# asyncsim {asyncsim.__version__}, python {sys.version.split()[0]}, numpy {np.__version__}; "
          f"{u} updates, median of {r} runs (rows/s); allocator: "
          f"{'freed memory kept' if args.keep_freed_memory else 'glibc defaults'}")

    print("\n## SimPy engine vs minimal SimPy loop (async, no network)")
    print(f"{'N':>5} {'minimal':>12} {'simpy':>12} {'ratio':>7}")
    for n in (8, 64, 512):
        sc = scenario(n, u)
        got = interleaved({"minimal": lambda: minimal_simpy(n, u), "simpy": lambda: engine_rate(sc, "simpy")}, r)
        base, eng = got["minimal"][0], got["simpy"][0]
        print(f"{n:>5} {base:>12,.0f} {eng:>12,.0f} {eng / base:>7.2f}")

    print("\n## every engine (ratios vs simpy in the same run; [minor page faults per run])")
    cases = [(f"async N={n}", scenario(n, u, apply=None)) for n in (8, 64, 512)]
    cases.append(("async N=64 apply 1e-6 s", scenario(64, u)))
    cases.append(("async N=64 contended star", scenario(64, u // 4, network=True, apply=None)))
    for label, sc in cases:
        engines = supported_engines(load_scenario(sc))
        got = interleaved({e: (lambda e=e: engine_rate(sc, e)) for e in reversed(engines)}, r)
        base = got["simpy"][0]
        cells = "  ".join(f"{e} {got[e][0]:>11,.0f} ({got[e][0] / base:5.1f}x) [{got[e][1]:>5.0f}]" for e in engines)
        print(f"{label:28s} {cells}")

    sc = scenario(512, 1_000_000, apply=None)
    if "vector" in supported_engines(load_scenario(sc)):
        print("\n## 10^6 updates at N = 512, vectorised engine")
        times, peaks = [], []
        asyncsim.simulate(scenario(512, 10_000, apply=None), engine="vector")
        for _ in range(r):
            gc.collect()
            tracemalloc.start()
            t = time.perf_counter()
            asyncsim.simulate(sc, engine="vector")
            times.append(time.perf_counter() - t)
            peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
            tracemalloc.stop()
        # tracemalloc slows allocation-heavy code a little; time again without it
        plain = []
        for _ in range(r):
            gc.collect()
            t = time.perf_counter()
            asyncsim.simulate(sc, engine="vector")
            plain.append(time.perf_counter() - t)
        print(f"time {statistics.median(plain):.3f} s (median of {r}; {statistics.median(times):.3f} s under "
              f"tracemalloc), peak traced memory {statistics.median(peaks):.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
