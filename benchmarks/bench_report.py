"""Wall time of writing a plan's report (HTML, Markdown, three figures) for 50 points.

    python benchmarks/bench_report.py [--repeats 5] [--points 25]

Runs a plan of ``--points`` cluster sizes × {async, sync} with quadratic training
(serially, once), then times ``write_report`` alone on its rows and curves: median
of the repeats after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from asyncsim.plan import PlanSpec, SerialBackend, run_plan
from asyncsim.plan.report import write_report
from asyncsim.scenario import load_scenario

EXP = {"name": "bench-report", "seed": 1, "workers": [{"count": 8, "compute": {"dist": "exponential", "mean": 1.0}}],
       "policy": {"kind": "async"}, "cost_per_worker_hour": 2.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--points", type=int, default=25)
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-report-"))
    plan = PlanSpec(load_scenario(EXP), vary=[("workers.0.count", list(range(2, 2 + args.points)))],
                    policies=["async"], updates=300, sharpness=1.0, train="quadratic", target=1e-3,
                    criteria="mean")
    res = run_plan(plan, out, SerialBackend(), report=False)
    meta = json.loads((out / "plan.json").read_text())
    recs = {p.stem: json.loads(p.read_text()) for p in (out / "points").glob("*.json")}
    curves = {k: (r.get("train") or {}).get("curve") for k, r in recs.items()}
    times = []
    for i in range(args.repeats + 1):
        t = time.perf_counter()
        write_report(out, res.rows, curves, vary_keys=plan.vary_keys, meta=meta)
        if i:
            times.append(time.perf_counter() - t)
    print(f"{len(res.rows)} rows: report in {statistics.median(times):.2f} s "
          f"(median of {args.repeats}; min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()
