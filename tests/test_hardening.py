"""Hardening: every bad input and every unwritable output ends as one line and exit 2.

The hand-made corpus lives in tests/data/broken:

* ``*.yaml``        scenarios that fail validation (tests/test_scenario.py checks each
                    names its file and the field in its ``# expect:`` line);
* ``run/*.yaml``    scenarios that validate but must be refused before they run
                    (memory, a time stop that never arrives) or end with a correct
                    result (faults that stall the cluster);
* ``traces/*.csv``  corrupt or absurd traces, each with the line its error must hold;
* ``plans/*.yaml``  bad plan files;
* ``foreign-file.txt`` stands for a file that is not a scenario at all (a system file):
  no message may quote it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest

import asyncsim
from asyncsim import Trace
from asyncsim.errors import OutputError, ScenarioError, TraceError
from asyncsim.memory import BYTES_PER_ROW, check_simulation, format_bytes, simulation_bytes
from asyncsim.scenario import load_scenario

from _cli import assert_one_line_error, cli, files_under, system_temporaries, temporaries

ROOT = Path(__file__).resolve().parent.parent
BROKEN = ROOT / "tests" / "data" / "broken"
SECRET = "s3cr3t"  # in foreign-file.txt: must never reach a message

SMALL = ("workers:\n  - count: 2\n    compute: {dist: exponential, mean: 1}\nstop: {updates: 40}\n")


def _expect(path: Path, key: str = "# expect:") -> str:
    first = path.read_text(encoding="utf-8", errors="replace").splitlines()[0]
    assert first.startswith(key), path
    return first[len(key):].strip()


# ------------------------------------------------------------------ the corpus
@pytest.mark.parametrize("path", sorted(BROKEN.glob("*.yaml")), ids=lambda p: p.name)
def test_broken_scenarios_never_quote_a_foreign_file(path):
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert SECRET not in str(info.value)


def test_a_foreign_file_read_as_a_scenario_is_named_not_quoted():
    with pytest.raises(ScenarioError) as info:
        load_scenario(BROKEN / "foreign-file.txt")
    msg = str(info.value)
    assert SECRET not in msg and "root" not in msg
    assert "<the key on line 1>" in msg


@pytest.mark.parametrize("path", sorted((BROKEN / "run").glob("*.yaml")), ids=lambda p: p.name)
def test_run_corpus_is_refused_before_running_or_ends_correctly(path, monkeypatch):
    """Files that validate; each says ``# expect-exit: CODE[: text]``. The memory limit is pinned
    so that the refusals do not depend on this machine's free memory."""
    monkeypatch.setenv("ASYNCSIM_MEMORY_LIMIT", "8GiB")
    code, _, text = _expect(path, "# expect-exit:").partition(":")
    rc, out, err = cli(["simulate", path, "--no-save", "--json"], limit=60)
    if int(code) == 2:
        assert_one_line_error(rc, err, text.strip())
    else:
        assert rc == 0, err
        summary = json.loads(out)
        if text.strip() == "stalled":
            assert summary["stalled"] and "stalled" in err
        assert summary["updates"] >= 1


@pytest.mark.parametrize("path", sorted((BROKEN / "traces").glob("*.csv")), ids=lambda p: p.name)
def test_broken_traces_name_file_and_line_never_content(path):
    expect = path.with_suffix(".expect").read_text().strip()
    with pytest.raises(TraceError) as info:
        Trace.load(path)
    msg = str(info.value)
    assert expect in msg and str(path) in msg and "\n" not in msg
    assert SECRET not in msg and "root" not in msg


def test_broken_trace_on_the_command_line_is_one_line(tmp_path):
    for name in ("worker-2-pow-32", "n-updates-1e12", "foreign-header"):
        rc, _, err = cli(["train", "--trace", BROKEN / "traces" / f"{name}.csv", "--dataset", "quadratic",
                          "--optimizer", "sgd", "--lr", "0.1", "-o", tmp_path / "t"])
        assert_one_line_error(rc, err, f"{name}.csv")
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("path", sorted((BROKEN / "plans").glob("*.yaml")), ids=lambda p: p.name)
def test_broken_plan_files(path, tmp_path):
    rc, _, err = cli(["plan", "--plan", path, "-o", tmp_path / "out", "-j", "1"])
    line = assert_one_line_error(rc, err, _expect(path))
    assert SECRET not in line
    assert not (tmp_path / "out").exists()


