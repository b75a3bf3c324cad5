"""End-to-end: the depeg scenario. A CDP's backing fails, DAI falls below its peg on its
book through order flow, and a lending pool that takes DAI as collateral liquidates."""

from __future__ import annotations

import pytest

from marginsim.experiments.runner import run
from marginsim.experiments.scenarios import load_scenario


@pytest.fixture(scope="module")
def result():
    return run(load_scenario("depeg"), check_invariants=True)  # conservation every step


def _first_system_debt_step(m):
    debt = m["maker_system_debt"]
    assert (debt > 0).any()
    return int(debt[debt > 0].index.min())


def test_backing_fails_and_creates_system_debt(result):
    m = result.metrics.set_index("step")
    first = _first_system_debt_step(m)
    assert first > 60  # after the crash has started, not at once
    assert m["maker_system_debt"].iloc[-1] > 1_000_000
    auctions = result.events["auctions"]
    assert (auctions["shortfall"] > 0).any()


def test_dai_holds_its_peg_until_the_backing_fails_then_falls_below_097(result):
    m = result.metrics.set_index("step")
    first = _first_system_debt_step(m)
    mid = m["DAI-USDC_mid_price"]
    assert mid.notna().all()
    assert mid.loc[: first - 1].min() >= 0.995  # on peg (1.0) while DAI is fully backed
    assert mid.loc[first:].min() < 0.97  # about 0.94 in this run
    assert mid.iloc[-1] < 0.97  # and it stays off the peg


def test_dai_collateral_accounts_are_liquidated(result):
    m = result.metrics.set_index("step")
    first = _first_system_debt_step(m)
    liq = result.events["liquidations"]
    dai = liq[(liq["protocol"] == "dailend") & (liq["collateral_asset"] == "DAI")]
    assert len(dai) > 0
    assert (dai["step"] > first).all()  # only after the depeg
    assert (dai["oracle_price"] < 0.97).all()  # at the depegged book mid
    assert m["dailend_USDC_borrowed"].iloc[-1] < m["dailend_USDC_borrowed"].iloc[0]
