"""``asyncsim stability`` (α* by criterion and a learning rate) and ``asyncsim figures``.

Default criterion: ``all`` when the source is a trace or a scenario (mean, mean-square and trace),
and ``all`` for ``--pmf`` too, which there means mean and mean-square (the trace criterion needs a
trace). ``--json`` keys: ``alpha_star`` (the named criterion's α*, or with ``all`` the
conservative one), ``criterion``, ``alpha_star_by_criterion``, ``conservative``, ``lr`` (when
``--base-lr`` or ``--sharpness`` is given), ``warnings``, ``staleness_mean``, ``source``, and for a
trace or scenario ``alpha_star_ci`` ({criterion: [lo, hi]}, 95 %), ``updates_for_1pct`` and
``notes`` (criteria skipped, intervals not given). A progress bar (stderr, terminals only) follows
each criterion. For a local SGD / DiLoCo trace (:mod:`asyncsim.stability.diloco`) ``alpha_star`` is
the inner α* of the outer recursion at the trace's outer parameters, with ``outer_lr_max``,
``stable_region`` and ``diloco`` added; ``--out PATH`` draws the stable region (a PNG; JSON key
``plot``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from ._app import app
from ._common import Table, console, fail, print_json, user_errors

_CRITERIA = ("mean", "mean-square", "trace", "all")
_NOTES = {
    "mean": "first moment, i.i.d. delays (the paper's)",
    "mean-square": "second moment, i.i.d. delays",
    "trace": "actual delay sequence (Lyapunov exponent)",
}


def _load_source(scenario: Optional[Path], trace: Optional[Path], pmf: Optional[str],
                 updates: Optional[int], seed: Optional[int]):
    given = [x is not None for x in (scenario, trace, pmf)]
    if sum(given) != 1:
        fail("give exactly one of SCENARIO, --trace PATH or --pmf SPEC")
    if pmf is not None:
        from ..stability.families import parse_pmf_spec

        return parse_pmf_spec(pmf), f"pmf {pmf}"
    if trace is not None:
        from ..trace import Trace

        return Trace.load(trace), f"trace {trace}"
    import asyncsim

    sc = asyncsim.load_scenario(scenario)
    return asyncsim.simulate(sc, updates=updates, seed=seed), f"scenario {scenario}"


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and not math.isfinite(v):
        return "∞" if v > 0 else "–"
    return f"{v:.4g}"


@app.command()
def stability(
    scenario: Optional[Path] = typer.Argument(None, help="Scenario YAML file (simulated first).",
                                              show_default=False),
    trace: Optional[Path] = typer.Option(None, "--trace", help="A trace file (.parquet, .npz, .csv)."),
    pmf: Optional[str] = typer.Option(None, "--pmf",
                                      help="A named delay pmf: constant:T, uniform:LO:HI, gaussian:MU[:SIGMA], geometric:N, pmf:p0,p1,..."),
    criterion: str = typer.Option("all", "--criterion", "-c",
                                  help="mean | mean-square | trace | all (trace needs a trace or scenario)."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd | momentum | shifted"),
    momentum: float = typer.Option(0.0, "--momentum", help="Momentum m (0 <= m < 1)."),
    base_lr: Optional[float] = typer.Option(None, "--base-lr",
                                            help="S-SGD learning rate η0 (taken at GD's edge, a = 2/η0)."),
    sharpness: Optional[float] = typer.Option(None, "--sharpness", help="Measured sharpness a = λmax(Hessian)."),
    updates: Optional[int] = typer.Option(None, "--updates", "-n", min=1,
                                          help="Updates to simulate for a scenario (default: its stop)."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s", min=0, help="Seed for a scenario's simulation."),
    plot: Optional[Path] = typer.Option(None, "--out", "-o",
                                        help="Local SGD / DiLoCo traces: write the stable region in (inner lr, "
                                             "outer lr) as a PNG here."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Largest stable α = a·η for a delay distribution, by criterion, and a learning rate
    (local SGD / DiLoCo: inner α at the trace's outer parameters, and the stable region)."""
    with user_errors():
        from ..stability import CRITERIA, analyze
        from ..stability.characteristic import check_optimizer

        if criterion not in _CRITERIA:
            raise InputError(f"--criterion must be one of {', '.join(_CRITERIA)}, got {criterion!r}")
        if base_lr is not None and sharpness is not None:
            raise InputError("--base-lr and --sharpness are exclusive: give one")
        for v, what in ((base_lr, "--base-lr"), (sharpness, "--sharpness")):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise InputError(f"{what} must be a finite number > 0, got {v}")
        check_optimizer(optimizer, momentum)
        source, desc = _load_source(scenario, trace, pmf, updates, seed)
        crits = CRITERIA if criterion == "all" else (criterion,)
        from ._common import progress as progress_bar

        with progress_bar() as bar:
            tasks: dict = {}

            def report(desc, done, total):
                if desc not in tasks:
                    tasks[desc] = bar.add_task(desc, total=total)
                bar.update(tasks[desc], completed=done, total=total)

            rep = analyze(source, criteria=crits, optimizer=optimizer, momentum=momentum,
                          base_lr=base_lr, sharpness=sharpness, progress=report)
        if plot is not None:
            if rep.diloco is None:
                raise InputError("--out draws the stable region of a local SGD / DiLoCo trace; this source "
                                 "is none")
            from ..stability.diloco import plot_region

            plot_region(rep.diloco["stable_region"], plot, title=f"stable region of {desc}")
    out = rep.to_dict()
    out["criterion"] = criterion
    if criterion != "all":
        out["alpha_star"] = rep.alpha_star[criterion]
    out["source"] = desc
    if plot is not None:
        out["plot"] = str(plot)
    if json_out:
        print_json(out)
        return
    if rep.diloco is not None:
        _print_diloco(rep, desc)
        return
    title = f"Stability of {desc} ({optimizer}" + (f", m = {momentum:g}" if optimizer != "sgd" else "") + ")"
    t = Table(title=title, header_style="bold")
    t.add_column("criterion")
    t.add_column("α* = a·η", justify="right")
    if rep.alpha_star_ci:
        t.add_column("± (95 %)", justify="right")
        t.add_column("updates for ±1 %", justify="right")
    if rep.lr is not None:
        t.add_column("learning rate", justify="right")
    t.add_column("notes")
    for name, a in rep.alpha_star.items():
        note = _NOTES[name] + ("  ← conservative" if name == rep.conservative and len(rep.alpha_star) > 1 else "")
        row = [name, _fmt(a)]
        if rep.alpha_star_ci:
            lo_hi = rep.alpha_star_ci.get(name)
            need = rep.updates_for_1pct.get(name)
            row += ([_fmt((lo_hi[1] - lo_hi[0]) / 2), f"{need:,}" if need is not None else "–"] if lo_hi
                    else ["–", "–"])
        row += ([_fmt(rep.lr[name])] if rep.lr is not None else []) + [note]
        t.add_row(*row)
    if rep.lr is not None:
        t.add_row("paper rule", "", *(["", ""] if rep.alpha_star_ci else []), _fmt(rep.lr["paper_rule"]),
                  "π·η0 / (4(E[τ] + 0.5)), eq. 8")
    console.print(t)
    console.print(f"mean staleness E[τ] = {rep.staleness_mean:.4g}")
    for w in rep.warnings:
        console.print(f"warning: {w}")
    for n in rep.notes:
        console.print(f"note: {n}")


