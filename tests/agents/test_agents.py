"""Agents decide from the view they are given: exact quotes, sizes and liquidation sizing."""

import math
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest

from marginsim.agents.base import OrderBatch, RestingOrders, draw
from marginsim.agents.liquidator import LiquidateCall, Liquidator, TakeCall
from marginsim.agents.market_maker import MarketMaker
from marginsim.config import Dist, LiquidatorsConfig, MarketMakersConfig
from marginsim.experiments.scenarios import load_scenario
from marginsim.market.engine import OrderKind
from marginsim.model import MarginModel
from marginsim.protocols.policies import LiquidationQuote
from marginsim.protocols.view import Redemption


class FakeView:
    """A MarketView with fixed answers (tick 0.01, lot 0.001, WETH 9 / USDC 6 decimals)."""

    def __init__(self, index=2000.0, mid=2000.0, balances=None, sale=None):
        self.index_price = index
        self.mid = mid
        self.step = 0
        self._balances = balances or {}
        self._sale = sale  # function lots -> (filled, quote_units, avg)

    def tick(self, ins):
        return 0.01

    def lot(self, ins):
        return 0.001

    def reference_price(self, ins):
        return self.mid

    def mid_price(self, ins):
        return self.mid

    def asset_decimals(self, asset):
        return {0: 6, 1: 9}[asset]

    def balances(self, holders, asset):
        return np.array([self._balances.get((int(h), asset), 0) for h in holders])

    def spot_instrument(self, base_asset, quote_asset=None):
        return 0 if base_asset == 1 else None

    def base_units_per_lot(self, ins):
        return 1_000_000

    def quote_asset(self, ins):
        return 0

    def market_order_cost(self, ins, side, lots):
        return self._sale(lots)


def maker(model=None, **cfg):
    config = MarketMakersConfig(count=1, **cfg)
    model = model or MarginModel(load_scenario("default").with_overrides({"run.steps": 1}))
    return MarketMaker(
        model, config, holder=7, instrument=0, base_asset=1, quote_asset=0, calm_volatility=0.001
    )


def test_market_maker_ladder_exact_prices_and_sizes():
    mm = maker(
        levels=2,
        level_size=1.0,
        half_spread=0.001,
        level_spacing=0.002,
        inventory_skew=0.0,
        fair_value_weight=1.0,
    )
    # 10 WETH and 20,000 USDC: balanced at 2000, so no skew.
    view = FakeView(balances={(7, 1): 10 * 10**9, (7, 0): 20_000 * 10**6})
    batch = mm.act(view)
    bids = batch.price_ticks[batch.side == 1].tolist()
    asks = batch.price_ticks[batch.side == -1].tolist()
    # fair 2000: bids at 2000*(1-0.001) = 1998.00 and 2000*(1-0.003) = 1994.00
    assert bids == [199800, 199400]
    assert asks == [200200, 200600]
    assert set(batch.qty_lots.tolist()) == {1000}
    assert (batch.kind == int(OrderKind.LIMIT)).all()


def test_market_maker_inventory_skew_lowers_both_sides_when_long():
    mm = maker(
        levels=1, level_size=1.0, half_spread=0.001, inventory_skew=0.002, fair_value_weight=1.0
    )
    # long: 30 WETH (60,000) against 20,000 USDC -> imbalance 0.5, shift -0.001
    view = FakeView(balances={(7, 1): 30 * 10**9, (7, 0): 20_000 * 10**6})
    batch = mm.act(view)
    assert batch.price_ticks[batch.side == 1].tolist() == [199600]  # 2000*(1-0.001-0.001)
    assert batch.price_ticks[batch.side == -1].tolist() == [200000]  # 2000*(1+0.001-0.001)


def test_market_maker_withdraws_when_volatility_jumps():
    mm = maker(levels=1, withdraw_on_volatility=3.0, fair_value_weight=1.0)
    view = FakeView(balances={(7, 1): 10 * 10**9, (7, 0): 20_000 * 10**6})
    for price in (2000.0, 2000.0, 2000.0):
        view.index_price = price
        assert len(mm.act(view)) == 2
    view.index_price = 1900.0  # a 5% jump against a calm 0.1% per step
    assert len(mm.act(view)) == 0 and mm.withdrawn


def test_draw_distributions_and_clipping():
    rng = np.random.default_rng(0)
    assert draw(Dist(dist="const", value=3.0), 4, rng).tolist() == [3.0] * 4
    values = draw(Dist(dist="lognormal", median=2.0, sigma=1.0, max=3.0), 1000, rng)
    assert values.max() == 3.0 and abs(np.median(values) - 2.0) < 0.2
    u = draw(Dist(dist="uniform", low=1.0, high=2.0, min=1.5), 1000, rng)
    assert u.min() == 1.5 and u.max() < 2.0


