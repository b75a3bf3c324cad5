"""Synthetic run folders for the query, plot and report tests.

``write_synthetic_run`` writes a run folder by hand, in the store's layout, holding every
table and column the plots and report know about, including those that newer versions of
the metrics record (``liquidation_map``, ``cascades``, ``network_nodes``/``network_edges``,
``margin_debt``, ``leverage*``, ``depth_*_2pct/5pct``), so every figure is exercised without
depending on which metrics the model records today. ``full=False`` leaves all of those out,
as a run recorded before them looks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCENARIO_TOML = """name = "synthetic"
description = "A hand-written run folder for the report tests."

[run]
seed = 3
steps = 120
step_seconds = 60.0

[[assets]]
symbol = "USDC"
decimals = 6

[[assets]]
symbol = "WETH"
decimals = 9

[[instruments]]
id = "WETH-USDC"
kind = "spot"
base = "WETH"
quote = "USDC"

[[instruments]]
id = "ETH-PERP"
kind = "perp"
venue = "perpx"

[protocols.aave]
kind = "lending"

[protocols.maker]
kind = "cdp"

[protocols.perpx]
kind = "perp"
"""

STEPS = 120


def write_synthetic_run(folder: Path, *, full: bool = True) -> Path:
    """Write a synthetic run folder (see the module docstring) and return it."""
    rng = np.random.default_rng(12345)
    folder.mkdir(parents=True)
    (folder / "events").mkdir()
    step = np.arange(STEPS)
    index = 2000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, STEPS)))
    index[60:] *= 0.9  # a crash at step 60
    mid = index * (1.0 + rng.normal(0.0, 0.0005, STEPS))
    liq = np.zeros(STEPS)
    liq[[60, 61, 62, 70, 90]] = [5, 3, 1, 2, 1]
    metrics = pd.DataFrame(
        {
            "step": step,
            "index_price": index,
            "mid_price": mid,
            "spread_bps": 8.0 + rng.random(STEPS),
            "depth_bid_1pct": 300.0 - liq * 20.0,
            "depth_ask_1pct": np.full(STEPS, 310.0),
            "liquidations": liq,
            "aave_debt_value": np.linspace(1e6, 2e6, STEPS),
            "maker_debt": np.full(STEPS, 5e5),
            "perpx_margin_debt": np.linspace(0.0, 3e6, STEPS),
            "perpx_ETH-PERP_funding_rate": np.where(step >= 40, 1e-4, 0.0),
            "perpx_ETH-PERP_open_interest_long": np.linspace(10.0, 50.0, STEPS),
        }
    )
    if full:
        metrics["depth_bid_2pct"] = 600.0
        metrics["depth_ask_2pct"] = 620.0
        metrics["depth_bid_5pct"] = 1500.0
        metrics["depth_ask_5pct"] = 1550.0
        metrics["margin_debt_lending"] = metrics["aave_debt_value"]
        metrics["margin_debt_cdp"] = metrics["maker_debt"]
        metrics["margin_debt_perp"] = metrics["perpx_margin_debt"]
        metrics["margin_debt"] = (
            metrics["margin_debt_lending"]
            + metrics["margin_debt_cdp"]
            + metrics["margin_debt_perp"]
        )
        metrics["leverage"] = np.linspace(2.0, 3.0, STEPS)
        metrics["leverage_p50"] = 2.5
        metrics["leverage_p90"] = 6.0
        metrics["leverage_p99"] = 12.0
    metrics.to_parquet(folder / "metrics.parquet", index=False)

    liq_steps = np.repeat(step, liq.astype(int))
    liquidations = pd.DataFrame(
        {
            "step": liq_steps,
            "protocol": ["aave"] * 8 + ["perpx"] * 4,
            "account": np.arange(12) % 7,
            "liquidator": np.full(12, 99),
            "debt_asset": ["USDC"] * 8 + ["ETH-PERP"] * 4,
            "debt_repaid": np.full(12, 1_000_000_000),
            "collateral_asset": ["WETH"] * 8 + ["USDC"] * 4,
            "collateral_seized": np.full(12, 500_000_000),
            "oracle_price": np.full(12, 1800.0),
            "bonus_value": np.full(12, 50.0),
            "bad_debt": np.zeros(12, dtype=np.int64),
        }
    )
    liquidations.to_parquet(folder / "events" / "liquidations.parquet", index=False)
    pd.DataFrame(
        {
            "step": [61, 62],
            "protocol": ["aave", "aave"],
            "account": [3, 4],
            "asset": ["USDC", "USDC"],
            "amount": [2_500_000, 1_500_000],  # 2.5 + 1.5 USDC
            "covered": [2_000_000, 0],
            "uncovered": [500_000, 1_500_000],
        }
    ).to_parquet(folder / "events" / "bad_debt.parquet", index=False)
    pd.DataFrame({"step": [60], "kind": ["fundamental_jump"], "size": [-0.1]}).to_parquet(
        folder / "events" / "shocks.parquet", index=False
    )
    pd.DataFrame(
        {
            "step": [40, 80],
            "protocol": ["perpx"] * 2,
            "instrument": ["ETH-PERP"] * 2,
            "rate": [1e-4, 1e-4],
        }
    ).to_parquet(folder / "events" / "funding.parquet", index=False)
    if full:
        rows = []
        for s in range(0, STEPS, 10):
            for k in range(-5, 6):
                price = float(mid[s]) * (1.0 + 0.02 * k)
                rows.append(
                    {
                        "step": s,
                        "price": price,
                        "long_debt": 1e5 * max(-k, 0) ** 2,
                        "short_debt": 5e4 * max(k, 0) ** 2,
                        "long_collateral": 2e5 * max(-k, 0),
                        "short_collateral": 1e5 * max(k, 0),
                    }
                )
        pd.DataFrame(rows).to_parquet(folder / "events" / "liquidation_map.parquet", index=False)
        pd.DataFrame(
            {
                "episode": [0, 1, 2],
                "start_step": [60, 70, 90],
                "end_step": [62, 70, 90],
                "length_steps": [3, 1, 1],
                "liquidations": [9, 2, 1],
                "liquidated_debt_value": [9000.0, 2000.0, 1000.0],
                "price_impact": [0.05, 0.01, 0.002],
            }
        ).to_parquet(folder / "events" / "cascades.parquet", index=False)
        pd.DataFrame(
            {
                "source": ["aave", "maker", "aave", "perpx", "aave"],
                "target": ["WETH-USDC", "WETH-USDC", "maker", "WETH-USDC", "WETH-USDC"],
                "kind": ["liquidity", "liquidity", "collateral", "oracle", "oracle"],
                "weight": [1.0, 1.0, 0.5, 1.0, 1.0],
            }
        ).to_parquet(folder / "events" / "network_edges.parquet", index=False)
        pd.DataFrame(
            {
                "node": ["aave", "maker", "perpx", "WETH-USDC"],
                "type": ["lending", "cdp", "perp", "market"],
                "bad_debt": [4.0, 0.0, 0.0, 0.0],
                "defaulted": [True, False, False, False],
                "default_step": [61, -1, -1, -1],
                "debtrank": [0.4, 0.1, 0.0, 0.0],
            }
        ).to_parquet(folder / "events" / "network_nodes.parquet", index=False)
    (folder / "scenario.toml").write_text(SCENARIO_TOML, encoding="utf-8")
    summary = {
        "scenario": "synthetic",
        "seed": 3,
        "steps": STEPS,
        "final_mid": None,
        "liquidations": 12,
        "bad_debt_events": 2,
    }
    (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    manifest = {"marginsim_version": "test", "seed": 3, "libraries": {"numpy": "x"}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


@pytest.fixture
def synthetic_run(tmp_path: Path) -> Path:
    """A synthetic run folder with every table and column the figures use."""
    return write_synthetic_run(tmp_path / "synthetic" / "synthetic-seed3-0000000000")


@pytest.fixture
def legacy_run(tmp_path: Path) -> Path:
    """A synthetic run folder without the newer tables and columns."""
    return write_synthetic_run(tmp_path / "legacy" / "synthetic-seed3-1111111111", full=False)
