"""Liquidation bots that read the pool's liquidation policy through the ProtocolsView.

One pool lends USDC against WETH; account ``acct`` posts 1 WETH (oracle 1,000) and borrows
800 USDC (HF = 1,000 * 0.85 / 800 = 1.0625). The book buys any amount of WETH at the oracle.
"""

import mesa
import numpy as np
import pytest

from marginsim.agents.liquidator import LiquidateCall, Liquidator
from marginsim.config import LendingConfig, LiquidatorsConfig, ReserveConfig
from marginsim.protocols.lending import FixedPriceFeed, LendingPool
from marginsim.protocols.policies import make_policy
from marginsim.protocols.view import ProtocolsView

USDC = 10**6
WETH = 10**9


class BookView:
    """A MarketView over a ledger with one WETH book that pays ``feed['eth']`` for any size."""

    def __init__(self, ledger, feed):
        self.ledger, self.feed = ledger, feed
        self.weth = ledger.asset_id("WETH")

    def balances(self, holders, asset):
        return self.ledger.balances[np.asarray(holders), asset]

    def spot_instrument(self, base_asset, quote_asset=None):
        return 0 if base_asset == self.weth else None

    def asset_decimals(self, asset):
        return self.ledger.assets[asset].decimals

    def base_units_per_lot(self, ins):
        return 10**6  # lot 0.001 WETH

    def quote_asset(self, ins):
        return self.ledger.asset_id("USDC")

    def market_order_cost(self, ins, side, lots):
        price = self.feed.prices["eth"]
        return lots, round(lots / 1000 * price * USDC), price


def build(policy):
    cfg = LendingConfig(
        kind="lending",
        reserves={
            "USDC": ReserveConfig(price=1.0),
            "WETH": ReserveConfig(
                price="eth",
                ltv=0.8,
                liquidation_threshold=0.85,
                liquidation_bonus=0.05,
                protocol_share=0.0,
                borrowable=False,
            ),
        },
        liquidation_policy=policy,
    )
    feed = FixedPriceFeed({"eth": 1000.0})
    pool = LendingPool.standalone(cfg, {"USDC": 6, "WETH": 9}, feed, name="P")
    pool.attach_policy(make_policy("P", cfg.liquidation_policy, 60.0))
    ledger = pool.ledger
    lp, acct, liq = (ledger.add_holder(n) for n in ("lp", "acct", "bot"))
    ledger.mint(lp, ledger.asset_id("USDC"), 10_000 * USDC, "endowment")
    ledger.mint(liq, ledger.asset_id("USDC"), 10_000 * USDC, "endowment")
    ledger.mint(acct, ledger.asset_id("WETH"), WETH, "endowment")
    assert pool.supply(lp, "USDC", 10_000 * USDC).ok and pool.supply(acct, "WETH", WETH).ok
    assert pool.borrow(acct, "USDC", 800 * USDC).ok
    bot = Liquidator(mesa.Model(rng=1), LiquidatorsConfig(count=1), holder=liq)
    return pool, feed, ProtocolsView({"P": pool}, {}), BookView(ledger, feed), bot, acct


def test_under_a_gradual_policy_the_bot_repays_exactly_the_slice():
    pool, feed, view, market, bot, acct = build({"kind": "gradual", "slices": 4})
    feed.prices["eth"] = 930.0  # HF = 930 * 0.85 / 800 = 0.988: close factor 50%
    # The slice is ceil(800e6 / 4) = 200e6, below the close factor's 400e6.
    quote = view.liquidation_quote("P", acct, "USDC", "WETH")
    assert (quote.max_repay_units, quote.bonus, quote.early, quote.paused) == (
        200 * USDC,
        pytest.approx(0.05),
        False,
        False,
    )
    # Profitable: 200 * 1.05 / 930 = 0.2258 WETH -> 225 whole lots -> 209.25 USDC >= 200.
    calls = list(bot.plan(market, view))
    assert calls == [LiquidateCall("P", acct, "USDC", "WETH", 200 * USDC)]
    # Quoting changed nothing: no schedule was started.
    assert pool.policy.schedules == {}
    r = pool.liquidate(bot.holder, acct, "USDC", "WETH", calls[0].repay_units)
    assert r.ok and r.debt_repaid == 200 * USDC
    # The slice of this step is used up: nothing listed, the quote refuses, no call.
    assert not view.liquidation_quote("P", acct, "USDC", "WETH").allowed
    assert list(bot.plan(market, view)) == []
    # Next step, lower price: 0.774193549 WETH * 800 * 0.85 / 600 = 0.877 (< 0.95: the whole
    # debt may go), but the slice is ceil(600e6 / 3) = 200e6 again.
    pool.step = 1
    feed.prices["eth"] = 800.0
    assert list(bot.plan(market, view)) == [LiquidateCall("P", acct, "USDC", "WETH", 200 * USDC)]
    # The pool's own terms agree with the quote the bot read.
    r = pool.liquidate(bot.holder, acct, "USDC", "WETH", 10**12)
    assert r.ok and r.debt_repaid == 200 * USDC


