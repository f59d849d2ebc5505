"""Topologies and routes: the link directions of a scenario's network and every
worker's pull and push path over them.

Nodes are ``"server"``, switches and one node per worker (``"w0"``, ``"w1"``...).
Every edge is a full-duplex link: each *direction* is its own capacity, so a
pull (server -> worker) and a push (worker -> server) never share one.

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
``star`` and ``two_tier`` paths are written down directly (O(1) per worker,
O(N) in all); networkx is imported and used for ``custom`` topologies only.

Link directions are numbered edge by edge (each edge as ``u -> v`` then
``v -> u``) in the order networkx's ``Graph.edges`` lists the graph's edges:
for ``star`` the server's link first, then the workers'; for ``two_tier`` the
server's link, the rack uplinks, then each rack's workers. (The numbering
fixes the circuit model's global link-acquisition order, and so its traces.)

Cost: O(N · hops) time and memory for star and two_tier; for custom, one
breadth-first search per distinct placement node (O(E log E) each).
"""

from __future__ import annotations

import itertools
import math
import gc
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..distributions import Constant
from ..scenario import CustomNetwork, Scenario, StarNetwork, TwoTierNetwork

__all__ = ["Route", "Network", "build_graph", "build_network", "worker_node", "SERVER"]

SERVER = "server"


def worker_node(i: int) -> str:
    """Graph node name of worker ``i`` (star and two_tier topologies)."""
    return f"w{i}"


class Route(NamedTuple):
    """One direction of one worker's transfers, ready for the engines.

    ``path``: the nodes, from the sender to the receiver.
    ``hops``: the link direction of every hop, in path order.
    ``bandwidths``: every hop's bandwidth in Gbit/s, in path order.
    ``links``: the link directions the transfer uses, sorted in the global
    acquisition order (empty for a zero-byte transfer or an empty path).
    ``hold``: seconds the transfer takes alone on its path, bytes · 8 /
    (smallest bandwidth · 10⁹) — the circuit model's holding time.
    ``latencies``: the latency distribution of each hop, in path order.
    ``fixed_latency``: their sum when every hop is constant (else ``None``).
    ``bits``: the transfer's size in bits (bytes · 8).
    ``shared``: the directions in ``links`` that some other worker's routes
    use too (sorted); the fair model shares only these among flows.
    ``cap``: the fair model's rate limit from the directions no other worker
    uses (bit/s; the smallest of their bandwidths, ``inf`` if there are none).
    ``own``: index in ``hops`` of the worker's own link (the hop at the
    worker's end of the path), ``-1`` for an empty path.

    (A named tuple rather than a frozen dataclass: a 32768-worker network
    builds 65536 routes, and a tuple is built about four times faster.)
    """

    path: tuple[str, ...]
    links: tuple[int, ...]
    hold: float
    latencies: tuple[Any, ...]
    fixed_latency: float | None
    hops: tuple[int, ...] = ()
    bandwidths: tuple[float, ...] = ()
    bits: float = 0.0
    shared: tuple[int, ...] = ()
    cap: float = math.inf
    own: int = -1

    @property
    def uncontended_time(self) -> float | None:
        """Duration without any queueing or sharing, when the latencies are constant."""
        if self.fixed_latency is None:
            return None
        return self.hold + self.fixed_latency


