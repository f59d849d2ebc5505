"""Resumable plan results: one small file per finished point, then the assembled table.

Layout of a plan's output folder::

    DIR/points/<key>.json   one finished point (key = hash of its resolved scenario + settings)
    DIR/results.parquet     the table, one row per grid point and policy
    DIR/plan.json           the plan that produced the table
    DIR/report.html, DIR/report.md, DIR/figures/*.png

Each point file is written atomically (temporary file + rename) by the driving
process as soon as the point's result arrives, so a run killed at any moment
(SIGINT or SIGKILL) leaves only whole point files; rerunning the same command
loads them and computes only the rest. Because points are keyed by content,
two rows with the same resolved scenario (e.g. the S-SGD baseline when only a
backup-policy parameter varies) are computed once, and every row appears
exactly once in the table however often the run was interrupted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .._io import TEMP_GLOB, atomic_path, atomic_write_text
from .grid import POINT_FORMAT, GridPoint

__all__ = ["ResultStore", "build_rows", "write_table", "read_table", "TABLE_COLUMNS"]

#: Metric columns of the results table, in order (varied keys come first, then ``policy``).
TABLE_COLUMNS = (
    "policy", "n_workers", "update_rate", "gradient_rate", "sim_time", "time_per_update", "utilisation",
    "staleness_mean", "staleness_p50", "staleness_p99", "staleness_max", "dropped",
    "alpha_star_mean", "alpha_star_mean_square", "alpha_star_trace", "alpha_star", "alpha_star_lo", "alpha_star_hi",
    "criterion", "lr_max", "lr", "lr_lo", "lr_hi", "baseline", "speedup_throughput", "stability_adjusted_speed",
)
#: the DiLoCo family's outer-level columns (rows of other policies leave them out)
OUTER_COLUMNS = ("outer_updates", "inner_gradients", "step_rate", "time_per_outer_round", "communication_fraction",
                 "outer_staleness_mean", "outer_staleness_max", "outer_lr_max")
TRAIN_COLUMNS = ("time_to_target", "steps_to_target", "final_loss", "diverged", "speedup_to_target")
COST_COLUMNS = ("cost_per_hour", "cost_per_1k_updates")
TRAIN_COST_COLUMNS = ("cost_to_target",)


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class ResultStore:
    """Finished point results under ``DIR/points``, keyed by the point's hash."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.points_dir = self.dir / "points"

    def path(self, key: str) -> Path:
        return self.points_dir / f"{key}.json"

    def has(self, key: str) -> bool:
        """True when a complete result for ``key`` is on disk (an unreadable file counts as absent)."""
        return self.load(key) is not None

    def load(self, key: str) -> dict[str, Any] | None:
        p = self.path(key)
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(rec, dict) or rec.get("key") != key or rec.get("format") != POINT_FORMAT:
            return None
        return rec

    def save(self, key: str, record: dict[str, Any]) -> Path:
        """Write one point's result atomically."""
        rec = _clean({**record, "key": key, "format": POINT_FORMAT})
        p = self.path(key)
        atomic_write_text(p, json.dumps(rec, sort_keys=True, allow_nan=False))
        return p

    def clean_temporaries(self) -> int:
        """Remove temporary files a killed run left behind (one run per folder at a time):
        in the folder itself (table, report), ``points/`` and ``figures/``."""
        n = 0
        for folder in (self.dir, self.points_dir, self.dir / "figures"):
            if not folder.is_dir():
                continue
            for p in folder.glob(TEMP_GLOB):
                try:
                    if p.is_file():
                        p.unlink()
                        n += 1
                except OSError:
                    pass
        return n

    def finished(self, keys: Iterable[str]) -> set[str]:
        return {k for k in set(keys) if self.has(k)}


def _f(x: Any) -> float:
    return float("nan") if x is None else float(x)


