"""asyncsim: discrete-event simulation of asynchronous data-parallel training.

Hardware timing -> emergent staleness trace -> stability threshold and
trace-driven training -> wall-clock trade-offs against synchronous SGD.

>>> import asyncsim
>>> sc = asyncsim.load_scenario("scenarios/homogeneous-8.yaml")   # doctest: +SKIP
>>> trace = asyncsim.simulate(sc, updates=10_000)                 # doctest: +SKIP
>>> trace.delay_pmf(), trace.summary()                            # doctest: +SKIP

Importing the package is cheap: :class:`Trace` (numpy) and the scenario
models (pydantic) are imported on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

__version__ = "0.1.0"

from .errors import AsyncsimError, InputError, ScenarioError, TraceError

if TYPE_CHECKING:  # imported on first use at run time (see __getattr__)
    from .scenario import Scenario
    from .trace import Trace

__all__ = [
    "__version__",
    "AsyncsimError",
    "InputError",
    "ScenarioError",
    "TraceError",
    "Scenario",
    "Trace",
    "load_scenario",
    "simulate",
    "keep_freed_memory",
]

#: public names imported on first access: name -> module
_LAZY = {"Trace": "trace", "Scenario": "scenario"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # the next access is a plain lookup
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_scenario(source: str | Path | dict[str, Any] | Scenario, *, seed: int | None = None) -> Scenario:
    """Load a scenario and validate it.

    ``source``: a path to a YAML file, YAML text, a mapping, or a
    :class:`Scenario` (returned as is). Relative file paths inside the
    scenario (an ``empirical`` distribution's ``path``) are resolved against
    the file's folder. ``seed`` overrides the scenario's seed.

    Raises :class:`ScenarioError` naming the file, the field path and what is
    wrong; ``err.problems`` lists every problem found, one line each. Cost:
    linear in the file's size.
    """
    from .scenario import load_scenario as _load

    return _load(source, seed=seed)


def simulate(
    scenario: Scenario | str | Path | dict[str, Any],
    updates: int | None = None,
    seed: int | None = None,
    engine: str = "auto",
    *,
    time: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> Trace:
    """Simulate a scenario and return its staleness :class:`Trace`.

    ``scenario``: a :class:`Scenario`, or anything :func:`load_scenario`
    takes. ``updates``: stop after this many server updates; ``time``: stop
    at this simulated time in seconds. Either replaces the scenario's
    ``stop``; given together, the run ends at whichever comes first.
    ``seed``: overrides the scenario's seed (identical seeds give
    byte-identical traces). ``engine``: ``"auto"`` (the fastest engine that
    supports the scenario), ``"simpy"`` (the reference), ``"heap"``,
    ``"vector"`` or ``"fast"``; every engine gives the same trace.
    ``progress``: called with the fraction done, at most about 200 times.

    Raises :class:`ScenarioError` or :class:`InputError` on bad input. Cost:
    linear in the number of gradients simulated; memory 52 bytes per
    gradient row.
    """
    from .engine import simulate as _simulate

    return _simulate(scenario, updates=updates, seed=seed, engine=engine, progress=progress, time=time)


def keep_freed_memory(children: bool = True) -> bool:
    """Keep freed memory for the next run's arrays (glibc only; an opt-in: the engines do not need it).

    With ``children``, worker processes started later do the same (through
    glibc's environment variables). Returns whether it took effect. See
    :mod:`asyncsim._alloc`.
    """
    from ._alloc import keep_freed_memory as _keep

    return _keep(children=children)
