"""Figures of one stored run, drawn from its results folder only (never from a model).

Every figure function takes a :class:`StoredRun` (the Parquet, TOML and JSON files of a run
folder, read lazily) and returns a :class:`matplotlib.figure.Figure`, or raises
:class:`FigureSkipped` with the reason when the run lacks what the figure needs (a run
without a perp venue has no funding to draw; a run recorded before the liquidation map was
stored has no heatmap). :data:`FIGURES` lists them in report order; :func:`draw_figures`
draws them all and :func:`write_figures` saves them as PNG files.

Figures are made with matplotlib's object API (``Figure`` and its Agg canvas, no pyplot and
no screen), so drawing never changes global state (no backend switch, no rcParams). None of
these figure types needs seaborn, and leaving it out keeps its import (about a second) off
every ``marginsim run``.

Decisions:
    - Time axes are in steps, the unit every table of the run uses; the axis label gives the
      step length.
    - Prices are the primary book's (the first spot instrument), in its quote per base.
    - Margin debt uses the ``margin_debt*`` metrics when the run has them; older runs fall
      back to the per-protocol columns that always existed (``<pool>_debt_value``,
      ``<cdp>_debt``, ``<venue>_margin_debt``), and the figure says so in its title.
    - The cascade size distribution is drawn as a complementary CDF (share of episodes at
      least that large) on log-log axes: unlike a histogram it needs no binning and shows a
      power-law tail as a straight line even with few episodes.
    - The network layout is networkx's spring layout seeded with the run's seed, so the same
      run always gives the same picture.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import tomllib
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

__all__ = [
    "FIGURES",
    "DrawnFigure",
    "FigureSkipped",
    "FigureSpec",
    "StoredRun",
    "draw_figures",
    "figure_png",
    "network_figure",
    "plot_network",
    "write_figures",
]

logger = logging.getLogger(__name__)

_DPI = 100
_WIDE = (10.0, 4.2)
_TALL = (10.0, 6.4)


class FigureSkipped(Exception):
    """The run lacks what a figure needs; the message says what (shown in the report)."""


class StoredRun:
    """A run folder as written by :func:`marginsim.experiments.store.write_run`.

    Tables are read on first use and kept. Event tables are looked up in ``events/`` first
    and then beside ``metrics.parquet``.

    Args:
        folder: The run folder (holding ``metrics.parquet``).

    Raises:
        FileNotFoundError: If the folder has no ``metrics.parquet``.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not (self.folder / "metrics.parquet").is_file():
            raise FileNotFoundError(f"{self.folder} is not a run folder (no metrics.parquet)")
        self._tables: dict[str, pd.DataFrame | None] = {}

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """The per-step metrics."""
        return pd.read_parquet(self.folder / "metrics.parquet")

    def table_path(self, name: str) -> Path | None:
        """Where the event table ``name`` is stored, or None if the run has no such table."""
        for path in (self.folder / "events" / f"{name}.parquet", self.folder / f"{name}.parquet"):
            if path.is_file():
                return path
        return None

    def table_names(self) -> list[str]:
        """Names of the event tables stored with the run, sorted."""
        names = {p.stem for p in (self.folder / "events").glob("*.parquet")}
        names |= {p.stem for p in self.folder.glob("*.parquet")} - {"metrics"}
        return sorted(names)

    def table(self, name: str) -> pd.DataFrame | None:
        """The event table ``name``, or None if the run has no such table."""
        if name not in self._tables:
            path = self.table_path(name)
            self._tables[name] = None if path is None else pd.read_parquet(path)
        return self._tables[name]

    @cached_property
    def summary(self) -> dict[str, Any]:
        """``summary.json`` (empty if missing)."""
        path = self.folder / "summary.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """``manifest.json`` (empty if missing)."""
        path = self.folder / "manifest.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    @cached_property
    def scenario_text(self) -> str:
        """``scenario.toml`` as written (empty if missing)."""
        path = self.folder / "scenario.toml"
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    @cached_property
    def scenario(self) -> dict[str, Any]:
        """``scenario.toml`` parsed (empty if missing or unreadable)."""
        try:
            return tomllib.loads(self.scenario_text)
        except tomllib.TOMLDecodeError:
            return {}

    @property
    def name(self) -> str:
        """The scenario's name (the folder's name if unknown)."""
        return str(self.scenario.get("name") or self.summary.get("scenario") or self.folder.name)

    @property
    def seed(self) -> int:
        """The run's seed (0 if unknown)."""
        return int(self.scenario.get("run", {}).get("seed", self.summary.get("seed", 0)) or 0)

    @property
    def step_seconds(self) -> float | None:
        """Length of one step in seconds, if known."""
        value = self.scenario.get("run", {}).get("step_seconds")
        return float(value) if value is not None else None

    @property
    def primary_pair(self) -> tuple[str, str]:
        """Base and quote symbol of the primary book (first spot instrument)."""
        for inst in self.scenario.get("instruments", []):
            if inst.get("kind", "spot") == "spot":
                return str(inst.get("base", "base")), str(inst.get("quote", "quote"))
        return "base", "quote"

    def protocols(self, kind: str) -> list[str]:
        """Names of the scenario's protocols of one kind (``lending``, ``cdp``, ``perp``)."""
        protocols = self.scenario.get("protocols", {})
        return [name for name, p in protocols.items() if p.get("kind") == kind]

    @property
    def step_label(self) -> str:
        """Axis label of a step axis."""
        seconds = self.step_seconds
        return f"step ({seconds:g} s each)" if seconds else "step"


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """One figure of the report.

    Attributes:
        id: Stable identifier (file name ``<id>.png``, HTML ids ``fig-<id>``).
        title: What the figure shows.
        draw: Draws the figure from a stored run; raises :class:`FigureSkipped`.
    """

    id: str
    title: str
    draw: Callable[[StoredRun], Figure]


