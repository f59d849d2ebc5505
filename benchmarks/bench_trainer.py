"""Trainer throughput: sequential reference vs batched in-flight gradients, and batched
independent runs (several learning rates in one pass) vs separate runs.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_trainer.py [--quick] [--device cpu|cuda]

Prints updates/s (median of --repeats runs after one warm-up) and ratios measured in the same
run. Models: MLP 64-128-10 on digits and MLP 784-256-256-10 on random 784-feature data;
batch 32 per worker; N = 8 and 32; round-robin and random (asynchronous, exponential compute)
traces. torch runs single-threaded (torch.set_num_threads(1)).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from asyncsim.train import make_plan, make_problem, replay, replay_many  # noqa: E402
from asyncsim.train.batched import mean_wave_size  # noqa: E402
from asyncsim.train.replay import choose_engine  # noqa: E402


def traces(n: int, updates: int):
    from _traces import async_exponential, round_robin

    return {"round_robin": round_robin(n, updates), "random": async_exponential(n, updates, seed=1)}


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer updates (a smoke run)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=4, help="learning rates batched in one pass")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dev = args.device
    rng = np.random.default_rng(0)
    big = {"X": rng.standard_normal((4096, 784)).astype(np.float32), "y": rng.integers(0, 10, 4096)}
    models = [("64-128-10", "digits", "mlp:128", 1000 if not args.quick else 200),
              ("784-256-256-10", big, "mlp:256,256", 200 if not args.quick else 40)]
    print(f"# bench_trainer: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"device {dev}, threads {torch.get_num_threads()}, median of {args.repeats} after a warm-up")
    print("# shared 2-core machine (other jobs running): absolute numbers are noisy, ratios less so")
    print(f"{'model':>15} {'N':>3} {'trace':>12} {'wave':>5} {'seq upd/s':>10} {'batched upd/s':>13} "
          f"{'ratio':>6} {'auto':>10}")
    for label, ds, model, U in models:
        prob = make_problem(ds, model, device=dev, batch_size=32)
        for n in (8, 32):
            for tname, tr in traces(n, U).items():
                plan = make_plan(tr)
                kw = dict(dataset=prob, lr=0.01, log_every=U)
                ts = timed(lambda: replay(tr, engine="sequential", **kw), args.repeats)
                tb = timed(lambda: replay(tr, engine="batched", **kw), args.repeats)
                auto = choose_engine(plan, prob, 1)
                print(f"{label:>15} {n:>3} {tname:>12} {mean_wave_size(plan):5.1f} {U / ts:10.0f} "
                      f"{U / tb:13.0f} {ts / tb:6.2f} {auto:>10}", flush=True)
    print()
    L = args.runs
    print(f"# {L} learning rates over one trace: one batched pass (replay_many, engine=batched) vs {L} "
          f"separate runs (sequential engine; auto engine)")
    print(f"{'model':>15} {'N':>3} {'trace':>12} {'seq runs upd/s':>14} {'auto runs upd/s':>15} "
          f"{'one pass upd/s':>14} {'vs seq':>6} {'vs auto':>7} {'replay_many auto':>16}")
    lrs = list(np.geomspace(0.005, 0.05, L))
    for label, ds, model, U in models:
        prob = make_problem(ds, model, device=dev, batch_size=32)
        for tname, tr in traces(8, U).items():
            kw = dict(dataset=prob, log_every=U)
            tseq = timed(lambda: [replay(tr, lr=lr, engine="sequential", **kw) for lr in lrs], args.repeats)
            tsep = timed(lambda: [replay(tr, lr=lr, **kw) for lr in lrs], args.repeats)
            tone = timed(lambda: replay_many(tr, lrs, engine="batched", **kw), args.repeats)
            auto = choose_engine(make_plan(tr), prob, L)
            print(f"{label:>15} {8:>3} {tname:>12} {L * U / tseq:14.0f} {L * U / tsep:15.0f} "
                  f"{L * U / tone:14.0f} {tseq / tone:6.2f} {tsep / tone:7.2f} {auto:>16}", flush=True)


if __name__ == "__main__":
    main()
