"""The plan grid: ``--vary`` lists and plan files expanded into resolved points.

A plan is a base scenario, an ordered list of varied keys (dotted paths into
the scenario, e.g. ``workers.0.count``) each with a list of values, and a list
of synchronization policies. The grid is the product of the varied lists; each
grid point is evaluated under every policy, and S-SGD (``sync``) is always one
of them so that every row has a speed-up against synchronous SGD on the same
hardware.

Policy parameters the scenario does not give get these defaults (N = number
of workers at that grid point):

* ``backup``: ``aggregate = N − max(1, ⌊N/10⌋)`` (about 0.9·N, at least one
  backup worker; Chen et al. 2016 used ~5–10 % backups), and ``N`` when N = 1;
* ``k_async``: ``k = ⌈N/2⌉`` (halfway between A-SGD, K = 1, and S-SGD-like K = N);
* ``ssp``: ``bound = 3`` (a small bound, as in Ho et al. 2013);
* ``local_sgd``, ``diloco``, ``streaming_diloco``, ``async_diloco``: the
  schema's defaults (H = 8; streaming_diloco P = 1 unless given, e.g.
  ``--vary policy.fragments=2,4``). For them ``updates`` counts outer updates,
  so compare them with other policies under ``--time`` (docs/diloco.md).
  When the scenario's own policy is one of them, the others take its
  ``inner_steps`` and ``algorithm``.

When a policy kind equals the scenario's own ``policy.kind``, the scenario's
parameters are kept. Varied ``policy.*`` keys apply to the policies whose
schema has that field (``policy.aggregate`` to ``backup``) and leave the others
as they are; a ``policy.*`` key no selected policy has is an error.

Every point's scenario is validated here, before any work starts, so a bad
key path or value fails at once (``ScenarioError`` / ``InputError``, exit 2).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import _yaml
from ..errors import InputError, ScenarioError
from ..scenario import (DILOCO_KINDS, POLICY_KINDS, AllreducePolicy, AsyncDiLoCoPolicy, AsyncPolicy, BackupPolicy, DiLoCoPolicy,
                        KAsyncPolicy, LocalSGDPolicy, RoundRobinPolicy, Scenario, SSPPolicy, StreamingDiLoCoPolicy,
                        SyncPolicy, load_scenario, set_dotted, validate_scenario)

__all__ = ["PlanSpec", "GridPoint", "Task", "parse_vary", "parse_value", "parse_policies", "expand",
           "load_plan_file", "policy_defaults", "POINT_FORMAT"]

#: Bump when the meaning of a stored point result changes (old results are then recomputed).
POINT_FORMAT = 2

_POLICY_MODELS = {"async": AsyncPolicy, "sync": SyncPolicy, "backup": BackupPolicy, "k_async": KAsyncPolicy,
                  "ssp": SSPPolicy, "round_robin": RoundRobinPolicy, "allreduce": AllreducePolicy,
                  "local_sgd": LocalSGDPolicy, "diloco": DiLoCoPolicy, "streaming_diloco": StreamingDiLoCoPolicy,
                  "async_diloco": AsyncDiLoCoPolicy}

#: the S-SGD baselines a plan can compare against
BASELINES = ("sync", "allreduce")

#: Keys a plan file may hold (anything else is an error, so typos are caught).
PLAN_FILE_KEYS = ("scenario", "vary", "policies", "updates", "time", "seed", "base_lr", "sharpness",
                  "lr_fraction", "optimizer", "momentum", "criteria", "train", "target", "steps", "batch_size",
                  "backend", "ray_address", "workers", "out", "engine", "baseline", "deadline", "budget",
                  "until_target")


def policy_defaults(kind: str, n_workers: int) -> dict[str, Any]:
    """Default parameters of policy ``kind`` for ``n_workers`` workers (see the module docstring)."""
    n = int(n_workers)
    if kind == "backup":
        return {"aggregate": n if n <= 1 else n - max(1, n // 10)}
    if kind == "k_async":
        return {"k": max(1, math.ceil(n / 2))}
    if kind == "ssp":
        return {"bound": 3}
    return {}


# ---------------------------------------------------------------- parsing
def parse_value(text: str, *, key: str = "") -> Any:
    """One ``--vary`` value read as a YAML scalar: ``8`` → int, ``2.5``/``1e-3`` → float, else a string."""
    raw = text.strip()
    if not raw:
        raise InputError(f"--vary {key}: empty value")
    try:
        v = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise InputError(f"--vary {key}: cannot read value {raw!r}") from None
    if isinstance(v, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; a number is what anyone means.
        try:
            v = float(raw)
        except ValueError:
            pass
    if v is None or isinstance(v, (list, dict)) or not isinstance(v, (bool, int, float, str)):
        raise InputError(f"--vary {key}: value {raw!r} is not a scalar (number or word)")
    if isinstance(v, float) and not math.isfinite(v):
        raise InputError(f"--vary {key}: value {raw!r} is not finite")
    return v


def _check_key(key: str) -> str:
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise InputError(f"--vary: bad key path {key!r} (use dotted paths like workers.0.count)")
    if key == "policy.kind" or key == "policy":
        raise InputError("--vary policy.kind: choose policies with --policies, not --vary")
    if key.split(".")[0] == "seed":
        raise InputError("--vary seed: all points share one seed (common random numbers); use --seed")
    return key


def parse_vary(spec: str) -> tuple[str, list[Any]]:
    """``"workers.0.count=4,8,16"`` → ``("workers.0.count", [4, 8, 16])``."""
    if "=" not in spec:
        raise InputError(f"--vary {spec!r}: expected KEY=V1,V2,...")
    key, _, vals = spec.partition("=")
    key = _check_key(key)
    values = [parse_value(v, key=key) for v in vals.split(",")]
    _check_values(key, values)
    return key, values


def _check_values(key: str, values: list[Any]) -> None:
    if not values:
        raise InputError(f"--vary {key}: no values")
    seen = set()
    for v in values:
        marker = (type(v).__name__, v)
        if marker in seen:
            raise InputError(f"--vary {key}: value {v!r} given twice")
        seen.add(marker)


def parse_policies(spec: str | list[str] | None, scenario_kind: str, baseline: str = "sync") -> list[str]:
    """Policy kinds to compare, the ``baseline`` always included (default: the scenario's own kind
    and the baseline)."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        kinds = [scenario_kind]
    else:
        kinds = [k.strip() for k in (spec.split(",") if isinstance(spec, str) else spec)]
    out: list[str] = []
    for k in kinds:
        if k not in POLICY_KINDS:
            raise InputError(f"--policies: unknown policy {k!r} (use {', '.join(POLICY_KINDS)})")
        if k not in out:
            out.append(k)
    if baseline not in out:
        out.append(baseline)
    return out