@dataclasses.dataclass(frozen=True)
class DrawnFigure:
    """A figure drawn for a run, or the reason it was not.

    Attributes:
        spec: Which figure.
        png: The PNG bytes, or None if skipped.
        note: Why it was skipped (empty when drawn).
    """

    spec: FigureSpec
    png: bytes | None
    note: str = ""


def _new_figure(size: tuple[float, float], rows: int = 1, cols: int = 1, **kw: Any) -> Any:
    fig = Figure(figsize=size, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _finite(series: pd.Series) -> bool:
    return bool(np.isfinite(series.to_numpy(dtype=float)).any())


def _columns(metrics: pd.DataFrame, names: list[str]) -> list[str]:
    return [c for c in names if c in metrics.columns and _finite(metrics[c])]


# -- price -------------------------------------------------------------------------------


def _liquidations_per_step(run: StoredRun) -> pd.Series:
    """Liquidations per step: the liquidations table if stored, else the metrics column."""
    table = run.table("liquidations")
    if table is not None and "step" in table.columns:
        return table.groupby("step").size().astype(float)
    metrics = run.metrics
    if "liquidations" in metrics.columns:
        counts = metrics.set_index("step")["liquidations"].astype(float)
        return counts[counts > 0]
    return pd.Series(dtype=float)


def draw_price(run: StoredRun) -> Figure:
    """Book mid and last price with the fundamental (index), liquidations and shocks marked."""
    m = run.metrics
    if not _columns(m, ["mid_price", "index_price"]):
        raise FigureSkipped("no mid or index price recorded")
    base, quote = run.primary_pair
    fig, axes = _new_figure(_WIDE)
    ax = axes[0, 0]
    if _finite(m["index_price"]):
        ax.plot(m["step"], m["index_price"], color="0.35", lw=1.2, ls="--", label="index")
    if "mid_price" in m.columns and _finite(m["mid_price"]):
        ax.plot(m["step"], m["mid_price"], color="C0", lw=1.0, label=f"{base}-{quote} mid")
    per_step = _liquidations_per_step(run)
    if len(per_step):
        price = m.set_index("step")["mid_price"].reindex(per_step.index)
        price = price.fillna(m.set_index("step")["index_price"].reindex(per_step.index))
        sizes = 12.0 + 40.0 * np.sqrt(per_step.to_numpy() / per_step.max())
        ax.scatter(
            per_step.index,
            price,
            s=sizes,
            color="C3",
            alpha=0.7,
            zorder=3,
            label=f"liquidations ({int(per_step.sum()):,}; marker area ~ count)",
        )
    shocks = run.table("shocks")
    if shocks is not None and len(shocks):
        for i, step in enumerate(sorted(set(shocks["step"].tolist()))):
            ax.axvline(step, color="C1", lw=0.9, alpha=0.7, label="shock" if i == 0 else None)
    ax.set_title(f"{run.name}: price of {base} with the fundamental and liquidations")
    ax.set_xlabel(run.step_label)
    ax.set_ylabel(f"price ({quote} per {base})")
    ax.legend(loc="best", fontsize="small")
    return fig


# -- margin debt and leverage -------------------------------------------------------------


def _margin_debt_columns(run: StoredRun) -> tuple[list[str], dict[str, str], bool]:
    m = run.metrics
    if "margin_debt" in m.columns:
        parts = _columns(m, ["margin_debt_lending", "margin_debt_cdp", "margin_debt_perp"])
        labels = {c: c.removeprefix("margin_debt_") for c in parts}
        labels["margin_debt"] = "total"
        return ["margin_debt", *parts], labels, True
    labels = {}
    for name in run.protocols("lending"):
        labels[f"{name}_debt_value"] = f"{name} (lending)"
    for name in run.protocols("cdp"):
        labels[f"{name}_debt"] = f"{name} (CDP)"
    for name in run.protocols("perp"):
        labels[f"{name}_margin_debt"] = f"{name} (perp)"
    cols = _columns(m, list(labels))
    return cols, labels, False


def draw_margin_debt(run: StoredRun) -> Figure:
    """Margin debt (total and by kind or protocol) and leverage over time."""
    m = run.metrics
    debt_cols, labels, recorded = _margin_debt_columns(run)
    lev_cols = _columns(m, ["leverage", "leverage_p50", "leverage_p90", "leverage_p99"])
    if not debt_cols and not lev_cols:
        raise FigureSkipped("no margin debt or leverage columns recorded (no protocols?)")
    _, quote = run.primary_pair
    rows = 2 if lev_cols else 1
    fig, axes = _new_figure(_TALL if lev_cols else _WIDE, rows, 1, sharex=True)
    ax = axes[0, 0]
    if debt_cols:
        for col in debt_cols:
            style = {"lw": 2.0, "color": "k"} if col == "margin_debt" else {"lw": 1.1}
            ax.plot(m["step"], m[col], label=labels.get(col, col), **style)
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "margin debt not recorded", ha="center", transform=ax.transAxes)
    source = "margin_debt metrics" if recorded else "per-protocol debt columns"
    ax.set_title(f"{run.name}: margin debt ({source})")
    ax.set_ylabel(f"margin debt ({quote})")
    if lev_cols:
        ax2 = axes[1, 0]
        names = {
            "leverage": "aggregate (notional / equity)",
            "leverage_p50": "accounts: median",
            "leverage_p90": "accounts: 90th percentile",
            "leverage_p99": "accounts: 99th percentile",
        }
        for col in lev_cols:
            ax2.plot(m["step"], m[col], lw=2.0 if col == "leverage" else 1.0, label=names[col])
        ax2.set_title("leverage of leveraged accounts")
        ax2.set_ylabel("leverage (x)")
        ax2.legend(loc="best", fontsize="small")
    axes[-1, 0].set_xlabel(run.step_label)
    return fig


