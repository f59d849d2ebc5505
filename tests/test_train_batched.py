"""Batched in-flight gradients and batched runs against the sequential reference (float64),
the version store's bound, datasets/models, and the CUDA path when a GPU is present."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _traces import async_exponential, round_robin, sync  # noqa: E402

from asyncsim.train import make_plan, make_problem, replay, replay_many  # noqa: E402
from asyncsim.train.batched import mean_wave_size  # noqa: E402


def straggler(n=6, updates=1000, seed=4):
    """Asynchronous cluster with one worker 4× slower than the others."""
    return async_exponential(n, updates, seed=seed, mean=[1.0] * (n - 1) + [4.0])


TRACES = {
    "round_robin": lambda: round_robin(4, 1000),
    "random": lambda: async_exponential(8, 1000, seed=7),
    "straggler": straggler,
}
OPTS = [("sgd", 0.0), ("momentum", 0.9), ("shifted", 0.9)]


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def problem():
    # digits with a small MLP in float64: parity is exact up to rounding (float32 batched
    # kernels are not bitwise reproducible, DESIGN.md).
    return make_problem("digits", "mlp:16", device="cpu", dtype="float64", batch_size=8)


@pytest.mark.parametrize("trace_name", list(TRACES))
@pytest.mark.parametrize("opt,m", OPTS)
def test_batched_matches_sequential_after_1000_steps(problem, trace_name, opt, m):
    tr = TRACES[trace_name]()
    kw = dict(dataset=problem, optimizer=opt, momentum=m, lr=0.05, log_every=250)
    ref = replay(tr, engine="sequential", **kw)
    bat = replay(tr, engine="batched", **kw)
    assert ref.engine == "sequential" and bat.engine == "batched"
    assert not ref.diverged and ref.steps == 1000
    assert ref.final_loss < 0.5 * ref.initial_loss  # it trained: the comparison is not vacuous
    assert rel(bat.params, ref.params) <= 1e-12
    np.testing.assert_allclose(bat.loss, ref.loss, rtol=1e-12)
    np.testing.assert_allclose(bat.batch_loss, ref.batch_loss, rtol=1e-12)  # by application: engine-free
    # version store: never more than n_workers + 1 live versions, and really used when batching
    assert bat.max_live_versions <= tr.n_workers + 1
    if trace_name == "round_robin":
        assert bat.max_live_versions == tr.n_workers  # N−1 snapshots + the current parameters


def test_replay_many_matches_separate_runs(problem):
    tr = async_exponential(4, 300, seed=2)
    lrs, seeds = [0.02, 0.05, 0.1], [0, 1, 2]
    many = replay_many(tr, lrs, seeds, dataset=problem, optimizer="momentum", momentum=0.5,
                       log_every=50)
    assert many[0].engine == "batched[3 runs]"
    for lr, s, r in zip(lrs, seeds, many):
        one = replay(tr, dataset=problem, optimizer="momentum", momentum=0.5, lr=lr, seed=s,
                     engine="sequential", log_every=50)
        assert r.lr == lr and r.seed == s
        assert rel(r.params, one.params) <= 1e-12
        assert r.val_loss == pytest.approx(one.val_loss, rel=1e-12)
    # different seeds give different runs (minibatches and initialisation are the seed's)
    assert rel(many[0].params, many[1].params) > 1e-3


@pytest.mark.parametrize("extra", [{"dc_lambda": 0.5}, {"staleness_aware": True}])
def test_dc_and_staleness_aware_parity_and_store(problem, extra):
    tr = straggler(5, 300, seed=1)
    kw = dict(dataset=problem, optimizer="shifted", momentum=0.5, lr=0.05, log_every=100, **extra)
    ref = replay(tr, engine="sequential", **kw)
    bat = replay(tr, engine="batched", **kw)
    assert rel(bat.params, ref.params) <= 1e-12
    assert ref.max_live_versions <= tr.n_workers + 1 and bat.max_live_versions <= tr.n_workers + 1
    if "dc_lambda" in extra:
        assert ref.max_live_versions > 1  # DC keeps read versions until the rows are applied


def test_sync_and_mean_wave_sizes():
    # S-SGD: every update averages N gradients read at the current version → one wave per step
    tr = sync(4, 50, seed=0)
    assert mean_wave_size(make_plan(tr)) == pytest.approx(4.0)
    assert mean_wave_size(make_plan(round_robin(8, 800))) == pytest.approx(8.0, rel=0.01)
    p = make_problem("teacher", "mlp:8", device="cpu", dtype="float64", batch_size=4)
    ref = replay(tr, dataset=p, lr=0.1, engine="sequential")
    bat = replay(tr, dataset=p, lr=0.1, engine="batched")
    assert rel(bat.params, ref.params) <= 1e-12
    assert bat.max_live_versions == 1


def test_minibatch_draws_are_order_free_and_uniform():
    from asyncsim.train.data import minibatch_indices

    step = np.arange(2000)
    a = minibatch_indices(5, step, step % 7, np.zeros_like(step), 16, 100)
    b = minibatch_indices(5, step[::-1], (step % 7)[::-1], np.zeros_like(step), 16, 100)[::-1]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, minibatch_indices(6, step, step % 7, np.zeros_like(step), 16, 100))
    # uniform over 100 indices: 32,000 draws, each count ~ Binomial(32000, 0.01): sd ≈ 17.8;
    # chi-square with 99 dof has mean 99 and sd 14: 99 + 5 sd = 169
    counts = np.bincount(a.ravel(), minlength=100)
    chi2 = ((counts - 320.0) ** 2 / 320.0).sum()
    assert chi2 < 169


@pytest.mark.parametrize("model", ["linear", "mlp:8,8", "cnn:4"])
def test_batched_gradients_equal_single_row_gradients(model):
    p = make_problem("digits", model, device="cpu", dtype="float64", batch_size=5)
    X = torch.stack([p.init_params(s) for s in range(3)])
    idx = p.batch_indices(0, np.arange(3), np.arange(3), np.zeros(3, dtype=int))
    G = p.grads(X, idx)
    for i in range(3):
        g = p.grad_one(X[i], idx[i])
        torch.testing.assert_close(G[i], g, rtol=1e-12, atol=1e-14)
    # and they are the true gradient: finite differences along a random direction
    d = torch.randn(p.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h = 1e-6

    def f(x):
        leaves = [t for t in p._views(x)]
        return float(p._per_sample(p.model.forward(leaves, p.X[idx[0]]), p.y[idx[0]]).mean())

    fd = (f(X[0] + h * d) - f(X[0] - h * d)) / (2 * h)
    assert float(G[0] @ d) == pytest.approx(fd, rel=1e-5)


def test_datasets_models_and_validation_metrics(tmp_path):
    tr = round_robin(2, 200)
    r = replay(tr, dataset="digits", model="cnn", lr=0.1, device="cpu", log_every=50, seed=1)
    assert r.engine == "sequential"  # auto: vmap'd CNN is slower than sequential on CPU
    assert 0.0 <= r.val_accuracy <= 1.0 and r.val_loss is not None
    assert r.final_loss < r.initial_loss
    r = replay(tr, dataset="teacher", model="linear", lr=0.05, device="cpu", log_every=50)
    assert r.val_accuracy is None and r.val_loss is not None and r.final_loss < r.initial_loss
    # a user's own tensors: .npz and .pt with keys X, y (integer y → classification)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 6))
    y = (X[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    torch.save({"X": torch.as_tensor(X), "y": torch.as_tensor(y)}, tmp_path / "d.pt")
    r1 = replay(tr, dataset=str(tmp_path / "d.npz"), model="mlp:8", lr=0.5, device="cpu", log_every=50)
    r2 = replay(tr, dataset=tmp_path / "d.pt", model="mlp:8", lr=0.5, device="cpu", log_every=50)
    assert r1.final_loss == pytest.approx(r2.final_loss, rel=1e-6)
    assert r1.val_accuracy > 0.8  # a linearly separable problem is learnt
    from asyncsim.errors import InputError

    np.savez(tmp_path / "bad.npz", A=X)
    with pytest.raises(InputError):
        replay(tr, dataset=str(tmp_path / "bad.npz"), lr=0.1)
    with pytest.raises(InputError):
        replay(tr, dataset=str(tmp_path / "missing.npz"), lr=0.1)


def test_seed_reproducible_float32():
    tr = async_exponential(4, 200, seed=0)
    a = replay(tr, dataset="digits", model="mlp:16", lr=0.1, device="cpu", seed=3, log_every=100)
    b = replay(tr, dataset="digits", model="mlp:16", lr=0.1, device="cpu", seed=3, log_every=100)
    np.testing.assert_array_equal(a.params, b.params)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_in_float64():
    tr = async_exponential(8, 300, seed=9)
    kw = dict(dataset="digits", model="mlp:32", dtype="float64", lr=0.05, optimizer="momentum",
              momentum=0.9, log_every=100)
    cpu = replay(tr, device="cpu", **kw)
    gpu = replay(tr, device="cuda", **kw)
    assert gpu.device.startswith("cuda")
    assert rel(gpu.params, cpu.params) <= 1e-10
    again = replay(tr, device="cuda", **kw)
    assert rel(again.params, gpu.params) <= 1e-12
    many = replay_many(tr, [0.02, 0.05], device="cuda", **{k: v for k, v in kw.items() if k != "lr"})
    assert rel(many[1].params, gpu.params) <= 1e-10