def test_good_trace_files_round_trip_after_the_range_checks(tmp_path):
    tr = asyncsim.simulate(load_scenario(SMALL))
    for suffix in (".csv", ".npz", ".parquet"):
        back = Trace.load(tr.save(tmp_path / f"t{suffix}"))
        for k, v in tr.columns.items():
            assert np.array_equal(v, back.columns[k], equal_nan=True), (suffix, k)


# ------------------------------------------------------------------ outputs
def _scenario(tmp_path) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(SMALL)
    return p


#: commands writing one file: (argv before the target, argv after it)
FILE_WRITERS = {
    "simulate -o": (["simulate", "{sc}", "-o"], ["--json"]),
    "simulate --timeline": (["simulate", "{sc}", "--no-save", "--timeline"], ["--json"]),
    "schema -o": (["schema", "-o"], []),
}
#: commands writing into a folder
FOLDER_WRITERS = {
    "plan -o": (["plan", "{sc}", "-n", "30", "-j", "1", "--no-report", "-o"], ["--json"]),
    "train -o": (["train", "{sc}", "--dataset", "quadratic", "--optimizer", "sgd", "--lr", "0.1", "--steps", "20",
                  "-o"], ["--json"]),
    "figures -o": (["figures", "-o"], []),
}


def _argv(spec, sc, target):
    before, after = spec
    return [sc if a == "{sc}" else a for a in before] + [target] + after


def _bad_file_targets(tmp_path):
    d = tmp_path / "a-folder"
    d.mkdir()
    f = tmp_path / "a-file"
    f.write_text("old")
    return {
        "a folder": (d, "is a folder"),
        "under a regular file": (f / "x.parquet", "not a folder"),
        "empty": ("", "empty path"),
        "name too long": (tmp_path / ("n" * 300 + ".parquet"), "File name too long"),
        "a full disk": ("/dev/full", "No space left on device"),
    }


@pytest.mark.parametrize("cmd", FILE_WRITERS)
def test_file_outputs_that_cannot_be_written(cmd, tmp_path):
    sc = _scenario(tmp_path)
    before_tmp = system_temporaries()
    for kind, (target, why) in _bad_file_targets(tmp_path).items():
        before = files_under(tmp_path)
        rc, _, err = cli(_argv(FILE_WRITERS[cmd], sc, target))
        line = assert_one_line_error(rc, err, why)
        assert len(line) < 400, (kind, len(line))  # a long name is shortened, not echoed
        assert files_under(tmp_path) == before, kind
        assert (tmp_path / "a-file").read_text() == "old"
    assert not temporaries(tmp_path) and system_temporaries() == before_tmp


@pytest.mark.parametrize("cmd", FOLDER_WRITERS)
def test_folder_outputs_that_cannot_be_written(cmd, tmp_path):
    sc = _scenario(tmp_path)
    f = tmp_path / "a-file"
    f.write_text("old")
    for target, why in ((f, "not a folder"), (f / "sub", "not a folder"), ("", "empty path"),
                        ("/dev/null", "not a folder")):
        before = files_under(tmp_path)
        rc, _, err = cli(_argv(FOLDER_WRITERS[cmd], sc, target))
        assert_one_line_error(rc, err, why)
        assert files_under(tmp_path) == before and f.read_text() == "old"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("cmd", FILE_WRITERS)
