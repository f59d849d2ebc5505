"""Simulation engines and :func:`simulate`, the one place an engine is chosen.

Engines (all produce the identical trace for a scenario they support):

* ``"simpy"``  the readable reference: the policies' processes on SimPy;
* ``"heap"``   the same processes on a plain-Python heapq kernel that
  schedules exactly like SimPy (every scenario);
* ``"vector"`` numpy cumulative sums merged with one sort, for scenarios
  without contention or server queueing (see :mod:`.vector_engine`).

``"fast"`` and ``"auto"`` pick the fastest engine that supports the scenario.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import InputError
from ..memory import check_simulation
from ..scenario import Scenario, Stop, load_scenario
from ..trace import Trace

__all__ = ["simulate", "ENGINES", "choose_engine", "supported_engines"]

#: engine name -> (module, run function, support test or None = everything), fastest first
_ENGINES: dict[str, tuple[str, str, str | None]] = {
    "vector": ("vector_engine", "run_vector", "why_not_vectorisable"),
    "heap": ("heap_engine", "run_heap", None),
    "simpy": ("simpy_engine", "run_simpy", None),
}
ENGINES = ("simpy", "heap", "vector")
_ALIASES = ("fast", "auto")


def _attr(name: str, which: int):
    import importlib

    mod = importlib.import_module(f"{__name__}.{_ENGINES[name][0]}")
    return getattr(mod, _ENGINES[name][which])


def _why_unsupported(name: str, sc: Scenario) -> str | None:
    """``None`` when engine ``name`` supports ``sc``, else the reason (one line)."""
    return None if _ENGINES[name][2] is None else _attr(name, 2)(sc)


def supported_engines(sc: Scenario) -> list[str]:
    """Engines that support ``sc``, fastest first."""
    return [e for e in _ENGINES if _why_unsupported(e, sc) is None]


def choose_engine(sc: Scenario, engine: str = "auto") -> str:
    """Resolve ``engine`` (simpy | heap | vector | fast | auto) for ``sc``.

    Raises :class:`InputError` (one line) for an unknown name or an engine
    that does not support the scenario.
    """
    if engine in _ALIASES:
        return supported_engines(sc)[0]
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r} (expected one of: {', '.join(ENGINES + _ALIASES)})")
    why = _why_unsupported(engine, sc)
    if why is not None:
        raise InputError(f"engine {engine!r} does not support scenario {sc.name!r}: {why}")
    return engine


def simulate(
    scenario: Scenario | str | Path | dict[str, Any],
    updates: int | None = None,
    seed: int | None = None,
    engine: str = "auto",
    progress: Callable[[float], None] | None = None,
    *,
    time: float | None = None,
) -> Trace:
    """Run a scenario and return its :class:`~asyncsim.trace.Trace`.

    ``scenario``: a :class:`Scenario`, a path, YAML text or a dict.
    ``updates``: stop after this many updates; ``time``: stop at this
    simulated time in seconds. Either one replaces the scenario's ``stop``
    (both of its limits); given together, the run ends at whichever comes
    first. ``seed``: overrides the scenario's seed. ``engine``: see
    the module docstring. ``progress``: called with the fraction done (at most
    about 200 times). The trace carries the resolved scenario (with the
    effective seed and stop) but not the engine: every engine gives the same
    bytes.
    """
    sc = load_scenario(scenario, seed=seed)
    if updates is not None and int(updates) < 1:
        raise InputError(f"updates must be >= 1, got {updates}")
    if time is not None and not (float(time) > 0 and float(time) < float("inf")):
        raise InputError(f"time must be a finite number of seconds > 0, got {time}")
    if updates is not None or time is not None:
        sc = sc.model_copy(update={"stop": Stop(updates=None if updates is None else int(updates),
                                                time=None if time is None else float(time))})
    # sizes first: choosing an engine already allocates per worker (asyncsim.memory)
    check_simulation(sc, sc.stop.updates, sc.stop.time)
    name = choose_engine(sc, engine)
    if name != "vector":  # (the vector engine's estimate is the one just checked)
        check_simulation(sc, sc.stop.updates, sc.stop.time, name)
    res = _attr(name, 1)(sc, updates=sc.stop.updates, until=sc.stop.time, progress=progress)
    cols, sim_time, n_updates = res[:3]
    extra = res[3] if len(res) > 3 else {}
    if progress is not None:
        progress(1.0)
    meta: dict[str, Any] = {"policy": sc.policy.kind}
    if extra.get("stalled"):
        # the cluster could not make progress any more (faults): see docs/transfer-model.md
        meta["stalled"] = True
    return Trace.from_columns(
        cols,
        n_workers=sc.n_workers,
        sim_time=sim_time,
        n_updates=n_updates,
        seed=sc.seed,
        scenario=sc.to_dict(),
        meta=meta,
        down_intervals=extra.get("down_intervals"),
        inner=extra.get("inner"),
        validate=False,  # engine output: checked on every engine by tests/test_parity.py
    )
