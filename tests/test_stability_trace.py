"""Trace criterion: the Lyapunov estimator against a plain recursion and against closed forms."""

import math

import numpy as np
import pytest
from _traces import async_exponential, constant_delay, round_robin, sync

from asyncsim.stability import alpha_star as public_alpha_star
from asyncsim.stability.characteristic import mean_alpha_star
from asyncsim.stability import families
from asyncsim.stability.lyapunov import _Plan, lyapunov_exponents, trace_alpha_star
from asyncsim.trace import Trace


def mixed_trace(T=400, seed=0):
    """A hand-made trace with 1-3 rows per step, stale reads, and dropped rows (step −1)."""
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("step", "worker", "read_version", "t_read", "t_done", "t_applied")}
    for t in range(T):
        for j in range(int(rng.integers(1, 4))):
            cols["step"].append(t); cols["worker"].append(int(rng.integers(0, 4)))
            cols["read_version"].append(max(0, t - int(rng.integers(0, 6))))
            cols["t_read"].append(float(t)); cols["t_done"].append(float(t)); cols["t_applied"].append(float(t))
        if rng.random() < 0.2:  # a dropped gradient: contributes nothing
            cols["step"].append(-1); cols["worker"].append(int(rng.integers(0, 4)))
            cols["read_version"].append(t); cols["t_read"].append(float(t)); cols["t_done"].append(float(t))
            cols["t_applied"].append(float("nan"))
    return Trace.from_columns({k: np.asarray(v) for k, v in cols.items()}, n_workers=4, n_updates=T)


def plain_recursion(trace, alpha, optimizer, m):
    """The DESIGN.md / trainer recursion, written plainly without renormalisation.
    Returns the full history x_0..x_T and the final velocities."""
    rows, ptr = trace.step_index()
    w = trace.row_weights()
    rv, wk = trace.columns["read_version"], trace.columns["worker"]
    x = [1.0]
    v = 0.0
    V = np.zeros(trace.n_workers)
    for t in range(trace.n_updates):
        js = rows[ptr[t]:ptr[t + 1]]
        if optimizer == "sgd":
            x.append(x[t] - alpha * sum(w[j] * x[rv[j]] for j in js))
        elif optimizer == "momentum":
            v = m * v - alpha * (1 - m) * sum(w[j] * x[rv[j]] for j in js)
            x.append(x[t] + v)
        else:
            step = 0.0
            for j in js:
                V[wk[j]] = m * V[wk[j]] - alpha * (1 - m) * x[rv[j]]
                step += w[j] * V[wk[j]]
            x.append(x[t] + step)
    return np.array(x), (np.array([v]) if optimizer == "momentum" else V)


