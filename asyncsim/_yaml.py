"""Reading YAML input (scenario and plan files) strictly and without echoing it.

:func:`read` is ``yaml.safe_load`` plus three checks:

* a key given twice in one mapping is an error naming its line (plain
  ``safe_load`` keeps the last value silently);
* a structure nested too deeply for the parser (100,000 ``[``) is an error,
  not a ``RecursionError`` traceback;
* keys that are not plain names (``root:*:20228:0:...``, the first line of a
  file that is not a scenario at all) are remembered with their line, so an
  error message can say "the key on line 1" instead of quoting the file.

Every problem raises :class:`YamlProblem` (``line`` 1-based or ``None``); the
caller turns it into its own one-line error naming the file.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["read", "YamlProblem", "is_name", "Loaded"]

#: what an error message may quote of a key or a tag read from a file
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}\Z")


def is_name(text: Any) -> bool:
    """A short identifier-like word (safe to quote in a message), or an integer."""
    return isinstance(text, int) or (isinstance(text, str) and bool(_NAME.match(text)))


class YamlProblem(ValueError):
    def __init__(self, message: str, line: int | None = None):
        self.message, self.line = message, line
        super().__init__(f"line {line}: {message}" if line else message)


class Loaded:
    """The data read and the line of every key that is not a plain name."""

    __slots__ = ("data", "key_lines")

    def __init__(self, data: Any, key_lines: dict[str, int]):
        self.data, self.key_lines = data, key_lines


class _Loader(yaml.SafeLoader):
    def __init__(self, stream):
        super().__init__(stream)
        self.key_lines: dict[str, int] = {}

    def construct_mapping(self, node, deep=False):
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            ident = (key_node.tag, key_node.value)
            line = key_node.start_mark.line + 1
            if ident in seen:
                what = f"key {key_node.value!r}" if is_name(key_node.value) else "a key"
                raise YamlProblem(f"{what} is given twice in one mapping (first on line {seen[ident]})", line)
            seen[ident] = line
            if not is_name(key_node.value):
                self.key_lines.setdefault(str(key_node.value), line)
        return super().construct_mapping(node, deep=deep)


def read(text: str) -> Loaded:
    """Parse ``text`` (one YAML document); :class:`YamlProblem` on any problem."""
    loader = None
    try:
        loader = _Loader(text)  # (the reader checks the characters here already)
        data = loader.get_single_data()
    except YamlProblem:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise YamlProblem(f"YAML syntax error: {where}{problem}") from None
    except RecursionError:
        raise YamlProblem("structure nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    return Loaded(data, loader.key_lines)
