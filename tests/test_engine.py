"""The SimPy reference engine against closed forms, brute force and its own contract.

Tolerances. Staleness and inter-update times in a trace are correlated, so
their standard error is estimated by *batch means*: the statistic is computed
on B = 20 contiguous blocks and SE = std(block values) / sqrt(B) (valid when a
block is much longer than the correlation time, here thousands of updates
against a correlation time of about N). A check passes within Z = 5 standard
errors (two-sided false-failure probability ~6e-7 per check; the seeds are
fixed so a pass is stable). Where the samples are i.i.d. (the rounds of sync
and backup) the SE comes from the closed-form variance / sqrt(n).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import asyncsim
from asyncsim.engine import simulate
from asyncsim.errors import InputError

Z = 5.0
ENGINE = "simpy"


def scen(n=4, compute=None, policy=None, updates=20_000, seed=1, **extra):
    sc = {
        "name": "t",
        "seed": seed,
        "workers": [{"count": n, "compute": compute or {"dist": "exponential", "mean": 1.0}}],
        "policy": policy or {"kind": "async"},
        "stop": {"updates": updates},
    }
    sc.update(extra)
    return sc


def batch_se(x: np.ndarray, blocks: int = 20) -> float:
    """Standard error of mean(x) by batch means over `blocks` contiguous blocks."""
    m = len(x) // blocks
    means = np.asarray(x[: m * blocks], dtype=float).reshape(blocks, m).mean(axis=1)
    return float(means.std(ddof=1) / math.sqrt(blocks))


def check_mean(x, expected, what=""):
    x = np.asarray(x, dtype=float)
    se = batch_se(x)
    assert abs(x.mean() - expected) <= Z * se, f"{what}: mean {x.mean():.5f} vs {expected:.5f} (SE {se:.2e})"


def check_pmf(staleness, pmf, kmax, what=""):
    """Each bin's frequency within Z batch-means SEs of the closed-form probability."""
    for k in range(kmax + 1):
        ind = (staleness == k).astype(float)
        se = max(batch_se(ind), math.sqrt(pmf[k] * (1 - pmf[k]) / len(ind)))
        assert abs(ind.mean() - pmf[k]) <= Z * se, f"{what}: P(tau={k}) {ind.mean():.4f} vs {pmf[k]:.4f}"


def harmonic(n: int) -> float:
    return sum(1.0 / i for i in range(1, n + 1))


# ------------------------------------------------------------------ async
def test_async_exponential_pmf_mean_and_rate():
    n, m, u = 8, 0.5, 40_000
    tr = simulate(scen(n, {"dist": "exponential", "mean": m}, updates=u), engine=ENGINE)
    st = tr.staleness
    assert tr.n_updates == u and len(tr) == u
    pmf = [(1 / n) * (1 - 1 / n) ** k for k in range(30)]
    check_pmf(st, pmf, 20, "async exp")
    check_mean(st, n - 1, "async mean staleness")
    # Update rate N/m: inter-update times are i.i.d. Exp(N/m) (superposition of N Poisson
    # processes), so SE of the mean gap is (m/N)/sqrt(u).
    gaps = np.diff(np.concatenate([[0.0], tr.t_applied]))
    assert abs(gaps.mean() - m / n) <= Z * (m / n) / math.sqrt(u)


@pytest.mark.parametrize("compute", [
    {"dist": "constant", "value": 1.0},
    {"dist": "uniform", "low": 0.5, "high": 1.5},
    {"dist": "lognormal", "mean": 1.0, "cv": 1.5},
])
def test_async_any_law_mean_staleness_is_n_minus_1(compute):
    # Each update is one worker's gradient and every worker always holds exactly one
    # pending gradient, so the mean number of updates between a worker's pull and its
    # update is N - 1 for any compute law (Little's law over the N in-flight gradients).
    n = 6
    tr = simulate(scen(n, compute, updates=30_000), engine=ENGINE)
    st = tr.staleness[n:]  # skip the start, where all workers read version 0
    if compute["dist"] == "constant":
        assert np.all(st == n - 1)
    else:
        check_mean(st, n - 1, f"async {compute['dist']}")