def build_rows(points: list[GridPoint], records: dict[str, dict[str, Any]],
               baseline: str = "sync") -> list[dict[str, Any]]:
    """The results table as a list of row dicts (one per grid point and policy, in grid order).

    Speed-ups are against the ``baseline`` policy's row of the same grid point
    (same hardware, same seed): ``speedup_throughput`` = gradient rate ÷ the
    baseline's (gradients, not updates: one S-SGD update averages N of them),
    ``speedup_to_target`` = the baseline's time to target ÷ this row's,
    ``stability_adjusted_speed`` = (update rate × recommended lr) ÷ the baseline's: the
    first-order progress per second (see :func:`stability_adjusted_speed`). For the local
    SGD / DiLoCo family the gradient rate counts inner gradients and the rows carry
    :data:`OUTER_COLUMNS`."""
    rows: list[dict[str, Any]] = []
    for gp in points:
        rec = records[gp.task.key]
        s = rec["summary"]
        st = rec["stability"]
        a = st.get("alpha_star") or {}
        row: dict[str, Any] = dict(gp.values)
        row.update({
            "policy": gp.policy,
            "grid_point": gp.index,
            "n_workers": gp.n_workers,
            "update_rate": _f(s.get("update_rate")),
            "gradient_rate": _f(s.get("gradient_rate")),
            "sim_time": _f(s.get("sim_time")),
            "time_per_update": _f(s.get("time_per_update")),
            "utilisation": _f(s.get("utilisation_mean")),
            "staleness_mean": _f(s.get("staleness_mean")),
            "staleness_p50": _f(s.get("staleness_p50")),
            "staleness_p99": _f(s.get("staleness_p99")),
            "staleness_max": _f(s.get("staleness_max")),
            "dropped": int(s.get("dropped") or 0),
            "alpha_star_mean": _f(a.get("mean")),
            "alpha_star_mean_square": _f(a.get("mean-square")),
            "alpha_star_trace": _f(a.get("trace")),
            "alpha_star": _f(st.get("alpha_star_conservative")),
            "criterion": st.get("conservative") or "",
            "lr_max": _f(rec.get("lr_max")),
            "lr": _f(rec.get("lr")),
            **_intervals(st, rec),
            "warnings": " | ".join(st.get("warnings") or []),
            "key": gp.task.key,
        })
        outer = s.get("outer")
        if outer:  # a DiLoCo family row (docs/diloco.md)
            n = max(gp.n_workers, 1)
            row.update({
                "outer_updates": int(outer.get("outer_updates") or 0),
                "inner_gradients": int(outer.get("inner_gradients") or 0),
                # inner steps per worker per second (see stability_adjusted_speed)
                "step_rate": _f(outer.get("inner_steps_per_second")) / n,
                "time_per_outer_round": _f(outer.get("time_per_outer_round")),
                "communication_fraction": _f(outer.get("communication_fraction")),
                "outer_staleness_mean": _f(outer.get("outer_staleness_mean")),
                "outer_staleness_max": _f(outer.get("outer_staleness_max")),
                # the largest stable outer lr at half the inner edge (asyncsim.stability.diloco)
                "outer_lr_max": _f(st.get("outer_lr_max")),
            })
        tr = rec.get("train")
        if tr is not None:
            row.update({
                "time_to_target": _f(tr.get("time_to_target")),
                "steps_to_target": _f(tr.get("steps_to_target")),
                "final_loss": _f(tr.get("final_loss")),
                "diverged": bool(tr.get("diverged")),
            })
        per_hour = cluster_price(gp.task.scenario)
        if per_hour is not None:
            row["cost_per_hour"] = per_hour
            row["cost_per_1k_updates"] = per_hour * row["time_per_update"] * 1000 / 3600
            if tr is not None:
                row["cost_to_target"] = per_hour * row["time_to_target"] / 3600
        rows.append(row)
    # speed-ups against the baseline's row of the same grid point (same hardware, same seed)
    ref = {r["grid_point"]: r for r in rows if r["policy"] == baseline}
    for r in rows:
        base = ref.get(r["grid_point"])
        r["baseline"] = baseline
        g0 = base.get("gradient_rate") if base else None
        r["speedup_throughput"] = (r["gradient_rate"] / g0 if g0 and r.get("gradient_rate") is not None
                                   and math.isfinite(g0) and g0 > 0 else float("nan"))
        r["stability_adjusted_speed"] = stability_adjusted_speed(r, base)
        if "time_to_target" in r:
            t, t0 = r["time_to_target"], base.get("time_to_target", float("nan")) if base else float("nan")
            r["speedup_to_target"] = t0 / t if (math.isfinite(t) and math.isfinite(t0) and t > 0) \
                else float("nan")
    return rows


