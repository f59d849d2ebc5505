"""Stability benchmark: mean-criterion α* by boundary locus vs numpy-roots bisection, K = 10⁴, and
the trace criterion on a 10⁵-step trace.

    python benchmarks/bench_stability.py [--runs 5] [--mean-square]

Prints medians of ``--runs`` timed runs (after one warm-up) and ratios measured in the same run.
Targets (issue 3): K = 10⁴ mean α* < 0.2 s; trace criterion on 10⁵ steps < 5 s. Issue 15:
mean-square α* at K = 10³ < 1 s and K = 10⁴ < 60 s, against the dense solver at K ≤ 300 (same run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from asyncsim.stability import families  # noqa: E402
from asyncsim.stability.characteristic import mean_alpha_star  # noqa: E402
from asyncsim.stability.lyapunov import trace_alpha_star  # noqa: E402


def roots_bisection(p: np.ndarray) -> float:
    """The brute-force reference: np.roots of z^{K+1} − z^K + α Σ p_k z^{K−k}, scan + bisection."""
    K = p.size - 1

    def unstable(a):
        c = np.zeros(K + 2)
        c[0], c[1] = 1.0, -1.0
        c[1:] += a * p
        return np.abs(np.roots(c)).max() >= 1.0

    lo, hi = 0.0, 1e-4
    while not unstable(hi):
        lo, hi = hi, hi * 1.25
    while hi - lo > 1e-10 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if unstable(mid) else (mid, hi)
    return 0.5 * (lo + hi)


def timed(fn, runs):
    fn()  # warm-up
    ts, val = [], None
    for _ in range(runs):
        t = time.perf_counter()
        val = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), val


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mean-square", action="store_true", help="also time the mean-square solvers")
    args = ap.parse_args()
    from _traces import async_exponential

    rng = np.random.default_rng(0)
    p256 = rng.random(257)
    p256 /= p256.sum()
    rows = []
    t_fast, a_fast = timed(lambda: mean_alpha_star(p256), args.runs)
    t_ref, a_ref = timed(lambda: roots_bisection(p256), max(3, args.runs // 2))
    rows.append(("mean α*, random pmf K=256, boundary locus", t_fast, a_fast))
    rows.append(("mean α*, random pmf K=256, np.roots bisection", t_ref, a_ref))
    for name, p in (("constant:10000", families.constant(10_000)),
                    ("uniform:0:10000", families.uniform(0, 10_000)),
                    ("random K=10000", rng.random(10_001) / 5000.5)):
        t, a = timed(lambda p=p: mean_alpha_star(p / p.sum()), args.runs)
        rows.append((f"mean α*, {name}, boundary locus", t, a))
    tr = async_exponential(8, 100_000, seed=0)
    t, a = timed(lambda: trace_alpha_star(tr), 3)
    rows.append(("trace α*, A-SGD N=8, 10^5 steps (sgd)", t, a))
    t, a = timed(lambda: trace_alpha_star(tr, "momentum", 0.5), 3)
    rows.append(("trace α*, A-SGD N=8, 10^5 steps (momentum 0.5)", t, a))
    if args.mean_square:
        from asyncsim.stability.meansquare import (build_model, mean_square_alpha_star,
                                                   mean_square_alpha_star_dense, spectral_radius_arnoldi)

        ratios = []
        for K in (100, 300):
            p = rng.random(K + 1)
            p /= p.sum()
            t_f, a_f = timed(lambda p=p: mean_square_alpha_star(p), 3)
            t_d, a_d = timed(lambda p=p: mean_square_alpha_star_dense(p), 1)
            rows.append((f"mean-square α*, random K={K}, O(K²) Åström", t_f, a_f))
            rows.append((f"mean-square α*, random K={K}, dense 2K×2K eig", t_d, a_d))
            ratios.append((K, t_d / t_f, abs(a_f - a_d) / a_d))
        for K in (1000, 10_000):
            p = rng.random(K + 1)
            p /= p.sum()
            t_f, a_f = timed(lambda p=p: mean_square_alpha_star(p), 1 if K > 1000 else 3)
            rows.append((f"mean-square α*, random K={K}, O(K²) Åström", t_f, a_f))
        # independent check: rho(Phi) by Arnoldi on the (K+1)^2 state (Phi applied in O(K^2))
        p = rng.random(201)
        p /= p.sum()
        a_f = mean_square_alpha_star(p)
        model = build_model(p)
        t0 = time.perf_counter()
        lo = spectral_radius_arnoldi(model, a_f * (1 - 1e-4))
        hi = spectral_radius_arnoldi(model, a_f * (1 + 1e-4))
        rows.append((f"  check K=200: Arnoldi rho(Phi) at a*(1-1e-4) = {lo:.7f}, at a*(1+1e-4) = {hi:.7f}",
                     time.perf_counter() - t0, a_f))
    w = max(len(r[0]) for r in rows)
    print(f"{'case':<{w}}  {'median s':>9}  {'alpha*':>14}")
    for name, t, a in rows:
        print(f"{name:<{w}}  {t:9.4f}  {a:14.10g}")
    print(f"speed-up of the boundary locus over np.roots bisection at K=256: {t_ref / t_fast:.0f}x "
          f"(relative difference {abs(a_fast - a_ref) / a_ref:.1e})")
    if args.mean_square:
        for K, r, d in ratios:
            print(f"mean-square, K={K}: O(K²) solver {r:.0f}x faster than the dense eigenproblem "
                  f"(relative difference {d:.1e})")


if __name__ == "__main__":
    main()
