"""The mean criterion on a trace's delay pmf with a fitted geometric tail.

A finite trace cuts the tail of its delay distribution (its pmf ends at the largest staleness it
saw) and carries sampling noise of relative size ~1/√T at every frequency of P(z). The mean
criterion is badly conditioned for the delays an asynchronous server makes (geometric: the locus
runs at |Im α| = sin θ ≤ 1 while Re α climbs to 4N − 2, so that noise makes it cross the real axis
early; docs/theory.md): at N = 8 a 4·10⁴-update trace gives α* ≈ 16 against the long-run 30.

:func:`fit_geometric_tail` replaces the empirical pmf from a threshold k₀ on by a geometric tail
Pr(τ = k₀ + j) = w (1 − r) r^j (w the observed mass at τ ≥ k₀), fitted by maximum likelihood
(r̂ = m/(1 + m), m the mean excess over k₀), with k₀ the smallest of a few empirical quantiles
(0, 50, 75, 90, 95, 99 %) at which a χ² test of fit (corrected for the correlation of
consecutive delays, below) does not reject the geometric tail at level :data:`LEVEL` (1 %). The
completed pmf runs until the fitted tail's remaining mass is below 1e-12 (support about
k₀ + 27.6/(1 − r)). When no threshold passes, there is no fitted tail. For A-SGD the test accepts
k₀ = 0, and the completed pmf is a geometric law: that removes the body's noise as well as the cut
tail (an empirical body below a tail from the median still gives α* ≈ 16–19 at N = 8).

:func:`bootstrap_interval` gives the fitted-tail α*'s interval: a block bootstrap over the
trace's segments (segments resampled with replacement, the tail refitted at the chosen k₀ on each
resample, then α*), the percentile interval of :data:`REPS` resamples. The threshold is not
re-chosen on resamples: repeated segments break the χ² test's calibration (re-choosing it found
no tail on more than 5 % of the resamples for 18 of 20 A-SGD traces). For A-SGD the spread is
conservative (the mean staleness of adjacent segments is negatively correlated, which resampling
ignores). Cost: one certified and REPS uncertified solves of the mean criterion on the completed
pmf (~10 ms each at N = 1024).

Counts are update-weighted (an update averaging K gradients counts 1/K per row), so for such
traces the χ² test sees fewer observations than rows: it is conservative there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

#: the χ² test of fit's level: the lowest threshold at which the test does not reject is taken.
#: 1 %, not 5 %: rejecting a true geometric tail at k₀ = 0 leaves the body's sampling noise in the
#: badly conditioned criterion (α* ≈ 16–19 instead of 30 at N = 8); measured on 40 A-SGD N = 8
#: traces, 5 % gave 38/40 covering intervals at 5·10³ and 4·10⁴ updates, 1 % gave 40/40 and 39/40,
#: while the test still rejects non-geometric delays (two speeds, lognormal, gamma) at p < 10⁻³
LEVEL = 0.01
#: empirical quantiles tried as the tail's threshold k₀, lowest first
QUANTILES = (0.0, 0.5, 0.75, 0.9, 0.95, 0.99)
#: least observed (weighted) mass at τ ≥ k₀ for a fit
MIN_TAIL = 50.0
#: the completed pmf stops where the fitted tail has less than this mass left
TAIL_CUT = 1e-12
#: bootstrap resamples for the interval
REPS = 200


@dataclass(frozen=True)
class TailFit:
    """A geometric tail Pr(τ = k₀ + j) = tail_mass·(1 − rate)·rate^j fitted to a trace's counts."""

    threshold: int
    rate: float
    tail_mass: float
    p_value: float
    bins: int
    observed_support: int
    pmf: np.ndarray

    def describe(self) -> dict:
        """JSON-able summary (without the pmf)."""
        return {"threshold": self.threshold, "rate": self.rate, "tail_mass": self.tail_mass,
                "p_value": self.p_value, "bins": self.bins, "observed_support": self.observed_support,
                "support": int(self.pmf.size - 1)}


