"""The tool never loses a user's work and never runs user text as code."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from asyncsim import Trace

PKG = Path(__file__).resolve().parent.parent / "asyncsim"


def test_no_eval_exec_or_unsafe_yaml_in_the_package():
    offenders = []
    pattern = re.compile(r"(?<![\w.])(eval|exec)\s*\(|yaml\.load\s*\(|yaml\.unsafe_load|Loader\s*=\s*yaml\.Loader"
                         r"|pickle\.loads?\s*\(|allow_pickle\s*=\s*True")
    for path in PKG.rglob("*.py"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code):
                offenders.append(f"{path.relative_to(PKG.parent)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_killed_writer_leaves_old_or_new_file_never_half(tmp_path):
    """SIGKILL a process that keeps rewriting a trace; the file must always load."""
    target = tmp_path / "trace.parquet"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        from _traces import async_exponential
        big = async_exponential(8, 200_000, seed=1)
        small = async_exponential(8, 1_000, seed=2)
        small.save({str(target)!r})
        print("ready", flush=True)
        i = 0
        while True:
            (big if i % 2 else small).save({str(target)!r})
            i += 1
    """)
    for delay in (0.05, 0.2, 0.4):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        t = Trace.load(target)  # raises TraceError on a half-written file
        assert t.n_updates in (1_000, 200_000)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "trace.parquet"]
    # a killed writer may leave its private temporary file, never a damaged target
    assert all(name.startswith(".trace.parquet.") for name in leftovers)
