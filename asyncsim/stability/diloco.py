r"""Stability of local SGD and the DiLoCo family on the quadratic: closed forms and the trace criterion.

**Synchronous rounds, SGD inner steps** (docs/theory.md, "Local SGD and DiLoCo"). On
f(x) = ½ a x² with inner learning rate η (α = aη), H inner steps from the global θ give
x = (1 − α)^H θ, so every worker's pseudo-gradient is Δ = c·θ with

    c(α) = 1 − (1 − α)^H.

The outer optimizer is torch.optim.SGD with lr η_o and momentum μ; with β = η_o·c,

* heavy-ball: θ_{k+1} = (1 − β + μ) θ_k − μ θ_{k−1}: z² − (1 − β + μ) z + μ = 0, stable (Jury)
  iff |μ| < 1 and 0 < β < 2(1 + μ);
* Nesterov: z² − (1 + μ)(1 − β) z + μ(1 − β) = 0, stable iff |μ(1 − β)| < 1 and
  0 < β < 2(1 + μ)/(1 + 2μ); for 0 ≤ μ < 1 the first condition follows from the second.

So the outer learning rate is bounded by :func:`diloco_outer_lr_max` = B(μ)/c(α) with B the
bound above, and for a given outer lr the inner α is bounded by :func:`diloco_alpha_star`, the
first crossing of c(α) = B/η_o from α = 0. For odd H, c increases without bound and the stable
set is (0, α*); for even H, c ≤ 1 on (0, 2) and the stable set is (0, 1 − ρ) ∪ (1 + ρ, 2)
with ρ = (1 − B/η_o)^{1/H} when η_o > B, and all of (0, 2) otherwise
(:func:`diloco_alpha_intervals`). local_sgd (η_o = 1, μ = 0) is stable iff α < 2, as GD.

**Trace criterion.** For streaming and asynchronous outer updates the delays act on the outer
recursion. :func:`diloco_lyapunov` runs the linearised replay of a trace — the operations of
:func:`asyncsim.train.outer.build_ops`, the same order as the trainer's replay — on one
coordinate of every fragment, for a vector of (α, η_o) lanes at once: inner steps multiply a
replica by (1 − α), merges mix, takes form Δ = anchor − replica, outer updates apply
torch.optim.SGD's step to the fragment. Its top Lyapunov exponent per outer update (state
renormalised after every update, the logs of the normalisers accumulated after a burn-in) crosses
0 at the stability boundary; :func:`diloco_trace_alpha_star` and :func:`diloco_trace_outer_lr_max`
find that crossing. On a synchronous trace it equals the closed form.

Cost: the closed forms O(1); the trace criterion O(ops · lanes) per evaluation, ops ≈ 3 × rows
plus the inner-step groups.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from ..train.outer import INNER, MERGE, TAKE, OuterPlan, OuterPolicy, make_outer_plan, policy_of

SYNC_KINDS = ("local_sgd", "diloco")


# ----------------------------------------------------------------------------- closed forms
def _check(inner_steps, outer_momentum) -> tuple[int, float]:
    H = int(inner_steps)
    mu = float(outer_momentum)
    if H < 1:
        raise InputError(f"inner_steps must be >= 1, got {inner_steps}")
    if not (0.0 <= mu < 1.0):
        raise InputError(f"outer_momentum must be in [0, 1), got {outer_momentum}")
    return H, mu


def pseudo_gradient_factor(alpha, inner_steps: int):
    """c(α) = 1 − (1 − α)^H: the pseudo-gradient of H GD steps on the quadratic is c·θ."""
    return 1.0 - (1.0 - np.asarray(alpha, dtype=float)) ** int(inner_steps)


def outer_bound(outer_momentum: float = 0.0, nesterov: bool = False) -> float:
    """B(μ): the outer recursion is stable iff 0 < η_o·c < B (heavy-ball 2(1+μ), Nesterov 2(1+μ)/(1+2μ))."""
    mu = float(outer_momentum)
    return 2.0 * (1.0 + mu) / (1.0 + 2.0 * mu) if nesterov else 2.0 * (1.0 + mu)


def outer_characteristic(beta: float, outer_momentum: float = 0.0, nesterov: bool = False) -> np.ndarray:
    """Coefficients (highest power first) of the outer recursion's characteristic polynomial at β = η_o·c."""
    mu = float(outer_momentum)
    if nesterov:
        return np.array([1.0, -(1.0 + mu) * (1.0 - beta), mu * (1.0 - beta)])
    return np.array([1.0, -(1.0 - beta + mu), mu])


