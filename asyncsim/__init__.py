"""asyncsim: discrete-event simulation of asynchronous data-parallel training.

Hardware timing -> emergent staleness trace -> stability threshold and
trace-driven training -> wall-clock trade-offs against synchronous SGD.

>>> import asyncsim
>>> sc = asyncsim.load_scenario("scenarios/homogeneous-8.yaml")   # doctest: +SKIP
>>> trace = asyncsim.simulate(sc, updates=10_000)                 # doctest: +SKIP
>>> trace.delay_pmf(), trace.summary()                            # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import AsyncsimError, InputError, ScenarioError, TraceError
from .trace import Trace

__all__ = [
    "__version__",
    "AsyncsimError",
    "InputError",
    "ScenarioError",
    "TraceError",
    "Trace",
    "load_scenario",
    "simulate",
    "keep_freed_memory",
]


def load_scenario(source, **kwargs):
    """Load and validate a scenario (path, YAML text or dict). See :mod:`asyncsim.scenario`."""
    from .scenario import load_scenario as _load

    return _load(source, **kwargs)


def simulate(scenario, updates=None, seed=None, engine="auto", **kwargs):
    """Run a scenario and return its :class:`Trace`. See :mod:`asyncsim.engine`."""
    from .engine import simulate as _simulate

    return _simulate(scenario, updates=updates, seed=seed, engine=engine, **kwargs)


def keep_freed_memory(children=True):
    """Keep freed memory for the next run's arrays (glibc; what the CLI does). See :mod:`asyncsim._alloc`."""
    from ._alloc import keep_freed_memory as _keep

    return _keep(children=children)
