"""`asyncsim simulate`: the --json contract, trace files, timeline PNG, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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
