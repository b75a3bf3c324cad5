"""The protocol network: typed exposure graph, generators, Eisenberg-Noe clearing, DebtRank.

:class:`ProtocolNetwork` wraps a :class:`networkx.DiGraph`. Nodes are protocols and venues
(lending pools, CDPs, perp venues, books, AMM pools, oracles, bridges) with their type; an edge
``u -> v`` says that **u is exposed to v** (DESIGN.md s. 6, GLOSSARY.md "Networks"). One
ordered pair can be exposed in several ways at once, so an edge carries one weight per kind
(:class:`EdgeKind`): ``collateral`` (u accepts v's receipt token, LP share, stablecoin or
wrapped asset as collateral; weight: the value of that collateral held in u), ``oracle``
(u's oracle reads v's market), ``liquidity`` (u's liquidations sell on v's book) and
``shared_accounts`` (the same agents hold positions on both).

Graphs come from a scenario (:meth:`ProtocolNetwork.from_scenario`: the edges the scenario
implies plus its explicit ``[network] edges``) or from seeded generators
(:func:`generate_topology`: Erdos-Renyi with a target average degree, scale-free,
core-periphery), whose randomness comes from the ``rng`` argument only (the model passes its
``network`` stream), so the same seed gives the same graph.

This module computes; it moves no token. Contagion in a run is mechanical (a pool's bad debt
lowers its liquidity index, so its receipt token held as collateral elsewhere is worth less,
see :mod:`marginsim.protocols.lending`); the functions here measure it:

* :func:`eisenberg_noe` is the clearing vector of obligations between protocols that owe each
  other directly, by the fictitious default algorithm, with the wave in which each node
  defaults.
* :func:`debtrank` is DebtRank (Battiston et al. 2012) on an exposure matrix.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from marginsim.config import Scenario

__all__ = [
    "EDGE_COLUMNS",
    "NODE_COLUMNS",
    "ClearingResult",
    "DebtRankResult",
    "Edge",
    "EdgeKind",
    "NodeType",
    "ProtocolNetwork",
    "debtrank",
    "debtrank_all",
    "eisenberg_noe",
    "generate_topology",
]

#: Columns of the ``network_edges`` event table: one row per (source, target, kind).
EDGE_COLUMNS: dict[str, object] = {
    "source": object,
    "target": object,
    "kind": object,
    "weight": np.float64,
}
#: Columns of the ``network_nodes`` event table: one row per node, state at the end of a run.
NODE_COLUMNS: dict[str, object] = {
    "node": object,
    "type": object,
    "bad_debt": np.float64,
    "defaulted": bool,
    "default_step": np.int64,
    "debtrank": np.float64,
}


class EdgeKind(enum.StrEnum):
    """How ``u`` is exposed to ``v`` along an edge ``u -> v``."""

    COLLATERAL = "collateral"
    ORACLE = "oracle"
    LIQUIDITY = "liquidity"
    SHARED_ACCOUNTS = "shared_accounts"


class NodeType(enum.StrEnum):
    """What a node of the network is."""

    LENDING = "lending"
    CDP = "cdp"
    PERP = "perp"
    BOOK = "book"
    AMM = "amm"
    ORACLE = "oracle"
    BRIDGE = "bridge"


@dataclasses.dataclass(frozen=True)
class Edge:
    """One typed exposure ``source -> target`` (the source is exposed to the target).

    Attributes:
        source: The exposed node.
        target: The node it is exposed to.
        kind: The channel of exposure.
        weight: Size of the exposure (collateral: value held; other kinds: 1 unless given).
        asset: The asset that carries the exposure, when there is one.
    """

    source: str
    target: str
    kind: EdgeKind
    weight: float = 1.0
    asset: str | None = None


class ProtocolNetwork:
    """A typed exposure graph of protocols and venues over a :class:`networkx.DiGraph`.

    Each graph edge ``u -> v`` holds an attribute ``kinds``: a dict from :class:`EdgeKind`
    to :class:`Edge`, so several channels between the same pair coexist; the edge attribute
    ``weight`` is the collateral weight (0 when the pair has no collateral edge), which is
    what :meth:`exposure_matrix` and DebtRank read.

    Args:
        graph: An existing graph to wrap (copied); a new empty one by default.

    Examples:
        >>> net = ProtocolNetwork()
        >>> net.add_node("a", NodeType.LENDING)
        >>> net.add_node("b", NodeType.LENDING)
        >>> net.add_edge("a", "b", EdgeKind.COLLATERAL, 5.0, asset="aUSDC.b")
        >>> [(e.source, e.target, e.kind.value, e.weight) for e in net.edges()]
        [('a', 'b', 'collateral', 5.0)]
    """

    def __init__(self, graph: nx.DiGraph | None = None) -> None:
        self.graph: nx.DiGraph = nx.DiGraph() if graph is None else graph.copy()

    # ------------------------------------------------------------------------------- building
    def add_node(self, name: str, node_type: NodeType | str) -> None:
        """Add a node (or change the type of an existing one)."""
        self.graph.add_node(name, type=NodeType(node_type))

    def add_edge(
        self,
        source: str,
        target: str,
        kind: EdgeKind | str,
        weight: float = 1.0,
        asset: str | None = None,
    ) -> None:
        """Add an exposure ``source -> target`` of ``kind`` (replacing one of that kind).

        Raises:
            ValueError: If an end is not a node, the edge is a self-loop, or the weight is
                negative or not finite.
        """
        for end in (source, target):
            if end not in self.graph:
                raise ValueError(f"unknown node {end!r}; nodes are {sorted(self.graph)}")
        if source == target:
            raise ValueError(f"an exposure edge needs two different nodes, got {source!r} twice")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"an edge weight must be finite and >= 0, got {weight}")
        edge = Edge(source, target, EdgeKind(kind), float(weight), asset)
        if not self.graph.has_edge(source, target):
            self.graph.add_edge(source, target, kinds={}, weight=0.0)
        data = self.graph.edges[source, target]
        data["kinds"][edge.kind] = edge
        if edge.kind is EdgeKind.COLLATERAL:
            data["weight"] = edge.weight

    def set_weight(self, source: str, target: str, kind: EdgeKind | str, weight: float) -> None:
        """Change the weight of an existing edge of ``kind`` (e.g. the collateral value now)."""
        old = self.graph.edges[source, target]["kinds"][EdgeKind(kind)]
        self.add_edge(source, target, old.kind, weight, old.asset)

    # ------------------------------------------------------------------------------- reading
    @property
    def nodes(self) -> list[str]:
        """Node names in insertion order."""
        return list(self.graph.nodes)

    def node_type(self, name: str) -> NodeType:
        """The type of a node."""
        return NodeType(self.graph.nodes[name]["type"])

    def nodes_of_type(self, *types: NodeType | str) -> list[str]:
        """Nodes whose type is one of ``types``, in insertion order."""
        wanted = {NodeType(t) for t in types}
        return [n for n, d in self.graph.nodes(data=True) if d["type"] in wanted]

    def edges(self, kind: EdgeKind | str | None = None) -> list[Edge]:
        """Every typed edge (of ``kind`` only when given), ordered by source, target, kind."""
        out = [
            e
            for _, _, data in self.graph.edges(data=True)
            for e in data["kinds"].values()
            if kind is None or e.kind == EdgeKind(kind)
        ]
        order = {n: k for k, n in enumerate(self.graph.nodes)}
        return sorted(out, key=lambda e: (order[e.source], order[e.target], e.kind.value))

    def edges_frame(self) -> pd.DataFrame:
        """The ``network_edges`` table (:data:`EDGE_COLUMNS`)."""
        rows = [(e.source, e.target, e.kind.value, e.weight) for e in self.edges()]
        return pd.DataFrame(rows, columns=list(EDGE_COLUMNS)).astype(EDGE_COLUMNS)

    def exposure_matrix(
        self, nodes: Sequence[str] | None = None, kind: EdgeKind | str = EdgeKind.COLLATERAL
    ) -> np.ndarray:
        """``A[i, j]``: weight of the ``kind`` edge ``nodes[i] -> nodes[j]`` (0 when none).

        Args:
            nodes: Row and column order (default: every node, in insertion order).
            kind: Which edges to read.
        """
        nodes = self.nodes if nodes is None else list(nodes)
        pos = {n: k for k, n in enumerate(nodes)}
        out = np.zeros((len(nodes), len(nodes)), dtype=np.float64)
        for e in self.edges(kind):
            if e.source in pos and e.target in pos:
                out[pos[e.source], pos[e.target]] = e.weight
        return out

    def exposed_to(self, target: str, kind: EdgeKind | str | None = None) -> list[str]:
        """Nodes with an edge (of ``kind`` when given) into ``target``."""
        return [e.source for e in self.edges(kind) if e.target == target]

    # ------------------------------------------------------------------------------- factories
    @classmethod
    def from_scenario(cls, scenario: Scenario) -> ProtocolNetwork:
        """The network a scenario implies, plus its explicit ``network.edges``.

        Implied edges (weight 1; the model replaces collateral weights with values each step):

        * ``collateral``: a lending pool with a reserve that is another lending pool's
          receipt token (``aSYM.<v>``), a CDP's stablecoin, an AMM pool's LP share
          (``LP-<id>``) or a bridge's wrapped asset is exposed to that issuer;
        * ``oracle``: a protocol that prices something with an oracle reading a book or AMM
          pool (directly or through a median) is exposed to that market;
        * ``liquidity``: a protocol whose collateral (or a perp venue whose contracts) trade on
          a book is exposed to that book: its liquidations sell there;
        * ``shared_accounts`` edges are explicit only: an explicit account or a population
          uses one protocol in this version, so no pair of protocols shares accounts
          implicitly.

        Args:
            scenario: The validated scenario.

        Returns:
            The network; nodes are every protocol, book, AMM pool, oracle and bridge.
        """
        from marginsim.config import CdpConfig, LendingConfig, PerpConfig

        net = cls()
        kind_of = {
            LendingConfig: NodeType.LENDING,
            CdpConfig: NodeType.CDP,
            PerpConfig: NodeType.PERP,
        }
        for name, proto in scenario.protocols.items():
            net.add_node(name, kind_of[type(proto)])
        for ins in scenario.instruments:
            net.add_node(ins.id, NodeType.BOOK)
        for pool in scenario.amms:
            net.add_node(pool.id, NodeType.AMM)
        for name in scenario.oracles:
            net.add_node(name, NodeType.ORACLE)
        for bridge in scenario.network.bridges:
            net.add_node(bridge.name, NodeType.BRIDGE)

        issuer: dict[str, str] = {}
        for name, proto in scenario.protocols.items():
            if isinstance(proto, LendingConfig):
                for sym in proto.reserves:
                    issuer[f"a{sym}.{name}"] = name
            elif isinstance(proto, CdpConfig):
                issuer[proto.stablecoin] = name
        for pool in scenario.amms:
            issuer[f"LP-{pool.id}"] = pool.id
        for bridge in scenario.network.bridges:
            issuer[bridge.wrapped] = bridge.name

        markets = {i.id for i in scenario.instruments} | {p.id for p in scenario.amms}
        books_of_base: dict[str, list[str]] = {}
        for ins in scenario.instruments:
            if ins.kind == "spot":
                books_of_base.setdefault(ins.base, []).append(ins.id)

        def oracle_markets(ref: object) -> list[str]:
            if not isinstance(ref, str) or ref not in scenario.oracles:
                return []
            o = scenario.oracles[ref]
            srcs = o.sources if o.kind == "median" else [o.source]
            return [s for s in srcs if s in markets]

        for name, proto in scenario.protocols.items():
            refs: list[object] = []
            collateral_assets: list[str] = []
            if isinstance(proto, LendingConfig):
                for sym, res in proto.reserves.items():
                    refs.append(res.price)
                    if res.liquidation_threshold > 0:
                        collateral_assets.append(sym)
            elif isinstance(proto, CdpConfig):
                refs.append(proto.price)
                collateral_assets.append(proto.collateral)
            else:
                refs.append(proto.index_oracle)
                for ins in scenario.instruments:
                    if ins.kind == "perp" and ins.venue == name:
                        net.add_edge(name, ins.id, EdgeKind.LIQUIDITY)
            for sym in collateral_assets:
                src = issuer.get(sym)
                if src is not None and src != name:
                    net.add_edge(name, src, EdgeKind.COLLATERAL, 1.0, asset=sym)
                for book in books_of_base.get(sym, []):
                    net.add_edge(name, book, EdgeKind.LIQUIDITY, asset=sym)
            for ref in refs:
                for market in oracle_markets(ref):
                    net.add_edge(name, market, EdgeKind.ORACLE)

        for e in scenario.network.edges:
            net.add_edge(e.source, e.target, e.kind, e.weight, e.asset)
        return net

    @classmethod
    def generated(
        cls,
        n: int,
        topology: str,
        avg_degree: float,
        rng: np.random.Generator,
        *,
        prefix: str = "p",
        weights: np.ndarray | None = None,
        core_share: float = 0.2,
    ) -> ProtocolNetwork:
        """A network of ``n`` lending protocols with collateral edges from a generator.

        Args:
            n: Number of protocols (``<prefix>0`` ... ``<prefix>{n-1}``).
            topology: ``erdos_renyi``, ``scale_free`` or ``core_periphery``
                (see :func:`generate_topology`).
            avg_degree: Target mean out-degree.
            rng: The stream to draw the graph (and nothing else) from.
            prefix: Node name prefix.
            weights: Edge weights in the order of :func:`generate_topology`'s edges
                (default 1 each).
            core_share: Share of core nodes of a core-periphery graph.

        Returns:
            The network.
        """
        edges = generate_topology(n, topology, avg_degree, rng, core_share=core_share)
        net = cls()
        for k in range(n):
            net.add_node(f"{prefix}{k}", NodeType.LENDING)
        w = np.ones(len(edges)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(edges),):
            raise ValueError(f"need {len(edges)} weights, got shape {w.shape}")
        for (i, j), x in zip(edges, w, strict=True):
            net.add_edge(f"{prefix}{i}", f"{prefix}{j}", EdgeKind.COLLATERAL, float(x))
        return net


# ===================================================================================== generators
TOPOLOGIES = ("erdos_renyi", "scale_free", "core_periphery")


def generate_topology(
    n: int,
    topology: str,
    avg_degree: float,
    rng: np.random.Generator,
    *,
    core_share: float = 0.2,
) -> list[tuple[int, int]]:
    """Directed edges ``(i, j)`` of a seeded random graph on nodes ``0..n-1``, sorted.

    * ``erdos_renyi``: every ordered pair independently with probability
      ``avg_degree / (n - 1)`` (so the expected mean out-degree is ``avg_degree``).
    * ``scale_free``: Barabasi-Albert preferential attachment with ``m = max(1,
      round(avg_degree))`` links per new node; each undirected link gets a direction by a
      fair coin, so the mean out-degree is close to ``m`` and hubs are exposed to, and expose,
      many nodes.
    * ``core_periphery``: the first ``max(2, round(core_share * n))`` nodes form a complete
      core (both directions); each core-periphery pair is linked in both directions with the
      probability that makes the expected mean out-degree ``avg_degree`` (clipped to [0, 1]);
      periphery nodes are not linked to each other.

    Args:
        n: Number of nodes (>= 2).
        topology: One of :data:`TOPOLOGIES`.
        avg_degree: Target mean out-degree (>= 0, at most ``n - 1``).
        rng: The only source of randomness (a networkx seed is drawn from it).
        core_share: Share of core nodes (core-periphery only), in (0, 1).

    Returns:
        Sorted list of directed edges without self-loops.

    Raises:
        ValueError: On an unknown topology or out-of-range argument.
    """
    if n < 2:
        raise ValueError(f"a generated network needs n >= 2 nodes, got {n}")
    if not 0 <= avg_degree <= n - 1:
        raise ValueError(f"avg_degree must be in [0, n - 1] = [0, {n - 1}], got {avg_degree}")
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}; topologies are {list(TOPOLOGIES)}")
    seed = int(rng.integers(0, 2**32))
    if topology == "erdos_renyi":
        g = nx.gnp_random_graph(n, avg_degree / (n - 1), seed=seed, directed=True)
        edges = list(g.edges())
    elif topology == "scale_free":
        m = max(1, min(n - 1, round(avg_degree)))
        g = nx.barabasi_albert_graph(n, m, seed=seed)
        pairs = sorted((min(u, v), max(u, v)) for u, v in g.edges())
        flips = rng.random(len(pairs)) < 0.5
        edges = [(v, u) if f else (u, v) for (u, v), f in zip(pairs, flips, strict=True)]
    else:
        if not 0 < core_share < 1:
            raise ValueError(f"core_share must be in (0, 1), got {core_share}")
        nc = min(n, max(2, round(core_share * n)))
        npp = n - nc
        core = [(i, j) for i in range(nc) for j in range(nc) if i != j]
        p = 0.0
        if npp:
            p = min(1.0, max(0.0, (avg_degree * n - nc * (nc - 1)) / (2 * npp * nc)))
        links = rng.random((npp, nc)) < p
        edges = list(core)
        for a, c in zip(*np.nonzero(links), strict=True):
            edges += [(nc + int(a), int(c)), (int(c), nc + int(a))]
    return sorted((int(u), int(v)) for u, v in edges if u != v)


# ===================================================================================== clearing
@dataclasses.dataclass(frozen=True)
class ClearingResult:
    """The Eisenberg-Noe clearing vector and how it was reached.

    Attributes:
        payments: ``p_i``, what node i pays in total (to other nodes and outside creditors).
        obligations: ``pbar_i``, what node i owes in total.
        equity: ``e_i + sum_j Pi[j, i] p_j - p_i`` at the clearing vector (>= 0 up to
            rounding; 0 for a defaulter).
        defaulted: ``p_i < pbar_i``.
        wave: Round of the fictitious default algorithm in which node i defaulted (1 = the
            nodes that default even when everyone else pays in full); 0 for nodes that do not
            default.
        rounds: Rounds the algorithm ran (the last one finds no new defaulter).
    """

    payments: np.ndarray
    obligations: np.ndarray
    equity: np.ndarray
    defaulted: np.ndarray
    wave: np.ndarray
    rounds: int

    @property
    def losses(self) -> np.ndarray:
        """Shortfall ``pbar_i - p_i`` of each node's creditors."""
        return self.obligations - self.payments