# -- liquidation heatmap -------------------------------------------------------------------


def draw_liquidation_heatmap(run: StoredRun) -> Figure:
    """Debt that would become liquidatable at each price (long + short side), over time."""
    table = run.table("liquidation_map")
    if table is None:
        raise FigureSkipped("the run has no liquidation_map table")
    need = {"step", "price", "long_debt", "short_debt"}
    if not need <= set(table.columns):
        raise FigureSkipped(f"liquidation_map lacks columns {sorted(need - set(table.columns))}")
    table = table[np.isfinite(table["price"]) & (table["price"] > 0)]
    if table.empty:
        raise FigureSkipped("the liquidation_map table is empty")
    steps = np.sort(table["step"].unique())
    lo, hi = float(table["price"].min()), float(table["price"].max())
    if hi <= lo:
        hi = lo * 1.01 + 1e-9
    # The grid follows the price, so each recorded step has its own price points: put every
    # step on one common grid by linear interpolation (NaN outside the step's own range).
    grid = np.linspace(lo, hi, 120)
    z = np.full((grid.size, steps.size), np.nan)
    for j, (_, rows) in enumerate(table.groupby("step", sort=True)):
        rows = rows.sort_values("price")
        debt = rows["long_debt"].fillna(0.0) + rows["short_debt"].fillna(0.0)
        z[:, j] = np.interp(grid, rows["price"], debt, left=np.nan, right=np.nan)
    if steps.size > 1:
        mids = (steps[1:] + steps[:-1]) / 2.0
        x_edges = np.concatenate(
            [[steps[0] - (mids[0] - steps[0])], mids, [steps[-1] + (steps[-1] - mids[-1])]]
        )
    else:
        x_edges = np.array([steps[0] - 0.5, steps[0] + 0.5])
    step_y = grid[1] - grid[0]
    y_edges = np.concatenate([grid - step_y / 2, [grid[-1] + step_y / 2]])
    positive = z[np.isfinite(z) & (z > 0)]
    if positive.size == 0:
        raise FigureSkipped("the liquidation map holds no debt at any price (nothing leveraged)")
    # Log colours: debt at a level spans orders of magnitude; floor at 1e-4 of the maximum.
    norm = LogNorm(vmin=max(positive.min(), positive.max() * 1e-4), vmax=positive.max())
    base, quote = run.primary_pair
    fig, axes = _new_figure(_WIDE)
    ax = axes[0, 0]
    mesh = ax.pcolormesh(
        x_edges, y_edges, np.where(z > 0, z, np.nan), cmap="magma", norm=norm, shading="flat"
    )
    fig.colorbar(mesh, ax=ax, label=f"liquidatable debt ({quote}, log scale)")
    m = run.metrics
    if "mid_price" in m.columns and _finite(m["mid_price"]):
        ax.plot(m["step"], m["mid_price"], color="C0", lw=1.0, label="book mid")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_title(
        f"{run.name}: liquidation heatmap (debt liquidatable if {base} moved to that price)"
    )
    ax.set_xlabel(run.step_label)
    ax.set_ylabel(f"price ({quote} per {base})")
    ax.set_ylim(lo, hi)
    return fig


