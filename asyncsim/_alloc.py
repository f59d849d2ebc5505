"""Keep freed memory for reuse instead of handing it back to the kernel (glibc).

A run builds its trace from a few dozen arrays of ``rows x 8`` bytes. With
glibc's defaults, memory freed at the top of the heap is given back to the
kernel (arrays over 128 KB are mapped on their own and unmapped when freed),
so the next run's arrays land on fresh pages, each a page fault plus zeroing:
measured on the 2-core development VM, about 4,500 faults (10 ms) in a 20 ms
vectorised run of 2e5 updates (docs/benchmarks.md). Asking glibc to serve
arrays up to ``MMAP_THRESHOLD`` from the heap and to keep ``TOP_PAD`` bytes
free at its top (``mallopt``) lets the next run reuse the same pages.

This is an opt-in, never a default (issue 21): a library should not retune
its host process's allocator, and the engines no longer need it to be fast
(they write their arrays in few passes, with few temporaries of the trace's
size; docs/benchmarks.md, "Engines at the limit"). Turn it on

* in your own program: call :func:`keep_freed_memory` once at start (it also
  sets the environment variables glibc reads at start-up,
  ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TOP_PAD_``, for processes started
  afterwards);
* for the ``asyncsim`` command and the plan's worker processes: set
  ``ASYNCSIM_KEEP_FREED_MEMORY=1`` in the environment.

``ASYNCSIM_KEEP_FREED_MEMORY=0`` makes :func:`keep_freed_memory` do nothing.
Elsewhere than glibc (macOS, musl) it does nothing and returns ``False``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["keep_freed_memory", "TOP_PAD", "MMAP_THRESHOLD", "ENV"]

#: bytes of freed memory kept at the top of the heap
TOP_PAD = 64 << 20
#: allocations below this many bytes come from the heap (glibc's largest setting)
MMAP_THRESHOLD = 32 << 20
#: the variables glibc reads at process start-up (inherited by child processes)
ENV = {"MALLOC_TOP_PAD_": str(TOP_PAD), "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3  # glibc's <malloc.h>


def enabled() -> bool:
    """Not opted out with ``ASYNCSIM_KEEP_FREED_MEMORY=0``."""
    return os.environ.get("ASYNCSIM_KEEP_FREED_MEMORY", "").strip() != "0"


def requested() -> bool:
    """Opted in with ``ASYNCSIM_KEEP_FREED_MEMORY=1`` (the command and the plan's workers)."""
    return os.environ.get("ASYNCSIM_KEEP_FREED_MEMORY", "").strip() == "1"


def keep_freed_memory(children: bool = True) -> bool:
    """Keep freed memory for reuse in this process (and, with ``children``, in
    processes it starts afterwards). ``True`` if glibc took the settings for
    this process."""
    if not enabled():
        return False
    if children:
        for k, v in ENV.items():
            os.environ.setdefault(k, v)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(mallopt(_M_TOP_PAD, TOP_PAD))