def eisenberg_noe(
    liabilities: np.ndarray,
    external_assets: np.ndarray,
    external_liabilities: np.ndarray | None = None,
    *,
    tol: float = 1e-12,
) -> ClearingResult:
    """Clearing payments of mutually indebted nodes (Eisenberg and Noe 2001).

    ``L[i, j]`` is what i owes j; ``b_i`` what i owes outside creditors; ``pbar_i = sum_j
    L[i, j] + b_i``; ``Pi[i, j] = L[i, j] / pbar_i`` (0 when ``pbar_i = 0``). The clearing
    vector is the greatest ``p`` with ``p_i = min(pbar_i, e_i + sum_j Pi[j, i] p_j)``.

    Fictitious default algorithm: start from ``p = pbar`` with no defaulter; each round, the
    nodes whose assets ``e_i + sum_j Pi[j, i] p_j`` fall short of ``pbar_i`` are the
    defaulters; the defaulters' payments are re-solved from the linear system ``p_D = e_D +
    Pi[:, D]^T p`` (the others pay in full); stop when the set of defaulters stops growing. A
    node first found short in round k defaulted in wave k: it defaulted only because the
    nodes of waves < k paid less than they owed.

    Args:
        liabilities: ``L``, square, non-negative, zero diagonal.
        external_assets: ``e``, non-negative.
        external_liabilities: ``b``, non-negative (default 0).
        tol: A node is short when its assets fall below its obligations by more than
            ``tol * max(1, pbar_i)``.

    Returns:
        The clearing vector with waves.

    Raises:
        ValueError: On shapes or negative entries.

    Examples:
        >>> r = eisenberg_noe(np.array([[0.0, 10.0], [0.0, 0.0]]), np.array([4.0, 0.0]))
        >>> r.payments.tolist(), r.wave.tolist()
        ([4.0, 0.0], [1, 0])
    """
    L = np.asarray(liabilities, dtype=np.float64)
    e = np.asarray(external_assets, dtype=np.float64)
    n = e.shape[0]
    b = np.zeros(n) if external_liabilities is None else np.asarray(external_liabilities, float)
    if L.shape != (n, n) or b.shape != (n,):
        raise ValueError(
            f"liabilities must be {n}x{n} and external_liabilities length {n}; got "
            f"{L.shape} and {b.shape}"
        )
    if (L < 0).any() or (e < 0).any() or (b < 0).any() or np.diag(L).any():
        raise ValueError("liabilities and assets must be >= 0 and no node may owe itself")
    pbar = L.sum(axis=1) + b
    with np.errstate(invalid="ignore", divide="ignore"):
        Pi = np.where(pbar[:, None] > 0, L / pbar[:, None], 0.0)
    p = pbar.copy()
    wave = np.zeros(n, dtype=np.int64)
    defaulted = np.zeros(n, dtype=bool)
    rounds = 0
    while True:
        rounds += 1
        assets = e + Pi.T @ p
        short = assets < pbar - tol * np.maximum(1.0, pbar)
        new = short & ~defaulted
        if not new.any():
            break
        wave[new] = rounds
        defaulted |= new
        p = _solve_defaulters(Pi, e, pbar, defaulted)
    equity = e + Pi.T @ p - p
    return ClearingResult(p, pbar, equity, defaulted, wave, rounds)


