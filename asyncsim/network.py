"""The cluster network: a networkx graph built from a scenario's ``network`` section.

Nodes are ``"server"``, switches and one node per worker (``"w0"``, ``"w1"``...).
Every edge is a full-duplex link: each *direction* is its own FIFO resource in
the engines, so a pull (server -> worker) and a push (worker -> server) never
compete, while two pulls sharing a link direction queue.

Topologies (see docs/transfer-model.md):

* ``star``: every worker and the server hang off one ``"switch"`` by their own
  link. Worker links have the group's ``bandwidth_gbps`` (default
  ``network.bandwidth_gbps``); the server's link has ``server_bandwidth_gbps``
  (default ``bandwidth_gbps``). Every transfer crosses the server's link.
* ``two_tier``: workers hang off top-of-rack switches ``"r0"``... which are
  linked to ``"core"``; the server hangs off ``"core"``. A rack's uplink has
  ``uplink_gbps`` if given, else (sum of the NIC bandwidths in that rack) /
  ``oversubscription``. Workers sit in their group's ``placement`` rack(s),
  otherwise worker ``i`` of ``N`` goes to rack ``i * R // N`` (contiguous blocks).
* ``custom``: the edge list as given; the server sits on node
  ``network.server`` and each worker *at* its placement node (no extra link:
  its transfers start and end there). A worker placed on the server's node
  transfers in zero time.

Routing: a pull follows the shortest path (fewest hops) from the server to
the worker; among equally short paths the one whose sequence of node indices
(nodes numbered in order of first appearance in the edge list) is
lexicographically smallest is chosen. A push follows the same path reversed.

Transfer model ("circuit" style, so an uncontended transfer takes exactly the
sum of the path's latencies plus bytes / smallest bandwidth): a transfer
requests every link direction of its path in one fixed global order (which
rules out deadlock), holds them all for ``bytes * 8 / (min bandwidth in bit/s)``
seconds, releases them, then waits the sum of the per-hop latencies (drawn per
hop, in path order, from the transferring worker's ``network`` stream).
A zero-byte transfer takes no link and only pays the latencies.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .distributions import Constant
from .scenario import CustomNetwork, Scenario, StarNetwork, TwoTierNetwork

__all__ = ["Route", "Network", "build_graph", "build_network", "worker_node", "SERVER"]

SERVER = "server"


def worker_node(i: int) -> str:
    """Graph node name of worker ``i`` (star and two_tier topologies)."""
    return f"w{i}"


@dataclass(frozen=True)
class Route:
    """One direction of one worker's transfers, ready for the engines.

    ``links``: indices of the link directions the transfer holds, sorted in the
    global acquisition order (empty for a zero-byte transfer or an empty path).
    ``hold``: seconds the links are held (bytes / smallest bandwidth).
    ``latencies``: the latency distribution of each hop, in path order.
    ``fixed_latency``: their sum when every hop is constant (else ``None``).
    """

    path: tuple[str, ...]
    links: tuple[int, ...]
    hold: float
    latencies: tuple[Any, ...]
    fixed_latency: float | None

    @property
    def uncontended_time(self) -> float | None:
        """Duration without any queueing, when the latencies are constant."""
        if self.fixed_latency is None:
            return None
        return self.hold + self.fixed_latency


@dataclass
class Network:
    """The graph, its link directions and every worker's pull and push routes."""

    graph: nx.Graph
    directions: list[tuple[str, str]]          # link direction index -> (from, to)
    pull: list[Route] = field(default_factory=list)
    push: list[Route] = field(default_factory=list)

    @property
    def n_links(self) -> int:
        return len(self.directions)

    def is_constant(self) -> bool:
        """True when every hop latency is a constant (no network randomness)."""
        return all(r.fixed_latency is not None for r in itertools.chain(self.pull, self.push))


def _nic_bandwidths(sc: Scenario) -> list[float]:
    net = sc.network
    out = []
    for g in sc.workers:
        bw = g.bandwidth_gbps if g.bandwidth_gbps is not None else net.bandwidth_gbps
        out.extend([float(bw)] * g.count)
    return out


def _placements(sc: Scenario) -> list[Any]:
    """Per-worker placement value (None where the group gives none)."""
    out: list[Any] = []
    for g in sc.workers:
        pl = g.placement
        if isinstance(pl, list):
            out.extend(pl)
        else:
            out.extend([pl] * g.count)
    return out


