"""Trace replay on the quadratic against hand-written recursions, constant-delay thresholds
against the characteristic polynomials, divergence as a result, and the stochastic-trace
criterion of the stability module."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _traces import async_exponential, constant_delay, round_robin, sync  # noqa: E402

from asyncsim.trace import Trace  # noqa: E402
from asyncsim.train import make_plan, replay, replay_many  # noqa: E402
from asyncsim.testing import assert_diverges, assert_stable  # noqa: E402


# ----------------------------------------------------------------- independent truths
def recursion(trace, lam, lr, opt="sgd", m=0.0, dampening=True, steps=None, staleness_aware=False,
              dc=0.0):
    """The update equations written out with numpy, keeping every version x_0..x_T."""
    lam = np.asarray(lam, dtype=float)
    c = trace.columns
    T = trace.n_updates if steps is None else steps
    xs = [np.ones_like(lam)]
    v = np.zeros_like(lam)
    vw = {}
    for t in range(T):
        rows = [j for j in range(len(c["step"])) if c["step"][j] == t]
        x = xs[-1]
        gs, ws = [], []
        for j in rows:
            r = int(c["read_version"][j])
            g = lam * xs[r]
            if dc:
                g = g + dc * g * g * (x - xs[r])
            if staleness_aware:
                g = g / max(int(c["staleness"][j]), 1)
            gs.append(g)
            ws.append(int(c["worker"][j]))
        K = len(gs)
        if opt == "sgd":
            xn = x - lr * sum(gs) / K
        elif opt == "momentum":
            if dampening:
                v = m * v - lr * (1 - m) * (sum(gs) / K)
                xn = x + v
            else:
                v = m * v + sum(gs) / K
                xn = x - lr * v
        else:  # shifted: each worker its own velocity, server adds the mean of the rows'
            acc = np.zeros_like(lam)
            for g, w in zip(gs, ws):
                old = vw.get(w, np.zeros_like(lam))
                vw[w] = m * old - lr * (1 - m) * g if dampening else m * old + g
                acc = acc + vw[w]
            xn = x + acc / K if dampening else x - lr * acc / K
        xs.append(xn)
    return np.array(xs)


def with_dropped(n_workers=4, updates=60, seed=0):
    """A backup-worker-like trace: S-SGD where the slowest worker's gradient is dropped."""
    base = sync(n_workers, updates, seed=seed)
    c = {k: v.copy() for k, v in base.columns.items()}
    rng = np.random.default_rng(seed)
    drop = np.arange(updates) * n_workers + rng.integers(0, n_workers, updates)
    c["step"][drop] = -1
    c["t_applied"][drop] = np.nan
    c.pop("staleness")
    order = np.argsort(np.where(c["step"] >= 0, c["t_applied"], c["t_done"]), kind="stable")
    c = {k: v[order] for k, v in c.items()}
    return Trace.from_columns(c, n_workers=n_workers, sim_time=base.sim_time, n_updates=updates)


TRACES = {
    "round_robin": lambda: round_robin(4, 80),
    "async": lambda: async_exponential(6, 80, seed=3),
    "sync": lambda: sync(3, 40, seed=1),
    "dropped": lambda: with_dropped(),
}
OPTS = [("sgd", 0.0, True), ("momentum", 0.7, True), ("momentum", 0.7, False),
        ("shifted", 0.7, True), ("shifted", 0.7, False)]


def loss_of(xs, lam):
    return 0.5 * (xs * xs * np.asarray(lam)).sum(-1)