def _solve_defaulters(Pi: np.ndarray, e: np.ndarray, pbar: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Payments when the nodes in ``d`` pay all they have and the others pay in full."""
    p = pbar.copy()
    idx = np.flatnonzero(d)
    ok = np.flatnonzero(~d)
    A = np.eye(idx.size) - Pi[np.ix_(idx, idx)].T
    rhs = e[idx] + Pi[np.ix_(ok, idx)].T @ pbar[ok]
    try:
        sol = np.linalg.solve(A, rhs)
    except np.linalg.LinAlgError:
        # A closed ring of defaulters with no outside creditor: the greatest fixed point
        # is reached by iterating down from pbar (Eisenberg and Noe's monotone map).
        sol = pbar[idx].copy()
        for _ in range(10_000):
            nxt = np.minimum(pbar[idx], rhs + Pi[np.ix_(idx, idx)].T @ sol)
            if np.allclose(nxt, sol, rtol=0, atol=1e-12):
                break
            sol = nxt
    p[idx] = np.clip(sol, 0.0, pbar[idx])
    return p


# ===================================================================================== DebtRank
@dataclasses.dataclass(frozen=True)
class DebtRankResult:
    """Outcome of one DebtRank propagation.

    Attributes:
        distress: Final distress ``h_i`` in [0, 1].
        debtrank: ``sum_j h_j(T) v_j - sum_j h_j(1) v_j``: value of the distress induced in
            the network beyond the initial shock.
        rounds: Propagation rounds until no node was distressed.
    """

    distress: np.ndarray
    debtrank: float
    rounds: int


def debtrank(
    exposures: np.ndarray,
    equity: np.ndarray,
    shocked: Iterable[int] | Mapping[int, float],
    value: np.ndarray | None = None,
) -> DebtRankResult:
    """DebtRank (Battiston, Puliga, Kaushik, Tasca and Caldarelli 2012).

    ``A[i, j]`` is i's exposure to j (i loses up to ``A[i, j]`` if j fails); the impact of j
    on i is ``W[j, i] = min(1, A[i, j] / E_i)``. Each node is Undistressed, Distressed or
    Inactive. The shocked nodes start Distressed with ``h = psi`` (1 unless a mapping gives
    it). Each round every node updates ``h_i <- min(1, h_i + sum_{j Distressed} W[j, i] h_j)``
    using the previous round's values; a Distressed node becomes Inactive (it passes its
    distress on once), an Undistressed node whose ``h`` became positive becomes Distressed.
    The run stops when no node is Distressed. Nodes with no equity (``E_i <= 0``) are fully
    hit by any exposure.

    Args:
        exposures: ``A``, square, non-negative.
        equity: ``E``, each node's capital buffer.
        shocked: Initially distressed nodes (indices), or index -> initial distress.
        value: Economic value of each node (relative weights; normalised to sum 1). Default:
            equal weights.

    Returns:
        Final distress and the DebtRank.
    """
    A = np.asarray(exposures, dtype=np.float64)
    E = np.asarray(equity, dtype=np.float64)
    n = E.shape[0]
    if A.shape != (n, n) or (A < 0).any():
        raise ValueError(f"exposures must be a non-negative {n}x{n} matrix, got {A.shape}")
    v = np.full(n, 1.0 / n) if value is None else np.asarray(value, dtype=np.float64)
    total = v.sum()
    v = v / total if total > 0 else np.full(n, 1.0 / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(E[:, None] > 0, A / E[:, None], np.where(A > 0, 1.0, 0.0))
    impact = np.minimum(1.0, ratio)  # impact[i, j] = W[j, i]
    np.fill_diagonal(impact, 0.0)
    h = np.zeros(n)
    seeds = shocked.items() if isinstance(shocked, Mapping) else ((i, 1.0) for i in shocked)
    for i, psi in seeds:
        h[int(i)] = min(1.0, max(0.0, float(psi)))
    h1 = h.copy()
    distressed = h > 0
    inactive = np.zeros(n, dtype=bool)
    rounds = 0
    while distressed.any():
        rounds += 1
        h_new = np.minimum(1.0, h + impact[:, distressed] @ h[distressed])
        inactive |= distressed
        distressed = (h_new > 0) & ~inactive
        h = h_new
    return DebtRankResult(h, float(h @ v - h1 @ v), rounds)


def debtrank_all(
    exposures: np.ndarray, equity: np.ndarray, value: np.ndarray | None = None
) -> np.ndarray:
    """DebtRank of each node: :func:`debtrank` with that node alone fully distressed."""
    n = np.asarray(equity).shape[0]
    return np.array([debtrank(exposures, equity, [i], value).debtrank for i in range(n)])