def test_heterogeneous_async_geometric_per_worker():
    # Worker i's gradient is overtaken by a Poisson stream of the others' updates:
    # tau_i ~ Geometric(p_i = mu_i / sum_j mu_j), mean (1 - p_i) / p_i.
    means = [0.25, 0.5, 1.0, 2.0]
    sc = {"name": "h", "seed": 3, "stop": {"updates": 60_000}, "policy": {"kind": "async"},
          "workers": [{"count": 1, "compute": {"dist": "exponential", "mean": m}} for m in means]}
    tr = simulate(sc, engine=ENGINE)
    mu = 1 / np.asarray(means)
    for i in range(len(means)):
        p = mu[i] / mu.sum()
        st = tr.staleness[tr.worker == i]
        check_mean(st, (1 - p) / p, f"worker {i}")
        check_pmf(st, [p * (1 - p) ** k for k in range(40)], 8, f"worker {i}")


def test_async_single_worker_has_no_staleness():
    tr = simulate(scen(1, updates=500), engine=ENGINE)
    assert np.all(tr.staleness == 0)


def test_async_matches_bruteforce_reference_statistically():
    """The engine and tests/_traces.py's independent loop agree on the staleness pmf."""
    from _traces import async_exponential

    n, u = 5, 40_000
    ref = async_exponential(n, u, seed=11, mean=1.0)
    tr = simulate(scen(n, updates=u, seed=11), engine=ENGINE)
    for k in range(12):
        a = (tr.staleness == k).astype(float)
        b = (ref.staleness == k).astype(float)
        se = math.hypot(batch_se(a), batch_se(b))
        assert abs(a.mean() - b.mean()) <= Z * se, f"P(tau={k}): {a.mean():.4f} vs {b.mean():.4f}"
    # and the time per update
    assert abs(tr.sim_time - ref.sim_time) / ref.sim_time < Z * math.sqrt(2 / u)


# ------------------------------------------------------------------- sync
def test_sync_time_per_update_is_m_H_N():
    # Rounds are i.i.d.: duration = max of N Exp(m), mean m H_N, variance m^2 sum 1/i^2.
    n, m, u = 8, 0.7, 6_000
    tr = simulate(scen(n, {"dist": "exponential", "mean": m}, {"kind": "sync"}, updates=u), engine=ENGINE)
    assert len(tr) == n * u and np.all(tr.staleness == 0)
    sd = m * math.sqrt(sum(1 / i**2 for i in range(1, n + 1)))
    assert abs(tr.sim_time / u - m * harmonic(n)) <= Z * sd / math.sqrt(u)
    rows, ptr = tr.step_index()
    assert np.all(np.diff(ptr) == n)
    # every update's rows are all N workers, in arrival (t_done) order
    for t in range(5):
        r = rows[ptr[t]:ptr[t + 1]]
        assert sorted(tr.worker[r]) == list(range(n))
        assert np.all(np.diff(tr.t_done[r]) >= 0)


# ----------------------------------------------------------------- backup
@pytest.mark.parametrize("n,k", [(8, 6), (5, 1), (6, 6)])
def test_backup_time_per_update_and_drops(n, k):
    # Round duration = K-th smallest of N Exp(m): mean m (H_N - H_{N-K}),
    # variance m^2 sum_{i=N-K+1}^{N} 1/i^2 (Renyi representation); rounds are i.i.d.
    m, u = 1.0, 6_000
    tr = simulate(scen(n, {"dist": "exponential", "mean": m}, {"kind": "backup", "aggregate": k}, updates=u),
                  engine=ENGINE)
    mean = m * (harmonic(n) - harmonic(n - k))
    sd = m * math.sqrt(sum(1 / i**2 for i in range(n - k + 1, n + 1)))
    assert abs(tr.sim_time / u - mean) <= Z * sd / math.sqrt(u)
    applied = tr.applied
    assert np.all(np.bincount(tr.step[applied], minlength=u) == k)
    # exactly N - K dropped per update: the dropped rows computed on version v
    dropped_by_version = np.bincount(tr.read_version[~applied], minlength=u)
    assert np.all(dropped_by_version[:u] == n - k)
    assert np.all(tr.staleness[applied] == 0)
    # preempted at the K-th arrival: a dropped row's t_done is that update's closing arrival
    close = np.array([tr.t_done[applied][tr.step[applied] == v].max() for v in range(20)])
    d = ~applied
    for v in range(20):
        assert np.allclose(tr.t_done[d & (tr.read_version == v)], close[v])


