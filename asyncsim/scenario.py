"""Scenario files: the cluster, the network, the policy and when to stop.

A scenario is YAML read with ``yaml.safe_load`` (through :mod:`asyncsim._yaml`:
duplicate keys and deep nesting are errors) and validated by frozen
pydantic models (``extra="forbid"``; discriminated unions on ``dist``,
``kind`` and ``topology``), so a typo or a misplaced parameter is an error
naming the field. Every problem becomes a :class:`~asyncsim.errors.ScenarioError`
reading ``<file>: <field.path>: <what is wrong>``.

Core schema (every field: docs/reference/scenario.md)::

    name: homogeneous-8
    seed: 1
    workers:
      - count: 8
        compute: {dist: exponential, mean: 0.4}
    network: {topology: star, bandwidth_gbps: 10, latency: {dist: constant, value: 0.0005}}
    model: {parameters: 25_000_000, bytes_per_parameter: 4}
    server: {apply: {dist: constant, value: 0.001}}
    policy: {kind: async}
    stop: {updates: 100000}
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import Field, ValidationError, model_validator

from . import _yaml
from ._strict import BOOLEAN_MESSAGE, StrictModel, is_boolean
from .distributions import Constant, DistributionSpec
from .errors import ScenarioError
from .faults import FAULT_KINDS, Crash, FaultSpec, LinkFault, RandomCrash, Restart, Slowdown

__all__ = ["Scenario", "load_scenario", "scenario_json_schema", "POLICY_KINDS"]


#: worker ids are int32 in traces (DESIGN.md)
MAX_WORKERS = 2**31 - 1


class _Model(StrictModel):
    """Frozen, extra keys forbidden, finite floats, no booleans as numbers (see asyncsim._strict)."""


# ------------------------------------------------------------------- workers
class WorkerGroup(_Model):
    """A group of identical workers."""

    name: Optional[str] = Field(default=None, description="Label for reports (default: group<i>).")
    count: int = Field(ge=1, le=MAX_WORKERS, description="Number of workers in the group.")
    compute: DistributionSpec = Field(description="Seconds to compute one minibatch gradient.")
    bandwidth_gbps: Optional[float] = Field(
        default=None, gt=0, description="NIC bandwidth of these workers (default: network.bandwidth_gbps).")
    placement: Optional[Union[str, int, list[Union[str, int]]]] = Field(
        default=None,
        description="Where the workers sit: a rack index (two_tier) or node name (custom); one value for "
        "the whole group or one per worker. Default: two_tier fills racks in order; custom requires it.",
    )
    cost_per_hour: Optional[float] = Field(
        default=None, ge=0,
        description="Price of one of these workers for one hour, in the scenario's currency "
        "(default: the scenario's cost_per_worker_hour).")
    gpus_per_node: int = Field(
        default=1, ge=1,
        description="Workers (GPUs) per machine: consecutive workers of the group share a node, linked by "
        "network.intra_node_gbps; each keeps its own NIC. Must divide count.")


# ------------------------------------------------------------------- network
_SHARING_DOC = ("How transfers share links: 'fair' (flows share every link direction max-min fairly, "
                "rates recomputed when a flow starts or ends) or 'circuit' (a transfer holds its whole path "
                "exclusively at the path's smallest bandwidth). See docs/transfer-model.md.")


class _NetworkBase(_Model):
    bandwidth_gbps: float = Field(gt=0, description="Bandwidth of each link, Gbit/s (per direction).")
    sharing: Literal["fair", "circuit"] = Field(default="fair", description=_SHARING_DOC)
    latency: DistributionSpec = Field(
        default_factory=lambda: Constant(value=0.0),
        description="Propagation latency of each link hop, seconds (sampled per hop per transfer).")
    server_bandwidth_gbps: Optional[float] = Field(
        default=None, gt=0, description="Bandwidth of the server's link (default: bandwidth_gbps).")
    intra_node_gbps: Optional[float] = Field(
        default=None, gt=0,
        description="Per-GPU bandwidth inside a node (NVLink-class), Gbit/s per direction: transfers "
        "between GPUs of one node use these links only. Needed when a group has gpus_per_node > 1.")
    intra_node_latency: DistributionSpec = Field(
        default_factory=lambda: Constant(value=0.0),
        description="Latency of each intra-node hop, seconds.")


class StarNetwork(_NetworkBase):
    """One switch; every worker and the server hang off it by their own full-duplex link."""

    topology: Literal["star"] = "star"


class TwoTierNetwork(_NetworkBase):
    """Racks of workers behind top-of-rack switches whose uplinks to the core are oversubscribed.

    The server hangs off the core switch."""

    topology: Literal["two_tier"] = "two_tier"
    racks: int = Field(ge=1, description="Number of racks.")
    oversubscription: float = Field(
        default=1.0, ge=1.0,
        description="Rack uplink bandwidth = (workers in rack × NIC bandwidth) / oversubscription.")
    uplink_gbps: Optional[float] = Field(default=None, gt=0, description="Explicit rack uplink bandwidth.")


class Edge(_Model):
    """One full-duplex link of a custom topology."""

    u: str
    v: str
    bandwidth_gbps: float = Field(gt=0)
    latency: Optional[DistributionSpec] = Field(default=None, description="Default: network.latency.")


class CustomNetwork(_Model):
    """An explicit edge list; workers are placed on nodes with ``placement``."""

    topology: Literal["custom"] = "custom"
    edges: tuple[Edge, ...] = Field(min_length=1)
    server: str = Field(description="Node the parameter server sits on.")
    latency: DistributionSpec = Field(default_factory=lambda: Constant(value=0.0))
    bandwidth_gbps: Optional[float] = Field(default=None, gt=0, description="Unused; for plan sweeps.")
    sharing: Literal["fair", "circuit"] = Field(default="fair", description=_SHARING_DOC)
    intra_node_gbps: Optional[float] = Field(
        default=None, gt=0, description="Per-GPU bandwidth inside a node, Gbit/s (see star).")
    intra_node_latency: DistributionSpec = Field(
        default_factory=lambda: Constant(value=0.0), description="Latency of each intra-node hop, seconds.")


NetworkSpec = Annotated[Union[StarNetwork, TwoTierNetwork, CustomNetwork], Field(discriminator="topology")]


class ModelSize(_Model):
    parameters: int = Field(gt=0, description="Number of model parameters.")
    bytes_per_parameter: float = Field(default=4.0, gt=0, description="Bytes per parameter on the wire.")

    @property
    def bytes(self) -> float:
        return self.parameters * self.bytes_per_parameter


class Server(_Model):
    apply: DistributionSpec = Field(
        default_factory=lambda: Constant(value=0.0), description="Seconds to apply one update.")


# ------------------------------------------------------------------ policies
class AsyncPolicy(_Model):
    """A-SGD: apply each gradient on arrival; the worker then pulls and continues."""

    kind: Literal["async"] = "async"


class SyncPolicy(_Model):
    """S-SGD: wait for all N gradients, apply their mean."""

    kind: Literal["sync"] = "sync"
    timeout: Optional[float] = Field(
        default=None, gt=0, description="Proceed with the gradients at hand after this many seconds (faults).")


class BackupPolicy(_Model):
    """Backup workers: wait for the first K of N, drop the rest, everyone restarts from the new version."""

    kind: Literal["backup"] = "backup"
    aggregate: int = Field(ge=1, description="K: gradients averaged per update.")


class KAsyncPolicy(_Model):
    """K-async: apply after any K gradients; each worker restarts as soon as it pushed."""

    kind: Literal["k_async"] = "k_async"
    k: int = Field(ge=1, description="K: gradients averaged per update.")


class SSPPolicy(_Model):
    """Stale-synchronous parallel: a worker may run at most ``bound`` clocks ahead of the slowest."""

    kind: Literal["ssp"] = "ssp"
    bound: int = Field(ge=0, description="s: the staleness bound in clocks.")


class RoundRobinPolicy(_Model):
    """The server takes pushes in fixed worker order: τ = N−1 exactly (the seed paper's model)."""

    kind: Literal["round_robin"] = "round_robin"


ALGORITHMS = ("ring", "tree", "halving_doubling", "hierarchical")


class AllreducePolicy(_Model):
    """S-SGD through all-reduce collectives (no parameter server): docs/synchronous-baselines.md."""

    kind: Literal["allreduce"] = "allreduce"
    algorithm: Literal["ring", "tree", "halving_doubling", "hierarchical"] = Field(
        default="ring", description="Collective algorithm: ring | tree | halving_doubling | hierarchical.")
    bucket_mb: Optional[float] = Field(
        default=None, gt=0,
        description="Gradient bucket size in MB (10^6 bytes); default: the whole model in one bucket.")
    overlap: bool = Field(
        default=True, description="Start each bucket's all-reduce as soon as the backward pass produced it.")
    backward_fraction: float = Field(
        default=0.667, ge=0, le=1,
        description="Share of each compute draw that is the backward pass (the rest is forward).")


INNER_OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


class _OuterSyncPolicy(_Model):
    """Fields shared by the local SGD / DiLoCo family (docs/diloco.md)."""

    inner_steps: int = Field(default=8, ge=1, description="H: inner steps per outer round (per fragment under "
                             "streaming: one fragment syncs every H/P inner steps).")
    outer_lr: float = Field(default=0.7, gt=0, description="η_o: the outer optimizer's learning rate.")
    outer_momentum: float = Field(default=0.9, ge=0, lt=1, description="μ: the outer optimizer's momentum.")
    nesterov: bool = Field(default=True, description="Nesterov outer momentum (else heavy-ball).")
    inner_optimizer: Literal["sgd", "momentum", "adam", "adamw"] = Field(
        default="adamw", description="The workers' optimizer for the inner steps (the trainer's; the inner lr "
        "is the run's lr): sgd | momentum | adam | adamw.")
    algorithm: Literal["ring", "tree", "halving_doubling", "hierarchical"] = Field(
        default="ring", description="Collective for the outer all-reduce: ring | tree | halving_doubling | "
        "hierarchical (async_diloco pushes to the server instead).")
    fragments: int = Field(default=1, ge=1, description="P: model fragments, synchronised on a staggered "
                           "schedule (streaming_diloco only; must divide inner_steps).")
    mixing: float = Field(default=0.0, ge=0, lt=1, description="streaming_diloco only: a worker merges a new "
                          "global fragment as mixing·local + (1 − mixing)·global (0: replace).")

    @model_validator(mode="after")
    def _family_checks(self):
        if self.kind != "streaming_diloco":
            if self.fragments != 1:
                raise _FieldError("policy.fragments", f"is for streaming_diloco only ({self.kind} syncs the "
                                  f"whole model): got {self.fragments}, must be 1")
            if self.mixing != 0.0:
                raise _FieldError("policy.mixing", f"is for streaming_diloco only ({self.kind} replaces the "
                                  f"local parameters): got {self.mixing}, must be 0")
        elif self.inner_steps % self.fragments:
            raise _FieldError("policy.fragments", f"P = {self.fragments} does not divide inner_steps "
                              f"(H = {self.inner_steps}): one fragment syncs every H/P inner steps")
        return self


class LocalSGDPolicy(_OuterSyncPolicy):
    """Local SGD: H inner SGD steps per worker, then the parameters are averaged (an all-reduce): DiLoCo
    with outer_lr 1, no outer momentum and SGD inner steps."""

    kind: Literal["local_sgd"] = "local_sgd"
    outer_lr: float = Field(default=1.0, gt=0, description="η_o: the outer optimizer's learning rate.")
    outer_momentum: float = Field(default=0.0, ge=0, lt=1, description="μ: the outer optimizer's momentum.")
    nesterov: bool = Field(default=False, description="Nesterov outer momentum (else heavy-ball).")
    inner_optimizer: Literal["sgd", "momentum", "adam", "adamw"] = Field(
        default="sgd", description="The workers' optimizer for the inner steps: sgd | momentum | adam | adamw.")


class DiLoCoPolicy(_OuterSyncPolicy):
    """DiLoCo: H inner AdamW steps per worker, an all-reduce of the pseudo-gradients, one outer Nesterov
    step; every worker then loads the new global parameters."""

    kind: Literal["diloco"] = "diloco"


class StreamingDiLoCoPolicy(_OuterSyncPolicy):
    """Streaming DiLoCo: P fragments, fragment p synchronised every H inner steps, staggered by H/P, its
    all-reduce overlapped with the following inner steps."""

    kind: Literal["streaming_diloco"] = "streaming_diloco"
    mixing: float = Field(default=0.5, ge=0, lt=1, description="A worker merges a new global fragment as "
                          "mixing·local + (1 − mixing)·global (0: replace).")


class AsyncDiLoCoPolicy(_OuterSyncPolicy):
    """Asynchronous DiLoCo: no barrier; each worker's pseudo-gradient is pushed to the parameter server and
    applied on arrival (stale by the outer updates applied meanwhile); the worker then pulls."""

    kind: Literal["async_diloco"] = "async_diloco"


#: the local SGD / DiLoCo family (outer synchronisation every H inner steps)
DILOCO_KINDS = ("local_sgd", "diloco", "streaming_diloco", "async_diloco")


PolicySpec = Annotated[
    Union[AsyncPolicy, SyncPolicy, BackupPolicy, KAsyncPolicy, SSPPolicy, RoundRobinPolicy, AllreducePolicy,
          LocalSGDPolicy, DiLoCoPolicy, StreamingDiLoCoPolicy, AsyncDiLoCoPolicy],
    Field(discriminator="kind"),
]
POLICY_KINDS = ("async", "sync", "backup", "k_async", "ssp", "round_robin", "allreduce", *DILOCO_KINDS)


class Stop(_Model):
    updates: Optional[int] = Field(default=None, ge=1, description="Stop after this many server updates.")
    time: Optional[float] = Field(default=None, gt=0, description="Stop at this simulated time, seconds.")

    @model_validator(mode="after")
    def _one(self):
        if self.updates is None and self.time is None:
            raise ValueError("give 'updates' or 'time'")
        return self


# ------------------------------------------------------------------ scenario
class Scenario(_Model):
    """A validated, immutable scenario."""

    name: str = Field(default="scenario", description="Scenario name (default: the file's stem).")
    description: Optional[str] = Field(default=None, description="Free text.")
    seed: int = Field(default=0, ge=0, description="Seed of the run's SeedSequence.")
    workers: tuple[WorkerGroup, ...] = Field(min_length=1, description="One or more worker groups.")
    network: Optional[NetworkSpec] = Field(default=None, description="Absent: transfers are instantaneous.")
    model: Optional[ModelSize] = Field(default=None, description="Transfer sizes (default: 0 bytes).")
    server: Server = Field(default_factory=Server, description="The parameter server (apply time).")
    policy: PolicySpec = Field(default_factory=AsyncPolicy, description="Synchronization policy (`kind:`).")
    stop: Stop = Field(default_factory=lambda: Stop(updates=10_000), description="When the run ends.")
    faults: tuple[FaultSpec, ...] = Field(
        default=(), description="Scheduled and random faults (crash, restart, slowdown, link, random_crash).")
    currency: str = Field(default="USD", min_length=1, max_length=12,
                          description="The currency of every price in the scenario (used in plan reports).")
    cost_per_worker_hour: Optional[float] = Field(
        default=None, ge=0, description="Price of one worker for one hour (turns time into money in plans).")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any):
        if isinstance(data, dict) and isinstance(data.get("network"), dict) and "topology" not in data["network"]:
            data = {**data, "network": {"topology": "star", **data["network"]}}
        return data

    @model_validator(mode="after")
    def _cross_checks(self):
        n = self.n_workers
        if n > MAX_WORKERS:  # worker ids are int32 in traces
            raise _FieldError("workers", f"{n:,} workers in all; at most {MAX_WORKERS:,} are supported")
        pol = self.policy
        if isinstance(pol, BackupPolicy) and pol.aggregate > n:
            raise _FieldError("policy.aggregate", f"K = {pol.aggregate} exceeds the number of workers ({n})")
        if isinstance(pol, KAsyncPolicy) and pol.k > n:
            raise _FieldError("policy.k", f"K = {pol.k} exceeds the number of workers ({n})")
        net = self.network
        for gi, g in enumerate(self.workers):
            if g.count % g.gpus_per_node:
                raise _FieldError(f"workers.{gi}.gpus_per_node",
                                  f"{g.gpus_per_node} does not divide the group's count ({g.count})")
            if g.gpus_per_node > 1 and net is not None and net.intra_node_gbps is None:
                raise _FieldError("network.intra_node_gbps",
                                  f"is required: workers.{gi} has {g.gpus_per_node} GPUs per node")
            pl = g.placement
            if isinstance(pl, list) and len(pl) != g.count:
                raise _FieldError(f"workers.{gi}.placement",
                                  f"has {len(pl)} entries but the group has {g.count} workers")
            if pl is not None and net is None:
                raise _FieldError(f"workers.{gi}.placement", "needs a network")
            if isinstance(net, TwoTierNetwork) and pl is not None:
                for v in pl if isinstance(pl, list) else [pl]:
                    if not isinstance(v, int) or not 0 <= v < net.racks:
                        raise _FieldError(f"workers.{gi}.placement",
                                          f"must be rack indices in 0..{net.racks - 1}, got {v!r}")
            if isinstance(net, CustomNetwork):
                nodes = {e.u for e in net.edges} | {e.v for e in net.edges}
                if pl is None:
                    raise _FieldError(f"workers.{gi}.placement", "is required with a custom topology")
                for v in pl if isinstance(pl, list) else [pl]:
                    if str(v) not in nodes:
                        raise _FieldError(f"workers.{gi}.placement", f"node {v!r} is not in network.edges")
        for fi, f in enumerate(self.faults):
            ids = list(f.workers) if isinstance(f, Slowdown) else [f.worker] if hasattr(f, "worker") else []
            for w in ids:
                if w >= n:
                    key = "workers" if isinstance(f, Slowdown) else "worker"
                    raise _FieldError(f"faults.{fi}.{key}", f"worker {w} does not exist (there are {n} workers)")
            if isinstance(f, RandomCrash) and f.group >= len(self.workers):
                raise _FieldError(f"faults.{fi}.group",
                                  f"group {f.group} does not exist (there are {len(self.workers)} groups)")
            if isinstance(f, LinkFault) and net is None:
                raise _FieldError(f"faults.{fi}", "a link fault needs a network")
        if isinstance(pol, AllreducePolicy) and self.faults:
            raise _FieldError("faults", "the allreduce policy does not model faults (use sync)")
        if isinstance(pol, _OuterSyncPolicy) and self.faults:
            raise _FieldError("faults", f"the {pol.kind} policy does not model faults (remove the faults "
                              f"section, or use async/sync to study faults)")
        # the policies that all-reduce (async_diloco pushes to the server instead)
        if isinstance(pol, AllreducePolicy) or (isinstance(pol, _OuterSyncPolicy) and pol.kind != "async_diloco"):
            if pol.algorithm == "halving_doubling" and n & (n - 1):
                raise _FieldError("policy.algorithm",
                                  f"halving_doubling needs a power-of-two number of workers, not {n}")
            if pol.algorithm == "hierarchical" and len({g.gpus_per_node for g in self.workers}) > 1:
                raise _FieldError("policy.algorithm",
                                  "hierarchical needs the same gpus_per_node in every worker group")
        if isinstance(net, CustomNetwork):
            nodes = {e.u for e in net.edges} | {e.v for e in net.edges}
            if net.server not in nodes:
                raise _FieldError("network.server", f"node {net.server!r} is not in network.edges")
        return self

    # ------------------------------------------------------------- helpers
    @property
    def n_workers(self) -> int:
        return sum(g.count for g in self.workers)

    def worker_groups(self) -> list[int]:
        """Group index of every worker (global worker index -> group)."""
        return [gi for gi, g in enumerate(self.workers) for _ in range(g.count)]

    def node_of(self) -> list[int]:
        """Node (machine) index of every worker: consecutive ``gpus_per_node`` workers of a group share one."""
        out: list[int] = []
        node = 0
        for g in self.workers:
            for i in range(g.count // g.gpus_per_node):
                out.extend([node] * g.gpus_per_node)
                node += 1
        return out

    def compute_dists(self) -> list:
        """Compute-time distribution of every worker, by global index."""
        return [g.compute for g in self.workers for _ in range(g.count)]

    @property
    def model_bytes(self) -> float:
        return self.model.bytes if self.model is not None else 0.0

    def __repr__(self) -> str:
        # short: the whole model is ``to_yaml()``; the generated repr ran to a page
        stop = ", ".join(f"{k}={v:g}" for k, v in (("updates", self.stop.updates), ("time", self.stop.time))
                         if v is not None)
        net = self.network.topology if self.network is not None else None
        return (f"Scenario(name={self.name!r}, workers={self.n_workers}, policy={self.policy.kind!r}, "
                f"network={net!r}, stop=({stop}), seed={self.seed})")

    def to_dict(self) -> dict[str, Any]:
        """The resolved scenario as plain JSON-able data (file paths' values inlined)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_yaml(self) -> str:
        """The resolved scenario as YAML text (``load_scenario`` reads it back to an equal scenario)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, overrides: dict[str, Any], *, source: str | None = None) -> "Scenario":
        """A new scenario with dotted-path values replaced, e.g. ``{"workers.0.count": 16}``.

        Setting ``policy.kind`` replaces the policy (its other keys are dropped
        unless also given). Raises :class:`ScenarioError` naming the path.
        """
        data = self.to_dict()
        for key, value in overrides.items():
            set_dotted(data, key, value, source=source)
        return validate_scenario(data, source=source)


