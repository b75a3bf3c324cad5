"""Figures drawn from stored run folders (synthetic ones from conftest.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from marginsim.experiments import plots
from marginsim.experiments.plots import (
    FIGURES,
    FigureSkipped,
    FigureSpec,
    StoredRun,
    draw_figures,
    write_figures,
)

PNG = b"\x89PNG\r\n\x1a\n"


def test_every_figure_is_drawn_for_a_run_with_every_table(synthetic_run):
    drawn = draw_figures(synthetic_run)
    assert [d.spec.id for d in drawn] == [
        "price",
        "margin_debt",
        "liquidation_heatmap",
        "depth",
        "funding_open_interest",
        "cascade_sizes",
        "network",
        "returns",
    ]
    for d in drawn:
        assert d.note == "" and d.png is not None and d.png.startswith(PNG), d.spec.id


def test_a_run_without_the_newer_tables_skips_with_reasons(legacy_run):
    notes = {d.spec.id: d.note for d in draw_figures(legacy_run)}
    assert notes["liquidation_heatmap"] == "the run has no liquidation_map table"
    assert notes["network"] == "the run has no network_nodes / network_edges tables"
    # The others fall back to what every run records.
    for fig_id in ("price", "margin_debt", "depth", "funding_open_interest", "cascade_sizes"):
        assert notes[fig_id] == "", fig_id
    margin = plots.draw_margin_debt(StoredRun(legacy_run))
    assert margin.axes[0].get_title() == "synthetic: margin debt (per-protocol debt columns)"
    assert [line.get_label() for line in margin.axes[0].lines] == [
        "aave (lending)",
        "maker (CDP)",
        "perpx (perp)",
    ]


def test_price_marks_each_step_with_liquidations_at_its_mid(synthetic_run):
    run = StoredRun(synthetic_run)
    fig = plots.draw_price(run)
    ax = fig.axes[0]
    points = ax.collections[0].get_offsets()
    mid = run.metrics.set_index("step")["mid_price"]
    # The liquidations table has 5 + 3 + 1 + 2 + 1 rows at steps 60, 61, 62, 70, 90.
    assert points[:, 0].tolist() == [60, 61, 62, 70, 90]
    assert points[:, 1].tolist() == mid.loc[[60, 61, 62, 70, 90]].tolist()
    assert "liquidations (12;" in ax.collections[0].get_label()
    assert ax.get_ylabel() == "price (USDC per WETH)"
    assert ax.get_xlabel() == "step (60 s each)"


def test_cascade_sizes_are_a_complementary_cdf(synthetic_run):
    fig = plots.draw_cascade_sizes(StoredRun(synthetic_run))
    xy = fig.axes[0].lines[0].get_xydata()
    # Episodes of 9, 2 and 1 liquidations: P(>= 1) = 1, P(>= 2) = 2/3, P(>= 9) = 1/3.
    assert xy[:, 0].tolist() == [1.0, 2.0, 9.0]
    assert xy[:, 1] == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"


def test_cascade_sizes_fall_back_to_liquidations_per_step(legacy_run):
    fig = plots.draw_cascade_sizes(StoredRun(legacy_run))
    xy = fig.axes[0].lines[0].get_xydata()
    # Per step: 5, 3, 1, 2, 1 -> sizes 1, 2, 3, 5 with P(>=) 5/5, 3/5, 2/5, 1/5.
    assert xy[:, 0].tolist() == [1.0, 2.0, 3.0, 5.0]
    assert xy[:, 1] == pytest.approx([1.0, 0.6, 0.4, 0.2])


def test_heatmap_puts_each_step_on_a_common_price_grid(tmp_path, synthetic_run):
    run = StoredRun(synthetic_run)
    # Two recorded steps with hand-made maps: step 0 over prices 100..120, step 10 over
    # 110..120 only, so its column is empty (NaN) below 110.
    table = pd.DataFrame(
        {
            "step": [0, 0, 0, 10, 10],
            "price": [100.0, 110.0, 120.0, 110.0, 120.0],
            "long_debt": [4.0, 0.0, 0.0, 0.0, 0.0],
            "short_debt": [0.0, 0.0, 2.0, 0.0, 8.0],
        }
    )
    table.to_parquet(synthetic_run / "events" / "liquidation_map.parquet", index=False)
    fig = plots.draw_liquidation_heatmap(run)
    mesh = fig.axes[0].collections[0]
    z = np.ma.filled(mesh.get_array().reshape(120, 2).astype(float), np.nan)
    # Grid point 0 is price 100: step 0 has 4 of long debt there, step 10 no map (NaN).
    assert z[0, 0] == 4.0 and np.isnan(z[0, 1])
    # Grid point 119 is price 120: 2 and 8 of short debt.
    assert z[119, 0] == 2.0 and z[119, 1] == 8.0
    # Columns centred on the recorded steps: edges -5, 5, 15.
    assert mesh.get_coordinates()[0, :, 0].tolist() == [-5.0, 5.0, 15.0]


def test_heatmap_of_a_map_without_debt_is_skipped(synthetic_run):
    table = pd.DataFrame(
        {"step": [0, 0], "price": [90.0, 110.0], "long_debt": [0.0, 0.0], "short_debt": [0.0, 0.0]}
    )
    table.to_parquet(synthetic_run / "events" / "liquidation_map.parquet", index=False)
    with pytest.raises(FigureSkipped, match="no debt at any price"):
        plots.draw_liquidation_heatmap(StoredRun(synthetic_run))


def test_network_colours_nodes_by_bad_debt_and_is_seeded(synthetic_run):
    run = StoredRun(synthetic_run)
    fig = plots.draw_network(run)
    nodes = fig.axes[0].collections[-1]
    # Node order is the network_nodes table's: aave lost 4, the others nothing.
    assert nodes.get_array().tolist() == [4.0, 0.0, 0.0, 0.0]
    again = plots.draw_network(StoredRun(synthetic_run))
    assert np.array_equal(nodes.get_offsets(), again.axes[0].collections[-1].get_offsets())
    # Five edges, aave -> WETH-USDC twice (liquidity and oracle): five arrows, one per edge
    # and kind, and one legend entry per kind.
    assert len(fig.axes[0].patches) == 5
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["collateral exposure", "liquidity exposure", "oracle exposure"]


def test_returns_autocorrelation_matches_a_direct_computation():
    x = np.array([0.01, -0.02, 0.015, 0.0, -0.005, 0.02])
    d = x - x.mean()
    # lag 1: sum of d[t] * d[t + 1] over the sum of squares
    expected = float(np.sum(d[:-1] * d[1:]) / np.sum(d * d))
    assert plots._autocorrelation(x, np.array([1]))[0] == pytest.approx(expected)
    assert plots._autocorrelation(np.ones(5), np.array([1, 2])).tolist() == [0.0, 0.0]


def test_too_few_returns_and_no_perp_are_skipped(legacy_run):
    metrics = pd.read_parquet(legacy_run / "metrics.parquet").head(5)
    metrics = metrics.drop(columns=[c for c in metrics.columns if c.startswith("perpx_ETH")])
    metrics.to_parquet(legacy_run / "metrics.parquet", index=False)
    run = StoredRun(legacy_run)
    with pytest.raises(FigureSkipped, match="only 4 returns"):
        plots.draw_returns(run)
    with pytest.raises(FigureSkipped, match="no perp venue"):
        plots.draw_funding_open_interest(run)


def test_a_failing_figure_becomes_a_note(monkeypatch, synthetic_run):
    def broken(run):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(plots, "FIGURES", (*FIGURES[:1], FigureSpec("broken", "Broken", broken)))
    drawn = draw_figures(synthetic_run)
    assert [d.spec.id for d in drawn] == ["price", "broken"]
    assert drawn[1].png is None and drawn[1].note == "could not be drawn: ZeroDivisionError: boom"


def test_write_figures_saves_pngs(tmp_path, legacy_run):
    written = write_figures(legacy_run, tmp_path / "figs")
    assert sorted(written) == [
        "cascade_sizes",
        "depth",
        "funding_open_interest",
        "margin_debt",
        "price",
        "returns",
    ]
    for fig_id, path in written.items():
        assert path == tmp_path / "figs" / f"{fig_id}.png"
        assert path.read_bytes().startswith(PNG)


def test_stored_run_needs_metrics(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        StoredRun(tmp_path)


@pytest.mark.parametrize("spec", FIGURES, ids=lambda s: s.id)
def test_every_figure_is_titled_and_its_axes_labelled(synthetic_run, spec):
    fig = spec.draw(StoredRun(synthetic_run))
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert panels
    for ax in panels:
        assert ax.get_title(), spec.id
        if ax.axison:  # the network drawing has no axes to label
            # Shared x axes carry the label on the bottom panel only.
            bottom = ax.get_subplotspec().is_last_row()
            assert ax.get_ylabel(), spec.id
            assert ax.get_xlabel() or not bottom, spec.id
        if ax.get_legend_handles_labels()[0]:
            assert ax.get_legend() is not None, spec.id
    for cbar in (ax for ax in fig.axes if ax.get_label() == "<colorbar>"):
        assert cbar.get_ylabel(), spec.id  # the colour scale says what and in which unit


def test_plot_network_is_the_one_drawing_from_tables(tmp_path):
    # Tables as the contagion-window study writes them: collateral edges of two weights.
    edges = pd.DataFrame(
        {
            "source": ["a", "b", "c"],
            "target": ["b", "c", "a"],
            "kind": ["collateral"] * 3,
            "weight": [10.0, 5.0, 0.0],
        }
    )
    nodes = pd.DataFrame(
        {"node": ["a", "b", "c"], "bad_debt": [0.0, 3.0, 1.0], "defaulted": [False, True, False]}
    )
    fig = plots.network_figure(edges, nodes, seed=1, title="t")
    ax = fig.axes[0]
    assert ax.collections[-1].get_array().tolist() == [0.0, 3.0, 1.0]
    # Collateral widths 0.5 + 3 w / max w: 3.5, 2.0 and 0.5 for weights 10, 5, 0.
    widths = sorted(p.get_linewidth() for p in ax.patches)
    assert widths == pytest.approx([0.5, 2.0, 3.5])
    # Black thick outline for the defaulted node only.
    assert list(ax.collections[-1].get_linewidths()) == [0.8, 2.5, 0.8]
    path = plots.plot_network(edges, nodes, tmp_path / "n.png", seed=1, title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Same tables, same seed: the same file.
    again = plots.plot_network(edges, nodes, tmp_path / "m.png", seed=1, title="t")
    assert again.read_bytes() == path.read_bytes()


def test_large_networks_are_drawn_without_labels():
    names = [f"p{k}" for k in range(31)]
    edges = pd.DataFrame({"source": names[:-1], "target": names[1:], "kind": "collateral"})
    nodes = pd.DataFrame({"node": names, "bad_debt": 0.0})
    ax = plots.network_figure(edges, nodes).axes[0]
    assert [t.get_text() for t in ax.texts] == []
    small = plots.network_figure(edges.iloc[:2], nodes.iloc[:3]).axes[0]
    assert sorted(t.get_text() for t in small.texts) == ["p0", "p1", "p2"]
