"""Helpers shared by the command modules: one-line errors, JSON output, progress bars."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterator, NoReturn

import numpy as np
import typer
from rich.console import Console

from ..errors import AsyncsimError

#: Human output (tables) goes to stdout; progress and errors go to stderr.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False)


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
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
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
        console=err_console,
        transient=True,
        disable=disable or not err_console.is_terminal,
    )
