"""The staleness trace: one row per computed gradient, in columnar numpy arrays.

Columns (the Concepts page of the documentation explains them):

========== ======= ==========================================================
step        int64  server update that applied the gradient (-1 if dropped by the
                   policy, -2 if lost to a fault: the worker crashed first)
worker      int32  worker id (global index over all worker groups)
read_version int64 version the gradient was computed on
staleness   int64  step - read_version (-1 if dropped)
t_read    float64  time the parameters were received by the worker
t_done    float64  time the gradient finished computing (for a gradient
                   abandoned by a backup-worker policy: the abandonment time)
t_applied float64  time the server applied it (NaN if dropped or lost)
========== ======= ==========================================================

A side table, ``trace.down_intervals`` (columns ``worker``, ``t_down``,
``t_up``; ``t_up`` is NaN if the worker never came back), records when
workers were down because of faults. It travels in the same file.

Traces of the local SGD / DiLoCo family (``policy.kind`` local_sgd, diloco,
streaming_diloco, async_diloco; docs/diloco.md) have one row per
pseudo-gradient contribution (worker × fragment × outer round); the seven
columns above keep their meaning at the outer level (``step`` is the outer
update, ``t_read`` when the worker loaded or merged the fragment's global
parameters, ``t_done`` when its last inner step for the contribution ended).
They carry four more columns (:data:`EXTRA_COLUMNS`; all four or none):

=============== ======= ====================================================
fragment         int32  fragment id in 0..P−1 (0 without streaming)
outer_staleness  int64  outer updates of the same fragment applied between
                        the read and this update (= staleness when P = 1)
local_start      int64  the worker's completed inner steps when it loaded or
                        merged the fragment's global parameters (at
                        read_version)
local_end        int64  its completed inner steps when the pseudo-gradient was
                        taken (local_end − local_start inner steps in it)
=============== ======= ====================================================

and a second side table, ``trace.inner`` (:data:`INNER_COLUMNS`: ``worker``
int32, ``local_step`` int64, the worker's 0-based inner-step index,
``t_start`` and ``t_done`` float64), one row per inner gradient, in the same
file (an empty table for other traces): Parquet keeps it, compressed, in the
file's metadata (up to 2 GiB compressed, some 5·10⁷ to 10⁸ inner steps;
beyond that saving refuses with one line: use .npz),
``.npz`` as ``inner__*`` arrays, CSV on the metadata line. Every other trace is saved exactly as
before (same bytes).

Rows are in the order the server disposed of them (applied or dropped), so the
applied rows have non-decreasing ``step`` and ``t_applied``; the rows of one
update are contiguous among the applied rows.

Files: Parquet (default), ``.npz`` or ``.csv``; every format carries the
metadata (resolved scenario, seed, asyncsim version, number of workers,
simulated time) and loading validates columns, dtypes and invariants, raising
:class:`~asyncsim.errors.TraceError` with one line naming the file.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TraceError
from ._io import atomic_path
from .memory import check_bytes

COLUMNS: dict[str, np.dtype] = {
    "step": np.dtype(np.int64),
    "worker": np.dtype(np.int32),
    "read_version": np.dtype(np.int64),
    "staleness": np.dtype(np.int64),
    "t_read": np.dtype(np.float64),
    "t_done": np.dtype(np.float64),
    "t_applied": np.dtype(np.float64),
}
#: ``step`` values of rows that no update applied.
DROPPED = -1
LOST = -2
DOWN_COLUMNS = ("worker", "t_down", "t_up")
#: the columns of the local SGD / DiLoCo family's traces (all four or none; module docstring)
EXTRA_COLUMNS: dict[str, np.dtype] = {
    "fragment": np.dtype(np.int32),
    "outer_staleness": np.dtype(np.int64),
    "local_start": np.dtype(np.int64),
    "local_end": np.dtype(np.int64),
}
#: the inner-gradient side table of those traces
INNER_COLUMNS: dict[str, np.dtype] = {
    "worker": np.dtype(np.int32),
    "local_step": np.dtype(np.int64),
    "t_start": np.dtype(np.float64),
    "t_done": np.dtype(np.float64),
}
#: where the inner table is kept in Parquet (schema metadata, an .npz blob) and .npz files (prefixed arrays)
_INNER_KEY = b"asyncsim.inner"
_INNER_PREFIX = "inner__"
#: the largest Parquet footer string (thrift): bounds the inner table a Parquet trace can hold
_THRIFT_MAX = 2**31 - 1
#: worker ids are int32
MAX_WORKERS = 2**31 - 1
FORMAT_NAME = "asyncsim-trace"
FORMAT_VERSION = 1
_META_KEY = b"asyncsim"


def _version() -> str:
    from . import __version__

    return __version__


class TraceRecorder:
    """Preallocated, growable numpy columns that engines append rows to.

    ``append`` is the per-row call; capacity doubles when full (amortised O(1)).
    """

    __slots__ = ("_cols", "n", "cap")

    def __init__(self, capacity: int = 1024):
        self.cap = max(16, int(capacity))
        self._cols = {k: np.empty(self.cap, dtype=dt) for k, dt in COLUMNS.items()}
        self.n = 0

    def _grow(self) -> None:
        self.cap *= 2
        for k, arr in self._cols.items():
            new = np.empty(self.cap, dtype=arr.dtype)
            new[: self.n] = arr[: self.n]
            self._cols[k] = new

    def append(self, step: int, worker: int, read_version: int, t_read: float, t_done: float,
               t_applied: float) -> None:
        if self.n == self.cap:
            self._grow()
        i = self.n
        c = self._cols
        c["step"][i] = step
        c["worker"][i] = worker
        c["read_version"][i] = read_version
        c["staleness"][i] = step - read_version if step >= 0 else -1
        c["t_read"][i] = t_read
        c["t_done"][i] = t_done
        c["t_applied"][i] = t_applied
        self.n = i + 1

    def columns(self) -> dict[str, np.ndarray]:
        return {k: arr[: self.n].copy() for k, arr in self._cols.items()}


class ColumnRecorder:
    """Preallocated numpy columns of fixed dtypes, appended to a block at a time.

    ``extend(n, col=values, ...)`` writes ``n`` rows (scalars broadcast),
    ``append(v1, v2, ...)`` one row; capacity doubles when full (amortised O(1)
    per row). Used by the event
    engines for the DiLoCo family's extra columns and inner table.
    """

    __slots__ = ("_cols", "_arrays", "n", "cap")

    def __init__(self, dtypes: dict[str, np.dtype], capacity: int = 1024):
        self.cap = max(16, int(capacity))
        self._cols = {k: np.empty(self.cap, dtype=dt) for k, dt in dtypes.items()}
        self._arrays = list(self._cols.values())
        self.n = 0

    def _reserve(self, n: int) -> None:
        i = self.n
        while i + n > self.cap:
            self.cap *= 2
        for k, arr in self._cols.items():
            new = np.empty(self.cap, dtype=arr.dtype)
            new[:i] = arr[:i]
            self._cols[k] = new
        self._arrays = list(self._cols.values())

    def extend(self, n: int, **values) -> None:
        i = self.n
        if i + n > self.cap:
            self._reserve(n)
        for k, v in values.items():
            self._cols[k][i:i + n] = v
        self.n = i + n

    def append(self, *values) -> None:
        """One row, its values in the columns' order (the per-event path)."""
        i = self.n
        if i == self.cap:
            self._reserve(1)
        for arr, v in zip(self._arrays, values):
            arr[i] = v
        self.n = i + 1

    def columns(self) -> dict[str, np.ndarray]:
        return {k: arr[: self.n].copy() for k, arr in self._cols.items()}


