"""Start-up time of the command line, against bare Python measured in the same run.

    python benchmarks/bench_startup.py [--repeats 15] [--baseline DIR]

Each case is a fresh process, started the way the installed console script
starts (``python -c "from asyncsim.cli import main; main()" ARGS``, so no
shell wrapper such as pyenv's shim is timed). Cases are interleaved (one
of each per round) so that load on a shared machine hits them alike; one
warm-up round first. Prints the median wall time of each case and its ratio
to ``python -c pass`` of the same rounds. ``--baseline DIR`` adds the same
commands run from another checkout (e.g. ``git archive REV | tar -x -C DIR``),
timed in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from asyncsim.cli import main; main()"]
CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
    "asyncsim --version": CLI + ["--version"],
    "asyncsim --help": CLI + ["--help"],
    "asyncsim simulate --help": CLI + ["simulate", "--help"],
    "asyncsim validate scenarios/homogeneous-8.yaml": CLI + ["validate", "scenarios/homogeneous-8.yaml"],
    # a scenario without a network section: no networkx (200 updates, so start-up dominates)
    "asyncsim simulate scenarios/ssp-16.yaml -n 200 --no-save": CLI + ["simulate", "scenarios/ssp-16.yaml", "-n",
                                                                    "200", "--no-save"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to time the same commands from")
    args = ap.parse_args()
    cases = {name: (argv, ROOT) for name, argv in CASES.items()}
    if args.baseline is not None:
        for name in ("asyncsim --help", "asyncsim validate scenarios/homogeneous-8.yaml",
                     "asyncsim simulate scenarios/ssp-16.yaml -n 200 --no-save"):
            cases[f"baseline: {name}"] = (CASES[name], args.baseline.resolve())
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(args.repeats + 1):
        for name, (argv, root) in cases.items():
            env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
            t0 = time.perf_counter()
            # validate exits 0 on a valid file; any failure here is a broken benchmark
            subprocess.run(argv, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=True)
            if r:  # round 0 warms the file cache
                times[name].append(time.perf_counter() - t0)
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}; median of {args.repeats}")
    bare = statistics.median(times["python -c pass"])
    print(f"{'case':60s} {'median s':>9s} {'min s':>7s} {'× bare':>7s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:60s} {med:9.3f} {min(ts):7.3f} {med / bare:7.2f}")


if __name__ == "__main__":
    main()
