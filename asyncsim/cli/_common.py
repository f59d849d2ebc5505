"""Helpers shared by the command modules: one-line errors, JSON output, tables, progress bars.

Importing this module imports neither numpy nor rich: the consoles and tables
are made when a command first prints (start-up time, docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterator, NoReturn

import typer

from ..errors import AsyncsimError


class _LazyConsole:
    """A ``rich.console.Console`` made on first use (importing rich is a fifth of a bare start-up)."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._console: Any = None

    def get(self) -> Any:
        """The console itself (made now if it was not yet)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._kwargs)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


#: Human output (tables) goes to stdout; progress and errors go to stderr.
console: Any = _LazyConsole(highlight=False, soft_wrap=True)
err_console: Any = _LazyConsole(stderr=True, highlight=False)


def Table(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - stands in for the class
    """A ``rich.table.Table`` (rich imported on first use)."""
    from rich.table import Table as _Table

    return _Table(*args, **kwargs)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``asyncsim: error: <message>`` as one line on stderr and exit with ``code``."""
    line = " ".join(str(message).split())  # one line, whatever the message held
    sys.stderr.write(f"asyncsim: error: {line}\n")
    sys.stderr.flush()
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn input errors into one line and exit 2 (never a traceback)."""
    try:
        yield
    except AsyncsimError as exc:
        fail(str(exc))


def jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and non-finite floats (-> null) for strict JSON."""
    np = sys.modules.get("numpy")  # no numpy object can exist unless numpy was imported
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if np is not None and isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if np is not None and isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def print_json(obj: Any) -> None:
    """Print exactly one JSON object on stdout (the ``--json`` contract)."""
    sys.stdout.write(json.dumps(jsonable(obj), allow_nan=False) + "\n")
    sys.stdout.flush()


def progress(disable: bool = False):
    """A rich progress bar on stderr (hidden when ``disable`` or stderr is not a terminal)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console.get(),
        transient=True,
        disable=disable or not err_console.is_terminal,
    )
