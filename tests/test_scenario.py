"""Scenario loading: valid files, a corpus of broken files, and fuzzed mutations.

Every problem must surface as a ScenarioError whose one-line message names the
file and the field path; the command line prints it as one line and exits 2.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncsim
from asyncsim.cli import run
from asyncsim.errors import ScenarioError
from asyncsim.scenario import load_scenario, scenario_json_schema

ROOT = Path(__file__).resolve().parent.parent
BROKEN = sorted((ROOT / "tests" / "data" / "broken").glob("*.yaml"))
BUNDLED = sorted((ROOT / "scenarios").glob("*.yaml"))


def _expected_field(path: Path) -> str | None:
    try:
        first = path.read_text(encoding="utf-8").splitlines()[0]
    except (UnicodeDecodeError, IndexError):
        return None
    return first.split("# expect:", 1)[1].strip() or None if first.startswith("# expect:") else None


def test_corpus_is_large_enough():
    assert len(BROKEN) >= 20


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.name)
def test_broken_file_raises_scenario_error_naming_file_and_field(path):
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "\n" not in msg
    field = _expected_field(path)
    if field:
        assert field in msg, msg


@pytest.mark.parametrize("path", BROKEN[:8], ids=lambda p: p.name)
def test_cli_validate_broken_is_one_line_exit_2(path, capsys):
    code = run(["validate", str(path)])
    captured = capsys.readouterr()
    assert code == 2
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert len(lines) == len(info.value.problems)  # one line per problem
    assert all(ln.startswith("asyncsim: error:") and str(path) in ln for ln in lines)
    assert "Traceback" not in captured.err


def test_cli_simulate_broken_leaves_no_output(tmp_path, capsys):
    out = tmp_path / "t.parquet"
    code = run(["simulate", str(BROKEN[0]), "--out", str(out)])
    assert code == 2
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_bundled_scenarios_validate(path):
    sc = load_scenario(path)
    assert sc.n_workers >= 1
    assert sc.name == path.stem


def test_at_least_six_bundled_scenarios():
    assert len(BUNDLED) >= 6


def test_defaults_and_overrides():
    sc = load_scenario({"workers": [{"count": 3, "compute": {"dist": "constant", "value": 1}}]})
    assert sc.policy.kind == "async" and sc.network is None and sc.model_bytes == 0
    assert sc.stop.updates == 10_000
    sc2 = sc.with_overrides({"workers.0.count": 5, "policy.kind": "backup", "policy.aggregate": 4})
    assert sc2.n_workers == 5 and sc2.policy.aggregate == 4
    assert sc.n_workers == 3  # frozen original untouched
    with pytest.raises(ScenarioError, match="policy.aggregate"):
        sc.with_overrides({"policy.kind": "backup", "policy.aggregate": 9})
    with pytest.raises(ScenarioError, match="workers.4"):
        sc.with_overrides({"workers.4.count": 2})
    with pytest.raises(ScenarioError, match="wrkers"):
        sc.with_overrides({"wrkers.0.count": 2})


def test_seed_override_and_network_default_topology():
    sc = load_scenario(BUNDLED[0], seed=99)
    assert sc.seed == 99
    sc = load_scenario({"workers": [{"count": 2, "compute": {"dist": "constant", "value": 1}}],
                        "network": {"bandwidth_gbps": 1}})
    assert sc.network.topology == "star"


def test_empirical_path_resolved_relative_to_file(tmp_path):
    (tmp_path / "times.csv").write_text("run,seconds\n1,0.5\n2,0.7\n3,0.6\n")
    (tmp_path / "plain.txt").write_text("0.1\n0.2\n# comment\n0.3\n")
    f = tmp_path / "s.yaml"
    f.write_text("workers:\n"
                 "  - {count: 2, compute: {dist: empirical, path: times.csv, column: seconds}}\n"
                 "  - {count: 1, compute: {dist: empirical, path: plain.txt}}\n")
    sc = load_scenario(f)
    assert sc.workers[0].compute.values == (0.5, 0.7, 0.6)
    assert sc.workers[1].compute.values == (0.1, 0.2, 0.3)
    # the resolved scenario inlines the values, so a trace's metadata reproduces it alone
    assert load_scenario(sc.to_dict()).workers[0].compute.values == (0.5, 0.7, 0.6)


def test_json_schema_has_core_fields():
    schema = scenario_json_schema()
    for key in ("workers", "network", "model", "server", "policy", "stop", "seed"):
        assert key in schema["properties"]
    assert run(["schema"]) == 0


# ----------------------------------------------------------------- fuzzing
VALID = [yaml.safe_load(p.read_text()) for p in BUNDLED]
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from(["exponential", "async", "star", "-1", "1e400", "", "nan"]),
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated(draw):
    data = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        parent = data
        for k in path[:-1]:
            parent = parent[k]
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if op == "replace":
            parent[path[-1]] = draw(JUNK)
        elif op == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=6))] = draw(JUNK)
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_scenarios_only_raise_scenario_error(data):
    try:
        sc = load_scenario(data)
    except ScenarioError as exc:
        assert "\n" not in str(exc)
    else:
        assert sc.n_workers >= 1


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_scenario_error(text):
    try:
        load_scenario(text + "\n")
    except ScenarioError:
        pass


def test_api_reexports():
    assert asyncsim.load_scenario is not None and asyncsim.ScenarioError is ScenarioError
