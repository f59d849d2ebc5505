"""Helpers shared by the event-driven engines: policy set-up and the run's result."""

from __future__ import annotations

from ..policies import policy_for


def prepare(sc):
    """The policy instance for ``sc`` (per run: it holds the run's policy state)."""
    return policy_for(sc)


def finish(m):
    """Columns and simulated time of a finished :class:`Model` run."""
    cols = m.columns()
    if m.stop_time is not None and not m.done:
        sim_time = float(m.stop_time)
    else:
        sim_time = float(m.t_last)
    return cols, sim_time, m.version
