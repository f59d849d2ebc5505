"""The vectorised engine against the bound (issue 21): ``asyncsim.simulate`` / bound_async.

    python benchmarks/bench_bound.py [--repeats 3] [--sizes 1e5,1e6,1e7] [--workers 8,64,512,4096,32768]
                                     [--modes api,command]
    python benchmarks/bench_bound.py --memory [--workers 8,512,32768] [--sizes 1e5] [--engines vector,heap,simpy]
    python benchmarks/bench_bound.py --merge --sizes 1e5,1e6,1e7,1e8 [--repeats 3]
    python benchmarks/bench_bound.py --calendar [--workers 8,64,256,512,1024,2048,32768] [--repeats 5]

For each N and number of updates: the median wall time of ``asyncsim.simulate(sc,
engine="vector")`` on async with exponential compute (the call a user or a
notebook makes; the scenario is loaded once beforehand) and of
:func:`bound_async.bound_async` (the same computation in plain numpy, nothing
else: benchmarks/bound_async.py), taking turns run after run after a warm-up
pair, each run after a ``gc.collect()``; the ratio vector / bound is of those
medians; "tight" is the same bound with the engine's smaller draw matrix (its
draws per worker now, without the extensions that keep the engine exact:
``bound_async.draws_per_worker(tight=True)``), and its ratio; "faults" are
the minor page faults per vector run.

Modes, each in a fresh process: ``api`` with glibc's allocator defaults (a
Python program calling asyncsim); ``command`` as the ``asyncsim`` command
runs: after ``asyncsim.keep_freed_memory()`` when the command turns it on
(``ASYNCSIM_KEEP_FREED_MEMORY=1``; see asyncsim/_alloc.py), else exactly the
api's conditions plus the command's own work around the run (the trace
summary it prints, timed separately as "cmd s").

``--merge``: the merge alone (``vector_engine._stable_order``: the arrivals sorted as
values with their index packed into the last bits, near and exact ties repaired)
against numpy's stable argsort of the same times, 10**5 to 10**8 of them (the
arrival times of 512 exponential workers, each worker's in order), ns per time
and the growth from one size to the next.

``--memory``: the peak memory of one run of each engine (tracemalloc, each
run in a fresh process, async with exponential compute, zero apply time and a
1 us apply time: the heap engine's plain loop and its server loop; SimPy with
its compute calendar from 512 workers, and "simpy-proc" with a process per
worker whatever N) against the trace's own size (the bytes of its seven
columns), and the bytes per worker beyond the trace.

``--calendar``: the SimPy engine's rows per second with a process per worker
and with the compute calendar (``run_simpy(calendar=False / True)``), taking
turns in one process, medians, on async with zero and 1 us apply times, 10**5
updates: where the calendar starts to pay (``simpy_engine.CALENDAR_WORKERS``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bound_async import bound_async  # noqa: E402


def scenario(n: int, updates: int) -> dict:
    return {"name": f"bound-{n}", "seed": 1, "workers": [{"count": n, "compute": {"dist": "exponential", "mean": 1.0}}],
            "policy": {"kind": "async"}, "stop": {"updates": updates}}


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(n: int, u: int, repeats: int, command: bool) -> dict:
    import asyncsim

    sc = asyncsim.load_scenario(scenario(n, u))
    tb, tt, tv, tc, faults = [], [], [], [], 0
    for r in range(repeats + 1):  # the first pair warms up
        gc.collect()
        t = time.perf_counter()
        cols = bound_async(n, u)
        b = time.perf_counter() - t
        del cols
        gc.collect()
        t = time.perf_counter()
        cols = bound_async(n, u, tight=True)
        bt = time.perf_counter() - t
        del cols
        gc.collect()
        f0 = _faults()
        t = time.perf_counter()
        tr = asyncsim.simulate(sc, engine="vector")
        v = time.perf_counter() - t
        f = _faults() - f0
        if command:  # what `asyncsim simulate --json --no-save` does after the run
            t = time.perf_counter()
            json.dumps(tr.summary(), default=float)
            tc.append(time.perf_counter() - t)
        del tr
        if r:
            tb.append(b)
            tt.append(bt)
            tv.append(v)
            faults += f
    out = {"n": n, "updates": u, "bound": statistics.median(tb), "vector": statistics.median(tv),
           "tight": statistics.median(tt), "faults": faults / repeats}
    out["ratio"] = out["vector"] / out["bound"]
    out["ratio_tight"] = out["vector"] / out["tight"]
    if tc:
        out["cmd"] = statistics.median(tc)
    return out


_MEMORY_PROBE = """
import sys, tracemalloc, asyncsim
n, u, eng, apply = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
sc = {"name": "m", "seed": 1, "workers": [{"count": n, "compute": {"dist": "exponential", "mean": 1.0}}],
      "policy": {"kind": "async"}, "stop": {"updates": u}, "server": {"apply": {"dist": "constant", "value": apply}}}
