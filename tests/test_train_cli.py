"""``asyncsim train``, ``sharpness`` and ``threshold`` on the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from _traces import async_exponential, constant_delay  # noqa: E402

from asyncsim.cli import run  # noqa: E402


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("traces")
    a = async_exponential(4, 300, seed=1).save(d / "async.parquet")
    c = constant_delay(2, 3000).save(d / "const.npz")
    return {"async": a, "const": c}


def run_json(capsys, argv):
    code = run(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1  # --json: exactly one object on stdout
    return json.loads(lines[0]), err


def test_train_json_writes_metrics_and_plot(capsys, traces, tmp_path):
    d, _ = run_json(capsys, ["train", "--trace", str(traces["async"]), "--dataset", "digits", "--model",
                             "mlp:16", "--lr", "0.1", "--optimizer", "momentum", "--momentum", "0.5",
                             "--steps", "200", "--out", str(tmp_path / "o"), "--json", "--device", "cpu",
                             "--log-every", "10"])
    assert d["diverged"] is False and d["steps"] == 200 and d["final_loss"] < d["initial_loss"]
    assert 0 <= d["val_accuracy"] <= 1 and d["val_loss"] > 0
    csv = (tmp_path / "o" / "metrics.csv").read_text().splitlines()
    assert csv[0] == "step,sim_time,loss,batch_loss,val_loss,val_accuracy" and len(csv) == 1 + 21
    last = csv[-1].split(",")
    assert int(last[0]) == 200 and float(last[2]) == pytest.approx(d["final_loss"], rel=1e-12)
    assert csv[1].split(",")[3] == "nan" and 0 < float(last[3]) < 10  # no gradient before update 0
    # the validation curve ends at the reported final validation metrics
    assert float(last[4]) == pytest.approx(d["val_loss"], rel=1e-12)
    assert float(last[5]) == pytest.approx(d["val_accuracy"], rel=1e-12)
    png = (tmp_path / "o" / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert d["metrics"].endswith("metrics.csv") and d["plot"].endswith("loss.png")


def test_train_quadratic_diverges_as_a_result(capsys, traces, tmp_path):
    d, _ = run_json(capsys, ["train", "--trace", str(traces["const"]), "--sharpness", "2", "--lr", "0.5",
                             "--out", str(tmp_path / "q"), "--format", "parquet", "--json"])
    assert d["diverged"] is True and isinstance(d["diverged_step"], int)
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "q" / "metrics.parquet")
    assert t.column_names == ["step", "sim_time", "loss"]


def test_train_human_output(capsys, traces, tmp_path):
    code = run(["train", "--trace", str(traces["const"]), "--sharpness", "2", "--lr", "0.1",
                "--out", str(tmp_path / "h")])
    out, _ = capsys.readouterr()
    assert code == 0 and "final loss" in out and "metrics" in out


@pytest.mark.parametrize("argv", [
    ["train", "--trace", "/nonexistent/t.parquet", "--lr", "0.1"],
    ["train", "--trace", "{async}", "--lr", "-0.1"],
    ["train", "--trace", "{async}", "--lr", "0.1", "--dataset", "imagenet"],
    ["train", "--trace", "{async}", "--lr", "0.1", "--dataset", "digits", "--model", "resnet"],
    ["train", "--trace", "{async}", "--lr", "0.1", "--optimizer", "lamb"],
    ["train", "--trace", "{async}", "--lr", "0.1", "--steps", "100000"],
    ["train", "--lr", "0.1"],
    ["sharpness", "--dataset", "digits", "--model", "mlp:x"],
    ["threshold", "--trace", "/nonexistent.npz"],
    ["train", "--trace", "{async}", "--lr", "0.1", "--sharpness", "1e308"],
    ["threshold", "--trace", "{async}", "--sharpness", "2", "--lrs-per-round", "0"],
    ["threshold", "--trace", "{async}", "--dataset", "digits", "--model", "mlp:4", "--from-minimum",
     "--pretrain-lr", "nan"],
    ["train", "--trace", "{async}", "--lr", "0.1", "--optimizer", "momentum", "--momentum", "0.5",
     "--momentum-init", "first"],
    ["train", "--trace", "{async}", "--lr", "0.1", "--schedule", "linear"],
    ["train", "--trace", "{async}", "--lr", "0.1", "--optimizer", "adam", "--betas", "0.9"],
    ["train", "--trace", "{async}", "--lr", "0.1", "--weight-decay", "-1"],
    ["train", "--trace", "{async}", "--lr", "0.1", "--clip-grad-norm", "0"],
    ["train", "--trace", "{async}", "--lr", "0.1", "--unstable-factor", "0.5"],
])
def test_bad_input_is_one_line_exit_2(capsys, traces, argv):
    argv = [a.replace("{async}", str(traces["async"])) for a in argv]
    code = run(argv)
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("asyncsim: error") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and out == ""


def test_sharpness_json(capsys):
    d, _ = run_json(capsys, ["sharpness", "--dataset", "quadratic", "--sharpness", "4.5", "--dim", "10",
                             "--json"])
    assert d["sharpness"] == pytest.approx(4.5, rel=1e-6) and d["converged"] is True


def test_threshold_json_brackets_closed_form(capsys, traces):
    tau = 2
    astar = 2 * np.sin(np.pi / (4 * tau + 2))
    d, _ = run_json(capsys, ["threshold", "--trace", str(traces["const"]), "--sharpness", "2",
                             "--rtol", "0.01", "--json"])
    assert d["sharpness"] == pytest.approx(2.0)
    # finite (3,000-step) runs put the empirical edge slightly above α* (see test_train_sharpness)
    assert astar * 0.99 <= d["alpha"] <= astar * 1.03
    assert d["alpha_diverged"] >= d["alpha"]
    assert isinstance(d["predictions"], dict)


def test_train_from_scenario_file(capsys, tmp_path):
    sc = tmp_path / "tiny.yaml"
    sc.write_text("name: tiny\nseed: 3\nworkers:\n  - count: 4\n    compute: {dist: exponential, mean: 1.0}\n"
                  "policy: {kind: async}\nstop: {updates: 1000}\n")
    d, _ = run_json(capsys, ["train", str(sc), "--steps", "150", "--dataset", "teacher", "--model", "mlp:8",
                             "--lr", "0.05", "--out", str(tmp_path / "o"), "--json"])
    assert d["steps"] == 150 and d["trace"] == "tiny" and d["diverged"] is False
    assert d["sim_time"] > 0


def test_train_optimizer_flags_match_the_api(capsys, traces, tmp_path):
    from asyncsim.trace import Trace
    from asyncsim.train import replay

    argv = ["train", "--trace", str(traces["async"]), "--dataset", "teacher", "--model", "mlp:8",
            "--optimizer", "adamw", "--weight-decay", "0.05", "--schedule", "warmup:20+cosine",
            "--clip-grad-norm", "1", "--betas", "0.8,0.99", "--lr", "0.01", "--full-batch", "--steps", "100",
            "--device", "cpu", "--out", str(tmp_path / "o"), "--json", "--log-every", "25"]
    d, _ = run_json(capsys, argv)
    r = replay(Trace.load(traces["async"]), dataset="teacher", model="mlp:8", optimizer="adamw",
               weight_decay=0.05, schedule="warmup:20+cosine", clip_grad_norm=1.0, betas=(0.8, 0.99), lr=0.01,
               batch_size=None, steps=100, device="cpu", log_every=25)
    assert d["final_loss"] == pytest.approx(r.final_loss, rel=1e-12)
    assert d["verdict"] == r.verdict == "converged" and d["optimizer"] == "adamw"


def test_train_large_lr_mlp_is_not_reported_fine(capsys, traces, tmp_path):
    # the run: --lr 5 on the MLP. Whatever the trajectory, the verdict names it.
    d, _ = run_json(capsys, ["train", "--trace", str(traces["async"]), "--dataset", "digits", "--model", "mlp:16",
                             "--lr", "5", "--steps", "300", "--device", "cpu", "--out", str(tmp_path / "o"),
                             "--json"])
    assert d["verdict"] in ("unstable", "diverged")
    rows = (tmp_path / "o" / "metrics.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[2]) for r in rows]
    assert max(losses) > 2 * losses[0] or losses[-1] > losses[0] or d["diverged"]


NET_PY = """
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def smooth_ce(out, y):
    return nn.functional.cross_entropy(out, y, label_smoothing=0.1)


