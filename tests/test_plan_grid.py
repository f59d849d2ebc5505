"""`asyncsim plan` grid: --vary parsing, plan files, policy defaults, point keys, bad input -> exit 2."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from asyncsim.cli import run
from asyncsim.errors import InputError, ScenarioError
from asyncsim.plan.grid import (PlanSpec, expand, load_plan_file, parse_policies, parse_value, parse_vary,
                                policy_defaults, scenario_from_plan, split_train)
from asyncsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
H8 = ROOT / "scenarios" / "homogeneous-8.yaml"


def base():
    return load_scenario(H8)


# ------------------------------------------------------------------ parsing
def test_parse_vary_reads_yaml_scalars():
    assert parse_vary("workers.0.count=4,8,16") == ("workers.0.count", [4, 8, 16])
    k, v = parse_vary("network.bandwidth_gbps=1,2.5,1e-3,1.0e2")
    assert k == "network.bandwidth_gbps" and v == [1, 2.5, 0.001, 100.0]
    assert [type(x) for x in v] == [int, float, float, float]
    assert parse_vary("network.topology=star, two_tier") == ("network.topology", ["star", "two_tier"])
    assert parse_value("true") is True


@pytest.mark.parametrize("spec", ["workers.0.count", "=1,2", "workers..count=1", "workers.0.count=",
                                  "workers.0.count=1,,2", "workers.0.count=1,1", "workers.0.count=[1]",
                                  "workers.0.count=.nan", "policy.kind=async,sync", "seed=1,2"])
def test_parse_vary_rejects(spec):
    with pytest.raises(InputError):
        parse_vary(spec)


def test_policies_always_include_sync_and_default_to_the_scenarios():
    assert parse_policies(None, "async") == ["async", "sync"]
    assert parse_policies("backup,async", "async") == ["backup", "async", "sync"]
    assert parse_policies(["sync", "sync"], "ssp") == ["sync"]
    with pytest.raises(InputError):
        parse_policies("async,turbo", "async")


def test_split_train():
    assert split_train("teacher/mlp:32") == ("teacher", "mlp:32")
    assert split_train("quadratic") == ("quadratic", None)
    assert split_train("data/my.npz/linear") == ("data/my.npz", "linear")
    assert split_train("data/my.npz") == ("data/my.npz", None)


def test_policy_defaults():
    # backup: N - max(1, N // 10): at least one backup worker, about 10 % of them
    assert [policy_defaults("backup", n)["aggregate"] for n in (1, 2, 8, 10, 20, 100)] == [1, 1, 7, 9, 18, 90]
    assert [policy_defaults("k_async", n)["k"] for n in (1, 2, 7, 8)] == [1, 1, 4, 4]
    assert policy_defaults("ssp", 8) == {"bound": 3}
    assert policy_defaults("async", 8) == {} == policy_defaults("sync", 8)


# ------------------------------------------------------------------ expansion
def test_baseline_default_and_choice():
    assert PlanSpec(base(), updates=10).baseline == "allreduce"          # with a network
    assert PlanSpec(base(), updates=10, baseline="sync").policies[-1] == "sync"
    nonet = {k: v for k, v in base().to_dict().items() if k != "network"}
    assert PlanSpec(load_scenario(nonet), updates=10).baseline == "sync"
    with pytest.raises(InputError, match="--baseline"):
        PlanSpec(base(), updates=10, baseline="ps")


def test_expand_is_the_product_of_vary_lists_and_policies():
    plan = PlanSpec(base(), vary=[("workers.0.count", [4, 16]), ("network.bandwidth_gbps", [1, 25.0])],
                    policies=["async", "backup"], updates=100, seed=5)
    pts = expand(plan)
    assert len(pts) == 2 * 2 * 3
    combos = list(itertools.product([4, 16], [1, 25.0]))
    for gi, (n, bw) in enumerate(combos):
        here = [p for p in pts if p.index == gi]
        # the scenario has a network: the default baseline is S-SGD through all-reduce
        assert [p.policy for p in here] == ["async", "backup", "allreduce"]
        for p in here:
            sc = p.task.scenario
            assert p.values == {"workers.0.count": n, "network.bandwidth_gbps": bw}
            assert sc["workers"][0]["count"] == n == p.n_workers
            assert sc["network"]["bandwidth_gbps"] == bw
            assert sc["policy"]["kind"] == p.policy
            assert sc["stop"] == {"updates": 100}
            assert sc["seed"] == 5                      # one seed for every point and policy
            assert p.task.settings["seed"] == 5
            if p.policy == "backup":
                assert sc["policy"]["aggregate"] == policy_defaults("backup", n)["aggregate"]
    # every (point, policy) has its own key; keys are stable across expansions
    assert len({p.task.key for p in pts}) == len(pts)
    assert [p.task.key for p in pts] == [p.task.key for p in expand(plan)]


def test_key_ignores_name_but_not_settings():
    p1 = expand(PlanSpec(base(), updates=100))
    p2 = expand(PlanSpec(base().model_copy(update={"name": "other"}), updates=100))
    p3 = expand(PlanSpec(base(), updates=101))
    p4 = expand(PlanSpec(base(), updates=100, base_lr=0.1))
    assert [p.task.key for p in p1] == [p.task.key for p in p2]
    assert not {p.task.key for p in p1} & {p.task.key for p in p3}
    assert not {p.task.key for p in p1} & {p.task.key for p in p4}


def test_varied_policy_key_applies_only_to_policies_that_have_it():
    plan = PlanSpec(base(), vary=[("policy.aggregate", [5, 6])], policies=["backup", "async"], baseline="sync")
    pts = expand(plan)
    assert [(p.index, p.policy) for p in pts] == [(0, "backup"), (0, "async"), (0, "sync"),
                                                  (1, "backup"), (1, "async"), (1, "sync")]
    assert [p.task.scenario["policy"].get("aggregate") for p in pts] == [5, None, None, 6, None, None]
    # the sync and async rows do not depend on the aggregate: same key, computed once
    assert pts[1].task.key == pts[4].task.key and pts[2].task.key == pts[5].task.key
    assert pts[0].task.key != pts[3].task.key


def test_scenario_policy_parameters_are_kept_and_clipped_to_n():
    sc = base().with_overrides({"policy.kind": "backup", "policy.aggregate": 6})
    pts = expand(PlanSpec(sc, vary=[("workers.0.count", [8, 4])], policies=["backup"]))
    assert [p.task.scenario["policy"] for p in pts if p.policy == "backup"] == \
        [{"kind": "backup", "aggregate": 6}, {"kind": "backup", "aggregate": 4}]


@pytest.mark.parametrize("vary,policies,field", [
    ([("workers.0.cuont", [4])], None, "workers.0.cuont"),
    ([("workers.0.count", ["many"])], None, "workers.0.count"),
    ([("workers.0.count", [0])], None, "workers.0.count"),
    ([("workers.2.count", [4])], None, "workers.2"),
    ([("network.bandwidth_gbps", [-1])], None, "network.bandwidth_gbps"),
    ([("policy.aggregate", [3])], ["async"], "policy.aggregate"),
    ([("policy.aggregate", [9])], ["backup"], "policy.aggregate"),
    ([("nonsense", [1])], None, "nonsense"),
])
def test_bad_points_raise_scenario_errors_naming_the_field(vary, policies, field):
    with pytest.raises(ScenarioError) as ei:
        expand(PlanSpec(base(), scenario_source="h8.yaml", vary=vary, policies=policies))
    assert ei.value.field == field
    assert "\n" not in str(ei.value)


# ------------------------------------------------------------------ plan files
def test_plan_file_expands_like_the_command_line(tmp_path):
    pf = tmp_path / "plan.yaml"
    pf.write_text(
        f"scenario: {H8}\n"
        "vary:\n  workers.0.count: [4, 8]\n  network.bandwidth_gbps: '10,25'\n"
        "policies: [async, k_async]\nupdates: 50\nseed: 3\nbase_lr: 0.2\n"
        "train: {dataset: quadratic, target: 0.01, steps: 20}\n")
    data, here = load_plan_file(pf)
    sc, src = scenario_from_plan(data, here, str(pf))
    assert data["vary"] == [("workers.0.count", [4, 8]), ("network.bandwidth_gbps", [10, 25])]
    assert data["train"] == "quadratic" and data["target"] == 0.01 and data["steps"] == 20
    from_file = PlanSpec(sc, scenario_source=src, vary=data["vary"], policies=data["policies"],
                         updates=data["updates"], seed=data["seed"], base_lr=data["base_lr"],
                         train=data["train"], target=data["target"], steps=data["steps"])
    from_cli = PlanSpec(load_scenario(H8), vary=[parse_vary("workers.0.count=4,8"),
                                                  parse_vary("network.bandwidth_gbps=10,25")],
                        policies="async,k_async", updates=50, seed=3, base_lr=0.2, train="quadratic",
                        target=0.01, steps=20)
    assert [p.task.key for p in expand(from_file)] == [p.task.key for p in expand(from_cli)]
    assert len(expand(from_file)) == 2 * 2 * 3


def test_plan_file_relative_and_inline_scenarios(tmp_path):
    (tmp_path / "sc.yaml").write_text(H8.read_text())
    pf = tmp_path / "p.yaml"
    pf.write_text("scenario: sc.yaml\nvary: {workers.0.count: [2]}\n")
    data, here = load_plan_file(pf)
    assert scenario_from_plan(data, here, str(pf))[0].n_workers == 8
    pf.write_text("scenario: {workers: [{count: 3, compute: {dist: exponential, mean: 1}}]}\n")
    data, here = load_plan_file(pf)
    assert scenario_from_plan(data, here, str(pf))[0].n_workers == 3


@pytest.mark.parametrize("text", ["- a\n- b\n", "vary: {x: [1]}\n", f"scenario: {H8}\nvray: {{}}\n",
                                  f"scenario: {H8}\nvary: [1, 2]\n", f"scenario: {H8}\nvary: {{a.b: [[1]]}}\n",
                                  "scenario: [unclosed\n"])
def test_bad_plan_files(tmp_path, text):
    pf = tmp_path / "p.yaml"
    pf.write_text(text)
    with pytest.raises(InputError):
        load_plan_file(pf)


# ------------------------------------------------------------------ command line: bad input -> one line, exit 2
@pytest.mark.parametrize("args", [
    ["--vary", "workers.0.cuont=4,8"],
    ["--vary", "workers.0.count=4,abc"],
    ["--vary", "workers.5.count=4"],
    ["--vary", "policy.aggregate=2,3"],
    ["--vary", "policy.aggregate=2,9", "--policies", "backup"],
    ["--vary", "workers.0.count"],
    ["--policies", "async,bogus"],
    ["--backend", "nope"],
    ["--train", "quadratic"],
    ["--base-lr", "0.1", "--sharpness", "2"],
    ["--base-lr", "-1"],
])
def test_cli_bad_input_is_one_line_exit_2(capsys, tmp_path, args):
    rc = run(["plan", str(H8), "--out", str(tmp_path / "o"), "--json", *args])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("asyncsim: error") and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing was started


def test_cli_bad_plan_file_exit_2(capsys, tmp_path):
    pf = tmp_path / "p.yaml"
    pf.write_text(f"scenario: {H8}\nvary: {{workers.0.count: [4, 0]}}\n")
    assert run(["plan", "--plan", str(pf), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "workers.0.count" in err
    assert run(["plan", "--plan", str(tmp_path / "missing.yaml")]) == 2


def test_ray_backend_without_ray_is_one_line_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    rc = run(["plan", str(H8), "--backend", "ray", "--updates", "10", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "pip install 'asyncsim[ray]'" in err


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "nonsense"])
def test_unreachable_ray_address_fails_fast(capsys, tmp_path, address):
    pytest.importorskip("ray", reason="ray is not installed (the missing-ray case is tested above)")
    rc = run(["plan", str(H8), "--backend", "ray", "--ray-address", address, "--updates", "10",
              "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--ray-address" in err


def test_command_line_overrides_the_plan_file(tmp_path):
    from asyncsim.cli.plan import _build_plan

    pf = tmp_path / "p.yaml"
    pf.write_text(f"scenario: {H8}\nvary: {{workers.0.count: [4, 8], network.bandwidth_gbps: [10]}}\n"
                  "sharpness: 2\nupdates: 50\nbackend: serial\nout: res\n")
    cli = {"vary": ["workers.0.count=2,3"], "base_lr": 0.1, "updates": None, "backend": None, "out": None,
           "policies": "async,ssp"}
    plan, backend, address, workers, out = _build_plan(None, pf, cli)
    assert plan.vary == [("network.bandwidth_gbps", [10]), ("workers.0.count", [2, 3])]
    assert plan.base_lr == 0.1 and plan.sharpness is None and plan.updates == 50
    assert plan.policies == ["async", "ssp", "allreduce"]   # a network: the all-reduce baseline
    assert backend == "serial" and out == str(tmp_path / "res")
    pf.write_text(f"scenario: {H8}\nupdates: lots\n")
    with pytest.raises(InputError):
        _build_plan(None, pf, {"vary": None})
