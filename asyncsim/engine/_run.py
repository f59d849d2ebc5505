"""Helpers shared by the event-driven engines: policy set-up and the run's result."""

from __future__ import annotations

import math

import numpy as np

from ..policies import policy_for


def prepare(sc):
    """The policy instance for ``sc`` (per run: it holds the run's policy state)."""
    return policy_for(sc)


def finish(m):
    """``(columns, sim_time, n_updates, extra)`` of a finished :class:`Model` run.

    ``extra``: ``down_intervals`` (the side table) and ``stalled`` (the run
    ended because no update could ever happen again: see docs/transfer-model.md,
    "Faults"). A run whose event queue emptied before its stop stalled too;
    its ``sim_time`` is the time of the last thing that happened (an apply, a
    drop, a loss, a crash or a restart)."""
    idle = m.env.peek() == math.inf
    m.release()  # (the processes and draws go before the columns are made)
    cols = m.columns()
    if not m.done and idle:
        m.stalled = True
        times = [0.0]
        ta = cols["t_applied"]
        if len(ta):
            fin = np.isfinite(ta)
            if fin.any():
                times.append(float(ta[fin].max()))
            if (~fin).any():
                times.append(float(cols["t_done"][~fin].max()))
        for row in m.down_rows:
            times += [x for x in row[1:] if not math.isnan(x)]
        m.t_last = max(times)
    if m.stalled:
        sim_time = float(m.t_last)
    elif m.stop_time is not None and not m.done:
        sim_time = float(m.stop_time)
    else:
        sim_time = float(m.t_last)
    extra = {"stalled": m.stalled}
    if m.outer_cols is not None:  # the DiLoCo family's extra columns and inner table (asyncsim.trace)
        cols.update(m.outer_columns())
        extra["inner"] = m.inner_table(sim_time)
    if m.faults is not None:
        extra["down_intervals"] = m.down_intervals()
    return cols, sim_time, m.version, extra
