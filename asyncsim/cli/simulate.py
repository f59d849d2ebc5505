"""``asyncsim simulate``: run a scenario, print a summary, write the trace."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import typer

from .._io import check_output_file
from ._app import app
from ._common import Table, console, print_json, progress, user_errors

ENGINES = ("auto", "simpy", "heap", "vector", "fast")


def default_trace_path(name: str, seed: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "scenario"
    return Path(f"{safe}-seed{seed}.parquet")


def run_simulation(scenario_path: Path, updates: Optional[int], seed: Optional[int], engine: str,
                   show_progress: bool, time: Optional[float] = None):
    """Load, simulate (with a progress bar) and return ``(scenario, trace)``."""
    from ..errors import InputError

    if engine not in ENGINES:
        raise InputError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if time is not None and not (math.isfinite(time) and time > 0):
        raise InputError(f"--time must be a finite number of seconds > 0, got {time}")
    from ..engine import simulate
    from ..scenario import load_scenario

    sc = load_scenario(scenario_path, seed=seed)
    with progress(disable=not show_progress) as bar:
        task = bar.add_task(f"simulating {sc.name}", total=1000)
        trace = simulate(sc, updates=updates, time=time, engine=engine,
                         progress=lambda f: bar.update(task, completed=int(1000 * f)))
    return sc, trace


def summary_table(title: str, s: dict) -> Table:
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("quantity")
    t.add_column("value", justify="right")

    def f(v, fmt="{:.4g}"):
        return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)

    rows = [
        ("updates", f(s["updates"], "{:,}")),
        ("gradients computed", f(s["gradients"], "{:,}")),
        ("gradients dropped", f(s["dropped"], "{:,}")),
        ("gradients lost to faults", f(s["lost"], "{:,}")),
        ("simulated time", f(s["sim_time"], "{:.4g} s")),
        ("update rate", f(s["update_rate"], "{:.4g} /s")),
        ("gradient rate", f(s["gradient_rate"], "{:.4g} /s")),
        ("time per update", f(s["time_per_update"], "{:.4g} s")),
        ("staleness mean", f(s["staleness_mean"])),
        ("staleness p50 / p99 / max",
         f"{f(s['staleness_p50'], '{:.0f}')} / {f(s['staleness_p99'], '{:.0f}')} / {f(s['staleness_max'], '{}')}"),
        ("worker utilisation mean (min)",
         f"{f(s['utilisation_mean'], '{:.1%}')} ({f(s['utilisation_min'], '{:.1%}')})"),
    ]
    if "outer_updates" in s:  # the local SGD / DiLoCo family (docs/diloco.md)
        # its rows are pseudo-gradients, its gradient rate counts inner gradients
        rename = {"updates": "outer updates", "gradients computed": "pseudo-gradients",
                  "gradient rate": "gradient rate (inner)", "time per update": "time per outer update"}
        rows = [(rename.get(k, k), v) for k, v in rows]
        rows += [
            ("inner gradients", f(s["inner_gradients"], "{:,}")),
            ("inner steps per second", f(s["inner_steps_per_second"], "{:.4g} /s")),
            ("time per outer round", f(s["time_per_outer_round"], "{:.4g} s")),
            ("communication fraction", f(s["communication_fraction"], "{:.1%}")),
            ("outer staleness mean / max",
             f"{f(s['outer_staleness_mean'])} / {f(s['outer_staleness_max'], '{}')}"),
        ]
    for k, v in rows:
        t.add_row(k, v)
    return t


@app.command()
def simulate(
    scenario: Path = typer.Argument(..., help="Scenario YAML file.", show_default=False),
    updates: Optional[int] = typer.Option(None, "--updates", "-n", min=1, help="Stop after N updates (overrides stop)."),
    time: Optional[float] = typer.Option(None, "--time", help="Stop at this simulated time, in seconds "
                                         "(overrides stop; with --updates, whichever comes first)."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s", min=0, help="Override the scenario's seed."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Trace file (.parquet, .npz, .csv). Default: <name>-seed<S>.parquet"),
    no_save: bool = typer.Option(False, "--no-save", help="Do not write a trace file."),
    engine: str = typer.Option("auto", "--engine", help="auto | simpy | heap | vector | fast"),
    timeline: Optional[Path] = typer.Option(None, "--timeline", help="Also draw the run's timeline as a PNG."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Simulate a cluster and write its staleness trace."""
    with user_errors():
        # output targets that can never be written fail before the run, not after it
        for target in (out if not no_save else None, timeline):
            if target is not None:
                check_output_file(target)
        sc, trace = run_simulation(scenario, updates, seed, engine, show_progress=not json_out, time=time)
        path = None
        if not no_save:
            path = out or default_trace_path(sc.name, sc.seed)
            trace.save(path)
        if timeline is not None:
            from ..plots import plot_timeline

            plot_timeline(trace, timeline)
    s = trace.summary()
    s["scenario"] = sc.name
    s["policy"] = sc.policy.kind
    s["trace"] = str(path) if path else None
    s["timeline"] = str(timeline) if timeline else None
    if s["stalled"]:
        sys.stderr.write(f"asyncsim: warning: the cluster stalled at t={s['sim_time']:.6g} s after "
                         f"{s['updates']:,} updates: faults left the policy unable to complete an update\n")
    if json_out:
        print_json(s)
        return
    console.print(summary_table(f"{sc.name} — {sc.n_workers} workers, policy {sc.policy.kind}, seed {sc.seed}", s))
    pmf = list(s["staleness_pmf"])
    if len(pmf) > 1:
        top = sorted(range(len(pmf)), key=lambda k: -pmf[k])[:6]
        console.print("staleness pmf (most likely τ): "
                      + ", ".join(f"τ={k}: {pmf[k]:.3f}" for k in sorted(top)))
    if path:
        console.print(f"trace written to [bold]{path}[/]")
    if timeline:
        console.print(f"timeline drawn in [bold]{timeline}[/]")
