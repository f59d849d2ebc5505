"""DiLoCo-family replay throughput: inner gradients per second, per-worker (sequential) vs
workers stacked (batched), against the standard replay of all-reduce S-SGD doing the same number
of gradients, and the cost of the outer-recursion stability criterion.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_diloco_replay.py [--quick] [--repeats 3] [--device cpu|cuda]

Prints medians of --repeats runs after one warm-up and ratios measured in the same run.
Models: MLP 64-128-10 on digits and 784-256-256-10 on random 784-feature data; batch 32 per
inner step; AdamW inner steps, Nesterov outer (the diloco defaults); traces written directly
(tests/_diloco_traces.py): synchronous diloco, streaming (P = 4, overlap 2) and async_diloco
(random order). torch runs single-threaded.
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
sys.path.insert(0, str(ROOT))

from _diloco_traces import allreduce, async_rounds, streaming, sync_rounds  # noqa: E402

from asyncsim.stability.diloco import diloco_trace_alpha_star  # noqa: E402
from asyncsim.train import replay  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, device {args.device}, "
          f"repeats {args.repeats} (median after a warm-up)")
    g = np.random.default_rng(0)
    big = {"X": g.normal(size=(2048, 784)).astype(np.float32), "y": g.integers(0, 10, 2048)}
    models = [("64-128-10", "digits", "mlp:128"), ("784-256-256-10", big, "mlp:256,256")]
    N, H = 8, 8
    rounds = 6 if args.quick else 25
    print("\n| model | trace | inner gradients | sequential (grad/s) | batched (grad/s) | batched / sequential "
          "| all-reduce S-SGD, same gradients (grad/s) | auto / S-SGD |")
    print("|---|---|---|---|---|---|---|---|")
    for label, ds, model in models:
        kw = dict(dataset=ds, model=model, batch_size=32, lr=1e-3, device=args.device, log_every=10 ** 9)
        trs = {"diloco": sync_rounds(N, rounds, H),
               "streaming P=4": streaming(N, rounds, H, 4, overlap=2),
               "async_diloco": async_rounds(np.random.default_rng(1).integers(0, N, rounds * N).tolist(), H)}
        ref_tr = allreduce(N, rounds * H)
        t_ref, r_ref = timed(lambda: replay(ref_tr, optimizer="adamw", **kw), args.repeats)
        g_ref = N * rounds * H / t_ref
        for name, tr in trs.items():
            ts = {}
            n_inner = None
            for eng in ("sequential", "batched", "auto"):
                t, r = timed(lambda: replay(tr, engine=eng, **kw), args.repeats)
                ts[eng] = t
                n_inner = r.extra["inner_gradients"]
                if eng == "auto":
                    picked = r.engine
            rate = {k: n_inner / v for k, v in ts.items()}
            print(f"| {label} | {name} | {n_inner:,} | {rate['sequential']:,.0f} | {rate['batched']:,.0f} | "
                  f"{ts['sequential'] / ts['batched']:.2f} | {g_ref:,.0f} | {rate['auto'] / g_ref:.2f} "
                  f"({picked}) |")
    print("\n| trace | rows | updates | trace criterion α* | time (s) |")
    print("|---|---|---|---|---|")
    n_r = 40 if args.quick else 400
    for name, tr in (("diloco N=8 H=8", sync_rounds(8, n_r, 8)),
                     ("streaming N=8 H=8 P=4", streaming(8, n_r // 4, 8, 4, overlap=2)),
                     ("async_diloco N=8 H=8", async_rounds(np.random.default_rng(2).integers(0, 8, n_r).tolist(), 8))):
        t, a = timed(lambda: diloco_trace_alpha_star(tr), args.repeats)
        print(f"| {name} | {len(tr):,} | {tr.n_updates:,} | {a:.4g} | {t:.3f} |")


if __name__ == "__main__":
    main()
