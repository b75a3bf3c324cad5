"""End-to-end: the bridge_failure scenario. A bridge loses 75% of its lock; the wrapped asset
falls to a discount on its own book through trading, and the pool that prices it at that book
liquidates its wWETH borrowers."""

from __future__ import annotations

from fractions import Fraction

import pytest

from marginsim.experiments.runner import run
from marginsim.experiments.scenarios import load_scenario
from marginsim.model import MarginModel
from marginsim.protocols.bridge import wrapped_market_oracles

SHOCK = 60  # [[shocks]] step of the bridge_failure


@pytest.fixture(scope="module")
def result():
    return run(load_scenario("bridge_failure"), check_invariants=True)  # conservation each step


@pytest.fixture(scope="module")
def no_shock():
    # Counterfactual: the same seed and agents, the bridge never fails.
    return run(load_scenario("bridge_failure").with_overrides({"shocks": []}))


def _ratio(result):
    m = result.metrics.set_index("step")
    return m["wWETH-USDC_mid_price"] / m["mid_price"]  # wrapped mid / WETH mid


def test_wrapped_trades_at_par_until_the_failure(result):
    r = _ratio(result)
    before = r.loc[1 : SHOCK - 1]
    assert before.notna().all()
    assert (before - 1).abs().max() < 0.01  # within 1% of the underlying while fully backed


def test_after_the_failure_the_wrapped_mid_falls_to_a_discount_of_at_least_25pct(result):
    r = _ratio(result)
    after = r.loc[SHOCK:]
    assert after.min() < 0.75  # about 0.54 in this run
    assert r.loc[SHOCK + 60] < 0.8  # an hour later it is still far below the underlying
    # The discount comes from trading: never below what the lock still backs (0.25).
    assert after.min() > 0.25


def test_without_the_failure_there_is_no_discount_and_no_liquidation(no_shock):
    r = _ratio(no_shock)
    assert (r.loc[1:].dropna() - 1).abs().max() < 0.02
    assert len(no_shock.events["liquidations"]) == 0


def test_pool_taking_the_wrapped_asset_liquidates_at_the_book_price(result):
    m = result.metrics.set_index("step")
    liq = result.events["liquidations"]
    w = liq[(liq["protocol"] == "wlend") & (liq["collateral_asset"] == "wWETH")]
    assert len(w) > 0
    assert (w["step"] > SHOCK).all()  # only after the failure
    weth_mid = m["mid_price"].reindex(w["step"]).to_numpy()
    price = w["oracle_price"].to_numpy()
    # HF < 1 needs the book price below debt / (0.8 x collateral): 700,000 / 400 = 1,750
    # for the largest account, so every liquidation is at a discount of more than 12%.
    assert (price < 0.88 * weth_mid).all()
    # Priced at the book, not at WETH x backing (2,000 x 0.25 = 500): no double counting.
    assert (price > 0.3 * weth_mid).all()
    assert m["wlend_USDC_borrowed"].iloc[-1] < m["wlend_USDC_borrowed"].iloc[0]


def test_bridge_failure_is_recorded_in_the_network(result):
    nodes = result.events["network_nodes"].set_index("node")
    assert bool(nodes.loc["portal", "defaulted"])
    assert nodes.loc["portal", "default_step"] == SHOCK
    ev = result.events["bridge_events"]
    fail = ev[ev["event"] == "failure"]
    # floor(0.75 x 5,000 wWETH locked) in 9-decimal units.
    assert fail["amount"].tolist() == [3_750 * 10**9]
    # Its bad debt is the unbacked wrapped supply at the underlying's price (the WETH index
    # here, no pool prices wWETH at WETH x backing): 5,000 x (1 - 1/4) = 3,750 wWETH.
    final_index = result.metrics["index_price"].iloc[-1]
    assert nodes.loc["portal", "bad_debt"] == pytest.approx(3_750 * final_index, rel=1e-12)
    edges = result.events["network_edges"]
    kinds = set(zip(edges["source"], edges["target"], edges["kind"], strict=True))
    assert ("wlend", "portal", "collateral") in kinds  # holds the wrapped asset
    assert ("wlend", "wWETH-USDC", "oracle") in kinds  # prices it at that book


def _stepped(name: str) -> MarginModel:
    m = MarginModel(load_scenario(name).with_overrides({"run.steps": 3}))
    m.step()
    m.step()  # step 1's oracle phase reads the books quoted in step 0
    return m


def test_reserve_reading_the_wrapped_book_is_not_multiplied_by_the_backing():
    m = _stepped("bridge_failure")
    assert wrapped_market_oracles(m.scenario) == {"wweth_mid": "wWETH"}
    m.bridges["portal"].fail(0.75, 2)
    assert m.bridges["portal"].backing() == Fraction(1, 4)
    book = m.oracles.price("wweth_mid")
    assert book is not None and book > 1900
    # The pool sees the book alone: the discount must come from trading.
    assert m.lending["wlend"].reserve_price("wWETH") == book


def test_reserve_priced_by_the_underlying_oracle_keeps_the_backing_factor():
    # The contagion scenario prices wWETH with chainlink_eth (the WETH index): index x 1/4.
    m = _stepped("contagion")
    assert wrapped_market_oracles(m.scenario) == {}
    m.bridges["portal"].fail(0.75, 2)
    index = m.oracles.price("chainlink_eth")
    assert index is not None
    assert m.lending["corelend"].reserve_price("wWETH") == pytest.approx(index / 4, rel=1e-12)


def test_same_seed_same_outputs(result):
    import pandas as pd

    again = run(load_scenario("bridge_failure"))
    pd.testing.assert_frame_equal(result.metrics, again.metrics)
    for table in ("trades", "liquidations", "bridge_events", "network_nodes"):
        pd.testing.assert_frame_equal(result.events[table], again.events[table])
    assert result.summary == again.summary
