"""asyncsim._alloc: keeping freed memory for reuse (glibc's M_TOP_PAD)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from asyncsim import _alloc

_PROBE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    if sys.argv[1] == "keep":
        import asyncsim
        assert asyncsim.keep_freed_memory(children=False)
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):  # warm up (numpy, the allocator's own thresholds)
        arrays = [np.ones(200_000) for _ in range(12)]; del arrays
    f0 = faults()
    for _ in range(20):  # a run's worth of 1.6 MB arrays, freed, then the next run
        arrays = [np.ones(200_000) for _ in range(12)]
        del arrays
    print((faults() - f0) / 20)
""")


def _faults_per_round(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in (*_alloc.ENV, "ASYNCSIM_KEEP_FREED_MEMORY")}
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, env=env,
                         check=True)
    return float(out.stdout.strip())


def _glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _glibc(), reason="glibc only")
def test_kept_memory_is_reused_without_page_faults():
    """19 MB allocated and freed per round: with glibc's defaults the freed top of
    the heap goes back to the kernel and comes back as fresh pages (page faults);
    with the pad it is reused."""
    default, kept = _faults_per_round("default"), _faults_per_round("keep")
    assert kept < 0.1 * default and default > 500, (default, kept)


@pytest.mark.skipif(not _glibc(), reason="glibc only")
def test_sets_environment_for_children_and_opt_out(monkeypatch):
    for k in _alloc.ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ASYNCSIM_KEEP_FREED_MEMORY", "0")
    assert _alloc.keep_freed_memory() is False and not set(_alloc.ENV) & set(os.environ)
    monkeypatch.delenv("ASYNCSIM_KEEP_FREED_MEMORY")
    assert _alloc.keep_freed_memory() is True
    assert {k: os.environ[k] for k in _alloc.ENV} == _alloc.ENV


@pytest.mark.skipif(not _glibc(), reason="glibc only")
def test_plan_workers_inherit_the_settings_when_asked(monkeypatch):
    from asyncsim.plan import backends

    monkeypatch.delenv("ASYNCSIM_KEEP_FREED_MEMORY", raising=False)  # an opt-in: not by default
    assert not set(_alloc.ENV) & set(backends.worker_env_vars())
    monkeypatch.setenv("ASYNCSIM_KEEP_FREED_MEMORY", "1")  # read when workers start, not at import
    assert set(_alloc.ENV.items()) <= set(backends.worker_env_vars().items())


def test_the_command_leaves_the_allocator_alone_unless_asked(monkeypatch):
    """``asyncsim`` calls keep_freed_memory only with ASYNCSIM_KEEP_FREED_MEMORY=1."""
    import asyncsim.cli as cli

    calls = []
    monkeypatch.setattr(_alloc, "keep_freed_memory", lambda children=True: calls.append(children) or True)
    monkeypatch.setattr(cli, "run", lambda argv: 0)
    for value, want in ((None, 0), ("0", 0), ("1", 1)):
        calls.clear()
        if value is None:
            monkeypatch.delenv("ASYNCSIM_KEEP_FREED_MEMORY", raising=False)
        else:
            monkeypatch.setenv("ASYNCSIM_KEEP_FREED_MEMORY", value)
        with pytest.raises(SystemExit):
            cli.main()
        assert len(calls) == want, value
