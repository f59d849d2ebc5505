"""One vocabulary of flags for every command, and the old spellings kept for one release.

:data:`VOCABULARY` is the single list of option names the command line uses:
each long name has one meaning, at most one short flag and one metavar,
whichever command it appears in (``tests/test_cli_conventions.py`` walks every
command and checks it; ``docs/reference/cli.md`` prints the table). The
command modules declare their options with these names; :func:`apply` fills
in the metavars and installs :data:`DEPRECATED`, the spellings that were
renamed: they still parse, for one release, and print a note on stderr.

Only typer's option declarations carry the names, so renaming a flag never
touches a command's body (the Python parameter keeps its name).
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["Flag", "VOCABULARY", "DEPRECATED", "REMOVED_IN", "apply", "long_name"]


@dataclass(frozen=True)
class Flag:
    """One option name of the command line: its short flag, metavar and meaning."""

    short: str | None
    metavar: str | None  # None: a switch, which takes no value
    meaning: str


#: Every long option name of every command (besides --help and typer's completion options).
VOCABULARY: dict[str, Flag] = {
    # -- what to simulate, and how long
    "--updates": Flag("-n", "N", "number of server updates to simulate (overrides the scenario's stop)"),
    "--time": Flag(None, "SECONDS", "simulated seconds to run (overrides the scenario's stop; with --updates, "
                                    "whichever comes first)"),
    "--seed": Flag("-s", "SEED", "seed of the run (a scenario's simulation, or initialisation and minibatches)"),
    "--engine": Flag(None, "ENGINE", "simulation engine: auto | simpy | heap | vector | fast"),
    "--trace": Flag(None, "TRACE", "a saved trace file (.parquet, .npz, .csv) instead of a scenario"),
    "--pmf": Flag(None, "SPEC", "a named delay pmf: constant:T, uniform:LO:HI, gaussian:MU, geometric:N"),
    # -- outputs
    "--out": Flag("-o", "PATH", "where to write the command's output (a file or a folder, as the command says)"),
    "--json": Flag(None, None, "print one JSON object on stdout and nothing else there"),
    "--no-save": Flag(None, None, "do not write a trace file"),
    "--timeline": Flag(None, "PNG", "also draw the run's timeline into this PNG file"),
    "--format": Flag(None, "FORMAT", "metrics file format: csv | parquet"),
    "--no-report": Flag(None, None, "write results.parquet only, no report"),
    # -- stability
    "--criterion": Flag("-c", "CRITERION", "stability criterion: mean | mean-square | trace | all "
                                           "(plan: a comma list)"),
    "--optimizer": Flag(None, "OPTIMIZER", "optimizer: sgd | momentum | shifted"),
    "--momentum": Flag(None, "M", "momentum m, 0 <= m < 1"),
    "--no-dampening": Flag(None, None, "PyTorch's momentum convention v = m v + g (no (1 - m) on g)"),
    "--momentum-init": Flag(None, "INIT", "the momentum buffer's start: zero | gradient (torch.optim.SGD's)"),
    "--weight-decay": Flag(None, "W", "weight decay at the server on the current parameters"),
    "--decoupled-weight-decay": Flag(None, None, "decoupled (AdamW-style) weight decay: x(1 - η w)"),
    "--schedule": Flag(None, "SCHEDULE", "learning-rate schedule by server update: constant | warmup:W | "
                       "step:S:GAMMA | cosine[:MIN] | warmup:W+cosine"),
    "--clip-grad-norm": Flag(None, "NORM", "clip each step's mean gradient to this norm"),
    "--betas": Flag(None, "B1,B2", "Adam's betas"),
    "--eps": Flag(None, "EPS", "Adam's epsilon"),
    "--unstable-factor": Flag(None, "FACTOR", "unstable when the loss rose above this × the initial loss"),
    "--loss": Flag(None, "LOSS", "the loss of a FILE.py:NAME model: cross_entropy | mse | FILE.py:NAME"),
    "--full-batch": Flag(None, None, "every example in every gradient (no minibatch sampling)"),
    "--base-lr": Flag(None, "LR", "the S-SGD learning rate η0 (sharpness taken at GD's edge, a = 2/η0)"),
    "--sharpness": Flag(None, "A", "sharpness a = λmax of the loss Hessian (for --dataset quadratic: its λmax)"),
    "--lr-fraction": Flag(None, "FRACTION", "recommended learning rate = this × α*/a"),
    # -- training
    "--dataset": Flag("-d", "DATASET", "dataset: quadratic | teacher | digits | a .pt/.npz file with X, y"),
    "--model": Flag("-m", "MODEL", "model: linear | mlp[:H,...] | cnn[:C]"),
    "--lr": Flag(None, "LR", "learning rate η of the trained run"),
    "--steps": Flag(None, "N", "number of server updates the trainer replays"),
    "--device": Flag(None, "DEVICE", "torch device: auto | cpu | cuda"),
    "--dtype": Flag(None, "DTYPE", "floating-point type: float32 | float64"),
    "--dim": Flag(None, "D", "dimension of the quadratic or teacher problem"),
    "--batch-size": Flag("-b", "B", "minibatch size of one gradient"),
    "--staleness-aware": Flag(None, None, "scale each gradient's learning rate by 1/max(τ, 1)"),
    "--dc-lambda": Flag(None, "LAMBDA", "DC-ASGD delay compensation λ"),
    "--divergence-factor": Flag(None, "FACTOR", "a run diverged when its loss exceeds this × the initial loss"),
    "--log-every": Flag(None, "N", "log the loss every N updates"),
    "--replay-engine": Flag(None, "ENGINE", "training replay engine: auto | sequential | batched"),
    "--from-minimum": Flag(None, None, "start from a minimum reached by SGD without delay"),
    "--pretrain-steps": Flag(None, "N", "SGD steps without delay that reach the minimum (--from-minimum)"),
    "--pretrain-lr": Flag(None, "LR", "learning rate of those steps"),
    "--method": Flag(None, "METHOD", "eigenvalue method: lanczos | power"),
    "--tol": Flag(None, "TOL", "relative tolerance of the eigenvalue"),
    "--max-iter": Flag(None, "N", "at most N Hessian-vector products"),
    "--rtol": Flag(None, "RTOL", "bisection stops when lr_diverged / lr_stable - 1 <= RTOL"),
    "--lrs-per-round": Flag(None, "K", "learning rates replayed side by side per bisection round"),
    # -- planning
    "--vary": Flag("-v", "KEY=V1,V2,...", "a dotted scenario path and the values it takes (repeatable)"),
    "--policies": Flag("-p", "POLICIES", "comma list of policies: async, sync, backup, k_async, ssp, round_robin"),
    "--plan": Flag(None, "PLANFILE", "a YAML plan file (scenario:, vary:, policies:, ...)"),
    "--train": Flag(None, "DATASET[/MODEL]", "replay each trace on this problem, e.g. quadratic, teacher/mlp:32"),
    "--target": Flag(None, "LOSS", "the training loss that counts as done"),
    "--backend": Flag(None, "BACKEND", "where the points run: local | ray | serial"),
    "--baseline": Flag(None, "POLICY", "the S-SGD every speed-up is against: sync | allreduce"),
    "--column": Flag(None, "NAME", "the CSV column holding the step times"),
    "--deadline": Flag(None, "SECONDS", "simulated seconds by which the target must be reached"),
    "--until-target": Flag(None, None, "train each point only until it reaches the target (with --time CAP)"),
    "--budget": Flag(None, "MONEY", "the most a configuration may cost to reach the target"),
    "--ranks": Flag(None, None, "read a per-rank step log (rank, step, seconds) and propose worker groups"),
    "--ray-address": Flag(None, "ADDRESS", "Ray cluster: auto | host:port | ray://host:port"),
    "--jobs": Flag("-j", "N", "parallel processes of this machine"),
    # -- the application itself
    "--version": Flag(None, None, "print the version and exit"),
}

#: The release after which the spellings in :data:`DEPRECATED` stop working.
REMOVED_IN = "0.2.0"

#: command -> {old spelling: new spelling}. Old spellings parse for one release, with a note on stderr.
DEPRECATED: dict[str, dict[str, str]] = {
    "stability": {"-m": "--momentum"},  # -m is --model everywhere else
    "train": {"-n": "--steps", "--engine": "--replay-engine"},  # -n is --updates; --engine simulates
    "threshold": {"-n": "--steps"},
    "sharpness": {"--steps": "--pretrain-steps", "--lr": "--pretrain-lr"},  # as threshold names them
    "plan": {"-b": "--backend", "--criteria": "--criterion", "--workers": "--jobs"},  # -b is --batch-size;
    # --workers read as the cluster's workers (workers.0.count)
}

#: typer's own options and click's --help: not ours to rename.
FOREIGN = ("--help", "--install-completion", "--show-completion")


def long_name(param: Any) -> str | None:
    """The long option name of a click parameter (None for arguments)."""
    if getattr(param, "param_type_name", None) != "option":
        return None
    longs = [o for o in param.opts if o.startswith("--")]
    return longs[0] if longs else None


def _note(command: str, old: str, new: str) -> None:
    # a warning, held back by the command runner (asyncsim.cli.run): printed after a command
    # that succeeds, dropped when it fails, so that an error stays the only line on stderr
    import warnings

    warnings.warn(f"{old} is deprecated in 'asyncsim {command}', use {new} "
                  f"(the old spelling stops working in {REMOVED_IN})", UserWarning, stacklevel=2)


def _install_aliases(command: str, cmd: Any, aliases: dict[str, str]) -> None:
    """Make the parser of ``cmd`` accept each old spelling as its new one, with a note on stderr."""
    make_parser = cmd.make_parser

    def make_parser_with_aliases(ctx):
        parser = make_parser(ctx)
        quiet = ctx.resilient_parsing  # shell completion parses the line too: no note there
        for old, new in aliases.items():
            target = parser._long_opt.get(new) or parser._short_opt.get(new)
            table = parser._long_opt if old.startswith("--") else parser._short_opt
            if target is None or old in table:  # (the test of conventions rules both out)
                continue
            alias = copy.copy(target)  # same destination and action; only process() differs

            def process(value, state, _old=old, _new=new, _process=target.process):
                if not quiet:
                    _note(command, _old, _new)
                _process(value, state)

            alias.process = process
            table[old] = alias
        return parser

    cmd.make_parser = make_parser_with_aliases


def apply(group: Any) -> Any:
    """Give every option of every command of ``group`` its vocabulary metavar; install the old spellings."""
    for name, cmd in group.commands.items():
        for param in cmd.params:
            flag = VOCABULARY.get(long_name(param) or "")
            if flag is not None and flag.metavar is not None and param.metavar is None:
                param.metavar = flag.metavar
            if getattr(param, "param_type_name", None) == "argument":
                # SCENARIO, not "{scenario} <path>": the help text says what the file is
                param.metavar = param.metavar or param.name.upper()
                param.display_type_rich = lambda ctx: None
        if name in DEPRECATED:
            _install_aliases(name, cmd, DEPRECATED[name])
    return group
