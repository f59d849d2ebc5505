"""The flow-level ("fair") transfer model: link bandwidth shared max-min fairly.

Every transfer in progress is a *flow* over the link directions of its path.
Rates are the max-min fair allocation over the link capacities
(:func:`~asyncsim.network.maxmin.max_min_rates`, progressive filling),
recomputed whenever a flow starts or ends; in between each flow drains at its
rate (a fluid model, as SimGrid's flow models and ns-3's flow models treat
bandwidth). A transfer's per-hop latencies are added after its bytes have
drained, as in the circuit model.

Only link directions that more than one worker's routes cross are shared
(``Route.shared``); the other directions of a path, private to its worker,
limit the flow to their smallest bandwidth (``Route.cap``). A transfer whose
path has no shared direction is never slowed by another one: it takes
exactly ``Route.hold`` (bytes / smallest bandwidth), the same float as the
circuit model, so the vectorised engine's uncontended fast path agrees with
both models to the last bit.

Bookkeeping (inlined for performance): flows with the same shared directions
and the same cap form a *class* and always have the same rate, so rates are
computed per class and a class keeps one running total ``served`` (bits
delivered to each of its flows since the class was last empty). A flow that
joins when the total is S and carries B bits is done when the total reaches
S + B (its *mark*); a class keeps its flows' marks in a heap. So a rate
change costs O(C · (L + C)) for C busy classes over L shared directions, not
O(flows), and the next completion is the smallest (mark − served) / rate.
A star has one pull class and one push class per worker group, whatever N.

Events: the model needs only the kernel's ``timeout``, ``event`` and
``process``, so the SimPy reference and the heapq engine run this very code
and schedule the same events in the same order (identical traces). The next
completion is watched by a *timer* process sleeping until then. A change that
brings the next completion forward starts a new timer; a timer that wakes up
with nothing due (rates fell meanwhile) completes nothing and sleeps again.
A flow is due when what it still has to receive is at most 10⁻¹² of its size
or would take less time than the clock can resolve.
"""

from __future__ import annotations

import heapq
import math

from .maxmin import max_min_rates

__all__ = ["FlowNetwork", "Flow"]

#: a flow with at most this fraction of its bits left is done (rounding of the running totals)
_DUE = 1e-12


class Flow:
    """One transfer in progress (``event`` succeeds when its last bit has arrived)."""

    __slots__ = ("mark", "seq", "bits", "event", "cls", "alive")

    def __init__(self, mark: float, seq: int, bits: float, event, cls: "_Class"):
        self.mark = mark
        self.seq = seq
        self.bits = bits
        self.event = event
        self.cls = cls
        self.alive = True


class _Class:
    __slots__ = ("links", "cap", "n", "served", "rate", "heap")

    def __init__(self, links: tuple[int, ...], cap: float):
        self.links = links
        self.cap = cap
        self.n = 0           # flows in progress
        self.served = 0.0    # bits delivered to each flow since the class was last empty
        self.rate = 0.0      # bit/s of each flow
        self.heap: list = []  # (mark, seq, flow)


class FlowNetwork:
    """The flows of one run over a network's link directions (see the module docstring).

    ``capacity``: bit/s of every link direction. ``env``: the kernel's
    environment (``now``, ``timeout``, ``event``, ``process``).
    """

    def __init__(self, env, capacity: list[float]):
        self.env = env
        self.capacity = capacity
        self.classes: dict[tuple, _Class] = {}
        self.busy: dict[_Class, None] = {}  # classes with flows, in order of first use
        self.t = 0.0                        # time the running totals are valid at
        self._seq = 0
        self._timers: list[float] = []      # wake-up times of the sleeping timers
        self.flows_started = 0
        self.reallocations = 0

    # ------------------------------------------------------------------ API
    def start(self, shared: tuple[int, ...], cap: float, bits: float):
        """Start a flow of ``bits`` over the shared directions ``shared`` with
        rate limit ``cap``; returns the :class:`Flow` (yield ``flow.event``)."""
        key = (shared, cap)
        cls = self.classes.get(key)
        if cls is None:
            cls = self.classes[key] = _Class(shared, cap)
        self._advance()
        self._seq += 1
        flow = Flow(cls.served + bits, self._seq, bits, self.env.event(), cls)
        heapq.heappush(cls.heap, (flow.mark, flow.seq, flow))
        cls.n += 1
        self.busy[cls] = None
        self.flows_started += 1
        self._reallocate()
        return flow

    def cancel(self, flow: Flow) -> None:
        """Withdraw a flow that has not finished (its worker crashed); no-op otherwise."""
        if not flow.alive:
            return
        self._advance()
        flow.alive = False
        self._remove(flow.cls)
        self._reallocate()

    # ------------------------------------------------------------ internals
    def _advance(self) -> None:
        now = self.env.now
        dt = now - self.t
        if dt > 0.0:
            for c in self.busy:
                c.served += c.rate * dt
        self.t = now

    def _remove(self, c: _Class) -> None:
        c.n -= 1
        if c.n == 0:
            del self.busy[c]
            c.served = 0.0
            c.heap.clear()

    def _reallocate(self) -> None:
        """New rates for the busy classes, then make sure a timer watches the next completion."""
        busy = list(self.busy)
        if busy:
            self.reallocations += 1
            rates = max_min_rates([c.links for c in busy], [c.n for c in busy], [c.cap for c in busy],
                                  self.capacity)
            for c, r in zip(busy, rates):
                c.rate = r
        self._watch()

    def _next_completion(self) -> float:
        """Seconds from now until the next flow is done (``inf``: none can finish)."""
        best = math.inf
        for c in self.busy:
            h = c.heap
            while not h[0][2].alive:
                heapq.heappop(h)
            if c.rate > 0.0:
                d = (h[0][0] - c.served) / c.rate
                if d < best:
                    best = d
        return best

    def _watch(self) -> None:
        d = self._next_completion()
        if d == math.inf:
            return
        t = self.env.now + d  # (the kernel computes the wake-up time the same way)
        timers = self._timers
        if timers and timers[0] <= t:
            return  # a sleeping timer wakes up before (or when) it is due
        heapq.heappush(timers, t)
        self.env.process(self._timer(d))

    def _timer(self, delay: float):
        env = self.env
        yield env.timeout(delay)
        heapq.heappop(self._timers)
        self._advance()
        now = env.now
        done = []
        for c in list(self.busy):
            h = c.heap
            while h:
                mark, _, f = h[0]
                if not f.alive:
                    heapq.heappop(h)
                    continue
                left = mark - c.served
                if left <= _DUE * f.bits or (c.rate > 0.0 and now + left / c.rate <= now):
                    heapq.heappop(h)
                    f.alive = False
                    done.append(f)
                else:
                    break
        if done:
            for f in done:
                self._remove(f.cls)
            self._reallocate()
            done.sort(key=lambda f: f.seq)  # simultaneous completions in the order the flows started
            for f in done:
                f.event.succeed()
        else:
            self._watch()
