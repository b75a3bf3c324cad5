"""Arbitrageurs size pool-vs-book round trips exactly from the view they are given."""

import mesa
import numpy as np
import pytest

from marginsim.agents.arbitrageur import Arbitrageur, SwapCall
from marginsim.config import ArbitrageursConfig, ScenarioError
from marginsim.experiments.scenarios import load_scenario
from marginsim.ledger import AssetSpec, Ledger
from marginsim.market.amm import ConstantProductPool
from marginsim.market.engine import OrderKind

USDC, WETH = 0, 1  # ledger ids: USDC 6 decimals, WETH 9 decimals
LOT_UNITS = 1_000_000  # 0.001 WETH
TICK_LOT_UNITS = 10  # 0.01 USDC per WETH on 0.001 WETH
TAKER_RATE = 5  # 5 bp, in 1e-4


class FakeView:
    """A book with one bid level and one ask level (taker fee 5 bp) beside a real pool."""

    def __init__(self, pool, bid=None, ask=None, depth=10**9, balances=None):
        self.pool = pool
        self.bid, self.ask, self.depth = bid, ask, depth  # ticks, lots
        self._balances = balances or {}

    # book
    def tick(self, ins):
        return 0.01

    def lot(self, ins):
        return 0.001

    def best_bid(self, ins):
        return self.bid

    def best_ask(self, ins):
        return self.ask

    def base_units_per_lot(self, ins):
        return LOT_UNITS

    def quote_asset(self, ins):
        return USDC

    def asset_decimals(self, asset):
        return {USDC: 6, WETH: 9}[asset]

    def market_order_cost(self, ins, side, lots):
        price = self.ask if side > 0 else self.bid
        if price is None:
            return 0, 0, None
        filled = min(lots, self.depth)
        notional = filled * price * TICK_LOT_UNITS
        fee = -(-notional * TAKER_RATE // 10_000)
        return filled, notional + fee if side > 0 else notional - fee, price * 0.01

    def balances(self, holders, asset):
        return np.array([self._balances.get((int(h), asset), 0) for h in holders])

    # pool (the real pool's quotes)
    def amm_reserves(self, pool):
        return self.pool.reserves

    def amm_fee_ppm(self, pool):
        return self.pool.fee_ppm

    def amm_quote_out(self, pool, side, amount_in):
        return self.pool.quote_out(side, amount_in)

    def amm_amount_in_for(self, pool, side, amount_out):
        return self.pool.amount_in_for(side, amount_out)


def make_pool(weth=1000, usdc=2_000_000):
    ledger = Ledger([AssetSpec("USDC", 6), AssetSpec("WETH", 9), AssetSpec("LP", 9)])
    pool = ConstantProductPool(ledger, "amm", WETH, USDC, 2, ledger.add_holder("amm"))
    lp = ledger.add_holder("lp")
    ledger.mint(lp, WETH, weth * 10**9, "test")
    ledger.mint(lp, USDC, usdc * 10**6, "test")
    pool.add_liquidity(lp, weth * 10**9, usdc * 10**6)
    return ledger, pool


RICH = {(7, WETH): 1000 * 10**9, (7, USDC): 100_000_000 * 10**6}


def arb(**cfg):
    config = ArbitrageursConfig(count=1, **{"max_trade": 100.0, **cfg})
    return Arbitrageur(mesa.Model(), config, 7, "amm", 0, WETH, USDC)


def test_pool_below_the_bid_buys_from_the_pool_and_sells_on_the_book_exactly():
    """Pool 1000 WETH / 2,000,000 USDC (mid 2000), fee 0.3%; bid 2100 with taker fee 5 bp.

    One lot sold on the book pays 2,100,000 - 1,050 = 2,098,950 units. Lot n bought from
    the pool costs C(n) - C(n-1), C(n) = ceil(n 1e6 * 2e12 * 1e6 / (997,000 (1e12 - n 1e6))).
    The largest n with C(n) - C(n-1) <= 2,098,950 is 22,388 lots (22.388 WETH): the
    continuous solution of 2e24 / (0.997 (1e12 - x)^2) = 2.09895 is x = 2.2388e10 units.
    """
    _, pool = make_pool()
    plan = arb().plan(FakeView(pool, bid=210_000, balances=RICH))
    n = 22_388
    cost = pool.amount_in_for(1, n * LOT_UNITS)
    assert cost == 45_939_219_442
    assert plan.swaps == (SwapCall("amm", 1, cost, n * LOT_UNITS),)
    o = plan.orders
    assert len(o) == 1
    assert (o.side[0], o.kind[0], o.qty_lots[0], o.account[0]) == (-1, OrderKind.IOC, n, 7)
    # The limit is the pool cost of the marginal lot (2,098,946 units), rounded up to ticks.
    assert o.price_ticks[0] == 209_895
    # Proceeds 22,388 * 2,098,950 beat the cost by 2.3%; lot 22,389 would lose.
    assert n * 2_098_950 > cost
    assert pool.amount_in_for(1, (n + 1) * LOT_UNITS) - cost > 2_098_950


def test_pool_above_the_ask_buys_on_the_book_and_sells_into_the_pool_exactly():
    """Ask 1900 (a lot costs 1,900,950 with the fee): sell into the pool while lot n pays
    more than that: 24,255 lots, the largest n with Q(n) - Q(n-1) >= 1,900,950."""
    _, pool = make_pool()
    plan = arb().plan(FakeView(pool, ask=190_000, balances=RICH))
    n = 24_255
    out = pool.quote_out(-1, n * LOT_UNITS)
    assert out == 47_222_523_831
    assert plan.swaps == (SwapCall("amm", -1, n * LOT_UNITS, out),)
    o = plan.orders
    assert (o.side[0], o.kind[0], o.qty_lots[0], o.price_ticks[0]) == (1, OrderKind.IOC, n, 190_095)
    assert out - pool.quote_out(-1, (n - 1) * LOT_UNITS) >= 1_900_950
    assert pool.quote_out(-1, (n + 1) * LOT_UNITS) - out < 1_900_950


@pytest.mark.parametrize("bid, ask", [(200_500, None), (None, 199_500), (200_600, 199_400)])
def test_no_trade_when_the_gap_is_below_the_fees(bid, ask):
    """0.25-0.3% gaps: inside the pool fee (0.3%) plus the taker fee (0.05%)."""
    _, pool = make_pool()
    plan = arb().plan(FakeView(pool, bid=bid, ask=ask, balances=RICH))
    assert plan.swaps == () and len(plan.orders) == 0


def test_size_is_capped_by_max_trade_depth_and_wallet():
    _, pool = make_pool()
    assert arb(max_trade=5.0).plan(FakeView(pool, bid=210_000, balances=RICH)).swaps[0].min_out == (
        5_000 * LOT_UNITS
    )
    thin = FakeView(pool, bid=210_000, depth=1_234, balances=RICH)
    assert arb().plan(thin).orders.qty_lots[0] == 1_234
    poor = {(7, WETH): 3 * 10**9 + 5, (7, USDC): 100_000_000 * 10**6}
    assert arb().plan(FakeView(pool, bid=210_000, balances=poor)).orders.qty_lots[0] == 3_000
    # Not enough quote to pay the pool for even one lot: nothing.
    broke = {(7, WETH): 3 * 10**9, (7, USDC): 1_000}
    assert arb().plan(FakeView(pool, bid=210_000, balances=broke)).swaps == ()


def test_min_edge_halves_the_trade_until_the_edge_is_met():
    """At full size (22,388 lots) the edge is 2.29%; with min_edge 3% the size halves to
    11,194 lots (average pool price lower, edge about 3.4%)."""
    _, pool = make_pool()
    plan = arb(min_edge=0.03).plan(FakeView(pool, bid=210_000, balances=RICH))
    n = 11_194
    assert plan.orders.qty_lots[0] == n
    assert n * 2_098_950 >= pool.amount_in_for(1, n * LOT_UNITS) * 1.03
    assert 22_388 * 2_098_950 < pool.amount_in_for(1, 22_388 * LOT_UNITS) * 1.03


def test_a_round_trip_executes_through_the_pool_and_conserves_base():
    ledger, pool = make_pool()
    h = ledger.add_holder("arb")
    ledger.mint(h, WETH, 1000 * 10**9, "test")
    ledger.mint(h, USDC, 100_000_000 * 10**6, "test")
    bot = Arbitrageur(mesa.Model(), ArbitrageursConfig(count=1, max_trade=100.0), h, "amm", 0, 1, 0)
    balances = {(h, a): ledger.balance(h, a) for a in (USDC, WETH)}
    (call,) = bot.plan(FakeView(pool, bid=210_000, balances=balances)).swaps
    result = pool.swap(h, call.side, call.amount_in, call.min_out)
    assert result.ok and result.amount_out == call.min_out
    # The pool now prices the marginal lot at the book's net bid.
    assert pool.mid_price() == pytest.approx(2098.95 * 0.997, rel=1e-4)


def test_arbitrageurs_need_a_pool_and_a_book_of_its_pair():
    base = load_scenario("arbitrage").with_overrides({"amms": [], "agents.arbitrageurs.count": 0})
    with pytest.raises(ScenarioError, match="arbitrageurs"):
        base.with_overrides({"agents.arbitrageurs.count": 1})
    arb_sc = load_scenario("arbitrage")
    with pytest.raises(ScenarioError, match="arbitrageurs.instrument"):
        arb_sc.with_overrides({"agents.arbitrageurs.instrument": "nope"})
