"""Soak test: 1,000 random valid scenarios through validate -> simulate -> stability.

Not part of the default run (marked ``soak``). Run it with::

    python -m pytest tests/test_soak.py -m soak -q        # ~1,000 scenarios, a few minutes
    ASYNCSIM_SOAK_N=200 python -m pytest tests/test_soak.py -m soak -q
    ASYNCSIM_SOAK_STABILITY=0 ...   # simulate only (skip asyncsim.stability.analyze)

Scenarios come from a plain numpy generator with a fixed seed (reproducible
without hypothesis's database): every policy, every topology, random compute
distributions, apply times, both stop kinds and random fault schedules
(scheduled crashes with and without restarts, restarts, slowdowns, link
faults, random crashes; sync with and without a timeout). The only exceptions
allowed are the documented ones (:class:`asyncsim.errors.AsyncsimError`
subclasses); any other exception, a hang (60 s per scenario, SIGALRM) or a
broken accounting invariant fails the test, naming the scenario index so it
can be replayed with :func:`random_scenario`.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import asyncsim
from asyncsim.errors import AsyncsimError

pytestmark = pytest.mark.soak

N_SCENARIOS = int(os.environ.get("ASYNCSIM_SOAK_N", "1000"))
SEED = 20260501


def _dist(r: np.random.Generator) -> dict:
    kind = r.choice(["exponential", "constant", "uniform", "gamma", "lognormal", "empirical", "mixture",
                     "pareto", "normal", "shifted_exponential", "weibull"])
    if kind == "exponential":
        return {"dist": "exponential", "mean": float(r.uniform(0.1, 3.0))}
    if kind == "constant":
        return {"dist": "constant", "value": float(r.choice([0.5, 1.0, 1.25]))}
    if kind == "uniform":
        lo = float(r.uniform(0, 1))
        return {"dist": "uniform", "low": lo, "high": lo + float(r.uniform(0.1, 2))}
    if kind in ("gamma", "lognormal"):
        return {"dist": kind, "mean": float(r.uniform(0.1, 3)), "cv": float(r.uniform(0.1, 2))}
    if kind == "empirical":
        return {"dist": "empirical", "values": [float(x) for x in r.choice([0.5, 1.0, 2.0], size=r.integers(1, 5))]}
    if kind == "mixture":
        return {"dist": "mixture", "components": [{"weight": 0.9, "dist": "exponential", "mean": 1.0},
                                                  {"weight": 0.1, "dist": "constant", "value": 4.0}]}
    if kind == "pareto":
        return {"dist": "pareto", "shape": float(r.uniform(1.1, 3)), "scale": float(r.uniform(0.1, 1))}
    if kind == "normal":
        return {"dist": "normal", "mean": float(r.uniform(0.2, 2)), "std": float(r.uniform(0.1, 2))}
    if kind == "shifted_exponential":
        s = float(r.uniform(0.1, 1))
        return {"dist": "shifted_exponential", "shift": s, "mean": s + float(r.uniform(0.05, 1))}
    return {"dist": "weibull", "shape": float(r.uniform(0.5, 3)), "scale": float(r.uniform(0.2, 2))}


def random_scenario(i: int) -> dict:
    """Scenario number ``i`` of the soak (deterministic in ``i``)."""
    r = np.random.default_rng([SEED, i])
    groups = [{"count": int(r.integers(1, 6)), "compute": _dist(r)} for _ in range(int(r.integers(1, 4)))]
    n = sum(g["count"] for g in groups)
    kind = str(r.choice(["async", "sync", "backup", "k_async", "ssp", "round_robin"]))
    pol: dict = {"kind": kind}
    if kind == "backup":
        pol["aggregate"] = int(r.integers(1, n + 1))
    elif kind == "k_async":
        pol["k"] = int(r.integers(1, n + 1))
    elif kind == "ssp":
        pol["bound"] = int(r.integers(0, 4))
    elif kind == "sync" and r.random() < 0.5:
        pol["timeout"] = float(r.uniform(0.5, 5))
    sc: dict = {"name": f"soak-{i}", "seed": int(r.integers(0, 2**31)), "workers": groups, "policy": pol}
    if r.random() < 0.5:
        sc["server"] = {"apply": _dist(r) if r.random() < 0.3 else {"dist": "constant", "value": 0.01}}
    topo = str(r.choice(["none", "none", "star", "two_tier"]))
    if topo != "none":
        sc["network"] = {"topology": topo, "bandwidth_gbps": float(r.choice([1.0, 10.0])),
                         "latency": {"dist": "exponential", "mean": 0.001} if r.random() < 0.5
                         else {"dist": "constant", "value": 0.0005}}
        if topo == "two_tier":
            sc["network"]["racks"] = int(r.integers(1, 4))
        if r.random() < 0.7:
            sc["model"] = {"parameters": int(r.choice([100_000, 5_000_000, 25_000_000]))}
    sc["stop"] = {"updates": int(r.integers(10, 300))} if r.random() < 0.6 else {"time": float(r.uniform(5, 80))}
    faults = []
    for _ in range(int(r.integers(0, 5))):
        fk = str(r.choice(["crash", "crash_restart", "restart", "slowdown", "link", "random_crash"]))
        w = int(r.integers(0, n))
        t = float(r.uniform(0, 50))
        if fk == "crash":
            faults.append({"kind": "crash", "worker": w, "at": t})
        elif fk == "crash_restart":
            faults.append({"kind": "crash", "worker": w, "at": t, "restart_after": float(r.uniform(0.1, 20))})
        elif fk == "restart":
            faults.append({"kind": "restart", "worker": w, "at": t})
        elif fk == "slowdown":
            faults.append({"kind": "slowdown", "workers": [w], "start": t, "end": t + float(r.uniform(0.1, 30)),
                           "factor": float(r.choice([0.5, 2.0, 10.0]))})
        elif fk == "link" and "network" in sc:
            faults.append({"kind": "link", "worker": w, "start": t, "end": t + float(r.uniform(0.1, 20)),
                           "factor": float(r.choice([0.0, 0.1, 2.0]))})
        elif fk == "random_crash":
            faults.append({"kind": "random_crash", "group": int(r.integers(0, len(groups))),
                           "mtbf": {"dist": "exponential", "mean": float(r.choice([2.0, 10.0, 100.0]))},
                           "repair": _dist(r)})
    if faults:
        sc["faults"] = faults
    return sc


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM")
def test_soak_random_scenarios():
    try:
        from asyncsim.stability import analyze
    except ImportError:  # pragma: no cover - stability is being written alongside
        analyze = None
    if os.environ.get("ASYNCSIM_SOAK_STABILITY", "1") == "0":
        analyze = None
    old = signal.signal(signal.SIGALRM, _alarm)
    documented = 0
    try:
        for i in range(N_SCENARIOS):
            sc = random_scenario(i)
            signal.alarm(60)
            stage = "simulate"
            try:
                s = asyncsim.load_scenario(sc)
                tr = asyncsim.simulate(s)
                tr.validate()  # (simulate does not validate its own output)
                summ = tr.summary()
                assert summ["gradients"] == summ["applied"] + summ["dropped"] + summ["lost"], i
                if analyze is not None:
                    signal.alarm(120)
                    stage = "stability"
                    analyze(tr)
            except AsyncsimError:
                documented += 1
            except _Hang:
                pytest.fail(f"scenario {i}: {stage} hung (> {60 if stage == 'simulate' else 120} s): {sc}")
            except Exception as exc:  # noqa: BLE001 - the point of the soak
                raise AssertionError(f"scenario {i} raised {type(exc).__name__}: {exc}\n{sc}") from exc
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    # most generated scenarios are valid: a generator that only produced errors would test nothing
    assert documented < N_SCENARIOS // 2, documented