def build_graph(sc: Scenario) -> tuple[nx.Graph, dict[int, str], str]:
    """The undirected link graph (edge attributes ``bandwidth_gbps``, ``latency``),
    the node of every worker, and the server's node."""
    net = sc.network
    n = sc.n_workers
    g = nx.Graph()
    if isinstance(net, StarNetwork):
        nic = _nic_bandwidths(sc)
        server_bw = net.server_bandwidth_gbps or net.bandwidth_gbps
        g.add_edge(SERVER, "switch", bandwidth_gbps=float(server_bw), latency=net.latency)
        for i in range(n):
            g.add_edge(worker_node(i), "switch", bandwidth_gbps=nic[i], latency=net.latency)
        return g, {i: worker_node(i) for i in range(n)}, SERVER
    if isinstance(net, TwoTierNetwork):
        nic = _nic_bandwidths(sc)
        racks = net.racks
        pl = _placements(sc)
        rack_of = [int(p) if p is not None else i * racks // n for i, p in enumerate(pl)]
        server_bw = net.server_bandwidth_gbps or net.bandwidth_gbps
        g.add_edge(SERVER, "core", bandwidth_gbps=float(server_bw), latency=net.latency)
        for r in range(racks):
            members = [i for i in range(n) if rack_of[i] == r]
            if net.uplink_gbps is not None:
                up = float(net.uplink_gbps)
            elif members:
                up = sum(nic[i] for i in members) / net.oversubscription
            else:  # an empty rack carries no traffic; any positive value will do
                up = float(net.bandwidth_gbps)
            g.add_edge(f"r{r}", "core", bandwidth_gbps=up, latency=net.latency)
        for i in range(n):
            g.add_edge(worker_node(i), f"r{rack_of[i]}", bandwidth_gbps=nic[i], latency=net.latency)
        return g, {i: worker_node(i) for i in range(n)}, SERVER
    if isinstance(net, CustomNetwork):
        for e in net.edges:
            g.add_edge(e.u, e.v, bandwidth_gbps=float(e.bandwidth_gbps),
                       latency=e.latency if e.latency is not None else net.latency)
        pl = _placements(sc)
        return g, {i: str(p) for i, p in enumerate(pl)}, net.server
    raise TypeError(f"unknown network {type(net).__name__}")  # pragma: no cover - schema guards


def _route_path(g: nx.Graph, order: dict[str, int], src: str, dst: str) -> tuple[str, ...]:
    if src == dst:
        return (src,)
    try:
        paths = nx.all_shortest_paths(g, src, dst)
        return tuple(min(paths, key=lambda p: [order[v] for v in p]))
    except nx.NetworkXNoPath:
        from .errors import ScenarioError

        raise ScenarioError(f"no path between the server ({src!r}) and node {dst!r}",
                            field="network.edges") from None


def build_network(sc: Scenario) -> Network | None:
    """Build the network of ``sc`` (``None`` when the scenario has none)."""
    if sc.network is None:
        return None
    g, nodes, server = build_graph(sc)
    order = {v: i for i, v in enumerate(g.nodes)}
    # Global link-direction numbering: edges in insertion order, each as (u->v, v->u).
    directions: list[tuple[str, str]] = []
    index: dict[tuple[str, str], int] = {}
    for u, v in g.edges:
        for a, b in ((u, v), (v, u)):
            index[(a, b)] = len(directions)
            directions.append((a, b))
    nbytes = float(sc.model_bytes)
    network = Network(graph=g, directions=directions)
    cache: dict[str, tuple[str, ...]] = {}
    for i in range(sc.n_workers):
        node = nodes[i]
        if node not in cache:
            cache[node] = _route_path(g, order, server, node)
        path = cache[node]
        network.pull.append(_route(g, index, path, nbytes))
        network.push.append(_route(g, index, tuple(reversed(path)), nbytes))
    return network


def _route(g: nx.Graph, index: dict, path: tuple[str, ...], nbytes: float) -> Route:
    hops = list(zip(path[:-1], path[1:]))
    if not hops:
        return Route(path=path, links=(), hold=0.0, latencies=(), fixed_latency=0.0)
    bw = min(g.edges[a, b]["bandwidth_gbps"] for a, b in hops)
    lats = tuple(g.edges[a, b]["latency"] for a, b in hops)
    if nbytes > 0:
        hold = nbytes * 8.0 / (bw * 1e9)
        links = tuple(sorted(index[h] for h in hops))
    else:
        hold, links = 0.0, ()
    fixed: float | None = 0.0
    for d in lats:  # summed left to right in path order, as the engines do
        if isinstance(d, Constant):
            fixed += float(d.value)
        else:
            fixed = None
            break
    return Route(path=path, links=links, hold=hold, latencies=lats, fixed_latency=fixed)
