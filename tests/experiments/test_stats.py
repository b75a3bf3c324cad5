"""Statistics over recorded frames, against hand computation and scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from marginsim.experiments.scenarios import load_scenario
from marginsim.experiments.stats import (
    CASCADE_COLUMNS,
    autocorrelation,
    bad_debt_values,
    cascade_episodes,
    excess_kurtosis,
    hill_k,
    hill_tail_index,
    liquidated_debt_values,
    log_returns,
    replicate_aggregates,
    return_statistics,
    skewness,
)


# ------------------------------------------------------------------------------ returns
def test_log_returns_skip_missing_prices():
    r = log_returns([100.0, np.nan, 110.0, 0.0, 121.0])
    np.testing.assert_allclose(r, [math.log(1.1), math.log(1.1)])
    assert log_returns([5.0]).size == 0


def test_moments_by_hand():
    # r = 0, 0, 0, 1: mean 0.25, deviations -0.25 (x3) and 0.75.
    # m2 = (3 * 0.0625 + 0.5625) / 4 = 0.1875; m3 = (3 * -0.015625 + 0.421875) / 4 = 0.09375;
    # m4 = (3 * 0.00390625 + 0.31640625) / 4 = 0.08203125.
    r = np.array([0.0, 0.0, 0.0, 1.0])
    assert skewness(r) == pytest.approx(0.09375 / 0.1875**1.5)  # 2 / sqrt(3)
    assert excess_kurtosis(r) == pytest.approx(0.08203125 / 0.1875**2 - 3)  # -2/3
    # +-1 alternating: m2 = m4 = 1, kurtosis 1 - 3 = -2, no skew.
    assert excess_kurtosis(np.array([1.0, -1.0, 1.0, -1.0])) == pytest.approx(-2.0)
    assert skewness(np.array([1.0, -1.0, 1.0, -1.0])) == pytest.approx(0.0)
    assert math.isnan(excess_kurtosis(np.ones(5))) and math.isnan(skewness(np.ones(1)))


def test_moments_match_scipy():
    rng = np.random.default_rng(1)
    r = rng.standard_t(4, size=5_000)
    assert excess_kurtosis(r) == pytest.approx(sps.kurtosis(r, fisher=True, bias=True))
    assert skewness(r) == pytest.approx(sps.skew(r, bias=True))


def test_hill_by_hand():
    # x = 8, 4, 2, 1 with k = 2: x_(3) = 2, logs ln(8/2) and ln(4/2), mean 1.5 ln 2.
    assert hill_tail_index(np.array([1.0, 8.0, 2.0, 4.0]), k=2) == pytest.approx(
        1 / (1.5 * math.log(2))
    )
    # Zeros and NaN are not in the sample; too few values for k gives NaN.
    assert hill_tail_index(np.array([0.0, np.nan, 8.0, 4.0, 2.0]), k=2) == pytest.approx(
        1 / (1.5 * math.log(2))
    )
    assert math.isnan(hill_tail_index(np.array([2.0, 1.0]), k=2))
    assert math.isnan(hill_tail_index(np.array([3.0, 3.0, 3.0]), k=2))  # a flat tail
    # The default k: 5% of the positive values, at least 2, at most n - 1.
    assert (hill_k(1000), hill_k(20), hill_k(2), hill_k(1)) == (50, 2, 1, 0)


def test_hill_recovers_a_pareto_tail():
    # Pareto with alpha = 3 (x_min = 1): the estimator on the top 1,000 of 50,000 is close.
    rng = np.random.default_rng(7)
    x = 1.0 + rng.pareto(3.0, size=50_000)
    assert hill_tail_index(x, k=1000) == pytest.approx(3.0, rel=0.1)


def test_autocorrelation_by_hand():
    # x = 1, 2, 3, 4: deviations -1.5, -0.5, 0.5, 1.5, sum of squares 5.
    # lag 1: 0.75 - 0.25 + 0.75 = 1.25 -> 0.25; lag 2: -0.75 - 0.75 = -1.5 -> -0.3.
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert autocorrelation(x, 1) == pytest.approx(0.25)
    assert autocorrelation(x, 2) == pytest.approx(-0.3)
    assert autocorrelation(x, 0) == pytest.approx(1.0)
    assert math.isnan(autocorrelation(x, 4)) and math.isnan(autocorrelation(np.ones(3), 1))


def test_return_statistics_keys_and_values():
    prices = np.array([100.0, 101.0, 99.0, 102.0, np.nan, 100.0, 103.0])
    out = return_statistics(prices, lags=(1, 2), hill_tail=2)
    r = log_returns(prices)
    assert out["n_returns"] == 5
    assert out["excess_kurtosis"] == pytest.approx(excess_kurtosis(r))
    assert out["skew"] == pytest.approx(skewness(r))
    assert out["hill_alpha"] == pytest.approx(hill_tail_index(np.abs(r), 2))
    assert out["acf_r_1"] == pytest.approx(autocorrelation(r, 1))
    assert out["acf_abs_r_2"] == pytest.approx(autocorrelation(np.abs(r), 2))
    assert set(out) == {
        "n_returns",
        "mean",
        "std",
        "skew",
        "excess_kurtosis",
        "hill_alpha",
        "hill_k",
        "acf_r_1",
        "acf_abs_r_1",
        "acf_r_2",
        "acf_abs_r_2",
    }


# ------------------------------------------------------------------------------ cascades
def test_cascade_episodes_by_hand():
    metrics = pd.DataFrame(
        {
            "step": np.arange(10),
            "liquidations": [0, 1, 2, 0, 0, 3, 0, 0, 0, 1],
            "mid_price": [100, 99, 97, 98, 98, 95, 96, 96, 96, 97],
        }
    )
    liquidations = pd.DataFrame({"step": [1, 2, 2, 5, 5, 5, 9]})
    values = np.array([10.0, 20.0, 30.0, 1.0, 2.0, 3.0, 7.0])
    c = cascade_episodes(metrics, liquidations, values)
    assert c.columns.tolist() == list(CASCADE_COLUMNS)
    # Steps 1-2 (mid 100 before, low 97: 3% fall), step 5 (98 -> 95), step 9 (96 -> 97: a
    # rise, negative impact).
    assert c["episode"].tolist() == [0, 1, 2]
    assert c["start_step"].tolist() == [1, 5, 9]
    assert c["end_step"].tolist() == [2, 5, 9]
    assert c["length_steps"].tolist() == [2, 1, 1]
    assert c["liquidations"].tolist() == [3, 3, 1]
    assert c["liquidated_debt_value"].tolist() == [60.0, 6.0, 7.0]
    np.testing.assert_allclose(c["price_impact"], [0.03, 3 / 98, -1 / 96])


def test_cascade_at_the_first_step_and_none():
    metrics = pd.DataFrame(
        {"step": [0, 1, 2], "liquidations": [2, 0, 0], "mid_price": [10.0, 9.0, 9.0]}
    )
    c = cascade_episodes(metrics)
    assert c["start_step"].tolist() == [0] and math.isnan(c["price_impact"][0])
    assert c["liquidated_debt_value"].tolist() == [0.0]
    quiet = cascade_episodes(metrics.assign(liquidations=0))
    assert quiet.empty and quiet.dtypes.to_dict() == c.dtypes.to_dict()


def test_recorded_steps_with_a_gap_split_an_episode():
    metrics = pd.DataFrame(
        {"step": [0, 1, 3, 4], "liquidations": [0, 1, 1, 0], "mid_price": [5.0, 4.0, 3.0, 3.0]}
    )
    c = cascade_episodes(metrics)
    assert c["start_step"].tolist() == [1, 3] and c["end_step"].tolist() == [1, 3]
    # Step 2 is not recorded: the second episode has no mid before it.
    assert c["price_impact"][0] == pytest.approx(0.2) and math.isnan(c["price_impact"][1])


# ------------------------------------------------------------------------------ valuing rows
def test_liquidated_debt_and_bad_debt_values():
    scenario = load_scenario("default")
    metrics = pd.DataFrame(
        {
            "step": [0, 1],
            "mid_price": [np.nan, 2000.0],
            "index_price": [1990.0, 2001.0],
            "perpx_uncovered_bad_debt": [0.0, 12.5],
        }
    )
    liquidations = pd.DataFrame(
        {
            "step": [1, 1, 0],
            "debt_asset": ["USDC", "WETH", "ETH-PERP"],
            "debt_repaid": [1_500_000, 2 * 10**9, 3_000_000],
        }
    )
    # 1.5 USDC; 2 WETH at the mid 2,000; a perp notional of 3 USDC (settlement decimals 6).
    np.testing.assert_allclose(
        liquidated_debt_values(liquidations, scenario, metrics), [1.5, 4000.0, 3.0]
    )
    bad = pd.DataFrame({"step": [0, 1], "asset": ["WETH", "USDC"], "amount": [10**9, 250_000]})
    # 1 WETH at step 0, where the mid is missing: the index 1,990; 0.25 USDC; the perp
    # venue's last uncovered bad debt 12.5.
    assert bad_debt_values(bad, scenario, metrics) == pytest.approx(1990.0 + 0.25 + 12.5)


# ------------------------------------------------------------------------------ replicates
def test_replicate_aggregates_by_hand():
    summary = pd.DataFrame(
        {
            "point": [0, 0, 0, 0, 1, 1, 1, 1],
            "replicate": [0, 1, 2, 3, 0, 1, 2, 3],
            "seed": [11, 12, 13, 14, 21, 22, 23, 24],
            "bad_debt_value": [0.0, 10.0, 20.0, 30.0, 0.0, 0.0, 0.0, 0.0],
            "liquidation_volume": [100.0, 200.0, 300.0, 400.0, 5.0, 5.0, 5.0, np.nan],
            "status": ["ok"] * 8,
        }
    )
    agg = replicate_aggregates(summary, ["point"])
    assert agg["point"].tolist() == [0, 1]
    assert agg["replicates"].tolist() == [4, 4]
    # Linear quantiles of 0, 10, 20, 30: position 0.95 * 3 = 2.85 -> 20 + 0.85 * 10 = 28.5.
    assert agg["var95_bad_debt"].tolist() == pytest.approx([28.5, 0.0])
    # 100..400: 300 + 0.85 * 100 = 385; the NaN of point 1 is ignored.
    assert agg["liquidations_at_risk95"].tolist() == pytest.approx([385.0, 5.0])
    assert agg["p_bad_debt"].tolist() == [0.75, 0.0]
    assert agg["bad_debt_value_mean"].tolist() == [15.0, 0.0]
    assert agg["bad_debt_value_q50"].tolist() == [15.0, 0.0]
    assert agg["liquidation_volume_q5"][0] == pytest.approx(np.quantile([100, 200, 300, 400], 0.05))
    # seed and replicate are not aggregated; a string column neither.
    assert not any(c.startswith(("seed_", "replicate_", "status_")) for c in agg.columns)
    with pytest.raises(KeyError, match="bad_debt_value"):
        replicate_aggregates(summary.drop(columns="bad_debt_value"), ["point"])


def test_replicate_aggregates_std_and_optional_risk_measures():
    summary = pd.DataFrame({"point": [0, 0, 0, 0, 1], "x": [0.0, 10.0, 20.0, 30.0, 5.0]})
    agg = replicate_aggregates(summary, ["point"], bad_debt=None, liquidation_volume=None)
    # Sample std of 0, 10, 20, 30: sqrt((15^2 + 5^2 + 5^2 + 15^2) / 3) = sqrt(500 / 3).
    assert agg["x_std"][0] == pytest.approx((500 / 3) ** 0.5)
    assert np.isnan(agg["x_std"][1])  # one replicate: no sample std
    assert not {"var95_bad_debt", "p_bad_debt", "liquidations_at_risk95"} & set(agg.columns)