@pytest.mark.parametrize("trace_name", list(TRACES))
@pytest.mark.parametrize("opt,m,damp", OPTS)
@pytest.mark.parametrize("dim", [1, 5])
def test_quadratic_matches_hand_recursion(trace_name, opt, m, damp, dim):
    tr = TRACES[trace_name]()
    lam = [1.7] if dim == 1 else list(1.7 * np.geomspace(1, 0.1, dim))
    lr = 0.3 if damp else 0.3 * (1 - m)  # same effective step either convention
    want = recursion(tr, lam, lr, opt, m, damp)
    for engine in ("sequential", "batched"):
        r = replay(tr, dataset="quadratic", sharpness=1.7, dim=dim, lr=lr, optimizer=opt, momentum=m,
                   dampening=damp, engine=engine, device="cpu")
        assert r.engine == engine
        assert not r.diverged
        assert np.allclose(r.params, want[-1], rtol=1e-12, atol=1e-300)
        # every logged loss is f(x_k) of the recursion
        np.testing.assert_allclose(r.loss, loss_of(want[r.log_step], lam), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("extra", [{"staleness_aware": True}, {"dc_lambda": 0.4},
                                   {"staleness_aware": True, "dc_lambda": 0.4}])
@pytest.mark.parametrize("opt,m", [("sgd", 0.0), ("momentum", 0.5), ("shifted", 0.5)])
def test_staleness_aware_and_dc_match_recursion(extra, opt, m):
    tr = async_exponential(5, 80, seed=2)
    lam = list(2.0 * np.geomspace(1, 0.1, 3))  # the quadratic dataset: condition 10
    want = recursion(tr, lam, 0.25, opt, m, staleness_aware=extra.get("staleness_aware", False),
                     dc=extra.get("dc_lambda", 0.0))
    for engine in ("sequential", "batched"):
        r = replay(tr, dataset="quadratic", sharpness=2.0, dim=3, lr=0.25, optimizer=opt, momentum=m,
                   engine=engine, device="cpu", **extra)
        np.testing.assert_allclose(r.params, want[-1], rtol=1e-12)


def test_log_steps_and_sim_time_follow_the_trace():
    tr = async_exponential(4, 50, seed=5)
    r = replay(tr, lr=0.1, log_every=7, device="cpu")
    assert list(r.log_step) == [0, 7, 14, 21, 28, 35, 42, 49, 50]
    rows, ptr = tr.step_index()
    t_app = tr.columns["t_applied"][rows[ptr[:-1]]]
    np.testing.assert_array_equal(r.sim_time[1:], t_app[r.log_step[1:] - 1])
    assert r.sim_time[0] == 0.0
    assert r.steps == 50 and r.final_loss == r.loss[-1]


def test_divergence_is_a_result_with_its_step():
    # No delay, α = aη = 3: x_t = (1-α)^t, loss ratio 4^t, first > 1e3 at t = 5.
    tr = constant_delay(0, 100)
    r = replay(tr, lr=1.5, sharpness=2.0, device="cpu")
    assert r.diverged and r.diverged_step == 5 and r.steps == 5
    assert r.final_loss == pytest.approx(0.5 * 2.0 * 4.0 ** 5, rel=1e-12)
    assert r.to_dict()["diverged"] is True
    # divergence_factor is honoured: 4^t > 10 first at t = 2
    r = replay(tr, lr=1.5, sharpness=2.0, device="cpu", divergence_factor=10)
    assert r.diverged_step == 2
    # non-finite loss counts as divergence (overflow to inf between logged steps)
    r = replay(tr, lr=1.5e10, sharpness=2.0, device="cpu", log_every=50, divergence_factor=1e300)
    assert r.diverged and r.diverged_step == 50 and not np.isfinite(r.final_loss)
    assert r.to_dict()["final_loss"] is None


def test_replay_many_runs_diverge_separately():
    tr = constant_delay(0, 100)
    res = replay_many(tr, lrs=[0.5, 1.5, 1.2], sharpness=2.0, device="cpu")
    assert [r.diverged for r in res] == [False, True, True]
    # |1-α| = 2 → step 5; |1-α| = 1.4 → first t with 1.96^t > 1e3 is t = 11
    assert res[1].diverged_step == 5 and res[2].diverged_step == 11
    single = replay(tr, lr=1.2, sharpness=2.0, device="cpu")
    np.testing.assert_array_equal(single.loss, res[2].loss)


def alpha_star_poly(opt, tau, m):
    """Largest α with every root of the characteristic polynomial (DESIGN.md) inside the unit
    circle: a grid scan for the first unstable α, then bisection with numpy.roots."""
    def poly(a):
        if opt == "sgd":
            c = np.zeros(tau + 2); c[0], c[1] = 1, -1; c[-1] += a
        elif opt == "momentum":
            c = np.zeros(tau + 2); c[0], c[1] = 1, -(1 + m); c[2] += m; c[-1] += a * (1 - m)
        else:
            c = np.zeros(tau + 3); c[0], c[1] = 1, -1; c[-2] += a * (1 - m) - m; c[-1] += m
        return c

    def unstable(a):
        return np.abs(np.roots(poly(a))).max() >= 1.0

    grid = np.linspace(1e-4, 4.0, 4001)
    i = next(i for i, a in enumerate(grid) if unstable(a))
    lo, hi = grid[i - 1], grid[i]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if not unstable(mid) else (lo, mid)
    return lo


def test_alpha_star_poly_matches_closed_form():
    for tau in (1, 2, 5):
        assert alpha_star_poly("sgd", tau, 0.0) == pytest.approx(2 * np.sin(np.pi / (4 * tau + 2)), rel=1e-9)


@pytest.mark.parametrize("opt,m", [("sgd", 0.0), ("momentum", 0.5), ("shifted", 0.5)])
@pytest.mark.parametrize("tau", [2, 4])
def test_constant_delay_threshold(opt, m, tau):
    a = 2.0
    astar = alpha_star_poly(opt, tau, m)
    tr = constant_delay(tau, 3000)
    kw = dict(dataset="quadratic", sharpness=a, optimizer=opt, momentum=m, device="cpu", log_every=10)
    # spectral radius at 0.95 α* is ≤ 0.997 for these cases: 3000 steps shrink the loss a lot;
    # at 1.05 α* it is ≥ 1.003, so the loss passes 1e3 × initial within ~1,200 steps.
    r = assert_stable(tr, lr=0.95 * astar / a, max_loss_ratio=1e-3, **kw)
    assert r.steps == 3000
    assert_diverges(tr, lr=1.05 * astar / a, **kw)


def test_stochastic_trace_threshold_matches_trace_criterion():
    st = pytest.importorskip("asyncsim.stability")
    if not hasattr(st, "alpha_star"):
        pytest.skip("asyncsim.stability.alpha_star not available yet")
    tr = async_exponential(8, 4000, seed=11)
    astar = float(getattr(st.alpha_star(tr, criterion="trace"), "alpha_star",
                          st.alpha_star(tr, criterion="trace")))
    a = 1.0
    kw = dict(dataset="quadratic", sharpness=a, device="cpu", log_every=10)
    assert_stable(tr, lr=0.9 * astar / a, **kw)
    assert_diverges(tr, lr=1.1 * astar / a, **kw)


def test_user_torch_optimizer_matches_builtin():
    tr = async_exponential(4, 60, seed=1)
    ref = replay(tr, lr=0.2, dim=3, sharpness=1.5, device="cpu", engine="sequential")
    mine = replay(tr, lr=0.2, dim=3, sharpness=1.5, device="cpu",
                  optimizer=lambda p: torch.optim.SGD(p, lr=0.2))
    np.testing.assert_allclose(mine.params, ref.params, rtol=1e-13)
    # PyTorch momentum is the documented dampening=False convention
    ref = replay(tr, lr=0.2, dim=3, sharpness=1.5, device="cpu", optimizer="momentum", momentum=0.8,
                 dampening=False)
    mine = replay(tr, lr=0.2, dim=3, sharpness=1.5, device="cpu",
                  optimizer=lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.8))
    np.testing.assert_allclose(mine.params, ref.params, rtol=1e-12)


