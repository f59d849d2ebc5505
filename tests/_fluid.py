"""An independent, deliberately naive fluid (flow-level) model of an asynchronous
parameter server on a star, written on SimPy for the tests.

It shares no code with asyncsim: every flow keeps its own remaining bits, the
rates are recomputed from scratch by progressive filling over individual flows
(no classes, no running totals), and a manager process sleeps until the next
completion and is interrupted whenever a flow starts. Draws come from its own
numpy generator, so it is compared with asyncsim statistically.
"""

from __future__ import annotations

import math

import numpy as np
import simpy


def naive_max_min(flow_links: list[tuple], capacity: dict) -> list[float]:
    """Progressive filling over individual flows (textbook form)."""
    rate = [0.0] * len(flow_links)
    active = set(range(len(flow_links)))
    rem = dict(capacity)
    while active:
        share = {}
        for l in rem:
            users = [f for f in active if l in flow_links[f]]
            if users:
                share[l] = rem[l] / len(users)
        if not share:
            break
        l_min = min(share, key=lambda l: share[l])
        s = share[l_min]
        for f in [f for f in active if l_min in flow_links[f]]:
            rate[f] = s
            active.discard(f)
            for l in flow_links[f]:
                rem[l] -= s
    return rate


def fluid_async_star(n: int, compute_mean: float, bits: float, nic_bps: float, server_bps: float,
                     hop_latency: float, updates: int, seed: int):
    """Run async SGD on a star; returns (t_applied, staleness) arrays."""
    env = simpy.Environment()
    rng = np.random.default_rng(seed)
    capacity = {("srv", "down"): server_bps, ("srv", "up"): server_bps}
    for w in range(n):
        capacity[(w, "down")] = nic_bps
        capacity[(w, "up")] = nic_bps
    flows: dict[int, list] = {}   # id -> [remaining bits, links, event]
    state = {"t": 0.0, "next_id": 0, "rates": {}}
    server = simpy.Resource(env, capacity=1)
    version = [0]
    t_applied: list[float] = []
    staleness: list[int] = []
    done = env.event()

    def advance():
        dt = env.now - state["t"]
        for fid, f in flows.items():
            f[0] -= state["rates"].get(fid, 0.0) * dt
        state["t"] = env.now

    def reallocate():
        ids = list(flows)
        r = naive_max_min([flows[i][1] for i in ids], capacity)
        state["rates"] = dict(zip(ids, r))

    def manager():
        while True:
            advance()
            reallocate()
            if flows:
                dt = min(f[0] / state["rates"][i] for i, f in flows.items())
            else:
                dt = math.inf
            try:
                yield env.timeout(max(dt, 0.0)) if dt < math.inf else env.event()
            except simpy.Interrupt:
                continue
            advance()
            for i in [i for i, f in flows.items() if f[0] <= 1e-9 * bits]:
                flows.pop(i)[2].succeed()

    mgr = env.process(manager())

    def transfer(links):
        ev = env.event()
        advance()
        flows[state["next_id"]] = [bits, links, ev]
        state["next_id"] += 1
        mgr.interrupt()
        yield ev
        yield env.timeout(2 * hop_latency)

    def worker(w):
        while True:
            rv = version[0]
            yield from transfer((("srv", "down"), (w, "down")))
            yield env.timeout(rng.exponential(compute_mean))
            yield from transfer(((w, "up"), ("srv", "up")))
            with server.request() as req:
                yield req
                staleness.append(version[0] - rv)
                t_applied.append(env.now)
                version[0] += 1
                if version[0] == updates and not done.triggered:
                    done.succeed()

    for w in range(n):
        env.process(worker(w))
    env.run(until=done)
    return np.array(t_applied), np.array(staleness)
