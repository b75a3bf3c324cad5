"""Perp venue: tiers, PnL, pre-trade checks, mark, funding, liquidation, insurance fund, ADL."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from marginsim.config import LendingConfig, MarginTierConfig, PerpConfig, ReserveConfig
from marginsim.ledger import AssetSpec, Ledger
from marginsim.market.engine import BookSpec, MatchingEngine, OrderKind
from marginsim.protocols.lending import FixedPriceFeed, LendingPool
from marginsim.protocols.perp import (
    MarginTiers,
    OrderCheck,
    PerpContract,
    PerpRefusal,
    PerpVenue,
    bankruptcy_price,
    liquidation_price,
    maintenance_amounts,
)

USDC = 10**6  # settlement units per USDC
TICK = 0.01  # USDC per ETH
LOT = 0.01  # ETH per lot
QUTL = 100  # units of 1 lot at 1 tick: 0.01 ETH * 0.01 USDC * 10^6
VPL = LOT * USDC  # units per lot per 1 USDC of price: 10,000


def T(cap: float, rate: float, lev: float) -> MarginTierConfig:
    return MarginTierConfig(max_notional=cap, maintenance_rate=rate, max_leverage=lev)


# The first five BTCUSDT brackets of Binance (the last made unbounded).
TIERS = [
    T(50_000, 0.004, 125),
    T(250_000, 0.005, 100),
    T(1_000_000, 0.01, 50),
    T(10_000_000, 0.025, 20),
    T(0, 0.05, 10),
]
BINANCE_BTCUSDT = [
    T(50_000, 0.004, 125),
    T(250_000, 0.005, 100),
    T(1_000_000, 0.01, 50),
    T(10_000_000, 0.025, 20),
    T(20_000_000, 0.05, 10),
    T(50_000_000, 0.10, 5),
    T(100_000_000, 0.125, 4),
    T(200_000_000, 0.15, 3),
    T(300_000_000, 0.25, 2),
    T(0, 0.50, 1),
]


def ticks(price: float) -> int:
    return round(price / TICK)


def lots(eth: float) -> int:
    return round(eth / LOT)


# ------------------------------------------------------------------------------ test world
@dataclasses.dataclass
class World:
    ledger: Ledger
    engine: MatchingEngine
    venue: PerpVenue
    feed: FixedPriceFeed
    step: int = 0

    def trader(self, name, deposit, wallet=None, mode=None, leverage=None):
        h = self.ledger.add_holder(name)
        self.ledger.mint(h, 0, round((wallet if wallet is not None else deposit) * USDC), "test")
        if mode is not None:
            assert self.venue.set_margin_mode(h, mode).ok
        if leverage is not None:
            assert self.venue.set_leverage(h, 0, leverage).ok
        if deposit:
            assert self.venue.deposit(h, round(deposit * USDC)).ok
        return h

    def apply_since(self, start):
        self.venue.apply_tape(self.engine.trade_arrays(start))

    def submit(self, side, kind, price, qty, account, check=True, ins=0):
        if check:
            ok, reason = self.venue.check_orders(ins, side, kind, ticks(price), qty, account)
            assert ok[0], OrderCheck(int(reason[0]))
        start = self.engine.n_trades
        res = self.engine.submit_batch(ins, side, int(kind), ticks(price), qty, account)
        assert res.status[0] == 0
        self.apply_since(start)
        return res

    def open(self, taker, maker, taker_side, price, qty, ins=0, check=True):
        """Maker rests ``qty`` at ``price``; the taker takes it with an IOC order."""
        self.submit(-taker_side, OrderKind.LIMIT, price, qty, maker, ins=ins, check=check)
        res = self.submit(taker_side, OrderKind.IOC, price, qty, taker, ins=ins, check=check)
        assert res.filled_lots[0] == qty

    def mark(self, index, step=None):
        if step is not None:
            self.step = step
        self.feed.prices["eth"] = index
        self.venue.update_mark(self.step)

    def liquidate(self):
        orders = self.venue.begin_liquidations(self.step)
        for acct in orders.liquidated_accounts.tolist():
            self.engine.cancel_all(acct)
        start = self.engine.n_trades
        if len(orders):
            self.engine.submit_batch(
                orders.instrument,
                orders.side,
                orders.kind,
                orders.price_ticks,
                orders.qty_lots,
                orders.account,
            )
        self.apply_since(start)
        settled = self.venue.finish_liquidations(self.step)
        return orders, settled

    def check(self):
        self.venue.check_invariants()
        self.ledger.check_conservation()
        self.engine.check_invariants()
        assert not self.venue.positions_sum().any()

    def wallet(self, h):
        return self.venue.wallet_units(h)


def make_world(
    fund=1000.0,
    maker_fee=0.0002,
    taker_fee=0.0005,
    tiers=None,
    contracts=1,
    **cfg,
) -> World:
    ledger = Ledger([AssetSpec("USDC", 6)])
    escrow = ledger.add_holder("escrow")
    engine_fees = ledger.add_holder("engine-fees")
    specs = [
        BookSpec("ETH-PERP", "perp", -1, 0, 1, QUTL, TICK, LOT, maker_fee, taker_fee, engine_fees)
    ]
    if contracts == 2:  # a second contract on the same index, 0.1 ETH lots
        specs.append(
            BookSpec(
                "ETH-PERP-B", "perp", -1, 0, 1, 1000, TICK, 0.1, maker_fee, taker_fee, engine_fees
            )
        )
    engine = MatchingEngine(ledger, specs, escrow_holder=escrow)
    feed = FixedPriceFeed({"eth": 2000.0})
    # The hand-computed funding tests use a 0.75% cap and a 10,000 USDC impact notional.
    cfg = {"funding_cap": 0.0075, "impact_notional": 10_000.0} | cfg
    config = PerpConfig(
        kind="perp", index_oracle="eth", insurance_fund=fund, tiers=tiers or TIERS, **cfg
    )
    venue = PerpVenue(
        ledger, "perp", config, [PerpContract(k, s) for k, s in enumerate(specs)], feed, engine
    )
    world = World(ledger, engine, venue, feed)
    world.mark(2000.0)
    return world


@pytest.fixture
def worlds():
    made = []

    def build(**kw):
        w = make_world(**kw)
        made.append(w)
        return w

    yield build
    for w in made:
        w.check()


def snapshot_state(w: World):
    snap = w.venue.snapshot()
    return (w.ledger.balances.copy(), len(w.ledger.journal), snap)


def assert_unchanged(w: World, before):
    after = snapshot_state(w)
    rows = before[0].shape[0]  # holders added since stay registered, with nothing
    assert np.array_equal(before[0], after[0][:rows])
    assert not after[0][rows:].any()
    assert before[1] == after[1]
    a, b = before[2], after[2]
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            assert np.array_equal(x, y, equal_nan=True), field.name
        elif isinstance(x, tuple) and x and isinstance(x[0], np.ndarray):
            for u, v in zip(x, y, strict=True):
                assert np.array_equal(u, v, equal_nan=True), field.name
        elif isinstance(x, float) and math.isnan(x):
            assert math.isnan(y)
        else:
            assert x == y, field.name


# ------------------------------------------------------------------------------ tiers
def test_maintenance_amounts_reproduce_binance_btcusdt_table():
    # Binance's published cumulative amounts for these brackets (0, 50, 1,300, 16,300, ...):
    # amount[i] = amount[i-1] + cap[i-1] * (rate[i] - rate[i-1]); e.g. 50 = 50,000 * 0.001,
    # 1,300 = 50 + 250,000 * 0.005, 16,300 = 1,300 + 1,000,000 * 0.015.
    assert maintenance_amounts(BINANCE_BTCUSDT) == [
        0.0,
        50.0,
        1_300.0,
        16_300.0,
        266_300.0,
        1_266_300.0,
        2_516_300.0,
        5_016_300.0,
        25_016_300.0,
        100_016_300.0,
    ]


def test_tier_lookup_and_continuity():
    tiers = MarginTiers.from_config(TIERS)
    assert tiers.tier_for(0.0) == 0
    assert tiers.tier_for(50_000.0) == 0  # a cap belongs to its own tier
    assert tiers.tier_for(50_000.01) == 1
    assert tiers.tier_for(250_000.0) == 1
    assert tiers.tier_for(10_000_000.01) == 4
    assert tiers.tier_for(1e12) == 4
    # 200,000 is tier 2: 200,000 * 0.5% - 50 = 950.
    assert tiers.maintenance_margin(200_000.0) == pytest.approx(950.0, abs=1e-9)
    # 5,000,000 is tier 4: 5,000,000 * 2.5% - 16,300 = 108,700.
    assert tiers.maintenance_margin(5_000_000.0) == pytest.approx(108_700.0, abs=1e-6)
    for cap, rate_above, amount_above in (
        (50_000, 0.005, 50),
        (250_000, 0.01, 1_300),
        (1_000_000, 0.025, 16_300),
    ):
        assert tiers.maintenance_margin(cap) == pytest.approx(cap * rate_above - amount_above)
    # Initial margin: 1 / max leverage of the tier, or the account's leverage if lower.
    assert tiers.initial_margin_rate(10_000.0) == pytest.approx(1 / 125)
    assert tiers.initial_margin_rate(300_000.0) == pytest.approx(1 / 50)
    assert tiers.initial_margin_rate(10_000.0, leverage=10) == pytest.approx(0.1)


def test_liquidation_price_10x_long_and_short():
    # 10 ETH at 2,000 with 2,000 margin (10x), tier 1 (0.4%, amount 0):
    # long:  P = (2,000 + 0 - 10 * 2,000) / (10 * 0.004 - 10) = 18,000 / 9.96
    # short: P = (2,000 + 0 + 10 * 2,000) / (10 * 0.004 + 10) = 22,000 / 10.04
    assert liquidation_price(2000.0, 10.0, 2000.0, TIERS) == pytest.approx(18_000 / 9.96)
    assert liquidation_price(2000.0, -10.0, 2000.0, TIERS) == pytest.approx(22_000 / 10.04)
    # Bankruptcy: 2,000 - 2,000 / 10 = 1,800; short 2,200.
    assert bankruptcy_price(2000.0, 10.0, 2000.0) == 1800.0
    assert bankruptcy_price(2000.0, -10.0, 2000.0) == 2200.0
    # 100 ETH at 10x solves in tier 2 (0.5%, amount 50):
    # P = (20,000 + 50 - 200,000) / (100 * 0.005 - 100) = 179,950 / 99.5 = 1,808.54...,
    # notional 180,854 is inside (50,000, 250,000].
    price = liquidation_price(2000.0, 100.0, 20_000.0, TIERS)
    assert price == pytest.approx(179_950 / 99.5)
    # At that price the margin balance equals the maintenance margin exactly.
    assert 20_000 + 100 * (price - 2000) == pytest.approx(100 * price * 0.005 - 50)
    # A fully funded long is never liquidated.
    assert liquidation_price(2000.0, 1.0, 2000.0, TIERS) == 0.0


# ------------------------------------------------------------------------------ PnL
def test_pnl_rounding_and_margin_ratio(worlds):
    w = worlds(maker_fee=0.0, taker_fee=0.0)
    a, b = w.trader("a", 1000), w.trader("b", 1000)
    w.open(a, b, +1, 2000.00, 1)
    w.open(a, b, +1, 2000.01, 2)
    # Cost basis: 1 * 200,000 * 100 + 2 * 200,001 * 100 = 60,000,200 units.
    pa = w.venue.position(a, 0)
    assert (pa.size_lots, pa.cost_units) == (3, 60_000_200)
    assert pa.entry_price == pytest.approx(60_000_200 / 30_000)
    assert w.venue.position(b, 0).cost_units == -60_000_200
    # Mark 2,100 (empty book, last trade 2,000.01: median(2,100, 2,100, 2,000.01)).
    w.mark(2100.0, step=1)
    pa = w.venue.position(a, 0)
    assert pa.mark == 2100.0
    # Unrealised: 3 * 2,100 * 10,000 - 60,000,200 = 2,999,800 units.
    assert pa.unrealised == pytest.approx(2_999_800)
    assert w.venue.position(b, 0).unrealised == pytest.approx(-2_999_800)
    # Margin ratio = maintenance / margin balance = 0.4% * 63 USDC / (1,000 USDC + 2.9998).
    assert w.venue.margin_balance(a) == pytest.approx(1_002_999_800)
    assert w.venue.maintenance_margin(a) == pytest.approx(252_000)
    assert w.venue.margin_ratio(a) == pytest.approx(252_000 / 1_002_999_800)
    # a sells 1 lot back at 2,000.00: cost removed ceil(60,000,200 / 3) = 20,000,067, so the
    # realised PnL is rounded down: 20,000,000 - 20,000,067 = -67 (exact: -66.67).
    w.open(a, b, -1, 2000.00, 1)
    pa = w.venue.position(a, 0)
    assert (pa.size_lots, pa.cost_units, pa.realised) == (2, 40_000_133, -67)
    # b buys back: removed ceil(-60,000,200 / 3) = -20,000,066; realised = +66 (not 66.67).
    pb = w.venue.position(b, 0)
    assert (pb.size_lots, pb.cost_units, pb.realised) == (-2, -40_000_134, 66)
    # Close the rest at 2,000.00: a realises -133, b +134; over the positions' lives the
    # realised PnL is the exact cash flow (-200 / +200) and nets to zero.
    w.open(a, b, -1, 2000.00, 2)
    assert w.venue.position(a, 0).realised == -200
    assert w.venue.position(b, 0).realised == 200
    assert w.wallet(a) == 1000 * USDC - 200
    assert w.wallet(b) == 1000 * USDC + 200
    assert w.venue.position(a, 0).cost_units == 0


def test_fees_are_charged_per_fill_rounded_up(worlds):
    w = worlds(maker_fee=0.0002, taker_fee=0.0005)
    a, b = w.trader("a", 1000), w.trader("b", 1000)
    # 3 lots at 2,000.01: notional 3 * 200,001 * 100 = 60,000,300 units.
    # Taker fee ceil(60,000,300 * 0.0005) = ceil(30,000.15) = 30,001;
    # maker fee ceil(60,000,300 * 0.0002) = ceil(12,000.06) = 12,001.
    w.open(a, b, +1, 2000.01, 3)
    assert w.wallet(a) == 1000 * USDC - 30_001
    assert w.wallet(b) == 1000 * USDC - 12_001
    assert w.venue.fee_units == 42_002
    assert w.ledger.balance(w.venue.fee_holder, 0) == 42_002


# ------------------------------------------------------------------------------ margin
def test_deposit_withdraw_and_refusals_change_nothing(worlds):
    w = worlds()
    a = w.trader("a", 500, wallet=1000)
    b = w.trader("b", 10_000)
    before = snapshot_state(w)
    for result, code in (
        (w.venue.deposit(a, 600 * USDC), PerpRefusal.INSUFFICIENT_BALANCE),
        (w.venue.deposit(a, 0), PerpRefusal.BAD_AMOUNT),
        (w.venue.deposit(w.venue.insurance_holder, 1), PerpRefusal.UNKNOWN_ACCOUNT),
        (w.venue.withdraw(a, 501 * USDC), PerpRefusal.INSUFFICIENT_MARGIN),
        (w.venue.withdraw(10_000, 1), PerpRefusal.UNKNOWN_ACCOUNT),
        (w.venue.set_leverage(a, 0, 126), PerpRefusal.BAD_AMOUNT),
        (w.venue.set_leverage(a, 7, 10), PerpRefusal.UNKNOWN_INSTRUMENT),
        (w.venue.add_isolated_margin(a, 0, 1), PerpRefusal.NOT_ISOLATED),
    ):
        assert not result.ok and result.code == code, result
        assert_unchanged(w, before)
    # a opens 1 ETH at 2,000 with leverage 10: initial margin 200 USDC; fee 1 USDC.
    assert w.venue.set_leverage(a, 0, 10).ok
    w.open(a, b, +1, 2000.0, lots(1))
    assert w.wallet(a) == 499 * USDC
    # Mark 1,950: unrealised -50 counts, so a may withdraw 499 - 50 - 1,950 * 0.1 = 254.
    w.mark(1950.0, step=1)
    before = snapshot_state(w)
    result = w.venue.withdraw(a, 254 * USDC + 1)
    assert result.code == PerpRefusal.INSUFFICIENT_MARGIN
    assert_unchanged(w, before)
    assert w.venue.set_margin_mode(a, "isolated").code == PerpRefusal.OPEN_POSITIONS
    assert_unchanged(w, before)
    assert w.venue.withdraw(a, 254 * USDC).ok
    assert w.ledger.balance(a, 0) == 754 * USDC
    # Mark 2,050: unrealised profit is not withdrawable: free = 245 + 0 - 205 = 40.
    w.mark(2050.0, step=2)
    assert w.venue.withdraw(a, 40 * USDC + 1).code == PerpRefusal.INSUFFICIENT_MARGIN
    assert w.venue.withdraw(a, 40 * USDC).ok
    # Without an index there is no mark: withdrawals of an account with positions wait.
    w.mark(None, step=3)
    assert w.venue.withdraw(a, 1).code == PerpRefusal.NO_PRICE


def test_isolated_margin_allocation_and_release(worlds):
    w = worlds()
    m = w.trader("maker", 100_000)
    i = w.trader("iso", 300, mode="isolated", leverage=10)
    assert w.venue.is_isolated(i)
    # Buy 1 ETH at 2,000 (taker): fee 1 USDC; allocation ceil(2,000 * 0.1) + 1 = 201 USDC,
    # then the fee leaves 200 in the position; the wallet keeps 99.
    w.open(i, m, +1, 2000.0, lots(1))
    assert w.venue.position(i, 0).isolated_margin == 200 * USDC
    assert w.wallet(i) == 99 * USDC
    # Sell 0.4 ETH at 2,100: realised +40, fee 0.42 -> pot 239.58; 40 of 100 lots closed,
    # so floor(239.58 * 0.4) = 95.832 goes back to the wallet.
    w.open(i, m, -1, 2100.0, lots(0.4))
    assert w.venue.position(i, 0).isolated_margin == 143_748_000
    assert w.wallet(i) == 194_832_000
    # Close 0.6 ETH at 1,900: realised -60, fee 0.57; what is left (83.178) goes back.
    w.open(i, m, -1, 1900.0, lots(0.6))
    assert w.venue.position(i, 0).isolated_margin == 0
    # 300 - 1 - 0.42 - 0.57 + 40 - 60 = 278.01
    assert w.wallet(i) == 278_010_000
    # Isolated margin can be topped up and taken back down to initial margin.
    w.open(i, m, +1, 2000.0, lots(1))  # pot 200, wallet 278.01 - 201 = 77.01
    assert w.venue.add_isolated_margin(i, 0, 50 * USDC).ok
    assert w.venue.position(i, 0).isolated_margin == 250 * USDC
    # Initial margin at mark 2,000 is 200: at most 50 can come back.
    before = snapshot_state(w)
    assert w.venue.remove_isolated_margin(i, 0, 50 * USDC + 1).code == (
        PerpRefusal.INSUFFICIENT_MARGIN
    )
    assert_unchanged(w, before)
    assert w.venue.remove_isolated_margin(i, 0, 50 * USDC).ok
    assert w.wallet(i) == 77_010_000


# ------------------------------------------------------------------------------ pre-trade
def test_check_orders_initial_margin_fees_open_loss_and_batches(worlds):
    w = worlds()
    a = w.trader("a", 100)
    limit = int(OrderKind.LIMIT)

    def check(side, price, qty, account=a, kind=limit):
        ok, reason = w.venue.check_orders(0, side, kind, ticks(price), qty, account)
        return bool(ok[0]), OrderCheck(int(reason[0]))

    before = snapshot_state(w)
    # 5 ETH at 2,000: initial margin 10,000 / 125 = 80, fee max(0.02%, 0.05%) = 5 -> 85.
    assert check(+1, 2000.0, lots(5)) == (True, OrderCheck.OK)
    # 6 ETH: 96 + 6 = 102 > 100.
    assert check(+1, 2000.0, lots(6)) == (False, OrderCheck.INSUFFICIENT_MARGIN)
    assert check(-1, 2000.0, lots(6)) == (False, OrderCheck.INSUFFICIENT_MARGIN)
    # A buy 50 above the mark carries its open loss: 1 ETH at 2,050 needs 16.4 + 1.025 + 50;
    # at 2,090 it needs 16.72 + 1.045 + 90 = 107.765.
    assert check(+1, 2050.0, lots(1)) == (True, OrderCheck.OK)
    assert check(+1, 2090.0, lots(1)) == (False, OrderCheck.INSUFFICIENT_MARGIN)
    # Orders of a batch accumulate: 3 ETH passes (48 + 3), the next 3 ETH needs 96 for the
    # 6 ETH position but only 100 - 3 - 3 = 94 is left.
    ok, reason = w.venue.check_orders(0, 1, limit, ticks(2000.0), lots(3), np.array([a, a]))
    assert ok.tolist() == [True, False]
    assert reason.tolist() == [OrderCheck.OK, OrderCheck.INSUFFICIENT_MARGIN]
    # Unknown instruments, accounts and malformed orders.
    assert check(+1, 2000.0, 0) == (False, OrderCheck.BAD_ORDER)
    assert check(+1, 2000.0, 1, account=w.venue.liquidator_holder) == (
        False,
        OrderCheck.UNKNOWN_ACCOUNT,
    )
    ok, reason = w.venue.check_orders(5, 1, limit, 1, 1, a)
    assert reason[0] == OrderCheck.UNKNOWN_INSTRUMENT
    ok, reason = w.venue.check_orders(0, 1, int(OrderKind.CANCEL), 0, 0, a)
    assert ok[0]
    assert_unchanged(w, before)  # checks change nothing
    # With leverage 10 the same 1 ETH needs 200.
    assert w.venue.set_leverage(a, 0, 10).ok
    assert check(+1, 2000.0, lots(1)) == (False, OrderCheck.INSUFFICIENT_MARGIN)


def test_check_orders_market_orders_walk_the_book(worlds):
    w = worlds()
    mm = w.trader("mm", 100_000)
    a, b, c = w.trader("a", 40), w.trader("b", 41), w.trader("c", 40)
    w.submit(-1, OrderKind.LIMIT, 2000.0, lots(1), mm)
    w.submit(-1, OrderKind.LIMIT, 2010.0, lots(1), mm)
    market = int(OrderKind.MARKET)
    # 1.5 ETH market buy reaches the 2,010 level: initial margin 3,015 / 125 = 24.12, open
    # loss 1.5 * 10 = 15, fee 3,015 * 0.05% = 1.5075: 40.6275 needed.
    ok, reason = w.venue.check_orders(0, 1, market, 0, lots(1.5), np.array([a, b]))
    assert ok.tolist() == [False, True]
    # Two market buys of 1 ETH in one batch: the second is priced at the level it would
    # reach after the first (2,010): 100 lots at 2,000 need 16 + 1 = 17 (spent 1), then the
    # 2 ETH position needs 4,020 / 125 = 32.16 with 40 - 1 - 10 - 1.005 = 27.995 left.
    # Priced at the best ask it would have passed (40 - 1 - 1 = 38 >= 32).
    ok, _ = w.venue.check_orders(0, 1, market, 0, lots(1), np.array([c, c]))
    assert ok.tolist() == [True, False]


def test_check_orders_isolated_reduce_and_no_price(worlds):
    w = worlds()
    mm = w.trader("mm", 100_000)
    g = w.trader("g", 20, mode="isolated")
    limit = int(OrderKind.LIMIT)
    # Isolated: 1 ETH at 2,000 needs 16 + 1 = 17 of the wallet; a second one in the same
    # batch finds 20 - 17 = 3.
    ok, _ = w.venue.check_orders(0, 1, limit, ticks(2000.0), lots(1), np.array([g, g]))
    assert ok.tolist() == [True, False]
    w.open(g, mm, +1, 2000.0, lots(1))
    # No index, no mark: increasing orders are refused, reducing ones still pass.
    w.mark(None, step=1)
    assert w.venue.mark_price(0) is None
    ok, reason = w.venue.check_orders(
        0, np.array([1, -1, -1]), limit, ticks(2000.0), np.array([1, lots(1), lots(1) + 1]), g
    )
    assert reason.tolist() == [OrderCheck.NO_PRICE, OrderCheck.OK, OrderCheck.NO_PRICE]
    # A position far below maintenance may still reduce.
    w.mark(1000.0, step=2)
    ok, _ = w.venue.check_orders(0, -1, limit, ticks(900.0), lots(0.5), g)
    assert ok[0]


# ------------------------------------------------------------------------------ mark
def test_mark_is_binance_median_of_funding_basis_and_last(worlds):
    w = worlds(mark_smoothing_steps=2)
    mm = w.trader("mm", 100_000)
    a = w.trader("a", 10_000)
    w.open(a, mm, +1, 2004.0, lots(1))  # last trade 2,004
    w.submit(1, OrderKind.LIMIT, 1990.0, lots(5), mm)
    w.submit(-1, OrderKind.LIMIT, 2020.0, lots(5), mm)
    # Step 1: index 2,000, mid 2,005: price 2 = 2,000 + mean(5) = 2,005 (the step-0 update
    # had no mid and is skipped); price 1 = 2,000 (no funding yet); last 2,004 -> 2,004.
    w.mark(2000.0, step=1)
    assert w.venue.mark_price(0) == pytest.approx(2004.0)
    # Step 2: index 2,010, basis -5: price 2 = 2,010 + mean(5, -5) = 2,010 = price 1 -> 2,010.
    w.mark(2010.0, step=2)
    assert w.venue.mark_price(0) == pytest.approx(2010.0)
    # A second update in the same step replaces that step's sample: index 2,000 gives basis
    # 5 and price 2 = 2,000 + mean(5, 5) = 2,005; median(2,000, 2,005, 2,004) = 2,004.
    w.mark(2000.0, step=2)
    assert w.venue.mark_price(0) == pytest.approx(2004.0)


# ------------------------------------------------------------------------------ funding
def quote(w: World, mm: int, bid: float, ask: float) -> None:
    w.engine.cancel_all(mm)
    w.submit(1, OrderKind.LIMIT, bid, lots(10), mm, check=False)
    w.submit(-1, OrderKind.LIMIT, ask, lots(10), mm, check=False)


def test_funding_over_several_intervals_nets_to_zero(worlds):
    w = worlds(maker_fee=0.0, taker_fee=0.0, funding_interval_steps=2, mark_smoothing_steps=4)
    mm = w.trader("mm", 100_000)
    a, b, c = w.trader("a", 10_000), w.trader("b", 10_000), w.trader("c", 10_000)
    w.open(a, b, +1, 2000.0, lots(0.6))
    w.open(a, c, +1, 2000.0, lots(0.4))  # a long 1 ETH, b short 0.6, c short 0.4
    start = {h: w.wallet(h) for h in (a, b, c)}

    def run(step, bid, ask):
        quote(w, mm, bid, ask)
        w.mark(2000.0, step=step)
        w.venue.accrue(step, 60.0)
        w.check()

    # Interval 1: bid 2,010 / ask 2,012, 10 ETH deep (impact notional 10,000 fills at one
    # level): premium = (2,010 - 2,000) / 2,000 = 0.005; rate = 0.005 + clamp(0.0001 - 0.005,
    # +-0.0005) = 0.0045. Mark: median(2,000, 2,000 + 11, last 2,000) = 2,000.
    run(0, 2010.0, 2012.0)
    assert w.venue.funding_frame().empty
    run(1, 2010.0, 2012.0)
    # a pays 1 * 2,000 * 0.0045 = 9; b gets 5.4, c 3.6.
    assert w.wallet(a) - start[a] == -9 * USDC
    assert w.wallet(b) - start[b] == 5_400_000
    assert w.wallet(c) - start[c] == 3_600_000
    # Interval 2: bid 1,990 / ask 1,992: premium = -(2,000 - 1,992) / 2,000 = -0.004; rate =
    # -0.004 + clamp(0.0041) = -0.0035 (shorts pay). Mark at step 3: price 1 = 2,000 * (1 +
    # 0.0045 * 1/2) = 2,004.5, price 2 = 2,000 + mean(11, 11, -9, -9) = 2,001, last 2,000:
    # median 2,001. a receives 2,001 * 0.0035 = 7.0035; b pays 4.2021, c 2.8014.
    run(2, 1990.0, 1992.0)
    run(3, 1990.0, 1992.0)
    assert w.wallet(a) - start[a] == -9 * USDC + 7_003_500
    assert w.wallet(b) - start[b] == 5_400_000 - 4_202_100
    assert w.wallet(c) - start[c] == 3_600_000 - 2_801_400
    # Interval 3: premium -0.004 at step 4, 0.005 at step 5; weights 1 and 2: P = (-0.004 +
    # 2 * 0.005) / 3 = 0.002; rate = 0.002 + clamp(0.0001 - 0.002) = 0.0015. Mark at step 5:
    # price 1 = 2,000 * (1 - 0.0035 / 2) = 1,996.5, price 2 = 2,000 + mean(-9, -9, -9, 11) =
    # 1,996, last 2,000: median 1,996.5. a pays 1,996.5 * 0.0015 = 2.99475.
    run(4, 1990.0, 1992.0)
    run(5, 2010.0, 2012.0)
    assert w.wallet(a) - start[a] == -9 * USDC + 7_003_500 - 2_994_750
    assert w.wallet(b) - start[b] == 5_400_000 - 4_202_100 + 1_796_850
    assert w.wallet(c) - start[c] == 3_600_000 - 2_801_400 + 1_197_900
    frame = w.venue.funding_frame()
    assert frame["step"].tolist() == [1, 3, 5]
    assert frame["rate"].tolist() == pytest.approx([0.0045, -0.0035, 0.0015])
    assert frame["premium"].tolist() == pytest.approx([0.005, -0.004, 0.002])
    assert frame["mark"].tolist() == pytest.approx([2000.0, 2001.0, 1996.5])
    assert frame["paid"].tolist() == [9_000_000, 7_003_500, 2_994_750]
    assert (frame["paid"] == frame["received"]).all()  # nets to zero exactly
    assert sum(w.wallet(h) - start[h] for h in (a, b, c)) == 0
    assert w.venue.metrics()["ETH-PERP_funding_rate"] == pytest.approx(0.0015)


def test_funding_rounding_remainder_goes_to_insurance_and_cap(worlds):
    w = worlds(maker_fee=0.0, taker_fee=0.0, funding_interval_steps=1, mark_smoothing_steps=1)
    mm = w.trader("mm", 100_000)
    a, b, c = w.trader("a", 1_000), w.trader("b", 1_000), w.trader("c", 1_000)
    w.open(a, b, +1, 2000.37, 1)
    w.open(a, c, +1, 2000.37, 2)
    start = {h: w.wallet(h) for h in (a, b, c)}
    fund = w.venue.insurance_fund_units
    # Book 1,990.37 / 2,010.37 around the index: premium 0, rate = interest 0.0001; mark
    # 2,000.37 (mid = index = last). Per lot: 2,000.37 * 10,000 * 0.0001 = 2,000.37 units.
    quote(w, mm, 1990.37, 2010.37)
    w.mark(2000.37, step=1)
    w.venue.accrue(1, 60.0)
    # a (3 lots) pays ceil(6,001.11) = 6,002; b gets floor(2,000.37) = 2,000, c
    # floor(4,000.74) = 4,000; the 2 units left go to the insurance fund.
    assert w.wallet(a) - start[a] == -6002
    assert w.wallet(b) - start[b] == 2000
    assert w.wallet(c) - start[c] == 4000
    assert w.venue.insurance_fund_units == fund + 2
    row = w.venue.funding_frame().iloc[-1]
    assert (row["paid"], row["received"]) == (6002, 6000)
    # The cap: a premium of 10% gives rate 0.1 - 0.0005, capped at funding_cap 0.0075.
    assert w.venue.funding_rate(0.1) == pytest.approx(0.0075)
    assert w.venue.funding_rate(-0.1) == pytest.approx(-0.0075)
    assert w.venue.funding_rate(0.0003) == pytest.approx(0.0001)


def test_premium_index_impact_walk_over_levels(worlds):
    w = worlds(impact_notional=10_000.0)
    mm = w.trader("mm", 100_000)
    # Bids: 2 ETH at 2,010 (4,020) then 5 ETH at 2,005: 10,000 needs 2 + 5,980 / 2,005 ETH,
    # impact bid = 10,000 / (2 + 2.98254...) = 2,006.99...; asks far above the index.
    w.submit(1, OrderKind.LIMIT, 2010.0, lots(2), mm, check=False)
    w.submit(1, OrderKind.LIMIT, 2005.0, lots(5), mm, check=False)
    w.submit(-1, OrderKind.LIMIT, 2030.0, lots(10), mm, check=False)
    impact_bid = 10_000 / (2 + 5_980 / 2005)
    assert w.venue.premium_index(0) == pytest.approx((impact_bid - 2000) / 2000)
    # Too thin for the notional: the side is extended at its deepest price (2,005 here only
    # after cancelling the 2,010 level: 5 ETH = 10,025 >= 10,000 is enough, so exactly 2,005).
    w.engine.cancel_all(mm)
    w.submit(1, OrderKind.LIMIT, 2005.0, lots(1), mm, check=False)
    assert w.venue.premium_index(0) == pytest.approx(5 / 2000)


# ------------------------------------------------------------------------------ liquidation
def long_10x(w: World, deposit=2000.0, **kw):
    """a: long 10 ETH at 2,000 against a well-funded maker (taker fee 10 with default fees)."""
    mm = w.trader("mm", 1_000_000)
    a = w.trader("a", deposit, **kw)
    w.open(a, mm, +1, 2000.0, lots(10))
    return a, mm


def test_liquidation_surplus_goes_to_the_insurance_fund(worlds):
    w = worlds()
    a, mm = long_10x(w)
    assert w.wallet(a) == 1990 * USDC  # taker fee 10
    # Mark 1,805: margin balance 1,990 - 1,950 = 40 < maintenance 18,050 * 0.4% = 72.2.
    w.mark(1805.0, step=1)
    found = w.venue.liquidatable()
    assert found.account.tolist() == [a]
    assert found.margin_balance[0] == pytest.approx(40 * USDC)
    assert found.maintenance[0] == pytest.approx(72.2 * USDC)
    w.submit(1, OrderKind.LIMIT, 1806.0, lots(10), mm, check=False)
    orders, settled = w.liquidate()
    # One IOC sell of 10 ETH, limited to the price whose loss the fund (1,000) can cover:
    # (20,000 - 1,990 - 1,000) / (10 * (1 - 0.0005)) = 1,701.85... -> 170,186 ticks.
    assert orders.kind.tolist() == [OrderKind.IOC]
    assert orders.side.tolist() == [-1] and orders.qty_lots.tolist() == [lots(10)]
    assert orders.price_ticks.tolist() == [170_186]
    assert orders.account.tolist() == [w.venue.liquidator_holder]
    assert settled == 1
    # Filled at 1,806: 18,060 - fee 9.03; margin left 1,990 + 18,060 - 20,000 - 9.03 = 40.97.
    assert w.venue.insurance_fund_units == 1_040_970_000
    assert w.wallet(a) == 0 and w.venue.position(a, 0).size_lots == 0
    row = w.venue.liquidations_frame().iloc[0]
    assert row["protocol"] == "perp" and row["account"] == a
    assert row["debt_asset"] == "ETH-PERP" and row["collateral_asset"] == "USDC"
    assert row["debt_repaid"] == 18_060 * USDC
    assert row["collateral_seized"] == 1990 * USDC
    assert row["oracle_price"] == 1805.0
    assert row["protocol_fee"] == 9_030_000
    assert row["liquidator_received"] == 40_970_000
    assert row["bad_debt"] == 0
    assert row["bonus_value"] == pytest.approx(40.97)
    assert w.venue.adl_frame().empty
    assert not w.venue.liquidatable().account.size


def test_liquidation_shortfall_draws_the_insurance_fund(worlds):
    w = worlds()
    a, mm = long_10x(w)
    w.mark(1805.0, step=1)
    w.submit(1, OrderKind.LIMIT, 1795.0, lots(10), mm, check=False)  # below bankruptcy 1,801
    w.liquidate()
    # 1,990 + 17,950 - 20,000 - fee 8.975 = -68.975: the fund pays it.
    assert w.venue.insurance_fund_units == 931_025_000
    row = w.venue.liquidations_frame().iloc[0]
    assert row["bad_debt"] == 68_975_000
    assert row["liquidator_received"] == 0
    assert row["bonus_value"] == pytest.approx(-68.975)
    assert w.venue.uncovered_bad_debt_units == 0
    assert w.venue.metrics()["insurance_fund"] == pytest.approx(931.025)


def test_auto_deleveraging_ranks_profit_times_leverage(worlds):
    w = worlds(fund=0.0, maker_fee=0.0, taker_fee=0.0)
    a = w.trader("a", 2000)
    b, c = w.trader("b", 10_000), w.trader("c", 1_500)
    e, f = w.trader("e", 1_200), w.trader("f", 100_000)
    mm = w.trader("mm", 100_000)
    w.open(a, b, +1, 2000.0, lots(4))
    w.open(a, c, +1, 2000.0, lots(6))
    w.open(f, e, +1, 1950.0, lots(5))
    w.submit(1, OrderKind.LIMIT, 1700.0, lots(10), mm, check=False)  # far below bankruptcy
    # Mark 1,790 (last trade 1,950): a's margin balance 2,000 - 2,100 = -100.
    w.mark(1790.0, step=1)
    assert w.venue.liquidatable().account.tolist() == [a]
    orders, _ = w.liquidate()
    # Empty fund: the IOC is limited to the bankruptcy price 1,800 and the book (1,700)
    # does not take it; the 10 ETH are deleveraged at 1,800. Scores at mark 1,790:
    #   b: PnL% 840 / 8,000 = 0.105, leverage 7,160 / 10,840      -> 0.069354...
    #   c: PnL% 1,260 / 12,000 = 0.105, leverage 10,740 / 2,760   -> 0.408587...
    #   e: PnL% 800 / 9,750 = 0.082051, leverage 8,950 / 2,000    -> 0.367179...
    # so c closes 6 ETH, then e 4 of its 5; b keeps its position.
    assert orders.price_ticks.tolist() == [180_000]
    adl = w.venue.adl_frame()
    assert adl["counterparty"].tolist() == [c, e]
    assert adl["account"].tolist() == [a, a]
    assert adl["qty_lots"].tolist() == [lots(6), lots(4)]
    assert adl["qty"].tolist() == pytest.approx([6.0, 4.0])
    assert adl["price"].tolist() == [1800.0, 1800.0]
    assert adl["rank_score"].tolist() == pytest.approx(
        [0.105 * 10_740 / 2_760, 800 / 9_750 * 8_950 / 2_000]
    )
    # c realises 6 * 200 = 1,200; e closes 4 of 5 lots of cost -9,750: removed 7,800,
    # paid 7,200 -> +600.
    assert w.wallet(c) == 2_700 * USDC
    assert w.wallet(e) == 1_800 * USDC
    assert w.venue.position(e, 0).size_lots == -lots(1)
    assert w.venue.position(b, 0).size_lots == -lots(4)
    assert w.venue.position(c, 0).size_lots == 0
    # a's margin was exactly used up at the bankruptcy price: nothing for or from the fund.
    row = w.venue.liquidations_frame().iloc[0]
    assert (row["bad_debt"], row["liquidator_received"]) == (0, 0)
    assert row["debt_repaid"] == 18_000 * USDC
    assert w.venue.insurance_fund_units == 0


def test_opposite_liquidations_deleverage_against_each_other(worlds):
    w = worlds(fund=0.0, maker_fee=0.0, taker_fee=0.0)
    a, b = w.trader("a", 2000), w.trader("b", 400)
    x = w.trader("x", 100_000)
    w.open(a, x, +1, 2000.0, lots(10))  # a long 10 at 2,000
    # b short 10 at 1,500 (far below the mark: the pre-trade check would refuse it, as if a
    # resting order had filled); x is flat again.
    w.open(b, x, -1, 1500.0, lots(10), check=False)
    assert w.venue.position(x, 0).size_lots == 0
    w.mark(1790.0, step=1)  # a: 2,000 - 2,100 < 0; b: 400 - 2,900 < 0
    assert sorted(w.venue.liquidatable().account.tolist()) == [a, b]
    w.liquidate()
    # No account holds a short, so a's 10 ETH close against b's taken-over short at a's
    # bankruptcy price 1,800: a's margin ends at 0; b's at 400 + 15,000 - 18,000 = -2,600,
    # which the empty fund cannot pay: uncovered bad debt.
    adl = w.venue.adl_frame()
    assert adl["counterparty"].tolist() == [w.venue.liquidator_holder]
    assert adl["price"].tolist() == [1800.0]
    frame = w.venue.liquidations_frame()
    assert frame["account"].tolist() == [a, b]
    assert frame["bad_debt"].tolist() == [0, 2600 * USDC]
    assert w.venue.uncovered_bad_debt_units == 2600 * USDC
    assert w.venue.metrics()["uncovered_bad_debt"] == pytest.approx(2600.0)
    w.check()
    # Fund income repays uncovered bad debt first. c: 1 ETH long at 1,790 with 180 margin,
    # liquidated at mark 1,616 (180 - 174 = 6 < 6.464) into a bid at 1,618: surplus
    # 180 + 1,618 - 1,790 = 8 goes to the fund and straight on to the uncovered debt.
    c = w.trader("c", 180)
    w.open(c, x, +1, 1790.0, lots(1))
    w.mark(1616.0, step=2)
    w.submit(1, OrderKind.LIMIT, 1618.0, lots(1), x, check=False)
    orders, settled = w.liquidate()
    assert orders.price_ticks.tolist() == [ticks(1610.0)]  # bankruptcy: nothing to spend
    assert settled == 1
    assert w.venue.liquidations_frame()["liquidator_received"].tolist()[-1] == 8 * USDC
    assert w.venue.uncovered_bad_debt_units == 2592 * USDC
    assert w.venue.insurance_fund_units == 0


def test_without_adl_the_liquidation_engine_keeps_what_the_book_cannot_take(worlds):
    w = worlds(adl=False, funding_interval_steps=1)
    a, mm = long_10x(w)
    w.mark(1805.0, step=1)
    orders, settled = w.liquidate()
    assert orders.kind.tolist() == [OrderKind.MARKET]
    assert settled == 0
    assert w.venue.positions_sum().tolist() == [0]  # the engine holds a's 10 ETH
    assert w.venue.metrics()["ETH-PERP_open_interest_long"] == pytest.approx(10.0)
    w.check()
    # Next round: a bid appears and the held position is offered again.
    w.submit(1, OrderKind.LIMIT, 1790.0, lots(10), mm, check=False)
    orders, settled = w.liquidate()
    assert orders.qty_lots.tolist() == [lots(10)] and settled == 1
    # 1,990 + 17,900 - 20,000 - fee 8.95 = -118.95 paid by the fund.
    assert w.venue.insurance_fund_units == 881_050_000


def test_cross_account_liquidation_takes_every_position(worlds):
    w = worlds(contracts=2)
    mm = w.trader("mm", 1_000_000)
    a = w.trader("a", 2000)
    w.open(a, mm, +1, 2000.0, lots(5))  # fee 5
    w.open(a, mm, +1, 2000.0, 50, ins=1)  # 5 ETH in 0.1 ETH lots, fee 5
    assert w.wallet(a) == 1990 * USDC
    w.mark(1805.0, step=1)
    found = w.venue.liquidatable()
    assert found.account.tolist() == [a, a] and found.instrument.tolist() == [0, 1]
    w.submit(1, OrderKind.LIMIT, 1806.0, lots(5), mm, check=False)
    w.submit(1, OrderKind.LIMIT, 1806.0, 50, mm, check=False, ins=1)
    orders, settled = w.liquidate()
    # Equal notionals: the 1,990 wallet splits 995 / 995; each closes at 1,806 with fee
    # 4.515: 995 + 9,030 - 10,000 - 4.515 = 20.485 each to the fund.
    assert settled == 2 and orders.instrument.tolist() == [0, 1]
    frame = w.venue.liquidations_frame()
    assert frame["collateral_seized"].tolist() == [995 * USDC, 995 * USDC]
    assert frame["liquidator_received"].tolist() == [20_485_000, 20_485_000]
    assert w.venue.insurance_fund_units == 1_040_970_000


@pytest.mark.parametrize("mode", ["cross", "isolated"])
@pytest.mark.parametrize("direction", [+1, -1])
def test_scripted_walk_liquidates_exactly_at_the_liquidation_price(worlds, mode, direction):
    w = worlds()
    mm = w.trader("mm", 1_000_000)
    if mode == "isolated":
        a = w.trader("a", 2100, mode="isolated", leverage=10)
    else:
        a = w.trader("a", 2010)
    w.open(a, mm, direction, 2000.0, lots(10))  # 10x: margin 2,000 after the 10 fee
    margin = w.venue.position(a, 0).isolated_margin if mode == "isolated" else w.wallet(a)
    assert margin == 2000 * USDC
    liq = liquidation_price(2000.0, 10.0 * direction, 2000.0, TIERS)
    # Walk the index (= the mark: empty book, last trade 2,000) by 0.25 per step.
    taken_at = None
    for step in range(1, 1000):
        index = 2000.0 - direction * 0.25 * step
        w.mark(index, step=step)
        assert w.venue.mark_price(0) == index
        below = index < liq if direction > 0 else index > liq
        flagged = a in w.venue.liquidatable().account.tolist()
        assert flagged == below, (step, index, liq)
        orders = w.venue.begin_liquidations(step)
        if flagged:
            assert orders.liquidated_accounts.tolist() == [a]
            taken_at = step
            w.venue.finish_liquidations(step)
            break
        assert len(orders) == 0
    # First step past 1,807.23 (long): 0.25 * step > 192.77 -> step 772 (mark 1,807.00);
    # short: 2,000 + 0.25 * step > 2,191.24 -> step 765 (mark 2,191.25).
    assert taken_at == (772 if direction > 0 else 765)
    assert w.venue.position(a, 0).size_lots == 0
    w.check()


# ------------------------------------------------------------------------------ outputs
def test_metrics_by_hand(worlds):
    w = worlds(maker_fee=0.0, taker_fee=0.0)
    mm = w.trader("mm", 100_000)
    a, b = w.trader("a", 1_000), w.trader("b", 1_000, mode="isolated")
    w.open(a, mm, +1, 2000.0, lots(2))  # a long 2
    w.open(b, mm, -1, 2000.0, lots(1))  # b short 1 (isolated 2,000 / 125 = 16 margin)
    w.mark(2100.0, step=1)
    m = w.venue.metrics()
    assert m["ETH-PERP_open_interest_long"] == pytest.approx(2.0)
    assert m["ETH-PERP_open_interest_short"] == pytest.approx(2.0)  # b 1 + mm 1
    assert m["ETH-PERP_long_short_account_ratio"] == pytest.approx(0.5)
    assert m["ETH-PERP_mark"] == 2100.0
    # Positions: a 4,200, b 2,100, mm 2,100 (net short 1 ETH), all in tier 1 (0.4%).
    assert m["wamm"] == pytest.approx(0.004)
    assert m["open_notional"] == pytest.approx(8_400.0)
    # Margin debt: a 4,200 - (1,000 + 200) = 3,000; b isolated 2,100 - (16 - 100) = 2,184;
    # mm 2,100 - (100,000 - 100) < 0 -> 0.
    assert m["margin_debt"] == pytest.approx(5_184.0)
    # b is below maintenance (margin balance -84 < 8.4).
    assert m["accounts_liquidatable"] == 1.0
    assert m["insurance_fund"] == pytest.approx(1000.0)


def test_liquidations_frame_has_the_lending_pool_columns(worlds):
    w = worlds()
    a, mm = long_10x(w)
    w.mark(1805.0, step=1)
    w.submit(1, OrderKind.LIMIT, 1806.0, lots(10), mm, check=False)
    w.liquidate()
    cfg = LendingConfig(kind="lending", reserves={"USDC": ReserveConfig(price=1.0)})
    pool = LendingPool.standalone(cfg, {"USDC": 6}, FixedPriceFeed(), name="aave")
    lending = pool.liquidations_frame()
    perp = w.venue.liquidations_frame()
    assert list(perp.columns) == list(lending.columns)
    assert perp.dtypes.to_dict() == lending.dtypes.to_dict()
    both = pd.concat([lending, perp], ignore_index=True)
    assert both["protocol"].tolist() == ["perp"]


def test_snapshot_restore_round_trip(worlds):
    w = worlds(funding_interval_steps=1)
    a, mm = long_10x(w)
    before = snapshot_state(w)
    ledger_snap = w.ledger.snapshot()
    venue_snap = w.venue.snapshot()
    w.trader("late", 500)
    w.mark(1805.0, step=1)
    w.venue.accrue(1, 60.0)
    w.submit(1, OrderKind.LIMIT, 1806.0, lots(10), mm, check=False)
    w.liquidate()
    assert len(w.venue.liquidations_frame()) == 1
    w.venue.restore(venue_snap)
    w.ledger.restore(ledger_snap)
    w.engine.cancel_all(mm)
    assert len(w.venue.liquidations_frame()) == 0
    w.venue.check_invariants()
    assert w.venue.position(a, 0).size_lots == lots(10)
    assert_unchanged(w, before)


def test_constructor_rejects_bad_books():
    ledger = Ledger([AssetSpec("USDC", 6), AssetSpec("DAI", 6)])
    fees = ledger.add_holder("fees")
    cfg = PerpConfig(kind="perp", index_oracle="eth")
    spot = BookSpec("X", "spot", 1, 0, 1, 1, 0.01, 0.01, 0.0, 0.0, fees)
    dai = BookSpec("Y", "perp", -1, 1, 1, 1, 0.01, 0.01, 0.0, 0.0, fees)
    for spec in (spot, dai):
        with pytest.raises(ValueError):
            PerpVenue(ledger, "p", cfg, [PerpContract(0, spec)], FixedPriceFeed(), None)
