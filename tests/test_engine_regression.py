"""Traces stay byte-identical to what main produced before issue 21's engine rework.

The hashes in tests/data/engine_traces.json were computed at commit 24de429
(before bulk seeding, sized draw blocks and the linear merge) by
``python tests/_regression_cases.py``; every engine that supports a case
must still give exactly that trace.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asyncsim.engine import simulate, supported_engines
from asyncsim.scenario import load_scenario

from _regression_cases import cases, trace_hash

REF = json.loads((Path(__file__).parent / "data" / "engine_traces.json").read_text())
CASES = dict(cases())


def test_every_case_has_a_reference():
    assert sorted(CASES) == sorted(REF)


@pytest.mark.parametrize("name", sorted(CASES))
def test_trace_unchanged_on_every_engine(name):
    sc = load_scenario(CASES[name])
    engines = supported_engines(sc)
    assert sorted(engines) == REF[name]["engines"]
    for e in engines:
        assert trace_hash(simulate(sc, engine=e)) == REF[name]["hash"], (name, e)


@pytest.mark.parametrize("first", [1, 5])
@pytest.mark.parametrize("name", ["async-apply-8", "kasync-mixture-512", "ssp-empirical-8", "faults-crash-8",
                                  "star-async-512", "sync-apply-8", "async-lognormal-512"])
def test_short_first_blocks_change_nothing(name, first, monkeypatch):
    """The event engines' first draw blocks are sized from a guess; a guess far too
    short (every worker runs past it: its stream starts again and hands out the
    rest of its first block) gives the same trace."""
    from asyncsim.engine import _model

    monkeypatch.setattr(_model, "_first_block", lambda sc, updates, until: first)
    sc = load_scenario(CASES[name])
    for e in ("heap", "simpy"):
        assert trace_hash(simulate(sc, engine=e)) == REF[name]["hash"], (name, e)


# (the event engines' memory per worker: tests/test_event_memory.py, with tighter bounds)