def test_resting_orders_expire_after_their_lifetime():
    r = RestingOrders()
    r.add(np.array([1, 2]), np.array([10, 11]), step=0)
    r.add(np.array([3]), np.array([12]), step=5)
    ids, accounts = r.pop_expired(step=9, lifetime_steps=5)
    assert ids.tolist() == [1, 2] and accounts.tolist() == [10, 11]
    assert r.order_id.tolist() == [3]


def test_order_batch_build_broadcasts_and_concat_keeps_order():
    a = OrderBatch.build(0, 1, int(OrderKind.LIMIT), np.array([5, 6]), 2, 9)
    b = OrderBatch.cancels(0, np.array([9]), np.array([77]))
    both = OrderBatch.concat([a, OrderBatch.empty(), b])
    assert both.price_ticks.tolist() == [5, 6, 0]
    assert both.order_ref.tolist() == [0, 0, 77]
    assert both.kind.tolist() == [int(OrderKind.LIMIT)] * 2 + [int(OrderKind.CANCEL)]


class FakeProtocols:
    """One lending pool 'p': USDC debt (6 dp, price 1), WETH collateral (9 dp)."""

    lending_names = ("p",)
    cdp_names = ()

    def __init__(self, owed_units, hf, p_coll=2000.0):
        self.owed = owed_units
        self.hf = hf
        self.p_coll = p_coll

    def liquidatable(self, pool):
        return SimpleNamespace(
            holder=np.array([42]),
            health_factor=np.array([self.hf]),
            debt_value=np.array([self.owed / 1e6]),
            collateral_value=np.array([1.0]),
            debt_asset=np.array([0]),
            collateral_asset=np.array([1]),
        )

    def asset_symbol(self, pool, asset):
        return {0: "USDC", 1: "WETH"}[asset]

    def reserve(self, pool, symbol):
        if symbol == "USDC":
            return SimpleNamespace(asset=0, unit=10**6, liquidation_bonus=0.045, protocol_share=0.1)
        return SimpleNamespace(asset=1, unit=10**9, liquidation_bonus=0.05, protocol_share=0.1)

    def debt_units(self, pool, holder, symbol):
        return self.owed

    def max_repay_share(self, pool, hf):
        return 1.0 if hf < 0.95 else 0.5

    def reserve_price(self, pool, symbol):
        return 1.0 if symbol == "USDC" else self.p_coll

    # Static terms, as a pool without a policy quotes them: the close factor (rounded up by
    # the pool) and the collateral reserve's bonus.
    def liquidation_quote(self, pool, account, debt_symbol, collateral_symbol):
        share = self.max_repay_share(pool, self.hf)
        bonus = Fraction(repr(self.reserve(pool, collateral_symbol).liquidation_bonus))
        return LiquidationQuote(None, math.ceil(self.owed * share), bonus)

    def liquidations_paused(self, pool):
        return False

    def is_wrapped(self, asset):
        return False

    def redemption(self, asset, units):
        return Redemption(asset, units)


def liquidator(**cfg):
    model = MarginModel(load_scenario("default").with_overrides({"run.steps": 1}))
    return Liquidator(model, LiquidatorsConfig(count=1, **cfg), holder=3)


def test_liquidator_repays_the_close_factor_share_when_the_book_absorbs_it():
    bot = liquidator()
    # The book pays the oracle price for any size: fully profitable.
    view = FakeView(balances={(3, 0): 10**12}, sale=lambda lots: (lots, lots * 2000 * 1000, 2000.0))
    calls = list(bot.plan(view, FakeProtocols(owed_units=100_000 * 10**6, hf=0.97)))
    assert calls == [LiquidateCall("p", 42, "USDC", "WETH", 50_000 * 10**6)]
    # Below HF 0.95 the whole debt may go.
    calls = list(bot.plan(view, FakeProtocols(owed_units=100_000 * 10**6, hf=0.9)))
    assert calls[0].repay_units == 100_000 * 10**6


def test_liquidator_halves_the_repay_until_the_book_absorbs_it_at_a_profit():
    bot = liquidator()
    # The book absorbs at most 10 WETH (10,000 lots) at 2000; beyond that nothing fills.
    view = FakeView(
        balances={(3, 0): 10**12},
        sale=lambda lots: (min(lots, 10_000), min(lots, 10_000) * 2000 * 1000, 2000.0),
    )
    calls = list(bot.plan(view, FakeProtocols(owed_units=100_000 * 10**6, hf=0.97)))
    # 50,000 -> 25,000 -> 12,500 -> 6,250 -> 3,125 -> 1,562.5... the first repay whose
    # seizure (repay * 1.045 / 2000 WETH) fits in 10 WETH is 12,500 USDC (6.53 WETH).
    assert calls[0].repay_units == 12_500 * 10**6


