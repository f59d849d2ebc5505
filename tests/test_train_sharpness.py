"""Sharpness (λ_max of the training-loss Hessian) against closed forms and a dense
eigendecomposition; the empirical threshold against the constant-delay closed form."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _traces import constant_delay  # noqa: E402

from asyncsim.train import empirical_threshold, find_minimum, make_problem, sharpness, sharpness_info  # noqa: E402


@pytest.mark.parametrize("method,kw", [("lanczos", {}), ("power", {"tol": 1e-13, "max_iter": 3000})])
def test_known_quadratic(method, kw):
    # λ = 3.7 · geomspace(1, 0.1, 20): λ_max = 3.7 exactly, λ_2/λ_1 = 0.886
    info = sharpness_info("quadratic", sharpness=3.7, dim=20, method=method, device="cpu", **kw)
    assert info.converged
    assert abs(info.value - 3.7) <= 1e-6 * 3.7
    if method == "lanczos":
        assert info.hvps <= 20


def dense_top_eigenvalue(p, x):
    def f(flat):
        out = p.model.forward(p._views(flat), p.Xh)
        return p._per_sample(out, p.yh).mean()

    H = torch.autograd.functional.hessian(f, x)
    return float(torch.linalg.eigvalsh(H).max())


@pytest.mark.parametrize("dataset,model", [("teacher", "mlp:6"), ("digits", "linear")])
def test_small_mlp_matches_dense_hessian(dataset, model):
    p = make_problem(dataset, model, device="cpu", dtype="float64", dim=4)
    x = p.init_params(1)
    want = dense_top_eigenvalue(p, x)
    got = sharpness(p, params=x, method="lanczos")
    assert got == pytest.approx(want, rel=1e-6)  # the issue asks 1%; Lanczos does far better
    got = sharpness(p, params=x, method="power", tol=1e-10, max_iter=3000)
    assert got == pytest.approx(want, rel=1e-2)


def test_find_minimum_lowers_the_loss_and_sharpness_there():
    p = make_problem("teacher", "mlp:8", device="cpu", dtype="float64", dim=4)
    x0 = p.init_params(0)
    xm = find_minimum(p, steps=300, seed=0)
    assert float(p.loss(xm[None])[0]) < 0.5 * float(p.loss(x0[None])[0])
    assert sharpness(p, params=xm) == pytest.approx(dense_top_eigenvalue(p, xm), rel=1e-6)


def test_empirical_threshold_constant_delay_sgd():
    tau, a = 3, 2.0
    astar = 2 * np.sin(np.pi / (4 * tau + 2))
    tr = constant_delay(tau, 4000)
    res = empirical_threshold(tr, "quadratic", sharpness=a, rtol=0.005, device="cpu", predictions=False)
    assert res.sharpness == pytest.approx(a, rel=1e-9)
    assert res.lr_diverged / res.lr_stable - 1 <= 0.005
    # Finite runs: at α just above α* the loss grows slowly (spectral radius 1 + O(α − α*)), so the
    # empirical edge lies slightly above α*; with 4,000 steps and a 1e3 loss factor the spectral
    # radius must exceed 1e3^(1/8000) ≈ 1.0009, which the polynomial reaches by 1.01 α*.
    assert astar * 0.999 <= res.alpha <= astar * 1.02
    assert res.rounds >= 2 and len(res.evaluations) >= 8


def test_threshold_from_minimum_on_a_model_brackets():
    from _traces import round_robin

    tr = round_robin(4, 200)
    res = empirical_threshold(tr, "teacher", "mlp:8", dim=4, from_minimum=True, pretrain_steps=200,
                              rtol=0.05, device="cpu", predictions=False)
    assert res.from_minimum and res.sharpness > 0
    assert res.lr_stable is not None and res.lr_diverged is not None
    assert res.lr_diverged > res.lr_stable and res.lr_diverged / res.lr_stable - 1 <= 0.05
    lr_div = [lr for lr, d, _ in res.evaluations if d]
    assert min(lr_div) == res.lr_diverged
