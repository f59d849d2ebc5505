"""Replay of local SGD / DiLoCo-family traces against independent truths: all-reduce S-SGD
(local_sgd with H = 1), and plain loops written out here (per-worker torch.optim.AdamW, outer
torch.optim.SGD with Nesterov momentum, full batch, float64) for diloco, streaming_diloco (with
mixing and overlap) and async_diloco."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _diloco_traces import allreduce, async_rounds, streaming, sync_rounds  # noqa: E402

from asyncsim.errors import InputError, TraceError  # noqa: E402
from asyncsim.train import replay  # noqa: E402
from asyncsim.train.outer import fragment_bounds, make_outer_plan, policy_of  # noqa: E402

D, HID = 3, 4  # a 3-4-1 tanh MLP: 21 parameters


def data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, D, generator=g, dtype=torch.float64)
    y = torch.sin(X.sum(1, keepdim=True)) + 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    return X, y


def module(seed=1):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(D, HID), torch.nn.Tanh(), torch.nn.Linear(HID, 1)).double()


def flat(m):
    return torch.cat([p.detach().reshape(-1) for p in m.parameters()]).clone()


def naive_loss(theta, X, y):
    """The MLP written out on the flat vector (nn.Sequential's layout: W1, b1, W2, b2)."""
    i = 0
    W1 = theta[i:i + HID * D].view(HID, D); i += HID * D
    b1 = theta[i:i + HID]; i += HID
    W2 = theta[i:i + HID].view(1, HID); i += HID
    b2 = theta[i:i + 1]
    out = torch.tanh(X @ W1.T + b1) @ W2.T + b2
    return ((out - y) ** 2).mean()


class Worker:
    """A worker's replica, its anchors and its own torch.optim.AdamW (state kept across rounds)."""

    def __init__(self, theta0, lr):
        self.x = theta0.clone().requires_grad_(True)
        self.anchor = theta0.clone()
        self.opt = torch.optim.AdamW([self.x], lr=lr, weight_decay=1e-2)

    def step(self, X, y):
        self.opt.zero_grad()
        naive_loss(self.x, X, y).backward()
        self.opt.step()


class Outer:
    """The server: one torch.optim.SGD per fragment on its own tensor."""

    def __init__(self, theta0, P, lr, mu, nesterov):
        self.bounds = fragment_bounds(theta0.numel(), P)
        self.frags = [theta0[a:b].clone().requires_grad_(True) for a, b in self.bounds]
        self.opts = [torch.optim.SGD([f], lr=lr, momentum=mu, nesterov=nesterov) for f in self.frags]

    def apply(self, p, delta):
        self.frags[p].grad = delta.clone()
        self.opts[p].step()

    @property
    def theta(self):
        return torch.cat([f.detach() for f in self.frags])


def naive_sync(N, rounds, H, lr, outer_lr, mu, nesterov, X, y, theta0):
    outer = Outer(theta0, 1, outer_lr, mu, nesterov)
    ws = [Worker(theta0, lr) for _ in range(N)]
    for _ in range(rounds):
        deltas = []
        for w in ws:
            with torch.no_grad():
                w.x.copy_(outer.theta)
            start = outer.theta
            for _ in range(H):
                w.step(X, y)
            deltas.append(start - w.x.detach())
        outer.apply(0, sum(deltas) / N)
    return outer.theta


def naive_streaming(N, rounds, H, P, overlap, mixing, lr, outer_lr, mu, nesterov, X, y, theta0):
    """Lock-step time loop: at each local step, first the fragments whose sync point it is send
    their pseudo-gradients, then the all-reduces that end now are applied and merged, then
    every worker takes one inner step."""
    outer = Outer(theta0, P, outer_lr, mu, nesterov)
    ws = [Worker(theta0, lr) for _ in range(N)]
    b = outer.bounds
    h = H // P
    in_flight = []  # (end time, sync point, fragment, averaged pseudo-gradient)
    last_sync = rounds * H
    for k in range(last_sync + overlap + 1):
        for p in range(P):
            if k >= h * (p + 1) and (k - h * (p + 1)) % H == 0 and k <= last_sync:
                lo, hi = b[p]
                d = sum(w.anchor[lo:hi] - w.x.detach()[lo:hi] for w in ws) / N
                in_flight.append((k + overlap, k, p, d))
        for item in sorted(x for x in in_flight if x[0] <= k):
            in_flight.remove(item)
            _, _, p, d = item
            outer.apply(p, d)
            lo, hi = b[p]
            g = outer.theta[lo:hi]
            for w in ws:
                with torch.no_grad():
                    w.x[lo:hi] = mixing * w.x[lo:hi] + (1 - mixing) * g
                w.anchor[lo:hi] = g
        if k >= last_sync:
            continue  # (later inner steps change no update of the first `rounds` rounds)
        for w in ws:
            w.step(X, y)
    assert not in_flight
    return outer.theta


def naive_async(order, H, lr, outer_lr, mu, nesterov, X, y, theta0):
    outer = Outer(theta0, 1, outer_lr, mu, nesterov)
    ws = {}
    for w in order:
        if w not in ws:
            ws[w] = Worker(theta0, lr)
        wk = ws[w]
        for _ in range(H):
            wk.step(X, y)
        outer.apply(0, wk.anchor - wk.x.detach())
        wk.anchor = outer.theta.clone()
        with torch.no_grad():
            wk.x.copy_(wk.anchor)
    return outer.theta


# ------------------------------------------------------------------------------- tests
def test_local_sgd_h1_is_allreduce_ssgd():
    """local_sgd, H = 1, outer lr 1, no momentum: the same minibatches give S-SGD's parameters."""
    N, T = 4, 60
    kw = dict(dataset="teacher", model="mlp:8", dtype="float64", batch_size=8, optimizer="sgd", lr=0.1,
              seed=3, engine="sequential")
    ref = replay(allreduce(N, T), **kw)
    tr = sync_rounds(N, T, 1, kind="local_sgd")
    for eng in ("sequential", "batched"):
        res = replay(tr, **{**kw, "engine": eng})
        assert res.engine == f"diloco-{eng}"
        assert res.extra["policy"] == "local_sgd" and res.extra["outer_lr"] == 1.0
        # Δ = θ − (θ − η g) is η g to within an ulp of θ: the two replays agree to rounding
        np.testing.assert_allclose(res.params, ref.params, rtol=0, atol=1e-14)
        np.testing.assert_allclose(res.loss, ref.loss, rtol=1e-13)
        assert res.sim_time[-1] == pytest.approx(ref.sim_time[-1])


@pytest.mark.parametrize("N,H,mu,nesterov", [(3, 2, 0.9, True), (4, 5, 0.8, True), (3, 3, 0.6, False)])
def test_diloco_matches_naive(N, H, mu, nesterov):
    X, y = data()
    m = module()
    theta0 = flat(m)
    rounds, lr, olr = 6, 0.02, 0.7
    truth = naive_sync(N, rounds, H, lr, olr, mu, nesterov, X, y, theta0)
    tr = sync_rounds(N, rounds, H, outer_momentum=mu, nesterov=nesterov, outer_lr=olr)
    for eng in ("sequential", "batched"):
        mm = module()
        res = replay(tr, model=mm, dataset=(X, y), batch_size=None, lr=lr, engine=eng)  # adamw: the policy's
        assert res.optimizer == "adamw"
        np.testing.assert_allclose(res.params, truth.numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(flat(mm).numpy(), truth.numpy(), rtol=1e-12, atol=1e-12)  # trained in place
    assert not np.allclose(truth.numpy(), theta0.numpy(), atol=1e-3)


@pytest.mark.parametrize("P,overlap,mixing", [(2, 0, 0.5), (3, 1, 0.3), (2, 3, 0.0)])
def test_streaming_matches_naive(P, overlap, mixing):
    X, y = data(seed=4)
    theta0 = flat(module(2))
    N, rounds, H, lr = 3, 4, 6, 0.03
    truth = naive_streaming(N, rounds, H, P, overlap, mixing, lr, 0.7, 0.9, True, X, y, theta0)
    # one more round in the trace: its rows say when the last results were merged
    tr = streaming(N, rounds + 1, H, P, overlap=overlap, mixing=mixing)
    res = replay(tr, model=module(2), dataset=(X, y), batch_size=None, lr=lr, engine="sequential",
                 steps=rounds * P)
    np.testing.assert_allclose(res.params, truth.numpy(), rtol=1e-12, atol=1e-12)
    assert res.extra["fragments"] == P and res.steps == rounds * P
    # a trace that ends with the round: the last merges come from the inner-step side table
    tr = streaming(N, rounds, H, P, overlap=overlap, mixing=mixing, inner=True)
    res = replay(tr, model=module(2), dataset=(X, y), batch_size=None, lr=lr, engine="sequential")
    np.testing.assert_allclose(res.params, truth.numpy(), rtol=1e-12, atol=1e-12)
    if overlap < H // P:  # without it, the fragments updated first are not merged before the last takes
        del tr.inner
        res = replay(tr, model=module(2), dataset=(X, y), batch_size=None, lr=lr, engine="sequential")
        assert not np.allclose(res.params, truth.numpy(), rtol=1e-6)


def test_async_matches_naive():
    rng = np.random.default_rng(5)
    order = list(range(4)) + rng.integers(0, 4, size=20).tolist()
    X, y = data(seed=6)
    theta0 = flat(module(3))
    truth = naive_async(order, 3, 0.02, 0.5, 0.8, True, X, y, theta0)
    tr = async_rounds(order, 3, outer_lr=0.5, outer_momentum=0.8)
    assert tr.columns["staleness"].max() >= 3
    res = replay(tr, model=module(3), dataset=(X, y), batch_size=None, lr=0.02)
    np.testing.assert_allclose(res.params, truth.numpy(), rtol=1e-12, atol=1e-12)


def test_batched_workers_equal_sequential_with_minibatches():
    tr = streaming(4, 5, 4, 2, overlap=1)
    kw = dict(dataset="teacher", model="mlp:8", dtype="float64", batch_size=8, lr=0.02)
    a = replay(tr, engine="sequential", **kw)
    b = replay(tr, engine="batched", **kw)
    np.testing.assert_allclose(a.params, b.params, rtol=0, atol=1e-13)


def test_inner_optimizers_and_overrides():
    tr = sync_rounds(2, 5, 3, kind="local_sgd")
    assert policy_of(tr).outer_lr == 1.0 and policy_of(tr).inner_optimizer == "sgd"
    q = dict(dataset="quadratic", sharpness=1.0, dim=3)
    for opt in ("sgd", "momentum", "adam", "adamw"):
        r = replay(tr, lr=0.05, optimizer=opt, **q)
        assert r.optimizer == opt and np.isfinite(r.final_loss)
    # a torch optimizer factory, one instance per worker, equals the named optimizer
    a = replay(tr, lr=0.05, optimizer="adam", **q)
    b = replay(tr, lr=0.05, optimizer=lambda ps: torch.optim.Adam(ps, lr=0.05), **q)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-13)
    # outer overrides: η_o = 2 with no momentum on the quadratic, H = 3, α = 0.05: θ ← θ (1 − 2c)
    r = replay(tr, lr=0.05, optimizer="sgd", outer_lr=2.0, **q)
    assert r.extra["outer_lr"] == 2.0
    lam = 1.0 * np.geomspace(1.0, 0.1, 3)
    c = 1 - (1 - 0.05 * lam) ** 3
    np.testing.assert_allclose(r.params, (1 - 2 * c) ** 5, rtol=1e-12)
    from asyncsim.train import replay_many

    many = replay_many(tr, [0.05, 0.02], optimizer="adam", **q)
    np.testing.assert_array_equal(many[0].params, a.params)
    assert many[1].lr == 0.02 and not np.array_equal(many[1].params, a.params)
    with pytest.raises(InputError, match="shifted"):
        replay(tr, lr=0.05, optimizer="shifted", momentum=0.5, **q)
    with pytest.raises(InputError, match="outer_lr"):
        replay(allreduce(2, 3), lr=0.05, outer_lr=2.0, **q)


def test_refuses_replicas_that_do_not_fit(monkeypatch):
    tr = sync_rounds(64, 2, 2)
    monkeypatch.setenv("ASYNCSIM_MEMORY_LIMIT", "20MiB")
    with pytest.raises(InputError, match=r"64 worker replicas of 100,000 parameters .* needs ~246 MiB of memory; 20 MiB is available"):
        replay(tr, lr=0.01, dataset="quadratic", sharpness=1.0, dim=100_000)
    replay(tr, lr=0.01, dataset="quadratic", sharpness=1.0, dim=1000)  # 64·1000·8·7 B fits


def test_bad_traces_are_refused():
    tr = sync_rounds(2, 3, 2)
    tr.columns["local_end"] = tr.columns["local_start"].copy()
    with pytest.raises(TraceError, match="local_start < local_end"):
        make_outer_plan(tr, policy_of(tr))
    tr = streaming(2, 2, 4, 2)
    del tr.columns["fragment"]
    with pytest.raises(TraceError, match="needs the column"):
        replay(tr, lr=0.01)
    tr = async_rounds([0, 1, 0, 1], 2)
    tr.columns["read_version"][2] = 3  # read a version that needs its own update: not causal
    tr.columns["staleness"][2] = -1
    with pytest.raises(TraceError, match="not causal"):
        make_outer_plan(tr, policy_of(tr))


def test_derived_local_columns_and_cli(tmp_path):
    """Without the extra columns (a file saved before they were stored) a one-fragment trace's
    local steps follow from row order; the command line replays it."""
    from _cli import cli

    tr = sync_rounds(3, 8, 4)
    r1 = replay(tr, lr=0.05, dataset="quadratic", sharpness=2.0, dim=2)
    for k in ("fragment", "local_start", "local_end", "outer_staleness"):
        del tr.columns[k]
    r2 = replay(tr, lr=0.05, dataset="quadratic", sharpness=2.0, dim=2)
    np.testing.assert_array_equal(r1.params, r2.params)
    path = tr.save(tmp_path / "t.npz")
    code, out, err = cli(["train", "--trace", str(path), "--dataset", "quadratic", "--sharpness", "2", "--dim", "2",
                   "--lr", "0.05", "--out", str(tmp_path / "o"), "--json"])
    assert code == 0, err
    d = json.loads(out)
    assert d["policy"] == "diloco" and d["optimizer"] == "adamw" and d["steps"] == 8
    assert d["final_loss"] == pytest.approx(r1.final_loss, rel=1e-12)


def test_dropout_is_seeded_per_inner_step_and_buffers_are_refused():
    X, y = data()
    tr = sync_rounds(2, 3, 2)

    def drop():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(D, HID), torch.nn.Dropout(0.3), torch.nn.Linear(HID, 1)).double()

    a = replay(tr, model=drop(), dataset=(X, y), batch_size=None, lr=0.01)
    b = replay(tr, model=drop(), dataset=(X, y), batch_size=None, lr=0.01)
    np.testing.assert_array_equal(a.params, b.params)
    assert a.engine == "diloco-sequential"
    bn = torch.nn.Sequential(torch.nn.Linear(D, HID), torch.nn.BatchNorm1d(HID), torch.nn.Linear(HID, 1)).double()
    with pytest.raises(InputError, match="buffers"):
        replay(tr, model=bn, dataset=(X, y), batch_size=None, lr=0.01)


