"""The one typer application every command module registers on, with ``--version``.

Nothing heavy is imported here: ``asyncsim --help`` and shell completion run
this module on every call (see docs/benchmarks.md, "Start-up time").
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="asyncsim",
    help="Simulate asynchronous training clusters: staleness traces, stability thresholds, "
    "trace-driven training and wall-clock trade-offs versus S-SGD.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},  # every command, as most tools do
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        sys.stdout.write(f"asyncsim {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    # the application's help text is Typer(help=...) above; this callback only carries --version
    pass