def diloco_outer_lr_max(alpha: float, inner_steps: int, outer_momentum: float = 0.0,
                        nesterov: bool = False) -> float:
    """Largest stable outer lr at inner α (synchronous rounds, SGD inner steps): B(μ)/c(α);
    ``inf`` where c = 0 (α = 0, or α = 2 for even H), 0 where c < 0 (no outer lr is stable)."""
    H, mu = _check(inner_steps, outer_momentum)
    c = float(pseudo_gradient_factor(alpha, H))
    if c == 0.0:
        return math.inf
    if c < 0.0:
        return 0.0
    return outer_bound(mu, nesterov) / c


def diloco_alpha_star(inner_steps: int, outer_lr: float, outer_momentum: float = 0.0,
                      nesterov: bool = False) -> float:
    """Largest stable inner α from 0 (the first boundary crossing) for synchronous rounds with
    SGD inner steps: the root of c(α) = B(μ)/η_o, or 2 for even H when η_o ≤ B (c ≤ 1 there)."""
    H, mu = _check(inner_steps, outer_momentum)
    eta_o = float(outer_lr)
    if not (math.isfinite(eta_o) and eta_o > 0):
        raise InputError(f"outer_lr must be a finite number > 0, got {outer_lr}")
    r = outer_bound(mu, nesterov) / eta_o
    if H % 2 == 0:
        return 2.0 if r >= 1.0 else 1.0 - (1.0 - r) ** (1.0 / H)
    u = 1.0 - r  # (1 − α)^H = u, an odd root
    return 1.0 - math.copysign(abs(u) ** (1.0 / H), u)


def diloco_alpha_intervals(inner_steps: int, outer_lr: float, outer_momentum: float = 0.0,
                           nesterov: bool = False) -> list[list[float]]:
    """Every stable inner α (synchronous, SGD inner steps), as open intervals [lo, hi]."""
    H, mu = _check(inner_steps, outer_momentum)
    a1 = diloco_alpha_star(H, outer_lr, mu, nesterov)
    if H % 2 == 1 or a1 >= 2.0:
        return [[0.0, a1]]
    return [[0.0, a1], [2.0 - a1, 2.0]]


def condition_text(outer_momentum: float, nesterov: bool) -> str:
    mu = float(outer_momentum)
    bound = f"2(1+μ)/(1+2μ) = {outer_bound(mu, True):.6g}" if nesterov else f"2(1+μ) = {outer_bound(mu):.6g}"
    return f"0 < outer_lr · (1 − (1 − α)^H) < {bound}" + (" (μ = %g)" % mu)


def stable_region(inner_steps: int, outer_momentum: float = 0.0, nesterov: bool = False, *,
                  outer_lr: float | None = None, sharpness: float | None = None,
                  alphas=None, points: int = 25) -> dict[str, Any]:
    """The stable region in (inner α or η, outer lr) of synchronous rounds (closed form), as JSON:
    ``alpha`` (grid), ``eta`` (α/a when ``sharpness`` is given), ``outer_lr_max`` per α, the
    condition in words and, with ``outer_lr``, ``alpha_star`` and ``alpha_intervals`` there."""
    H, mu = _check(inner_steps, outer_momentum)
    if alphas is None:
        alphas = np.linspace(0.0, 2.0, points + 1)[1:]
    alphas = [float(a) for a in np.asarray(alphas, dtype=float).reshape(-1)]
    out: dict[str, Any] = {
        "method": "closed-form", "inner_steps": H, "outer_momentum": mu, "nesterov": bool(nesterov),
        "condition": condition_text(mu, nesterov), "alpha": alphas,
        "outer_lr_max": [_json(diloco_outer_lr_max(a, H, mu, nesterov)) for a in alphas],
    }
    if sharpness is not None:
        out["eta"] = [a / float(sharpness) for a in alphas]
    if outer_lr is not None:
        out["outer_lr"] = float(outer_lr)
        out["alpha_star"] = diloco_alpha_star(H, outer_lr, mu, nesterov)
        out["alpha_intervals"] = diloco_alpha_intervals(H, outer_lr, mu, nesterov)
    return out


