"""Unit tests of the stablecoin sellers (the depeg scenario's DAI holders)."""

from __future__ import annotations

import numpy as np
import pytest

from marginsim.agents.stablecoin_sellers import StablecoinSellers
from marginsim.config import ScenarioError
from marginsim.experiments.scenarios import load_scenario
from marginsim.market.engine import OrderKind
from marginsim.model import MarginModel


class _Backing:
    """A protocols view stub whose CDP carries a given system debt."""

    def __init__(self, system_debt: int, supply: int) -> None:
        self.backing = (system_debt, supply)

    def cdp_backing(self, cdp: str) -> tuple[int, int]:
        return self.backing


def _sellers(m: MarginModel) -> StablecoinSellers:
    return next(t for t in m.traders if isinstance(t, StablecoinSellers))


def test_sellers_are_built_with_their_dai_and_read_the_cdp_backing():
    m = MarginModel(load_scenario("depeg").with_overrides({"run.steps": 2}))
    s = _sellers(m)
    dai = m.ledger.asset_id("DAI")
    assert s.count == 500 and s.stable_asset == dai
    assert (m.view.balances(s.holders, dai) == 2_000 * 10**6).all()
    assert m.protocols_view.cdp_backing("maker")[0] == 0  # no system debt at the start


def test_no_system_debt_no_selling():
    m = MarginModel(load_scenario("depeg").with_overrides({"run.steps": 2}))
    s = _sellers(m)
    assert s.act(m.view).qty_lots.shape[0] == 0
    s._protocols = _Backing(0, 10**12)
    assert s.selling_probability(s._protocols) == 0.0


def test_selling_grows_with_the_unbacked_share_and_sells_a_share_of_the_wallet():
    m = MarginModel(load_scenario("depeg").with_overrides({"run.steps": 2}))
    s = _sellers(m)
    s._protocols = _Backing(5 * 10**10, 10**12)  # 5% unbacked, sensitivity 2: p = 0.1
    assert s.selling_probability(s._protocols) == pytest.approx(0.1)
    batch = s.act(m.view)
    n = batch.qty_lots.shape[0]
    assert 20 < n < 90  # about 50 of 500
    assert (batch.side == -1).all() and (batch.kind == int(OrderKind.MARKET)).all()
    assert (batch.qty_lots == 500).all()  # 25% of 2,000 DAI, in 1-DAI lots
    assert np.isin(batch.account, s.holders).all()
    s._protocols = _Backing(9 * 10**11, 10**12)  # p capped at 1: every account sells
    assert s.act(m.view).qty_lots.shape[0] == 500


def test_unknown_cdp_is_refused():
    sc = load_scenario("depeg").with_overrides({"agents.stablecoin_sellers.cdp": "nope"})
    with pytest.raises(ScenarioError, match="no CDP protocol"):
        MarginModel(sc)
