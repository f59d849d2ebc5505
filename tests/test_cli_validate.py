"""`asyncsim validate` prints every problem of every file, one line each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asyncsim.cli import run
from asyncsim.errors import ScenarioError
from asyncsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent

#: four independent mistakes, and the field path each must be reported under
FOUR = """\
name: four-problems
workers:
  - count: 0
    cuont: 3
    compute: {dist: exponential, mean: -2}
policy: {kind: async}
stop: {updates: 0}
"""
FOUR_FIELDS = ["workers.0.cuont", "workers.0.count", "workers.0.compute.mean", "stop.updates"]
TWO = """\
workers:
  - count: 2
    compute: {dist: gamma, mean: 1, cv: -1}
network: {topology: star, bandwidth_gbps: 0}
"""
TWO_FIELDS = ["workers.0.compute.cv", "network.bandwidth_gbps"]


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_error_lists_every_problem(tmp_path):
    p = _write(tmp_path, "four.yaml", FOUR)
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    problems = info.value.problems
    assert len(problems) == 4
    for line, field in zip(problems, FOUR_FIELDS):  # the typo'd key first, then in file order
        assert line.startswith(f"{p}: {field}: ") and "\n" not in line
    assert str(info.value) == f"{problems[0]} (and 3 more problems)"


def test_validate_prints_every_problem_of_every_file(tmp_path, capsys):
    four, two = _write(tmp_path, "four.yaml", FOUR), _write(tmp_path, "two.yaml", TWO)
    good = ROOT / "scenarios" / "homogeneous-8.yaml"
    assert run(["validate", str(four), str(good), str(two)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    expected = [(four, f) for f in FOUR_FIELDS] + [(two, f) for f in TWO_FIELDS]
    assert len(lines) == len(expected)
    for line, (path, field) in zip(lines, expected):
        assert line.startswith(f"asyncsim: error: {path}: {field}: "), line
    assert f"ok  {good}" in out and "four.yaml" not in out


def test_validate_json_carries_the_problems(tmp_path, capsys):
    four = _write(tmp_path, "four.yaml", FOUR)
    assert run(["validate", str(four), "--json"]) == 2
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] is False and len(d["files"][0]["problems"]) == 4
    assert d["files"][0]["error"].startswith(d["files"][0]["problems"][0])


def test_a_file_with_one_problem_is_one_line(tmp_path, capsys):
    p = _write(tmp_path, "one.yaml", "workers: [{count: 2, compute: {dist: constant, value: 1}}]\nstop: {}\n")
    assert run(["validate", str(p)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "stop" in lines[0] and "more problem" not in lines[0]
