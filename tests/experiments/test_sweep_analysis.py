"""Replicate aggregates, sensitivity indices and the sweep report, on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from marginsim.experiments.sweep import design_matrix, load_sweep
from marginsim.experiments.sweep_analysis import aggregate, sensitivity
from marginsim.experiments.sweep_report import build_sweep_report


def _grid_spec():
    return load_sweep(
        {
            "name": "g",
            "base": "default",
            "replicates": 3,
            "parameters": [{"path": "exogenous.volatility", "values": [0.5, 1.0]}],
        }
    )


def _summary(rows):
    frame = pd.DataFrame(rows)
    for column in ("error", "run_id", "run_dir", "replay"):
        frame[column] = None
    frame["seed"] = 0
    return frame


def test_aggregate_hand_computed():
    spec = _grid_spec()
    summary = _summary(
        [
            {
                "point": 0,
                "replicate": 0,
                "status": "ok",
                "exogenous.volatility": 0.5,
                "bad_debt_value": 0.0,
                "liquidations": 1,
            },
            {
                "point": 0,
                "replicate": 1,
                "status": "ok",
                "exogenous.volatility": 0.5,
                "bad_debt_value": 4.0,
                "liquidations": 3,
            },
            {
                "point": 0,
                "replicate": 2,
                "status": "ok",
                "exogenous.volatility": 0.5,
                "bad_debt_value": 2.0,
                "liquidations": 5,
            },
            {
                "point": 1,
                "replicate": 0,
                "status": "ok",
                "exogenous.volatility": 1.0,
                "bad_debt_value": 0.0,
                "liquidations": 7,
            },
            {
                "point": 1,
                "replicate": 1,
                "status": "failed",
                "exogenous.volatility": 1.0,
                "bad_debt_value": np.nan,
                "liquidations": np.nan,
            },
            {
                "point": 1,
                "replicate": 2,
                "status": "ok",
                "exogenous.volatility": 1.0,
                "bad_debt_value": 0.0,
                "liquidations": 9,
            },
        ]
    )
    agg = aggregate(summary, spec).set_index("point")
    # Point 0, bad debt {0, 4, 2}: mean 2, sample std sqrt(((-2)^2 + 2^2 + 0) / 2) = 2,
    # median 2, q95 = 2 + 0.9 * (4 - 2) = 3.8 (linear between order statistics 2 and 4),
    # q05 = 0 + 0.1 * (2 - 0) = 0.2; bad debt > 0 in 2 of 3 replicates.
    assert agg.loc[0, "runs"] == 3
    assert agg.loc[0, "bad_debt_value_mean"] == pytest.approx(2.0)
    assert agg.loc[0, "bad_debt_value_std"] == pytest.approx(2.0)
    assert agg.loc[0, "bad_debt_value_q50"] == pytest.approx(2.0)
    assert agg.loc[0, "bad_debt_value_q95"] == pytest.approx(3.8)
    assert agg.loc[0, "bad_debt_value_q05"] == pytest.approx(0.2)
    assert agg.loc[0, "p_any_bad_debt_value"] == pytest.approx(2 / 3)
    # Point 1: the failed replicate is left out; liquidations {7, 9}: mean 8, q95 8.9.
    assert agg.loc[1, "runs"] == 2
    assert agg.loc[1, "liquidations_mean"] == pytest.approx(8.0)
    assert agg.loc[1, "liquidations_q95"] == pytest.approx(8.9)
    assert agg.loc[1, "p_any_bad_debt_value"] == 0.0
    assert "p_any_liquidations" not in agg.columns


def _range_folder(tmp_path, kind, design, y_of_x):
    spec = load_sweep(
        {
            "name": "s",
            "base": "default",
            "master_seed": 3,
            "design": {"kind": kind, **design},
            "parameters": [
                {"path": "exogenous.volatility", "low": 0.4, "high": 1.6},
                {"path": "exogenous.drift", "low": -1.0, "high": 1.0},
            ],
        }
    )
    x = design_matrix(spec)
    summary = _summary(
        [
            {
                "point": p,
                "replicate": 0,
                "status": "ok",
                "exogenous.volatility": row[0],
                "exogenous.drift": row[1],
                "y": y_of_x(row),
            }
            for p, row in enumerate(x)
        ]
    )
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "sweep.toml").write_text(spec.to_toml())
    summary.to_parquet(folder / "summary.parquet")
    return folder


def test_morris_of_a_linear_function(tmp_path):
    # y = 2 * volatility: every elementary effect of volatility is the same, so sigma = 0;
    # drift has no effect: mu* = sigma = 0.
    folder = _range_folder(tmp_path, "morris", {"points": 6, "levels": 4}, lambda r: 2.0 * r[0])
    table = sensitivity(folder, "y").set_index("parameter")
    assert table.loc["exogenous.drift", "mu_star"] == pytest.approx(0.0, abs=1e-12)
    assert table.loc["exogenous.volatility", "sigma"] == pytest.approx(0.0, abs=1e-9)
    assert table.loc["exogenous.volatility", "mu_star"] > 0


def test_sobol_indices_of_a_one_parameter_function(tmp_path):
    folder = _range_folder(tmp_path, "sobol", {"points": 256}, lambda r: r[0] ** 2)
    table = sensitivity(folder, "y").set_index("parameter")
    # Only volatility matters: S1 = ST = 1 for it and 0 for drift (up to sampling error).
    assert table.loc["exogenous.volatility", "S1"] == pytest.approx(1.0, abs=0.05)
    assert table.loc["exogenous.volatility", "ST"] == pytest.approx(1.0, abs=0.05)
    assert table.loc["exogenous.drift", "ST"] == pytest.approx(0.0, abs=1e-12)
    assert (table["S1_conf"] >= 0).all()
    with pytest.raises(ValueError, match="not a column"):
        sensitivity(folder, "nope")


def test_report_embeds_figures_and_tables(tmp_path):
    folder = _range_folder(tmp_path, "morris", {"points": 4}, lambda r: r[0] - r[1])
    spec_text = (folder / "sweep.toml").read_text()
    (folder / "sweep.toml").write_text(
        spec_text.replace("report_metrics = []", 'report_metrics = ["y"]')
    )
    report = build_sweep_report(folder)
    text = report.read_text()
    assert text.count("data:image/png;base64,") == 3  # metric, heatmap, sensitivity
    assert (folder / "report" / "metric_y.png").exists()
    assert (folder / "report" / "sensitivity_y.png").exists()
    assert "mu_star" in text
    agg = pd.read_csv(folder / "report" / "aggregate.csv")
    assert len(agg) == 12 and "y_mean" in agg.columns