def _intervals(st: dict[str, Any], rec: dict[str, Any]) -> dict[str, float]:
    """The conservative α*'s 95 % interval from the trace and the learning rates it implies
    (lr scales with α*): ``alpha_star_lo/hi``, ``lr_lo/hi`` (NaN where the stability analysis
    gave no interval)."""
    ci = (st.get("alpha_star_ci") or {}).get(st.get("conservative") or "")
    lo, hi = (ci if ci and len(ci) == 2 else (float("nan"), float("nan")))
    a, lr = st.get("alpha_star_conservative"), rec.get("lr")
    scale = lr / a if _finite(lr) and _finite(a) and a > 0 else float("nan")
    return {"alpha_star_lo": _f(lo), "alpha_star_hi": _f(hi), "lr_lo": _f(lo * scale), "lr_hi": _f(hi * scale)}


def stability_adjusted_speed(row: dict[str, Any], base: dict[str, Any] | None) -> float:
    """First-order progress per second relative to the baseline's: (update rate × lr) ÷ (the
    baseline's update rate × its lr).

    Every update is one step of size lr along the mean of the gradients it applies, so on a
    quadratic (the stability theory's model) the loss falls per second in proportion to
    updates/s × lr, whether an update averages one gradient (A-SGD) or N (S-SGD): averaging
    lowers the noise, not the step. (Counting gradients/s × lr instead would credit S-SGD
    with N steps per update.) The recommended lr is lr_fraction × α*/a for every row with the
    same a, so the ratio is (updates/s × α*) ÷ the baseline's, defined with or without a
    sharpness. A-SGD gains updates per second and pays in α*: this number weighs the two."""
    if not base:
        return float("nan")
    # a DiLoCo row's steps are its inner steps per worker per second (``step_rate``; one round of
    # local SGD moves H steps' worth at first order) and its α* the inner one; the outer
    # optimizer's lr and momentum are not credited (they change the constant, not the rate, and
    # the inner optimizer need not be SGD: the time to target is the measure for them)
    u, a = row.get("step_rate", row.get("update_rate")), row.get("alpha_star")
    u0, a0 = base.get("update_rate"), base.get("alpha_star")
    if not all(_finite(x) for x in (u, a, u0, a0)) or u0 <= 0 or a0 <= 0:
        return float("nan")
    return (u * a) / (u0 * a0)


def cluster_price(scenario: dict[str, Any]) -> float | None:
    """Price of the whole cluster per hour: each group's ``cost_per_hour`` (else the scenario's
    ``cost_per_worker_hour``) times its count; ``None`` when no price is given anywhere."""
    default = scenario.get("cost_per_worker_hour")
    total, priced = 0.0, False
    for g in scenario.get("workers", []):
        p = g.get("cost_per_hour", default)
        if p is None:
            if default is None and not priced:
                continue
            return None  # some groups priced, others not: no total
        total += float(p) * int(g["count"])
        priced = True
    return total if priced else None


def decide(rows: list[dict[str, Any]], vary_keys: list[str], deadline: float | None = None,
           budget: float | None = None) -> dict[str, Any]:
    """The rows a decision needs: the cheapest that reaches the target within ``deadline``
    seconds of simulated time, and the fastest whose cost to target is within ``budget``
    (``None`` where no row qualifies). Rows need ``time_to_target`` (and ``cost_to_target``)."""
    def pick(r):
        return {**{k: r.get(k) for k in vary_keys}, "policy": r["policy"], "time_to_target": r["time_to_target"],
                "cost_to_target": r.get("cost_to_target")}

    out: dict[str, Any] = {}
    reached = [r for r in rows if _finite(r.get("time_to_target"))]
    if deadline is not None:
        ok = [r for r in reached if r["time_to_target"] <= deadline and _finite(r.get("cost_to_target"))]
        out["cheapest_within_deadline"] = pick(min(ok, key=lambda r: (r["cost_to_target"], r["time_to_target"]))) \
            if ok else None
    if budget is not None:
        ok = [r for r in reached if _finite(r.get("cost_to_target")) and r["cost_to_target"] <= budget]
        out["fastest_within_budget"] = pick(min(ok, key=lambda r: (r["time_to_target"], r["cost_to_target"]))) \
            if ok else None
    return out