def _print_diloco(rep, desc: str) -> None:
    """The table of a local SGD / DiLoCo trace: inner α*, the outer-lr bound, the stable region."""
    d = rep.diloco
    pol, reg = d["policy"], d["stable_region"]
    t = Table(title=f"Stability of {desc} ({pol['kind']}, H = {pol['inner_steps']}, outer lr {pol['outer_lr']:g}, "
                    f"μ = {pol['outer_momentum']:g}{', Nesterov' if pol['nesterov'] else ''})", header_style="bold")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_column("notes")
    t.add_row("inner α* = a·η", _fmt(d["alpha_star"]), "trace criterion of the outer recursion")
    t.add_row("closed form (synchronous)", _fmt(d["alpha_star_synchronous"]), reg["condition"]
              if reg["method"] == "closed-form" else "synchronous rounds with these outer parameters")
    t.add_row("outer lr bound", _fmt(d["outer_lr_max"]), f"at inner α = {_fmt(d['outer_lr_max_at_alpha'])}")
    if rep.lr is not None:
        t.add_row("inner learning rate", _fmt(rep.lr["trace"]), "from α*")
    console.print(t)
    r = Table(title=f"stable region ({reg['method']}): outer lr < bound", header_style="bold")
    r.add_column("α")
    if "eta" in reg:
        r.add_column("η", justify="right")
    r.add_column("outer lr bound", justify="right")
    for i, a in enumerate(reg["alpha"]):
        r.add_row(_fmt(a), *([_fmt(reg["eta"][i])] if "eta" in reg else []), _fmt(reg["outer_lr_max"][i]))
    console.print(r)
    for n in rep.notes:
        console.print(f"note: {n}")


@app.command()
def figures(
    out: Path = typer.Option(Path("figures"), "--out", "-o", help="Directory for the PNG files."),
    updates: int = typer.Option(40_000, "--updates", "-n", min=1000,
                                help="Updates per simulated cluster in the α*-vs-N figure."),
    seed: int = typer.Option(0, "--seed", "-s", min=0, help="Seed of the simulated clusters."),
) -> None:
    """Regenerate the paper's theory figures (6, 7, 8, 10, 4-left) and α* by criterion vs N."""
    with user_errors():
        from .._io import check_output_dir
        from ..stability.figures import write_all

        check_output_dir(out)  # before minutes of work
        paths = write_all(out, updates=updates, seed=seed)
    for p in paths:
        console.print(str(p))
