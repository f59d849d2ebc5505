"""Fit the scenario's compute-time families to measured step times.

:func:`fit_times` fits every positive family of :mod:`asyncsim.distributions`
by maximum likelihood (``scipy.stats``; the truncated normal by numerical
maximisation of its exact likelihood) and ranks them by the Bayesian
information criterion BIC = k ln n − 2 log L (k fitted parameters, n times).
BIC rather than AIC because it is consistent: on large samples it ranks the
true family first, while AIC keeps a fixed chance of preferring a family that
contains the true one (the exponential is a gamma, a Weibull and a shifted
exponential with one parameter pinned). Each fit also reports the Kolmogorov–Smirnov distance
between the sample and the fitted distribution, a goodness-of-fit statistic
that needs no binning. Parameters come back in the scenario's own keys
(``exponential: {mean}``, ``lognormal: {mean, cv}``...), ready for a
``compute:`` block.

:func:`fit_ranks` reads a per-rank step log (columns ``rank``, ``step``,
``seconds``) and proposes worker groups: ranks whose median step time is
distinctly above the others' (more than 10 % and more than 5 robust standard
deviations of the ranks' medians) form a slower group, each group gets its
own fit.

Cost: O(n) per family for closed-form estimators, a few hundred likelihood
evaluations of O(n) each for the iterative ones (gamma, Weibull, truncated
normal); n up to a few million measured steps is seconds.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["fit_times", "fit_ranks", "read_times", "read_rank_log", "FAMILIES"]

#: the families ranked (constant and empirical are special: see fit_times)
FAMILIES = ("exponential", "shifted_exponential", "lognormal", "gamma", "weibull", "normal", "uniform", "pareto")


def _fit_one(name: str, x: np.ndarray) -> tuple[dict[str, float], Any, int]:
    """``(scenario params, frozen scipy distribution, number of fitted parameters)``."""
    from scipy import optimize, stats

    if name == "exponential":
        m = float(x.mean())
        return {"mean": m}, stats.expon(scale=m), 1
    if name == "shifted_exponential":
        lo = float(x.min())
        scale = float(x.mean()) - lo
        if scale <= 0:
            raise ValueError("no spread above the minimum")
        return {"shift": lo, "mean": lo + scale}, stats.expon(loc=lo, scale=scale), 2
    if name == "lognormal":
        lx = np.log(x)
        mu, s = float(lx.mean()), float(lx.std())
        if s <= 0:
            raise ValueError("no spread")
        return ({"mean": math.exp(mu + s * s / 2), "cv": math.sqrt(math.expm1(s * s))},
                stats.lognorm(s, scale=math.exp(mu)), 2)
    if name == "gamma":
        a, _, scale = stats.gamma.fit(x, floc=0)
        return {"mean": a * scale, "cv": 1 / math.sqrt(a)}, stats.gamma(a, scale=scale), 2
    if name == "weibull":
        c, _, scale = stats.weibull_min.fit(x, floc=0)
        return {"shape": float(c), "scale": float(scale)}, stats.weibull_min(c, scale=scale), 2
    if name == "uniform":
        lo, hi = float(x.min()), float(x.max())
        if hi <= lo:
            raise ValueError("no spread")
        return {"low": lo, "high": hi}, stats.uniform(loc=lo, scale=hi - lo), 2
    if name == "pareto":
        xm = float(x.min())
        if xm <= 0:
            raise ValueError("a zero time")
        s = float(np.log(x / xm).sum())
        if s <= 0:
            raise ValueError("no spread")
        alpha = len(x) / s
        return {"shape": alpha, "scale": xm}, stats.pareto(alpha, scale=xm), 2
    if name == "normal":
        # the scenario's normal is truncated at 0: maximise its exact likelihood
        m0, s0 = float(x.mean()), float(x.std()) or 1e-12

        def nll(p):
            loc, s = p[0], math.exp(p[1])
            return -(stats.norm.logpdf(x, loc, s).sum() - len(x) * stats.norm.logsf(0.0, loc, s))

        res = optimize.minimize(nll, [m0, math.log(s0)], method="Nelder-Mead",
                                options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 4000})
        loc, s = float(res.x[0]), math.exp(float(res.x[1]))
        if loc <= 0:
            raise ValueError("the fitted mean is not positive")
        a = (0.0 - loc) / s
        return {"mean": loc, "std": s}, stats.truncnorm(a, math.inf, loc=loc, scale=s), 2
    raise ValueError(f"unknown family {name!r}")  # pragma: no cover


def fit_times(times, families=FAMILIES) -> dict[str, Any]:
    """Fit and rank the families on a sample of step times (seconds, > 0).

    Returns ``{"n": ..., "best": {"dist", "params"}, "ranking": [{"dist",
    "params", "log_likelihood", "bic", "ks"}, ...]}`` with the ranking by BIC
    (lowest first). A sample whose values are all equal is ``constant``.
    Families that cannot describe the sample (e.g. no spread) are left out.
    """
    from scipy import stats

    x = np.asarray(times, dtype=np.float64).ravel()
    if x.size == 0:
        raise InputError("no step times to fit")
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        bad = x[~(np.isfinite(x) & (x > 0))][0]
        raise InputError(f"step times must be finite and > 0 (found {bad!r})")
    if x.size < 2 or float(x.max()) == float(x.min()):
        v = float(x[0])
        return {"n": int(x.size), "best": {"dist": "constant", "params": {"value": v}},
                "ranking": [{"dist": "constant", "params": {"value": v}, "log_likelihood": math.inf,
                             "bic": -math.inf, "ks": 0.0}]}
    ranking = []
    for name in families:
        try:
            params, frozen, k = _fit_one(name, x)
        except (ValueError, FloatingPointError, RuntimeError):
            continue
        with np.errstate(all="ignore"):
            ll = float(np.sum(frozen.logpdf(x)))
        if not math.isfinite(ll):
            continue
        ks = float(stats.kstest(x, frozen.cdf).statistic)
        ranking.append({"dist": name, "params": {k_: float(v) for k_, v in params.items()},
                        "log_likelihood": ll, "bic": k * math.log(x.size) - 2 * ll, "ks": ks})
    if not ranking:  # pragma: no cover - exponential always fits positive data
        raise InputError("no family fits these times")
    ranking.sort(key=lambda r: r["bic"])
    best = ranking[0]
    return {"n": int(x.size), "best": {"dist": best["dist"], "params": best["params"]}, "ranking": ranking}


def compute_block(best: dict[str, Any]) -> dict[str, Any]:
    """The scenario's ``compute:`` mapping for a fit's best family."""
    return {"dist": best["dist"], **{k: float(f"{v:.6g}") for k, v in best["params"].items()}}


# ----------------------------------------------------------------- input files
def _open_csv(path: Path):
    try:
        return path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_times(path: str | Path, column: str | None = None) -> np.ndarray:
    """Step times from a CSV file: the named column, the only column, or a
    ``seconds`` column; one number per line also works (no header)."""
    path = Path(path)
    with _open_csv(path) as fh:
        rows = list(csv.reader(fh))
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"{path}: the file is empty")
    header = [c.strip() for c in rows[0]]
    try:
        [float(c) for c in header]
        has_header = False
    except ValueError:
        has_header = True
    if has_header:
        if column is None:
            column = "seconds" if "seconds" in header else (header[0] if len(header) == 1 else None)
        if column is None or column not in header:
            raise InputError(f"{path}: give --column (columns: {', '.join(header[:8])})"
                             if column is None else f"{path}: no column {column!r}")
        j = header.index(column)
        body, first = rows[1:], 2
    else:
        if column is not None:
            raise InputError(f"{path}: the file has no header, so no column {column!r}")
        j, body, first = 0, rows, 1
    out = np.empty(len(body))
    for i, r in enumerate(body):
        try:
            out[i] = float(r[j])
        except (ValueError, IndexError):
            raise InputError(f"{path}: line {first + i}: not a number in column {j + 1}") from None
    return out


def read_rank_log(path: str | Path) -> dict[int, np.ndarray]:
    """A per-rank step log (CSV with columns ``rank``, ``step``, ``seconds``) as
    ``{rank: step times}``."""
    path = Path(path)
    with _open_csv(path) as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        missing = [c for c in ("rank", "seconds") if c not in fields]
        if missing:
            raise InputError(f"{path}: a per-rank log needs columns rank, step, seconds (missing: "
                             f"{', '.join(missing)})")
        out: dict[int, list[float]] = {}
        for i, row in enumerate(reader, start=2):
            row = {k.strip(): v for k, v in row.items() if k is not None}
            try:
                out.setdefault(int(row["rank"]), []).append(float(row["seconds"]))
            except (TypeError, ValueError):
                raise InputError(f"{path}: line {i}: rank must be an integer and seconds a number") from None
    if not out:
        raise InputError(f"{path}: no rows")
    return {r: np.asarray(v) for r, v in sorted(out.items())}


def fit_ranks(log: dict[int, np.ndarray]) -> dict[str, Any]:
    """Worker groups for a per-rank log: the distinctly slower ranks apart (see the module docstring).

    Returns ``{"groups": [{"name", "ranks", "count", "median", "fit"}, ...], "workers": [...]}``,
    ``workers`` being the scenario's ``workers:`` list (one group per proposed group)."""
    ranks = sorted(log)
    med = np.array([float(np.median(log[r])) for r in ranks])
    centre = float(np.median(med))
    mad = float(np.median(np.abs(med - centre))) * 1.4826  # a robust standard deviation of the medians
    slow_mask = (med > 1.10 * centre) & (med > centre + 5 * mad)
    groups = []
    for name, mask in (("typical", ~slow_mask), ("slow", slow_mask)):
        members = [r for r, m in zip(ranks, mask) if m]
        if not members:
            continue
        times = np.concatenate([log[r] for r in members])
        f = fit_times(times)
        groups.append({"name": name, "ranks": members, "count": len(members),
                       "median": float(np.median(times)), "fit": f})
    workers = [{"name": g["name"], "count": g["count"], "compute": compute_block(g["fit"]["best"])} for g in groups]
    return {"groups": groups, "workers": workers}