def test_liquidator_with_no_debt_asset_or_unprofitable_book_does_nothing():
    bot = liquidator()
    rich_book = lambda lots: (lots, lots * 2000 * 1000, 2000.0)  # noqa: E731
    assert list(bot.plan(FakeView(sale=rich_book), FakeProtocols(10**9, 0.97))) == []
    # The book pays 5% below the oracle: the 4.5% net bonus does not cover it.
    poor_book = lambda lots: (lots, lots * 1900 * 1000, 1900.0)  # noqa: E731
    view = FakeView(balances={(3, 0): 10**12}, sale=poor_book)
    assert list(bot.plan(view, FakeProtocols(10**9, 0.97))) == []


def test_keeper_takes_an_auction_only_below_what_the_book_pays():
    bot = liquidator()
    auction = SimpleNamespace(needs_reset=False, lot_units=10 * 10**9, price=1900.0, auction_id=4)

    class Cdps(FakeProtocols):
        lending_names = ()
        cdp_names = ("maker",)

        def unsafe_vaults(self, cdp):
            return SimpleNamespace(holder=np.array([], dtype=np.int64))

        def active_auctions(self, cdp):
            return [auction]

        def cdp_assets(self, cdp):
            return 1, 0  # collateral WETH, stablecoin priced like USDC decimals

    view = FakeView(
        balances={(3, 0): 9_500 * 10**6}, sale=lambda lots: (lots, lots * 2000 * 1000, 2000.0)
    )
    calls = list(bot.plan(view, Cdps(0, 1.0)))
    # 9,500 stablecoin buys 5 WETH at 1900; the book pays 2000 for them.
    assert calls == [TakeCall("maker", 4, 5 * 10**9, 1900.0)]
    auction.price = 2100.0
    assert list(bot.plan(view, Cdps(0, 1.0))) == []
    assert math.isclose(auction.price, 2100.0)


def test_order_batch_build_refuses_arrays_of_different_lengths():
    with pytest.raises(ValueError, match=r"equal lengths, got \[2, 3\]"):
        OrderBatch.build(0, 1, int(OrderKind.LIMIT), np.array([5, 6]), np.array([1, 2, 3]), 9)
    single = OrderBatch.build(0, -1, int(OrderKind.MARKET), 0, 7, 4)
    assert len(single) == 1 and single.qty_lots.tolist() == [7]


def test_market_maker_pulls_its_ladder_at_withdraw_speed_and_returns_as_fast():
    mm = maker(
        levels=1,
        level_size=1.0,
        withdraw_on_volatility=3.0,
        withdraw_speed=0.5,
        fair_value_weight=1.0,
        volatility_window_steps=2,
    )
    view = FakeView(balances={(7, 1): 10 * 10**9, (7, 0): 20_000 * 10**6})
    sizes = []
    for price in (2000.0, 2000.0, 2000.0, 1900.0, 1900.0, 1900.0, 1900.0):
        view.index_price = price
        batch = mm.act(view)
        sizes.append(int(batch.qty_lots[0]) if len(batch) else 0)
    # Calm; the 5% jump is in the 2-return window for two steps: half the ladder, then none;
    # once it has left the window the ladder comes back half a ladder per step.
    assert sizes == [1000, 1000, 1000, 500, 0, 500, 1000]


def test_liquidator_sells_seized_collateral_in_equal_slices_when_gradual():
    bot = liquidator(sell_over_steps=4)
    view = FakeView()
    # 4.0005 WETH seized: nothing now, then 1.000125 WETH a step for four steps, each sold
    # as whole lots (1,000); the sub-lot remainder stays in the wallet as dust.
    assert len(bot.after(view, 1, 4_000_500_000)) == 0
    sold = [bot.act(view).qty_lots.tolist() for _ in range(5)]
    assert sold == [[1000], [1000], [1000], [1000], []]
    assert bot.tranches == []
    # A flash-loan liquidation must sell at once.
    assert bot.after(view, 1, 2_000_000_000, at_once=True).qty_lots.tolist() == [2000]


def test_gradual_selling_spreads_the_price_impact_of_liquidations():
    from marginsim.experiments.runner import run

    base = load_scenario("lending_cascade").with_overrides({"run.steps": 300})
    at_once = run(base)
    gradual = run(base.with_overrides({"agents.liquidators.sell_over_steps": 10}))
    steps_at_once = at_once.metrics.set_index("step")
    steps_gradual = gradual.metrics.set_index("step")
    first = int(at_once.events["liquidations"]["step"].min())
    # The first liquidation's sale hits the book in one step when sold at once...
    assert steps_at_once.loc[first, "basis_bps"] < steps_gradual.loc[first, "basis_bps"]
    # ...and the same seized WETH reaches the book over the following steps when gradual.
    assert len(gradual.events["liquidations"]) > 0
