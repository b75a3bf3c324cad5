import math

import numpy as np
import pandas as pd
import pytest

from marginsim.experiments.amplification import amplification, deleveraged, max_drawdown
from marginsim.experiments.scenarios import load_scenario


def test_max_drawdown_is_the_largest_peak_to_trough_fall():
    prices = pd.Series([100.0, 120.0, np.nan, 90.0, 110.0, 60.0, 130.0])
    assert max_drawdown(prices) == pytest.approx(0.5)  # 120 -> 60
    assert max_drawdown(pd.Series([1.0, 2.0, 3.0])) == 0.0
    assert math.isnan(max_drawdown(pd.Series([np.nan])))


def test_deleveraged_drops_protocol_accounts_and_leveraged_populations_only():
    cascade = load_scenario("lending_cascade")
    plain = deleveraged(cascade)
    assert len(cascade.accounts) == 22 and plain.accounts == [] and plain.run == cascade.run
    base = load_scenario("perp_crash").with_overrides(
        {"accounts": [{"id": "w", "wallet": {"USDC": 5.0}}]}
    )
    assert base.agents.perp_traders.count == 2000
    assert [a.id for a in deleveraged(base).accounts] == ["w"]
    assert deleveraged(base).agents.perp_traders.count == 0
    assert deleveraged(base).agents.noise == base.agents.noise


def test_leverage_deepens_the_fall_of_the_book_in_the_lending_cascade():
    result = amplification(load_scenario("lending_cascade").with_overrides({"run.steps": 400}))
    with_, without = result.with_leverage, result.without_leverage
    # Same seed, same outside world: only the leveraged accounts differ.
    np.testing.assert_array_equal(with_.metrics["index_price"], without.metrics["index_price"])
    assert result.liquidations_with > 0 and len(without.events["liquidations"]) == 0
    assert result.fall_with > result.fall_without
    assert result.excess == pytest.approx(result.fall_with - result.fall_without)
    assert with_.metrics["mid_price"].min() < without.metrics["mid_price"].min()


def test_unknown_column_is_named():
    with pytest.raises(KeyError, match="no metrics column 'nope'"):
        amplification(load_scenario("default").with_overrides({"run.steps": 3}), "nope")


def test_unwinding_loops_deepen_the_crash():
    """The looping scenario's loopers turn a 20% jump into a deeper fall of the book."""
    result = amplification(load_scenario("looping"))
    assert result.liquidations_with > 100
    assert result.fall_without > 0.19  # the jump alone
    assert result.excess > 0.01  # forced selling adds more than a percentage point


def test_amplification_study_writes_one_row_per_seed(tmp_path):
    from marginsim.experiments.amplification import amplification_study

    path = amplification_study(tmp_path / "amp", quick=True, workers=None, progress=False)
    table = pd.read_parquet(path)
    assert list(table["seed"]) == [0, 1]
    assert (tmp_path / "amp" / "amplification.csv").exists()
    # Each row is a real comparison: the same numbers as a direct call for that seed.
    direct = amplification(load_scenario("crash").with_overrides({"run.steps": 300, "run.seed": 1}))
    row = table.iloc[1]
    assert row["fall_with"] == direct.fall_with and row["fall_without"] == direct.fall_without
    assert row["liquidations_with"] == direct.liquidations_with > 0
    assert (table["fall_with"] > table["fall_without"]).all()
