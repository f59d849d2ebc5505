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
    "policy", "n_workers", "update_rate", "gradient_rate", "time_per_update", "utilisation",
    "staleness_mean", "staleness_p50", "staleness_p99", "staleness_max", "dropped",
    "alpha_star_mean", "alpha_star_mean_square", "alpha_star_trace", "alpha_star", "criterion",
    "lr_max", "lr", "speedup_vs_sync",
)
TRAIN_COLUMNS = ("time_to_target", "steps_to_target", "final_loss", "diverged", "target_speedup_vs_sync")
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


def build_rows(points: list[GridPoint], records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The results table as a list of row dicts (one per grid point and policy, in grid order)."""
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
            "warnings": " | ".join(st.get("warnings") or []),
            "key": gp.task.key,
        })
        tr = rec.get("train")
        if tr is not None:
            row.update({
                "time_to_target": _f(tr.get("time_to_target")),
                "steps_to_target": _f(tr.get("steps_to_target")),
                "final_loss": _f(tr.get("final_loss")),
                "diverged": bool(tr.get("diverged")),
            })
        price = gp.task.scenario.get("cost_per_worker_hour")
        if price is not None:
            per_hour = float(price) * gp.n_workers
            row["cost_per_hour"] = per_hour
            row["cost_per_1k_updates"] = per_hour * row["time_per_update"] * 1000 / 3600
            if tr is not None:
                row["cost_to_target"] = per_hour * row["time_to_target"] / 3600
        rows.append(row)
    # speed-ups against the S-SGD row of the same grid point (same hardware, same seed)
    sync = {r["grid_point"]: r for r in rows if r["policy"] == "sync"}
    for r in rows:
        base = sync.get(r["grid_point"])
        r["speedup_vs_sync"] = (r["update_rate"] / base["update_rate"]
                                if base and base["update_rate"] > 0 else float("nan"))
        if "time_to_target" in r:
            t, t0 = r["time_to_target"], base.get("time_to_target", float("nan")) if base else float("nan")
            r["target_speedup_vs_sync"] = t0 / t if (math.isfinite(t) and math.isfinite(t0) and t > 0) \
                else float("nan")
    return rows


def column_order(rows: list[dict[str, Any]], vary_keys: list[str]) -> list[str]:
    """Varied keys, then the metric columns present, then anything else."""
    present = set().union(*(r.keys() for r in rows)) if rows else set()
    cols = [k for k in vary_keys if k in present]
    for group in (TABLE_COLUMNS, TRAIN_COLUMNS, COST_COLUMNS, TRAIN_COST_COLUMNS):
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