def test_under_a_paused_circuit_breaker_the_bot_makes_no_call():
    policy = {"kind": "circuit_breaker", "threshold": 0.05, "window_steps": 10, "pause_steps": 10}
    pool, feed, view, market, bot, acct = build(policy)
    pool.update_policy(0)  # observes 1,000
    pool.step = 1
    feed.prices["eth"] = 900.0  # -10% in one step > 5%: paused for steps 1..10
    pool.update_policy(1)
    # HF = 900 * 0.85 / 800 = 0.95625 < 1, yet the pool is paused.
    assert pool.health_factors([acct])[0] == pytest.approx(0.95625, rel=1e-15)
    assert view.liquidations_paused("P")
    assert view.liquidation_quote("P", acct, "USDC", "WETH").paused
    assert list(bot.plan(market, view)) == []
    pool.step = 11
    pool.update_policy(11)
    assert not view.liquidations_paused("P")
    # After the pause: the close factor's half, 400e6 (400 * 1.05 / 900 -> 466 lots, 419.4).
    assert list(bot.plan(market, view)) == [LiquidateCall("P", acct, "USDC", "WETH", 400 * USDC)]


def test_under_the_static_policy_the_quote_is_the_close_factor_and_the_reserve_bonus():
    pool, feed, view, market, bot, acct = build({"kind": "static"})
    feed.prices["eth"] = 930.0
    q = view.liquidation_quote("P", acct, "USDC", "WETH")
    # ceil(800e6 * 0.5) = 400e6 at the reserve's 5%.
    assert (q.refusal, q.max_repay_units, float(q.bonus)) == (None, 400 * USDC, 0.05)
    feed.prices["eth"] = 1000.0
    assert view.liquidation_quote("P", acct, "USDC", "WETH").refusal == "health factor 1.0625 >= 1"
    assert list(bot.plan(market, view)) == []


def test_under_a_predictive_policy_the_bot_sizes_and_prices_the_early_liquidation():
    pool, feed, view, market, bot, acct = build({"kind": "predictive"})
    # Reference volatility 0.8 a year, 60 s steps, k = 10: sigma_k = sqrt(10 * 0.64 * 60 /
    # 31,536,000) = 0.0034896; h* = exp(0.0034896 * Phi^-1(0.75) = 0.67449) = 1.0023564.
    assert pool.policy.trigger_health() == pytest.approx(1.0023564, rel=1e-6)
    feed.prices["eth"] = 942.0  # HF = 942 * 0.85 / 800 = 1.000875: healthy, but at risk
    q = view.liquidation_quote("P", acct, "USDC", "WETH")
    # Early: ceil(800e6 * 0.1) = 80e6 at the early bonus 1% (not the reserve's 5%).
    assert (q.max_repay_units, float(q.bonus), q.early) == (80 * USDC, 0.01, True)
    # 80 * 1.01 / 942 = 0.085775 WETH -> 85 lots -> 80.07 USDC >= 80: the early slice.
    assert list(bot.plan(market, view)) == [LiquidateCall("P", acct, "USDC", "WETH", 80 * USDC)]
    # With min_profit 0.5% the 1% early bonus does not pay after lot rounding (80.07 < 80.4;
    # halving to 40e6: 42 lots -> 39.56 < 40.2, ...), though the reserve's 5% would have
    # (89 lots -> 83.84): the bot prices the call with the policy's bonus.
    picky = Liquidator(mesa.Model(rng=1), LiquidatorsConfig(count=1, min_profit=0.005), bot.holder)
    assert list(picky.plan(market, view)) == []
