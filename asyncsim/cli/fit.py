"""``asyncsim fit``: fit the compute-time families to measured step times."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import app
from ._common import Table, console, print_json, user_errors


@app.command()
def fit(
    file: Path = typer.Argument(..., metavar="TIMES", help="CSV of step times (one column, or a 'seconds' column), "
                                "or with --ranks a per-rank log (columns rank, step, seconds).", show_default=False),
    column: Optional[str] = typer.Option(None, "--column", help="The column holding the step times."),
    ranks: bool = typer.Option(False, "--ranks", help="Read a per-rank log and propose worker groups for "
                               "distinctly slower ranks."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the proposed scenario block "
                                       "(compute: or workers:) as YAML to this file."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Fit the distribution families to measured step times by maximum likelihood, rank them by BIC (with
    the Kolmogorov-Smirnov distance of each fit) and print a scenario compute: block."""
    import yaml

    from .._io import atomic_write_text
    from ..fit import compute_block, fit_ranks, fit_times, read_rank_log, read_times

    with user_errors():
        if ranks:
            res = fit_ranks(read_rank_log(file))
            block = {"workers": res["workers"]}
            out_obj = {"groups": [{**{k: v for k, v in g.items() if k != "fit"}, "best": g["fit"]["best"],
                                   "ranking": g["fit"]["ranking"]} for g in res["groups"]],
                       "workers": res["workers"]}
        else:
            res = fit_times(read_times(file, column))
            block = {"compute": compute_block(res["best"])}
            out_obj = res
        text = yaml.safe_dump(block, sort_keys=False)
        if out is not None:
            atomic_write_text(out, text)
    if json_out:
        print_json(out_obj)
        return
    fits = [(g["name"], g["fit"]) for g in res["groups"]] if ranks else [(None, res)]
    for name, f in fits:
        title = f"{f['n']} step times" + (f" ({name} ranks: {len(next(g for g in res['groups'] if g['name'] == name)['ranks'])})"
                                          if name else "")
        t = Table(title=title, header_style="bold")
        for c in ("family", "parameters", "log L", "BIC", "KS"):
            t.add_column(c, justify="left" if c in ("family", "parameters") else "right")
        for r in f["ranking"]:
            params = ", ".join(f"{k} {v:.4g}" for k, v in r["params"].items())
            t.add_row(r["dist"], params, f"{r['log_likelihood']:.1f}", f"{r['bic']:.1f}", f"{r['ks']:.4f}")
        console.print(t)
    console.print("Proposed scenario block (best by BIC):")
    console.print(text.rstrip(), markup=False, highlight=False)
    if out is not None:
        console.print(f"wrote {out}")
