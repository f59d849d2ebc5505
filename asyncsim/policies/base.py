"""The policy base class and the registry keyed by the scenario's ``policy.kind``.

A policy is a set of worker processes written against the small kernel
interface of :class:`asyncsim.engine._model.Model` (timeouts, events, link
resources, interrupts). The same process code runs on the SimPy reference
kernel and on the heapq kernel, so both engines produce identical traces.
Exact semantics of every policy: docs/transfer-model.md.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["Policy", "register", "POLICIES", "policy_for"]

#: kind -> Policy subclass (filled by :func:`register`).
POLICIES: dict[str, type["Policy"]] = {}


def register(cls: type["Policy"]) -> type["Policy"]:
    """Class decorator: make ``cls`` the policy for ``cls.kind``."""
    POLICIES[cls.kind] = cls
    return cls


def policy_for(scenario) -> "Policy":
    """A fresh policy instance (it holds per-run state) for ``scenario.policy``."""
    return POLICIES[scenario.policy.kind](scenario)


class Policy:
    """One synchronisation policy: starts one process per worker on a model.

    Subclasses set ``kind`` and implement :meth:`worker`.
    """

    kind: ClassVar[str] = ""

    def __init__(self, scenario):
        self.sc = scenario
        self.spec = scenario.policy
        self.n = scenario.n_workers

    def start(self, m) -> None:
        """Create the worker processes in worker order (their order at time 0)."""
        m.procs = []
        for w in range(self.n):
            m.procs.append(m.env.process(self.worker(m, w)))

    # ----------------------------------------------------------------- faults
    def on_crash(self, m, w: int) -> None:
        """Worker ``w`` just went down (``m.perm_down[w]``: for good). Default: nothing."""

    def on_up(self, m, w: int) -> None:
        """Worker ``w`` is back up (called before it is woken). Default: nothing."""

    @staticmethod
    def work_with_faults(m, w: int, comp, pull, pull_hops, push, push_hops):
        """Generator, faults only: the worker side of one gradient.

        Waits while ``w`` is down, then pulls the current version, computes
        (the draw times the slowdown factor at the compute start) and pushes.
        Returns ``(read_version, t_read, t_done)`` once the gradient has
        arrived at the server, or ``None`` if a crash interrupted it (the fault
        process has recorded the lost gradient; the caller starts over).
        """
        env = m.env
        while m.down[w]:
            yield m.up_ev[w]
        m.active[w] = True
        try:
            rv = m.version
            if pull is not None:
                yield from m.transfer(w, pull, pull_hops)
            t_read = env.now
            m.cur[w] = (rv, t_read)
            yield env.timeout(comp() * m.faults.compute_factor(w, t_read))
            t_done = env.now
            if push is not None:
                yield from m.transfer(w, push, push_hops)
        except m.kernel.Interrupt:
            return None
        m.active[w] = False
        m.cur[w] = None
        return rv, t_read, t_done

    @staticmethod
    def push_and_apply(m, w: int, push, push_hops):
        """Generator: push worker ``w``'s result to the server (``push`` route, or none), take
        the server (FIFO) and wait one apply draw. The caller records the update, then
        calls ``m.release_server()``."""
        if push is not None:
            yield from m.transfer(w, push, push_hops)
        yield from m.acquire_server()
        d = m.apply_next()
        if d > 0.0:
            yield m.env.timeout(d)

    def worker(self, m, w: int):  # pragma: no cover - abstract
        """Generator: worker ``w``'s process."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}
