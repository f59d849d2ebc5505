"""The command line a user meets: one vocabulary of flags, help and metavars, old spellings,
--version, shell completion, and a start-up that imports nothing heavy."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

import asyncsim
from asyncsim.cli import build_command, run
from asyncsim.cli._conventions import DEPRECATED, FOREIGN, VOCABULARY, long_name

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from asyncsim.cli import main; main()"]


def _commands():
    group = build_command()
    ctx = group.make_context("asyncsim", [], resilient_parsing=True)
    return group, ctx, {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}


def _options(cmd):
    return [p for p in cmd.params if long_name(p) is not None and long_name(p) not in FOREIGN]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_every_option_of_every_command_speaks_the_vocabulary():
    _, _, commands = _commands()
    assert len(commands) >= 9
    short_meaning: dict[str, set[str]] = {}
    seen = set()
    for name, cmd in commands.items():
        for p in _options(cmd):
            long = long_name(p)
            seen.add(long)
            assert long in VOCABULARY, f"asyncsim {name}: {long} is not in the vocabulary (cli/_conventions.py)"
            longs = [o for o in p.opts + p.secondary_opts if o.startswith("--")]
            shorts = [o for o in p.opts + p.secondary_opts if not o.startswith("--")]
            assert longs == [long], f"asyncsim {name}: {p.opts} gives one option two long names"
            expected = [VOCABULARY[long].short] if VOCABULARY[long].short else []
            assert shorts == expected, f"asyncsim {name}: {long} has short flags {shorts}, the vocabulary {expected}"
            for s in shorts:
                short_meaning.setdefault(s, set()).add(long)
            # a switch in one command is a switch everywhere, a valued option valued everywhere
            assert bool(p.is_flag) == (VOCABULARY[long].metavar is None), f"asyncsim {name}: {long}"
    assert all(len(v) == 1 for v in short_meaning.values()), short_meaning
    # the vocabulary itself: one short flag, one long name; no entry that no command uses
    shorts = [f.short for f in VOCABULARY.values() if f.short]
    assert len(shorts) == len(set(shorts))
    assert set(VOCABULARY) - seen == {"--version"}
    root = build_command()
    assert "--version" in [long_name(p) for p in root.params]


def test_every_option_has_help_and_a_readable_metavar():
    group, ctx, commands = _commands()
    for name, cmd in commands.items():
        assert (cmd.help or "").strip(), f"asyncsim {name} has no help"
        for p in cmd.params:
            if getattr(p, "hidden", False):
                continue
            assert (p.help or "").strip(), f"asyncsim {name}: {p.opts or p.name} has no help text"
            if long_name(p) is not None and not p.is_flag:
                assert re.fullmatch(r"[A-Z][A-Z0-9_=.,\[\]/-]*", p.metavar or ""), (name, p.opts, p.metavar)
        sub = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
        # what --help prints left of each description, and the usage line: no Python types
        # (<int range>, <list[Path]>, <str>, <float>, <path>) and no {scenario}
        shown = [p.get_help_record(sub)[0] for p in cmd.params if p.get_help_record(sub)]
        shown.append(cmd.get_help(sub).splitlines()[0])
        for text in shown:
            assert not re.search(r"<[a-z][^>]*>|list\[|\{[a-z_]+\}", text), f"asyncsim {name}: {text}"


#: a valid value for each renamed spelling, and what each command needs besides it to parse
_ALIAS_VALUES = {"-m": "0.5", "-n": "9", "--engine": "batched", "--steps": "7", "--lr": "0.25", "-b": "serial",
                 "--criteria": "mean,trace", "--workers": "2"}
_BASE_ARGS = {"train": ["--lr", "0.1"]}


@pytest.mark.parametrize("command,old,new", [(c, o, n) for c, a in DEPRECATED.items() for o, n in a.items()])
def test_renamed_spellings_parse_as_the_new_ones_with_a_note(command, old, new, capsys):
    _, ctx, commands = _commands()
    cmd = commands[command]
    own = {o for p in cmd.params for o in p.opts + p.secondary_opts}
    assert old not in own and new in own  # the old spelling is free in this command, the new one is real
    value = _ALIAS_VALUES[old]
    base = _BASE_ARGS.get(command, [])
    with_new = cmd.make_context(command, base + [new, value], parent=ctx)
    assert capsys.readouterr().err == ""
    # the note is a warning, which the command runner prints after a success (one line) and
    # drops on failure (an error stays the only line): tests/test_cli_fuzz.py
    with pytest.warns(UserWarning) as rec:
        with_old = cmd.make_context(command, base + [old, value], parent=ctx)
    notes = [str(w.message) for w in rec]
    assert capsys.readouterr().err == ""
    assert with_old.params == with_new.params
    dest = next(p.name for p in cmd.params if new in p.opts)
    assert with_new.params[dest] != next(p.default for p in cmd.params if new in p.opts)  # the value landed
    assert len(notes) == 1 and "deprecated" in notes[0] and old in notes[0] and new in notes[0]
    # and in the attached forms: --old=value, -Xvalue
    attached = [f"{old}={value}"] if old.startswith("--") else [f"{old}{value}"]
    with pytest.warns(UserWarning):
        assert cmd.make_context(command, base + attached, parent=ctx).params == with_new.params


def test_the_deprecation_note_is_printed_after_success_and_dropped_on_failure(tmp_path):
    ok = subprocess.run(CLI + ["stability", "--pmf", "constant:3", "-m", "0.5", "--optimizer", "momentum"],
                        env=_env(), capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr.strip().splitlines() == [
        "asyncsim: warning: -m is deprecated in 'asyncsim stability', use --momentum "
        "(the old spelling stops working in 0.2.0)"]
    bad = subprocess.run(CLI + ["stability", "--pmf", "constant:3", "-m", "0.5", "--criterion", "nope"],
                         env=_env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "deprecated" not in bad.stderr


def test_renamed_spelling_end_to_end(capsys):
    args = ["stability", "--pmf", "constant:3", "--optimizer", "momentum", "--json"]
    assert run(args + ["--momentum", "0.5"]) == 0
    new = capsys.readouterr()
    assert run(args + ["-m", "0.5"]) == 0
    old = capsys.readouterr()
    assert json.loads(old.out) == json.loads(new.out) and json.loads(new.out)["momentum"] == 0.5
    assert new.err == "" and "use --momentum" in old.err


@pytest.mark.parametrize("argv", [["-h"], ["--help"], ["simulate", "-h"], ["plan", "--help"]])
def test_help_on_every_level(argv, capsys):
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: asyncsim {' '.join(argv[:-1])}".rstrip()) and "-h, --help" in out


def test_version(capsys):
    assert run(["--version"]) == 0
    assert capsys.readouterr().out == f"asyncsim {asyncsim.__version__}\n"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1) == asyncsim.__version__


@pytest.mark.parametrize("words,cword,expect", [
    ("asyncsim sim", 1, {"simulate"}),
    ("asyncsim plan --j", 2, {"--jobs", "--json"}),
    ("asyncsim stability --crit", 2, {"--criterion"}),
    # an old spelling parses quietly, as its new one: --jobs is given already, so not offered again
    ("asyncsim plan --workers 2 --j", 4, {"--json"}),
])
def test_shell_completion(words, cword, expect):
    env = {**_env(), "_ASYNCSIM_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    proc = subprocess.run(CLI, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert set(proc.stdout.split()) == expect


def test_completion_script_for_bash():
    # (with shell detection on, typer reads the shell from the parent processes, which a
    # detached test run may not have: name it explicitly)
    env = {**_env(), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    proc = subprocess.run(CLI + ["--show-completion", "bash"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "_ASYNCSIM_COMPLETE=complete_bash" in proc.stdout


_HEAVY = ("torch", "networkx", "matplotlib", "numpy", "pydantic", "rich", "yaml", "scipy", "simpy")


def _imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    proc = subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.splitlines()[-1].split())


def test_the_cli_and_its_help_import_nothing_heavy():
    mods = _imported_after("import asyncsim.cli as c\nc.build_command()\nimport asyncsim")
    assert not mods & set(_HEAVY), mods & set(_HEAVY)
    mods = _imported_after("from asyncsim.cli import run\nrun(['--help'])")
    assert not mods & set(_HEAVY), mods & set(_HEAVY)


def test_validate_and_a_plain_simulation_import_no_networkx_torch_or_matplotlib():
    mods = _imported_after("from asyncsim.cli import run\nrun(['validate', 'scenarios/homogeneous-8.yaml'])")
    assert not mods & {"torch", "networkx", "matplotlib", "scipy", "numpy", "rich"}
    code = ("import asyncsim\n"
            "asyncsim.simulate({'workers': [{'count': 4, 'compute': {'dist': 'exponential', 'mean': 1}}]}, "
            "updates=50)")
    mods = _imported_after(code)
    assert "networkx" not in mods and "torch" not in mods and "matplotlib" not in mods
    # star and two_tier routes are closed forms: networkx only for custom topologies
    assert "networkx" not in _imported_after("import asyncsim\nasyncsim.simulate('scenarios/homogeneous-8.yaml', "
                                             "updates=50)")
    assert "networkx" in _imported_after("import asyncsim\nasyncsim.simulate('scenarios/wide-area-federated.yaml', "
                                         "updates=50)")


def test_numpy_is_imported_on_first_use_and_then_in_place():
    code = ("import asyncsim.scenario, asyncsim.distributions as d\n"
            "print('before', 'numpy' in sys.modules, type(d.np).__name__)\n"
            "x = d.Constant(value=2.0).sample(None, 4)\n"  # np.full: the first use
            "print('after', d.np is sys.modules['numpy'], len(x))")
    proc = subprocess.run([sys.executable, "-c", "import sys\n" + code], env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["before", "False", "_Lazy", "after", "True", "4"]


def _median_wall(argv, n=5):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, env=_env(), capture_output=True, cwd=ROOT, timeout=120, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@pytest.mark.slow
def test_start_up_time_relative_to_bare_python():
    # Wall-clock bounds are noisy on a shared machine: compare with `python -c pass` measured in the
    # same run. Measured (docs/benchmarks.md, "Start-up time"): --help about 2x bare Python, validate
    # about 10x; importing torch alone is over 30x, so these bounds catch a heavy import at start-up.
    bare = _median_wall([sys.executable, "-c", "pass"])
    help_ = _median_wall(CLI + ["--help"])
    val = _median_wall(CLI + ["validate", "scenarios/homogeneous-8.yaml"])
    assert help_ < 4.0 * bare + 0.05, (help_, bare)
    assert val < 16.0 * bare + 0.1, (val, bare)
