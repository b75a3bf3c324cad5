"""Basis arbitrageurs: exact carry-trade orders from the two mids and their own position."""

import numpy as np
import pytest

from marginsim.agents.basis import BasisArbitrageur
from marginsim.config import BasisArbitrageursConfig
from marginsim.experiments.scenarios import load_scenario
from marginsim.market.engine import OrderKind
from marginsim.model import MarginModel


class View:
    def __init__(self, perp_mid, spot_mid):
        self.mids = {0: spot_mid, 1: perp_mid}

    def mid_price(self, instrument):
        return self.mids[instrument]

    def lot(self, instrument):
        return 0.001


class Protocols:
    def __init__(self, position_lots):
        self.position = position_lots

    def perp_positions(self, venue, holders, instrument):
        return np.array([self.position])


def bot(position=0, **cfg):
    model = MarginModel(load_scenario("perp_crash").with_overrides({"run.steps": 1}))
    config = BasisArbitrageursConfig(count=1, trade_size=2.0, max_position=5.0, **cfg)
    return BasisArbitrageur(
        model, config, 9, perp=1, spot=0, venue="perpx", protocols=Protocols(position)
    )


def legs(batch):
    return list(
        zip(batch.instrument.tolist(), batch.side.tolist(), batch.qty_lots.tolist(), strict=True)
    )


def test_rich_perp_is_sold_against_spot_bought():
    batch = bot().act(View(perp_mid=2010.0, spot_mid=2000.0))  # +50 bp > 20 bp
    assert legs(batch) == [(1, -1, 2000), (0, 1, 2000)]
    assert (batch.kind == int(OrderKind.MARKET)).all()


def test_cheap_perp_is_bought_against_spot_sold():
    assert legs(bot().act(View(perp_mid=1990.0, spot_mid=2000.0))) == [(1, 1, 2000), (0, -1, 2000)]


def test_position_limit_caps_the_trade_and_small_basis_unwinds():
    # Already short 4 WETH of a 5 WETH limit: only 1 WETH more.
    assert legs(bot(-4000).act(View(2010.0, 2000.0))) == [(1, -1, 1000), (0, 1, 1000)]
    assert len(bot(-5000).act(View(2010.0, 2000.0))) == 0
    # Basis back within 5 bp: unwind 2 WETH of the 3 WETH short (buy perp, sell spot).
    assert legs(bot(-3000).act(View(2000.5, 2000.0))) == [(1, 1, 2000), (0, -1, 2000)]
    # Between exit and entry: hold.
    assert len(bot(-3000).act(View(2002.0, 2000.0))) == 0
    # One empty book side: no basis, no trade.
    assert len(bot().act(View(None, 2000.0))) == 0


def test_exit_must_be_below_entry():
    with pytest.raises(ValueError, match="exit_bps must be below entry_bps"):
        BasisArbitrageursConfig(entry_bps=10.0, exit_bps=10.0)


def test_carry_trades_stay_delta_neutral_in_a_run():
    scenario = load_scenario("perp_crash").with_overrides(
        {"run.steps": 300, "agents.basis_arbitrageurs.count": 2}
    )
    model = MarginModel(scenario, check_invariants=True)
    start_weth = {
        h: model.ledger.balance(h, model.ledger.asset_id("WETH"))
        for h in (b.holder for b in model.traders if isinstance(b, BasisArbitrageur))
    }
    model.run()
    trades = model.event_tables()["trades"]
    for holder, weth0 in start_weth.items():
        mine = trades[(trades["buyer"] == holder) | (trades["seller"] == holder)]
        assert set(mine["instrument"]) == {"WETH-USDC", "ETH-PERP"}
        spot = model.ledger.balance(holder, model.ledger.asset_id("WETH")) - weth0
        perp = int(model.perps["perpx"].position_sizes(np.array([holder]), 1)[0]) * 10**6
        # Long spot against short perp (or the reverse), within one trade of neutral.
        assert abs(spot + perp) <= 2 * 10**9


def test_unknown_instruments_are_named_in_the_scenario_error():
    from marginsim.config import ScenarioError

    base = load_scenario("perp_crash")
    with pytest.raises(ScenarioError) as err:
        base.with_overrides(
            {
                "agents.basis_arbitrageurs.count": 1,
                "agents.basis_arbitrageurs.perp_instrument": "nope",
                "agents.basis_arbitrageurs.spot_instrument": "ETH-PERP",
            }
        )
    found = dict(err.value.problems)
    assert found["agents.basis_arbitrageurs.perp_instrument"].startswith(
        "unknown perp instrument 'nope'"
    )
    assert found["agents.basis_arbitrageurs.spot_instrument"].startswith(
        "unknown spot instrument 'ETH-PERP'"
    )