sc = asyncsim.load_scenario(sc)
if eng == "simpy-proc":  # a process per worker, whatever N
    import asyncsim.engine.simpy_engine as se
    se.CALENDAR_WORKERS, eng = 1 << 62, "simpy"
asyncsim.simulate(sc.model_copy(update={"stop": sc.stop.model_copy(update={"updates": 100})}), engine=eng)
tracemalloc.start()
tr = asyncsim.simulate(sc, engine=eng)
peak = tracemalloc.get_traced_memory()[1]
print(peak, sum(c.nbytes for c in tr.columns.values()))
"""


def memory(args) -> int:
    print("\n## peak traced memory of one run against the trace's size")
    print(f"{'engine':>10} {'apply':>6} {'N':>6} {'updates':>9} {'peak MB':>9} {'trace MB':>9} {'peak / trace':>13} "
          f"{'B/worker':>9}")
    engines = str(args.engines).split(",")
    for u in args.sizes:
        for n in args.workers:
            for eng, apply in (("vector", 0.0), ("heap", 0.0), ("heap", 1e-6), ("simpy", 0.0), ("simpy", 1e-6),
                               ("simpy-proc", 0.0)):
                if eng not in engines:
                    continue
                out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(n), str(u), eng, str(apply)],
                                     capture_output=True, text=True, check=True)
                peak, size = map(int, out.stdout.split())
                print(f"{eng:>10} {apply:>6g} {n:>6} {u:>9.0e} {peak / 2**20:>9.1f} {size / 2**20:>9.1f} "
                      f"{peak / size:>13.2f} {(peak - size) / n:>9.0f}", flush=True)
    return 0


def calendar(args) -> int:
    from asyncsim.engine.simpy_engine import run_simpy

    import asyncsim

    print("\n## SimPy: a process per worker against the compute calendar, rows/s (median of %d)" % args.repeats)
    print(f"{'N':>6} {'apply':>6} {'processes':>10} {'calendar':>10} {'calendar / processes':>21}")
    u = 100_000
    for n in args.workers:
        for apply in (0.0, 1e-6):
            sc = asyncsim.load_scenario({"name": "c", "seed": 1, "policy": {"kind": "async"}, "stop": {"updates": u},
                                         "workers": [{"count": n, "compute": {"dist": "exponential", "mean": 1.0}}],
                                         "server": {"apply": {"dist": "constant", "value": apply}}})
            times: dict[bool, list[float]] = {False: [], True: []}
            for r in range(args.repeats + 1):
                for cal in (False, True):
                    gc.collect()
                    t = time.perf_counter()
                    run_simpy(sc, updates=u, until=None, calendar=cal)
                    if r:
                        times[cal].append(time.perf_counter() - t)
            p, c = (u / statistics.median(times[k]) for k in (False, True))
            print(f"{n:>6} {apply:>6g} {p:>10.0f} {c:>10.0f} {c / p:>21.2f}", flush=True)
    return 0


def merge(args) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from asyncsim.engine.vector_engine import _stable_order

    print("\n## the merge: ns per arrival time (median of %d)" % args.repeats)
    print(f"{'times':>8} {'engine sort':>12} {'argsort stable':>15} {'engine growth/time':>19}")
    prev = None
    for u in args.sizes:
        rows = 512
        x = np.cumsum(np.random.default_rng(1).exponential(size=(rows, -(-u // rows))), axis=1).ravel()[:u].copy()
        te, ta = [], []
        for r in range(args.repeats + 1):
            gc.collect()
            t = time.perf_counter()
            _stable_order(x)
            e = time.perf_counter() - t
            gc.collect()
            t = time.perf_counter()
            np.argsort(x, kind="stable")
            a = time.perf_counter() - t
            if r:
                te.append(e)
                ta.append(a)
        e, a = statistics.median(te) / u * 1e9, statistics.median(ta) / u * 1e9
        grow = "" if prev is None else f"{e / prev:.2f}x"
        print(f"{u:>8.0e} {e:>12.1f} {a:>15.1f} {grow:>19}", flush=True)
        prev = e
        del x
    return 0


def child(args) -> int:
    command = args.child == "command"
    if command and os.environ.get("ASYNCSIM_KEEP_FREED_MEMORY", "0").strip() == "1":
        import asyncsim

        asyncsim.keep_freed_memory(children=False)
    for u in args.sizes:
        for n in args.workers:
            print(json.dumps(measure(n, u, args.repeats, command)), flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="1e5,1e6,1e7")
    ap.add_argument("--workers", default="8,64,512,4096,32768")
    ap.add_argument("--modes", default="api,command")
    ap.add_argument("--memory", action="store_true", help="peak memory of each engine against the trace's size")
    ap.add_argument("--merge", action="store_true", help="the merge's cost per time, 1e5 to 1e8 times")
    ap.add_argument("--calendar", action="store_true", help="SimPy: processes against the compute calendar")
    ap.add_argument("--engines", default="vector,heap,simpy", help="--memory: the engines to measure")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.sizes = [int(float(x)) for x in str(args.sizes).split(",")]
    args.workers = [int(x) for x in str(args.workers).split(",")]
    if args.child:
        return child(args)
    if args.memory:
        return memory(args)
    if args.merge:
        return merge(args)
    if args.calendar:
        return calendar(args)
    import asyncsim

    print(f"# asyncsim {asyncsim.__version__}, python {sys.version.split()[0]}, numpy {np.__version__}; "
          f"median of {args.repeats} runs (s), vector / bound in the same run")
    for mode in args.modes.split(","):
        env = dict(os.environ)
        if mode == "api":
            env.pop("ASYNCSIM_KEEP_FREED_MEMORY", None)
        print(f"\n## {mode}" + (" (ASYNCSIM_KEEP_FREED_MEMORY=1: freed memory kept)"
                                if mode == "command" and env.get("ASYNCSIM_KEEP_FREED_MEMORY") == "1" else ""))
        print(f"{'N':>6} {'updates':>9} {'bound s':>9} {'vector s':>9} {'ratio':>6} {'tight s':>9} {'ratio':>6} {'faults':>8}"
              + (f" {'cmd s':>7}" if mode == "command" else ""))
        cmd = [sys.executable, __file__, "--child", mode, "--repeats", str(args.repeats),
               "--sizes", ",".join(map(str, args.sizes)), "--workers", ",".join(map(str, args.workers))]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as p:
            for line in p.stdout:
                r = json.loads(line)
                print(f"{r['n']:>6} {r['updates']:>9.0e} {r['bound']:>9.4f} {r['vector']:>9.4f} {r['ratio']:>6.2f} "
                      f"{r['tight']:>9.4f} {r['ratio_tight']:>6.2f} "
                      f"{r['faults']:>8.0f}" + (f" {r['cmd']:>7.4f}" if "cmd" in r else ""), flush=True)
        if p.returncode:
            return p.returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
