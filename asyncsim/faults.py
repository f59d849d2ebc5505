"""Faults and stragglers: the ``faults:`` section of a scenario and its timeline.

Faults are *exogenous*: when a worker crashes, slows down or loses its link
does not depend on what the training does, so the whole fault timeline is
computed up front from the scenario and the seed, and every engine consumes
the same timeline (which keeps engines trace-identical).

Kinds (``kind:``)::

    faults:
      - {kind: crash, worker: 3, at: 120.0, restart_after: 60.0}   # restart_after optional
      - {kind: restart, worker: 5, at: 400.0}                      # bring a crashed worker back
      - {kind: slowdown, workers: [0, 1], start: 100, end: 200, factor: 3.0}
      - {kind: link, worker: 2, start: 50, end: 80, factor: 0.0}   # factor 0: the link is down
      - {kind: random_crash, group: 0,                              # per worker of worker group 0
         mtbf: {dist: exponential, mean: 3600}, repair: {dist: constant, value: 120}}

Semantics (every event engine implements these; the full statement, with
what each policy does, is docs/transfer-model.md, "Faults"):

* **crash** at ``t``: the worker stops; a gradient it was computing or
  pushing is *lost* (recorded with ``step = -2``, ``t_done = t``); one that
  already reached the server is not. With ``restart_after`` (or a later
  ``restart``) it comes back, pulls the current version and continues;
  otherwise it stays down for good.
* **slowdown**: a gradient whose computation *starts* in ``[start, end)`` takes
  ``factor`` times its drawn compute time (the same draw: common random numbers).
* **link**: transfers to or from the worker that *start* in ``[start, end)``
  see the worker's own link (the hop at its end of the path) at ``factor``
  times its bandwidth; ``factor: 0`` holds them until ``end``, then checks again.
* **random_crash**: every worker of the group fails after an ``mtbf`` draw of
  up-time and is repaired after a ``repair`` draw, repeatedly, from its own
  ``faults`` random stream (adding workers never shifts others' failures).
  Overlapping down intervals of one worker merge.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING, Annotated, Literal, Optional, Union

from pydantic import ConfigDict, Field, model_validator

from ._strict import StrictModel
from .distributions import DistributionSpec

if TYPE_CHECKING:  # (validating a scenario imports no numpy; the simulation imports rng)
    from .rng import BlockSampler, Streams


class _Fault(StrictModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False, allow_inf_nan=False)


class Crash(_Fault):
    """A worker stops at ``at``; its in-flight gradient is lost."""

    kind: Literal["crash"] = "crash"
    worker: int = Field(ge=0, description="Global worker index.")
    at: float = Field(ge=0, description="Crash time, seconds.")
    restart_after: Optional[float] = Field(default=None, gt=0, description="Down time before it restarts.")


class Restart(_Fault):
    """A crashed worker comes back at ``at``, pulls the current version and continues."""

    kind: Literal["restart"] = "restart"
    worker: int = Field(ge=0)
    at: float = Field(ge=0)


class Slowdown(_Fault):
    """Compute times of the listed workers multiplied by ``factor`` in a time window."""

    kind: Literal["slowdown"] = "slowdown"
    workers: tuple[int, ...] = Field(min_length=1, description="Global worker indices.")
    start: float = Field(ge=0)
    end: float = Field(gt=0)
    factor: float = Field(gt=0, description="Multiplier of compute time (> 1 slows down).")

    @model_validator(mode="after")
    def _window(self):
        if not self.end > self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


class LinkFault(_Fault):
    """A worker's link bandwidth multiplied by ``factor`` in a window (0: link down)."""

    kind: Literal["link"] = "link"
    worker: int = Field(ge=0)
    start: float = Field(ge=0)
    end: float = Field(gt=0)
    factor: float = Field(ge=0, description="Bandwidth multiplier; 0 means the link is down.")

    @model_validator(mode="after")
    def _window(self):
        if not self.end > self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


class RandomCrash(_Fault):
    """Every worker of a group fails and is repaired repeatedly at random."""

    kind: Literal["random_crash"] = "random_crash"
    group: int = Field(ge=0, description="Index of the worker group.")
    mtbf: DistributionSpec = Field(description="Up-time between failures, seconds.")
    repair: DistributionSpec = Field(description="Down-time of each failure, seconds.")


    @model_validator(mode="after")
    def _can_progress(self):
        if not self.mtbf.mean > 0:
            raise ValueError("mtbf must have a mean > 0: a worker that fails again after no up-time never "
                             "computes a gradient, and the run could never end")
        return self


#: Simulated seconds (about 31.7 million years) beyond which a fault lasts for good: a repair
#: that ends later (``repair: {value: 1e300}``) is a permanent crash, so the policy's stall
#: detection ends the run instead of the clock crawling towards the overflow of float64.
HORIZON = 1e15


FaultSpec = Annotated[Union[Crash, Restart, Slowdown, LinkFault, RandomCrash], Field(discriminator="kind")]
FAULT_KINDS = ("crash", "restart", "slowdown", "link", "random_crash")


