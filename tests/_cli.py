"""Run the command line in this process and capture what it prints (for hardening tests).

``capsys`` is function-scoped, which Hypothesis examples cannot share, so the
hardening and fuzz tests capture with ``contextlib.redirect_*`` (the rich
consoles look up ``sys.stdout``/``sys.stderr`` when they write).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
from pathlib import Path

from asyncsim.cli import run


class Hang(Exception):
    """A command ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`Hang` in the main thread after ``seconds`` (SIGALRM)."""

    def on_alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def cli(argv: list[str], limit: float = 60.0) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``asyncsim ARGV``, within ``limit`` seconds."""
    out, err = io.StringIO(), io.StringIO()
    with time_limit(limit), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]


def assert_one_line_error(rc: int, stderr: str, *must: str) -> str:
    """Exit 2 and exactly one line on stderr, ``asyncsim: error...``, containing each of ``must``."""
    lines = error_lines(stderr)
    assert rc == 2, (rc, stderr[-2000:])
    assert len(lines) == 1, stderr[-2000:]
    assert lines[0].startswith("asyncsim: error"), lines[0]
    assert "Traceback" not in stderr
    for m in must:
        assert m in lines[0], (m, lines[0])
    return lines[0]


def temporaries(folder: Path) -> list[Path]:
    """Temporary files of asyncsim's atomic writes under ``folder`` (none may survive a command)."""
    return [p for p in Path(folder).rglob(".*.tmp*")] + [p for p in Path(folder).rglob(".asyncsim-*")]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in Path(folder).rglob("*")}


def system_temporaries() -> set[str]:
    """asyncsim's temporary files in the system temp folder (in-place writes of devices)."""
    import tempfile

    d = tempfile.gettempdir()
    return {n for n in os.listdir(d) if n.startswith(".asyncsim-")}
