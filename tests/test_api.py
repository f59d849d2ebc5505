"""The public Python API: typed and documented signatures, short reprs, a cheap import."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import asyncsim

ROOT = Path(__file__).resolve().parent.parent
SCEN = ROOT / "scenarios" / "homogeneous-8.yaml"


@pytest.mark.parametrize("fn", [asyncsim.simulate, asyncsim.load_scenario, asyncsim.keep_freed_memory])
def test_entry_points_are_typed_and_document_every_parameter(fn):
    # the annotations resolve (Scenario and Trace are imported lazily, so name them here)
    names = {**fn.__globals__, "Scenario": asyncsim.Scenario, "Trace": asyncsim.Trace}
    sig = inspect.signature(fn, eval_str=True, globals=names)
    assert sig.return_annotation is not inspect.Signature.empty, fn.__name__
    doc = inspect.getdoc(fn)
    assert "See :mod:" not in doc and len(doc.split()) > 15  # says what it does, not where to look
    for name, p in sig.parameters.items():
        assert p.annotation is not inspect.Parameter.empty, f"{fn.__name__}({name}) has no type"
        assert f"``{name}``" in doc, f"{fn.__name__}'s docstring does not explain {name}"


def test_the_wrapper_passes_every_argument_through():
    from asyncsim.engine import simulate as engine_simulate

    outer = set(inspect.signature(asyncsim.simulate).parameters)
    assert outer == set(inspect.signature(engine_simulate).parameters)
    seen = []
    tr = asyncsim.simulate(str(SCEN), updates=30, seed=4, engine="simpy", progress=seen.append)
    ref = engine_simulate(str(SCEN), updates=30, seed=4, engine="heap")
    assert tr.n_updates == 30 and tr.seed == 4 and seen[-1] == 1.0
    assert np.array_equal(tr.t_applied, ref.t_applied, equal_nan=True)


def test_short_reprs():
    sc = asyncsim.load_scenario(SCEN)
    assert repr(sc) == ("Scenario(name='homogeneous-8', workers=8, policy='async', network='star', "
                        "stop=(updates=20000), seed=1)")
    tr = asyncsim.simulate(sc, updates=3000)
    assert len(repr(tr)) < 120 and "updates=3000" in repr(tr)
    from asyncsim.train import replay

    res = replay(tr, dataset="quadratic", lr=0.05, sharpness=1.0, dim=3, log_every=1)
    r = repr(res)
    assert res.loss.size == 3001 and len(r) < 500, r  # the generated repr printed all 3 x 3001 numbers
    assert "loss=array(shape=(3001,), dtype=float64)" in r and f"final_loss={res.final_loss:.6g}" in r
    from asyncsim.stability import analyze

    rep = analyze(tr)
    assert len(repr(rep)) < 300 and f"'trace': {rep.alpha_star['trace']:.6g}" in repr(rep)


def test_short_repr_helper():
    from asyncsim._repr import short

    assert short(np.zeros((4, 5))) == "array(shape=(4, 5), dtype=float64)"
    assert short(list(range(100))) == "[0, 1, 2, 3, 4, 5, ... 100 items]"
    assert short((1,)) == "(1,)" and short(np.float64(1 / 3)) == "0.333333"
    assert len(short("x" * 500)) == 80


def test_import_is_lazy_and_complete():
    probe = ("import sys, asyncsim\nheavy = [m for m in ('numpy', 'pydantic', 'yaml') if m in sys.modules]\n"
             "t = asyncsim.Trace\nprint(heavy, t.__module__, 'numpy' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "asyncsim.trace", "True"]
    for name in asyncsim.__all__:
        assert getattr(asyncsim, name) is not None and name in dir(asyncsim)
    assert asyncsim.Trace is __import__("asyncsim.trace").trace.Trace
    with pytest.raises(AttributeError):
        asyncsim.no_such_name  # noqa: B018


def test_analysis_and_training_entry_points_are_typed():
    from asyncsim.stability import analyze
    from asyncsim.train import replay

    for fn in (analyze, replay):
        sig = inspect.signature(fn)
        assert sig.return_annotation is not inspect.Signature.empty
        assert [n for n, p in sig.parameters.items() if p.annotation is inspect.Parameter.empty] == [], fn.__name__
        assert inspect.getdoc(fn)


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.name)
def test_to_yaml_round_trips(path):
    sc = asyncsim.load_scenario(path)
    assert asyncsim.load_scenario(sc.to_yaml()) == sc