# -- order-book depth ----------------------------------------------------------------------


def draw_depth(run: StoredRun) -> Figure:
    """Resting depth near the mid on each side, and the spread, over time."""
    m = run.metrics
    depth = _columns(
        m,
        [f"depth_{side}_{pct}pct" for pct in (1, 2, 5) for side in ("bid", "ask")],
    )
    if not depth:
        raise FigureSkipped("no depth columns recorded")
    base, _ = run.primary_pair
    has_spread = "spread_bps" in m.columns and _finite(m["spread_bps"])
    fig, axes = _new_figure(_TALL if has_spread else _WIDE, 2 if has_spread else 1, 1, sharex=True)
    ax = axes[0, 0]
    colours = {"1": "C0", "2": "C2", "5": "C4"}
    for col in depth:
        _, side, pct = col.split("_")
        pct = pct.removesuffix("pct")
        ax.plot(
            m["step"],
            m[col],
            color=colours[pct],
            ls="-" if side == "bid" else ":",
            lw=1.0,
            label=f"{side} within {pct}%",
        )
    ax.set_title(f"{run.name}: order-book depth near the mid")
    ax.set_ylabel(f"resting size ({base})")
    ax.legend(loc="best", fontsize="small", ncol=3)
    if has_spread:
        ax2 = axes[1, 0]
        ax2.plot(m["step"], m["spread_bps"], color="C1", lw=0.8)
        ax2.set_title("bid-ask spread")
        ax2.set_ylabel("spread (bps)")
    axes[-1, 0].set_xlabel(run.step_label)
    return fig


