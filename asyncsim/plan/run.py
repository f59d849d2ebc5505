"""Drive a plan: expand the grid, skip finished points, run the rest on a backend, write
the table and the report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .._io import atomic_write_text, ensure_output_dir
from ..errors import InputError
from .backends import Backend, LocalBackend
from .grid import GridPoint, PlanSpec, expand
from .point import evaluate
from .store import ResultStore, budget_warnings, build_rows, decide, inert_keys, write_table
from .._repr import dataclass_repr

__all__ = ["run_plan", "PlanResult", "resolve_sharpness"]


@dataclass
class PlanResult:
    """What a plan run produced."""

    __repr__ = dataclass_repr  # arrays by shape (asyncsim._repr)

    out_dir: Path
    rows: list[dict[str, Any]]
    points: list[GridPoint]
    computed: int                 # points computed in this run
    skipped: int                  # points found finished on disk
    sharpness: float | None
    paths: dict[str, Path] = field(default_factory=dict)
    wall_s: float = float("nan")
    #: plan-level warnings (e.g. a varied key that changed nothing)
    warnings: list[str] = field(default_factory=list)
    #: with --deadline / --budget: the rows that answer them (see store.decide)
    decision: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: the output folder, every row, counts of points computed and reused."""
        return {"out": str(self.out_dir), "rows": self.rows, "n_rows": len(self.rows),
                "tasks": len({p.task.key for p in self.points}), "computed": self.computed,
                "skipped": self.skipped, "sharpness": self.sharpness, "wall_s": self.wall_s,
                "warnings": list(self.warnings), "decision": self.decision,
                **{k: str(v) for k, v in self.paths.items()}}


def resolve_sharpness(plan: PlanSpec) -> float | None:
    """The sharpness a used for learning rates: given, from ``--base-lr`` (2/η0), or measured.

    With ``--train`` and neither given, it is measured once here (the quadratic's λ_max is
    known: 1 unless ``--sharpness`` says otherwise) and shared by all points."""
    if plan.sharpness is not None:
        return float(plan.sharpness)
    if plan.base_lr is not None:
        return 2.0 / float(plan.base_lr)
    tr = plan.train_spec()
    if tr is None:
        return None
    dataset, model = tr
    if dataset == "quadratic":
        return 1.0
    from ..train import sharpness as measure

    # at the initial parameters of the replays (same seed), on the CPU like the replays
    a = float(measure(dataset, model, seed=plan.run_seed, device="cpu"))
    if not a > 0:
        raise InputError(f"measured sharpness of {dataset}/{model} is {a}; give --sharpness or --base-lr")
    return a


def run_plan(plan: PlanSpec, out_dir: str | Path, backend: Backend | None = None, *,
             progress: Callable[[int, int], None] | None = None,
             point_fn: Callable = evaluate, report: bool = True) -> PlanResult:
    """Run ``plan`` into ``out_dir``: finished points are loaded, the others computed on
    ``backend`` (default: a local process pool) and saved one by one as they arrive; then
    ``results.parquet`` and (``report=True``) the report are written.

    ``progress(done, total)`` is called after each point (``done`` counts loaded ones too).
    ``point_fn`` maps a :class:`~asyncsim.plan.grid.Task` to its record (tests use stand-ins).
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    a = resolve_sharpness(plan)
    points = expand(plan, a)
    ensure_output_dir(out)  # a folder that cannot be written fails now, before any work
    store = ResultStore(out)
    store.clean_temporaries()
    tasks = {}
    for gp in points:
        tasks.setdefault(gp.task.key, gp.task)
    records: dict[str, dict[str, Any]] = {}
    for k in tasks:
        rec = store.load(k)
        if rec is not None:
            records[k] = rec
    todo = [t for k, t in tasks.items() if k not in records]
    skipped = len(records)
    total = len(tasks)
    if progress:
        progress(skipped, total)

    def on_result(task, record):
        store.save(task.key, record)
        records[task.key] = store.load(task.key) or record
        if progress:
            progress(len(records), total)

    (backend or LocalBackend()).map(point_fn, todo, on_result)

    rows = build_rows(points, records, baseline=plan.baseline)
    meta = _meta(plan, a, len(rows))
    meta["warnings"] = [f"varying {k} changed nothing: every row is identical across its values "
                        f"({', '.join(map(str, dict(plan.vary)[k]))})" for k in inert_keys(rows, plan.vary_keys)]
    meta["warnings"] += budget_warnings(rows, plan.vary_keys)
    if plan.deadline is not None or plan.budget is not None:
        meta["decision"] = decide(rows, plan.vary_keys, plan.deadline, plan.budget)
    paths = {"results": write_table(rows, plan.vary_keys, out / "results.parquet", metadata=meta)}
    atomic_write_text(out / "plan.json", json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    paths["plan"] = out / "plan.json"
    if report:
        from .report import write_report

        curves = {k: (r.get("train") or {}).get("curve") for k, r in records.items()}
        regions = {k: (r.get("stability") or {}).get("stable_region") for k, r in records.items()}
        rp = write_report(out, rows, curves, vary_keys=plan.vary_keys, meta=meta, regions=regions)
        paths["report_html"], paths["report_md"] = rp["html"], rp["md"]
    return PlanResult(out, rows, points, computed=len(todo), skipped=skipped, sharpness=a, paths=paths,
                      wall_s=time.perf_counter() - t0, warnings=meta["warnings"], decision=meta.get("decision"))


def _meta(plan: PlanSpec, a: float | None, n_rows: int) -> dict[str, Any]:
    from .. import __version__

    return {"scenario": plan.scenario_source, "scenario_name": plan.scenario.name,
            "vary": {k: v for k, v in plan.vary}, "policies": list(plan.policies or []),
            "baseline": plan.baseline,
            "seed": plan.run_seed, "updates": plan.updates, "time": plan.time, "base_lr": plan.base_lr,
            "sharpness": a, "lr_fraction": plan.lr_fraction, "optimizer": plan.optimizer,
            "momentum": plan.momentum, "criteria": list(plan.criteria or ()), "train": plan.train,
            "target": plan.target, "steps": plan.steps, "deadline": plan.deadline, "budget": plan.budget,
            "currency": plan.scenario.currency,
            "n_rows": n_rows, "version": __version__}
