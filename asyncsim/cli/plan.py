"""``asyncsim plan``: what-if capacity planning over a grid of hardware values and policies."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from .._io import check_output_dir
from ..errors import InputError
from ._app import app
from ._common import Table, console, print_json, progress, user_errors


def _build_plan(scenario: Optional[Path], plan_file: Optional[Path], cli: dict[str, Any]):
    """A PlanSpec from the plan file (if any) overridden by the options given on the command line."""
    from ..plan.grid import PlanSpec, load_plan_file, parse_vary, scenario_from_plan
    from ..scenario import load_scenario

    data: dict[str, Any] = {}
    if plan_file is not None:
        data, base_dir = load_plan_file(plan_file)
        if scenario is None:
            sc, source = scenario_from_plan(data, base_dir, str(plan_file))
        else:
            sc, source = load_scenario(scenario), str(scenario)
        for key in ("out",):  # a relative out: in a plan file is relative to the plan file
            if data.get(key) is not None and not Path(str(data[key])).is_absolute():
                data[key] = str(base_dir / str(data[key]))
    elif scenario is None:
        raise InputError("give a SCENARIO file or --plan PLANFILE.yaml")
    else:
        sc, source = load_scenario(scenario), str(scenario)
    vary = list(data.get("vary") or [])
    for spec in cli.pop("vary") or []:
        k, vals = parse_vary(spec)
        vary = [(kk, vv) for kk, vv in vary if kk != k] + [(k, vals)]  # the command line wins
    merged = {k: v for k, v in data.items() if k not in ("scenario", "vary")}
    merged.update({k: v for k, v in cli.items() if v is not None})
    backend = merged.pop("backend", None) or "local"
    ray_address = merged.pop("ray_address", None)
    workers = merged.pop("workers", None)
    out = merged.pop("out", None)
    # --base-lr and --sharpness exclude each other: one on the command line replaces the file's other
    if cli.get("base_lr") is not None and cli.get("sharpness") is None:
        merged.pop("sharpness", None)
    if cli.get("sharpness") is not None and cli.get("base_lr") is None:
        merged.pop("base_lr", None)
    try:
        plan = PlanSpec(scenario=sc, scenario_source=source, vary=vary, **merged)
    except TypeError as exc:  # a plan-file value of the wrong kind
        raise InputError(f"plan: {exc}") from None
    return plan, backend, ray_address, workers, out


def _num(v, fmt="{:.3g}"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return fmt.format(v)


#: short names of the baselines, for narrow tables
_BASELINE_ABBR = {"allreduce": "AR", "sync": "PS"}


def plan_table(res, plan, width: int):
    """The results as a rich table for a console ``width`` characters wide. Columns are added
    in order of importance for a decision (varied keys, policy, speed-ups against the baseline,
    time to target, learning rate, staleness, ...) while they fit, with short headers below
    120 characters; everything is in results.parquet anyway. Returns ``(table, footnote)``."""
    from rich import box

    from ..plan.report import _human

    rows = res.rows
    has_train = plan.train is not None
    has_lr = any(isinstance(r.get("lr"), float) and math.isfinite(r["lr"]) for r in rows)
    bl = plan.baseline
    narrow = width < 120
    x = f"×{_BASELINE_ABBR.get(bl, bl)}" if narrow else f"×{bl}"
    ratio = ("speedup_throughput", "speedup_to_target", "stability_adjusted_speed")
    # (header, key), most important first
    wanted = [(_human(k, short=True) if narrow else k, k) for k in plan.vary_keys]
    wanted += [("policy", "policy"), (f"{x} grad" if narrow else f"{x} grad/s", "speedup_throughput"),
               (f"{x} prog" if narrow else f"{x} progress", "stability_adjusted_speed")]
    if has_train:
        wanted += [(f"{x} tgt" if narrow else f"{x} to target", "speedup_to_target"),
                   ("tgt s" if narrow else "to target (s)", "time_to_target")]
    wanted += [("lr", "lr")] if has_lr else [("α*", "alpha_star")]
    wanted += [("τ mean", "staleness_mean"), ("upd/s", "update_rate")]
    if has_lr:
        wanted.append(("α*", "alpha_star"))
    wanted += [("τ p99", "staleness_p99")] + ([("final loss", "final_loss")] if has_train else [])
    if any("time_per_outer_round" in r for r in rows):  # the DiLoCo family's outer level (docs/diloco.md)
        wanted += [("s/round", "time_per_outer_round"), ("comm", "communication_fraction")]

    def cell(r, key):
        v = r.get(key)
        if key == "policy":
            return str(v)
        if key in ("alpha_star", "lr"):  # with its 95 % interval from the trace, where there is one
            lo, hi = r.get(f"{key}_lo"), r.get(f"{key}_hi")
            if isinstance(lo, float) and isinstance(hi, float) and math.isfinite(lo) and math.isfinite(hi) \
                    and hi > lo:
                return f"{_num(v)}±{_num((hi - lo) / 2, '{:.2g}')}"
        if key in ratio:
            return _num(v, "{:.2f}")
        return _num(v) if isinstance(v, float) or v is None else str(v)

    order = {k: i for i, (_, k) in enumerate(wanted)}

    def build(cols):
        vary = [c for c in cols if c[1] in plan.vary_keys]
        rest = sorted((c for c in cols if c[1] not in plan.vary_keys), key=lambda c: _DISPLAY_ORDER.index(c[1])
                      if c[1] in _DISPLAY_ORDER else 99 + order[c[1]])
        t = Table(title=f"{plan.scenario.name}: {len(rows)} rows ({res.computed} points computed, "
                  f"{res.skipped} reused)", header_style="bold", box=box.SIMPLE_HEAD)
        for head, key in vary + rest:
            t.add_column(head, justify="left" if key == "policy" else "right", no_wrap=True)
        for r in rows:
            t.add_row(*[cell(r, key) for _, key in vary + rest])
        return t

    from rich.console import Console
    from rich.measure import Measurement

    probe = Console(width=10_000)
    cols: list = []
    t = None
    for c in wanted:  # add each column while the table still fits
        trial = build(cols + [c])
        if Measurement.get(probe, probe.options, trial).maximum <= width or len(cols) < 2:
            cols.append(c)
            t = trial
    dropped = len(wanted) - len(cols)
    note = (f"{x}: against {bl} at the same grid point (grad: gradient rate; prog: updates/s × lr, the "
            f"stability-adjusted speed; tgt: time to target)"
            if narrow else "")
    if dropped:
        note += ("; " if note else "") + f"{dropped} more columns in results.parquet"
    return t, note


#: the order columns are shown in (whichever of them fit)
_DISPLAY_ORDER = ("policy", "update_rate", "speedup_throughput", "stability_adjusted_speed", "staleness_mean",
                  "staleness_p99", "alpha_star", "lr", "time_to_target", "speedup_to_target", "final_loss",
                  "time_per_outer_round", "communication_fraction")


def _print_table(res, plan) -> None:
    rows = res.rows
    out = console
    if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
        from rich.console import Console

        out = Console(highlight=False, width=200)
    t, note = plan_table(res, plan, out.width)
    out.print(t)
    if note:
        out.print(note, style="dim")
    for w in res.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    cur = plan.scenario.currency
    for key, label in (("cheapest_within_deadline", f"cheapest within the {plan.deadline} s deadline"),
                       ("fastest_within_budget", f"fastest within the budget of {plan.budget} {cur}")):
        if res.decision is None or key not in res.decision:
            continue
        d = res.decision[key]
        if d is None:
            console.print(f"[bold]{label}:[/] no configuration reaches the target")
            continue
        where = ", ".join(f"{k}={d.get(k)}" for k in plan.vary_keys)
        cost = f", {_num(d.get('cost_to_target'))} {cur}" if d.get("cost_to_target") is not None else ""
        console.print(f"[bold]{label}:[/] {d['policy']}{' at ' + where if where else ''}: target in "
                      f"{_num(d['time_to_target'])} s{cost}")
    n_warn = sum(1 for r in rows if r.get("warnings"))
    if n_warn:
        console.print(f"{n_warn} rows where the stability criteria disagree (see the report); "
                      f"α* is the most conservative criterion")
    for k in ("results", "report_html", "report_md"):
        if k in res.paths:
            console.print(f"{k.replace('_', ' ')}: {res.paths[k]}")


@app.command()
def plan(
    scenario: Optional[Path] = typer.Argument(None, help="Scenario YAML file (or use --plan).", show_default=False),
    vary: Optional[list[str]] = typer.Option(
        None, "--vary", "-v", help="A dotted scenario path and its values, e.g. workers.0.count=4,8,16 "
        "(repeatable; the grid is their product)."),
    policies: Optional[str] = typer.Option(
        None, "--policies", "-p", help="Comma list of async,sync,backup,k_async,ssp,round_robin,allreduce,"
        "local_sgd,diloco,streaming_diloco,async_diloco (the baseline is always added). Default: the "
        "scenario's policy and the baseline."),
    until_target: bool = typer.Option(
        False, "--until-target", help="With --train and --time CAP: train each point only until it reaches the "
        "target (or its CAP seconds of trace end); every point gets the same simulated time."),
    deadline: Optional[float] = typer.Option(
        None, "--deadline", help="With --train: print the cheapest configuration that reaches the target within "
        "this many simulated seconds."),
    budget: Optional[float] = typer.Option(
        None, "--budget", help="With --train and prices: print the fastest configuration whose cost to reach the "
        "target is within this amount (the scenario's currency)."),
    baseline: Optional[str] = typer.Option(
        None, "--baseline", metavar="POLICY", help="The S-SGD every speed-up is against: sync (through the parameter server) or "
        "allreduce (collectives). Default: allreduce when the scenario has a network, else sync."),
    plan_file: Optional[Path] = typer.Option(None, "--plan",
                                             help="A YAML plan file (scenario:, vary:, policies:, ...)."),
    updates: Optional[int] = typer.Option(None, "--updates", "-n", min=1, help="Simulate N updates per point."),
    time_: Optional[float] = typer.Option(None, "--time", help="Simulate this many seconds per point "
                                          "(with --updates, whichever comes first)."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s", min=0, help="Seed shared by every point "
                                       "(default: the scenario's)."),
    base_lr: Optional[float] = typer.Option(None, "--base-lr", help="S-SGD learning rate η0 (sharpness a = 2/η0)."),
    sharpness: Optional[float] = typer.Option(None, "--sharpness", help="Sharpness a = λmax of the loss Hessian."),
    lr_fraction: Optional[float] = typer.Option(None, "--lr-fraction", help="Recommended lr = this × α*/a "
                                                "(default 0.5)."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="sgd | momentum | shifted (default sgd)."),
    momentum: Optional[float] = typer.Option(None, "--momentum", help="Momentum m (default 0)."),
    criteria: Optional[str] = typer.Option(None, "--criterion", "-c", help="Stability criteria to compute: a comma list "
                                           "of mean, mean-square, trace (default all three)."),
    train: Optional[str] = typer.Option(None, "--train", help="DATASET or DATASET/MODEL to replay each trace on, "
                                        "e.g. quadratic, teacher/mlp:32, digits/linear."),
    target: Optional[float] = typer.Option(None, "--target", help="Training loss that counts as done."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Replay at most N updates (default all)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="local (default) | ray | serial."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster: auto | host:port | "
                                              "ray://host:port (default: start a local Ray)."),
    workers: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Parallel processes "
                                          "(default: one per CPU)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: plan-<scenario name>)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="Simulation engine (default auto)."),
    no_report: bool = typer.Option(False, "--no-report", help="Write results.parquet only."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Sweep a scenario over a grid of values and policies: speed, staleness, stable learning rate,
    time to target against S-SGD; resumable; writes results.parquet and a report."""
    from ..plan.backends import make_backend
    from ..plan.run import run_plan

    cli = {"vary": vary, "policies": policies, "baseline": baseline, "deadline": deadline, "budget": budget,
           "until_target": until_target or None, "updates": updates, "time": time_, "seed": seed,
           "base_lr": base_lr, "sharpness": sharpness, "lr_fraction": lr_fraction, "optimizer": optimizer,
           "momentum": momentum, "criteria": criteria, "engine": engine, "train": train, "target": target,
           "steps": steps, "backend": backend,
           "ray_address": ray_address, "workers": workers, "out": str(out) if out is not None else None}
    with user_errors():
        spec, backend_name, address, n_workers, out_dir = _build_plan(scenario, plan_file, cli)
        be = make_backend(str(backend_name), workers=n_workers, ray_address=address)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.scenario.name)
        out_path = Path(out_dir) if out_dir else Path(f"plan-{safe}")
        check_output_dir(out_path)  # before any point is computed
        state = {"done": 0, "total": 0}
        with progress(disable=json_out) as bar:
            task = bar.add_task(f"plan {spec.scenario.name} ({be.name})", total=None)

            def on_progress(done, total):
                state.update(done=done, total=total)
                bar.update(task, completed=done, total=total)

            try:
                res = run_plan(spec, out_path, be, progress=on_progress, report=not no_report)
            except KeyboardInterrupt:
                sys.stderr.write(f"asyncsim: stopped: {state['done']} of {state['total']} points are saved in "
                                 f"{out_path}; run the same command again to finish the rest\n")
                raise
    if json_out:
        print_json(res.to_dict())
        return
    _print_table(res, spec)
