"""Generate the reference pages of the documentation from the code itself.

``python -m asyncsim._docgen docs/`` rewrites ``docs/reference/scenario.md``
(every scenario field: type, default, unit/description, from the pydantic
models) and ``docs/reference/cli.md`` (every command's ``--help``). A test
checks the committed pages are current, so the docs cannot drift.
"""

from __future__ import annotations

import inspect
import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from . import distributions as D
from . import scenario as S


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        names = [_type_name(a) for a in args if a is not type(None)]
        opt = type(None) in args
        # a discriminated union of models reads better by its tag values
        return " | ".join(dict.fromkeys(names)) + (" (optional)" if opt else "")
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (tuple, list):
        inner = [a for a in args if a is not Ellipsis]
        return f"list of {_type_name(inner[0])}" if inner else "list"
    if inspect.isclass(tp) and issubclass(tp, D.Distribution):
        return "distribution"
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    return getattr(tp, "__name__", str(tp))


def _default(field) -> str:
    if field.default is not PydanticUndefined:
        return "—" if field.default is None else f"`{field.default!r}`"
    if field.default_factory is not None:
        try:
            return f"`{field.default_factory()!r}`"
        except TypeError:
            return "(computed)"
    return "**required**"


def _model_table(model: type[BaseModel]) -> list[str]:
    lines = [f"### {model.__name__}", "", inspect.cleandoc(model.__doc__ or "").replace("\n", " "), "",
             "| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        key = field.alias or name
        ann = field.annotation
        desc = (field.description or "").replace("|", "\\|")
        meta = []
        for m in field.metadata:
            for attr, sym in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"), ("min_length", "min items")):
                v = getattr(m, attr, None)
                if v is not None:
                    meta.append(f"{sym} {v}")
        if meta:
            desc = (desc + " " if desc else "") + f"({', '.join(meta)})"
        tname = _type_name(ann).replace("|", "\\|")
        lines.append(f"| `{key}` | {tname} | {_default(field).replace('|', '/')} | {desc} |")
    lines.append("")
    return lines


def scenario_reference_md() -> str:
    out = ["# Scenario file reference", "",
           "Generated from the pydantic models in `asyncsim/scenario.py` and `asyncsim/distributions.py` "
           "by `python -m asyncsim._docgen docs`. Times are in seconds, bandwidths in Gbit/s per "
           "direction. Unknown keys are errors. `asyncsim schema` prints the same as JSON Schema.", "",
           "## Top level", ""]
    out += _model_table(S.Scenario)
    out += ["## Workers", ""] + _model_table(S.WorkerGroup)
    out += ["## Network (`topology:` selects one)", ""]
    for m in (S.StarNetwork, S.TwoTierNetwork, S.CustomNetwork, S.Edge):
        out += _model_table(m)
    out += ["## Model, server, stop", ""]
    for m in (S.ModelSize, S.Server, S.Stop):
        out += _model_table(m)
    out += ["## Policies (`kind:` selects one)", ""]
    for m in (S.AsyncPolicy, S.SyncPolicy, S.BackupPolicy, S.KAsyncPolicy, S.SSPPolicy, S.RoundRobinPolicy,
              S.AllreducePolicy):
        out += _model_table(m)
    out += ["### The local SGD / DiLoCo family", "",
            "Timing, trace columns and a worked example: the DiLoCo page (docs/diloco.md). The four share "
            "their fields; only the defaults differ. These policies do not model faults (a `faults:` section "
            "is an error).", ""]
    for m in (S.LocalSGDPolicy, S.DiLoCoPolicy, S.StreamingDiLoCoPolicy, S.AsyncDiLoCoPolicy):
        out += _model_table(m)
    from . import faults as F

    out += ["## Faults (`kind:` selects one)", "",
            "Semantics of each fault under each policy: see the transfer and policy model page.", ""]
    for m in (F.Crash, F.Restart, F.Slowdown, F.LinkFault, F.RandomCrash):
        out += _model_table(m)
    out += ["## Distributions (`dist:` selects one)", "",
            "Every distribution has `sample(rng, n)`, `mean` and `variance` in the Python API.", ""]
    for m in (D.Constant, D.Exponential, D.ShiftedExponential, D.LogNormal, D.Gamma, D.Uniform, D.Normal,
              D.Weibull, D.Pareto, D.Empirical, D.Mixture):
        out += _model_table(m)
    return "\n".join(out).rstrip() + "\n"


def cli_reference_md() -> str:
    from .cli import build_command
    from .cli._conventions import DEPRECATED, FOREIGN, REMOVED_IN, VOCABULARY, long_name

    group = build_command()
    out = ["# Command reference", "",
           "Generated from the command line itself (`asyncsim COMMAND --help`) by "
           "`python -m asyncsim._docgen docs`. Every command exits 2 with one line on stderr on bad input; "
           "`--json` prints exactly one JSON object on stdout.", ""]
    ctx = group.make_context("asyncsim", [], resilient_parsing=True)
    ctx.terminal_width = ctx.max_content_width = 100
    out += ["## `asyncsim`", "", "```text", group.get_help(ctx).rstrip(), "```", "",
            "`asyncsim --install-completion` installs tab completion of commands, options and file names "
            "for the current shell (bash, zsh, fish or PowerShell); `--show-completion` prints the script "
            "instead.", ""]
    used: dict[str, list[str]] = {}
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        for p in cmd.params:
            if long_name(p) and long_name(p) not in FOREIGN:
                used.setdefault(long_name(p), []).append(name)
    used.setdefault("--version", []).append("(asyncsim itself)")
    out += ["## One vocabulary of flags", "",
            "Each long option means one thing, and has the same short flag (or none), in every command "
            "that takes it (`tests/test_cli_conventions.py` checks this for every option of every command; "
            "the table is `asyncsim.cli._conventions.VOCABULARY`).", "",
            "| option | short | value | meaning | commands |", "|---|---|---|---|---|"]
    for long, flag in VOCABULARY.items():
        out.append(f"| `{long}` | {f'`{flag.short}`' if flag.short else ''} | "
                   f"{f'`{flag.metavar}`' if flag.metavar else '(switch)'} | {flag.meaning.replace('|', chr(92) + '|')} | "
                   f"{', '.join(used.get(long, []))} |")
    out += ["", "### Renamed spellings", "",
            f"These older spellings still work, with a note on stderr naming the new one; they stop "
            f"working in asyncsim {REMOVED_IN}.", "", "| command | old | new |", "|---|---|---|"]
    for name, aliases in DEPRECATED.items():
        for old, new in aliases.items():
            out.append(f"| `{name}` | `{old}` | `{new}` |")
    out.append("")
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        sub = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
        sub.terminal_width = sub.max_content_width = 100
        text = cmd.get_help(sub)
        out += [f"## `asyncsim {name}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(out).rstrip() + "\n"


PAGES = {"reference/scenario.md": scenario_reference_md, "reference/cli.md": cli_reference_md}


def main(argv: list[str] | None = None) -> None:
    from ._io import atomic_write_text

    docs = Path((argv or sys.argv[1:] or ["docs"])[0])
    for rel, fn in PAGES.items():
        atomic_write_text(docs / rel, fn())
        print(f"wrote {docs / rel}")


if __name__ == "__main__":
    main()