class _FieldError(ValueError):
    """A cross-field check failure with its own field path."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


def set_dotted(data: dict, key: str, value: Any, *, source: str | None = None) -> None:
    """Set ``data[a][b][0][c] = value`` for ``key = "a.b.0.c"`` (ScenarioError on a bad path)."""
    parts = key.split(".")
    if not key or any(p == "" for p in parts):
        raise ScenarioError(f"bad key path {key!r}", file=source, field=key)
    if parts[0] == "policy" and parts[1:] == ["kind"]:
        data["policy"] = {"kind": value}
        return
    node: Any = data
    for i, p in enumerate(parts[:-1]):
        here = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not p.isdigit() or int(p) >= len(node):
                raise ScenarioError(f"no list index {p!r} (the list has {len(node)} entries)", file=source,
                                    field=here)
            node = node[int(p)]
        elif isinstance(node, dict):
            if p not in node:
                if p in Scenario.model_fields or i > 0:
                    node[p] = {}
                else:
                    raise ScenarioError("no such key in the scenario", file=source, field=here)
            node = node[p]
        else:
            raise ScenarioError("is not a mapping or list", file=source, field=".".join(parts[:i]))
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ScenarioError(f"no list index {last!r}", file=source, field=key)
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ScenarioError("is not a mapping or list", file=source, field=".".join(parts[:-1]))


# ---------------------------------------------------------------- loading
_TAGS = {
    "constant", "exponential", "shifted_exponential", "lognormal", "gamma", "uniform", "normal", "weibull",
    "pareto", "empirical", "mixture", "star", "two_tier", "custom", *POLICY_KINDS, *FAULT_KINDS,
}


def _field_path(loc: tuple, key_lines: dict[str, int] | None = None) -> str:
    out = []
    for i, part in enumerate(loc):
        # discriminated unions add the tag to the location: workers.0.compute.exponential.mean
        if isinstance(part, str) and part in _TAGS and i > 0:
            continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        # never quote a key that is not a plain name: the file may not be a scenario at all
        if key_lines and str(part) in key_lines:
            out.append(f"<the key on line {key_lines[str(part)]}>")
            continue
        if isinstance(part, str) and len(part) > 64:
            out.append("<a long key>")
            continue
        out.append(str(part))
    return ".".join(out)


def _from_validation_error(exc: ValidationError, source: str | None,
                           key_lines: dict[str, int] | None = None) -> ScenarioError:
    errs = exc.errors(include_url=False)
    # A failed item also makes its tuple "too short": that follow-on error is noise.
    locs = [tuple(e.get("loc", ())) for e in errs]
    errs = [e for e, loc in zip(errs, locs)
            if not (e.get("type") == "too_short" and any(o[: len(loc)] == loc and o != loc for o in locs))] or errs
    # A typo'd key ("cuont") also makes the real key "missing": report the typo first.
    errs.sort(key=lambda e: e.get("type") != "extra_forbidden")
    described = [_describe_error(e, key_lines) for e in errs]
    problems = [": ".join([p for p in (source, field) if p] + [msg]) for field, msg in described]
    field, msg = described[0]
    return ScenarioError(msg, file=source, field=field or None, problems=problems)


def _describe_error(err: dict, key_lines: dict[str, int] | None = None) -> tuple[str, str]:
    """``(field path, what is wrong)`` of one pydantic error, in the scenario file's terms."""
    field = _field_path(tuple(err.get("loc", ())), key_lines)
    msg = err.get("msg", "invalid")
    ctx_err = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_err, _FieldError):
        field, msg = ctx_err.field, str(ctx_err)
    elif is_boolean(err.get("input")):
        msg = BOOLEAN_MESSAGE
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (not allowed here)"
    elif err.get("type") == "union_tag_invalid":
        tag = (err.get("ctx") or {}).get("tag")
        expected = (err.get("ctx") or {}).get("expected_tags")
        msg = f"unknown value {tag!r} (expected one of: {expected})" if _yaml.is_name(tag) else \
            f"unknown value (expected one of: {expected})"
    elif err.get("type") == "union_tag_not_found":
        msg = f"missing {(err.get('ctx') or {}).get('discriminator', 'tag')} key"
    return field, msg