def _json(v: float) -> float | None:
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------------------- trace criterion
def _plan_of(source, steps=None) -> OuterPlan:
    if isinstance(source, OuterPlan):
        return source
    pol = policy_of(source)
    if pol is None:
        raise InputError("not a local SGD / DiLoCo trace (its scenario's policy is none of local_sgd, diloco, "
                         "streaming_diloco, async_diloco)")
    return make_outer_plan(source, pol, steps)


def diloco_lyapunov(source, alphas, outer_lrs=None, *, burn_in: float = 0.1) -> np.ndarray:
    """Top Lyapunov exponent per outer update of the linearised replay (module docstring) for
    each lane (α_i, η_o,i); ``outer_lrs`` defaults to the trace's. +inf where a lane overflows.
    The first ``burn_in`` of the updates (at least 3/(1−μ) + N of them, at most half) are not
    counted."""
    plan = _plan_of(source)
    pol = plan.policy
    a = np.asarray(alphas, dtype=float).reshape(-1)
    eo = np.broadcast_to(np.asarray(pol.outer_lr if outer_lrs is None else outer_lrs, dtype=float), a.shape).copy()
    if np.any(~np.isfinite(a)) or np.any(a <= 0) or np.any(~np.isfinite(eo)) or np.any(eo <= 0):
        raise InputError("α and outer lr values must be finite and > 0")
    L, N, F = a.size, plan.n_workers, pol.fragments
    mu, nesterov = pol.outer_momentum, pol.nesterov
    mix = pol.mixing if pol.kind == "streaming_diloco" else 0.0
    theta = np.ones((F, L))
    buf = np.zeros((F, L))
    started = [False] * F
    X = np.ones((N, F, L))
    A = np.ones((N, F, L))
    pending: dict[int, np.ndarray] = {}
    powers: dict[int, np.ndarray] = {}
    one_minus = 1.0 - a
    acc = np.zeros(L)
    dead = np.zeros(L, dtype=bool)
    collapsed = np.zeros(L, dtype=bool)
    # burn-in: a fraction of the trace, but at least the transients of the momentum buffer
    # (~1/(1−μ) updates) and of the workers' first contributions (~N), up to half the trace —
    # on a short trace the buffer building up from 0 read as growth and made small outer lrs
    # look unstable
    burn = _burn(plan, burn_in)
    ptr = plan.ptr.tolist()
    with np.errstate(over="ignore", invalid="ignore"):
        for op in plan.ops:
            code = op[0]
            if code == INNER:
                n = op[3] - op[2]
                f = powers.get(n)
                if f is None:
                    f = powers[n] = one_minus ** n
                ws = op[1]
                if len(ws) == N:
                    X *= f
                else:
                    X[list(ws)] *= f
            elif code == TAKE:
                _, j, w, p = op
                pending[j] = A[w, p] - X[w, p]
            elif code == MERGE:
                _, j, w, p = op
                A[w, p] = theta[p]
                X[w, p] = mix * X[w, p] + (1.0 - mix) * theta[p] if mix else theta[p]
            else:
                _, s, p, _ = op
                r0, r1 = ptr[s], ptr[s + 1]
                d = pending.pop(r0)
                for j in range(r0 + 1, r1):
                    d = d + pending.pop(j)
                if r1 - r0 > 1:
                    d = d / (r1 - r0)
                if mu:
                    if started[p]:
                        buf[p] = mu * buf[p] + d
                    else:
                        buf[p] = d
                        started[p] = True
                    d = d + mu * buf[p] if nesterov else buf[p]
                theta[p] = theta[p] - eo * d
                # renormalise the whole (linear) state by its max-norm per lane
                nrm = np.maximum.reduce([np.abs(theta).max(0), np.abs(buf).max(0), np.abs(X).max((0, 1)),
                                         np.abs(A).max((0, 1))] + [np.abs(v) for v in pending.values()])
                bad = ~np.isfinite(nrm)
                zero = nrm == 0
                if bad.any() or zero.any():  # overflowed lanes diverge; a state of exact zeros converged
                    dead |= bad
                    collapsed |= zero
                    for arr in (theta, buf, X, A):
                        arr[..., bad] = 0.0
                    for v in pending.values():
                        v[bad] = 0.0
                    nrm = np.where(bad | zero, 1.0, nrm)
                theta /= nrm
                buf /= nrm
                X /= nrm
                A /= nrm
                for v in pending.values():
                    v /= nrm
                if s >= burn:
                    acc += np.log(nrm)
    lam = acc / max(plan.T - burn, 1)
    lam[collapsed] = -np.inf
    lam[dead] = np.inf
    return lam


