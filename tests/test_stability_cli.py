"""``asyncsim stability`` / ``asyncsim figures``: the command-line contract of DESIGN.md."""

import json
import math

import pytest
from _traces import async_exponential, constant_delay

from asyncsim.cli import run


def _json(capsys, argv):
    code = run(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1  # exactly one JSON object on stdout
    return json.loads(lines[0])


def test_pmf_json(capsys):
    d = _json(capsys, ["stability", "--pmf", "constant:4", "--criterion", "mean", "--base-lr", "0.1", "--json"])
    a = 2 * math.sin(math.pi / 18)
    assert d["alpha_star"] == pytest.approx(a, rel=1e-9)
    assert d["criterion"] == "mean"
    assert d["lr"] is not None
    lr = d["lr"]["mean"] if isinstance(d["lr"], dict) else d["lr"]
    assert lr == pytest.approx(0.1 * a / 2, rel=1e-9)
    assert "warnings" in d


def test_geometric_warns_in_words(capsys):
    d = _json(capsys, ["stability", "--pmf", "geometric:8", "--criterion", "all", "--json"])
    assert d["alpha_star"] < 2.0              # the conservative value, not the mean criterion's 30
    assert d["warnings"] and "conservative" in " ".join(d["warnings"]).lower()


def test_trace_file_all_criteria(tmp_path, capsys):
    path = tmp_path / "t.npz"
    async_exponential(8, 20_000, seed=3).save(path)
    d = _json(capsys, ["stability", "--trace", str(path), "--criterion", "trace", "--sharpness", "2", "--json"])
    assert 0.55 < d["alpha_star"] < 0.85     # the N = 8 cluster's ≈ 0.68, on a short trace
    assert d["criterion"] == "trace"
    code = run(["stability", "--trace", str(path)])   # the human table
    out, _ = capsys.readouterr()
    assert code == 0 and "trace" in out and "mean" in out


def test_constant_trace_table(tmp_path, capsys):
    path = tmp_path / "c.npz"
    constant_delay(2, 5_000).save(path)
    assert run(["stability", "--trace", str(path), "--criterion", "mean"]) == 0
    out, _ = capsys.readouterr()
    assert f"{2 * math.sin(math.pi / 10):.4g}" in out


@pytest.mark.parametrize("argv", [
    ["stability"],                                                    # no source
    ["stability", "--pmf", "constant:2", "--trace", "x.npz"],         # two sources
    ["stability", "--pmf", "bogus:2"],
    ["stability", "--pmf", "constant:2", "--base-lr", "0.1", "--sharpness", "3"],
    ["stability", "--pmf", "constant:2", "--criterion", "trace"],     # needs a trace
    ["stability", "--pmf", "constant:2", "--criterion", "nope"],
    ["stability", "--pmf", "constant:2", "--optimizer", "momentum", "--momentum", "1.5"],
    ["stability", "--trace", "/nonexistent/trace.npz"],
])
def test_bad_input_is_one_line_exit_2(argv, capsys):
    assert run(argv) == 2
    out, err = capsys.readouterr()
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1 and "Traceback" not in err


def test_scenario_source(tmp_path, capsys):
    import asyncsim

    try:
        import asyncsim.engine as eng
    except ImportError:
        pytest.skip("asyncsim.engine not available yet")
    if not hasattr(eng, "simulate"):
        pytest.skip("asyncsim.engine.simulate not available yet")
    sc = tmp_path / "a.yaml"
    sc.write_text("name: a8\nseed: 1\nworkers:\n  - count: 4\n    compute: {dist: exponential, mean: 1.0}\n"
                  "policy: {kind: async}\nstop: {updates: 5000}\n")
    d = _json(capsys, ["stability", str(sc), "--criterion", "mean", "--updates", "5000", "--json"])
    assert d["alpha_star"] > 2.0   # geometric-like delays: the mean criterion is above GD's 2
    assert asyncsim.__version__


# soak: the figures module in the tree at 09:26 UTC took 380 s here (the boundary-locus/QZ version
# of asyncsim.stability took 3.6 s for the same command); run with -m soak.
@pytest.mark.soak
def test_figures(tmp_path, capsys):
    assert run(["figures", "--out", str(tmp_path)]) == 0
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(pngs) >= 6
    for p in tmp_path.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*"))   # no temporary files left behind


@pytest.mark.parametrize("spec", ["geometric:1e9", "geometric:inf", "gaussian:1e9", "gaussian:inf",
                                  "constant:100000000", "gaussian:5:0", "uniform:0:1e99"])
def test_absurd_pmf_specs_one_line_exit_2(capsys, spec):
    code = run(["stability", "--pmf", spec, "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "error" in err


def test_huge_weights_are_normalised(capsys):
    d = _json(capsys, ["stability", "--pmf", "pmf:1e308,1e308", "--criterion", "mean", "--json"])
    # τ uniform on {0, 1}: z² − z + α(z + 1)/2 = 0; at α = 2 it is z² + 1, roots ±i on the circle
    assert d["alpha_star"] == pytest.approx(2.0, rel=1e-9)


def test_trace_reports_intervals(tmp_path, capsys):
    path = tmp_path / "t.npz"
    async_exponential(8, 6000, seed=5).save(path)
    d = _json(capsys, ["stability", "--trace", str(path), "--json"])
    for c in ("mean-square", "trace"):
        lo, hi = d["alpha_star_ci"][c]
        assert lo < d["alpha_star_by_criterion"][c] < hi
        assert d["updates_for_1pct"][c] > 6000
    # the mean criterion twice, named apart: the empirical pmf's in alpha_star_by_criterion, the
    # fitted tail's (geometric from τ ≥ 0 for A-SGD, 4N̂ − 2 ≈ 30) under mean_fitted_tail
    ft = d["mean_fitted_tail"]
    assert ft["threshold"] == 0 and ft["alpha_star"] == pytest.approx(30, rel=0.01)
    assert ft["ci"][0] <= ft["alpha_star"] <= ft["ci"][1]
    assert d["alpha_star_by_criterion"]["mean"] < 25
    assert any("fitted tail" in n for n in d["notes"])
    assert run(["stability", "--trace", str(path)]) == 0
    assert "mean, fitted tail" in capsys.readouterr().out