# ---------------------------------------------------------------- the plan
@dataclass
class PlanSpec:
    """Everything that defines a plan (from the command line or a plan file)."""

    scenario: Scenario
    scenario_source: str = "<scenario>"
    vary: list[tuple[str, list[Any]]] = field(default_factory=list)
    policies: list[str] | None = None
    updates: int | None = None
    time: float | None = None
    seed: int | None = None
    base_lr: float | None = None
    sharpness: float | None = None
    lr_fraction: float = 0.5
    optimizer: str = "sgd"
    momentum: float = 0.0
    train: str | None = None          # "DATASET" or "DATASET/MODEL"
    target: float | None = None
    steps: int | None = None
    batch_size: int = 32
    engine: str = "auto"
    criteria: tuple[str, ...] | str | None = None   # default: all three
    #: the S-SGD every speed-up is measured against: sync (through the parameter
    #: server) or allreduce (collectives); default allreduce when the scenario has
    #: a network, else sync
    baseline: str | None = None
    #: with --train: report the cheapest row reaching the target within this many simulated
    #: seconds, and the fastest whose cost to target is within this budget
    deadline: float | None = None
    budget: float | None = None
    #: with --train and --time: replay only as far as the target (prefixes of doubling length)
    until_target: bool = False

    CRITERIA = ("mean", "mean-square", "trace")

    def __post_init__(self):
        for name in ("time", "base_lr", "sharpness", "lr_fraction", "momentum", "target"):
            v = getattr(self, name)
            if isinstance(v, bool) or (v is not None and not isinstance(v, (int, float))):
                raise InputError(f"--{name.replace('_', '-')} must be a number, got {v!r}")
            if v is not None and not math.isfinite(v):
                raise InputError(f"--{name.replace('_', '-')} must be a finite number, got {v}")
        for name in ("updates", "steps", "seed", "batch_size"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise InputError(f"--{name.replace('_', '-')} must be an integer, got {v!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.target is not None and self.target < 0:
            raise InputError(f"--target must be a training loss >= 0, got {self.target}")
        if self.base_lr is not None and self.sharpness is not None:
            raise InputError("give --base-lr or --sharpness, not both")
        if self.base_lr is not None and not (self.base_lr > 0 and math.isfinite(self.base_lr)):
            raise InputError(f"--base-lr must be > 0, got {self.base_lr}")
        if self.sharpness is not None and not (self.sharpness > 0 and math.isfinite(self.sharpness)):
            raise InputError(f"--sharpness must be > 0, got {self.sharpness}")
        if not (0 < self.lr_fraction <= 1):
            raise InputError(f"--lr-fraction must be in (0, 1], got {self.lr_fraction}")
        if self.updates is not None and self.updates < 1:
            raise InputError(f"--updates must be >= 1, got {self.updates}")
        if self.time is not None and not self.time > 0:
            raise InputError(f"--time must be > 0, got {self.time}")
        if self.updates is not None and self.time is not None:
            raise InputError("give --updates or --time, not both")
        if self.seed is not None and self.seed < 0:
            raise InputError(f"--seed must be >= 0, got {self.seed}")
        if self.train is not None and self.target is None:
            raise InputError("--train needs --target LOSS")
        if self.target is not None and self.train is None:
            raise InputError("--target needs --train DATASET/MODEL")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps must be >= 1, got {self.steps}")
        if self.optimizer not in ("sgd", "momentum", "shifted"):
            raise InputError(f"--optimizer must be sgd, momentum or shifted, got {self.optimizer!r}")
        crit = self.criteria
        if crit is None:
            crit = self.CRITERIA
        elif isinstance(crit, str):
            crit = [c.strip() for c in crit.split(",") if c.strip()]
        crit = tuple(dict.fromkeys(crit))
        bad = [c for c in crit if c not in self.CRITERIA]
        if bad or not crit:
            raise InputError(f"--criterion: use one or more of {', '.join(self.CRITERIA)}"
                             + (f", got {bad[0]!r}" if bad else ""))
        self.criteria = tuple(c for c in self.CRITERIA if c in crit)
        keys = [k for k, _ in self.vary]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise InputError(f"--vary {sorted(dup)[0]} given twice")
        if self.until_target:
            if self.train is None:
                raise InputError("--until-target needs --train DATASET/MODEL and --target LOSS")
            if self.time is None:
                raise InputError("--until-target needs --time CAP: every point is simulated for the same CAP "
                                 "seconds and trained until the target or the end of its trace")
        for name in ("deadline", "budget"):
            v = getattr(self, name)
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                    raise InputError(f"--{name} must be a finite number > 0, got {v!r}")
                if self.train is None:
                    raise InputError(f"--{name} needs --train DATASET/MODEL and --target LOSS (it is about the "
                                     f"time to reach the target)")
        if self.budget is not None and self.scenario.cost_per_worker_hour is None and \
                all(g.cost_per_hour is None for g in self.scenario.workers):
            raise InputError("--budget needs prices: cost_per_hour in the worker groups or cost_per_worker_hour")
        if self.baseline is None:
            self.baseline = "allreduce" if self.scenario.network is not None else "sync"
        if self.baseline not in BASELINES:
            raise InputError(f"--baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        self.policies = parse_policies(self.policies, self.scenario.policy.kind, self.baseline)

    @property
    def run_seed(self) -> int:
        return int(self.seed if self.seed is not None else self.scenario.seed)

    @property
    def vary_keys(self) -> list[str]:
        return [k for k, _ in self.vary]

    def train_spec(self) -> tuple[str, str | None] | None:
        """``(dataset, model)`` from ``--train DATASET/MODEL`` (the model after the last ``/``
        when it names a model; ``quadratic`` needs none)."""
        if self.train is None:
            return None
        return split_train(self.train)

    def settings(self, sharpness: float | None = None) -> dict[str, Any]:
        """The non-scenario settings that change a point's result (part of its key)."""
        tr = self.train_spec()
        a = self.sharpness if self.sharpness is not None else sharpness
        return {
            "updates": self.updates,
            "time": self.time,
            "seed": self.run_seed,
            "engine": self.engine,
            "base_lr": self.base_lr,
            "sharpness": None if a is None else _round_sig(a),
            "lr_fraction": self.lr_fraction,
            "optimizer": self.optimizer,
            "momentum": self.momentum,
            "criteria": list(self.criteria),
            "train": None if tr is None else {"dataset": tr[0], "model": tr[1], "target": self.target,
                                              "steps": self.steps, "batch_size": self.batch_size,
                                              **({"until_target": True} if self.until_target else {})},
        }

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario_source, "vary": {k: v for k, v in self.vary},
                "policies": list(self.policies or []), **{k: v for k, v in self.settings().items()
                                                          if k != "train"},
                "train": self.train, "target": self.target, "steps": self.steps}


_MODEL_PREFIXES = ("linear", "mlp", "cnn")


def split_train(spec: str) -> tuple[str, str | None]:
    """``"teacher/mlp:32"`` → ``("teacher", "mlp:32")``; ``"quadratic"`` → ``("quadratic", None)``."""
    spec = spec.strip()
    if not spec:
        raise InputError("--train: empty dataset")
    head, sep, tail = spec.rpartition("/")
    if sep and tail.split(":")[0] in _MODEL_PREFIXES and head:
        return head, tail
    return spec, None


def _round_sig(x: float, sig: int = 10) -> float:
    """Round to ``sig`` significant digits so a re-measured number keys the same stored point."""
    return float(f"{float(x):.{sig}g}")


@dataclass(frozen=True)
class Task:
    """One unit of work: a resolved scenario under one policy, plus the run settings."""

    key: str
    scenario: dict[str, Any]
    settings: dict[str, Any]


@dataclass
class GridPoint:
    """One row of the results table: the varied values, the policy, and the task computing it."""

    index: int                      # grid point number (same for all policies at that point)
    values: dict[str, Any]          # varied key -> value
    policy: str
    task: Task

    @property
    def n_workers(self) -> int:
        return sum(int(g["count"]) for g in self.task.scenario["workers"])


def point_key(scenario: dict[str, Any], settings: dict[str, Any]) -> str:
    """Stable hash of what determines a point's result (the scenario's name/description excluded)."""
    sc = {k: v for k, v in scenario.items() if k not in ("name", "description")}
    blob = json.dumps({"format": POINT_FORMAT, "scenario": sc, "settings": settings},
                      sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


#: the DiLoCo family's fields that one kind of the family hands to another in a plan
_DILOCO_SHARED = ("inner_steps", "algorithm")


def _policy_fields(kind: str) -> set[str]:
    fields = set(_POLICY_MODELS[kind].model_fields) - {"kind"}
    if kind in DILOCO_KINDS and kind != "streaming_diloco":
        fields -= {"fragments", "mixing"}  # (streaming_diloco's alone)
    return fields


def expand(plan: PlanSpec, sharpness: float | None = None) -> list[GridPoint]:
    """The grid points of ``plan`` (product of the varied lists) × its policies, validated.

    Raises ScenarioError naming the key path (and the grid values) when a point is invalid.
    """
    base = plan.scenario.to_dict()
    settings = plan.settings(sharpness)
    policies = list(plan.policies or [])
    policy_keys = [k for k in plan.vary_keys if k.split(".")[0] == "policy"]
    for k in policy_keys:
        fld = k.split(".")[1]
        owners = [p for p in policies if fld in _policy_fields(p)]
        if not owners or len(k.split(".")) != 2:
            have = {p: sorted(_policy_fields(p)) for p in policies if _policy_fields(p)}
            raise ScenarioError(f"no selected policy has this field (policies with fields: {have or 'none'})",
                                file=plan.scenario_source, field=k)
    combos = list(itertools.product(*[vals for _, vals in plan.vary])) if plan.vary else [()]
    points: list[GridPoint] = []
    for gi, combo in enumerate(combos):
        values = dict(zip(plan.vary_keys, combo))
        where = ", ".join(f"{k}={v}" for k, v in values.items())
        data = copy.deepcopy(base)
        for k, v in values.items():
            if k not in policy_keys:
                set_dotted(data, k, v, source=plan.scenario_source)
        try:
            n = sum(int(g["count"]) for g in data["workers"])
        except (KeyError, TypeError, ValueError):
            n = None  # validation below names the bad field
        for kind in policies:
            d = copy.deepcopy(data)
            if kind == base["policy"]["kind"]:
                pol = copy.deepcopy(base["policy"])
            else:
                pol = {"kind": kind, **(policy_defaults(kind, n) if n else {})}
                if kind in DILOCO_KINDS and base["policy"]["kind"] in DILOCO_KINDS:
                    # the family shares the scenario's H (streaming's must stay a multiple of P)
                    pol.update({f: base["policy"][f] for f in _DILOCO_SHARED if f in base["policy"]})
            for k, v in values.items():
                if k in policy_keys and k.split(".")[1] in _policy_fields(kind):
                    pol[k.split(".")[1]] = v
            # a default that no longer fits a varied N (e.g. the scenario's own aggregate) is clipped
            if n and kind == "backup" and "policy.aggregate" not in values:
                pol["aggregate"] = min(int(pol.get("aggregate", n)), n)
            if n and kind == "k_async" and "policy.k" not in values:
                pol["k"] = min(int(pol.get("k", n)), n)
            d["policy"] = pol
            if plan.updates is not None:
                d["stop"] = {"updates": int(plan.updates)}
            elif plan.time is not None:
                d["stop"] = {"time": float(plan.time)}
            d["seed"] = plan.run_seed
            try:
                sc = validate_scenario(d, source=plan.scenario_source)
            except ScenarioError as exc:
                msg = exc.reason + (f" (at {where}, policy {kind})" if where else f" (policy {kind})")
                raise ScenarioError(msg, file=exc.file, field=exc.field) from None
            resolved = sc.to_dict()
            points.append(GridPoint(gi, values, kind, Task(point_key(resolved, settings), resolved, settings)))
    return points


# ---------------------------------------------------------------- plan files
def load_plan_file(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Read a plan file (YAML mapping) and return its checked contents and its folder.

    ``scenario`` is a path (relative to the plan file) or an inline mapping; ``vary`` a
    mapping ``key: [values]`` (or ``key: "v1,v2"``); ``policies`` a list or a comma string.
    """
    p = Path(path)
    name = str(path)
    if not p.is_file():
        raise InputError(f"{name}: " + ("not a regular file" if p.exists() else "no such plan file"))
    try:
        data = _yaml.read(p.read_text(encoding="utf-8")).data
    except _yaml.YamlProblem as exc:
        raise InputError(f"{name}: {exc} (not a readable YAML plan file)") from None
    except UnicodeDecodeError:
        raise InputError(f"{name}: not a UTF-8 text file") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise InputError(f"{name}: a plan file must be a mapping with scenario:, vary:, policies:, ...")
    unknown = sorted((str(k) for k in data if k not in PLAN_FILE_KEYS), key=str)
    if unknown:
        what = unknown[0] if _yaml.is_name(unknown[0]) else "a key that is not a name"  # (never quote a file)
        raise InputError(f"{name}: {what}: unknown key (plan files take {', '.join(PLAN_FILE_KEYS)})")
    if "scenario" not in data:
        raise InputError(f"{name}: scenario: missing (a scenario file path or an inline mapping)")
    vary = data.get("vary") or {}
    if not isinstance(vary, dict):
        raise InputError(f"{name}: vary: must be a mapping of key paths to lists of values")
    out_vary = []
    for k, vals in vary.items():
        k = _check_key(str(k))
        if isinstance(vals, str):
            vals = [parse_value(v, key=k) for v in vals.split(",")]
        elif isinstance(vals, (int, float, bool)):
            vals = [vals]
        elif isinstance(vals, list):
            for v in vals:
                if v is None or isinstance(v, (list, dict)):
                    raise InputError(f"{name}: vary.{k}: value {v!r} is not a scalar")
        else:
            raise InputError(f"{name}: vary.{k}: must be a list of values")
        _check_values(k, list(vals))
        out_vary.append((k, list(vals)))
    data = dict(data)
    data["vary"] = out_vary
    train = data.get("train")
    if isinstance(train, dict):  # train: {dataset: teacher, model: "mlp:32", target: 0.1, steps: 500}
        extra = sorted(set(train) - {"dataset", "model", "target", "steps", "batch_size"})
        if extra or "dataset" not in train:
            raise InputError(f"{name}: train: takes dataset, model, target, steps, batch_size")
        spec = str(train["dataset"]) + (f"/{train['model']}" if train.get("model") else "")
        for k in ("target", "steps", "batch_size"):
            if k in train:
                data.setdefault(k, train[k])
        data["train"] = spec
    return data, p.resolve().parent


def scenario_from_plan(data: dict[str, Any], base_dir: Path, plan_name: str) -> tuple[Scenario, str]:
    """The base scenario a plan file names (path relative to the plan file, or inline)."""
    sc = data["scenario"]
    if isinstance(sc, dict):
        return validate_scenario(sc, source=f"{plan_name}: scenario"), f"{plan_name}: scenario"
    if not isinstance(sc, str):
        raise InputError(f"{plan_name}: scenario: must be a file path or a mapping")
    path = Path(sc)
    if not path.is_absolute():
        path = base_dir / path
    return load_scenario(path), str(sc)
