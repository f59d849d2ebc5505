"""The trainer on traces from the simulator, built with the plugin's ``cluster_trace`` fixture."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from asyncsim.testing import assert_diverges, assert_stable  # noqa: E402
from asyncsim.train import make_problem, replay  # noqa: E402

SPECS = ["async:N=8,compute=lognormal(1,0.3)", "k_async:N=8,K=3,compute=exponential(1)",
         "backup:N=8,K=6,compute=exponential(1)", "ssp:N=8,bound=2,compute=exponential(1)",
         "sync:N=4,compute=exponential(1)"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("dc", [0.0, 0.5])
def test_simulated_policies_batched_parity_and_version_store(cluster_trace, spec, dc):
    tr = cluster_trace(spec, updates=200, seed=1)
    p = make_problem("teacher", "mlp:8", device="cpu", dtype="float64", batch_size=8)
    kw = dict(dataset=p, lr=0.05, optimizer="shifted", momentum=0.5, dc_lambda=dc, log_every=50)
    a = replay(tr, engine="sequential", **kw)
    b = replay(tr, engine="batched", **kw)
    assert np.abs(a.params - b.params).max() <= 1e-12 * np.abs(a.params).max()
    assert a.max_live_versions <= tr.n_workers + 1 and b.max_live_versions <= tr.n_workers + 1


def test_stochastic_cluster_threshold_vs_trace_criterion(cluster_trace):
    st = pytest.importorskip("asyncsim.stability")
    if not hasattr(st, "alpha_star"):
        pytest.skip("asyncsim.stability.alpha_star not available yet")
    tr = cluster_trace("async:N=8,compute=exponential(1)", updates=4000, seed=3)
    res = st.alpha_star(tr, criterion="trace")
    astar = float(getattr(res, "alpha_star", res))
    kw = dict(dataset="quadratic", sharpness=1.0, log_every=10, device="cpu")
    assert_stable(tr, lr=0.9 * astar, **kw)
    assert_diverges(tr, lr=1.1 * astar, **kw)