# -- funding and open interest -------------------------------------------------------------


def draw_funding_open_interest(run: StoredRun) -> Figure:
    """Each perp contract's funding rate and open interest over time."""
    m = run.metrics
    funding = [c for c in m.columns if c.endswith("_funding_rate") and _finite(m[c])]
    oi = [c for c in m.columns if c.endswith("_open_interest_long") and _finite(m[c])]
    if not funding and not oi:
        raise FigureSkipped("no perp venue in this run (no funding or open interest columns)")
    fig, axes = _new_figure(_TALL, 2, 1, sharex=True)
    ax = axes[0, 0]
    for col in funding:
        ax.step(
            m["step"], 100.0 * m[col], where="post", lw=1.1, label=col.removesuffix("_funding_rate")
        )
    table = run.table("funding")
    if table is not None and len(table) and "step" in table.columns:
        for i, step in enumerate(sorted(set(table["step"].tolist()))):
            ax.axvline(step, color="0.6", lw=0.6, ls=":", label="funding paid" if i == 0 else None)
    ax.axhline(0.0, color="0.3", lw=0.6)
    ax.set_title(f"{run.name}: perp funding rate (last paid, per interval)")
    ax.set_ylabel("funding rate (% per interval)")
    if funding:
        ax.legend(loc="best", fontsize="small")
    ax2 = axes[1, 0]
    for col in oi:
        ax2.plot(m["step"], m[col], lw=1.1, label=col.removesuffix("_open_interest_long"))
    ax2.set_title("open interest (longs = shorts)")
    ax2.set_ylabel("open interest (base units)")
    if oi:
        ax2.legend(loc="best", fontsize="small")
    ax2.set_xlabel(run.step_label)
    return fig


# -- cascade sizes -------------------------------------------------------------------------


def _cascade_sizes(run: StoredRun) -> tuple[np.ndarray, str]:
    table = run.table("cascades")
    if table is not None and "liquidations" in table.columns and len(table):
        return table["liquidations"].to_numpy(
            dtype=float
        ), "cascades table: liquidations per episode"
    per_step = _liquidations_per_step(run)
    return per_step.to_numpy(dtype=float), "liquidations per step"


def draw_cascade_sizes(run: StoredRun) -> Figure:
    """Complementary CDF of cascade sizes on log-log axes."""
    sizes, source = _cascade_sizes(run)
    sizes = sizes[np.isfinite(sizes) & (sizes > 0)]
    if sizes.size == 0:
        raise FigureSkipped("no liquidations in this run, so no cascades")
    values = np.sort(sizes)
    # P(size >= x) at each distinct size: the share of episodes at least that large.
    distinct = np.unique(values)
    ccdf = 1.0 - np.searchsorted(values, distinct, side="left") / values.size
    fig, axes = _new_figure(_WIDE)
    ax = axes[0, 0]
    ax.loglog(distinct, ccdf, marker="o", ls="-", lw=0.8, color="C3")
    ax.set_title(f"{run.name}: cascade size distribution ({values.size:,} episodes; {source})")
    ax.set_xlabel("cascade size (liquidations)")
    ax.set_ylabel("P(size >= x)")
    ax.grid(True, which="both", alpha=0.3)
    return fig


