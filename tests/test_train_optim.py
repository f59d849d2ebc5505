"""The optimizer core against torch.optim on the same gradient sequence (weight decay, momentum
inits and dampening, Adam/AdamW, schedules against torch.optim.lr_scheduler, clipping against
clip_grad_norm_), the authors' momentum convention through the factory path, and the verdict."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _traces import async_exponential, round_robin  # noqa: E402

from asyncsim.errors import InputError  # noqa: E402
from asyncsim.train import OptimizerSpec, parse_schedule, replay, verdict  # noqa: E402
from asyncsim.train.optim import apply_step, init_state  # noqa: E402

P, T = 7, 40


def grad_sequence(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(P, generator=g, dtype=torch.float64) * (1 + 3 * (t % 5 == 0)) for t in range(T)]


def ours(spec, lr, gs, x0):
    x = x0.clone()
    st = init_state(spec, x, 1)
    fac = None if spec.schedule.is_constant else spec.schedule.factors(len(gs))
    for t, g in enumerate(gs):
        apply_step(spec, x, st, [g], [0], [0], lr if fac is None else lr * float(fac[t]))
    return x


def theirs(make_opt, gs, x0, sched=None, clip=None):
    p = torch.nn.Parameter(x0.clone())
    opt = make_opt([p])
    sch = sched(opt) if sched is not None else None
    for g in gs:
        p.grad = g.clone()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([p], clip)
        opt.step()
        if sch is not None:
            sch.step()
    return p.detach()


def close(a, b, tol=1e-12):
    return float((a - b).abs().max() / b.abs().max()) <= tol


X0 = torch.linspace(-1, 1, P, dtype=torch.float64)
CASES = [
    ("sgd", dict(weight_decay=0.1), lambda p: torch.optim.SGD(p, lr=0.05, weight_decay=0.1)),
    ("momentum m=0.9 d=0 grad-init", dict(momentum=0.9, dampening=False, momentum_init="gradient", weight_decay=0.01),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01)),
    ("momentum m=0.9 d=0.9 grad-init", dict(momentum=0.9, dampening=True, momentum_init="gradient"),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.9)),
    ("momentum m=0.8 d=0.3 grad-init", dict(momentum=0.8, dampening=0.3, momentum_init="gradient", weight_decay=1e-2),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, dampening=0.3, weight_decay=1e-2)),
    ("adam", dict(), lambda p: torch.optim.Adam(p, lr=0.05)),
    ("adam wd", dict(weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6),
     lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6)),
    ("adamw", dict(), lambda p: torch.optim.AdamW(p, lr=0.05)),  # torch's default weight decay 1e-2
    ("adamw wd", dict(weight_decay=0.3), lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.3)),
]


def _name(label):
    return label.split()[0]


@pytest.mark.parametrize("label,kw,make", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_optim_on_the_same_gradients(label, kw, make):
    spec = OptimizerSpec(_name(label), **kw)
    gs = grad_sequence()
    assert close(ours(spec, 0.05, gs, X0), theirs(make, gs, X0))


SCHEDULES = [
    ("step:7:0.5", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5)),
    ("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=T)),
    ("cosine:0.1", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=T, eta_min=0.005)),
    ("warmup:5", lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / 5, total_iters=4)),
    ("warmup:5+cosine", lambda o: torch.optim.lr_scheduler.SequentialLR(
        o, [torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / 5, total_iters=4),
            torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=T - 5)], milestones=[5])),
]


@pytest.mark.parametrize("spec_text,sched", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_schedules_match_torch_lr_scheduler(spec_text, sched):
    import warnings

    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's deprecation notes
        s = sched(opt)
        want = []
        for _ in range(T):
            want.append(opt.param_groups[0]["lr"])
            opt.step()
            s.step()
    got = 0.05 * parse_schedule(spec_text).factors(T)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    # and a whole optimizer run under the schedule (momentum and Adam)
    gs = grad_sequence(1)
    for name, kw, make in (("sgd", {}, lambda q: torch.optim.SGD(q, lr=0.05)),
                           ("adamw", {}, lambda q: torch.optim.AdamW(q, lr=0.05)),
                           ("momentum", dict(momentum=0.9, dampening=False, momentum_init="gradient"),
                            lambda q: torch.optim.SGD(q, lr=0.05, momentum=0.9))):
        spec = OptimizerSpec(name, schedule=spec_text, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert close(ours(spec, 0.05, gs, X0), theirs(make, gs, X0, sched=sched))


@pytest.mark.parametrize("name,kw,make", [
    ("sgd", {}, lambda p: torch.optim.SGD(p, lr=0.05)),
    ("momentum", dict(momentum=0.9, dampening=False, momentum_init="gradient", weight_decay=0.05),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.05)),
    ("adam", {}, lambda p: torch.optim.Adam(p, lr=0.05)),
])
def test_clipping_matches_clip_grad_norm(name, kw, make):
    gs = grad_sequence(2)
    c = float(np.median([float(g.norm()) for g in gs]))  # about half of the steps are clipped
    spec = OptimizerSpec(name, clip_grad_norm=c, **kw)
    assert close(ours(spec, 0.05, gs, X0), theirs(make, gs, X0, clip=c))
    assert not close(ours(OptimizerSpec(name, **kw), 0.05, gs, X0), theirs(make, gs, X0, clip=c), 1e-3)


@pytest.mark.parametrize("m,d,w", [(0.9, 0.9, 1e-4), (0.9, 0.0, 1e-4), (0.7, 0.2, 0.0)])
@pytest.mark.parametrize("engine", ["sequential", "batched"])
def test_authors_convention_through_the_factory_path(m, d, w, engine):
    """momentum_init='gradient' == torch.optim.SGD(momentum=m, dampening=d, weight_decay=w),
    the latter replayed through the factory path (the seed's authors' trainer uses it)."""
    tr = async_exponential(5, 200, seed=4)
    kw = dict(dataset="quadratic", sharpness=1.5, dim=4, lr=0.1, device="cpu")
    ref = replay(tr, optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=m, dampening=d, weight_decay=w), **kw)
    damp = True if d == m else d
    mine = replay(tr, optimizer="momentum", momentum=m, dampening=damp, weight_decay=w,
                  momentum_init="gradient", engine=engine, **kw)
    np.testing.assert_allclose(mine.params, ref.params, rtol=1e-12)
    if d:
        # zero init (the default) makes the first step (1 − d) times as long: a different run
        zero = replay(tr, optimizer="momentum", momentum=m, dampening=damp, weight_decay=w, engine=engine, **kw)
        assert np.abs(zero.params - ref.params).max() > 1e-6


def test_shifted_gradient_init_starts_each_worker_at_its_first_gradient():
    # round robin, N = 3, quadratic f = ½ a x²: the first three steps are each worker's first
    # gradient at x0 = 1 (read version 0), so with momentum_init="gradient" x_t = 1 − t·η·a for
    # t ≤ 3 whatever m; with "zero", x_t = 1 − t·η(1−m)·a.
    tr = round_robin(3, 3)
    a, lr, m = 2.0, 0.05, 0.9
    r = replay(tr, optimizer="shifted", momentum=m, momentum_init="gradient", lr=lr, sharpness=a, device="cpu")
    assert r.params[0] == pytest.approx(1 - 3 * lr * a, rel=1e-14)
    r = replay(tr, optimizer="shifted", momentum=m, lr=lr, sharpness=a, device="cpu")
    assert r.params[0] == pytest.approx(1 - 3 * lr * (1 - m) * a, rel=1e-14)


def test_bad_optimizer_settings_are_input_errors():
    for bad in (dict(name="adam", momentum=0.5), dict(name="sgd", weight_decay=-1.0),
                dict(name="sgd", weight_decay=float("nan")), dict(name="momentum", momentum=0.5, momentum_init="one"),
                dict(name="adam", betas=(1.0, 0.9)), dict(name="adam", eps=-1.0),
                dict(name="sgd", clip_grad_norm=0.0), dict(name="momentum", momentum=0.5, dampening=1.5),
                dict(name="sgd", schedule="linear"), dict(name="sgd", schedule="step:0:0.5"),
                dict(name="sgd", schedule="cosine:2"), dict(name="sgd", schedule="warmup:0")):
        with pytest.raises(InputError):
            OptimizerSpec(**bad)


def test_verdict_rule():
    assert verdict([2.30, 45.0, 5.78], False) == "unstable"  # the run: not "fine"
    assert verdict([2.30, 1.2, 0.4], False) == "converged"
    assert verdict([2.30, 4.5, 0.4], False) == "converged"  # below 2x the start: a bump, not instability
    assert verdict([2.30, 2.2, 2.4], False) == "unstable"   # ended above where it started
    assert verdict([2.30, 0.1, 50.0, 0.5], False) == "unstable"  # a spike wiped out the progress
    assert verdict([2.30, 0.1, 50.0, 0.05], False) == "converged"  # ... and here it recovered
    assert verdict([0.5, 2.43, 1e-27], False) == "converged"  # a transient near the edge, then decay
    # a spike between two sparse logs is seen in the batch loss (the rows' minibatch losses)
    nan = float("nan")
    assert verdict([1.0, 0.3, 0.4], False) == "converged"
    assert verdict([1.0, 0.3, 0.4], False, batch_loss=[nan, 0.35, 5.0]) == "unstable"
    assert verdict([1.0, 0.3, 0.2], False, batch_loss=[nan, 0.35, 5.0]) == "converged"  # recovered
    assert verdict([2.30, 1e9], True) == "diverged"
    assert verdict([0.0, 0.0], False) == "converged"


def test_verdict_of_a_real_spiking_run():
    # quadratic, no delay, α = aη = 2.1 for 4 steps (|1 − α| > 1: the loss grows 1.21× a step)
    # then the run stays finite below 1e3×: "unstable", not "converged"
    from _traces import constant_delay

    tr = constant_delay(0, 8)
    r = replay(tr, lr=1.05, sharpness=2.0, device="cpu")
    assert not r.diverged and r.verdict == "unstable" and r.to_dict()["verdict"] == "unstable"
    r = replay(tr, lr=0.5, sharpness=2.0, device="cpu")
    assert r.verdict == "converged"


def test_shifted_momentum_clips_each_row_and_decays_at_the_server():
    # one update of two rows from workers 0 and 1: each row is clipped on its own, coupled weight
    # decay adds w·x_t to each, the server adds the mean of the two updated velocities
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    g0 = torch.tensor([[3.0, 4.0]], dtype=torch.float64)   # norm 5 → clipped to 1
    g1 = torch.tensor([[0.3, 0.4]], dtype=torch.float64)   # norm 0.5 → kept
    spec = OptimizerSpec("shifted", momentum=0.5, clip_grad_norm=1.0, weight_decay=0.1)
    st = init_state(spec, x, 2)
    lr, m, w = 0.2, 0.5, 0.1
    want = x.clone()
    c0 = g0 * min(1.0, 1.0 / (5.0 + 1e-6))
    v0 = -lr * (1 - m) * (c0 + w * x)
    v1 = -lr * (1 - m) * (g1 + w * x)
    want = x + (v0 + v1) / 2
    apply_step(spec, x, st, [g0, g1], [0, 1], [0, 0], lr)
    torch.testing.assert_close(x, want, rtol=1e-15, atol=0)
