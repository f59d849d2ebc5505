"""How far to trust an α* estimated from a finite trace: an interval per criterion.

A trace is one finite sample of the cluster's delay process, so each criterion's α* is an
estimate. The trace is cut into ``B`` contiguous segments of equal numbers of steps (after the
burn-in for the trace criterion); segments far longer than the delay correlation time are close
to independent, which is what both methods below assume.

* ``trace`` — **batch means** on the Lyapunov exponent (5 to 20 batches of ≥ 1000 steps). λ(α) is a time average of log-growth
  increments, so its value on each segment, λ_b(α), is one batch mean; se(λ) = sd(λ_b)/√B. The
  interval for α* follows by the delta method through the slope of λ at α*:
  α* ± t_{B−1} se(λ(α*)) / λ'(α*) (λ' from the same run at α*(1 ± 2 %)). Cost: one extra pass of
  the trace criterion at three α values.
* ``mean`` and ``mean-square`` — **delete-one-segment jackknife** of α*(pmf): α*_{−b} from the
  pmf of the trace without segment b; se² = (B−1)/B Σ_b (α*_{−b} − mean)², interval
  α* ± t_{B−1} se. Cost: B more solves of the criterion.

The half-width shrinks like 1/√T, so ``updates_for(rel)`` = T (half-width / (rel·α*))² estimates
the trace length that would bring it under ``rel`` (1 % by default).

Caveat, measured (docs/theory.md): for the mean criterion with geometric delays (A-SGD with
exponential compute times) the first crossing is set by the locus brushing the real axis, where
sampling noise in the pmf lowers α* systematically (≈ 16 instead of 4N − 2 = 30 at N = 8 with
4·10⁴ updates); a jackknife measures the spread, not this bias, so that interval does not cover
the long-run value. The intervals of the trace and mean-square criteria do (tests), and so does
the mean criterion's on the pmf completed by a fitted geometric tail (:mod:`.tail`, a block
bootstrap over the same segments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

#: segments the trace is cut into
SEGMENTS = 20
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A two-sided interval for α* with its standard error and the trace length it came from."""

    estimate: float
    lo: float
    hi: float
    se: float
    updates: int
    method: str

    @property
    def half_width(self) -> float:
        return 0.5 * (self.hi - self.lo)

    def updates_for(self, rel: float = 0.01) -> int | None:
        """Updates that would bring the half-width under ``rel`` × α* (1/√T scaling);
        ``None`` when the interval is unbounded (too short a trace to say)."""
        if not (self.half_width > 0 and self.estimate > 0):
            return self.updates
        need = self.updates * (self.half_width / (rel * self.estimate)) ** 2
        return int(math.ceil(need)) if math.isfinite(need) else None


def _t(level: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2.0, dof))


def segment_counts(trace, segments: int = SEGMENTS) -> np.ndarray:
    """(segments, K+1) update-weighted staleness counts of each block of consecutive steps."""
    step = trace.columns["step"]
    applied = step >= 0
    st = trace.columns["staleness"][applied]
    w = trace.row_weights()[applied]
    T = int(trace.n_updates)
    if T < 2 * segments:
        raise InputError(f"an interval needs at least {2 * segments} updates, the trace has {T}")
    block = np.minimum(step[applied] * segments // T, segments - 1)
    K = int(st.max())
    counts = np.zeros((segments, K + 1))
    np.add.at(counts, (block, st), w)
    return counts


def jackknife(fn, counts: np.ndarray, estimate: float, updates: int, level: float = LEVEL,
              progress=None) -> Interval:
    """Delete-one-segment jackknife interval for ``fn(pmf)`` (module doc)."""
    B = counts.shape[0]
    total = counts.sum(axis=0)
    loo = np.empty(B)
    for b in range(B):
        rest = total - counts[b]
        nz = np.flatnonzero(rest > 0)
        loo[b] = fn(rest[: nz[-1] + 1] / rest.sum())
        if progress is not None:
            progress(b + 1, B)
    se = math.sqrt((B - 1) / B * float(np.sum((loo - loo.mean()) ** 2)))
    h = _t(level, B - 1) * se
    return Interval(estimate, estimate - h, estimate + h, se, updates, "jackknife over segments")


def trace_segments(steps: int) -> int:
    """Batches for the trace criterion: segments of ≥ 1000 steps, 5 to 20 of them. Measured on
    A-SGD N = 8 traces of 5000 updates, 20 batches of 225 steps covered the long-run value in
    33 of 40 seeds (the batches are correlated), 5 batches of 900 in 38 of 40."""
    return int(max(5, min(SEGMENTS, steps // 1000)))


def trace_interval(trace_or_plan, estimate: float, optimizer: str = "sgd", momentum: float = 0.0,
                   burn_in: float = 0.1, segments: int | None = None, level: float = LEVEL,
                   rel_step: float = 0.02) -> Interval:
    """Batch-means interval for the trace criterion's α* (module doc)."""
    from .lyapunov import _Plan, lyapunov_exponents

    plan = trace_or_plan if isinstance(trace_or_plan, _Plan) else _Plan(trace_or_plan)
    T = plan.T
    if segments is None:
        segments = trace_segments(T - min(int(burn_in * T), T - 1))
    alphas = estimate * np.array([1.0 - rel_step, 1.0, 1.0 + rel_step])
    hist: list = []
    burn = min(int(burn_in * T), T - 1)
    # renormalise at least 16 times per segment so segment edges are resolved to ~6 %
    lam = lyapunov_exponents(plan, alphas, optimizer, momentum, burn_in, history=hist,
                             renorm_every=max(1, (T - burn) // (16 * segments)))
    if len(hist) < 2 * segments:
        raise InputError("the trace is too short for an interval of the trace criterion")
    steps = np.array([h[0] for h in hist])
    acc = np.stack([h[1] for h in hist])  # (renormalisations, 3)
    edges = np.linspace(burn, T, segments + 1)
    idx = np.searchsorted(steps, edges[1:], side="right") - 1  # last renormalisation in each segment
    cum = np.vstack([np.zeros((1, 3)), acc[idx]])
    at = np.concatenate([[burn], steps[idx]]).astype(float)
    lengths = np.diff(at)
    if np.any(lengths <= 0):
        raise InputError("the trace is too short for an interval of the trace criterion")
    lam_b = np.diff(cum, axis=0) / lengths[:, None]  # (segments, 3)
    # the ratio estimator of the whole-run λ from its segments: weights ∝ segment length
    wts = lengths / lengths.sum()
    centred = (lam_b[:, 1] - lam[1]) * wts * segments
    se_lam = math.sqrt(float(np.sum(centred ** 2)) / (segments - 1) / segments)
    slope = (lam[2] - lam[0]) / (alphas[2] - alphas[0])
    if not slope > 0:
        return Interval(estimate, -math.inf, math.inf, math.inf, T, "batch means (flat λ)")
    se = se_lam / slope
    h = _t(level, segments - 1) * se
    return Interval(estimate, estimate - h, estimate + h, se, T, "batch means of λ over segments")