def budget_warnings(rows: list[dict[str, Any]], vary_keys: list[str]) -> list[str]:
    """Rows whose simulation budget ended, without reaching the target, at a simulated time
    before another policy of the same grid point reached it: their "no time to target" says
    the budget was too small, not that the policy is slower (``--updates`` gives a fast policy
    less simulated time)."""
    out = []
    by_point: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        by_point.setdefault(r.get("grid_point"), []).append(r)
    for rs in by_point.values():
        reached = [r for r in rs if _finite(r.get("time_to_target"))]
        if not reached:
            continue
        first = min(reached, key=lambda r: r["time_to_target"])
        last = max(reached, key=lambda r: r["time_to_target"])
        for r in rs:
            if "time_to_target" in r and not _finite(r.get("time_to_target")) and _finite(r.get("sim_time")) \
                    and r["sim_time"] < last["time_to_target"]:
                where = ", ".join(f"{k}={r.get(k)}" for k in vary_keys)
                out.append(f"{r['policy']}{' at ' + where if where else ''} ran out of budget at "
                           f"{r['sim_time']:.4g} s of simulated time without reaching the target, while "
                           f"{last['policy']} reached it at {last['time_to_target']:.4g} s"
                           + (f" ({first['policy']} at {first['time_to_target']:.4g} s)" if first is not last else "")
                           + ": compare with --time")
    return out


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


#: the metrics compared by :func:`inert_keys`
_EFFECT_METRICS = ("update_rate", "gradient_rate", "staleness_mean", "staleness_max", "dropped", "utilisation",
                   "alpha_star", "time_to_target", "final_loss")


def inert_keys(rows: list[dict[str, Any]], vary_keys: list[str]) -> list[str]:
    """The varied keys (with more than one value) that changed no metric of any row:
    for every policy and every combination of the other keys' values, all of the key's
    values give identical metrics. (Such a key usually names something the model does
    not use here, e.g. a bandwidth without a model size.)"""
    out = []
    for k in vary_keys:
        if len({repr(r.get(k)) for r in rows}) < 2:
            continue
        groups: dict[tuple, set] = {}
        for r in rows:
            ctx = (r["policy"],) + tuple(repr(r.get(o)) for o in vary_keys if o != k)
            groups.setdefault(ctx, set()).add(tuple(repr(r.get(m)) for m in _EFFECT_METRICS))
        if all(len(v) == 1 for v in groups.values()):
            out.append(k)
    return out


def column_order(rows: list[dict[str, Any]], vary_keys: list[str]) -> list[str]:
    """Varied keys, then the metric columns present, then anything else."""
    present = set().union(*(r.keys() for r in rows)) if rows else set()
    cols = [k for k in vary_keys if k in present]
    for group in (TABLE_COLUMNS, OUTER_COLUMNS, TRAIN_COLUMNS, COST_COLUMNS, TRAIN_COST_COLUMNS):
        cols += [c for c in group if c in present and c not in cols]
    cols += [c for c in ("grid_point", "warnings", "key") if c in present and c not in cols]
    cols += sorted(present - set(cols))
    return cols


def write_table(rows: list[dict[str, Any]], vary_keys: list[str], path: str | Path,
                metadata: dict[str, Any] | None = None) -> Path:
    """Write the rows as Parquet, atomically (mixed-type varied columns are stored as text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = column_order(rows, vary_keys)
    arrays = {}
    for c in cols:
        vals = [r.get(c) for r in rows]
        try:
            arrays[c] = pa.array(vals)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[c] = pa.array([None if v is None else str(v) for v in vals])
    table = pa.table(arrays)
    if metadata is not None:
        table = table.replace_schema_metadata(
            {b"asyncsim_plan": json.dumps(_clean(metadata), sort_keys=True).encode()})
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """Read a results table back as a list of row dicts."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()