@dataclass
class Network:
    """The link directions, their bandwidths and every worker's pull and push routes.

    ``edges``: ``(u, v, bandwidth_gbps, latency)`` per full-duplex link, in
    the order that numbers the directions (edge ``e`` is directions ``2e``
    (u -> v) and ``2e + 1`` (v -> u)). ``sharing``: ``"fair"`` or ``"circuit"``.
    """

    edges: list[tuple[str, str, float, Any]]
    sharing: str = "fair"
    pull: list[Route] = field(default_factory=list)
    push: list[Route] = field(default_factory=list)
    _graph: Any = field(default=None, repr=False)
    #: worker-to-worker paths for the collectives (see :meth:`peer_hops`)
    node_of: list[int] = field(default_factory=list, repr=False)
    nic_in: list[int] = field(default_factory=list, repr=False)    # direction into worker i's NIC
    nic_out: list[int] = field(default_factory=list, repr=False)   # direction out of it
    rack: list[int] = field(default_factory=list, repr=False)      # two_tier: rack of worker i
    rack_up: list[int] = field(default_factory=list, repr=False)   # two_tier: rack r -> core
    rack_down: list[int] = field(default_factory=list, repr=False)  # two_tier: core -> rack r
    intra_in: list[int] = field(default_factory=list, repr=False)  # node switch -> GPU i (-1: none)
    intra_out: list[int] = field(default_factory=list, repr=False)  # GPU i -> node switch
    _custom: Any = field(default=None, repr=False)                 # custom: (graph, order, placement, cache)

    @property
    def n_links(self) -> int:
        """Number of link directions."""
        return 2 * len(self.edges)

    @property
    def directions(self) -> list[tuple[str, str]]:
        """Link direction index -> (from, to)."""
        return [d for u, v, _, _ in self.edges for d in ((u, v), (v, u))]

    @property
    def capacity_gbps(self) -> list[float]:
        """Bandwidth of every link direction, Gbit/s."""
        return [bw for _, _, bw, _ in self.edges for _ in (0, 1)]

    @property
    def graph(self):
        """The undirected link graph as a networkx ``Graph`` (edge attributes
        ``bandwidth_gbps`` and ``latency``), built on first use (for inspection;
        the engines do not need it)."""
        if self._graph is None:
            import networkx as nx

            g = nx.Graph()
            for u, v, bw, lat in self.edges:
                g.add_edge(u, v, bandwidth_gbps=bw, latency=lat)
            self._graph = g
        return self._graph

    def is_constant(self) -> bool:
        """True when every hop latency is a constant (no network randomness)."""
        return all(r.fixed_latency is not None for r in itertools.chain(self.pull, self.push))

    def peer_hops(self, a: int, b: int) -> tuple[int, ...]:
        """Link directions of a transfer from worker ``a`` to worker ``b`` (the
        collectives' paths): GPUs of one node use their intra-node links only
        (``a`` -> node switch -> ``b``); otherwise the path leaves through
        ``a``'s NIC and enters ``b``'s (star: via the switch; two_tier: via the
        rack switch, and the core when the racks differ; custom: the shortest
        path between their placement nodes, ties broken as for the server's
        routes)."""
        if a == b:
            return ()
        if self.node_of[a] == self.node_of[b]:
            return (self.intra_out[a], self.intra_in[b])
        if self._custom is not None:
            return self._custom_hops(a, b)
        if self.rack:
            ra, rb = self.rack[a], self.rack[b]
            if ra != rb:
                return (self.nic_out[a], self.rack_up[ra], self.rack_down[rb], self.nic_in[b])
        return (self.nic_out[a], self.nic_in[b])

    def _custom_hops(self, a: int, b: int) -> tuple[int, ...]:
        import networkx as nx

        g, order, place, cache, index = self._custom
        u, v = place[a], place[b]
        key = (u, v)
        if key not in cache:
            if u == v:
                cache[key] = ()
            else:
                try:
                    p = min(nx.all_shortest_paths(g, u, v), key=lambda p: [order[x] for x in p])
                except nx.NetworkXNoPath:
                    from ..errors import ScenarioError

                    raise ScenarioError(f"no path between workers' nodes {u!r} and {v!r}",
                                        field="network.edges") from None
                cache[key] = tuple(index[h] for h in zip(p[:-1], p[1:]))
        return cache[key]

    def is_uncontended(self) -> bool:
        """True when no link direction carries two workers' transfers (no sharing ever)."""
        return not any(r.shared for r in itertools.chain(self.pull, self.push))


def _nic_bandwidths(sc: Scenario) -> list[float]:
    net = sc.network
    out: list[float] = []
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


