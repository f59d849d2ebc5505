"""Where plan points run: one small interface, a local process pool or Ray.

``Backend.map(fn, items, on_result)`` calls ``fn(item)`` for every item and
``on_result(item, result)`` in the calling process as each result arrives
(completion order, not submission order). The caller writes results as they
come, so the backends never touch the output folder — which is also what lets
Ray run points on machines that cannot see it.

* :class:`SerialBackend` — in this process, one after another (the benchmark's
  baseline, and what ``--jobs 1`` gives).
* :class:`LocalBackend` — a ``concurrent.futures.ProcessPoolExecutor`` with one
  process per core by default. Workers are *spawned*, not forked: a forked copy
  of a process whose OpenMP/torch thread pools are running can deadlock.
  Workers ignore SIGINT; on Ctrl-C the driver cancels what has not started,
  terminates what is running and re-raises ``KeyboardInterrupt`` (finished
  points are already on disk).
* :class:`RayBackend` — ``ray.init(address=...)``: ``"auto"`` joins an existing
  cluster, an explicit address a remote one, none starts a local Ray that
  listens on 127.0.0.1 only (Ray's control plane has no authentication of its
  own in older releases; by default it listens on every interface). Ray is an
  optional extra (``pip install 'asyncsim[ray]'``); without it you get an
  :class:`~asyncsim.errors.InputError` (one line, exit 2 on the command line).

Every backend returns exactly ``fn(item)``; results do not depend on which
backend or how many workers ran them (each point carries its own seed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Callable, Protocol, Sequence

from .. import _alloc
from ..errors import AsyncsimError, InputError

__all__ = ["Backend", "SerialBackend", "LocalBackend", "RayBackend", "make_backend", "default_workers"]

OnResult = Callable[[Any, Any], None]


class Backend(Protocol):
    """Runs ``fn`` over ``items``, reporting each ``(item, fn(item))`` as it completes."""

    name: str

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], on_result: OnResult) -> None:
        ...


def default_workers() -> int:
    """Processes for the local pool: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class SerialBackend:
    """Run every item in this process, in order."""

    name = "serial"

    def map(self, fn, items, on_result) -> None:
        for item in items:
            on_result(item, fn(item))


#: Thread settings of pool and Ray workers: one process per core already, and BLAS/OpenMP
#: thread pools spin-waiting on a loaded machine were measured to make steps much slower.
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "OMP_WAIT_POLICY": "PASSIVE"}


def worker_env_vars() -> dict[str, str]:
    """Environment of pool and Ray workers: one thread each and, with
    ``ASYNCSIM_KEEP_FREED_MEMORY=1`` (read now, when workers start), freed memory
    kept for the next point's arrays (:mod:`asyncsim._alloc`)."""
    return {**_ONE_THREAD, **(_alloc.ENV if _alloc.requested() else {})}


@contextlib.contextmanager
def _worker_env():
    """Spawned workers copy the environment at start (before numpy reads it): set it for them."""
    env = worker_env_vars()
    saved = {k: os.environ.get(k) for k in env}
    for k, v in env.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class WorkerDied(AsyncsimError):
    """A pool worker was killed from outside (exit 2 on the command line, one line)."""