# ----------------------------------------------------------------- k_async
def kasync_pmf(n: int, k: int, kmax: int) -> list[float]:
    """Staleness pmf of k_async as specified (non-closing workers re-pull at once).

    Derivation (exponential compute, instant apply): arrivals are i.i.d. uniform over
    workers; a worker pulls right after its arrival at position r = (index mod K),
    uniform on 0..K-1, and its next arrival comes G ~ Geom(1/N) arrivals later, so
    tau = floor((r + G - 1) / K). With q = 1 - 1/N:
    P(tau >= j) = c q^{K(j-1)} for j >= 1, c = q (1 - q^K) / (K (1 - q)); mean (N-1)/K.
    (K = 1 gives the async geometric law.)
    """
    q = 1 - 1 / n
    c = q * (1 - q**k) / (k * (1 - q))
    return [1 - c] + [c * (1 - q**k) * q ** (k * (j - 1)) for j in range(1, kmax + 1)]


@pytest.mark.parametrize("n,k", [(8, 2), (12, 4), (6, 6)])
def test_kasync_staleness_law(n, k):
    u = 15_000
    tr = simulate(scen(n, policy={"kind": "k_async", "k": k}, updates=u), engine=ENGINE)
    assert np.all(np.bincount(tr.step, minlength=u) == k)
    st = tr.staleness[n:]
    check_mean(st, (n - 1) / k, "k_async mean")
    check_pmf(st, kasync_pmf(n, k, 10), 6, "k_async pmf")


def test_kasync_k1_is_async_row_for_row():
    for seed in (1, 2):
        for extra in ({}, {"server": {"apply": {"dist": "exponential", "mean": 0.05}}}):
            a = simulate(scen(5, updates=3000, seed=seed, **extra), engine=ENGINE)
            b = simulate(scen(5, policy={"kind": "k_async", "k": 1}, updates=3000, seed=seed, **extra),
                         engine=ENGINE)
            for c in a.columns:
                np.testing.assert_array_equal(a.columns[c], b.columns[c])


