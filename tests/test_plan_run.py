"""`asyncsim plan` end to end: known speed-ups, common random numbers, backends agree,
kill-and-resume, Ctrl-C, and the report.

These run the real pipeline (engine → stability → trainer) on tiny grids."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

import asyncsim
from asyncsim.cli import run
from asyncsim.errors import InputError
from asyncsim.plan import LocalBackend, PlanSpec, RayBackend, SerialBackend, expand, read_table, run_plan
from asyncsim.rng import BlockSampler, Streams
from asyncsim.scenario import load_scenario

# exponential compute, no network, instantaneous apply: the textbook A-SGD/S-SGD cluster
EXP = {"name": "exp-nonet", "seed": 11, "workers": [{"count": 8, "compute": {"dist": "exponential", "mean": 1.0}}],
       "policy": {"kind": "async"}, "stop": {"updates": 1000}, "cost_per_worker_hour": 1.5}


@pytest.fixture
def exp_yaml(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(EXP))
    return p


# ------------------------------------------------------------------ known answer
def test_async_is_H_N_times_sync_per_gradient():
    """N exponential(m) workers, no network. A-SGD applies each gradient on arrival: N superposed
    Poisson streams, N/m updates/s. S-SGD waits for the slowest: E[max of N Exp(m)] = m·H_N, so
    1/(m·H_N) updates/s of N gradients each. Hence A-SGD's *gradient* rate is H_N times S-SGD's
    (its update rate N·H_N times). Tolerances: 4.5 standard deviations of a rate estimated from U
    renewal cycles (relative sd = cycle cv / √U)."""
    U = 5000
    # the mean-square criterion is skipped: it costs seconds per point and is not under test here
    plan = PlanSpec(load_scenario(EXP), vary=[("workers.0.count", [2, 8])], policies=["async"], updates=U,
                    seed=3, criteria="mean,trace")
    res = run_plan(plan, _tmp("hn"), SerialBackend(), report=False)
    rows = {(r["workers.0.count"], r["policy"]): r for r in res.rows}
    for n in (2, 8):
        a, s = rows[(n, "async")], rows[(n, "sync")]
        h = sum(1 / k for k in range(1, n + 1))
        var_max = sum(1 / k ** 2 for k in range(1, n + 1))       # Var[max of n Exp(1)] = Σ 1/k²
        # cycle cv: A-SGD inter-update times are Exp (cv 1); S-SGD's are max of N Exp (cv √var_max / H_N)
        sd_a, sd_s = 1 / math.sqrt(U), math.sqrt(var_max) / h / math.sqrt(U)
        assert abs(a["update_rate"] / n - 1) < 4.5 * sd_a, a["update_rate"]
        assert abs(s["update_rate"] * h - 1) < 4.5 * sd_s, s["update_rate"]
        # the two estimates share compute draws (positively correlated), so hypot() is conservative
        ratio = a["gradient_rate"] / s["gradient_rate"]
        sd_r = math.hypot(sd_a, sd_s)
        assert abs(ratio / h - 1) < 4.5 * sd_r, (n, ratio, h)
        # the throughput speed-up compares gradient rates (one S-SGD update averages N gradients)
        assert a["baseline"] == "sync"
        assert a["speedup_throughput"] == pytest.approx(ratio, rel=1e-12)
        assert s["speedup_throughput"] == 1.0
        assert a["staleness_mean"] > 0 and s["staleness_mean"] == 0
        for k in ("alpha_star_mean", "alpha_star_trace"):
            assert s[k] == pytest.approx(2.0, rel=1e-3)  # τ = 0: plain GD's edge
            assert 0 < a[k]
        assert math.isnan(a["alpha_star_mean_square"]) and a["criterion"] in ("mean", "trace")


_TMP = []


def _tmp(name):
    import tempfile

    d = Path(tempfile.mkdtemp(prefix=f"plan-{name}-"))
    _TMP.append(d)
    return d


def teardown_module(module):
    for d in _TMP:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ common random numbers
def _durations(trace, worker, k):
    c = trace.columns
    rows = np.flatnonzero(c["worker"] == worker)
    rows = rows[np.argsort(c["t_read"][rows], kind="stable")][:k]
    return c["t_done"][rows] - c["t_read"][rows]


def test_all_policies_at_a_point_share_the_compute_draws():
    """Every policy at a grid point gets the same seed, so worker i's j-th gradient takes the
    same compute time under each policy (only the waiting differs). Checked against the
    draws made directly from worker i's stream, and across cluster sizes (streams are keyed
    by worker index, so adding workers does not shift them)."""
    plan = PlanSpec(load_scenario(EXP), vary=[("workers.0.count", [4, 8])],
                    policies=["async", "k_async", "round_robin"], updates=200, seed=21)
    pts = expand(plan)
    assert {p.task.settings["seed"] for p in pts} == {21}
    assert {p.task.scenario["seed"] for p in pts} == {21}
    k = 10
    dist = load_scenario(EXP).workers[0].compute
    for w in (0, 3):
        smp = BlockSampler(dist, Streams(21).worker(w, "compute"))
        expected = np.array([smp.next() for _ in range(k)])
        for p in pts:
            tr = asyncsim.simulate(load_scenario(p.task.scenario), seed=p.task.settings["seed"])
            np.testing.assert_allclose(_durations(tr, w, k), expected, rtol=1e-9, atol=1e-9,
                                       err_msg=f"{p.policy} N={p.n_workers} worker {w}")


# ------------------------------------------------------------------ backends
def test_serial_local_and_ray_backends_give_identical_tables():
    plan = PlanSpec(load_scenario(EXP), vary=[("workers.0.count", [2, 3])], policies=["async"], updates=200,
                    seed=4, base_lr=0.5)
    serial = run_plan(plan, _tmp("serial"), SerialBackend(), report=False).rows
    local = run_plan(plan, _tmp("local"), LocalBackend(2), report=False).rows
    assert len(serial) == 4
    assert _same(serial, local)
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("ray is not installed (pip install 'asyncsim[ray]'); serial and local pool agreed")
    ray_rows = run_plan(plan, _tmp("ray"), RayBackend(None, num_cpus=2), report=False).rows
    assert _same(serial, ray_rows)


def _same(a, b):
    """Row-by-row equality with NaN == NaN."""
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        if set(ra) != set(rb):
            return False
        for k in ra:
            x, y = ra[k], rb[k]
            if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
                continue
            if x != y:
                return False
    return True


# ------------------------------------------------------------------ kill, Ctrl-C, resume
CLI = [sys.executable, "-c", "from asyncsim.cli import main; main()"]


def _points(out):
    d = out / "points"
    # (pathlib's glob also matches hidden names: skip the temporary files of atomic writes)
    return {p.name: p.stat().st_mtime_ns for p in d.glob("*.json") if not p.name.startswith(".")} \
        if d.is_dir() else {}


def _default_sigint() -> None:
    # a test run started in the background of a non-interactive shell inherits SIGINT ignored,
    # and Python then installs no KeyboardInterrupt handler: give the plan the usual disposition
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args):
    return subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=_default_sigint)


def _wait_for(proc, out, n, timeout=90):
    t0 = time.monotonic()
    while len(_points(out)) < n:
        assert proc.poll() is None, f"the plan ended before {n} points were saved: {proc.communicate()}"
        assert time.monotonic() - t0 < timeout, "timed out waiting for point files"
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_and_sigkill_then_resume_gives_one_row_per_point(exp_yaml, tmp_path):
    out = tmp_path / "out"
    counts = "2,3,4,5,6,7,8,9"
    # Points must be slow enough that the signals land mid-run even on an idle machine: the SimPy
    # reference engine and 10^5 updates make each point take ~0.5-3 s.
    args = ["plan", str(exp_yaml), "--vary", f"workers.0.count={counts}", "--updates", "100000", "--jobs", "2",
            "--engine", "simpy", "--out", str(out), "--json", "--no-report", "--criterion", "mean,trace"]
    n_tasks = 8 * 2
    # 1. Ctrl-C (SIGINT to the driver, as a terminal sends it): stops cleanly, points kept
    p = _start(args)
    _wait_for(p, out, 2)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopped:" in stderr
    assert stdout == ""
    after_int = _points(out)
    assert 2 <= len(after_int) < n_tasks
    # 2. SIGKILL of the whole process group mid-way
    p = _start(args)
    _wait_for(p, out, len(after_int) + 2)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate(timeout=30)
    after_kill = _points(out)
    assert len(after_kill) < n_tasks, "the run finished before it was killed; make the points slower"
    assert all(after_kill[k] == v for k, v in after_int.items())   # earlier points untouched
    assert not (out / "results.parquet").exists()
    for name in after_kill:
        json.loads((out / "points" / name).read_text())            # every saved point is whole
    # 3. rerun: computes only the rest
    p = subprocess.run(CLI + args, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["skipped"] == len(after_kill) and res["computed"] == n_tasks - len(after_kill)
    final = _points(out)
    assert len(final) == n_tasks
    assert all(final[k] == v for k, v in after_kill.items())       # finished points not recomputed
    assert not list((out / "points").glob(".*"))                  # no temporary files left
    rows = read_table(out / "results.parquet")
    keys = [(r["workers.0.count"], r["policy"]) for r in rows]
    assert len(rows) == n_tasks and len(set(keys)) == n_tasks
    assert set(keys) == {(n, pol) for n in range(2, 10) for pol in ("async", "sync")}
    assert {r["key"] + ".json" for r in rows} == set(final)


# ------------------------------------------------------------------ report
class _Report(HTMLParser):
    def __init__(self):
        super().__init__()
        self.h2 = []
        self.imgs = []
        self.tbody_rows = 0
        self._in_tbody = False
        self.text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "h2":
            self.h2.append(a.get("id"))
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody:
            self.tbody_rows += 1

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_tbody = False

    def handle_data(self, data):
        self.text.append(data)


def test_report_has_every_section(exp_yaml, tmp_path, capsys):
    import base64

    out = tmp_path / "rep"
    rc = run(["plan", str(exp_yaml), "--vary", "workers.0.count=2,3", "--policies", "async,backup",
              "--updates", "300", "--sharpness", "1", "--train", "quadratic", "--target", "1e-4",
              "--jobs", "1", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    res = json.loads(captured.out)
    assert res["n_rows"] == 6
    rows = read_table(out / "results.parquet")
    for col in ("workers.0.count", "policy", "update_rate", "gradient_rate", "time_per_update", "utilisation",
                "staleness_mean", "staleness_p99", "staleness_max", "alpha_star_mean", "alpha_star_mean_square",
                "alpha_star_trace", "lr", "baseline", "speedup_throughput", "time_to_target", "final_loss",
                "speedup_to_target", "cost_to_target"):
        assert col in rows[0], col
    # the recommended lr is lr_fraction (0.5) × α*/a with a = 1 and α* the smallest criterion
    for r in rows:
        a_min = min(r["alpha_star_mean"], r["alpha_star_mean_square"], r["alpha_star_trace"])
        assert r["lr"] == pytest.approx(0.5 * a_min, rel=1e-9)
    html_text = (out / "report.html").read_text()
    rep = _Report()
    rep.feed(html_text)
    assert rep.h2 == ["loss", "vs-parameter", "pareto", "table", "warnings"]
    assert len(rep.imgs) == 3
    for src in rep.imgs:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert rep.tbody_rows == 6
    assert "http" not in html_text.replace("https://", "").split("<body>")[0]  # nothing fetched from outside
    md = (out / "report.md").read_text()
    for sec in ("## Loss vs simulated wall-clock", "## Speed, staleness", "## Pareto front", "## Results table",
                "## Stability criteria warnings"):
        assert sec in md
    for name in ("loss", "vs-parameter", "pareto"):
        assert f"figures/{name}.png" in md and (out / "figures" / f"{name}.png").stat().st_size > 5000
    assert md.count("\n| ") >= 7  # header + 6 rows


def test_plan_warns_about_a_varied_key_that_does_nothing(tmp_path):
    """A bandwidth varied on a scenario without a model: transfers take no time, every row is
    the same; a bandwidth with a model changes the rates and is not flagged."""
    base = {"name": "w", "seed": 1, "workers": [{"count": 3, "compute": {"dist": "exponential", "mean": 0.1}}],
            "network": {"topology": "star", "bandwidth_gbps": 1}}
    plan = PlanSpec(load_scenario(base), vary=[("network.bandwidth_gbps", [1, 10])], policies=["async"],
                    updates=200, criteria="mean", baseline="sync")
    res = run_plan(plan, tmp_path / "a", SerialBackend(), report=False)
    assert len(res.warnings) == 1 and "network.bandwidth_gbps" in res.warnings[0]
    assert json.loads((tmp_path / "a" / "plan.json").read_text())["warnings"] == res.warnings
    with_model = {**base, "model": {"parameters": 5_000_000}}
    plan = PlanSpec(load_scenario(with_model), vary=[("network.bandwidth_gbps", [1, 10])], policies=["async"],
                    updates=200, criteria="mean", baseline="sync")
    assert run_plan(plan, tmp_path / "b", SerialBackend(), report=False).warnings == []


def test_deadline_and_budget_pick_the_rows_that_answer_them(tmp_path, capsys):
    priced = {**EXP, "currency": "EUR", "workers": [{**EXP["workers"][0], "cost_per_hour": 3.0}]}
    p = tmp_path / "priced.yaml"
    p.write_text(yaml.safe_dump(priced))
    out = tmp_path / "dl"
    rc = run(["plan", str(p), "--vary", "workers.0.count=2,4,6", "--policies", "async", "--updates", "300",
              "--sharpness", "1", "--train", "quadratic", "--target", "1e-3", "--criterion", "mean",
              "--deadline", "1e9", "--budget", "1e9", "--jobs", "1", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    res = json.loads(captured.out)
    rows = [r for r in read_table(out / "results.parquet") if math.isfinite(r["time_to_target"])]
    assert rows
    for r in rows:  # per-group price x count x hours
        assert r["cost_to_target"] == pytest.approx(3.0 * r["n_workers"] * r["time_to_target"] / 3600, rel=1e-12)
    cheapest = min(rows, key=lambda r: (r["cost_to_target"], r["time_to_target"]))
    fastest = min(rows, key=lambda r: (r["time_to_target"], r["cost_to_target"]))
    d = res["decision"]
    assert (d["cheapest_within_deadline"]["workers.0.count"], d["cheapest_within_deadline"]["policy"]) == \
        (cheapest["workers.0.count"], cheapest["policy"])
    assert (d["fastest_within_budget"]["workers.0.count"], d["fastest_within_budget"]["policy"]) == \
        (fastest["workers.0.count"], fastest["policy"])
    assert "EUR" in (out / "report.md").read_text()


@pytest.mark.parametrize("args,needle", [
    (["--deadline", "-1", "--train", "quadratic", "--target", "1e-3"], "--deadline"),
    (["--deadline", "10"], "--train"),
    (["--budget", "10", "--train", "quadratic", "--target", "1e-3"], "prices"),
])
def test_deadline_and_budget_bad_input(tmp_path, capsys, args, needle):
    p = tmp_path / "unpriced.yaml"
    p.write_text(yaml.safe_dump({k: v for k, v in EXP.items() if k != "cost_per_worker_hour"}))
    assert run(["plan", str(p), "--updates", "50", "--out", str(tmp_path / "x")] + args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


def test_terminal_table_fits_80_columns():
    from rich.console import Console

    from asyncsim.cli.plan import plan_table

    plan = PlanSpec(load_scenario({**EXP, "network": {"topology": "star", "bandwidth_gbps": 10},
                                   "model": {"parameters": 1_000_000}}),
                    vary=[("workers.0.count", [2, 3]), ("network.server_bandwidth_gbps", [10, 40])],
                    policies=["async", "k_async"], updates=100, sharpness=1.0, train="quadratic", target=1e-3,
                    criteria="mean")
    res = run_plan(plan, _tmp("narrow"), SerialBackend(), report=False)
    con = Console(width=80, record=True, highlight=False)
    table, note = plan_table(res, plan, 80)
    con.print(table)
    text = con.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text                         # nothing cut
    assert "workers" in text and "server link" in text and "×AR grad" in text
    assert "allreduce" in note


def test_a_script_without_the_main_guard_gets_one_line(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(
        "import asyncsim\nfrom asyncsim.plan import PlanSpec, run_plan, make_backend\n"
        f"plan = PlanSpec(asyncsim.load_scenario({EXP!r}), vary=[('workers.0.count', [2, 3])], "
        "policies=['async'], updates=50, criteria='mean')\n"
        f"run_plan(plan, {str(tmp_path / 'o')!r}, make_backend('local', workers=2), report=False)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert 'if __name__ == "__main__":' in proc.stderr.strip().splitlines()[-1]


def test_html_table_leads_with_the_decision_columns_and_sorts(tmp_path):
    from asyncsim.plan.report import DECISION_COLUMNS

    plan = PlanSpec(load_scenario(EXP), vary=[("workers.0.count", [2, 3])], policies=["async"], updates=100,
                    sharpness=1.0, criteria="mean")
    run_plan(plan, tmp_path / "h", SerialBackend(), report=True)
    page = (tmp_path / "h" / "report.html").read_text()
    table = page[page.index("<table id='results'>"):]
    heads = [h.split("'")[1] for h in table.split("<th title=")[1:]]
    present = [c for c in DECISION_COLUMNS if c in heads]
    assert heads[:1 + len(present)] == ["workers.0.count"] + present
    assert "onclick='sortBy(this)'" in table and "function sortBy" in page and "http" not in table


def test_cli_prints_the_table_warnings_and_decisions(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({**EXP, "network": {"topology": "star", "bandwidth_gbps": 10}}))
    rc = run(["plan", str(p), "--vary", "network.bandwidth_gbps=1,10", "--policies", "async", "--updates", "60",
              "--sharpness", "1", "--train", "quadratic", "--target", "1e-3", "--criterion", "mean",
              "--deadline", "1e9", "--jobs", "1", "--no-report", "--out", str(tmp_path / "o")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "async" in out.out and "allreduce" in out.out
    assert "changed nothing" in out.out            # no model: the bandwidth does nothing
    assert "cheapest within the" in out.out


def test_until_target_gives_the_full_replays_answer_with_shorter_replays(tmp_path):
    base = dict(vary=[("workers.0.count", [2, 4])], policies=["async"], time=80.0, sharpness=1.0,
                train="quadratic", target=1e-2, criteria="mean")
    full = run_plan(PlanSpec(load_scenario(EXP), **base), tmp_path / "f", SerialBackend(), report=False)
    short = run_plan(PlanSpec(load_scenario(EXP), until_target=True, **base), tmp_path / "s", SerialBackend(),
                     report=False)
    reached = 0
    for a, b in zip(full.rows, short.rows):
        assert a["policy"] == b["policy"]
        if math.isfinite(a["time_to_target"]):
            reached += 1
            # the same target crossing, found on a prefix (log resolution: a prefix logs more often)
            assert b["time_to_target"] <= a["time_to_target"] + 1e-12
            assert b["time_to_target"] >= a["time_to_target"] - 0.05 * 80.0
    assert reached
    with pytest.raises(InputError, match="--time"):
        PlanSpec(load_scenario(EXP), until_target=True, updates=10, train="quadratic", target=1e-2)


def test_rows_carry_the_alpha_star_interval_and_the_table_shows_it(tmp_path):
    plan = PlanSpec(load_scenario(EXP), vary=[("workers.0.count", [4])], policies=["async"], updates=3000,
                    sharpness=1.0, criteria="trace", baseline="sync")
    res = run_plan(plan, tmp_path / "ci", SerialBackend(), report=False)
    a = next(r for r in res.rows if r["policy"] == "async")
    assert a["alpha_star_lo"] < a["alpha_star"] < a["alpha_star_hi"]
    assert a["lr_lo"] == pytest.approx(a["lr"] * a["alpha_star_lo"] / a["alpha_star"], rel=1e-12)
    from rich.console import Console

    from asyncsim.cli.plan import plan_table

    con = Console(width=120, record=True)
    con.print(plan_table(res, plan, 120)[0])
    assert "±" in con.export_text()
