"""Errors that mean *the input is bad*, not that asyncsim is broken.

Every one of them is reported by the command line as a single line on stderr
with exit code 2 (see :mod:`asyncsim.cli`). Library code raises them with a
message that names the file and the field so the user can fix the input
without reading a traceback.
"""

from __future__ import annotations

from pathlib import Path


def _one_line(text: str) -> str:
    """Escape line breaks and other control characters so a message stays one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


class AsyncsimError(Exception):
    """Base class of user-facing input errors (exit code 2 on the command line)."""


class ScenarioError(AsyncsimError, ValueError):
    """A scenario file (or scenario dict) is invalid.

    ``str(err)`` reads ``<file>: <field.path>: <what is wrong>`` (the first
    problem, with a count of the others); ``err.problems`` holds every
    problem found, each a line of that form.
    """

    def __init__(self, message: str, *, file: str | Path | None = None, field: str | None = None,
                 problems: list[str] | None = None):
        self.file = str(file) if file is not None else None
        self.field = field or None
        self.reason = message
        parts = [p for p in (self.file, self.field) if p]
        first = _one_line(": ".join(parts + [message]))
        self.problems: list[str] = [first] + [_one_line(p) for p in (problems or [])[1:]]
        more = len(self.problems) - 1
        super().__init__(first + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""))


class TraceError(AsyncsimError, ValueError):
    """A trace file or trace arrays are corrupt, foreign or inconsistent."""

    def __init__(self, message: str, *, file: str | Path | None = None):
        self.file = str(file) if file is not None else None
        self.reason = message
        super().__init__(_one_line(f"{self.file}: {message}" if self.file else message))


def show_path(path: str | Path, limit: int = 120) -> str:
    """``path`` for a message: quoted, control characters escaped, and shortened to about
    ``limit`` characters (head…tail, with the length) when longer — a 100 KB name stays short."""
    text = _one_line(str(path))
    if len(text) > limit:
        keep = limit // 2
        text = f"{text[:keep]}…{text[-keep // 2:]} ({len(str(path)):,} characters)"
    return f"'{text}'"


class OutputError(AsyncsimError, OSError):
    """An output path cannot be written (refused target, read-only, full disk, name too long...).

    ``str(err)`` reads ``cannot write '<path>': <reason>``."""

    def __init__(self, reason: str, *, path: str | Path):
        self.path = str(path)
        self.reason = reason
        super().__init__(_one_line(f"cannot write {show_path(path)}: {reason}"))

    def __str__(self) -> str:  # (OSError's own __str__ would show the arguments)
        return self.args[0]


class InputError(AsyncsimError, ValueError):
    """Any other bad user input: a flag value, a pmf spec, a dataset file..."""
