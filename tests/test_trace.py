"""Trace: columns, invariants, pmf weighting, file formats and atomic writes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _traces import async_exponential, round_robin, sync
from asyncsim import Trace, TraceError
from asyncsim._io import atomic_path
from asyncsim.cli import run


def _same(a: Trace, b: Trace) -> bool:
    return all(np.array_equal(a.columns[k], b.columns[k], equal_nan=True) and a.columns[k].dtype == b.columns[k].dtype
               for k in a.columns)


@pytest.mark.parametrize("suffix", [".parquet", ".npz", ".csv"])
def test_roundtrip_every_format(tmp_path, suffix):
    t = async_exponential(4, 500, seed=3)
    t.seed = 3
    t.scenario = {"name": "x", "seed": 3}
    p = t.save(tmp_path / f"t{suffix}")
    u = Trace.load(p)
    assert _same(t, u)
    assert (u.n_workers, u.n_updates, u.sim_time, u.seed, u.scenario) == (4, 500, t.sim_time, 3, t.scenario)


def test_parquet_bytes_are_deterministic(tmp_path):
    t = async_exponential(4, 300, seed=1)
    t.save(tmp_path / "a.parquet")
    t.save(tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_delay_pmf_weights_updates_not_rows():
    # one update averages two gradients (tau 0 and 2), the next applies one (tau 1)
    t = Trace.from_columns({"step": [0, 0, 1], "worker": [0, 1, 0], "read_version": [0, -2 + 2, 0],
                            "t_read": [0, 0, 1], "t_done": [1, 1, 2], "t_applied": [1, 1, 2]})
    # staleness: 0, 0, 1 -> per update: step0 has tau 0 twice (weight 1/2 each), step1 tau 1
    assert np.allclose(t.delay_pmf(), [0.5, 0.5])
    t2 = Trace.from_columns({"step": [0, 0, 2, 2, 2], "worker": [0, 1, 0, 1, 2], "read_version": [0, 0, 0, 1, 2],
                             "t_read": [0] * 5, "t_done": [1] * 5, "t_applied": [1, 1, 2, 2, 2]}, n_updates=3)
    # step 0: two tau=0 (1/2 each); step 2: tau 2,1,0 (1/3 each); step 1 empty -> normalise over mass
    w = np.array([1.0 + 1 / 3, 1 / 3, 1 / 3])
    assert np.allclose(t2.delay_pmf(), w / w.sum())
    assert np.allclose(t2.delay_pmf("row"), [3 / 5, 1 / 5, 1 / 5])


def test_sync_and_round_robin_summaries():
    s = sync(4, 50).summary()
    assert s["staleness_max"] == 0 and s["gradients"] == 200 and s["updates"] == 50
    assert s["staleness_pmf"] == [1.0]
    r = round_robin(5, 100)
    assert r.summary()["staleness_max"] == 4
    rows, ptr = r.step_index()
    assert np.array_equal(np.diff(ptr), np.ones(100))


def _columns(**over):
    cols = {"step": [0, 1, -1], "worker": [0, 1, 1], "read_version": [0, 0, 1], "t_read": [0.0, 0.0, 1.0],
            "t_done": [1.0, 2.0, 2.5], "t_applied": [1.0, 2.0, np.nan]}
    cols.update(over)
    return cols


@pytest.mark.parametrize("over,match", [
    ({"staleness": [0, 0, -1]}, "staleness"),
    ({"step": [0, 1, -3]}, "step"),
    ({"t_applied": [1.0, 0.5, np.nan]}, "t_applied"),
    ({"t_done": [1.0, -1.0, 2.5]}, "t_done"),
    ({"read_version": [0, 5, 1]}, "newer"),
    ({"t_applied": [1.0, 2.0, 3.0]}, "dropped"),
    ({"worker": [0, -1, 1]}, "worker"),
    ({"step": [1, 0, -1], "t_applied": [1.0, 2.0, np.nan]}, "non-decreasing"),
    ({"step": [0.5, 1, -1]}, "integers"),
    ({"step": [0, 1]}, "rows"),
])
def test_invariants_rejected(over, match):
    with pytest.raises(TraceError, match=match):
        Trace.from_columns(_columns(**over))


def test_valid_columns_with_drop_accepted():
    t = Trace.from_columns(_columns())
    s = t.summary()
    assert s["dropped"] == 1 and s["applied"] == 2 and s["staleness_max"] == 1


def test_load_rejects_corrupt_and_foreign_files(tmp_path):
    bad = tmp_path / "garbage.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(TraceError, match="garbage.parquet"):
        Trace.load(bad)
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), foreign)
    with pytest.raises(TraceError, match="not an asyncsim trace"):
        Trace.load(foreign)
    with pytest.raises(TraceError, match="no such file"):
        Trace.load(tmp_path / "missing.parquet")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(TraceError, match="unknown trace format"):
        Trace.load(tmp_path / "x.json")
    # a trace whose metadata is fine but whose columns break an invariant
    t = async_exponential(2, 20)
    cols = dict(t.columns)
    cols["staleness"] = cols["staleness"] + 1
    table = pa.table(cols).replace_schema_metadata(pq.read_schema(t.save(tmp_path / "ok.parquet")).metadata)
    pq.write_table(table, tmp_path / "tampered.parquet")
    with pytest.raises(TraceError, match="tampered.parquet.*staleness"):
        Trace.load(tmp_path / "tampered.parquet")
    truncated = tmp_path / "trunc.parquet"
    truncated.write_bytes((tmp_path / "ok.parquet").read_bytes()[:200])
    with pytest.raises(TraceError):
        Trace.load(truncated)


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("suffix", [".parquet", ".npz", ".csv"])
def test_lost_rows_and_down_intervals_roundtrip(tmp_path, suffix):
    cols = {"step": [0, -2, 1, -1], "worker": [0, 1, 0, 1], "read_version": [0, 0, 1, 1],
            "t_read": [0.0, 0.0, 1.0, 5.0], "t_done": [1.0, 0.5, 2.0, 6.0],
            "t_applied": [1.0, np.nan, 2.0, np.nan]}
    down = {"worker": [1, 1], "t_down": [0.5, 7.0], "t_up": [5.0, np.nan]}
    t = Trace.from_columns(cols, n_workers=2, down_intervals=down)
    s = t.summary()
    assert (s["gradients"], s["applied"], s["dropped"], s["lost"]) == (4, 2, 1, 1)
    assert s["gradients"] == s["applied"] + s["dropped"] + s["lost"]
    u = Trace.load(t.save(tmp_path / f"t{suffix}"))
    assert _same(t, u)
    for k in ("worker", "t_down", "t_up"):
        assert np.array_equal(u.down_intervals[k], t.down_intervals[k], equal_nan=True)
    with pytest.raises(TraceError, match="down_intervals"):
        Trace.from_columns(cols, n_workers=2, down_intervals={"worker": [1], "t_down": [3.0], "t_up": [1.0]})


def test_saved_files_get_normal_permissions(tmp_path):
    import os
    import stat

    p = async_exponential(2, 10).save(tmp_path / "t.parquet")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
