"""A user's own nn.Module, loss and data: replay(model=<module>) against an independent naive
replay (every parameter version kept, each row's gradient at its read_version on a deep copy of
the module, rows of a step averaged, the update by torch.optim where it has the optimizer), in
float64 on a full-batch problem; buffers, dropout, modes, data forms, the batched engine."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from _traces import async_exponential, round_robin, sync  # noqa: E402

from asyncsim.errors import InputError  # noqa: E402
from asyncsim.trace import Trace  # noqa: E402
from asyncsim.train import empirical_threshold, replay, replay_many, sharpness  # noqa: E402


def k_async_trace(n=6, updates=60, k=2, seed=3):
    """Every update averages k rows of different staleness (rows of an async trace, paired)."""
    base = async_exponential(n, updates * k, seed=seed)
    c = base.columns
    j = np.arange(updates * k)
    cols = {"step": j // k, "worker": c["worker"].copy(), "read_version": c["read_version"] // k,
            "t_read": c["t_read"].copy(), "t_done": c["t_done"].copy(), "t_applied": c["t_applied"].copy()}
    return Trace.from_columns(cols, n_workers=n, sim_time=base.sim_time, n_updates=updates)


TRACES = {
    "round_robin": lambda: round_robin(4, 50),
    "random": lambda: async_exponential(6, 50, seed=3),
    "k_async": lambda: k_async_trace(),
}


def net(seed=0, bn=False, dropout=0.0):
    g = torch.Generator().manual_seed(seed)
    layers = [torch.nn.Linear(5, 8)]
    if bn:
        layers.append(torch.nn.BatchNorm1d(8))
    layers.append(torch.nn.Tanh())
    if dropout:
        layers.append(torch.nn.Dropout(dropout))
    layers.append(torch.nn.Linear(8, 3))
    m = torch.nn.Sequential(*layers).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    return m


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long() + (X[:, 2] > 1).long()
    return X, y


def flat(m):
    return torch.cat([p.detach().reshape(-1) for p in m.parameters()])


def load(m, x):
    with torch.no_grad():
        i = 0
        for p in m.parameters():
            p.copy_(x[i:i + p.numel()].view_as(p))
            i += p.numel()


def naive_replay(trace, model, X, y, opt, lr, m=0.0, wd=0.0, init="zero", bn=False):
    """Keep every version; compute each row's gradient on a copy loaded with its read version
    (and, with BatchNorm, that version's buffers); average a step's rows; update."""
    model = copy.deepcopy(model)
    model.train()
    c = trace.columns
    T = trace.n_updates
    versions = [flat(model)]
    bufs = [[b.clone() for b in model.buffers()]]
    params = list(model.parameters())
    tor = None
    if opt == "sgd":
        tor = torch.optim.SGD(params, lr=lr, weight_decay=wd)
    elif opt == "momentum" and init == "gradient":
        tor = torch.optim.SGD(params, lr=lr, momentum=m, dampening=m, weight_decay=wd)
    elif opt == "adam":
        tor = torch.optim.Adam(params, lr=lr, weight_decay=wd)
    elif opt == "adamw":
        tor = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    v = torch.zeros_like(versions[0])
    vw = {}
    for t in range(T):
        rows = [j for j in range(len(c["step"])) if c["step"][j] == t]
        gs, out_bufs = [], None
        for j in rows:
            r = int(c["read_version"][j])
            w = copy.deepcopy(model)
            load(w, versions[r])
            for b, src in zip(w.buffers(), bufs[r]):
                b.copy_(src)
            loss = F.cross_entropy(w(X), y)
            g = torch.autograd.grad(loss, list(w.parameters()))
            gs.append(torch.cat([a.reshape(-1) for a in g]))
            out_bufs = [b.clone() for b in w.buffers()]  # the server keeps the last row's
        gbar = sum(gs) / len(gs)
        x = versions[-1].clone()
        if tor is not None:
            i = 0
            for p in params:
                p.grad = gbar[i:i + p.numel()].view_as(p).clone()
                i += p.numel()
            tor.step()
            xn = flat(model)
        elif opt == "momentum":  # zero init, dampened (paper eq. 9), coupled weight decay
            d = gbar + wd * x
            v = m * v - lr * (1 - m) * d
            xn = x + v
        else:  # shifted: each worker its own velocity; server adds the mean of the rows'
            acc = torch.zeros_like(x)
            for g, j in zip(gs, rows):
                wk = int(c["worker"][j])
                vw[wk] = m * vw.get(wk, torch.zeros_like(x)) - lr * (1 - m) * (g + wd * x)
                acc = acc + vw[wk]
            xn = x + acc / len(rows)
        load(model, xn)
        for b, src in zip(model.buffers(), out_bufs or []):
            b.copy_(src)
        versions.append(flat(model))
        bufs.append([b.clone() for b in model.buffers()])
    return model


CASES = [
    dict(opt="sgd", lr=0.3),
    dict(opt="sgd", lr=0.3, wd=0.05),
    dict(opt="momentum", lr=0.3, m=0.7),
    dict(opt="momentum", lr=0.3, m=0.7, wd=0.05),
    dict(opt="momentum", lr=0.3, m=0.7, init="gradient", wd=0.05),
    dict(opt="shifted", lr=0.3, m=0.6),
    dict(opt="shifted", lr=0.3, m=0.6, wd=0.05),
    dict(opt="adam", lr=0.02),
    dict(opt="adam", lr=0.02, wd=0.05),
    dict(opt="adamw", lr=0.02, wd=0.05),
]


def _replay_kwargs(case):
    kw = dict(optimizer=case["opt"], lr=case["lr"], momentum=case.get("m", 0.0))
    if "wd" in case:
        kw["weight_decay"] = case["wd"]
    if case.get("init") == "gradient":
        kw["momentum_init"] = "gradient"
    return kw


def _naive_case(trace_name, case, X, y):
    tr = TRACES[trace_name]()
    model = net()
    want = naive_replay(tr, model, X, y, case["opt"], case["lr"], case.get("m", 0.0), case.get("wd", 0.0),
                        case.get("init", "zero"))
    return tr, model, want


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("trace_name", list(TRACES))
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_module_replay_matches_naive_replay(data, trace_name, case):
    X, y = data
    tr, model, want = _naive_case(trace_name, case, X, y)
    p_before = list(model.parameters())
    r = replay(tr, model=model, loss=F.cross_entropy, dataset=(X, y), batch_size=None, device="cpu",
               log_every=25, engine="sequential", **_replay_kwargs(case))
    assert r.engine == "sequential" and r.steps == tr.n_updates and r.verdict != "diverged"
    assert r.final_loss < r.initial_loss  # it trained: the comparison is not vacuous
    # trained in place: the same Parameter objects hold the final values, in their own storage
    assert all(a is b for a, b in zip(p_before, model.parameters()))
    assert rel(flat(model), flat(want)) <= 1e-12
    np.testing.assert_array_equal(r.params, flat(model).numpy())
    # the logged final loss is the module's full-batch loss
    with torch.no_grad():
        assert r.final_loss == pytest.approx(float(F.cross_entropy(model(X), y)), rel=1e-12)


@pytest.mark.parametrize("trace_name", ["round_robin", "random"])
@pytest.mark.parametrize("case", [CASES[1], CASES[4], CASES[6], CASES[9]],
                         ids=["sgd-wd", "momentum-gradient-init", "shifted-wd", "adamw"])
def test_module_batched_engine_matches_naive_replay(data, trace_name, case):
    X, y = data
    tr, model, want = _naive_case(trace_name, case, X, y)
    r = replay(tr, model=model, loss=F.cross_entropy, dataset=(X, y), batch_size=None, device="cpu",
               log_every=25, engine="batched", **_replay_kwargs(case))
    assert r.engine == "batched"
    assert rel(flat(model), flat(want)) <= 1e-12


def test_batchnorm_buffers_follow_the_documented_rule(data):
    X, y = data
    for name in ("round_robin", "k_async"):
        tr = TRACES[name]()
        model = net(bn=True)
        want = naive_replay(tr, model, X, y, "momentum", 0.2, 0.5, bn=True)
        model.eval()  # the mode it comes in is the mode it leaves in
        r = replay(tr, model=model, loss=F.cross_entropy, dataset=(X, y), batch_size=None, device="cpu",
                   optimizer="momentum", momentum=0.5, lr=0.2, log_every=10)
        assert r.engine == "sequential" and not model.training
        assert rel(flat(model), flat(want)) <= 1e-12
        for b, bw in zip(model.buffers(), want.buffers()):
            if b.is_floating_point():
                assert rel(b, bw) <= 1e-12
            else:
                assert int(b) == int(bw) > 0  # num_batches_tracked
        # logged losses are in evaluation mode (running statistics)
        with torch.no_grad():
            assert r.final_loss == pytest.approx(float(F.cross_entropy(model(X), y)), rel=1e-12)
        with pytest.raises(InputError, match="batched engine"):
            replay(tr, model=model, dataset=(X, y), batch_size=None, lr=0.1, engine="batched", device="cpu")


def test_dropout_is_seeded_per_row_and_leaves_the_global_rng(data):
    X, y = data
    tr = round_robin(3, 40)
    runs = []
    for seed in (0, 0, 1):
        m = net(dropout=0.3)  # (nn.Linear's own initialisation draws from the global generator)
        state = torch.random.get_rng_state()
        replay(tr, model=m, dataset=(X, y), batch_size=None, lr=0.2, seed=seed, device="cpu", log_every=20)
        assert torch.equal(torch.random.get_rng_state(), state)
        runs.append(flat(m))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    # and dropout is really on for gradients: without it the run differs
    m = net(dropout=0.0)
    replay(tr, model=m, dataset=(X, y), batch_size=None, lr=0.2, device="cpu", log_every=20)
    assert not torch.equal(flat(m), runs[0])


def test_minibatches_data_forms_and_validation_curves(data):
    from torch.utils.data import Dataset, TensorDataset

    X, y = data

    class Pairs(Dataset):
        def __len__(self):
            return len(X)

        def __getitem__(self, i):
            return X[i], y[i]

    tr = async_exponential(4, 60, seed=2)
    outs = []
    for ds in ((X, y), {"X": X.numpy(), "y": y.numpy()}, TensorDataset(X, y), Pairs()):
        m = net()
        r = replay(tr, model=m, dataset=ds, val_dataset=(X[:10], y[:10]), batch_size=8, lr=0.3,
                   device="cpu", log_every=10)
        outs.append(flat(m))
        assert set(r.val_curves) == {"val_loss", "val_accuracy"}
        assert len(r.val_curves["val_loss"]) == len(r.log_step)
        with torch.no_grad():
            assert r.val_loss == pytest.approx(float(F.cross_entropy(m(X[:10]), y[:10])), rel=1e-12)
    for o in outs[1:]:
        assert torch.equal(o, outs[0])  # the same data in any form gives the same run
    # the default loss of integer targets is cross-entropy; regression gets MSE
    m1, m2 = net(), net()
    replay(tr, model=m1, dataset=(X, y), lr=0.3, device="cpu")
    replay(tr, model=m2, dataset=(X, y), loss=F.cross_entropy, lr=0.3, device="cpu")
    assert torch.equal(flat(m1), flat(m2))
    for bad in (dict(dataset="quadratic"), dict(dataset="digits"), dict(dataset=(X,)),
                dict(dataset=(X, y), loss=lambda out, t: F.cross_entropy(out, t, reduction="none")), dict(dataset=(X, y[:5])), dict(dataset=5),
                dict(dataset=(X, y), loss="hinge"), dict(dataset=(X, y), loss=3), dict(dataset=(X, y), batch_size=0)):
        with pytest.raises(InputError):
            replay(tr, model=net(), lr=0.1, device="cpu", **bad)


def test_replay_many_threshold_and_sharpness_with_a_module(data):
    X, y = data
    tr = round_robin(3, 60)
    m = net()
    x0 = flat(m).clone()
    res = replay_many(tr, [0.1, 0.3], model=m, dataset=(X, y), batch_size=None, device="cpu", log_every=20)
    assert torch.equal(flat(m), x0)  # left as handed over
    for lr, r in zip((0.1, 0.3), res):
        one = net()
        replay(tr, model=one, dataset=(X, y), batch_size=None, device="cpu", lr=lr, log_every=20)
        np.testing.assert_allclose(r.params, flat(one).numpy(), rtol=1e-12)
    # sharpness of the module's full-batch loss: Lanczos against the dense Hessian
    a = sharpness((X, y), model=m, loss=F.cross_entropy, batch_size=None, device="cpu")
    from torch.func import functional_call

    names = [n for n, _ in m.named_parameters()]
    shapes = [p.shape for p in m.parameters()]

    def f(x):
        d, i = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            d[n] = x[i:i + k].view(s)
            i += k
        return F.cross_entropy(functional_call(m, d, (X,)), y)

    H = torch.autograd.functional.hessian(f, x0)
    assert a == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-6)
    assert m.weight.dtype == torch.float64 if hasattr(m, "weight") else m[0].weight.dtype == torch.float64
    th = empirical_threshold(tr, dataset=(X, y), model=m, loss=F.cross_entropy, batch_size=None,
                             device="cpu", rtol=0.05, predictions=False)
    assert th.lr_stable is not None and th.lr_diverged is not None and th.lr_stable < th.lr_diverged
    assert torch.equal(flat(m), x0)


def test_frozen_parameters_stay_constant(data):
    X, y = data
    m = net()
    m[0].weight.requires_grad_(False)
    w0 = m[0].weight.detach().clone()
    r = replay(round_robin(2, 20), model=m, dataset=(X, y), lr=0.3, device="cpu")
    assert torch.equal(m[0].weight, w0) and r.params.size == sum(p.numel() for p in m.parameters()) - w0.numel()


@pytest.mark.cuda
def test_module_replay_on_cuda_matches_cpu(data):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    X, y = data
    tr = async_exponential(4, 40, seed=1)
    a, b = net(), net()
    replay(tr, model=a, dataset=(X, y), batch_size=None, lr=0.3, optimizer="adamw", device="cpu")
    r = replay(tr, model=b, dataset=(X, y), batch_size=None, lr=0.3, optimizer="adamw", device="cuda")
    assert r.device.startswith("cuda") and next(b.parameters()).is_cuda
    assert rel(flat(b).cpu(), flat(a)) <= 1e-10


@pytest.mark.cuda
def test_batchnorm_dropout_module_on_cuda_matches_cpu(data):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    X, y = data
    tr = round_robin(3, 30)
    a, b = net(bn=True), net(bn=True)
    replay(tr, model=a, dataset=(X, y), batch_size=8, lr=0.2, optimizer="momentum", momentum=0.5, device="cpu")
    replay(tr, model=b, dataset=(X, y), batch_size=8, lr=0.2, optimizer="momentum", momentum=0.5, device="cuda")
    assert rel(flat(b).cpu(), flat(a)) <= 1e-10
    for u, v in zip(a.buffers(), b.buffers()):
        if u.is_floating_point():
            assert rel(v.cpu(), u) <= 1e-10


def test_batch_loss_is_the_rows_loss_at_their_read_versions(data):
    """Full batch, no buffers: row j's minibatch loss is the full loss at version read_j, which
    the log of that version recorded; with log_every=1 the batch loss of update k is row k−1's."""
    X, y = data
    tr = round_robin(4, 30)
    reads = tr.columns["read_version"]
    for engine in ("sequential", "batched"):
        r = replay(tr, model=net(), dataset=(X, y), batch_size=None, lr=0.3, device="cpu", log_every=1,
                   engine=engine)
        assert np.isnan(r.batch_loss[0])
        np.testing.assert_allclose(r.batch_loss[1:], r.loss[reads[:30]], rtol=1e-12)
    # with log_every=5 it is the mean of the five rows' losses
    r = replay(tr, model=net(), dataset=(X, y), batch_size=None, lr=0.3, device="cpu", log_every=5)
    full = replay(tr, model=net(), dataset=(X, y), batch_size=None, lr=0.3, device="cpu", log_every=1)
    np.testing.assert_allclose(r.batch_loss[1:], full.batch_loss[1:].reshape(6, 5).mean(1), rtol=1e-12)