def _worker_init() -> None:
    """Pool worker set-up: leave Ctrl-C to the driver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalBackend:
    """A process pool on this machine (``workers`` processes; default one per CPU)."""

    name = "local"

    def __init__(self, workers: int | None = None):
        if workers is not None and workers < 1:
            raise InputError(f"--jobs must be >= 1, got {workers}")
        self.workers = workers or default_workers()

    def map(self, fn, items, on_result) -> None:
        items = list(items)
        if not items:
            return
        n = min(self.workers, len(items))
        if n == 1:
            return SerialBackend().map(fn, items, on_result)
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        if mp.parent_process() is not None and getattr(sys.modules.get("__main__"), "__name__", "") == "__mp_main__":
            # We are a worker process re-importing the user's script, which starts a plan at
            # import time (no `if __name__ == "__main__":`): a worker must not start a pool of
            # its own. Leave quietly; the driver reports it in one line (below).
            os._exit(3)

        futures = {}
        # Workers are started (by submit) with SIGINT ignored, a disposition a spawned process
        # keeps from its start: a Ctrl-C sent to the whole terminal process group then reaches
        # only the driver, even while a worker is still importing.
        with _sigint_ignored(), _worker_env():
            ex = ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"), initializer=_worker_init)
            futures = {ex.submit(fn, it): it for it in items}
        finished = 0
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_result(futures[fut], fut.result())  # re-raises a worker's exception here
                    finished += 1
        except BrokenProcessPool:
            _terminate(ex)
            ex.shutdown(wait=True)
            if not finished:
                # no worker ever came back: the usual cause is a script without the main guard
                raise InputError("a worker process of the local backend died before finishing any point: if "
                                 "this plan runs from a Python script, put it under `if __name__ == "
                                 "\"__main__\":` (the workers re-import the script), or use "
                                 "make_backend(\"serial\")") from None
            # killed from outside (the kernel's OOM killer, kill -9): one line, not a traceback
            raise WorkerDied("a plan worker process died (killed by a signal: out of memory?); "
                             "the points finished so far are saved: run the same command again, "
                             "perhaps with fewer --jobs") from None
        except BaseException:
            # Ctrl-C or a failed point: stop now, keep what is finished (already reported).
            # The futures are not cancelled first: on 3.11 the pool's manager thread then fails
            # (InvalidStateError) marking them broken; it marks them itself once workers die.
            _terminate(ex)
            ex.shutdown(wait=True)
            raise
        ex.shutdown(wait=True)


@contextlib.contextmanager
def _sigint_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _terminate(ex) -> None:
    """Stop the pool's running workers (the executor has no public way to abandon running calls)."""
    procs = getattr(ex, "_processes", None) or {}
    for p in list(procs.values()):
        try:
            p.terminate()
        except Exception:  # pragma: no cover - already gone
            pass
    for p in list(procs.values()):
        try:
            p.join(timeout=5)
        except Exception:  # pragma: no cover
            pass


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast on a ``host:port`` nobody listens on (Ray itself retries for minutes)."""
    if not address or address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError(f"--ray-address {address!r}: expected auto, host:port or ray://host:port")
    import socket

    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise InputError(f"--ray-address {address}: cannot connect ({exc.strerror or exc})") from None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--backend ray needs Ray, which is not installed: pip install 'asyncsim[ray]'") from None
    return ray


#: Ray's switch between "a cluster node" and "a single machine" (read when Ray is imported, by
#: this process and by the processes Ray starts): off, Ray takes 127.0.0.1 as this node's address,
#: and its gRPC servers (GCS, raylet, workers) and agents then listen on loopback only.
_RAY_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _loopback_only(ray, local: bool):
    """Start a *local* Ray that listens on 127.0.0.1 only.

    Ray's control plane runs any code its callers send, so a Ray started for a plan
    must not be reachable from other machines; by default it listens on every
    interface. Joining a cluster (``--ray-address``) is left alone."""
    if not local:
        yield {}
        return
    saved = os.environ.get(_RAY_SINGLE_MACHINE_ENV)
    os.environ[_RAY_SINGLE_MACHINE_ENV] = "0"
    consts = getattr(getattr(ray, "_private", None), "ray_constants", None)
    saved_const = getattr(consts, "ENABLE_RAY_CLUSTER", None)
    if consts is not None and saved_const is not None:
        consts.ENABLE_RAY_CLUSTER = False  # (Ray read the variable when it was imported)
    try:
        yield {"_node_ip_address": "127.0.0.1"}
    finally:
        if consts is not None and saved_const is not None:
            consts.ENABLE_RAY_CLUSTER = saved_const
        if saved is None:
            os.environ.pop(_RAY_SINGLE_MACHINE_ENV, None)
        else:
            os.environ[_RAY_SINGLE_MACHINE_ENV] = saved


class RayBackend:
    """Ray tasks, one per item: ``address`` ``"auto"`` (existing cluster), ``"ray://host:port"`` or
    ``"host:port"`` (remote), or ``None`` (start a local Ray with ``num_cpus`` CPUs).

    On a remote cluster every node needs asyncsim installed (the same version).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        self.ray = _import_ray()
        self.address = address
        self.num_cpus = num_cpus

    def map(self, fn, items, on_result) -> None:
        items = list(items)
        if not items:
            return
        ray = self.ray
        started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
            # the workers of a local Ray inherit this environment: one thread each (see _worker_init)
            env = worker_env_vars()
            if self.address is None:
                kw["num_cpus"] = self.num_cpus or default_workers()
            kw["runtime_env"] = {"env_vars": env}
            _check_reachable(self.address)
            try:
                with _loopback_only(ray, self.address is None) as local_kw:
                    ray.init(address=self.address, **kw, **local_kw)
            except Exception as exc:  # connection refused, bad address, ...
                raise InputError(f"--backend ray: cannot start or reach Ray"
                                 f"{f' at {self.address}' if self.address else ''}: "
                                 f"{' '.join(str(exc).split())[:300]}") from None
            started = True
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        refs = {}
        try:
            refs = {remote.remote(it): it for it in items}
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        # re-raise the point's own error (an input error stays one line)
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, BaseException):
                            raise cause from None
                        raise
                    on_result(refs[ref], result)
        except BaseException:
            for ref in refs:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished
                    pass
            raise
        finally:
            if started:
                ray.shutdown()


def make_backend(name: str, *, workers: int | None = None, ray_address: str | None = None) -> Backend:
    """The backend called ``name``: ``local`` (default), ``ray`` or ``serial``."""
    if name == "local":
        return LocalBackend(workers)
    if name == "serial":
        return SerialBackend()
    if name == "ray":
        return RayBackend(ray_address, num_cpus=workers)
    raise InputError(f"--backend must be local, ray or serial, got {name!r}")