# -- protocol network ----------------------------------------------------------------------


def draw_network(run: StoredRun) -> Figure:
    """The protocol network, node colour by bad debt, defaulted nodes outlined."""
    nodes = run.table("network_nodes")
    edges = run.table("network_edges")
    if nodes is None or edges is None:
        raise FigureSkipped("the run has no network_nodes / network_edges tables")
    if nodes.empty:
        raise FigureSkipped("the network_nodes table is empty")
    _, quote = run.primary_pair
    return network_figure(edges, nodes, seed=run.seed, title=run.name, unit=quote)


#: Above this many nodes the drawing shrinks the nodes and leaves out the labels.
_LABELLED_NODES = 30


def network_figure(
    edges: pd.DataFrame,
    nodes: pd.DataFrame,
    *,
    seed: int = 0,
    title: str = "",
    unit: str = "unit of account",
) -> Figure:
    """Draw a protocol network from its ``network_edges`` and ``network_nodes`` tables.

    The one drawing of a network: the run report's ``network`` figure and the network
    studies' example networks both use it. Nodes are coloured by ``bad_debt`` (in the table's
    order), defaulted nodes get a thick black outline, each exposure kind is drawn in its own
    colour, line style and curvature (two nodes may be linked in several ways), and the
    widths of ``collateral`` edges grow with their weight (the largest value posted along the
    edge). The layout is networkx's spring layout seeded with ``seed``, so the same tables
    give the same picture. Networks of more than 30 nodes are drawn with small unlabelled
    nodes.

    Args:
        edges: Columns ``source``, ``target``, ``kind`` and ``weight`` (``kind`` and
            ``weight`` optional).
        nodes: Columns ``node``, ``bad_debt`` and optionally ``defaulted``.
        seed: Layout seed.
        title: First line of the title (the run's or study's name).
        unit: Unit of the bad-debt colour bar.

    Returns:
        The figure (Agg canvas, no pyplot).
    """
    import networkx as nx
    from matplotlib.lines import Line2D

    graph = nx.DiGraph()
    for node in nodes["node"]:
        graph.add_node(str(node))
    # Two protocols can be linked in several ways (a pool both reads a book's mid and sells
    # on it): keep every (source, target) pair per kind, and draw each kind on its own curve.
    by_kind: dict[str, dict[tuple[str, str], float]] = {}
    for row in edges.itertuples(index=False):
        u, v = str(row.source), str(row.target)
        graph.add_edge(u, v)
        pairs = by_kind.setdefault(str(getattr(row, "kind", "")), {})
        weight = float(getattr(row, "weight", 1.0))
        pairs[u, v] = max(pairs.get((u, v), 0.0), weight)
    n = graph.number_of_nodes()
    labelled = n <= _LABELLED_NODES
    node_size = 900 if labelled else 120
    # A longer spring than networkx's default 1/sqrt(n) keeps linked nodes from touching.
    pos = nx.spring_layout(graph, k=2.0 / math.sqrt(max(n, 1)), seed=seed)
    loss = nodes.set_index(nodes["node"].astype(str))
    bad = loss["bad_debt"].reindex(list(graph.nodes)).fillna(0.0).to_numpy(dtype=float)
    defaulted = (
        loss["defaulted"].reindex(list(graph.nodes)).fillna(False).astype(bool).to_numpy()
        if "defaulted" in loss.columns
        else np.zeros(len(bad), dtype=bool)
    )
    fig, axes = _new_figure((8.0, 6.0))
    ax = axes[0, 0]
    styles = ["solid", "dashed", "dotted", "dashdot"]
    curves = [0.0, 0.2, -0.2, 0.4, -0.4]
    handles = []
    for i, kind in enumerate(sorted(by_kind)):
        style, colour = styles[i % len(styles)], f"C{i % 10}"
        edgelist = sorted(by_kind[kind])
        width: float | list[float] = 1.0
        if kind == "collateral":
            w = np.array([by_kind[kind][e] for e in edgelist], dtype=float)
            if w.size and w.max() > 0:
                width = (0.5 + 3.0 * w / w.max()).tolist()
        nx.draw_networkx_edges(
            graph,
            pos,
            ax=ax,
            edgelist=edgelist,
            width=width,
            style=style,
            edge_color=colour,
            arrows=True,
            node_size=node_size,
            connectionstyle=f"arc3,rad={curves[i % len(curves)]}",
        )
        # Arrow patches carry no legend label: one proxy line per exposure kind.
        handles.append(Line2D([], [], color=colour, ls=style, label=f"{kind} exposure"))
    vmax = float(bad.max()) if bad.size and bad.max() > 0 else 1.0
    drawn = nx.draw_networkx_nodes(
        graph,
        pos,
        ax=ax,
        node_color=bad,
        cmap="Reds",
        vmin=0.0,
        vmax=vmax,
        edgecolors=["black" if d else "0.6" for d in defaulted],
        linewidths=[2.5 if d else 0.8 for d in defaulted],
        node_size=node_size,
    )
    if labelled:
        nx.draw_networkx_labels(
            graph, pos, ax=ax, font_size=8, bbox={"facecolor": "white", "alpha": 0.75, "lw": 0}
        )
    fig.colorbar(drawn, ax=ax, label=f"bad debt ({unit})")
    ax.set_title(
        f"{title}: protocol network, u -> v when u is exposed to v\n"
        f"colour = bad debt, thick outline = defaulted ({int(defaulted.sum())} of "
        f"{len(defaulted)} nodes)"
    )
    if handles:
        ax.legend(handles=handles, loc="best", fontsize="small")
    ax.margins(0.12)  # room for the labels of nodes on the rim
    ax.set_axis_off()
    return fig