def validate_scenario(data: Any, *, source: str | None = None, base_dir: str | Path | None = None,
                      key_lines: dict[str, int] | None = None) -> Scenario:
    """Validate a mapping into a :class:`Scenario` (raises :class:`ScenarioError`).

    ``key_lines``: the line of each key that is not a plain name (from
    :func:`asyncsim._yaml.read`), so that an error names its line instead of
    quoting it (the file may not be a scenario at all)."""
    if data is None:
        raise ScenarioError("the file is empty", file=source)
    if not isinstance(data, dict):
        raise ScenarioError(f"the top level must be a mapping, got {type(data).__name__}", file=source)
    try:
        return Scenario.model_validate(copy.deepcopy(data), context={"base_dir": base_dir})
    except ValidationError as exc:
        raise _from_validation_error(exc, source, key_lines or {}) from None
    except RecursionError:
        raise ScenarioError("structure nested too deeply", file=source) from None


def load_scenario(source: str | Path | dict | Scenario, *, seed: int | None = None) -> Scenario:
    """Load a scenario from a path, a YAML string or a mapping, and validate it.

    Relative file paths inside the scenario (e.g. ``empirical`` ``path``) are
    resolved against the scenario file's folder. ``seed`` overrides the file's.
    """
    if isinstance(source, Scenario):
        sc = source
    elif isinstance(source, dict):
        sc = validate_scenario(source, source="<scenario>")
    else:
        text, name, base = _read_source(source)
        try:
            loaded = _yaml.read(text)
        except _yaml.YamlProblem as exc:
            raise ScenarioError(str(exc), file=name) from None
        data = loaded.data
        if isinstance(data, dict) and "name" not in data and base is not None:
            data = {"name": Path(name).stem, **data}
        sc = validate_scenario(data, source=name, base_dir=base, key_lines=loaded.key_lines)
    if seed is not None:
        if seed < 0:
            raise ScenarioError(f"seed must be >= 0, got {seed}", field="seed")
        sc = sc.model_copy(update={"seed": int(seed)})
    return sc


def _read_source(source: str | Path) -> tuple[str, str, Path | None]:
    if isinstance(source, str) and ("\n" in source or source.lstrip().startswith("{")):
        return source, "<string>", None
    path = Path(source)
    name = str(source)
    if not path.exists():
        raise ScenarioError("no such file", file=name)
    if not path.is_file():
        raise ScenarioError("not a regular file", file=name)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"cannot read ({exc.strerror})", file=name) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ScenarioError("not a UTF-8 text file", file=name) from None
    if not text.strip():
        raise ScenarioError("the file is empty", file=name)
    return text, name, path.resolve().parent


def scenario_json_schema() -> dict[str, Any]:
    """JSON Schema of scenario files (for editor completion)."""
    schema = Scenario.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "asyncsim scenario"
    return schema


def dumps_schema() -> str:
    return json.dumps(scenario_json_schema(), indent=2)
