"""The ``asyncsim.testing`` pytest plugin: spec parsing, assertions, the fixture via the entry point."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from asyncsim.errors import InputError
from asyncsim.testing import parse_cluster_spec, parse_distribution


def test_parse_distribution_positional_and_keyword():
    assert parse_distribution("lognormal(1,0.3)") == {"dist": "lognormal", "mean": 1, "cv": 0.3}
    assert parse_distribution("lognormal(cv=0.3, mean=2)") == {"dist": "lognormal", "mean": 2, "cv": 0.3}
    assert parse_distribution("shifted_exponential(0.5, 2)") == {"dist": "shifted_exponential",
                                                                  "shift": 0.5, "mean": 2}
    assert parse_distribution("constant(0.25)") == {"dist": "constant", "value": 0.25}
    for bad in ("lognormal(1)", "lognormal(1,2,3)", "zipf(1)", "exponential", "exponential(x)",
                "uniform(low=1, hi=2)"):
        with pytest.raises(InputError):
            parse_distribution(bad)


def test_parse_cluster_spec():
    sc = parse_cluster_spec("async:N=16,compute=lognormal(1,0.3)", updates=100, seed=4)
    assert sc["workers"] == [{"count": 16, "compute": {"dist": "lognormal", "mean": 1, "cv": 0.3}}]
    assert sc["policy"] == {"kind": "async"} and sc["seed"] == 4 and sc["stop"] == {"updates": 100}
    assert parse_cluster_spec("k_async:N=8,K=2")["policy"] == {"kind": "k_async", "k": 2}
    assert parse_cluster_spec("backup:N=8,K=6")["policy"] == {"kind": "backup", "aggregate": 6}
    assert parse_cluster_spec("ssp:N=4,bound=3")["policy"] == {"kind": "ssp", "bound": 3}
    assert parse_cluster_spec("sync:N=2,seed=9")["seed"] == 9
    for bad in ("hogwild:N=4", "async:compute=exponential(1)", "async:N=4,K=2", "async:N=4,color=red",
                "async:N=4,compute=exponential(1"):
        with pytest.raises(InputError):
            parse_cluster_spec(bad)


def test_assertions_report_step_and_loss():
    pytest.importorskip("torch")
    from _traces import constant_delay

    from asyncsim.testing import assert_diverges, assert_stable

    tr = constant_delay(0, 50)
    r = assert_stable(tr, lr=0.5, sharpness=2.0, max_loss_ratio=1e-6)
    assert r.final_loss < 1e-6
    with pytest.raises(AssertionError, match=r"diverged at update 5 with loss 1024"):
        assert_stable(tr, lr=1.5, sharpness=2.0)
    with pytest.raises(AssertionError, match=r"expected divergence, but after 50 updates"):
        assert_diverges(tr, lr=0.5, sharpness=2.0)
    with pytest.raises(AssertionError, match=r"exceeds"):
        assert_stable(tr, lr=0.01, sharpness=2.0, max_loss_ratio=1e-3)
    assert assert_diverges(tr, lr=1.5, sharpness=2.0).diverged_step == 5


def test_fixture_is_registered_through_the_entry_point(tmp_path):
    # A separate project with no conftest: the fixture comes from the installed plugin.
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        from asyncsim.testing import assert_stable, assert_diverges

        def test_uses_fixture(cluster_trace):
            tr = cluster_trace("async:N=4,compute=exponential(1)", updates=300, seed=1)
            assert tr.n_workers == 4 and tr.n_updates == 300
            assert_stable(tr, lr=0.05, sharpness=1.0)
            assert_diverges(tr, lr=3.0, sharpness=1.0)
    """))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "fixture 'cluster_trace' not found" not in proc.stdout
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout  # (the fixture skips only where asyncsim has no simulator)


def _doc_blocks():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "own-model.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_docs_user_test_file_runs_under_pytest_in_seconds(tmp_path):
    """The "Your own model" page's test file, as a project would keep it, with a custom module."""
    import time

    block = next(b for b in _doc_blocks() if b.startswith("# tests/test_async_stability.py"))
    (tmp_path / "test_async_stability.py").write_text(block)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "2 passed" in proc.stdout
    assert wall < 60  # seconds, interpreter start and torch import included, on a loaded 2-core box


def test_docs_complete_example_runs(tmp_path):
    block = _doc_blocks()[0]
    (tmp_path / "example.py").write_text(block)
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = proc.stdout.splitlines()[0].split()
    assert first[0] == "converged"
    assert float(first[1]) == pytest.approx(0.743, abs=5e-4) and float(first[2]) == pytest.approx(0.046, abs=5e-3)
    lr, lr_div = map(float, proc.stdout.splitlines()[1].split())
    assert 0.05 < lr < lr_div <= 0.2  # between the stable and the diverging lr of the page
    assert (tmp_path / "out" / "metrics.csv").read_text().startswith("step,sim_time,loss")
    assert (tmp_path / "out" / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_assertions_with_a_user_module_copy_it_and_fail_on_unstable():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from _traces import constant_delay, round_robin

    from asyncsim.testing import assert_diverges, assert_stable

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1), torch.nn.Flatten(0))
    X = torch.randn(32, 3)
    y = X[:, 0] * 0.5
    before = [p.detach().clone() for p in net.parameters()]
    r = assert_stable(round_robin(3, 100), lr=0.05, model=net, loss=F.mse_loss, dataset=(X, y), batch_size=None)
    assert r.verdict == "converged" and r.model == "Sequential"
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert_diverges(round_robin(3, 100), lr=50.0, model=net, loss=F.mse_loss, dataset=(X, y), batch_size=None)
    # quadratic, no delay, α = 2.1: the loss grows 1.21× a step for 8 steps: unstable, not stable
    with pytest.raises(AssertionError, match="unstable"):
        assert_stable(constant_delay(0, 8), lr=1.05, sharpness=2.0)
    assert assert_stable(constant_delay(0, 8), lr=1.05, sharpness=2.0, allow_unstable=True).verdict == "unstable"