def _burn(plan: OuterPlan, burn_in: float) -> int:
    """Outer updates not counted in λ: a fraction of the trace, but at least the transients of the
    momentum buffer (~1/(1−μ) updates) and of the workers' first contributions (~N), up to half the
    trace (on a short trace the buffer building up from 0 read as growth and made small outer lrs
    look unstable)."""
    return min(max(int(burn_in * plan.T), min(plan.T // 2, _transient(plan))), plan.T - 1)


def _transient(plan: OuterPlan) -> int:
    """Outer updates the momentum buffer and the workers' first contributions take to settle:
    3/(1−μ) + N. A trace needs twice this many for :func:`_burn` to leave them out."""
    return math.ceil(3.0 / (1.0 - plan.policy.outer_momentum)) + plan.n_workers


def resolution(plan: OuterPlan, burn_in: float = 0.1) -> float:
    """The smallest λ the trace criterion calls unstable: growth by a factor 2 over the updates it
    measures, log 2 / (T − burn). As α or η_o → 0 the outer recursion's true λ → 0⁻ (the
    pseudo-gradient vanishes), so a bare λ ≥ 0 test read a short trace's leftover transients
    (a 40-update streaming trace: 'stable only below η_o = 3.5e-7') as instability."""
    return math.log(2.0) / max(plan.T - _burn(plan, burn_in), 1)


def _first_crossing(lam_of: Callable[[np.ndarray], np.ndarray], rows: int, hi: np.ndarray, points: int,
                    rounds: int, tol: float = 0.0) -> np.ndarray:
    """Per row, the smallest x > 0 where λ(x) ≥ ``tol`` (the criterion's resolution: see
    :func:`resolution`): a geometric grid in (hi/1000, hi] (raised ×8 while stable, up to 8
    times), then ``rounds`` linear refinements of the first bracket, and the linear interpolation
    of λ's zero through the bracket's ends. ``lam_of(grid, rows)`` maps an (len(rows), k) grid of
    the rows ``rows`` to λ of the same shape."""
    hi = np.asarray(hi, dtype=float).reshape(rows).copy()
    out = np.full(rows, np.inf)
    lo_x = np.zeros(rows)
    lo_l = np.full(rows, np.nan)
    hi_x = np.full(rows, np.nan)
    hi_l = np.full(rows, np.nan)
    todo = np.ones(rows, dtype=bool)

    def bracket(g, lam, i, level=0.0) -> bool:
        """Narrow row i's bracket to the first grid point with λ ≥ ``level``; False when there is none."""
        k = np.flatnonzero(lam >= level)
        if not k.size:
            return False
        k = int(k[0])
        hi_x[i], hi_l[i] = g[k], lam[k]
        if k:
            lo_x[i], lo_l[i] = g[k - 1], lam[k - 1]
        return True

    for _ in range(8):
        idx = np.flatnonzero(todo)
        if not idx.size:
            break
        grid = np.geomspace(hi[idx] / 1000.0, hi[idx], points, axis=1)
        lam = lam_of(grid, idx)
        for r, i in enumerate(idx):  # (a rise to the resolution marks the boundary; refined at λ = 0)
            if bracket(grid[r], lam[r], i, tol):
                todo[i] = False
            else:
                hi[i] *= 8.0
    found = np.flatnonzero(np.isfinite(hi_x))
    for _ in range(rounds):
        if not found.size:
            break
        grid = lo_x[found, None] + (hi_x[found] - lo_x[found])[:, None] * np.linspace(0, 1, points + 2)[1:-1]
        lam = lam_of(grid, found)
        for r, i in enumerate(found):
            if not bracket(grid[r], lam[r], i):  # the whole refined bracket is stable
                lo_x[i], lo_l[i] = grid[r, -1], lam[r, -1]
    for i in found:
        if np.isnan(lo_l[i]) or not np.isfinite(hi_l[i]):
            out[i] = hi_x[i] if np.isnan(lo_l[i]) else 0.5 * (lo_x[i] + hi_x[i])
        else:
            # (left of lo when lo's λ is in [0, tol): the secant's zero, never below 0)
            x = lo_x[i] + (hi_x[i] - lo_x[i]) * (-lo_l[i]) / (hi_l[i] - lo_l[i]) if hi_l[i] > lo_l[i] else lo_x[i]
            out[i] = min(max(x, 0.0), hi_x[i])
    return out


def diloco_trace_alpha_star(source, outer_lr: float | None = None, *, burn_in: float = 0.1, points: int = 24,
                            rounds: int = 3) -> float:
    """Largest stable inner α (from 0) by the trace criterion, at the trace's outer lr (or ``outer_lr``)."""
    plan = _plan_of(source)
    pol = plan.policy
    eo = pol.outer_lr if outer_lr is None else float(outer_lr)
    guess = diloco_alpha_star(pol.inner_steps, eo, pol.outer_momentum, pol.nesterov)

    def lam_of(grid, idx):
        return diloco_lyapunov(plan, grid.reshape(-1), eo, burn_in=burn_in).reshape(grid.shape)

    return float(_first_crossing(lam_of, 1, np.array([min(4.0 * guess, 8.0)]), points, rounds,
                                 resolution(plan, burn_in))[0])


def diloco_trace_outer_lr_max(source, alphas, *, burn_in: float = 0.1, points: int = 24,
                              rounds: int = 3) -> np.ndarray:
    """Largest stable outer lr at each inner α by the trace criterion (all α in one pass per round)."""
    plan = _plan_of(source)
    pol = plan.policy
    al = np.asarray(alphas, dtype=float).reshape(-1)
    guess = np.array([diloco_outer_lr_max(x, pol.inner_steps, pol.outer_momentum, pol.nesterov) for x in al])
    hi = np.where(np.isfinite(guess) & (guess > 0), 4.0 * guess, 16.0)

    def lam_of(grid, idx):
        lanes_a = np.repeat(al[idx], grid.shape[1])
        return diloco_lyapunov(plan, lanes_a, grid.reshape(-1), burn_in=burn_in).reshape(grid.shape)

    return _first_crossing(lam_of, al.size, hi, points, rounds, resolution(plan, burn_in))


# ---------------------------------------------------------------------------------- report
#: the trace criterion of ``analyze`` replays at most this many outer updates (the first ones)
MAX_CRITERION_UPDATES = 20_000


def is_regular_sync(plan: OuterPlan) -> bool:
    """True when every row of a synchronous-rounds plan starts from the current version and runs H
    inner steps: then every worker's linearised pseudo-gradient is c·θ and the outer recursion is
    exactly the closed form, whatever the timing or the number of rows per update."""
    pol = plan.policy
    step = np.repeat(np.arange(plan.T), np.diff(plan.ptr))
    return (pol.kind in SYNC_KINDS and bool(np.all(plan.read == step))
            and bool(np.all(plan.local_end - plan.local_start == pol.inner_steps)))


def analyze_diloco(trace, sharpness: float | None = None, base_lr: float | None = None,
                   region_points: int = 12, progress=None) -> dict[str, Any]:
    """What ``asyncsim.stability.analyze`` reports for a DiLoCo-family trace: α* (inner) at the
    trace's outer parameters, the closed form for synchronous rounds, the outer lr bound at α*/2
    (``outer_lr_max``, at ``outer_lr_max_at_alpha``), and the stable region.

    Synchronous rounds in which every row starts from the current version and runs H inner steps
    (:func:`is_regular_sync`) are exactly the closed form (``method: closed-form``); otherwise the
    trace criterion runs on the first :data:`MAX_CRITERION_UPDATES` outer updates (``method:
    trace``), and the region on ``region_points`` α values. Cost: closed form O(rows); the trace
    criterion about 4 + 4 passes over the operations with 24 and 24·``region_points`` lanes."""
    pol: OuterPolicy = policy_of(trace)
    T = min(int(trace.n_updates), MAX_CRITERION_UPDATES)
    plan = make_outer_plan(trace, pol, T)
    report = progress or (lambda *a: None)
    H, mu, nest = pol.inner_steps, pol.outer_momentum, pol.nesterov
    closed = diloco_alpha_star(H, pol.outer_lr, mu, nest)
    sync = is_regular_sync(plan)
    report("DiLoCo trace criterion", 0, 2)
    a_trace = closed if sync else diloco_trace_alpha_star(plan)
    report("DiLoCo trace criterion", 1, 2)
    a_half = 0.5 * a_trace
    if sharpness is None and base_lr is not None:
        sharpness = 2.0 / float(base_lr)  # (the GD edge, as for A-SGD's rules)
    if sync:
        region = stable_region(H, mu, nest, outer_lr=pol.outer_lr, sharpness=sharpness)
    else:
        alphas = np.linspace(0.0, 2.0, region_points + 1)[1:]
        lr_max = diloco_trace_outer_lr_max(plan, alphas)
        region = {"method": "trace", "inner_steps": H, "outer_momentum": mu, "nesterov": bool(nest),
                  "condition": "top Lyapunov exponent of the trace's outer recursion < 0",
                  "alpha": [float(x) for x in alphas], "outer_lr_max": [_json(float(v)) for v in lr_max],
                  "outer_lr": pol.outer_lr, "alpha_star": a_trace,
                  "closed_form_synchronous": stable_region(H, mu, nest, alphas=alphas)["outer_lr_max"]}
        if sharpness is not None:
            region["eta"] = [float(x) / float(sharpness) for x in alphas]
    report("DiLoCo trace criterion", 2, 2)
    return {
        "policy": pol.to_dict(),
        "method": "closed-form" if sync else "trace",
        "updates_analysed": T,
        "alpha_star": a_trace,
        "alpha_star_closed_form": closed if sync else None,
        "alpha_star_synchronous": closed,
        # the outer-lr bound at half the inner edge (plan's default fraction of the stable lr)
        "outer_lr_max": _json(diloco_outer_lr_max(a_half, H, mu, nest)) if sync else
        _json(float(diloco_trace_outer_lr_max(plan, [a_half])[0])),
        "outer_lr_max_at_alpha": a_half,
        "stable_region": region,
        # the smallest λ the trace criterion calls unstable, and the updates it measured over
        "resolution": None if sync else resolution(plan),
        "updates_measured": None if sync else int(plan.T - _burn(plan, 0.1)),
        # fewer than this many outer updates and the transient leaks into λ (`short`)
        "updates_needed": None if sync else 2 * _transient(plan),
        "short": (not sync) and plan.T // 2 < _transient(plan),
    }


def diloco_alpha_star_of(source, criterion: str = "trace", **opts) -> float | None:
    """:func:`diloco_trace_alpha_star` when ``source`` is a DiLoCo-family trace (None otherwise);
    other criteria are refused for such a trace."""
    if not hasattr(source, "columns") or not is_diloco(source):
        return None
    if criterion != "trace":
        raise InputError(f"a {policy_of(source).kind} trace is analysed by its outer recursion: the {criterion} "
                         f"criterion models asynchronous SGD delays; use the trace criterion")
    return diloco_trace_alpha_star(source, **opts)


def is_diloco(trace) -> bool:
    """True for a trace of policy local_sgd, diloco, streaming_diloco or async_diloco."""
    return policy_of(trace) is not None


def diloco_report(trace, criteria=("trace",), base_lr: float | None = None, sharpness: float | None = None,
                  progress=None):
    """:func:`asyncsim.stability.analyze` for a DiLoCo-family trace: a
    :class:`~asyncsim.stability.report.StabilityReport` whose ``alpha_star`` holds the trace
    criterion of the outer recursion (inner α at the trace's outer parameters) and whose
    ``diloco`` holds :func:`analyze_diloco`'s dict (outer lr bound, stable region)."""
    from .criteria import CRITERIA
    from .lr_rules import lr_from_base, lr_from_sharpness
    from .report import StabilityReport

    crits = tuple(criteria)
    if crits != CRITERIA and set(crits) != {"trace"}:
        raise InputError(f"a {policy_of(trace).kind} trace is analysed by its outer recursion (the trace "
                         f"criterion): the {', '.join(c for c in crits if c != 'trace')} criterion models "
                         f"asynchronous SGD delays; use --criterion trace or all")
    if base_lr is not None and sharpness is not None:
        raise InputError("give either a base learning rate or a sharpness, not both")
    d = analyze_diloco(trace, sharpness=sharpness, base_lr=base_lr, progress=progress)
    a = d["alpha_star"]
    lr = None
    if base_lr is not None:
        lr = {"trace": lr_from_base(a, base_lr)}
    elif sharpness is not None:
        lr = {"trace": lr_from_sharpness(a, sharpness)}
    st = trace.columns["staleness"][trace.applied]
    notes = ["inner steps are linearised as gradient descent on the quadratic (the closed forms' setting); "
             "the inner optimizer of the replay is not part of the criterion",
             "no 95 % interval for DiLoCo traces"]
    if d["method"] == "closed-form":
        notes.insert(0, "synchronous rounds: α* is the closed form (exact for every such trace)")
    elif d["short"]:
        notes.insert(0, f"only {d['updates_analysed']:,} outer updates: the trace criterion measured growth over "
                        f"{d['updates_measured']:,} of them, too few to outlast the outer momentum's transient; "
                        f"bounds are uncertain (simulate at least {d['updates_needed']:,} outer updates)")
    elif d["updates_analysed"] < trace.n_updates:
        notes.insert(0, f"the trace criterion used the first {d['updates_analysed']:,} of {trace.n_updates:,} "
                        f"outer updates")
    return StabilityReport(alpha_star={"trace": a}, conservative="trace", optimizer=d["policy"]["kind"],
                           momentum=d["policy"]["outer_momentum"],
                           staleness_mean=float(st.mean()) if st.size else 0.0, lr=lr,
                           base_lr=None if base_lr is None else float(base_lr),
                           sharpness=None if sharpness is None else float(sharpness), notes=notes, diloco=d)


def plot_region(region: dict[str, Any], path, title: str | None = None):
    """PNG of a stable region (from :func:`stable_region` / ``analyze``): outer lr bound against α."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..plots import save_figure

    x = np.asarray(region.get("eta") or region["alpha"], dtype=float)
    y = np.array([np.nan if v is None else v for v in region["outer_lr_max"]], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    top = np.nanmax(y[np.isfinite(y)]) * 1.2 if np.isfinite(y).any() else 1.0
    # (no bound: c = 0, a marginal point such as α = 2 for even H, where no outer lr converges; shaded as unstable)
    ax.fill_between(x, 0, np.where(np.isfinite(y), np.minimum(y, top), 0.0), alpha=0.25, label="stable")
    ax.plot(x, y, lw=1.5, label=f"outer lr bound ({region['method']})")
    if region.get("closed_form_synchronous"):
        ax.plot(x, [np.nan if v is None else v for v in region["closed_form_synchronous"]], ls="--",
                label="synchronous closed form")
    if region.get("outer_lr") is not None and region.get("alpha_star") is not None:
        xs = region["alpha_star"] / (region["alpha"][0] / x[0]) if region.get("eta") else region["alpha_star"]
        ax.plot([xs], [region["outer_lr"]], "o", color="red", label="the trace's outer lr, α*")
    ax.set_xlabel("inner learning rate η" if region.get("eta") else "inner α = a·η")
    ax.set_ylabel("outer learning rate η_o")
    ax.set_ylim(0, top)
    ax.set_yscale("linear")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"H = {region['inner_steps']}, μ = {region['outer_momentum']:g}"
                 + (" (Nesterov)" if region["nesterov"] else " (heavy-ball)"))
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
