"""``asyncsim validate`` and ``asyncsim schema``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ._app import app
from ._common import console, print_json


@app.command()
def validate(
    files: List[Path] = typer.Argument(..., metavar="FILE", help="Scenario files to check.", show_default=False),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Check scenario files; print one line per problem. Exit 2 if any file is invalid."""
    from ..errors import ScenarioError
    from ..scenario import load_scenario

    results = []
    for f in files:
        try:
            sc = load_scenario(f)
        except ScenarioError as exc:
            results.append({"file": str(f), "ok": False, "error": str(exc), "problems": list(exc.problems)})
            continue
        r = {"file": str(f), "ok": True, "name": sc.name, "workers": sc.n_workers, "policy": sc.policy.kind}
        if hasattr(sc.policy, "inner_steps"):  # the local SGD / DiLoCo family: its outer schedule
            r.update(inner_steps=sc.policy.inner_steps, fragments=sc.policy.fragments)
        results.append(r)
    bad = [r for r in results if not r["ok"]]
    if json_out:
        print_json({"ok": not bad, "files": results})
    else:
        tty = sys.stdout.isatty()  # rich (colour) only for a terminal: it is a tenth of validate's start-up
        for r in results:
            if r["ok"]:
                pol = r["policy"] + (f", H = {r['inner_steps']}" if "inner_steps" in r else "") + \
                    (f", P = {r['fragments']}" if r.get("fragments", 1) > 1 else "")
                rest = f"  {r['file']}  ({r['name']}: {r['workers']} workers, {pol})"
                if tty:
                    from rich.markup import escape

                    console.print("[green]ok[/]" + escape(rest))
                else:
                    sys.stdout.write(f"ok{rest}\n")
    for r in bad:
        for problem in r["problems"]:
            sys.stderr.write(f"asyncsim: error: {' '.join(problem.split())}\n")
    if bad:
        raise typer.Exit(2)


@app.command()
def schema(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the schema to this file."),
) -> None:
    """Print the JSON Schema of scenario files (for editor completion)."""
    from .._io import atomic_write_text
    from ..scenario import scenario_json_schema

    text = json.dumps(scenario_json_schema(), indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
        console.print(f"wrote {out}")