def test_steps_truncates_and_bad_inputs():
    from asyncsim.errors import InputError

    tr = round_robin(3, 40)
    r = replay(tr, lr=0.1, steps=10, device="cpu")
    assert r.steps == 10
    want = recursion(tr, [1.0], 0.1, steps=10)
    np.testing.assert_allclose(r.params, want[-1], rtol=1e-12)
    for bad in (dict(lr=-1.0), dict(lr=0.1, steps=41), dict(lr=0.1, optimizer="lamb"), dict(lr=0.1, optimizer="adam", momentum=0.9),
                dict(lr=0.1, optimizer="momentum", momentum=1.0), dict(lr=0.1, dataset="mnist"),
                dict(lr=0.1, dataset="digits", model="transformer"), dict(lr=0.1, model="mlp"),
                dict(lr=0.1, device="tpu"), dict(lr=0.1, engine="warp")):
        with pytest.raises(InputError):
            replay(tr, **bad)


def test_plan_occurrence_keys_duplicate_worker_rows():
    # a worker with two gradients in one update (k-async) gets two different minibatches
    c = {"step": np.array([0, 0, 1]), "worker": np.array([1, 1, 0], dtype=np.int32),
         "read_version": np.array([0, 0, 0]), "t_read": np.zeros(3), "t_done": np.array([1., 1., 2.]),
         "t_applied": np.array([1., 1., 2.])}
    p = make_plan(Trace.from_columns(c, n_workers=2))
    assert list(p.occ) == [0, 1, 0]


def test_progress_callback_sees_every_update_count():
    seen = []
    tr = round_robin(3, 400)
    for engine in ("sequential", "batched"):
        seen.clear()
        replay(tr, lr=0.1, device="cpu", engine=engine, progress=lambda done, total: seen.append((done, total)))
        assert seen and all(t == 400 for _, t in seen)
        assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1][0] == 400