def test_a_character_device_is_written_in_place_never_replaced(cmd, tmp_path):
    sc = _scenario(tmp_path)
    rc, _, err = cli(_argv(FILE_WRITERS[cmd], sc, "/dev/null"))
    assert rc == 0, err
    st = os.stat("/dev/null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3


def test_read_only_file_system_and_disk_full_mid_write_leave_nothing(tmp_path, monkeypatch):
    """Mocked: EROFS when the temporary file is created, ENOSPC when it is flushed."""
    import asyncsim._io as io_mod

    sc = _scenario(tmp_path)
    target = tmp_path / "t.parquet"
    target.write_bytes(b"old")

    def erofs(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path))

    def enospc(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    for name, fn, why in (("mkstemp", erofs, "Read-only file system"), ("fsync", enospc, "No space left")):
        with monkeypatch.context() as m:
            if name == "mkstemp":
                m.setattr(io_mod.tempfile, "mkstemp", fn)
            else:
                m.setattr(io_mod.os, "fsync", fn)
            for argv in (["simulate", sc, "-o", target], ["schema", "-o", target]):
                rc, _, err = cli(argv)
                assert_one_line_error(rc, err, why, str(target))
        assert target.read_bytes() == b"old"
        assert not temporaries(tmp_path)


def test_a_symbolic_link_target_keeps_the_link(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    rc, _, err = cli(["schema", "-o", link])
    assert rc == 0, err
    assert link.is_symlink() and json.loads(real.read_text())["title"] == "asyncsim scenario"


def test_output_error_is_an_input_error_for_the_api(tmp_path):
    tr = asyncsim.simulate(load_scenario(SMALL))
    with pytest.raises(OutputError, match="is a folder"):
        tr.save(tmp_path)
    with pytest.raises(OutputError, match="No space left"):
        tr.save("/dev/full")


def test_plan_cleans_temporaries_a_killed_run_left_everywhere_it_writes(tmp_path):
    sc = _scenario(tmp_path)
    out = tmp_path / "plan"
    rc, _, err = cli(["plan", sc, "-n", "30", "-j", "1", "-o", out, "--json"], limit=120)
    assert rc == 0, err
    left = [out / ".results.parquet.abc.tmp.parquet", out / "points" / ".x.json.abc.tmp.json",
            out / "figures" / ".speed.png.abc.tmp.png"]
    for p in left:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"half")
    rc, _, err = cli(["plan", sc, "-n", "30", "-j", "1", "-o", out, "--json"], limit=120)
    assert rc == 0, err
    assert not any(p.exists() for p in left) and not temporaries(out)


# ------------------------------------------------------------------ memory
def test_refusal_states_the_size_and_how_many_updates_fit(monkeypatch):
    monkeypatch.setenv("ASYNCSIM_MEMORY_LIMIT", "1GiB")
    sc = load_scenario(SMALL)
    with pytest.raises(asyncsim.errors.InputError) as info:
        check_simulation(sc, 10**9, None, "vector")
    msg = str(info.value)
    fit = int(msg.split("at most ")[1].split(" updates")[0].replace(",", ""))
    # the largest number of updates whose estimate is within the limit
    assert simulation_bytes(sc, fit, None, "vector")[0] <= 1 << 30 < simulation_bytes(sc, fit + 1, None, "vector")[0]
    assert f"~{format_bytes(simulation_bytes(sc, 10**9, None, 'vector')[0])}" in msg
    check_simulation(sc, fit, None, "vector")  # and that many do run


def test_format_bytes():
    assert format_bytes(7.3 * 2**40) == "7.3 TiB"
    assert format_bytes(512 * 2**20) == "512 MiB"
    assert format_bytes(10**400) == ">1e308 B"


@pytest.mark.slow
@pytest.mark.parametrize("policy,engine,n,updates", [("async", "vector", 8, 300_000), ("sync", "vector", 32, 8_000),
                                                     ("async", "heap", 8, 60_000)])
def test_memory_estimate_is_not_below_the_measured_peak(policy, engine, n, updates, tmp_path):
    """The estimate errs on the side of refusing: the peak RSS growth of ``asyncsim simulate
    -o t.parquet`` (measured in a fresh process, after a warm-up run) is at most the estimate."""
    import subprocess
    import sys

    sc_path = tmp_path / "s.yaml"
    sc_path.write_text(f"workers:\n  - count: {n}\n    compute: {{dist: exponential, mean: 1}}\n"
                       f"policy: {{kind: {policy}}}\n")
    script = (
        "import sys\n"
        "from asyncsim._alloc import keep_freed_memory\n"
        "from asyncsim.cli import run\n"
        "keep_freed_memory()  # (the opt-in: freed pages reused, a steadier measurement)\n"
        f"run(['simulate', {str(sc_path)!r}, '-n', '10', '--engine', {engine!r}, '-o', {str(tmp_path / 'w.parquet')!r},"
        " '--json'])\n"
        "base = int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) * 1024\n"
        f"rc = run(['simulate', {str(sc_path)!r}, '-n', '{updates}', '--engine', {engine!r}, '-o',"
        f" {str(tmp_path / 't.parquet')!r}, '--json'])\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of a big
        # pytest process would report the parent's size
        "peak = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) * 1024\n"
        "sys.stderr.write(f'{rc} {peak - base}\\n')\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    rc, grew = map(int, res.stderr.strip().splitlines()[-1].split())
    assert rc == 0
    est, rows = simulation_bytes(load_scenario(sc_path), updates, None, engine)
    assert grew <= est, (grew, est)
    assert grew >= 0.3 * rows * min(BYTES_PER_ROW.values()), "the estimate should not be wildly high either"


# ------------------------------------------------------------------ warnings
def test_numpy_warnings_are_held_back_one_error_line(tmp_path, monkeypatch):
    import asyncsim.cli.simulate as sim

    def noisy(*a, **k):
        np.float64(1e308) * 10  # RuntimeWarning: overflow encountered
        warnings.warn("some library chatter", UserWarning)
        raise asyncsim.errors.InputError("the real problem")

    monkeypatch.setattr(sim, "run_simulation", noisy)
    rc, _, err = cli(["simulate", _scenario(tmp_path), "--no-save"])
    assert_one_line_error(rc, err, "the real problem")


def test_warnings_of_a_successful_command_come_after_as_single_lines(tmp_path, monkeypatch):
    import asyncsim.cli.simulate as sim

    real = sim.run_simulation

    def noisy(*a, **k):
        warnings.warn("first\nsecond line", UserWarning)
        warnings.warn("first\nsecond line", UserWarning)
        return real(*a, **k)

    monkeypatch.setattr(sim, "run_simulation", noisy)
    rc, out, err = cli(["simulate", _scenario(tmp_path), "--no-save", "--json"])
    assert rc == 0 and json.loads(out)["updates"] == 40
    assert err.strip().splitlines() == ["asyncsim: warning: first second line"]


# ------------------------------------------------------------------ Ray
def _listening_sockets_of(pids: set[int]) -> list[str]:
    """``ip:port`` of the TCP sockets in LISTEN state owned by ``pids`` (from /proc)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A: LISTEN
                continue
            hexip, hexport = f[1].split(":")
            raw = bytes.fromhex(hexip)
            if v6:
                words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
                import ipaddress

                ip = ipaddress.IPv6Address(b"".join(words))
                ip = ip.ipv4_mapped or ip
            else:
                ip = ".".join(str(b) for b in raw[::-1])
            out.append(f"{ip}:{int(hexport, 16)}")
    return out


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    seen, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += children.get(p, [])
    return seen


@pytest.mark.slow
def test_a_local_ray_listens_on_loopback_only():
    pytest.importorskip("ray")
    from asyncsim.plan.backends import RayBackend

    seen: list[str] = []

    def on_result(item, result):
        assert result == format_bytes(item)
        if not seen:
            seen.extend(_listening_sockets_of(_descendants(os.getpid())))

    # (a function the Ray workers can import: this test module is not on their path)
    RayBackend(None, num_cpus=1).map(format_bytes, [1, 2048, 3 << 30], on_result)
    assert seen, "found no listening socket of the local Ray"
    assert all(s.startswith("127.0.0.1:") for s in seen), seen
