"""Stability benchmark: mean-criterion α* by boundary locus vs numpy-roots bisection, K = 10⁴, and
the trace criterion on a 10⁵-step trace.

    python benchmarks/bench_stability.py [--runs 5] [--mean-square] [--dense-max K]
                                         [--ms-check K,...] [--trace-large [--before REV]]
                                         [--tail-coverage] [--only-extra]

Prints medians of ``--runs`` timed runs (after one warm-up) and ratios measured in the same run.
Targets (issue 3): K = 10⁴ mean α* < 0.2 s; trace criterion on 10⁵ steps < 5 s. Issue 15:
mean-square α* at K = 10³ < 1 s and K = 10⁴ < 60 s, against the dense solver at K ≤ ``--dense-max``
(default 1000, same run). ``--ms-check``: the independent matrix-free check at large K (the
second moment's growth at α*(1 ± 1e-2)). ``--trace-large`` (issue 21): the trace criterion on a
1024-worker A-SGD trace of 10⁶ updates from ``asyncsim.simulate``, against the implementation
at git revision ``--before`` (default 24de429) loaded in the same process.
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
    ap.add_argument("--dense-max", type=int, default=1000, help="largest K for the dense reference")
    ap.add_argument("--ms-check", default="", help="K values for the matrix-free growth check, e.g. 1000")
    ap.add_argument("--ms-iters", type=int, default=6000, help="steps of the growth check")
    ap.add_argument("--trace-large", action="store_true", help="trace criterion, N=1024, 10^6 updates")
    ap.add_argument("--before", default="24de429", help="git revision of the 'before' trace criterion")
    ap.add_argument("--tail-coverage", action="store_true",
                    help="coverage of the fitted-tail mean criterion's interval, 40 seeds of A-SGD N=8")
    ap.add_argument("--only-extra", action="store_true", help="skip the base cases")
    args = ap.parse_args()
    rows = []
    if args.trace_large:
        rows += trace_large(args)
    if args.ms_check:
        rows += ms_check([int(k) for k in args.ms_check.split(",")], args.ms_iters)
    if args.tail_coverage:
        tail_coverage()
    if args.only_extra:
        print_rows(rows)
        return
    from _traces import async_exponential

    rng = np.random.default_rng(0)
    p256 = rng.random(257)
    p256 /= p256.sum()
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
        for K in (100, 300, 1000, 3000, 10_000):
            p = rng.random(K + 1)
            p /= p.sum()
            t_f, a_f = timed(lambda p=p: mean_square_alpha_star(p), 1 if K > 1000 else 3)
            rows.append((f"mean-square α*, random K={K}, O(K²) Åström", t_f, a_f))
            if K <= args.dense_max:
                # the dense reference once (after no warm-up at K >= 1000: minutes), same run
                t0 = time.perf_counter()
                a_d = mean_square_alpha_star_dense(p)
                t_d = time.perf_counter() - t0
                rows.append((f"mean-square α*, random K={K}, dense 2K×2K eig", t_d, a_d))
                ratios.append((K, t_d / t_f, abs(a_f - a_d) / a_d))
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
    print_rows(rows)
    print(f"speed-up of the boundary locus over np.roots bisection at K=256: {t_ref / t_fast:.0f}x "
          f"(relative difference {abs(a_fast - a_ref) / a_ref:.1e})")
    if args.mean_square:
        for K, r, d in ratios:
            print(f"mean-square, K={K}: O(K²) solver {r:.0f}x faster than the dense eigenproblem "
                  f"(relative difference {d:.1e})")


def print_rows(rows) -> None:
    if not rows:
        return
    w = max(len(r[0]) for r in rows)
    print(f"{'case':<{w}}  {'median s':>9}  {'alpha* / value':>14}")
    for name, t, a in rows:
        print(f"{name:<{w}}  {t:9.4f}  {a:14.10g}", flush=True)


def _module_at(rev: str, path: str, name: str):
    """The module ``path`` as it was at git revision ``rev``, loaded inside its package."""
    import importlib.util
    import subprocess

    src = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout
    spec = importlib.util.spec_from_loader(name, loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = name.rsplit(".", 1)[0]
    exec(compile(src, f"{rev}:{path}", "exec"), mod.__dict__)
    return mod


def trace_large(args):
    """Issue 21: the trace criterion on 10⁶ updates of 1024 A-SGD workers, before / after."""
    import asyncsim
    from asyncsim.stability.lyapunov import _Plan
    from asyncsim.stability.uncertainty import trace_interval

    sc = {"name": "asgd-1024", "seed": 1, "policy": {"kind": "async"}, "stop": {"updates": 1_000_000},
          "workers": [{"count": 1024, "compute": {"dist": "exponential", "mean": 1.0}}]}
    t0 = time.perf_counter()
    tr = asyncsim.simulate(sc, engine="auto")
    rows = [("simulate A-SGD N=1024, 10^6 updates (engine auto)", time.perf_counter() - t0, float(tr.n_updates))]
    t_new, a_new = timed(lambda: trace_alpha_star(tr), args.runs)
    rows.append(("trace α*, N=1024, 10^6 steps (sgd), now", t_new, a_new))
    try:
        old = _module_at(args.before, "asyncsim/stability/lyapunov.py", "asyncsim.stability._lyapunov_before")
    except Exception as exc:  # no git, or no such revision
        print(f"(no 'before' run: {exc})", file=sys.stderr)
    else:
        t0 = time.perf_counter()
        a_old = old.trace_alpha_star(tr)
        t_old = time.perf_counter() - t0
        rows.append((f"trace α*, N=1024, 10^6 steps (sgd), at {args.before} (one run)", t_old, a_old))
        rows.append((f"  ratio before/after {t_old / t_new:.1f}x, relative difference", 0.0,
                     abs(a_new - a_old) / a_old))
        # momentum / shifted: one pass over 48 α each (the old α* search would take minutes), with
        # burn-in 0: the old passes ended the burn-in at their first renormalisation (~80 steps),
        # so with the default 10 % they measure a different window
        from asyncsim.stability.lyapunov import lyapunov_exponents

        grid = np.geomspace(0.004, 4.0, 48)
        for opt in ("momentum", "shifted"):
            t_n, lam_n = timed(lambda opt=opt: lyapunov_exponents(tr, grid, opt, 0.5, burn_in=0.0), 1)
            t0 = time.perf_counter()
            lam_o = old.lyapunov_exponents(tr, grid, opt, 0.5, burn_in=0.0)
            t_o = time.perf_counter() - t0
            rows.append((f"λ pass, 48 α, {opt} 0.5, now / at {args.before}: {t_o / t_n:.1f}x; max |Δλ|/max|λ| =",
                         t_n, float(np.max(np.abs(lam_n - lam_o)) / np.max(np.abs(lam_o)))))
            t_a, a_m = timed(lambda opt=opt: trace_alpha_star(tr, opt, 0.5), 1)
            rows.append((f"trace α*, N=1024, 10^6 steps ({opt} 0.5), now", t_a, a_m))
    plan = _Plan(tr)
    t0 = time.perf_counter()
    iv = trace_interval(plan, a_new)
    rows.append((f"  its 95 % interval (batch means): [{iv.lo:.6g}, {iv.hi:.6g}]", time.perf_counter() - t0, a_new))
    return rows


def ms_check(Ks, iters=6000):
    """The independent check of the O(K²) mean-square solver at large K: the log-growth per step of
    Φ^t(I) (matrix-free, O(K²) a step) at α*(1 ∓ 1e-2) must be negative / positive."""
    from asyncsim.stability.meansquare import build_model, mean_square_alpha_star, second_moment_growth

    rows = []
    rng = np.random.default_rng(7)
    for K in Ks:
        p = rng.random(K + 1)
        p /= p.sum()
        a = mean_square_alpha_star(p)
        model = build_model(p)
        for f in (1 - 1e-2, 1 + 1e-2):
            t0 = time.perf_counter()
            late, early = second_moment_growth(model, a * f, iters=iters)
            rows.append((f"check K={K}: log-growth of Φ^t(I) at α*·{f:g} ({iters} steps; earlier window {early:+.3e})",
                         time.perf_counter() - t0, late))
    return rows


def tail_coverage(seeds: int = 40) -> None:
    """Issue 15: how often the fitted-tail mean criterion's 95 % interval contains the long-run
    4N − 2 = 30 (A-SGD, N = 8, the reference generator of tests/_traces.py), at two trace lengths
    and two levels of the tail's test of fit; the empirical pmf's jackknife beside it."""
    from _traces import async_exponential

    import asyncsim.stability.tail as tail
    from asyncsim.stability.uncertainty import jackknife, segment_counts

    default = tail.LEVEL
    for U in (5000, 40_000):
        for level in (default, 0.05):
            tail.LEVEL = level
            hit = ehit = 0
            est, hw, emp = [], [], []
            t0 = time.perf_counter()
            for seed in range(seeds):
                tr = async_exponential(8, U, seed=seed)
                S = segment_counts(tr)
                d, _ = tail.mean_fitted_tail(S, updates=U)
                lo, hi = d["ci"]
                hit += lo <= 30 <= hi
                est.append(d["alpha_star"])
                hw.append((hi - lo) / 2 / d["alpha_star"])
                if level == default:
                    a = mean_alpha_star(tr.delay_pmf())
                    emp.append(a)
                    jv = jackknife(mean_alpha_star, S, a, U)
                    ehit += jv.lo <= 30 <= jv.hi
            print(f"updates {U}, test level {level}: fitted tail covers 30 in {hit}/{seeds}, median estimate "
                  f"{np.median(est):.4f}, median half-width {100 * np.median(hw):.2f} %"
                  + (f"; empirical pmf: median α* {np.median(emp):.2f}, its jackknife covers 30 in {ehit}/{seeds}"
                     if emp else "") + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    tail.LEVEL = default


if __name__ == "__main__":
    main()
