"""pytest plugin: test optimizers and training code under simulated stochastic delay.

Registered through the ``pytest11`` entry point, so any project with asyncsim installed gets
the ``cluster_trace`` fixture::

    def test_my_lr_is_stable(cluster_trace):
        trace = cluster_trace("async:N=16,compute=lognormal(1,0.3)", updates=2000, seed=1)
        assert_stable(trace, lr=0.05, dataset="digits", model="mlp:64", optimizer="momentum",
                      momentum=0.9)

    from asyncsim.testing import assert_stable, assert_diverges

Your own model works the same way (``model=<nn.Module>, loss=..., dataset=(X, y)``,
``batch_size=None`` for full batch); see the docs page "Your own model".

One-line cluster specs: ``KIND:key=value,...`` with KIND a policy (``async``, ``sync``,
``round_robin``, ``backup``, ``k_async``, ``ssp``) and keys ``N`` (workers), ``compute``
(a distribution ``name(args)`` with DESIGN.md's parameters in order: ``constant(value)``,
``exponential(mean)``, ``shifted_exponential(shift,mean)``, ``lognormal(mean,cv)``,
``gamma(mean,cv)``, ``uniform(low,high)``, ``normal(mean,std)``, ``weibull(shape,scale)``,
``pareto(shape,scale)``; keyword form ``lognormal(mean=1,cv=0.3)`` too), ``K`` (k_async's k,
backup's aggregate), ``bound`` (ssp) and ``seed``. A path to a scenario file works as well.

Everything heavy (torch, the simulator) is imported inside the functions: pytest imports this
module for every test run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DIST_PARAMS: dict[str, tuple[str, ...]] = {
    "constant": ("value",),
    "exponential": ("mean",),
    "shifted_exponential": ("shift", "mean"),
    "lognormal": ("mean", "cv"),
    "gamma": ("mean", "cv"),
    "uniform": ("low", "high"),
    "normal": ("mean", "std"),
    "weibull": ("shape", "scale"),
    "pareto": ("shape", "scale"),
}
POLICIES = ("async", "sync", "round_robin", "backup", "k_async", "ssp")


def _err(msg: str):
    from .errors import InputError

    return InputError(msg)


def _split_top(s: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise _err(f"unbalanced parentheses in {s!r}")
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise _err(f"unbalanced parentheses in {s!r}")
    if cur or out:
        out.append("".join(cur).strip())
    return [p for p in out if p]


def _number(v: str, what: str) -> float | int:
    try:
        f = float(v)
    except ValueError:
        raise _err(f"{what}: expected a number, got {v!r}") from None
    return int(f) if re.fullmatch(r"[+-]?\d+", v.strip()) else f


def parse_distribution(text: str) -> dict[str, Any]:
    """``lognormal(1,0.3)`` → ``{"dist": "lognormal", "mean": 1, "cv": 0.3}``."""
    m = re.fullmatch(r"\s*([a-z_]+)\s*\((.*)\)\s*", text)
    if not m:
        raise _err(f"bad distribution {text!r} (expected name(args), e.g. exponential(1.0))")
    name, args = m.group(1), m.group(2)
    if name not in DIST_PARAMS:
        raise _err(f"unknown distribution {name!r} (use {', '.join(DIST_PARAMS)})")
    names = DIST_PARAMS[name]
    parts = _split_top(args)
    out: dict[str, Any] = {"dist": name}
    pos = 0
    for p in parts:
        if "=" in p:
            k, v = (s.strip() for s in p.split("=", 1))
            if k not in names:
                raise _err(f"{name}: unknown parameter {k!r} (parameters: {', '.join(names)})")
            out[k] = _number(v, f"{name}.{k}")
        else:
            if pos >= len(names):
                raise _err(f"{name} takes {len(names)} parameters ({', '.join(names)}), got {len(parts)}")
            out[names[pos]] = _number(p, f"{name}.{names[pos]}")
            pos += 1
    missing = [n for n in names if n not in out]
    if missing:
        raise _err(f"{name}: missing parameter(s) {', '.join(missing)}")
    return out


def parse_cluster_spec(spec: str, *, updates: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """A scenario dict (DESIGN.md schema) from a one-line spec like
    ``"async:N=16,compute=lognormal(1,0.3)"`` (see the module docstring)."""
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.strip().lower().replace("-", "_")
    if kind not in POLICIES:
        raise _err(f"unknown policy {kind!r} in {spec!r} (use {', '.join(POLICIES)})")
    n = None
    compute: dict[str, Any] = {"dist": "exponential", "mean": 1.0}
    policy: dict[str, Any] = {"kind": kind}
    sc_seed = 0
    for item in _split_top(rest):
        if "=" not in item:
            raise _err(f"bad item {item!r} in {spec!r} (expected key=value)")
        k, v = (s.strip() for s in item.split("=", 1))
        kl = k.lower()
        if kl in ("n", "workers"):
            n = int(_number(v, "N"))
        elif kl == "compute":
            compute = parse_distribution(v)
        elif kl in ("k", "aggregate"):
            if kind == "k_async":
                policy["k"] = int(_number(v, "K"))
            elif kind == "backup":
                policy["aggregate"] = int(_number(v, "K"))
            else:
                raise _err(f"K applies to k_async and backup, not {kind}")
        elif kl in ("bound", "s"):
            if kind != "ssp":
                raise _err(f"bound applies to ssp, not {kind}")
            policy["bound"] = int(_number(v, "bound"))
        elif kl == "seed":
            sc_seed = int(_number(v, "seed"))
        else:
            raise _err(f"unknown key {k!r} in {spec!r} (use N, compute, K, bound, seed)")
    if n is None or n < 1:
        raise _err(f"{spec!r}: give the number of workers, e.g. N=8")
    sc = {
        "name": re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.strip())[:80] or "cluster",
        "seed": int(seed) if seed is not None else sc_seed,
        "workers": [{"count": n, "compute": compute}],
        "policy": policy,
    }
    if updates is not None:
        sc["stop"] = {"updates": int(updates)}
    return sc


def make_cluster_trace(spec: str | Path | dict, updates: int = 1000, seed: int | None = None, **kwargs):
    """Simulate a cluster from a one-line spec, a scenario file or a scenario dict; return its Trace."""
    import asyncsim

    if isinstance(spec, dict):
        sc = dict(spec)
        if seed is not None:
            sc["seed"] = seed
    elif isinstance(spec, Path) or (isinstance(spec, str) and (spec.endswith((".yaml", ".yml", ".json"))
                                                             or Path(spec).is_file())):
        sc = asyncsim.load_scenario(spec)
    else:
        sc = parse_cluster_spec(spec, updates=updates, seed=seed)
    return asyncsim.simulate(sc, updates=updates, seed=seed, **kwargs)


def _replay(trace, lr, kwargs):
    from .train import replay

    model = kwargs.get("model")
    if model is not None and not isinstance(model, str):
        import copy

        kwargs = dict(kwargs, model=copy.deepcopy(model))  # the caller's module is not changed
    return replay(trace, lr=lr, **kwargs)


def _describe(r) -> str:
    return (f"{r.optimizer} lr={r.lr:g} on {r.dataset}{'/' + r.model if r.model else ''} "
            f"({r.steps} updates replayed, initial loss {r.initial_loss:.6g}, "
            f"highest logged {float(max(r.loss)) if len(r.loss) else float('nan'):.6g})")


def assert_stable(trace, lr: float, *, max_loss_ratio: float | None = None, allow_unstable: bool = False,
                  **replay_kwargs):
    """Replay ``trace`` (keywords as :func:`asyncsim.train.replay`: ``dataset``, ``model`` — a
    name or your own ``nn.Module``, with ``loss`` —, ``optimizer`` — a name or a factory
    ``params -> torch.optim.Optimizer`` —, ``batch_size`` (None: full batch), ``momentum``,
    ``weight_decay``, ``schedule``…) and fail unless the verdict is ``converged`` (with
    ``allow_unstable=True``: unless it diverged) and, with ``max_loss_ratio``, unless
    final/initial loss ≤ it. A module passed as ``model`` is copied, not changed.
    Returns the :class:`~asyncsim.train.TrainResult`."""
    r = _replay(trace, lr, replay_kwargs)
    if r.diverged:
        raise AssertionError(f"expected stable, but diverged at update {r.diverged_step} with loss "
                             f"{r.final_loss:.6g}: {_describe(r)}")
    if r.verdict == "unstable" and not allow_unstable:
        raise AssertionError(f"expected stable, but the run is unstable (final loss {r.final_loss:.6g} at "
                             f"update {r.steps}): {_describe(r)}")
    if max_loss_ratio is not None and not (r.final_loss <= max_loss_ratio * r.initial_loss):
        raise AssertionError(f"final loss {r.final_loss:.6g} at update {r.steps} exceeds "
                             f"{max_loss_ratio:g} × initial: {_describe(r)}")
    return r


def assert_diverges(trace, lr: float, **replay_kwargs):
    """Replay ``trace`` and fail unless it diverges; reports the final update and loss otherwise.
    A module passed as ``model`` is copied, not changed."""
    r = _replay(trace, lr, replay_kwargs)
    if not r.diverged:
        raise AssertionError(f"expected divergence, but after {r.steps} updates the loss is "
                             f"{r.final_loss:.6g} ({r.verdict}): {_describe(r)}")
    return r


@pytest.fixture
def cluster_trace():
    """Factory fixture: ``cluster_trace(spec_or_scenario_path, updates=1000, seed=None) -> Trace``.

    Skips the test when this asyncsim build has no simulator."""
    def make(spec, updates: int = 1000, seed: int | None = None, **kwargs):
        try:
            import asyncsim.engine as eng  # noqa: F401
            if not hasattr(eng, "simulate"):
                raise ImportError("asyncsim.engine.simulate is not available")
        except ImportError as exc:
            pytest.skip(f"asyncsim simulator unavailable: {exc}")
        return make_cluster_trace(spec, updates=updates, seed=seed, **kwargs)

    return make
