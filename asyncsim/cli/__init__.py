"""The ``asyncsim`` command: a thin layer over the Python API.

Each command lives in its own module and registers itself on the shared
:data:`~asyncsim.cli._app.app`; :mod:`~asyncsim.cli._conventions` holds the
one vocabulary of flags. Bad input of any kind (scenario, trace, flag) ends as
one line on stderr and exit code 2, never a traceback.

Start-up is kept short (``asyncsim --help`` runs in a fraction of the time of
importing numpy): importing this package and the command modules imports
typer and nothing heavy; each command imports what it needs when it runs.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

try:  # typer >= 0.22 vendors its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions

from ..errors import AsyncsimError
from ._app import app

#: Command modules, imported (and so registered) in this order for ``--help``.
COMMAND_MODULES = ("simulate", "scenario_cmds", "stability", "train", "plan", "fit")

_command: Any = None


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def build_command() -> Any:
    """The click group of every command, with the vocabulary's metavars and old spellings (built once)."""
    global _command
    if _command is None:
        from ._conventions import apply

        _register()
        _command = apply(typer.main.get_command(app))
    return _command


def run(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` and return the exit code (no ``sys.exit``)."""
    command = build_command()
    try:
        rv = command.main(args=argv, prog_name="asyncsim", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:  # bare `asyncsim` / `asyncsim plan`: show help
        sys.stdout.write(exc.ctx.get_help() + "\n" if exc.ctx is not None else exc.format_message())
        return 2
    except click_exceptions.UsageError as exc:
        msg = exc.format_message().replace("\n", " ")
        where = f" ({exc.ctx.command_path})" if exc.ctx is not None else ""
        sys.stderr.write(f"asyncsim: error{where}: {msg}\n")
        return 2
    except typer.Abort:
        sys.stderr.write("asyncsim: interrupted\n")
        return 130
    except KeyboardInterrupt:
        sys.stderr.write("asyncsim: interrupted\n")
        return 130
    except AsyncsimError as exc:
        sys.stderr.write(f"asyncsim: error: {' '.join(str(exc).split())}\n")
        return 2
    except click_exceptions.ClickException as exc:
        sys.stderr.write(f"asyncsim: error: {exc.format_message()}\n")
        return exc.exit_code
    return rv if isinstance(rv, int) else 0


def main() -> None:
    # the command owns its process: keep freed memory for the next run's arrays
    # (page faults were half of a fast run's time; see asyncsim._alloc)
    from .._alloc import keep_freed_memory

    keep_freed_memory()
    sys.exit(run(sys.argv[1:]))