not_a_module = 3
"""


def test_train_a_user_module_from_a_file(capsys, traces, tmp_path):
    import importlib.util

    import torch

    from asyncsim.trace import Trace
    from asyncsim.train import replay, sharpness

    f = tmp_path / "net.py"
    f.write_text(NET_PY)
    spec = f"{f}:build"
    d, _ = run_json(capsys, ["train", "--trace", str(traces["async"]), "--dataset", "digits", "--model", spec,
                             "--loss", f"{f}:smooth_ce", "--lr", "0.1", "--steps", "100", "--device", "cpu",
                             "--out", str(tmp_path / "o"), "--json", "--log-every", "20"])
    mod_spec = importlib.util.spec_from_file_location("net_for_test", f)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    net = mod.build()
    r = replay(Trace.load(traces["async"]), dataset="digits", model=net, loss=mod.smooth_ce, lr=0.1, steps=100,
               device="cpu", log_every=20)
    assert d["model"] == "Sequential" and d["dataset"] == "digits"
    assert d["final_loss"] == pytest.approx(r.final_loss, rel=1e-12) and d["final_loss"] < d["initial_loss"]
    assert d["val_accuracy"] == pytest.approx(r.val_accuracy, rel=1e-12)
    d, _ = run_json(capsys, ["sharpness", "--dataset", "digits", "--model", spec, "--loss", "cross_entropy",
                             "--device", "cpu", "--json"])
    want = sharpness("digits", model=mod.build().double(), loss=torch.nn.functional.cross_entropy, device="cpu")
    assert d["sharpness"] == pytest.approx(want, rel=1e-6)
    d, _ = run_json(capsys, ["threshold", "--trace", str(traces["async"]), "--steps", "100", "--dataset", "digits",
                             "--model", spec, "--rtol", "0.2", "--device", "cpu", "--json"])
    assert d["lr"] is not None and d["lr_diverged"] is not None and d["lr"] < d["lr_diverged"]


@pytest.mark.parametrize("model,loss", [("{dir}/missing.py:build", None), ("{dir}/net.py:nothing", None),
                                        ("{dir}/net.py:not_a_module", None), ("{dir}/net.py", None),
                                        ("{dir}/net.py:build", "hinge"), ("{dir}/net.py:build", "{dir}/net.py:x")])
def test_user_module_errors_are_one_line(capsys, traces, tmp_path, model, loss):
    (tmp_path / "net.py").write_text(NET_PY)
    argv = ["train", "--trace", str(traces["async"]), "--dataset", "digits", "--lr", "0.1",
            "--model", model.replace("{dir}", str(tmp_path))]
    if loss:
        argv += ["--loss", loss.replace("{dir}", str(tmp_path))]
    code = run(argv)
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("asyncsim: error") and len(err.strip().splitlines()) == 1, err
