"""Atomic output: write to a temporary file beside the target, then rename.

An interrupted writer leaves either the old file or the new one, never half a
file. ``os.replace`` is atomic on POSIX when source and target share a
directory, which is why the temporary file is created next to the target.

What the target may be:

* missing, or a regular file: written atomically as above (a symbolic link is
  followed: the file it points to is replaced, the link stays);
* a character device (``/dev/null``, ``/dev/stdout``, a terminal): written in
  place, through a temporary file elsewhere; never replaced by a regular file
  (as root, renaming over ``/dev/null`` would have destroyed the device node);
* anything else (a directory, a FIFO, a socket, a block device): refused.

Every failure — a refused target, a read-only file system, a missing
permission, a full disk (``ENOSPC``), a name too long, a parent that is a
regular file — raises :class:`~asyncsim.errors.OutputError`, one line naming
the path (shortened if it is very long), and leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputError, show_path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "check_output_file", "check_output_dir",
           "ensure_output_dir",
           "TEMP_GLOB"]

#: names of the temporary files :func:`atomic_path` creates (for cleaning after a kill)
TEMP_GLOB = ".*.tmp*"
_PREFIX_MAX = 80  # characters of the target's name kept in its temporary file's name


def _mode(target: Path) -> int | None:
    try:
        return os.stat(target).st_mode
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise OutputError("a parent of this path is not a folder", path=target) from None
    except OSError as exc:
        raise OutputError(exc.strerror or str(exc), path=target) from None


def check_output_file(target: str | os.PathLike) -> str:
    """How ``target`` will be written: ``"replace"`` (missing or a regular file) or
    ``"in_place"`` (a character device). :class:`OutputError` for anything else."""
    target = Path(target)
    if str(target) in ("", "."):
        raise OutputError("is a folder (an empty or '.' path); give a file name", path=target)
    mode = _mode(target)
    if mode is None or stat.S_ISREG(mode):
        return "replace"
    if stat.S_ISCHR(mode):
        return "in_place"
    if stat.S_ISDIR(mode):
        raise OutputError("is a folder; give a file name", path=target)
    raise OutputError("exists and is not a regular file (refusing to replace it)", path=target)


def check_output_dir(folder: str | os.PathLike) -> Path:
    """Fail early (:class:`OutputError`), creating nothing, if ``folder`` cannot become an
    output folder: it exists and is not a folder, or its nearest existing ancestor is not
    a folder or cannot be written. (A run then fails before its work, not after it.)"""
    folder = Path(folder)
    if str(folder) == "":
        raise OutputError("empty path", path=folder)
    probe = folder
    while True:
        mode = _mode(probe)
        if mode is not None:
            break
        if probe.parent == probe:
            return folder
        probe = probe.parent
    if not stat.S_ISDIR(mode):
        raise OutputError("exists and is not a folder" if probe == folder else
                          f"{show_path(probe)} is not a folder", path=folder)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{'it' if probe == folder else show_path(probe)} is not writable", path=folder)
    return folder


def ensure_output_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) for output; :class:`OutputError` if it cannot be."""
    folder = Path(folder)
    mode = _mode(folder)
    if mode is not None and not stat.S_ISDIR(mode):
        raise OutputError("exists and is not a folder", path=folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError("a parent of this path is not a folder", path=folder) from None
    except OSError as exc:
        raise OutputError(exc.strerror or str(exc), path=folder) from None
    return folder


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``target`` (see the module docstring).

    On any exception (including KeyboardInterrupt) the temporary file is removed
    and ``target`` is left untouched; an ``OSError`` (from this function or from
    the writer inside the ``with`` block) becomes an :class:`OutputError`.
    """
    given = Path(target)
    how = check_output_file(given)
    # follow a symbolic link to the file it names (so the link itself stays)
    target = Path(os.path.realpath(given)) if how == "replace" and given.is_symlink() else given
    suffix = suffix if suffix is not None else ".tmp" + target.suffix[:16]
    tmp_path: Path | None = None
    try:
        if how == "in_place":
            fd, tmp = tempfile.mkstemp(prefix=".asyncsim-", suffix=suffix)
        else:
            ensure_output_dir(target.parent)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:_PREFIX_MAX]}.", suffix=suffix, dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        if how == "in_place":
            with open(tmp_path, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
                dst.flush()
            tmp_path.unlink()
            return
        with open(tmp_path, "rb+") as fh:  # make the bytes durable before the rename
            os.fsync(fh.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would have had
        os.chmod(tmp_path, target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except OSError as exc:
        _remove(tmp_path)
        raise OutputError(_reason(exc, tmp_path), path=given) from None
    except BaseException:
        _remove(tmp_path)
        raise


def _reason(exc: OSError, tmp: Path | None = None) -> str:
    """The system's reason without the (possibly huge) file name it carries."""
    if exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())  # a library's own OSError (pyarrow) has no strerror
    if tmp is not None:
        text = text.replace(str(tmp), "<temporary file>")
    return text[:200] or type(exc).__name__


def _remove(p: Path | None) -> None:
    if p is not None:
        with contextlib.suppress(OSError):
            p.unlink()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))