@pytest.mark.parametrize("optimizer,m", [("sgd", 0.0), ("momentum", 0.5), ("shifted", 0.7)])
def test_estimator_matches_plain_recursion(optimizer, m):
    # With burn-in 0 the accumulated log-normalisers equal log of the final state's size exactly:
    # the last D + 1 iterates (reads go back at most D = the largest staleness) and the velocities.
    tr = mixed_trace()
    plan = _Plan(tr)
    alphas = np.array([0.05, 0.2, 0.6, 1.5])
    lam = lyapunov_exponents(plan, alphas, optimizer, m, burn_in=0.0)
    for a, l in zip(alphas, lam):
        x, vel = plain_recursion(tr, a, optimizer, m)
        T = tr.n_updates
        window = x[max(0, T - plan.D):]
        size = max(np.abs(window).max(), np.abs(vel).max() if optimizer != "sgd" else 0.0)
        assert l == pytest.approx(math.log(size) / T, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("tau", [0, 1, 4, 16])
def test_constant_delay_trace_equals_mean_criterion(tau):
    # The transient bias of the growth estimate is O(window/T): measured below 1e-5 relative at
    # T = 20,000; 1e-3 leaves room for the grid interpolation of λ's zero.
    a = trace_alpha_star(constant_delay(tau, 20_000))
    assert a == pytest.approx(2 * math.sin(math.pi / (4 * tau + 2)), rel=1e-3)


@pytest.mark.parametrize("optimizer,m", [("momentum", 0.5), ("shifted", 0.5), ("shifted", 0.9)])
def test_constant_delay_trace_momentum_equals_mean(optimizer, m):
    # round robin with τ = N − 1 is exactly the paper's delayed (shifted) momentum recursion
    tau = 4
    a = trace_alpha_star(constant_delay(tau, 20_000), optimizer, m)
    assert a == pytest.approx(mean_alpha_star(families.constant(tau), optimizer, m), rel=2e-3)


def test_sync_trace_is_gd():
    # every update averages N gradients of staleness 0: x_{t+1} = (1 − α) x_t, α* = 2
    assert trace_alpha_star(sync(8, 5_000)) == pytest.approx(2.0, rel=1e-3)


@pytest.mark.slow
def test_async_exponential_8_workers():
    # DESIGN.md: about 0.68 at N = 8. Seeds 0..3 at 2·10⁵ updates gave 0.686-0.693 (spread 1%),
    # so ±5% is far wider than the sampling error of one long trace.
    tr = async_exponential(8, 200_000, seed=1)
    a = trace_alpha_star(tr)
    assert a == pytest.approx(0.68, rel=0.05)
    rr = 2 * math.sin(math.pi / (4 * 7 + 2))        # round robin N = 8: 0.209
    mean = mean_alpha_star(tr.delay_pmf())           # the mean criterion on this trace's pmf
    assert a > 3 * rr and mean > 10 * a


def test_round_robin_trace():
    a = trace_alpha_star(round_robin(32, 20_000))
    assert a == pytest.approx(2 * math.sin(math.pi / (4 * 31 + 2)), rel=1e-3)


def test_public_api_agrees():
    tr = constant_delay(3, 10_000)
    assert public_alpha_star(tr, criterion="trace") == pytest.approx(trace_alpha_star(tr), rel=5e-3)


@pytest.mark.parametrize("updates", [5, 20, 52])
def test_short_traces_measure_the_decay_not_the_ring(updates):
    """S-SGD (τ = 0) is gradient descent: α* = 2 whatever the trace's length. A trace shorter than
    the criterion's ring of past iterates once measured λ = 0 for every α (the norm included
    entries that were no longer state), so α* came out ≈ 1.7e-6."""
    import asyncsim
    from asyncsim.stability import analyze

    tr = asyncsim.simulate({"name": "s", "seed": 11, "policy": {"kind": "sync"}, "stop": {"updates": updates},
                            "workers": [{"count": 6, "compute": {"dist": "lognormal", "mean": 0.2, "cv": 0.08}}]})
    assert analyze(tr, criteria=("trace",)).alpha_star["trace"] == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize("optimizer,m,renorm_every", [("sgd", 0.0, None), ("sgd", 0.0, 37),
                                                      ("momentum", 0.6, None), ("shifted", 0.6, None),
                                                      ("shifted", 0.3, 37)])
def test_block_path_matches_plain_recursion_at_large_staleness(optimizer, m, renorm_every):
    """The passes renormalise only when their bound on the state's size passes e^500 (issue 21:
    the exact O(D·L) renormalisation every ~100 steps was 90 % of a pass at N = 1024), and apply
    runs of steps with old reads at once. With 64 workers most steps go through the block path
    (runs of ~10 steps). λ does not depend on the renormalisation schedule (log‖S_T‖ = Σ log
    normalisers + log‖H_T‖), so it must equal the plain recursion's log-size over T to rounding:
    ~T·eps relative on x, 1e-9 on λ."""
    tr = async_exponential(64, 3000, seed=5)
    plan = _Plan(tr)
    runs = plan.sgd_steps(10**6, plan.R // 2, 0, unique_workers=optimizer == "shifted")
    assert sum(t1 - t0 for t0, t1 in runs if t1 - t0 >= 8) > 0.5 * tr.n_updates
    alphas = np.array([0.003, 0.02, 0.05, 0.4, 4.0])  # decaying to fast-growing (x_T ~ e^{100+})
    lam = lyapunov_exponents(plan, alphas, optimizer, m, burn_in=0.0, renorm_every=renorm_every)
    T = tr.n_updates
    for a, l in zip(alphas, lam):
        x, vel = plain_recursion(tr, a, optimizer, m)
        size = max(np.abs(x[max(0, T - plan.D):]).max(), np.abs(vel).max() if optimizer != "sgd" else 0.0)
        assert l == pytest.approx(math.log(size) / T, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("optimizer", ["momentum", "shifted"])
def test_block_path_with_repeated_workers_and_several_rows(optimizer):
    """Runs of old reads in which one worker has several rows, steps of 1–3 rows, dropped rows:
    ``shifted`` must cut its runs where a worker repeats (its velocity changes in between)."""
    rng = np.random.default_rng(8)
    cols = {k: [] for k in ("step", "worker", "read_version", "t_read", "t_done", "t_applied")}
    T = 1500
    for t in range(T):
        for j in range(int(rng.integers(1, 4))):
            cols["step"].append(t); cols["worker"].append(int(rng.integers(0, 3)))
            cols["read_version"].append(max(0, t - int(rng.integers(20, 60))))
            for k in ("t_read", "t_done", "t_applied"):
                cols[k].append(float(t))
    tr = Trace.from_columns({k: np.asarray(v) for k, v in cols.items()}, n_workers=3, n_updates=T)
    plan = _Plan(tr)
    alphas = np.array([0.01, 0.1, 1.0])
    lam = lyapunov_exponents(plan, alphas, optimizer, 0.5, burn_in=0.0)
    for a, l in zip(alphas, lam):
        x, vel = plain_recursion(tr, a, optimizer, 0.5)
        size = max(np.abs(x[max(0, T - plan.D):]).max(), np.abs(vel).max())
        assert l == pytest.approx(math.log(size) / T, rel=1e-9, abs=1e-12)


def test_growth_bound_renormalises_before_overflow():
    """One stale read makes D = T − 1 (a ring of 8192, forced renormalisation only every 4096 steps)
    while every other step is GD with α = 30: |x| grows ×29 a step and passes 1e308 after 211 steps
    unless the growth bound renormalises. x_t = (−29)^t for t < T − 1, and the last step's extra
    −α·x_0 is lost in rounding, so λ = (T − 1)/T · log 29 (burn-in 0). At α = 0.5 the state decays
    through 10⁻¹⁸⁰⁶ (underflow unless renormalised) and the last step is −α·x_0: the final state's
    size is max(|x_1|, |x_T|) = 0.5."""
    T = 6000
    step = np.arange(T, dtype=np.int64)
    rv = step.copy()
    rv[-1] = 0
    t = step.astype(float)
    tr = Trace.from_columns({"step": step, "worker": np.zeros(T, dtype=np.int32), "read_version": rv,
                             "t_read": t, "t_done": t + 1, "t_applied": t + 1},
                            n_workers=1, sim_time=float(T), n_updates=T)
    lam = lyapunov_exponents(tr, [0.5, 30.0], burn_in=0.0)
    assert lam[1] == pytest.approx((T - 1) / T * math.log(29.0), rel=1e-12)
    assert lam[0] == pytest.approx(math.log(0.5) / T, rel=1e-9)


@pytest.mark.parametrize("optimizer,m", [("sgd", 0.0), ("momentum", 0.5), ("shifted", 0.5)])
def test_burn_in_is_discarded(optimizer, m):
    """λ = (log size(S_T) − log size(S_burn)) / (T − burn): the growth before the burn-in is not
    counted. (The momentum passes once ended the burn-in at their first renormalisation, ~80
    steps in, whatever burn_in said.) size(S_t) from the plain recursion on the whole trace and on
    its first ``burn`` steps."""
    tr = async_exponential(16, 2000, seed=6)
    T, burn = tr.n_updates, 1000
    cols = tr.columns
    keep = (cols["step"] >= 0) & (cols["step"] < burn)
    head = Trace.from_columns({k: cols[k][keep] for k in ("step", "worker", "read_version", "t_read",
                                                          "t_done", "t_applied")},
                              n_workers=tr.n_workers, n_updates=burn)
    plan = _Plan(tr)
    alphas = np.array([0.02, 0.3, 2.0])
    lam = lyapunov_exponents(plan, alphas, optimizer, m, burn_in=burn / T)

    def size(trace, a, t):
        x, vel = plain_recursion(trace, a, optimizer, m)
        return max(np.abs(x[max(0, t - plan.D):t + 1]).max(), np.abs(vel).max() if optimizer != "sgd" else 0.0)

    for a, l in zip(alphas, lam):
        want = (math.log(size(tr, a, T)) - math.log(size(head, a, burn))) / (T - burn)
        assert l == pytest.approx(want, rel=1e-9, abs=1e-12)
