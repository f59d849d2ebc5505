"""Trainer throughput: sequential reference vs batched in-flight gradients, batched
independent runs (several learning rates in one pass) vs separate runs, the cost of the default
logging, and the sequential replay of a user's nn.Module vs a plain PyTorch loop.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_trainer.py [--quick] [--device cpu|cuda]
        [--only engines,runs,logging,module]

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
    ap.add_argument("--only", default="engines,runs,logging,module",
                    help="comma-separated sections: engines, runs, logging, module")
    args = ap.parse_args()
    only = set(args.only.split(","))
    torch.set_num_threads(1)
    dev = args.device
    rng = np.random.default_rng(0)
    big = {"X": rng.standard_normal((4096, 784)).astype(np.float32), "y": rng.integers(0, 10, 4096)}
    models = [("64-128-10", "digits", "mlp:128", 1000 if not args.quick else 200),
              ("784-256-256-10", big, "mlp:256,256", 200 if not args.quick else 40)]
    print(f"# bench_trainer: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"device {dev}, threads {torch.get_num_threads()}, median of {args.repeats} after a warm-up")
    print("# shared 2-core machine (other jobs running): absolute numbers are noisy, ratios less so")
    if "module" in only:
        module_vs_plain_loop(dev, args.repeats, 300 if args.quick else 2000)
    if "logging" in only:
        logging_cost(dev, args.repeats, 300 if args.quick else 2000)
    if "engines" in only:
        engines(models, dev, args.repeats)
    if "runs" in only:
        batched_runs(models, dev, args.repeats, args.runs)


def engines(models, dev, repeats):
    print(f"{'model':>15} {'N':>3} {'trace':>12} {'wave':>5} {'seq upd/s':>10} {'batched upd/s':>13} "
          f"{'ratio':>6} {'auto':>10}")
    for label, ds, model, U in models:
        prob = make_problem(ds, model, device=dev, batch_size=32)
        for n in (8, 32):
            for tname, tr in traces(n, U).items():
                plan = make_plan(tr)
                kw = dict(dataset=prob, lr=0.01, log_every=U)
                ts = timed(lambda: replay(tr, engine="sequential", **kw), repeats)
                tb = timed(lambda: replay(tr, engine="batched", **kw), repeats)
                auto = choose_engine(plan, prob, 1)
                print(f"{label:>15} {n:>3} {tname:>12} {mean_wave_size(plan):5.1f} {U / ts:10.0f} "
                      f"{U / tb:13.0f} {ts / tb:6.2f} {auto:>10}", flush=True)
    print()


def batched_runs(models, dev, repeats, L):
    print(f"# {L} learning rates over one trace: one batched pass (replay_many, engine=batched) vs {L} "
          f"separate runs (sequential engine; auto engine)")
    print(f"{'model':>15} {'N':>3} {'trace':>12} {'seq runs upd/s':>14} {'auto runs upd/s':>15} "
          f"{'one pass upd/s':>14} {'vs seq':>6} {'vs auto':>7} {'replay_many auto':>16}")
    lrs = list(np.geomspace(0.005, 0.05, L))
    for label, ds, model, U in models:
        prob = make_problem(ds, model, device=dev, batch_size=32)
        for tname, tr in traces(8, U).items():
            kw = dict(dataset=prob, log_every=U)
            tseq = timed(lambda: [replay(tr, lr=lr, engine="sequential", **kw) for lr in lrs], repeats)
            tsep = timed(lambda: [replay(tr, lr=lr, **kw) for lr in lrs], repeats)
            tone = timed(lambda: replay_many(tr, lrs, engine="batched", **kw), repeats)
            auto = choose_engine(make_plan(tr), prob, L)
            print(f"{label:>15} {8:>3} {tname:>12} {L * U / tseq:14.0f} {L * U / tsep:15.0f} "
                  f"{L * U / tone:14.0f} {tseq / tone:6.2f} {tsep / tone:7.2f} {auto:>16}", flush=True)



def _digits_module(dev):
    from asyncsim.train import load_dataset

    ds = load_dataset("digits")
    X = torch.as_tensor(ds.X_train, dtype=torch.float32, device=dev)
    y = torch.as_tensor(ds.y_train, device=dev)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).to(dev)
    return net, X, y


def module_vs_plain_loop(dev, repeats, U):
    """The sequential replay of a user's nn.Module (no logging) vs a plain PyTorch loop computing
    the same gradients (the same minibatches, one optimizer step per gradient, torch.optim.SGD)."""
    import copy

    import torch.nn.functional as F

    from _traces import async_exponential

    from asyncsim.train.data import minibatch_indices

    net0, X, y = _digits_module(dev)
    tr = async_exponential(8, U, seed=1)
    plan = make_plan(tr)
    idx = torch.as_tensor(minibatch_indices(0, plan.step, plan.worker, plan.occ, 32, len(X)), device=dev)

    def plain():
        net = copy.deepcopy(net0)
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        for t in range(U):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(X[idx[t]]), y[idx[t]]).backward()
            opt.step()
        if dev != "cpu":
            torch.cuda.synchronize()

    def ours():
        replay(tr, model=copy.deepcopy(net0), loss=F.cross_entropy, dataset=(X, y), batch_size=32, lr=0.01,
               log_every=U, device=dev, engine="sequential")
        if dev != "cpu":
            torch.cuda.synchronize()

    def builtin():
        replay(tr, dataset="digits", model="mlp:128", batch_size=32, lr=0.01, log_every=U, device=dev,
               engine="sequential")
        if dev != "cpu":
            torch.cuda.synchronize()

    trios = [(timed(plain, 1), timed(ours, 1), timed(builtin, 1)) for _ in range(repeats)]  # interleaved
    tp = statistics.median(p for p, _, _ in trios)
    to = statistics.median(o for _, o, _ in trios)
    tb = statistics.median(b for _, _, b in trios)
    ratios = sorted(o / p for p, o, _ in trios)
    bratios = sorted(b / p for p, _, b in trios)
    print(f"# 64-128-10 MLP on digits, batch 32, async N=8, {U} updates, no logging, sequential engine")
    print(f"plain torch loop {U / tp:8.0f} upd/s   replay(model=module) {U / to:8.0f} upd/s   "
          f"replay / plain = {to / tp:.2f} (per-repeat {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"replay(model='mlp:128') {U / tb:8.0f} upd/s   built-in / plain = {tb / tp:.2f} "
          f"(per-repeat {', '.join(f'{r:.2f}' for r in bratios)})")
    # the batched engine (torch.func vmap over functional_call) against the sequential one
    from _traces import round_robin

    for tname, t2 in (("round_robin", round_robin(8, U)), ("random", tr)):
        def run(engine, t2=t2):
            replay(t2, model=copy.deepcopy(net0), loss=F.cross_entropy, dataset=(X, y), batch_size=32, lr=0.01,
                   log_every=U, device=dev, engine=engine)
        pairs = [(timed(lambda: run("sequential"), 1), timed(lambda: run("batched"), 1)) for _ in range(repeats)]
        r = statistics.median(s_ / b_ for s_, b_ in pairs)
        print(f"module, {tname:>11} N=8 (wave {mean_wave_size(make_plan(t2)):.1f}): batched (vmap) is {r:.2f}x "
              f"the sequential engine's speed")
    print()


def logging_cost(dev, repeats, U):
    """The command line's default logging (log_every='auto') vs logging only at the start and end,
    and the old default (every max(1, T // 1000) updates)."""
    import copy

    import torch.nn.functional as F

    from _traces import async_exponential

    tr = async_exponential(8, U, seed=1)
    net0, X, y = _digits_module(dev)
    cases = {
        "digits/mlp:128": lambda le: replay(tr, dataset="digits", model="mlp:128", lr=0.01, log_every=le,
                                            device=dev, engine="sequential"),
        "user module": lambda le: replay(tr, model=copy.deepcopy(net0), loss=F.cross_entropy, dataset=(X, y),
                                         val_dataset=(X[:360], y[:360]), lr=0.01, log_every=le, device=dev,
                                         engine="sequential"),
    }
    print(f"# logging cost, async N=8, {U} updates, sequential engine (median of {repeats}, interleaved)")
    print(f"{'problem':>16} {'auto every':>10} {'logs':>5} {'auto / none':>11} {'old default / none':>18}")
    for name, run in cases.items():
        run(U)  # warm-up
        rows = []
        for _ in range(repeats):
            t = {}
            for key, le in (("none", U), ("auto", "auto"), ("old", max(1, U // 1000))):
                t0 = time.perf_counter()
                r = run(le)
                t[key] = time.perf_counter() - t0
                if key == "auto":
                    logs = len(r.log_step)
                    every = int(r.log_step[1] - r.log_step[0]) if logs > 1 else U
            rows.append(t)
        ra = statistics.median(t["auto"] / t["none"] for t in rows)
        ro = statistics.median(t["old"] / t["none"] for t in rows)
        print(f"{name:>16} {every:>10} {logs:>5} {ra:11.3f} {ro:18.2f}", flush=True)
    print()


if __name__ == "__main__":
    main()