class WorkerFaults:
    """Down intervals of one worker, merged from scheduled and random faults.

    Random failures are generated lazily, so an ``updates`` stop with no time
    horizon still works. ``next_down(t)`` returns the first down interval
    ``(t_down, t_up)`` with ``t_up > t`` (``t_up = inf`` for a permanent crash),
    or ``None``.
    """

    def __init__(self, scheduled: list[tuple[float, float]], random: Optional[tuple[BlockSampler, BlockSampler]]):
        self._sched = sorted(scheduled)
        self._random = random
        self._rand: list[tuple[float, float]] = []
        self._rand_t = 0.0  # up-time clock of the random failure process
        self._merged: list[tuple[float, float]] = []
        self._merged_upto = -math.inf

    def _extend_random(self, horizon: float) -> None:
        if self._random is None:
            return
        mtbf, repair = self._random
        while self._rand_t <= horizon:
            down = self._rand_t + mtbf.next()
            up = down + repair.next()
            if down >= HORIZON:  # no more failures that a run could reach
                self._rand_t = math.inf
                break
            if up >= HORIZON:
                up = math.inf  # repaired beyond any horizon: down for good (see HORIZON)
            self._rand.append((down, up))
            self._rand_t = up

    def intervals_until(self, horizon: float) -> list[tuple[float, float]]:
        """Merged down intervals starting at or before ``horizon``."""
        if horizon > self._merged_upto:
            self._extend_random(horizon)
            raw = sorted([iv for iv in self._sched] + [iv for iv in self._rand if iv[0] <= horizon])
            merged: list[list[float]] = []
            for a, b in raw:
                if merged and a <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], b)
                else:
                    merged.append([a, b])
            self._merged = [(a, b) for a, b in merged]
            self._merged_upto = horizon
        return [iv for iv in self._merged if iv[0] <= horizon]

    def next_down(self, t: float) -> Optional[tuple[float, float]]:
        horizon = t
        while True:
            ivs = self.intervals_until(horizon)
            for a, b in ivs:
                if b > t:
                    return (a, b)
            if self._random is None and horizon >= (self._sched[-1][0] if self._sched else -math.inf):
                return None
            horizon = max(horizon * 2, horizon + 1.0)
            if horizon > 1e15:
                return None


class FaultTimeline:
    """All faults of a run, by worker. Built once from the scenario and the seed."""

    def __init__(self, faults: tuple, n_workers: int, group_of: list[int], streams: Streams):
        self.n_workers = n_workers
        sched: list[list[tuple[float, float]]] = [[] for _ in range(n_workers)]
        crashes: list[list[float]] = [[] for _ in range(n_workers)]
        restarts: list[list[float]] = [[] for _ in range(n_workers)]
        self.slowdowns: list[list[tuple[float, float, float]]] = [[] for _ in range(n_workers)]
        self.links: list[list[tuple[float, float, float]]] = [[] for _ in range(n_workers)]
        random_spec: list[Optional[RandomCrash]] = [None] * n_workers
        for f in faults:
            if isinstance(f, Crash):
                if f.restart_after is not None:
                    up = f.at + f.restart_after
                    sched[f.worker].append((f.at, up if up < HORIZON else math.inf))
                else:
                    crashes[f.worker].append(f.at)
            elif isinstance(f, Restart):
                restarts[f.worker].append(f.at)
            elif isinstance(f, Slowdown):
                for w in f.workers:
                    self.slowdowns[w].append((f.start, f.end, f.factor))
            elif isinstance(f, LinkFault):
                self.links[f.worker].append((f.start, f.end, f.factor))
            elif isinstance(f, RandomCrash):
                for w in range(n_workers):
                    if group_of[w] == f.group:
                        random_spec[w] = f
        for w in range(n_workers):
            # a crash without restart_after lasts until the next restart after it (or forever)
            rs = sorted(restarts[w])
            for at in crashes[w]:
                i = bisect.bisect_right(rs, at)
                sched[w].append((at, rs[i] if i < len(rs) else math.inf))
        self.workers = []
        for w in range(n_workers):
            rnd = None
            if random_spec[w] is not None:
                rng = streams.worker(w, "faults")
                # one generator, two samplers: the mtbf block is drawn before the repair block
                from .rng import BlockSampler

                rnd = (BlockSampler(random_spec[w].mtbf, rng), BlockSampler(random_spec[w].repair, rng))
            self.workers.append(WorkerFaults(sched[w], rnd))
        for lst in self.slowdowns + self.links:
            lst.sort()

    def next_down(self, worker: int, t: float) -> Optional[tuple[float, float]]:
        return self.workers[worker].next_down(t)

    def compute_factor(self, worker: int, t: float) -> float:
        """Multiplier of a compute time starting at ``t`` (product of the active slowdowns)."""
        f = 1.0
        for a, b, k in self.slowdowns[worker]:
            if a <= t < b:
                f *= k
        return f

    def link_factor(self, worker: int, t: float) -> tuple[float, float]:
        """``(bandwidth multiplier, time the link is back up)`` for a transfer starting at ``t``.

        A multiplier of 0 means wait until the returned time."""
        f, until = 1.0, t
        for a, b, k in self.links[worker]:
            if a <= t < b:
                if k == 0:
                    until = max(until, b)
                else:
                    f *= k
        return f, until