@dataclass
class Trace:
    """A staleness trace plus the metadata needed to reproduce it.

    Build one with :meth:`from_columns` (validated) or load one with
    :meth:`load`. Column arrays are exposed as attributes (``trace.step``...).
    """

    columns: dict[str, np.ndarray]
    n_workers: int
    sim_time: float
    n_updates: int
    seed: int | None = None
    scenario: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    down_intervals: dict[str, np.ndarray] = field(default_factory=lambda: _empty_down())
    #: the inner-gradient side table (DiLoCo family; empty otherwise): INNER_COLUMNS
    inner: dict[str, np.ndarray] = field(default_factory=lambda: _empty_inner())

    # ------------------------------------------------------------------ build
    @classmethod
    def from_columns(
        cls,
        columns: dict[str, Any],
        *,
        n_workers: int | None = None,
        sim_time: float | None = None,
        n_updates: int | None = None,
        seed: int | None = None,
        scenario: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        down_intervals: dict[str, Any] | None = None,
        inner: dict[str, Any] | None = None,
        source: str | None = None,
        validate: bool = True,
    ) -> "Trace":
        """Validate and wrap column arrays. Missing ``step``/``staleness`` may be derived:
        give ``step`` (and ``read_version``) and ``staleness`` is computed, or vice versa.

        ``validate=False`` skips :meth:`validate` (types and lengths are still
        checked): for the engines' own output, whose invariants hold by
        construction and are checked on every engine by the parity and soak
        tests."""
        cols = _coerce_columns(dict(columns), source)
        n = len(cols["step"])
        if n_workers is None:
            n_workers = int(cols["worker"].max()) + 1 if n else 0
        applied = cols["step"] >= 0
        if n_updates is None:
            n_updates = int(cols["step"][applied].max()) + 1 if applied.any() else 0
        if sim_time is None:
            finite = np.concatenate([cols["t_applied"][applied], cols["t_done"]])
            sim_time = float(finite.max()) if finite.size else 0.0
        tr = cls(
            columns=cols,
            n_workers=int(n_workers),
            sim_time=float(sim_time),
            n_updates=int(n_updates),
            seed=seed,
            scenario=scenario,
            meta=dict(meta or {}),
            down_intervals=_coerce_down(down_intervals, source),
            inner=_coerce_inner(inner, source),
        )
        if validate:
            tr.validate(source)
        return tr

    def validate(self, source: str | None = None) -> None:
        """Check the trace invariants; raise :class:`TraceError` naming ``source``."""

        def bad(msg: str) -> TraceError:
            return TraceError(msg, file=source)

        c = self.columns
        step, rv, st = c["step"], c["read_version"], c["staleness"]
        n = len(step)
        if self.n_workers < 0 or self.n_updates < 0:
            raise bad("n_workers and n_updates must be >= 0")
        if self.n_workers > MAX_WORKERS:
            raise bad(f"n_workers {self.n_workers:,} exceeds {MAX_WORKERS:,} (worker ids are int32)")
        if not math.isfinite(self.sim_time) or self.sim_time < 0:
            raise bad(f"sim_time must be a finite number >= 0, got {self.sim_time}")
        # every update applies at least one gradient: n_updates <= applied rows bounds what
        # the analyses allocate per update (and per staleness value) by the file's own size
        n_applied = n if n == 0 or int(step.min()) >= 0 else int(np.count_nonzero(step >= 0))
        if self.n_updates > n_applied:
            raise bad(f"n_updates {self.n_updates:,} exceeds the {n_applied:,} applied gradient rows "
                      f"(every update applies at least one)")
        check_bytes(16.0 * self.n_workers, f"a trace of {self.n_workers:,} workers",
                    hint="its n_workers metadata is implausible")
        if n == 0:
            _validate_inner(self.inner, self.n_workers, bad)
            return
        applied = step >= 0
        every = bool(applied.all())  # (the usual async case: no masks, no copies)
        dropped = None if every else (step == DROPPED) | (step == LOST)
        if not every and not np.all(dropped | applied):
            i = int(np.flatnonzero(~(dropped | applied))[0])
            raise bad(f"row {i}: step must be >= 0, -1 (dropped) or -2 (lost), got {int(step[i])}")
        w = c["worker"]
        if w.min() < 0 or w.max() >= max(self.n_workers, 1):
            raise bad(f"worker ids must lie in [0, {self.n_workers}), got {int(w.min())}..{int(w.max())}")
        if rv.min() < 0:
            raise bad(f"row {int(np.argmin(rv))}: read_version must be >= 0")
        expect = step - rv
        if not every:
            expect[~applied] = -1
        if not np.array_equal(expect, st):
            i = int(np.flatnonzero(expect != st)[0])
            raise bad(f"row {i}: staleness {int(st[i])} != step - read_version ({int(expect[i])})")
        if (st.min() < 0) if every else np.any(st[applied] < 0):
            i = int(np.flatnonzero(applied & (st < 0))[0])
            raise bad(f"row {i}: read_version {int(rv[i])} is newer than step {int(step[i])}")
        s_app = step if every else step[applied]
        if len(s_app) and int(s_app.max()) >= self.n_updates:
            raise bad(f"step {int(s_app.max())} >= n_updates {self.n_updates}")
        t_read, t_done, t_app = c["t_read"], c["t_done"], c["t_applied"]
        if not (_all_finite(t_read) and _all_finite(t_done)):
            raise bad("t_read and t_done must be finite")
        if np.any(t_done < t_read):
            i = int(np.flatnonzero(t_done < t_read)[0])
            raise bad(f"row {i}: t_done < t_read")
        if not every and not np.all(np.isnan(t_app[dropped])):
            raise bad("dropped and lost rows (step < 0) must have t_applied = NaN")
        ta = t_app if every else t_app[applied]
        if not _all_finite(ta):
            raise bad("applied rows must have a finite t_applied")
        td = t_done if every else t_done[applied]
        if np.any(ta < td):
            i = int(np.flatnonzero(applied)[np.flatnonzero(ta < td)[0]])
            raise bad(f"row {i}: t_applied < t_done")
        if np.any(ta[1:] < ta[:-1]):
            raise bad("applied times must be non-decreasing in row order")
        if np.any(s_app[1:] < s_app[:-1]):
            raise bad("steps of applied rows must be non-decreasing in row order")
        if "fragment" in c:
            _validate_extra(c, applied, every, bad)
        d = self.down_intervals
        if len(d["worker"]):
            if d["worker"].min() < 0 or d["worker"].max() >= self.n_workers:
                raise bad("down_intervals: worker ids out of range")
            up = d["t_up"]
            if np.any(~np.isfinite(d["t_down"])) or np.any(up[np.isfinite(up)] < d["t_down"][np.isfinite(up)]):
                raise bad("down_intervals: t_up must be >= t_down")
        _validate_inner(self.inner, self.n_workers, bad)

    # -------------------------------------------------------------- accessors
    def __len__(self) -> int:
        return len(self.columns["step"])

    def __getattr__(self, name: str) -> np.ndarray:
        cols = self.__dict__.get("columns")
        if cols is not None and name in cols:
            return cols[name]
        raise AttributeError(name)

    def __repr__(self) -> str:
        return (f"Trace(rows={len(self)}, updates={self.n_updates}, workers={self.n_workers}, "
                f"sim_time={self.sim_time:.6g}, seed={self.seed})")

    @property
    def applied(self) -> np.ndarray:
        """Boolean mask of applied rows."""
        return self.columns["step"] >= 0

    def step_index(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR index of applied rows by step: ``rows[ptr[t]:ptr[t+1]]`` are step ``t``'s rows."""
        step = self.columns["step"]
        rows = np.flatnonzero(step >= 0)
        counts = np.bincount(step[rows], minlength=self.n_updates)
        ptr = np.zeros(self.n_updates + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        return rows, ptr

    def row_weights(self) -> np.ndarray:
        """Weight of each row in its update: 1/K for an update averaging K gradients, 0 if dropped."""
        step = self.columns["step"]
        applied = step >= 0
        w = np.zeros(len(step), dtype=np.float64)
        if applied.any():
            counts = np.bincount(step[applied], minlength=self.n_updates)
            w[applied] = 1.0 / counts[step[applied]]
        return w

    def delay_pmf(self, weighting: str = "update") -> np.ndarray:
        """Probabilities of staleness τ = 0, 1, ..., max; sums to 1.

        ``weighting="update"`` (default) gives each update total weight 1 split
        evenly among the gradients it averages (the pmf P(z) = E Σ_j w_j z^-τ_j
        of the linearised dynamics); ``"row"`` counts applied gradients equally.
        """
        st = self.columns["staleness"]
        applied = self.columns["step"] >= 0
        if not applied.any():
            return np.ones(1)
        if weighting == "update":
            w = self.row_weights()[applied]
        elif weighting == "row":
            w = np.ones(int(applied.sum()))
        else:
            raise ValueError(f"weighting must be 'update' or 'row', got {weighting!r}")
        pmf = np.bincount(st[applied], weights=w)
        return pmf / pmf.sum()

    def worker_utilisation(self) -> np.ndarray:
        """Fraction of the simulated time each worker spent computing gradients."""
        c = self.columns
        busy = np.bincount(c["worker"], weights=c["t_done"] - c["t_read"], minlength=self.n_workers)
        return busy / self.sim_time if self.sim_time > 0 else np.zeros(self.n_workers)

    def summary(self) -> dict[str, Any]:
        """Headline numbers (JSON-serialisable): the keys of ``asyncsim simulate --json``."""
        c = self.columns
        applied = c["step"] >= 0
        st = c["staleness"][applied]
        n_rows = len(self)
        n_app = int(applied.sum())
        lost = int(np.count_nonzero(c["step"] == LOST))
        util = self.worker_utilisation()

        def pct(q: float) -> float | None:
            return float(np.percentile(st, q, method="inverted_cdf")) if st.size else None

        rate = self.n_updates / self.sim_time if self.sim_time > 0 else float("nan")
        out = {
            "updates": int(self.n_updates),
            "gradients": n_rows,
            "applied": n_app,
            "dropped": n_rows - n_app - lost,
            "lost": lost,
            "workers": int(self.n_workers),
            "sim_time": float(self.sim_time),
            "update_rate": float(rate),
            "gradient_rate": float(n_rows / self.sim_time) if self.sim_time > 0 else float("nan"),
            "time_per_update": float(self.sim_time / self.n_updates) if self.n_updates else float("nan"),
            "staleness_mean": float(st.mean()) if st.size else None,
            "staleness_p50": pct(50),
            "staleness_p99": pct(99),
            "staleness_max": int(st.max()) if st.size else None,
            "staleness_pmf": self.delay_pmf().tolist(),  # (Python floats; tolist: 10x a list of float())
            "utilisation_mean": float(util.mean()) if util.size else None,
            "utilisation_min": float(util.min()) if util.size else None,
            "down_intervals": int(len(self.down_intervals["worker"])),
            "stalled": bool(self.meta.get("stalled", False)),
            "seed": self.seed,
        }
        if self.has_outer_columns:
            out.update(self.outer_summary())
        return out

    @property
    def has_outer_columns(self) -> bool:
        """Whether this is a local SGD / DiLoCo family trace (it has :data:`EXTRA_COLUMNS`)."""
        return "fragment" in self.columns

    def outer_summary(self) -> dict[str, Any]:
        """The outer-level numbers of a DiLoCo family trace (keys of ``simulate --json``; docs/diloco.md).

        ``gradient_rate`` counts *inner* gradients per second here (the
        gradients the workers computed, as for every other policy), so plan's
        throughput speed-ups compare like with like; the pseudo-gradient rows
        are ``pseudo_gradients``. ``communication_fraction`` is the share of
        the workers' time not spent on inner steps (all-reduces, pushes and
        pulls, outer applies, and waiting for the barrier or a fragment);
        ``utilisation_mean``/``min`` count inner steps too. ``time_per_outer_round``:
        the time of the last update × the updates per round (P fragments; async_diloco: one
        per worker, N) ÷ the updates."""
        c = self.columns
        applied = c["step"] >= 0
        ost = c["outer_staleness"][applied]
        inner = self.inner
        extra: dict[str, Any] = {}
        if len(inner["worker"]):
            done = inner["t_done"] <= self.sim_time
            n_inner = int(np.count_nonzero(done))
            per = np.bincount(inner["worker"][done], weights=(inner["t_done"] - inner["t_start"])[done],
                              minlength=self.n_workers)
            busy = float(per.sum())
            if self.sim_time > 0 and self.n_workers:  # (the rows of fragments overlap: count inner steps)
                extra = {"utilisation_mean": float(per.mean() / self.sim_time),
                         "utilisation_min": float(per.min() / self.sim_time)}
        else:  # (a trace built without its inner table: the contributions' inner steps)
            n_inner = int(np.sum(c["local_end"] - c["local_start"]))
            busy = float(np.sum(c["t_done"] - c["t_read"]))
        T, N = self.sim_time, self.n_workers
        pol = ((self.scenario or {}).get("policy") or {})
        frags = int(pol.get("fragments") or 1)
        kind = pol.get("kind", self.meta.get("policy"))
        per_round = N if kind == "async_diloco" else frags  # outer updates per outer round
        util = busy / (N * T) if T > 0 and N > 0 else float("nan")
        return {
            "outer_updates": int(self.n_updates),
            "pseudo_gradients": len(self),
            "inner_gradients": n_inner,
            "inner_steps_per_second": float(n_inner / T) if T > 0 else float("nan"),
            "gradient_rate": float(n_inner / T) if T > 0 else float("nan"),
            # (to the last update, not to the end of a time-stopped run: its last round is unfinished)
            "time_per_outer_round": float(float(c["t_applied"][applied].max()) * per_round / self.n_updates)
            if self.n_updates else float("nan"),
            "inner_utilisation": float(util),
            "communication_fraction": float(1.0 - util) if util == util else float("nan"),
            "outer_staleness_mean": float(ost.mean()) if ost.size else None,
            "outer_staleness_max": int(ost.max()) if ost.size else None,
            "fragments": frags,
            **extra,
        }

    # --------------------------------------------------------------------- io
    def metadata(self) -> dict[str, Any]:
        """What a saved trace file carries besides its columns: format, scenario, seed, package version."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "asyncsim_version": self.meta.get("asyncsim_version", _version()),
            "seed": self.seed,
            "n_workers": self.n_workers,
            "n_updates": self.n_updates,
            "sim_time": self.sim_time,
            "scenario": self.scenario,
            "meta": {k: v for k, v in self.meta.items() if k != "asyncsim_version"},
            "down_intervals": [[int(w), float(a), None if math.isnan(b) else float(b)]
                               for w, a, b in zip(*(self.down_intervals[k].tolist() for k in DOWN_COLUMNS))],
        }

    def save(self, path: str | Path, format: str | None = None) -> Path:
        """Write atomically as Parquet (default), ``.npz`` or ``.csv`` (chosen by suffix)."""
        path = Path(path)
        fmt = format or _format_of(path)
        meta_json = json.dumps(self.metadata(), sort_keys=True, separators=(",", ":"))
        outer = self.has_outer_columns
        with atomic_path(path) as tmp:
            if fmt == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.table({k: pa.array(v) for k, v in self.columns.items()})
                kv = {_META_KEY: meta_json.encode()}
                if outer:
                    kv[_INNER_KEY] = _inner_blob(self.inner)
                    if len(kv[_INNER_KEY]) > _THRIFT_MAX - (1 << 20):
                        raise TraceError(f"the inner table ({len(self.inner['worker']):,} rows, "
                                         f"{len(kv[_INNER_KEY]) / 2**30:.1f} GiB compressed) does not fit in a "
                                         f"Parquet file's metadata: save the trace as .npz", file=path)
                table = table.replace_schema_metadata(kv)
                pq.write_table(table, tmp, compression="zstd")
            elif fmt == "npz":
                side = {_INNER_PREFIX + k: v for k, v in self.inner.items()} if outer else {}
                with open(tmp, "wb") as fh:
                    np.savez_compressed(fh, __meta__=np.array(meta_json), **self.columns, **side)
            elif fmt == "csv":
                if outer:  # the inner table rides in the metadata line (JSON floats round-trip exactly)
                    meta_json = json.dumps({**self.metadata(), "inner": _inner_lists(self.inner)},
                                           sort_keys=True, separators=(",", ":"))
                buf = io.StringIO()
                buf.write(f"# {FORMAT_NAME}: {meta_json}\n")
                names = list(COLUMNS) + (list(EXTRA_COLUMNS) if outer else [])
                buf.write(",".join(names) + "\n")
                cols = [self.columns[k] for k in names]
                for row in zip(*(c.tolist() for c in cols)):
                    buf.write(",".join(repr(v) for v in row) + "\n")
                tmp.write_text(buf.getvalue())
            else:  # pragma: no cover - _format_of guards
                raise TraceError(f"unknown trace format {fmt!r}", file=path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        """Load and validate a trace; any problem raises :class:`TraceError` naming the file."""
        path = Path(path)
        src = str(path)
        if not path.is_file():
            raise TraceError("no such file" if not path.exists() else "not a regular file", file=src)
        fmt = _format_of(path)
        try:
            if fmt == "parquet":
                cols, meta = _read_parquet(path)
            elif fmt == "npz":
                cols, meta = _read_npz(path)
            else:
                cols, meta = _read_csv(path)
        except TraceError:
            raise
        except MemoryError:
            raise TraceError(f"cannot read as a {fmt} trace: it does not fit in memory", file=src) from None
        except RecursionError:
            raise TraceError(f"cannot read as a {fmt} trace: its metadata is nested too deeply", file=src) from None
        except OSError as exc:
            raise TraceError(f"cannot read ({exc.strerror or type(exc).__name__})", file=src) from None
        except Exception as exc:  # corrupt or foreign file: one line, naming the problem, never the content
            raise TraceError(f"cannot read as a {fmt} trace ({type(exc).__name__}): corrupt, truncated or "
                             f"not a trace", file=src) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise TraceError(f"not an asyncsim trace (no '{FORMAT_NAME}' metadata)", file=src)
        try:
            return cls.from_columns(
                cols,
                n_workers=int(meta["n_workers"]),
                sim_time=float(meta["sim_time"]),
                n_updates=int(meta["n_updates"]),
                seed=meta.get("seed"),
                scenario=meta.get("scenario"),
                meta={**(meta.get("meta") or {}), "asyncsim_version": meta.get("asyncsim_version")},
                down_intervals=_down_from_rows(meta.get("down_intervals") or [], src),
                inner=_inner_of(cols, meta, src),
                source=src,
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, TraceError):
                raise
            what = f"missing {exc.args[0]!r}" if isinstance(exc, KeyError) and _is_key(exc.args[0]) else \
                type(exc).__name__
            raise TraceError(f"bad trace metadata ({what})", file=src) from None


def _is_key(k: Any) -> bool:
    return isinstance(k, str) and k.isidentifier() and len(k) <= 40


def _empty_down() -> dict[str, np.ndarray]:
    return {"worker": np.empty(0, np.int32), "t_down": np.empty(0), "t_up": np.empty(0)}


def _coerce_down(d: dict[str, Any] | None, source: str | None) -> dict[str, np.ndarray]:
    if d is None:
        return _empty_down()
    try:
        out = {"worker": np.asarray(d["worker"], dtype=np.int32).reshape(-1),
               "t_down": np.asarray(d["t_down"], dtype=np.float64).reshape(-1),
               "t_up": np.asarray(d["t_up"], dtype=np.float64).reshape(-1)}
    except (KeyError, TypeError, ValueError) as exc:
        raise TraceError(f"bad down_intervals table ({exc})", file=source) from None
    if len({len(v) for v in out.values()}) != 1:
        raise TraceError("down_intervals columns differ in length", file=source)
    return out


def _down_from_rows(rows: list, source: str | None) -> dict[str, np.ndarray]:
    try:
        w, a, b = zip(*rows) if rows else ((), (), ())
        return _coerce_down({"worker": list(w), "t_down": list(a),
                             "t_up": [np.nan if x is None else x for x in b]}, source)
    except (TypeError, ValueError) as exc:
        raise TraceError(f"bad down_intervals table ({exc})", file=source) from None


def _empty_inner() -> dict[str, np.ndarray]:
    return {k: np.empty(0, dt) for k, dt in INNER_COLUMNS.items()}


def _coerce_inner(d: dict[str, Any] | None, source: str | None) -> dict[str, np.ndarray]:
    if d is None:
        return _empty_inner()
    out = {}
    for k, dt in INNER_COLUMNS.items():
        if k not in d:
            raise TraceError(f"inner table: missing column {k!r}", file=source)
        arr = np.asarray(d[k])
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "fiub"):
            raise TraceError(f"inner table: column {k!r} must be one-dimensional numbers", file=source)
        if dt.kind == "i" and arr.size and (not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr))
                                            or arr.min() < np.iinfo(dt).min or arr.max() > np.iinfo(dt).max):
            raise TraceError(f"inner table: column {k!r} must hold {dt} integers", file=source)
        out[k] = np.ascontiguousarray(arr.astype(dt, copy=False))
    if len({len(v) for v in out.values()}) != 1:
        raise TraceError("inner table: columns differ in length", file=source)
    return out


def _validate_inner(d: dict[str, np.ndarray], n_workers: int, bad) -> None:
    if not len(d["worker"]):
        return
    if d["worker"].min() < 0 or d["worker"].max() >= n_workers:
        raise bad("inner table: column 'worker': ids out of range")
    if d["local_step"].min() < 0:
        raise bad("inner table: column 'local_step' must be >= 0")
    if not (_all_finite(d["t_start"]) and _all_finite(d["t_done"])):
        raise bad("inner table: columns 't_start' and 't_done' must be finite")
    if np.any(d["t_done"] < d["t_start"]):
        raise bad(f"inner table: column 't_done': row {int(np.flatnonzero(d['t_done'] < d['t_start'])[0])} "
                  f"ends before it starts")


def _validate_extra(c: dict[str, np.ndarray], applied: np.ndarray, every: bool, bad) -> None:
    """The invariants of :data:`EXTRA_COLUMNS` (one line naming the column)."""
    fr, ost, ls, le = c["fragment"], c["outer_staleness"], c["local_start"], c["local_end"]
    if fr.min() < 0:
        raise bad(f"column 'fragment': row {int(np.argmin(fr))} is negative")
    if ls.min() < 0:
        raise bad(f"column 'local_start': row {int(np.argmin(ls))} is negative")
    if np.any(le < ls):
        raise bad(f"column 'local_end': row {int(np.flatnonzero(le < ls)[0])} is below local_start")
    st = c["staleness"]
    o, s = (ost, st) if every else (ost[applied], st[applied])
    rows = np.arange(len(fr)) if every else np.flatnonzero(applied)
    if o.size and (o.min() < 0 or np.any(o > s)):
        i = int(rows[np.flatnonzero((o < 0) | (o > s))[0]])
        raise bad(f"column 'outer_staleness': row {i} must lie in [0, staleness]")
    if int(fr.max()) == 0 and not np.array_equal(o, s):
        i = int(rows[np.flatnonzero(o != s)[0]])
        raise bad(f"column 'outer_staleness': row {i} differs from staleness with one fragment")


def _inner_blob(d: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **d)
    return buf.getvalue()


def _inner_lists(d: dict[str, np.ndarray]) -> list[list]:
    return [d[k].tolist() for k in INNER_COLUMNS]


def _inner_of(cols: dict[str, np.ndarray], meta: dict, source: str) -> dict[str, np.ndarray] | None:
    """The inner table a loaded file carries (``None``: it has none), taken out of ``cols``/``meta``."""
    raw = meta.pop("__inner_blob__", None)
    if raw is not None:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    side = {k[len(_INNER_PREFIX):]: cols.pop(k) for k in list(cols) if k.startswith(_INNER_PREFIX)}
    if side:
        return side
    lists = meta.pop("inner", None)
    if lists is not None:
        if not isinstance(lists, list) or len(lists) != len(INNER_COLUMNS):
            raise TraceError("inner table: expected one list per column "
                             f"({', '.join(INNER_COLUMNS)})", file=source)
        return dict(zip(INNER_COLUMNS, lists))
    return None


def _format_of(path: Path) -> str:
    suf = path.suffix.lower()
    if suf in (".parquet", ".pq", ""):
        return "parquet"
    if suf == ".npz":
        return "npz"
    if suf == ".csv":
        return "csv"
    raise TraceError(f"unknown trace format {suf!r} (use .parquet, .npz or .csv)", file=path)


def _all_finite(x: np.ndarray) -> bool:
    """No NaN or infinity in ``x`` (a finite sum proves it without a mask)."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = x.sum()
    return bool(np.isfinite(total)) or bool(np.all(np.isfinite(x)))


def _coerce_columns(cols: dict[str, Any], source: str | None) -> dict[str, np.ndarray]:
    lengths = {k: len(np.atleast_1d(np.asarray(v))) for k, v in cols.items() if k in COLUMNS}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise TraceError(f"columns have different numbers of rows ({desc})", file=source)
    if "staleness" not in cols and "step" in cols and "read_version" in cols:
        step = np.asarray(cols["step"])
        cols["staleness"] = np.where(step >= 0, step - np.asarray(cols["read_version"]), -1)
    if "t_applied" not in cols and "step" in cols and "t_done" in cols:
        cols["t_applied"] = np.where(np.asarray(cols["step"]) >= 0, np.asarray(cols["t_done"], float), np.nan)
    missing = [k for k in COLUMNS if k not in cols]
    if missing:
        raise TraceError(f"missing column(s): {', '.join(missing)}", file=source)
    dtypes = COLUMNS
    if any(k in cols for k in EXTRA_COLUMNS):  # a DiLoCo family trace: all four extra columns
        lacking = [k for k in EXTRA_COLUMNS if k not in cols]
        if lacking:
            raise TraceError(f"missing column(s): {', '.join(lacking)} (the DiLoCo columns "
                             f"{', '.join(EXTRA_COLUMNS)} come together)", file=source)
        dtypes = {**COLUMNS, **EXTRA_COLUMNS}
    out: dict[str, np.ndarray] = {}
    n = None
    for k, dt in dtypes.items():
        arr = np.asarray(cols[k])
        if arr.ndim != 1:
            raise TraceError(f"column {k!r} must be one-dimensional", file=source)
        if n is None:
            n = len(arr)
        elif len(arr) != n:
            raise TraceError(f"column {k!r} has {len(arr)} rows, expected {n}", file=source)
        if dt.kind == "i":
            if arr.size and arr.dtype.kind == "f":
                if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                    raise TraceError(f"column {k!r} must hold integers", file=source)
            elif arr.size and arr.dtype.kind not in "iub":
                raise TraceError(f"column {k!r} must hold integers, got {arr.dtype}", file=source)
            if arr.size and arr.dtype != dt:
                # a cast would wrap silently (worker 2**32 -> 0)
                lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
                if arr.dtype.kind == "f":
                    out_of_range = bool(arr.min() < lo or arr.max() > hi)
                else:
                    out_of_range = bool(int(arr.min()) < lo or int(arr.max()) > hi)
                if out_of_range:
                    raise TraceError(f"column {k!r} holds values outside the {dt} range [{lo}, {hi}]",
                                     file=source)
        elif arr.size and arr.dtype.kind not in "fiu":
            raise TraceError(f"column {k!r} must hold numbers, got {arr.dtype}", file=source)
        out[k] = np.ascontiguousarray(arr.astype(dt, copy=False))
    return out


def _read_parquet(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    import pyarrow.parquet as pq

    # a DiLoCo trace's inner table rides in the footer's metadata: let the footer be as large as
    # the file (pyarrow's default limit is 100 MB; thrift strings stop at 2 GiB)
    limit = min(max(100_000_000, path.stat().st_size + (1 << 20)), _THRIFT_MAX)
    table = pq.read_table(path, thrift_string_size_limit=limit)
    kv = table.schema.metadata or {}
    raw = kv.get(_META_KEY)
    meta = json.loads(raw) if raw else {}
    if _INNER_KEY in kv and isinstance(meta, dict):
        meta["__inner_blob__"] = kv[_INNER_KEY]
    cols = {name: table.column(name).to_numpy() for name in table.column_names}
    return cols, meta


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"])) if "__meta__" in z.files else {}
        cols = {k: z[k] for k in z.files if k != "__meta__"}
    return cols, meta


def _read_csv(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Columns and metadata of a CSV trace; errors name the line (1-based), never its text."""
    with open(path, encoding="utf-8") as fh:
        first = fh.readline()
        prefix = f"# {FORMAT_NAME}: "
        if not first.startswith(prefix):
            return {}, {}
        try:
            meta = json.loads(first[len(prefix):])
        except ValueError:
            raise TraceError("line 1: the metadata is not valid JSON", file=path) from None
        header = fh.readline().strip().split(",")
        if not all(_is_key(h) for h in header):
            raise TraceError("line 2: expected the column names", file=path)
        body = fh.tell()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data": a valid empty trace
                data = np.loadtxt(fh, delimiter=",", ndmin=2, dtype=np.float64)
        except ValueError:
            fh.seek(body)
            _csv_problem(fh, len(header), path)
            raise TraceError("a field is not a number", file=path) from None
    if data.size == 0:
        data = np.empty((0, len(header)))
    if data.shape[1] != len(header):
        raise TraceError(f"csv has {data.shape[1]} fields per row but {len(header)} names", file=path)
    return {name: data[:, i] for i, name in enumerate(header)}, meta


def _csv_problem(fh, width: int, path: Path) -> None:
    """Raise the TraceError naming the first bad line of a CSV body (numpy's message quotes it)."""
    for no, line in enumerate(fh, start=3):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split(",")
        if len(fields) != width:
            raise TraceError(f"line {no}: {len(fields)} fields, expected {width}", file=path)
        try:
            [float(x) for x in fields]
        except ValueError:
            raise TraceError(f"line {no}: a field is not a number", file=path) from None