def plot_network(
    edges: pd.DataFrame,
    nodes: pd.DataFrame,
    path: str | Path,
    *,
    seed: int = 0,
    title: str = "network",
    unit: str = "unit of account",
) -> Path:
    """Draw a network with :func:`network_figure` and save it as a PNG.

    Args:
        edges: The ``network_edges`` table.
        nodes: The ``network_nodes`` table.
        path: PNG to write.
        seed: Layout seed.
        title: First line of the title.
        unit: Unit of the bad-debt colour bar.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.write_bytes(figure_png(network_figure(edges, nodes, seed=seed, title=title, unit=unit)))
    return path


# -- returns -------------------------------------------------------------------------------


def _autocorrelation(x: np.ndarray, lags: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    denom = float(np.dot(x, x))
    if denom == 0.0:
        return np.zeros(lags.size)
    return np.array([float(np.dot(x[: x.size - k], x[k:])) / denom for k in lags])


def draw_returns(run: StoredRun) -> Figure:
    """Distribution of the mid's one-step log returns and their autocorrelation."""
    mid = run.metrics["mid_price"].to_numpy(dtype=float) if "mid_price" in run.metrics else None
    if mid is None:
        raise FigureSkipped("no mid price recorded")
    mid = mid[np.isfinite(mid) & (mid > 0)]
    returns = np.diff(np.log(mid))
    if returns.size < 10:
        raise FigureSkipped(f"only {returns.size} returns: too few for a distribution")
    bps = 1e4 * returns
    fig, axes = _new_figure(_WIDE, 1, 2)
    ax = axes[0, 0]
    # One filled step outline instead of 60 bar patches: same picture, a fraction of the
    # drawing time.
    ax.hist(
        bps, bins=60, density=True, histtype="stepfilled", color="C0", alpha=0.7, label="returns"
    )
    std = float(bps.std())
    if std > 0:
        x = np.linspace(bps.min(), bps.max(), 200)
        ax.plot(
            x,
            np.exp(-0.5 * ((x - bps.mean()) / std) ** 2) / (std * math.sqrt(2 * math.pi)),
            color="C3",
            lw=1.2,
            label="normal, same mean and sd",
        )
    ax.set_yscale("log")
    ax.set_title(f"one-step log returns of the mid (n = {bps.size:,})")
    ax.set_xlabel("log return (bps)")
    ax.set_ylabel("density (log scale)")
    ax.legend(loc="best", fontsize="small")
    ax2 = axes[0, 1]
    max_lag = int(min(50, returns.size // 2))
    lags = np.arange(1, max_lag + 1)
    for offset, series, colour, label in (
        (-0.15, returns, "C0", "returns"),
        (0.15, np.abs(returns), "C1", "|returns|"),
    ):
        acf = _autocorrelation(series, lags)
        ax2.vlines(lags + offset, 0.0, acf, color=colour, lw=1.6)
        ax2.plot(lags + offset, acf, "o", color=colour, ms=2.5, label=label)
    band = 1.96 / math.sqrt(returns.size)
    ax2.axhspan(-band, band, color="0.85", alpha=0.6, zorder=0, label="95% band (no correlation)")
    ax2.axhline(0.0, color="0.3", lw=0.6)
    ax2.set_title("autocorrelation")
    ax2.set_xlabel("lag (steps)")
    ax2.set_ylabel("autocorrelation")
    ax2.legend(loc="best", fontsize="small")
    fig.suptitle(f"{run.name}: return distribution and autocorrelation")
    return fig


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("price", "Price, fundamental and liquidations", draw_price),
    FigureSpec("margin_debt", "Margin debt and leverage", draw_margin_debt),
    FigureSpec("liquidation_heatmap", "Liquidation heatmap", draw_liquidation_heatmap),
    FigureSpec("depth", "Order-book depth and spread", draw_depth),
    FigureSpec("funding_open_interest", "Funding and open interest", draw_funding_open_interest),
    FigureSpec("cascade_sizes", "Cascade size distribution", draw_cascade_sizes),
    FigureSpec("network", "Protocol network and losses", draw_network),
    FigureSpec("returns", "Return distribution and autocorrelation", draw_returns),
)
"""The figures of a run report, in order."""


def draw_figures(run: StoredRun | str | Path) -> list[DrawnFigure]:
    """Draw every figure of :data:`FIGURES` for a stored run.

    A figure the run lacks data for is skipped with the reason; a figure that fails to draw
    is skipped too, with the error as its note (and a logged warning), so one bad figure
    never costs the whole report.

    Args:
        run: The run folder or an open :class:`StoredRun`.

    Returns:
        One entry per figure, in :data:`FIGURES` order.
    """
    stored = run if isinstance(run, StoredRun) else StoredRun(run)
    out = []
    for spec in FIGURES:
        try:
            fig = spec.draw(stored)
        except FigureSkipped as exc:
            out.append(DrawnFigure(spec, None, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one broken figure must not stop a report
            logger.warning("figure %s of %s failed: %r", spec.id, stored.folder, exc)
            out.append(DrawnFigure(spec, None, f"could not be drawn: {type(exc).__name__}: {exc}"))
            continue
        out.append(DrawnFigure(spec, figure_png(fig)))
    return out


def write_figures(
    run: StoredRun | str | Path, out_dir: str | Path | None = None
) -> dict[str, Path]:
    """Draw the figures of a stored run and save each as ``<out_dir>/<id>.png``.

    Args:
        run: The run folder or an open :class:`StoredRun`.
        out_dir: Where to write; defaults to ``<run folder>/figures``.

    Returns:
        The written files by figure id (skipped figures are absent).
    """
    stored = run if isinstance(run, StoredRun) else StoredRun(run)
    target = Path(out_dir) if out_dir is not None else stored.folder / "figures"
    target.mkdir(parents=True, exist_ok=True)
    written = {}
    for drawn in draw_figures(stored):
        if drawn.png is not None:
            path = target / f"{drawn.spec.id}.png"
            path.write_bytes(drawn.png)
            written[drawn.spec.id] = path
    return written
