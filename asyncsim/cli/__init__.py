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
import typing
import warnings
from pathlib import Path
from typing import Any

import typer

try:  # typer >= 0.22 vendors its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions

from ..errors import AsyncsimError, show_path
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


def _takes_path(param) -> bool:
    ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)  # typer >= 0.22
    if ann is not None:
        return ann is Path or Path in typing.get_args(ann)
    return type(getattr(param, "type", None)).__name__ == "Path"


def _empty_path_option(argv: list[str]) -> str | None:
    """The option of ``argv`` given an empty path (``-o ''``), if any: ``Path('')`` would
    silently mean the current folder."""
    if not argv:
        return None
    cmd = build_command()
    sub = getattr(cmd, "commands", {}).get(argv[0])
    if sub is None:
        return None
    opts = {o for p in sub.params if _takes_path(p) for o in p.opts}
    for prev, arg in zip(argv, argv[1:]):
        if arg == "" and prev in opts:
            return prev
        name, eq, value = arg.partition("=")
        if eq and not value and name in opts:
            return name
    return None


def _warn(caught: list) -> None:
    """Warnings of a successful command (numpy's included), one line each, once."""
    seen = set()
    for w in caught:
        line = " ".join(str(w.message).split())
        if line and line not in seen:
            seen.add(line)
            sys.stderr.write(f"asyncsim: warning: {line}\n")


def run(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` and return the exit code (no ``sys.exit``).

    Warnings raised while a command runs (numpy's "overflow encountered", ...) are
    held back: printed one line each after a successful command, dropped when the
    command fails, so that an error stays the only line on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning of this command, shown once by _warn
        rc = _run(list(sys.argv[1:] if argv is None else argv))
    if rc == 0:
        _warn(caught)
    return rc


def _run(argv: list[str]) -> int:
    command = build_command()
    empty = _empty_path_option(argv)
    if empty is not None:
        sys.stderr.write(f"asyncsim: error: {empty}: empty path\n")
        return 2
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
    except MemoryError:
        # a last resort: sizes are estimated before large allocations (asyncsim.memory)
        sys.stderr.write("asyncsim: error: out of memory: the input asks for more than this machine holds\n")
        return 2
    except OSError as exc:
        # a last resort for a file the commands did not wrap themselves: name it, never a traceback
        where = f"{show_path(exc.filename)}: " if exc.filename else ""
        sys.stderr.write(f"asyncsim: error: {where}{exc.strerror or type(exc).__name__}\n")
        return 2
    return rv if isinstance(rv, int) else 0


def main() -> None:
    # opt-in only (ASYNCSIM_KEEP_FREED_MEMORY=1): keep freed memory for the next
    # run's arrays (see asyncsim._alloc)
    from .._alloc import keep_freed_memory, requested

    if requested():
        keep_freed_memory()
    sys.exit(run(sys.argv[1:]))
