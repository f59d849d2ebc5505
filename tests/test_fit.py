"""asyncsim fit: maximum-likelihood fits of the compute families to measured step times."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from asyncsim.cli import run
from asyncsim.distributions import parse_distribution
from asyncsim.fit import fit_ranks, fit_times
from asyncsim.scenario import load_scenario

N = 20_000
TRUE = [
    {"dist": "exponential", "mean": 0.4},
    {"dist": "shifted_exponential", "shift": 0.2, "mean": 0.5},
    {"dist": "lognormal", "mean": 0.5, "cv": 0.3},
    {"dist": "gamma", "mean": 0.5, "cv": 0.5},
    {"dist": "weibull", "shape": 2.5, "scale": 0.6},
    {"dist": "normal", "mean": 1.0, "std": 0.1},
    {"dist": "uniform", "low": 0.2, "high": 0.9},
    {"dist": "pareto", "shape": 3.0, "scale": 0.3},
]


def sample(spec, n=N, seed=7):
    return parse_distribution(spec).sample(np.random.default_rng(seed), n)


@pytest.mark.parametrize("spec", TRUE, ids=[s["dist"] for s in TRUE])
def test_recovers_parameters_and_ranks_the_true_family_first(spec):
    res = fit_times(sample(spec))
    assert res["ranking"][0]["dist"] == spec["dist"], [(r["dist"], r["bic"]) for r in res["ranking"][:3]]
    got = res["best"]["params"]
    # within sampling error: maximum-likelihood estimates have relative standard errors of
    # order (1 + cv)/sqrt(n) here; allow 6 of them
    tol = 6 * 1.5 / math.sqrt(N)
    for k, v in spec.items():
        if k != "dist":
            assert got[k] == pytest.approx(v, rel=tol), (k, got[k], v)
    # the fit is a good one by its own goodness-of-fit statistic: KS distance within the
    # 1 % critical value of a fully specified distribution (1.63 / sqrt(n))
    assert res["ranking"][0]["ks"] < 1.63 / math.sqrt(N)
    # and the proposed block is a valid scenario compute distribution
    load_scenario({"workers": [{"count": 1, "compute": {"dist": res["best"]["dist"], **got}}]})


def test_small_samples_still_fit_and_equal_values_are_constant():
    res = fit_times(sample({"dist": "gamma", "mean": 0.5, "cv": 0.2}, n=40))
    assert {r["dist"] for r in res["ranking"]} >= {"gamma", "lognormal", "exponential"}
    assert fit_times([0.25] * 10)["best"] == {"dist": "constant", "params": {"value": 0.25}}


def test_slower_ranks_become_their_own_group():
    rng = np.random.default_rng(3)
    log = {r: rng.gamma(400, (0.65 if r in (2, 9) else 0.5) / 400, 500) for r in range(12)}
    res = fit_ranks(log)
    names = {g["name"]: g for g in res["groups"]}
    assert names["slow"]["ranks"] == [2, 9] and names["typical"]["count"] == 10
    assert names["slow"]["median"] == pytest.approx(0.65, rel=0.01)
    # the proposed workers: list is a valid scenario
    load_scenario({"workers": res["workers"]})
    # a homogeneous cluster gives one group
    even = {r: rng.gamma(400, 0.5 / 400, 500) for r in range(12)}
    assert [g["name"] for g in fit_ranks(even)["groups"]] == ["typical"]


def test_cli_json_and_block(tmp_path, capsys):
    f = tmp_path / "t.csv"
    f.write_text("seconds\n" + "\n".join(f"{x:.9f}" for x in sample(TRUE[2], n=3000)) + "\n")
    out = tmp_path / "block.yaml"
    assert run(["fit", str(f), "--json", "--out", str(out)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["best"]["dist"] == "lognormal" and set(d["best"]["params"]) == {"mean", "cv"}
    assert [r["dist"] for r in d["ranking"]][0] == "lognormal"
    assert yaml.safe_load(out.read_text())["compute"]["dist"] == "lognormal"
    # per-rank log
    g = tmp_path / "ranks.csv"
    rng = np.random.default_rng(1)
    g.write_text("rank,step,seconds\n" + "".join(f"{r},{s},{rng.gamma(400, (0.7 if r == 5 else 0.5) / 400):.6f}\n"
                                                   for r in range(8) for s in range(200)))
    assert run(["fit", str(g), "--ranks", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [w["count"] for w in d["workers"]] == [7, 1]


@pytest.mark.parametrize("content,needle", [
    ("", "empty"),
    ("seconds\n0.1\nabc\n", "line 3"),
    ("seconds\n0.1\n-2\n", "> 0"),
    ("a,b\n1,2\n", "--column"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, content, needle):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    assert run(["fit", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


def test_missing_rank_columns(tmp_path, capsys):
    f = tmp_path / "r.csv"
    f.write_text("step,seconds\n1,0.5\n")
    assert run(["fit", str(f), "--ranks"]) == 2
    assert "rank" in capsys.readouterr().err
