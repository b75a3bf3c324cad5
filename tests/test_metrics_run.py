"""The market-wide metrics, the liquidation map table and the round column in real runs."""

from __future__ import annotations

import numpy as np
import pytest

from marginsim.experiments.runner import run
from marginsim.experiments.scenarios import load_scenario
from marginsim.experiments.stats import CASCADE_COLUMNS
from marginsim.metrics import LiquidationMapRecorder
from marginsim.model import MarginModel

MARKET_COLUMNS = [
    "margin_debt",
    "margin_debt_lending",
    "margin_debt_cdp",
    "margin_debt_perp",
    "leverage",
    "leverage_p50",
    "leverage_p90",
    "leverage_p99",
    "wamm",
    "distance_to_liquidation_p10",
    "distance_to_liquidation_p50",
    "depth_bid_2pct",
    "depth_ask_2pct",
    "depth_bid_5pct",
    "depth_ask_5pct",
    "liquidatable_debt_5pct",
    "leverage_to_depth",
]


@pytest.fixture(scope="module")
def default_run():
    scenario = load_scenario("default").with_overrides(
        {"run.steps": 25, "metrics.liquidation_map_every": 10}
    )
    return run(scenario)


def test_default_run_records_every_market_column(default_run):
    m = default_run.metrics
    for col in MARKET_COLUMNS + ["aave_tvl", "maker_tvl", "perpx_tvl"]:
        assert col in m, col
        assert np.isfinite(m[col]).all(), col
    # The sums by kind agree with each protocol's own margin-debt column (the lending sum
    # is over accounts with each debt rounded up, the pool's over the reserve totals).
    np.testing.assert_allclose(m["margin_debt_lending"], m["aave_debt_value"], rtol=1e-6)
    np.testing.assert_allclose(m["margin_debt_cdp"], m["maker_debt"], rtol=1e-12)
    np.testing.assert_allclose(m["margin_debt_perp"], m["perpx_margin_debt"], rtol=1e-12)
    np.testing.assert_allclose(
        m["margin_debt"],
        m["margin_debt_lending"] + m["margin_debt_cdp"] + m["margin_debt_perp"],
    )
    np.testing.assert_allclose(m["aave_tvl"], m["aave_supplied_value"], rtol=1e-12)
    # Depth grows with the window; leverage quantiles are ordered.
    assert (m["depth_bid_2pct"] >= m["depth_bid_1pct"]).all()
    assert (m["depth_bid_5pct"] >= m["depth_bid_2pct"]).all()
    assert (m["leverage_p50"] <= m["leverage_p90"]).all()
    assert (m["leverage_p90"] <= m["leverage_p99"]).all()


def test_default_run_liquidation_map_table(default_run):
    lmap = default_run.events["liquidation_map"]
    assert lmap.columns.tolist() == list(LiquidationMapRecorder.COLUMNS)
    # Steps 0, 10 and 20 of 25, 61 grid prices each, from -30% to +30% of the mid.
    assert sorted(set(lmap["step"])) == [0, 10, 20]
    assert len(lmap) == 3 * 61
    first = lmap[lmap["step"] == 10]
    mid = default_run.metrics.set_index("step").loc[10, "mid_price"]
    assert first["price"].iloc[0] == pytest.approx(0.7 * mid)
    assert first["price"].iloc[-1] == pytest.approx(1.3 * mid)
    # Cumulative: long debt falls and short debt rises along the grid.
    assert (np.diff(first["long_debt"]) <= 0).all()
    assert (np.diff(first["short_debt"]) >= 0).all()
    assert (first[["long_collateral", "short_collateral"]] >= 0).all().all()


def test_the_map_can_be_switched_off():
    scenario = load_scenario("default").with_overrides(
        {"run.steps": 3, "metrics.liquidation_map_every": 0}
    )
    model = MarginModel(scenario)
    model.run()
    assert model.event_tables()["liquidation_map"].empty


@pytest.fixture(scope="module")
def cascade_run():
    return run(load_scenario("lending_cascade"))


def test_liquidations_carry_their_round(cascade_run):
    liq = cascade_run.events["liquidations"]
    m = cascade_run.metrics.set_index("step")
    assert len(liq) > 0 and liq["round"].dtype == np.int64
    assert (liq["round"] >= 0).all()
    # A row's round is below the number of rounds with liquidations in its step, and
    # every step's rounds start at 0 without gaps.
    rounds_run = m.loc[liq["step"], "liquidation_rounds"].to_numpy()
    assert (liq["round"].to_numpy() < rounds_run).all()
    for _, rounds in liq.groupby("step")["round"]:
        assert sorted(set(rounds)) == list(range(rounds.max() + 1))


def test_cascades_table_and_summary(cascade_run):
    cascades = cascade_run.events["cascades"]
    assert cascades.columns.tolist() == list(CASCADE_COLUMNS)
    m = cascade_run.metrics
    active = m.loc[m["liquidations"] > 0, "step"].to_numpy()
    # Every step with a liquidation is in exactly one episode, and no other step is.
    covered = np.concatenate(
        [
            np.arange(s, e + 1)
            for s, e in zip(cascades["start_step"], cascades["end_step"], strict=True)
        ]
    )
    assert covered.tolist() == active.tolist()
    assert cascades["liquidations"].sum() == m["liquidations"].sum()
    s = cascade_run.summary
    assert s["cascades"] == len(cascades)
    assert s["longest_cascade"] == cascades["length_steps"].max()
    assert s["liquidation_volume"] == pytest.approx(cascades["liquidated_debt_value"].sum())
    assert s["max_margin_debt"] == pytest.approx(m["margin_debt"].max())
    assert s["max_leverage"] == pytest.approx(m["leverage"].max())
    for key in ("bad_debt_value", "return_kurtosis", "hill_index"):
        assert np.isfinite(s[key]), key