# -------------------------------------------------------------- round robin
@pytest.mark.parametrize("compute", [{"dist": "constant", "value": 1.0}, {"dist": "exponential", "mean": 1.0}])
def test_round_robin_staleness_exact(compute):
    n, u = 7, 3000
    tr = simulate(scen(n, compute, {"kind": "round_robin"}, updates=u), engine=ENGINE)
    step = tr.step
    assert np.array_equal(step, np.arange(u))
    assert np.array_equal(tr.worker, (np.arange(u) % n).astype(np.int32))
    # warm-up: everyone read version 0, so tau = step for the first N - 1 updates
    assert np.array_equal(tr.staleness[: n - 1], np.arange(n - 1))
    assert np.all(tr.staleness[n - 1:] == n - 1)
    if compute["dist"] == "constant":
        # All N finish at t = 1 and are applied in turn at t = 1 (zero apply time); each
        # worker re-pulls right after its apply, so round r is applied at t = r + 1.
        assert np.array_equal(tr.t_applied, np.arange(u) // n + 1.0)


# --------------------------------------------------------------------- ssp
@pytest.mark.parametrize("s", [0, 1, 3])
def test_ssp_bound(s):
    n, u = 6, 12_000
    comp = {"dist": "lognormal", "mean": 1.0, "cv": 1.0}
    sc = {"name": "s", "seed": 5, "stop": {"updates": u}, "policy": {"kind": "ssp", "bound": s},
          "workers": [{"count": 3, "compute": comp}, {"count": 3, "compute": {"dist": "exponential", "mean": 3.0}}]}
    tr = simulate(sc, engine=ENGINE)
    # Without a network a pull is instantaneous, so the row's t_read is when its clock
    # started. Worker w's clock c = number of its earlier rows. Check: when it started,
    # every worker had at least c - s gradients applied (counted with t_applied <= t_read).
    order = np.argsort(tr.t_applied, kind="stable")
    t_sorted = tr.t_applied[order]
    w_sorted = tr.worker[order]
    counts = np.zeros(n, dtype=int)
    for w in range(n):
        rows = np.flatnonzero(tr.worker == w)
        for c, r in enumerate(rows[::7]):  # every 7th clock keeps the check fast
            c = c * 7
            done = np.searchsorted(t_sorted, tr.t_read[r], side="right")
            counts[:] = np.bincount(w_sorted[:done], minlength=n)
            assert counts.min() >= c - s, (w, c, counts)
    assert tr.staleness.max() <= (n - 1) * (2 * s + 1)
    # the gate binds: plain async on the same cluster goes beyond the SSP bound
    free = simulate(dict(sc, policy={"kind": "async"}), engine=ENGINE)
    assert free.staleness.max() > (n - 1) * (2 * s + 1)


# ----------------------------------------------------------- reproducibility
def test_same_seed_byte_identical_parquet(tmp_path):
    sc = scen(6, policy={"kind": "backup", "aggregate": 4}, updates=2000, seed=9)
    a, b = simulate(sc, engine=ENGINE), simulate(sc, engine=ENGINE)
    a.save(tmp_path / "a.parquet")
    b.save(tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    c = simulate(sc, seed=10, engine=ENGINE)
    assert not np.array_equal(a.t_done, c.t_done)
    assert c.seed == 10 and c.scenario["seed"] == 10


def test_adding_a_group_keeps_worker0_draws():
    from asyncsim.distributions import Exponential
    from asyncsim.rng import BlockSampler, Streams

    base = scen(1, {"dist": "exponential", "mean": 1.0}, {"kind": "sync"}, updates=200, seed=4)
    more = dict(base, workers=base["workers"] + [{"count": 3, "compute": {"dist": "gamma", "mean": 2.0, "cv": 0.5}}])
    expected = BlockSampler(Exponential(mean=1.0), Streams(4).worker(0, "compute")).take(200)
    for sc in (base, more):
        tr = simulate(sc, engine=ENGINE)
        d = (tr.t_done - tr.t_read)[tr.worker == 0]
        # times are differences of absolute times, so compare to ~1e-12 of the clock
        np.testing.assert_allclose(d, expected[: len(d)], rtol=0, atol=1e-12 * tr.sim_time)


def test_common_random_numbers_across_policies():
    # The same worker gets the same compute stream under every policy.
    draws = []
    for pol in ({"kind": "async"}, {"kind": "round_robin"}, {"kind": "sync"}):
        tr = simulate(scen(3, policy=pol, updates=300, seed=2), engine=ENGINE)
        draws.append((tr.t_done - tr.t_read)[tr.worker == 1][:50])
    np.testing.assert_allclose(draws[0], draws[1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(draws[0], draws[2], rtol=0, atol=1e-9)


# ---------------------------------------------------------------- contract
def test_stop_by_time_and_metadata():
    sc = scen(4, policy={"kind": "async"}, seed=2)
    sc["stop"] = {"time": 50.0}
    tr = simulate(sc, engine=ENGINE)
    assert tr.sim_time == 50.0
    assert tr.t_applied.max() <= 50.0
    assert tr.n_updates == len(tr)
    assert tr.meta == {"policy": "async"}
    assert tr.scenario["stop"] == {"time": 50.0}
    # a longer run has the same prefix: nothing after the stop leaked in or out
    sc["stop"] = {"time": 80.0}
    longer = simulate(sc, engine=ENGINE)
    np.testing.assert_array_equal(longer.t_applied[: len(tr)], tr.t_applied)
    assert longer.t_applied[len(tr)] > 50.0


def test_updates_override_stop_and_sim_time():
    sc = scen(4, updates=10)
    sc["stop"] = {"time": 5.0}
    tr = simulate(sc, updates=123, engine=ENGINE)
    assert tr.n_updates == 123 and len(tr) == 123
    assert tr.sim_time == tr.t_applied[-1]
    assert tr.scenario["stop"] == {"updates": 123}


def test_progress_called_boundedly():
    calls = []
    simulate(scen(4, updates=50_000), engine=ENGINE, progress=calls.append)
    assert 1 <= len(calls) <= 202
    assert all(0 <= c <= 1 for c in calls) and calls[-1] == 1.0
    assert calls == sorted(calls)
    calls.clear()
    sc = scen(4)
    sc["stop"] = {"time": 100.0}
    simulate(sc, engine=ENGINE, progress=calls.append)
    assert 1 <= len(calls) <= 202 and calls[-1] == 1.0


def test_scenario_inputs_and_engine_errors(tmp_path):
    import yaml

    d = scen(3, updates=50)
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    a = simulate(str(p), engine=ENGINE)
    b = simulate(asyncsim.load_scenario(d), engine=ENGINE)
    np.testing.assert_array_equal(a.t_done, b.t_done)
    assert asyncsim.simulate(d, engine="simpy").n_updates == 50
    with pytest.raises(InputError, match="unknown engine"):
        simulate(d, engine="warp")
    with pytest.raises(InputError):
        simulate(d, updates=0)
