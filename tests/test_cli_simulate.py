"""`asyncsim simulate`: the --json contract, trace files, timeline PNG, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import asyncsim
from asyncsim import Trace
from asyncsim.cli import run

ROOT = Path(__file__).resolve().parent.parent
SCEN = ROOT / "scenarios" / "homogeneous-8.yaml"


def test_json_contract_and_outputs(tmp_path, capsys):
    out, tl = tmp_path / "t.parquet", tmp_path / "tl.png"
    assert run(["simulate", str(SCEN), "--updates", "500", "--out", str(out), "--timeline", str(tl), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    for key in ("updates", "gradients", "dropped", "sim_time", "update_rate", "staleness_mean", "staleness_max",
                "staleness_pmf"):
        assert key in d
    assert d["updates"] == 500 and abs(sum(d["staleness_pmf"]) - 1) < 1e-12
    assert abs(d["update_rate"] - d["updates"] / d["sim_time"]) < 1e-9
    t = Trace.load(out)
    assert t.n_updates == 500 and t.seed == 1 and t.scenario["name"] == "homogeneous-8"
    assert tl.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_bytes_other_seed_differs(tmp_path, capsys):
    paths = [tmp_path / f"{i}.parquet" for i in range(3)]
    for p, seed in zip(paths, (5, 5, 6)):
        assert run(["simulate", str(SCEN), "-n", "300", "--seed", str(seed), "-o", str(p), "--json"]) == 0
    capsys.readouterr()
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert not np.array_equal(Trace.load(paths[0]).t_done, Trace.load(paths[2]).t_done)


def test_bad_engine_and_flags_are_one_line_exit_2(tmp_path, capsys):
    for argv in (["simulate", str(SCEN), "--engine", "warp"], ["simulate", str(SCEN), "--updates", "0"],
                 ["simulate", str(SCEN), "--bogus"], ["simulate"]):
        assert run(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("asyncsim: error")


# ---------------------------------------------------------------- --time / simulate(time=)
_PLAIN = {"name": "plain-6", "seed": 3, "workers": [{"count": 6, "compute": {"dist": "exponential", "mean": 0.5}}],
          "server": {"apply": {"dist": "constant", "value": 0.0}}, "policy": {"kind": "async"}}


def _applied(trace):
    ok = trace.step >= 0
    return np.sort(trace.t_applied[ok])


@pytest.mark.parametrize("source,engines", [(str(SCEN), ("simpy", "heap")), (_PLAIN, ("simpy", "heap", "vector"))])
def test_time_limit_is_the_prefix_of_a_longer_run(source, engines):
    # Independent truth: the same seed run for longer; a time limit T keeps exactly the updates it
    # applied by T (common random numbers make the shorter run a prefix of the longer one).
    for engine in engines:
        long = asyncsim.simulate(source, updates=400, engine=engine)
        t = _applied(long)
        T = float(0.5 * (t[199] + t[200]))  # between two apply times: no tie at the boundary
        short = asyncsim.simulate(source, time=T, engine=engine)
        assert short.sim_time == pytest.approx(T, rel=1e-12)
        assert short.n_updates == int(np.count_nonzero(np.unique(long.step[long.step >= 0]) < 200)) == 200
        assert np.array_equal(_applied(short), t[t <= T])
        # with both limits the run ends at whichever comes first
        assert asyncsim.simulate(source, time=T, updates=50, engine=engine).n_updates == 50
        assert asyncsim.simulate(source, time=T, updates=10_000, engine=engine).n_updates == 200


def test_time_flag_json_matches_the_api(capsys):
    T = 7.25
    assert run(["simulate", str(SCEN), "--time", str(T), "--no-save", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    ref = asyncsim.simulate(str(SCEN), time=T)
    assert d["sim_time"] == pytest.approx(T) and d["updates"] == ref.n_updates > 0
    for bad in ("0", "-1", "nan", "inf"):
        assert run(["simulate", str(SCEN), "--time", bad, "--no-save"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("asyncsim: error") and "--time" in err[0]
    with pytest.raises(asyncsim.InputError):
        asyncsim.simulate(str(SCEN), time=0)
