"""Drawing of a protocol network from a run's ``network_edges`` and ``network_nodes`` tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["plot_network"]


def plot_network(edges: pd.DataFrame, nodes: pd.DataFrame, path: Path) -> Path:
    """Draw a network from its ``network_edges`` and ``network_nodes`` tables.

    Nodes are coloured by ``bad_debt`` (their creditors' loss; grey when 0), defaulted nodes
    get a black outline and their wave as label; edge widths grow with the weight of
    collateral edges; the layout is seeded, so the same tables give the same picture.

    Args:
        edges: Columns ``source``, ``target``, ``kind``, ``weight``.
        nodes: Columns ``node``, ``bad_debt``, ``defaulted`` (and optionally
            ``default_wave``).
        path: PNG to write.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(nodes["node"])
    for s, t, kind, w in edges[["source", "target", "kind", "weight"]].itertuples(index=False):
        if g.has_edge(s, t):
            g.edges[s, t]["weight"] = max(g.edges[s, t]["weight"], float(w))
        else:
            g.add_edge(s, t, weight=float(w), kind=kind)
    pos = nx.spring_layout(g, seed=7)
    loss = nodes.set_index("node")["bad_debt"].reindex(list(g.nodes)).fillna(0.0).to_numpy()
    defaulted = nodes.set_index("node")["defaulted"].reindex(list(g.nodes)).fillna(False)
    fig, ax = plt.subplots(figsize=(8, 6))
    weights = np.array([d["weight"] for _, _, d in g.edges(data=True)], dtype=float)
    widths = 0.5 + 3 * weights / weights.max() if weights.size and weights.max() > 0 else 1.0
    nx.draw_networkx_edges(g, pos, ax=ax, width=widths, alpha=0.4, arrowsize=8)
    colours = np.where(loss > 0, loss, np.nan)
    nodes_art = nx.draw_networkx_nodes(
        g,
        pos,
        ax=ax,
        node_color=np.nan_to_num(colours, nan=0.0),
        cmap="Reds",
        vmin=0.0,
        vmax=float(loss.max()) if loss.max() > 0 else 1.0,
        edgecolors=["black" if d else "lightgrey" for d in defaulted],
        node_size=120 if len(g) > 30 else 600,
    )
    if len(g) <= 30:
        nx.draw_networkx_labels(g, pos, ax=ax, font_size=8)
    fig.colorbar(nodes_art, ax=ax, label="bad debt (creditors' loss)")
    ax.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