def _rack_of(sc: Scenario) -> list[int]:
    n, racks = sc.n_workers, sc.network.racks
    return [int(p) if p is not None else i * racks // n for i, p in enumerate(_placements(sc))]


def _rack_members(rack_of: list[int], racks: int) -> list[list[int]]:
    """The workers of every rack, in worker order."""
    members: list[list[int]] = [[] for _ in range(racks)]
    for i, r in enumerate(rack_of):
        members[r].append(i)
    return members


def _star_edges(sc: Scenario) -> list[tuple[str, str, float, Any]]:
    net = sc.network
    lat = net.latency
    server_bw = float(net.server_bandwidth_gbps or net.bandwidth_gbps)
    edges = [(SERVER, "switch", server_bw, lat)]
    edges += [("switch", worker_node(i), bw, lat) for i, bw in enumerate(_nic_bandwidths(sc))]
    return edges


def _two_tier_edges(sc: Scenario) -> list[tuple[str, str, float, Any]]:
    net = sc.network
    lat = net.latency
    nic = _nic_bandwidths(sc)
    members = _rack_members(_rack_of(sc), net.racks)
    server_bw = float(net.server_bandwidth_gbps or net.bandwidth_gbps)
    edges = [(SERVER, "core", server_bw, lat)]
    for r in range(net.racks):
        if net.uplink_gbps is not None:
            up = float(net.uplink_gbps)
        elif members[r]:
            up = sum(nic[i] for i in members[r]) / net.oversubscription
        else:  # an empty rack carries no traffic; any positive value will do
            up = float(net.bandwidth_gbps)
        edges.append(("core", f"r{r}", up, lat))
    for r in range(net.racks):
        edges += [(f"r{r}", worker_node(i), nic[i], lat) for i in members[r]]
    return edges


def build_graph(sc: Scenario):
    """The undirected link graph (networkx; edge attributes ``bandwidth_gbps``,
    ``latency``), the node of every worker, and the server's node."""
    import networkx as nx

    net = sc.network
    n = sc.n_workers
    if isinstance(net, CustomNetwork):
        g = nx.Graph()
        for e in net.edges:
            g.add_edge(e.u, e.v, bandwidth_gbps=float(e.bandwidth_gbps),
                       latency=e.latency if e.latency is not None else net.latency)
        return g, {i: str(p) for i, p in enumerate(_placements(sc))}, net.server
    edges = _star_edges(sc) if isinstance(net, StarNetwork) else _two_tier_edges(sc)
    g = nx.Graph()
    for u, v, bw, lat in edges:
        g.add_edge(u, v, bandwidth_gbps=bw, latency=lat)
    return g, {i: worker_node(i) for i in range(n)}, SERVER


def _custom_paths(sc: Scenario):
    """Edges (networkx order) and each worker's pull path, for a custom topology."""
    import networkx as nx

    g, nodes, server = build_graph(sc)
    order = {v: i for i, v in enumerate(g.nodes)}
    edges = [(u, v, d["bandwidth_gbps"], d["latency"]) for u, v, d in g.edges(data=True)]
    cache: dict[str, tuple[str, ...]] = {}
    paths = []
    for i in range(sc.n_workers):
        node = nodes[i]
        if node not in cache:
            if node == server:
                cache[node] = (server,)
            else:
                try:
                    found = nx.all_shortest_paths(g, server, node)
                    cache[node] = tuple(min(found, key=lambda p: [order[v] for v in p]))
                except nx.NetworkXNoPath:
                    from ..errors import ScenarioError

                    raise ScenarioError(f"no path between the server ({server!r}) and node {node!r}",
                                        field="network.edges") from None
        paths.append(cache[node])
    return edges, paths, g


#: the last network built, kept so that choosing an engine and running it build it once
_LAST: list = []


def build_network(sc: Scenario) -> Network | None:
    """Build the network of ``sc`` (``None`` when the scenario has none).

    The result is kept for the next call with the same (immutable) scenario
    object, so choosing an engine and running it build the routes once."""
    if sc.network is None:
        return None
    if _LAST and _LAST[0] is sc:
        return _LAST[1]
    # Hundreds of thousands of small tuples: without this the cyclic collector
    # rescans them again and again and set-up grows faster than N.
    enabled = gc.isenabled()
    gc.disable()
    try:
        network = _build(sc)
    finally:
        if enabled:
            gc.enable()
    _LAST[:] = [sc, network]
    return network


def _build(sc: Scenario) -> Network:
    net = sc.network
    n = sc.n_workers
    info: dict[str, Any] = {}
    if isinstance(net, CustomNetwork):
        edges, pull_paths, g_custom = _custom_paths(sc)
        index = {}
        for e, (u, v, _, _) in enumerate(edges):
            index[(u, v)] = 2 * e
            index[(v, u)] = 2 * e + 1
        info["_custom"] = (g_custom, {v: i for i, v in enumerate(g_custom.nodes)},
                           [str(p) for p in _placements(sc)], {}, index)

        def hops_of(path):
            return tuple(index[h] for h in zip(path[:-1], path[1:]))

        pull_hops = [hops_of(p) for p in pull_paths]
        push_hops = [hops_of(tuple(reversed(p))) for p in pull_paths]
    elif isinstance(net, StarNetwork):
        edges = _star_edges(sc)
        # server -> switch is direction 0, switch -> server 1; worker i's link is edge i + 1
        pull_paths = [(SERVER, "switch", worker_node(i)) for i in range(n)]
        pull_hops = [(0, 2 * i + 2) for i in range(n)]
        push_hops = [(2 * i + 3, 1) for i in range(n)]
        info["nic_in"] = [2 * i + 2 for i in range(n)]
        info["nic_out"] = [2 * i + 3 for i in range(n)]
    elif isinstance(net, TwoTierNetwork):
        edges = _two_tier_edges(sc)
        racks = net.racks
        rack_of = _rack_of(sc)
        # edge 0: server-core; edge 1 + r: core-r<r>; then each rack's workers in order
        members = _rack_members(rack_of, racks)
        pos = [0] * n
        e = 1 + racks
        for m in members:
            for i in m:
                pos[i] = e
                e += 1
        pull_paths = [(SERVER, "core", f"r{rack_of[i]}", worker_node(i)) for i in range(n)]
        pull_hops = [(0, 2 * (1 + rack_of[i]), 2 * pos[i]) for i in range(n)]
        push_hops = [(2 * pos[i] + 1, 2 * (1 + rack_of[i]) + 1, 1) for i in range(n)]
        info.update(nic_in=[2 * pos[i] for i in range(n)], nic_out=[2 * pos[i] + 1 for i in range(n)],
                    rack=rack_of, rack_down=[2 * (1 + r) for r in range(racks)],
                    rack_up=[2 * (1 + r) + 1 for r in range(racks)])
    else:  # pragma: no cover - the schema guards
        raise TypeError(f"unknown network {type(net).__name__}")
    # Nodes of several GPUs: each GPU's link to its node's switch "n<k>", appended
    # after the other edges (so the server's routes and their numbering are unchanged).
    node_of = sc.node_of()
    intra_in, intra_out = [-1] * n, [-1] * n
    if any(g.gpus_per_node > 1 for g in sc.workers):
        start = 0
        for g in sc.workers:
            if g.gpus_per_node > 1:
                for i in range(start, start + g.count):
                    gpu = worker_node(i) if not isinstance(net, CustomNetwork) else f"gpu{i}"
                    intra_in[i], intra_out[i] = 2 * len(edges), 2 * len(edges) + 1
                    edges.append((f"n{node_of[i]}", gpu, float(net.intra_node_gbps), net.intra_node_latency))
            start += g.count
    network = Network(edges=edges, sharing=getattr(net, "sharing", "fair"), node_of=node_of,
                      intra_in=intra_in, intra_out=intra_out, **info)
    nbytes = float(sc.model_bytes)
    bw = [b for _, _, b, _ in edges for _ in (0, 1)]
    lat = [d for _, _, _, d in edges for _ in (0, 1)]
    # Which directions more than one worker uses (the fair model shares those only).
    owner: dict[int, int] = {}
    shared_dirs: set[int] = set()
    if nbytes > 0:
        for w in range(n):
            for h in itertools.chain(pull_hops[w], push_hops[w]):
                if owner.setdefault(h, w) != w:
                    shared_dirs.add(h)
    for w in range(n):
        path = pull_paths[w]
        network.pull.append(_route(path, pull_hops[w], bw, lat, nbytes, shared_dirs, own_last=True))
        network.push.append(_route(tuple(reversed(path)), push_hops[w], bw, lat, nbytes, shared_dirs,
                                   own_last=False))
    return network


def _route(path, hops, bw, lat, nbytes, shared_dirs, own_last: bool) -> Route:
    if not hops:
        return Route(path=path, links=(), hold=0.0, latencies=(), fixed_latency=0.0)
    bws = tuple(bw[h] for h in hops)
    lats = tuple(lat[h] for h in hops)
    if nbytes > 0:
        hold = nbytes * 8.0 / (min(bws) * 1e9)
        links = tuple(sorted(hops))
        shared = tuple(h for h in links if h in shared_dirs)
        private = [b for h, b in zip(hops, bws) if h not in shared_dirs]
        cap = min(private) * 1e9 if private else math.inf
    else:
        hold, links, shared, cap = 0.0, (), (), math.inf
    fixed: float | None = 0.0
    for d in lats:  # summed left to right in path order, as the engines do
        if isinstance(d, Constant):
            fixed += float(d.value)
        else:
            fixed = None
            break
    return Route(path=path, links=links, hold=hold, latencies=lats, fixed_latency=fixed, hops=tuple(hops),
                 bandwidths=bws, bits=nbytes * 8.0, shared=shared, cap=cap,
                 own=len(hops) - 1 if own_last else 0)
