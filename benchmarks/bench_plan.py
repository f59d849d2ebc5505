"""Wall time of a 16-point plan: serially vs the local process pool vs Ray, in one run.

    python benchmarks/bench_plan.py [--repeats 3] [--updates 3000] [--workers 2] [--train [DATASET/MODEL]]

Every run starts from an empty output folder (nothing reused). The plan is 8 cluster
sizes × {async, sync} of an exponential-compute scenario (or homogeneous-8 with its
network when --scenario is given); --train adds a replay per point (quadratic, or
e.g. --train teacher/mlp:32 --target 0.05 for heavier points). Ray is
timed twice: "cold" (ray.init and shutdown inside the timed call, what one
`asyncsim plan --backend ray` pays) and "warm" (Ray already running). Prints the
median of the repeats (after one warm-up run of each) and ratios to the serial time.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import asyncsim  # noqa: E402
from asyncsim.plan import LocalBackend, PlanSpec, RayBackend, SerialBackend, run_plan  # noqa: E402
from asyncsim.scenario import load_scenario  # noqa: E402

EXP = {"name": "bench-exp", "seed": 1, "workers": [{"count": 8, "compute": {"dist": "exponential", "mean": 1.0}}],
       "policy": {"kind": "async"}}


def make_plan(args) -> PlanSpec:
    sc = load_scenario(args.scenario) if args.scenario else load_scenario(EXP)
    kw = {}
    if args.train:
        kw = {"train": args.train, "target": args.target}
        if args.train == "quadratic":
            kw["sharpness"] = 1.0
    return PlanSpec(sc, vary=[("workers.0.count", [2, 3, 4, 6, 8, 12, 16, 24])], policies=["async"],
                    updates=args.updates, seed=1, base_lr=None if args.train else 0.1, **kw)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--updates", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=None, help="pool size (default: one per CPU)")
    ap.add_argument("--scenario", default=None)
    ap.add_argument("--train", nargs="?", const="quadratic", default=None,
                    help="replay each point on DATASET[/MODEL] (default quadratic)")
    ap.add_argument("--target", type=float, default=1e-6)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    plan = make_plan(args)
    from asyncsim.plan.run import resolve_sharpness

    n_tasks = len({p.task.key for p in asyncsim.plan.expand(plan, resolve_sharpness(plan))})
    pool = LocalBackend(args.workers)
    backends = {"serial": lambda: SerialBackend(), "local": lambda: pool}
    ray = None
    if not args.no_ray:
        try:
            import ray  # noqa: F401

            backends["ray-cold"] = lambda: RayBackend(None, num_cpus=pool.workers)
        except ImportError:
            print("ray not installed: skipping the Ray timings")

    def one(name):
        d = Path(tempfile.mkdtemp(prefix="bench-plan-"))
        try:
            return timed(lambda: run_plan(plan, d, backends[name](), report=False))
        finally:
            shutil.rmtree(d, ignore_errors=True)

    print(f"# bench_plan: {n_tasks} tasks ({len(plan.policies)} policies x 8 sizes), {args.updates} updates each"
          f"{f', {args.train} replay' if args.train else ''}; pool of {pool.workers}; "
          f"{os.cpu_count()} CPUs; python {platform.python_version()}, asyncsim {asyncsim.__version__}")
    print("# command: python " + " ".join(sys.argv))
    times: dict[str, list[float]] = {}
    for name in backends:
        one(name)  # warm-up (imports, caches)
        times[name] = [one(name) for _ in range(args.repeats)]
    if ray is not None:
        ray.init(num_cpus=pool.workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}})
        backends["ray-warm"] = lambda: RayBackend(None, num_cpus=pool.workers)
        one("ray-warm")
        times["ray-warm"] = [one("ray-warm") for _ in range(args.repeats)]
        ray.shutdown()
    base = statistics.median(times["serial"])
    print(f"{'backend':10s} {'median s':>9s} {'runs (s)':30s} {'speed-up vs serial':>19s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:10s} {med:9.2f} {', '.join(f'{t:.2f}' for t in ts):30s} {base / med:18.2f}x")


if __name__ == "__main__":
    main()