def _simulated(policy: dict, updates: int, seed: int = 3):
    """A simulated DiLoCo-family trace."""
    import asyncsim
    from asyncsim.scenario import validate_scenario

    d = {"name": "diloco-sim", "seed": 1, "workers": [{"count": 4, "compute": {"dist": "lognormal", "mean": 1.0,
                                                                                "cv": 0.3}}],
         "policy": policy, "stop": {"updates": updates}}
    return asyncsim.simulate(validate_scenario(d, source="<test>"), updates=updates, seed=seed)


def test_simulated_streaming_trace_replays_its_own_merges():
    """A simulated streaming trace cut at 23 updates replays as the first 23 updates of a longer
    one: the merges no later row records come from its inner-step table at the simulator's own
    times. Without that table they would be missed (the parameters differ)."""
    pol = {"kind": "streaming_diloco", "inner_steps": 20, "fragments": 4, "mixing": 0.5}
    short, long = _simulated(pol, 23), _simulated(pol, 40)
    kw = dict(lr=0.01, dataset="teacher", model="mlp:8", dtype="float64")
    a = replay(short, **kw)
    b = replay(long, steps=23, **kw)
    np.testing.assert_allclose(a.params, b.params, rtol=0, atol=1e-13)
    short.inner = {k: v[:0] for k, v in short.inner.items()}
    assert not np.allclose(replay(short, **kw).params, b.params, rtol=1e-6)


def test_simulated_local_sgd_h1_is_simulated_allreduce():
    """The simulator's local_sgd (H = 1, outer lr 1, no momentum) and its all-reduce S-SGD, same
    cluster and seed: the replays agree to rounding (their timings need not)."""
    ls = _simulated({"kind": "local_sgd", "inner_steps": 1}, 30, seed=2)
    ar = _simulated({"kind": "allreduce"}, 30, seed=2)
    kw = dict(dataset="teacher", model="mlp:8", dtype="float64", batch_size=8, optimizer="sgd", lr=0.1, seed=3)
    np.testing.assert_allclose(replay(ls, **kw).params, replay(ar, **kw).params, rtol=0, atol=1e-14)