def _chi2_geometric(excess: np.ndarray, r: float, seg: np.ndarray | None = None) -> tuple[float, int]:
    """p-value and number of bins of the χ² test that ``excess`` (counts at j = τ − k₀) come from a
    geometric law with ratio r: bins of about equal fitted probability (the last one open-ended),
    merged until each expects ≥ 5, degrees of freedom = bins − 2 (r is fitted). (nan, bins) when
    fewer than 3 bins.

    Consecutive delays of a trace are correlated, which inflates the variance of the bin counts
    over the multinomial's. With ``seg`` (segments × j, the same counts per trace segment) the
    statistic is divided by the dispersion between segments, the homogeneity χ² of the segments'
    bin counts over its degrees of freedom, floored at 1 (the first-order Rao–Scott correction)."""
    from scipy.stats import chi2

    n = float(excess.sum())
    target = int(min(40, max(3, n // 10)))
    edges = [0]  # the j at which the fitted survival r^j crosses 1 − i/target
    for i in range(1, target):
        j = int(math.ceil(math.log(1.0 - i / target) / math.log(r)))
        if j > edges[-1]:
            edges.append(j)
    # merge from the right, then left to right, until every bin expects ≥ 5
    exp = [n * (r ** a - (r ** b if b is not None else 0.0)) for a, b in zip(edges, edges[1:] + [None])]
    while len(exp) > 1 and exp[-1] < 5.0:
        exp[-2] += exp.pop()
        edges.pop()
    i = 0
    while i < len(exp) - 1:
        if exp[i] < 5.0:
            exp[i + 1] += exp.pop(i)
            edges.pop(i + 1)
        else:
            i += 1
    bins = len(exp)
    if bins < 3:
        return math.nan, bins
    J = excess.size
    idx = np.minimum(np.asarray(edges), J)
    cum = np.concatenate([[0.0], np.cumsum(excess)])
    o = np.diff(np.append(cum[idx], cum[J]))
    e = np.asarray(exp)
    stat = float(np.sum((o - e) ** 2 / e))
    if seg is not None and seg.shape[0] > 1:
        cs = np.concatenate([np.zeros((seg.shape[0], 1)), np.cumsum(seg, axis=1)], axis=1)
        ob = np.diff(np.concatenate([cs[:, idx], cs[:, J:J + 1]], axis=1), axis=1)  # (segments, bins)
        nb = ob.sum(axis=1, keepdims=True)
        keep = nb[:, 0] > 0
        eb = nb[keep] * (o / n)[None, :]
        ok = eb > 0
        homog = float(np.sum((ob[keep][ok] - eb[ok]) ** 2 / eb[ok]))
        dof = (int(keep.sum()) - 1) * (bins - 1)
        if dof > 0:
            stat /= max(1.0, homog / dof)
    return float(chi2.sf(stat, bins - 2)), bins


def _fit_at(c: np.ndarray, total: float, K: int, k0: int, seg=None, test: bool = True):
    """(rate, tail mass, p-value, bins) of the geometric tail from k₀, or None when there is
    nothing geometric to fit (too little mass, all of it at one delay); p-value nan without
    ``test``."""
    tail = c[k0:K + 1]
    n = float(tail.sum())
    if n < MIN_TAIL:
        return None
    mexc = float(np.dot(np.arange(tail.size), tail)) / n
    if not mexc > 0:
        return None
    r = mexc / (1.0 + mexc)
    if not test:
        return r, n / total, math.nan, 0
    p_value, bins = _chi2_geometric(tail, r, None if seg is None else seg[:, k0:K + 1])
    return r, n / total, p_value, bins


def _complete(c: np.ndarray, total: float, K: int, k0: int, fitted) -> TailFit:
    from .families import _check_support

    r, mass, p_value, bins = fitted
    jmax = int(math.ceil(math.log(TAIL_CUT) / math.log(r)))
    _check_support(k0 + jmax, "fitted tail")
    pmf = np.empty(k0 + jmax + 1)
    pmf[:k0] = c[:k0] / total
    pmf[k0:] = mass * (1.0 - r) * r ** np.arange(jmax + 1)
    pmf /= pmf.sum()
    return TailFit(threshold=k0, rate=r, tail_mass=mass, p_value=p_value, bins=bins,
                   observed_support=K, pmf=pmf)


def _prepare(counts):
    c = np.asarray(counts, dtype=float)
    total = float(c.sum())
    if not total > 0:
        raise InputError("no delays to fit a tail to")
    return c, total, int(np.flatnonzero(c > 0)[-1])


def fit_geometric_tail(counts, level: float | None = None, threshold: int | None = None) -> TailFit | None:
    """The fitted-tail completion of the pmf from (weighted) ``counts`` indexed by τ, or from
    (segments, K+1) counts per trace segment (then the test of fit allows for the correlation
    of consecutive delays); ``None`` when no threshold passes the test of fit (module doc).
    ``threshold`` fixes k₀ (no test: the bootstrap refits at the chosen k₀).
    O(segments·K + support of the completed pmf)."""
    counts = np.asarray(counts, dtype=float)
    seg = counts if counts.ndim == 2 else None
    c, total, K = _prepare(counts.sum(axis=0) if seg is not None else counts)
    if threshold is not None:
        fitted = _fit_at(c, total, K, min(int(threshold), K), test=False)
        return None if fitted is None else _complete(c, total, K, min(int(threshold), K), fitted)
    level = LEVEL if level is None else float(level)
    cdf = np.cumsum(c) / total
    tried = set()
    for q in QUANTILES:
        k0 = min(int(np.searchsorted(cdf, q, side="left")) if q > 0 else 0, K)
        if k0 in tried:
            continue
        tried.add(k0)
        fitted = _fit_at(c, total, K, k0, seg)
        if fitted is None:
            break
        if math.isfinite(fitted[2]) and fitted[2] >= level:
            return _complete(c, total, K, k0, fitted)
    return None


def bootstrap_interval(fn, segment_counts: np.ndarray, fit: TailFit, updates: int,
                       reps: int = REPS, level: float = 0.95, seed: int = 0, progress=None,
                       estimate: float | None = None):
    """Block-bootstrap percentile interval for ``fn(fit)`` (module doc): ``segment_counts`` is
    (segments, K+1); each resample refits the tail at ``fit``'s threshold. Resampled segments
    repeat, which breaks the χ² test's calibration, so the threshold is not re-chosen: the
    interval is conditional on the chosen k₀. O(reps) solves of ``fn``."""
    from .uncertainty import Interval

    B = segment_counts.shape[0]
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    estimate = float(fn(fit)) if estimate is None else float(estimate)
    vals = []
    for i in range(reps):
        pick = rng.integers(0, B, size=B)
        f = fit_geometric_tail(segment_counts[pick].sum(axis=0), threshold=fit.threshold)
        if f is not None:
            vals.append(float(fn(f)))
        if progress is not None:
            progress(i + 1, reps)
    method = f"block bootstrap over segments, tail refitted at τ ≥ {fit.threshold} ({reps} resamples)"
    if len(vals) < 0.95 * reps:
        return Interval(estimate, -math.inf, math.inf, math.inf, updates, method)
    v = np.asarray(vals)
    lo, hi = np.quantile(v, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return Interval(estimate, float(min(lo, estimate)), float(max(hi, estimate)), float(v.std(ddof=1)),
                    updates, method)


#: the bootstrap interval is given up to this support of the completed pmf (200 solves at ~25 ms)
MAX_SUPPORT_INTERVAL = 30_000
#: the fitted tail's solve is skipped when the mean criterion's grid would need more than this
#: (the completed support is ~27.6 N for N A-SGD workers: 512 MiB is reached near N = 4700)
MAX_BYTES = 512 << 20


def mean_fitted_tail(segment_counts: np.ndarray, optimizer: str = "sgd", momentum: float = 0.0, *,
                     updates: int, interval: bool = True, progress=None) -> tuple[dict | None, list[str]]:
    """The mean criterion's α* on the fitted-tail pmf, with its bootstrap interval: a JSON-able
    dict (``alpha_star``, ``ci``, ``updates_for_1pct``, the fit's ``threshold``, ``rate``,
    ``tail_mass``, ``p_value``, ``bins``, ``observed_support``, ``support``, ``method``) or None,
    and notes (one sentence each) where something is not given.

    Cost: one certified solve of the mean criterion on the completed pmf, plus :data:`REPS`
    uncertified ones on a coarser grid (no certificate: ~100× cheaper) for the interval."""
    from .characteristic import mean_alpha_star, memory_bytes

    fit = fit_geometric_tail(segment_counts)
    if fit is None:
        return None, [f"mean criterion, fitted tail: no geometric tail fits this trace's delays "
                      f"(χ² test of fit rejected at level {LEVEL:g} from every threshold tried)"]
    need = memory_bytes(fit.pmf.size - 1)
    if need > MAX_BYTES:
        return None, [f"mean criterion, fitted tail skipped: its completed support {fit.pmf.size - 1:,} "
                      f"would need {need / 2**20:,.0f} MiB (limit {MAX_BYTES / 2**20:,.0f} MiB); the "
                      f"trace and mean-square criteria do not depend on the tail"]
    a = mean_alpha_star(fit.pmf, optimizer, momentum)
    out = {"alpha_star": float(a), "ci": None, "updates_for_1pct": None, **fit.describe(),
           "method": None}
    notes = []
    if interval and fit.pmf.size - 1 <= MAX_SUPPORT_INTERVAL and math.isfinite(a):
        # resamples: the grid value without the certificate, on a 4× (not 16×) oversampled grid:
        # a completed pmf is smooth beyond k₀, and an interval endpoint needs ~1e-4, not 1e-12
        iv = bootstrap_interval(lambda f: mean_alpha_star(f.pmf, optimizer, momentum, certify=False,
                                                          oversample=4),
                                segment_counts, fit, updates, progress=progress, estimate=a)
        if math.isfinite(iv.lo) and math.isfinite(iv.hi):
            out.update(ci=[iv.lo, iv.hi], updates_for_1pct=iv.updates_for(0.01), method=iv.method)
        else:
            notes.append("no interval for mean, fitted tail: the tail could not be refitted on the "
                         "bootstrap resamples")
    elif interval:
        notes.append(f"no interval for mean, fitted tail: completed support {fit.pmf.size - 1:,} > "
                     f"{MAX_SUPPORT_INTERVAL:,} ({REPS} more solves)")
    return out, notes
