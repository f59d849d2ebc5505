"""Scenarios whose traces were hashed on main before the draw/set-up rework (issue 21).

``tests/data/engine_traces.json`` holds the sha256 of every case's trace as
main produced it (commit 24de429), so any change to how streams are seeded,
how draw blocks are sized or how the engines merge must leave the values
byte-identical. Regenerate only for an intended change of the traces:
``python tests/_regression_cases.py > tests/data/engine_traces.json``.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

COLS = ("step", "worker", "read_version", "staleness", "t_read", "t_done", "t_applied")

DISTS = {
    "exp": {"dist": "exponential", "mean": 1.0},
    "mixture": {"dist": "mixture", "components": [
        {"weight": 0.85, "dist": "exponential", "mean": 1.0},
        {"weight": 0.15, "dist": "lognormal", "mean": 3.0, "cv": 0.5}]},
    "empirical": {"dist": "empirical", "values": [0.31, 0.52, 0.77, 1.13, 2.9]},
    "lognormal": {"dist": "lognormal", "mean": 1.0, "cv": 0.8},
    "normal": {"dist": "normal", "mean": 1.0, "std": 0.6},
    "gamma": {"dist": "gamma", "mean": 1.0, "cv": 0.3},
}


def trace_hash(tr) -> str:
    m = hashlib.sha256()
    for c in COLS:
        m.update(np.ascontiguousarray(tr.columns[c]).tobytes())
    m.update(repr((float(tr.sim_time), int(tr.n_updates))).encode())
    return m.hexdigest()


def cases():
    """(name, scenario dict) pairs: policies x distributions x N in {8, 512}."""
    def sc(name, n, dist, policy, updates=None, time=None, **kw):
        s = {"name": name, "seed": 11, "workers": [{"count": n, "compute": DISTS[dist]}],
             "policy": policy, "stop": {"updates": updates} if updates else {"time": time}}
        s.update(kw)
        return s

    # N = 8: thousands of draws per worker (several 1024-blocks); N = 512: a few
    for n, rows in ((8, 20_000), (512, 4_000)):
        for d in DISTS:
            yield f"async-{d}-{n}", sc("a", n, d, {"kind": "async"}, rows)
        yield f"async-time-{n}", sc("a", n, "exp", {"kind": "async"}, time=rows / n * 0.9)
        yield f"async-apply-{n}", sc("a", n, "mixture", {"kind": "async"}, rows,
                                     server={"apply": {"dist": "exponential", "mean": 1e-3}})
        for d in ("exp", "mixture", "empirical"):
            yield f"kasync-{d}-{n}", sc("k", n, d, {"kind": "k_async", "k": 4}, rows // 4)
            yield f"sync-{d}-{n}", sc("s", n, d, {"kind": "sync"}, max(4, rows // n // 2 if n > 8 else 1500))
            yield f"backup-{d}-{n}", sc("b", n, d, {"kind": "backup", "aggregate": n - n // 8},
                                        max(4, rows // n // 2 if n > 8 else 1500))
            yield f"ssp-{d}-{n}", sc("p", n, d, {"kind": "ssp", "bound": 2}, rows // 2)
            yield f"rr-{d}-{n}", sc("r", n, d, {"kind": "round_robin"}, rows // 2)
        yield f"sync-apply-{n}", sc("s", n, "lognormal", {"kind": "sync"}, 200 if n > 8 else 1500,
                                    server={"apply": {"dist": "uniform", "low": 1e-3, "high": 2e-3}})
        yield f"faults-crash-{n}", sc("f", n, "exp", {"kind": "async"}, rows // 2,
                                      faults=[{"kind": "crash", "worker": 1, "at": 3.0, "restart_after": 2.0}])
        yield f"faults-random-{n}", sc("f", n, "mixture", {"kind": "async"}, rows // 2,
                                       faults=[{"kind": "random_crash", "group": 0, "mtbf": {"dist": "exponential", "mean": 50.0},
                                                "repair": {"dist": "exponential", "mean": 2.0}}])
        net = {"topology": "star", "bandwidth_gbps": 10, "sharing": "circuit",
               "latency": {"dist": "uniform", "low": 1e-4, "high": 3e-4}}
        yield f"star-async-{n}", sc("n", n, "exp", {"kind": "async"}, rows // 4, network=net,
                                    model={"parameters": 100_000})
        yield f"star-const-{n}", sc("n", 1 if n == 8 else n, "lognormal", {"kind": "async"}, rows // 4,
                                    network={"topology": "star", "bandwidth_gbps": 10,
                                             "latency": {"dist": "constant", "value": 1e-4}},
                                    model={"parameters": 1000})


def compute() -> dict:
    from asyncsim.engine import simulate, supported_engines
    from asyncsim.scenario import load_scenario

    out = {}
    for name, s in cases():
        sc = load_scenario(s)
        hashes = {e: trace_hash(simulate(sc, engine=e)) for e in supported_engines(sc)}
        if len(set(hashes.values())) != 1:
            raise SystemExit(f"{name}: engines disagree {hashes}")
        out[name] = {"hash": next(iter(hashes.values())), "engines": sorted(hashes)}
    return out


if __name__ == "__main__":
    print(json.dumps(compute(), indent=1, sort_keys=True))
