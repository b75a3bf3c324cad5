"""Matching engine: exact fills, fees, balances, rejects, self-trade prevention, queries.

Every expected value below is computed by hand. The market used throughout: one lot is
10**6 base units (0.001 WETH at 9 decimals) and a lot at ``p`` ticks costs ``10 * p`` quote
units (USDC at 6 decimals, tick 0.01 USDC per WETH).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from marginsim.ledger import AssetSpec, Ledger
from marginsim.market.engine import (
    MAX_PRICE_TICKS,
    MAX_QTY_LOTS,
    BookSpec,
    Fill,
    MatchingEngine,
    OrderKind,
    OrderStatus,
    SelfTradePolicy,
    Side,
)

USDC, WETH, WBTC = 0, 1, 2
LOT = 1_000_000  # base units per lot
UNIT = 10  # quote units per tick-lot
BUY, SELL = Side.BUY, Side.SELL


@dataclasses.dataclass
class Market:
    ledger: Ledger
    engine: MatchingEngine
    escrow: int
    fees: int
    alice: int
    bob: int
    carol: int

    def bal(self, holder: int, asset: int) -> int:
        return self.ledger.balance(holder, asset)

    def state(self) -> tuple:
        """Everything a rejected order must leave unchanged."""
        e = self.engine
        return (
            self.ledger.balances.copy().tolist(),
            [e.book_snapshot(k) for k in range(len(e.specs))],
            e.n_trades,
            e.n_live_orders,
            e.trades_frame().to_dict("list"),
        )


def spot_spec(fees: int, maker: float = 0.0, taker: float = 0.0, sid: str = "WETH-USDC"):
    return BookSpec(sid, "spot", WETH, USDC, LOT, UNIT, 0.01, 0.001, maker, taker, fees)


def make_market(
    maker: float = 0.0,
    taker: float = 0.0,
    stp: SelfTradePolicy = SelfTradePolicy.CANCEL_RESTING,
    quote: int = 10**9,
    base: int = 1000 * LOT,
    perp: bool = False,
    **engine_kw: int,
) -> Market:
    ledger = Ledger([AssetSpec("USDC", 6), AssetSpec("WETH", 9), AssetSpec("WBTC", 8)])
    escrow = ledger.add_holder("engine:escrow")
    fees = ledger.add_holder("fees")
    alice, bob, carol = (ledger.add_holder(n) for n in ("alice", "bob", "carol"))
    for h in (alice, bob, carol):
        ledger.mint(h, USDC, quote, "test endowment")
        ledger.mint(h, WETH, base, "test endowment")
    specs = [spot_spec(fees, maker, taker)]
    if perp:
        specs.append(BookSpec("BTC-PERP", "perp", -1, USDC, 1, 1, 1.0, 0.001, 0.01, 0.02, fees))
    engine = MatchingEngine(ledger, specs, escrow, self_trade_policy=stp, **engine_kw)
    return Market(ledger, engine, escrow, fees, alice, bob, carol)


def build_book(m: Market, orders: list[tuple[int, int, int, int]], ins: str = "WETH-USDC"):
    """Rest ``(account, side, price_ticks, qty_lots)`` orders; return their ids."""
    ids = []
    for acct, side, price, qty in orders:
        r = m.engine.submit_limit(ins, side, price, qty, acct)
        assert r.status == OrderStatus.OK and r.resting_lots == qty, r
        ids.append(r.order_id)
    return ids


def levels(m: Market, ins: str = "WETH-USDC") -> tuple[list, list]:
    bids, asks = m.engine.l2(ins, 100)
    return bids.tolist(), asks.tolist()


def check(m: Market) -> None:
    m.ledger.check_conservation()
    m.engine.check_invariants()
    assert m.bal(m.escrow, USDC) == m.engine.reserved()[USDC]
    assert m.bal(m.escrow, WETH) == m.engine.reserved()[WETH]


# ====================================================================== resting and queries
def test_limit_orders_rest_and_build_levels_best_first():
    m = make_market()
    build_book(
        m,
        [
            (m.bob, SELL, 1010, 3),
            (m.bob, SELL, 1100, 4),
            (m.carol, SELL, 1010, 2),
            (m.alice, BUY, 990, 5),
            (m.alice, BUY, 980, 5),
            (m.carol, BUY, 900, 10),
        ],
    )
    assert levels(m) == ([[990, 5], [980, 5], [900, 10]], [[1010, 5], [1100, 4]])
    e = m.engine
    assert (e.best_bid("WETH-USDC"), e.best_ask(0)) == (990, 1010)
    assert e.mid(0) == 1000.0 and e.spread(0) == 20
    assert e.mid_price("WETH-USDC") == pytest.approx(10.0)
    assert e.last_price("WETH-USDC") is None
    snap = e.book_snapshot(0)
    assert snap.asks[0] == (1010, ((1, m.bob, 3), (3, m.carol, 2)))
    assert snap.bids[2] == (900, ((6, m.carol, 10),))
    check(m)


def test_empty_book_queries_are_none():
    m = make_market()
    e = m.engine
    assert e.best_bid(0) is None and e.best_ask(0) is None
    assert e.mid(0) is None and e.spread(0) is None and e.mid_price("WETH-USDC") is None
    assert e.depth(0, 0.01) == (0, 0)
    assert e.market_order_cost(0, BUY, 5) == (0, 0, None)
    bids, asks = e.l2(0, 5)
    assert bids.shape == (0, 2) and asks.shape == (0, 2)


def test_depth_l2_and_market_order_cost_walk_without_changing_the_book():
    m = make_market(taker=0.002)
    build_book(
        m,
        [
            (m.bob, SELL, 1010, 3),
            (m.bob, SELL, 1100, 4),
            (m.alice, BUY, 990, 5),
            (m.alice, BUY, 980, 5),
            (m.alice, BUY, 900, 10),
        ],
    )
    e = m.engine
    assert e.depth(0, 0.01) == (5, 3)  # bids >= 990, asks <= 1010
    assert e.depth(0, 0.10) == (20, 7)  # bids >= 900, asks <= 1100
    bids, asks = e.l2(0, 2)
    assert bids.tolist() == [[990, 5], [980, 5]] and asks.tolist() == [[1010, 3], [1100, 4]]
    before = m.state()
    # Buy 5: 3 @ 1010 + 2 @ 1100 = 5230 tick-lots = 52_300 units; fee 104.6 -> 105.
    filled, cost, avg = e.market_order_cost("WETH-USDC", BUY, 5)
    assert (filled, cost) == (5, 52_405) and avg == pytest.approx(10.46)
    # Sell 12: 5 @ 990 + 5 @ 980 + 2 @ 900 = 11_650 tick-lots = 116_500; fee 233 off.
    assert e.market_order_cost(0, SELL, 12)[:2] == (12, 116_500 - 233)
    # More than the book: everything that is there.
    assert e.market_order_cost(0, BUY, 100)[0] == 7
    assert m.state() == before


def test_price_to_ticks_converts_and_rejects_off_grid_prices():
    m = make_market()
    assert m.engine.price_to_ticks("WETH-USDC", 2000.01) == 200_001
    with pytest.raises(ValueError, match="tick"):
        m.engine.price_to_ticks("WETH-USDC", 2000.005)
    with pytest.raises(ValueError, match="unknown instrument 'NOPE'"):
        m.engine.price_to_ticks("NOPE", 1.0)


# ====================================================================== matching
def test_market_buy_walks_several_levels_in_price_time_order():
    m = make_market()
    ids = build_book(
        m,
        [
            (m.bob, SELL, 1000, 2),
            (m.carol, SELL, 1000, 3),
            (m.bob, SELL, 1001, 4),
            (m.carol, SELL, 1003, 5),
        ],
    )
    m.engine.step = 7
    r = m.engine.submit_market("WETH-USDC", BUY, 8, m.alice)
    assert (r.status, r.order_id, r.filled_lots, r.resting_lots) == (OrderStatus.OK, 5, 8, 0)
    assert r.fills == (
        Fill(7, "WETH-USDC", 1000, 2, m.alice, m.bob, 1, ids[0], 5),
        Fill(7, "WETH-USDC", 1000, 3, m.alice, m.carol, 1, ids[1], 5),
        Fill(7, "WETH-USDC", 1001, 3, m.alice, m.bob, 1, ids[2], 5),
    )
    assert levels(m) == ([], [[1001, 1], [1003, 5]])
    assert m.engine.last_price("WETH-USDC") == pytest.approx(10.01)
    # Quote: alice paid 10 * (2000 + 3000 + 3003) = 80_030; base 8 lots.
    assert m.bal(m.alice, USDC) == 10**9 - 80_030
    assert m.bal(m.alice, WETH) == 1008 * LOT
    assert m.bal(m.bob, USDC) == 10**9 + 20_000 + 30_030
    assert m.bal(m.carol, USDC) == 10**9 + 30_000
    # bob's rest: 1 lot of order 3 in escrow; carol's 5 lots of order 4.
    assert m.bal(m.escrow, WETH) == 6 * LOT
    check(m)


def test_market_sell_hits_bids_best_first():
    m = make_market()
    build_book(m, [(m.bob, BUY, 990, 2), (m.carol, BUY, 995, 1), (m.bob, BUY, 980, 5)])
    r = m.engine.submit_market(0, SELL, 4, m.alice)
    assert [(f.price_ticks, f.qty_lots, f.buyer, f.aggressor_side) for f in r.fills] == [
        (995, 1, m.carol, -1),
        (990, 2, m.bob, -1),
        (980, 1, m.bob, -1),
    ]
    assert levels(m) == ([[980, 4]], [])
    assert m.bal(m.alice, USDC) == 10**9 + 10 * (995 + 1980 + 980)
    check(m)


def test_crossing_limit_trades_at_resting_prices_and_rests_the_remainder():
    m = make_market()
    build_book(m, [(m.bob, SELL, 1000, 2), (m.bob, SELL, 1002, 2), (m.bob, SELL, 1005, 1)])
    r = m.engine.submit_limit(0, BUY, 1003, 6, m.alice)
    assert [(f.price_ticks, f.qty_lots) for f in r.fills] == [(1000, 2), (1002, 2)]
    assert (r.filled_lots, r.resting_lots) == (4, 2)
    assert levels(m) == ([[1003, 2]], [[1005, 1]])
    # Paid 10 * (2000 + 2004) for the fills and escrowed 10 * 1003 * 2 for the rest.
    assert m.bal(m.alice, USDC) == 10**9 - 40_040 - 20_060
    assert m.engine.order(r.order_id).reserved_units == 20_060
    check(m)


def test_ioc_takes_up_to_its_limit_and_never_rests():
    m = make_market()
    build_book(m, [(m.bob, SELL, 1000, 2), (m.bob, SELL, 1004, 2)])
    r = m.engine.submit_ioc(0, BUY, 1002, 5, m.alice)
    assert (r.status, r.filled_lots, r.resting_lots) == (OrderStatus.OK, 2, 0)
    assert levels(m) == ([], [[1004, 2]])
    r = m.engine.submit_ioc(0, BUY, 1003, 1, m.alice)  # nothing at or below 1003
    assert (r.status, r.filled_lots, r.resting_lots, r.fills) == (OrderStatus.OK, 0, 0, ())
    check(m)


def test_post_only_rests_or_is_rejected_when_it_would_cross():
    m = make_market()
    build_book(m, [(m.bob, SELL, 1000, 2)])
    r = m.engine.submit_post_only(0, BUY, 999, 3, m.alice)
    assert (r.status, r.resting_lots) == (OrderStatus.OK, 3)
    before = m.state()
    r = m.engine.submit_post_only(0, BUY, 1000, 3, m.alice)
    assert (r.status, r.order_id) == (OrderStatus.WOULD_CROSS, 0)
    assert m.state() == before
    assert m.engine.order(2).post_only


def test_time_priority_within_a_level_is_arrival_order():
    m = make_market()
    ids = build_book(m, [(m.carol, BUY, 990, 1), (m.bob, BUY, 990, 1), (m.carol, BUY, 990, 1)])
    r = m.engine.submit_market(0, SELL, 3, m.alice)
    assert [f.maker_order_id for f in r.fills] == ids


def test_far_apart_prices_up_to_the_maximum_work():
    m = make_market(quote=10**15)
    ids = build_book(m, [(m.bob, SELL, 1, 1), (m.bob, SELL, MAX_PRICE_TICKS, 1)])
    assert levels(m) == ([], [[1, 1], [MAX_PRICE_TICKS, 1]])
    r = m.engine.submit_limit(0, BUY, MAX_PRICE_TICKS, 2, m.alice)
    assert [(f.price_ticks, f.maker_order_id) for f in r.fills] == [
        (1, ids[0]),
        (MAX_PRICE_TICKS, ids[1]),
    ]
    assert m.bal(m.alice, USDC) == 10**15 - 10 * (1 + MAX_PRICE_TICKS)
    check(m)


# ====================================================================== cancel and modify
def test_cancel_removes_the_order_and_returns_its_escrow():
    m = make_market(maker=0.001)
    ids = build_book(m, [(m.alice, BUY, 990, 5), (m.alice, SELL, 1010, 2)])
    # Bid reserves 49_500 notional + ceil(49.5) = 50 fee; ask reserves 2 lots of base.
    assert m.bal(m.escrow, USDC) == 49_550 and m.bal(m.escrow, WETH) == 2 * LOT
    r = m.engine.cancel(0, ids[0], m.alice)
    assert (r.status, r.order_id, r.resting_lots) == (OrderStatus.OK, ids[0], 0)
    assert m.bal(m.alice, USDC) == 10**9 and m.bal(m.escrow, USDC) == 0
    assert m.engine.order(ids[0]) is None and levels(m) == ([], [[1010, 2]])
    check(m)


@pytest.mark.parametrize(
    ("who", "ref", "instrument", "status"),
    [
        ("bob", 1, "WETH-USDC", OrderStatus.NOT_OWNER),
        ("alice", 99, "WETH-USDC", OrderStatus.UNKNOWN_ORDER),
        ("alice", 0, "WETH-USDC", OrderStatus.UNKNOWN_ORDER),
        ("alice", 1, "BTC-PERP", OrderStatus.UNKNOWN_ORDER),
    ],
)
def test_bad_cancels_are_rejected_and_change_nothing(who, ref, instrument, status):
    m = make_market(perp=True)
    build_book(m, [(m.alice, BUY, 990, 5)])
    before = m.state()
    r = m.engine.cancel(instrument, ref, getattr(m, who))
    assert (r.status, r.order_id) == (status, 0)
    assert m.state() == before


def test_cancelling_twice_reports_unknown_order():
    m = make_market()
    (oid,) = build_book(m, [(m.alice, BUY, 990, 5)])
    assert m.engine.cancel(0, oid, m.alice).status == OrderStatus.OK
    assert m.engine.cancel(0, oid, m.alice).status == OrderStatus.UNKNOWN_ORDER


def test_modify_reducing_quantity_keeps_time_priority_and_releases_escrow():
    m = make_market()
    ids = build_book(m, [(m.bob, BUY, 990, 5), (m.carol, BUY, 990, 5)])
    r = m.engine.modify(0, ids[0], m.bob, 990, 3)
    assert (r.status, r.order_id, r.resting_lots) == (OrderStatus.OK, ids[0], 3)
    assert m.bal(m.bob, USDC) == 10**9 - 29_700  # 20 * 990 lots-ticks released
    r = m.engine.submit_market(0, SELL, 4, m.alice)
    assert [(f.maker_order_id, f.qty_lots) for f in r.fills] == [(ids[0], 3), (ids[1], 1)]
    check(m)


def test_modify_to_the_same_price_and_quantity_keeps_time_priority():
    m = make_market()
    ids = build_book(m, [(m.bob, BUY, 990, 5), (m.carol, BUY, 990, 5)])
    r = m.engine.modify(0, ids[0], m.bob, 990, 5)
    assert (r.status, r.order_id, r.filled_lots, r.resting_lots) == (OrderStatus.OK, ids[0], 0, 5)
    assert m.engine.book_snapshot(0).bids == ((990, ((ids[0], m.bob, 5), (ids[1], m.carol, 5))),)


def test_modify_raising_quantity_loses_time_priority():
    m = make_market()
    ids = build_book(m, [(m.bob, BUY, 990, 5), (m.carol, BUY, 990, 5)])
    r = m.engine.modify(0, ids[0], m.bob, 990, 6)
    assert (r.status, r.resting_lots) == (OrderStatus.OK, 6)
    assert m.engine.book_snapshot(0).bids == ((990, ((ids[1], m.carol, 5), (ids[0], m.bob, 6))),)
    r = m.engine.submit_market(0, SELL, 7, m.alice)
    assert [(f.maker_order_id, f.qty_lots) for f in r.fills] == [(ids[1], 5), (ids[0], 2)]
    check(m)


def test_modify_changing_price_re_enters_at_the_back_of_the_new_level():
    m = make_market()
    ids = build_book(m, [(m.bob, BUY, 990, 5), (m.carol, BUY, 991, 5)])
    r = m.engine.modify(0, ids[0], m.bob, 991, 5)
    assert r.status == OrderStatus.OK
    assert m.engine.book_snapshot(0).bids == ((991, ((ids[1], m.carol, 5), (ids[0], m.bob, 5))),)
    assert m.bal(m.bob, USDC) == 10**9 - 49_550
    check(m)


def test_modify_to_a_crossing_price_trades_with_the_same_order_id():
    m = make_market()
    (ask,) = build_book(m, [(m.carol, SELL, 1000, 2)])
    (bid,) = build_book(m, [(m.bob, BUY, 990, 5)])
    r = m.engine.modify(0, bid, m.bob, 1000, 5)
    assert (r.filled_lots, r.resting_lots) == (2, 3)
    assert r.fills == (Fill(0, "WETH-USDC", 1000, 2, m.bob, m.carol, 1, ask, bid),)
    assert levels(m) == ([[1000, 3]], [])
    check(m)


def test_modify_of_a_post_only_order_that_would_cross_is_rejected():
    m = make_market()
    build_book(m, [(m.carol, SELL, 1000, 2)])
    r = m.engine.submit_post_only(0, BUY, 990, 5, m.bob)
    before = m.state()
    r = m.engine.modify(0, r.order_id, m.bob, 1000, 5)
    assert r.status == OrderStatus.WOULD_CROSS and m.state() == before


@pytest.mark.parametrize(
    ("who", "price", "qty", "status"),
    [
        ("bob", 990, 3, OrderStatus.NOT_OWNER),
        ("alice", 990, 0, OrderStatus.NON_POSITIVE_QTY),
        ("alice", 0, 3, OrderStatus.NON_POSITIVE_PRICE),
        ("alice", 990.5, 3, OrderStatus.OFF_TICK),
        ("alice", 990, 10**8, OrderStatus.INSUFFICIENT_FUNDS),
    ],
)
def test_bad_modifies_are_rejected_and_change_nothing(who, price, qty, status):
    m = make_market(quote=10**7)
    (oid,) = build_book(m, [(m.alice, BUY, 990, 5)])
    before = m.state()
    r = m.engine.modify(0, oid, getattr(m, who), price, qty)
    assert (r.status, r.order_id) == (status, 0)
    assert m.state() == before


def test_modify_is_funded_from_the_wallet_plus_the_order_s_own_reservation():
    m = make_market(quote=50_000)
    (oid,) = build_book(m, [(m.alice, BUY, 1000, 4)])  # 40_000 escrowed, 10_000 left
    r = m.engine.modify(0, oid, m.alice, 1000, 5)  # needs 50_000 = 10_000 + 40_000
    assert (r.status, r.resting_lots) == (OrderStatus.OK, 5)
    assert m.bal(m.alice, USDC) == 0
    assert m.engine.modify(0, oid, m.alice, 1001, 5).status == OrderStatus.INSUFFICIENT_FUNDS
    check(m)


# ====================================================================== fees
def test_fees_are_charged_on_quote_and_rounded_up_per_order():
    m = make_market(maker=0.001, taker=0.002)
    ids = build_book(m, [(m.bob, SELL, 1000, 5), (m.bob, SELL, 1001, 3)])
    r = m.engine.submit_market(0, BUY, 7, m.alice)
    assert [(f.qty_lots, f.maker_order_id) for f in r.fills] == [(5, ids[0]), (2, ids[1])]
    # Fill 1: notional 50_000; taker fee 100; maker fee 50.
    # Fill 2: notional 20_020; taker cumulative 70_020 * 0.002 = 140.04 -> 141, so 41 more;
    #         maker (order 2) 20.02 -> 21.
    assert m.bal(m.alice, USDC) == 10**9 - 70_020 - 141
    assert m.bal(m.bob, USDC) == 10**9 + 70_020 - 50 - 21
    assert m.bal(m.fees, USDC) == 141 + 50 + 21
    assert m.bal(m.alice, WETH) == 1007 * LOT
    check(m)


def test_maker_buy_pays_fee_from_escrow_rounded_up_on_the_order_total():
    m = make_market(maker=0.001)
    # 3 lots at 7 ticks: notional 210, maker fee 0.21 -> reserve 210 + 1.
    (oid,) = build_book(m, [(m.bob, BUY, 7, 3)])
    assert m.bal(m.escrow, USDC) == 211
    for k in range(3):
        m.engine.submit_market(0, SELL, 1, m.alice)
        # Each lot costs 70; the order's rounded fee is 1 from its first fill on.
        assert m.bal(m.escrow, USDC) == 211 - 70 * (k + 1) - 1
        check(m)
    assert m.bal(m.fees, USDC) == 1
    assert m.bal(m.bob, USDC) == 10**9 - 211
    assert m.engine.order(oid) is None


def test_taker_sell_fee_comes_out_of_its_proceeds():
    m = make_market(maker=0.0005, taker=0.003)
    build_book(m, [(m.bob, BUY, 1000, 2)])  # reserves 20_000 + 10
    m.engine.submit_market(0, SELL, 2, m.alice)
    assert m.bal(m.alice, USDC) == 10**9 + 20_000 - 60
    assert m.bal(m.bob, USDC) == 10**9 - 20_010
    assert m.bal(m.fees, USDC) == 70
    assert m.bal(m.bob, WETH) == 1002 * LOT
    check(m)


def test_a_fee_on_a_tiny_notional_rounds_up_to_one_unit():
    m = make_market(taker=0.002)
    build_book(m, [(m.bob, SELL, 7, 1)])
    m.engine.submit_market(0, BUY, 1, m.alice)  # 70 * 0.002 = 0.14 -> 1
    assert m.bal(m.fees, USDC) == 1 and m.bal(m.alice, USDC) == 10**9 - 71


# ====================================================================== self-trade prevention
def _stp_market(stp: SelfTradePolicy) -> tuple[Market, list[int]]:
    m = make_market(stp=stp)
    ids = build_book(m, [(m.bob, SELL, 1000, 3), (m.alice, SELL, 1000, 2), (m.bob, SELL, 1001, 2)])
    return m, ids


def test_stp_cancel_resting_cancels_own_order_and_keeps_matching():
    m, ids = _stp_market(SelfTradePolicy.CANCEL_RESTING)
    r = m.engine.submit_market(0, BUY, 5, m.alice)
    assert r.status == OrderStatus.OK
    assert [(f.maker_order_id, f.qty_lots) for f in r.fills] == [(ids[0], 3), (ids[2], 2)]
    assert m.engine.order(ids[1]) is None and levels(m) == ([], [])
    assert m.bal(m.alice, WETH) == 1005 * LOT  # her 2 escrowed lots came back
    check(m)


def test_stp_cancel_incoming_keeps_the_resting_order_and_earlier_fills():
    m, ids = _stp_market(SelfTradePolicy.CANCEL_INCOMING)
    r = m.engine.submit_limit(0, BUY, 1001, 5, m.alice)
    assert (r.status, r.filled_lots, r.resting_lots) == (OrderStatus.SELF_TRADE, 3, 0)
    assert [f.maker_order_id for f in r.fills] == [ids[0]]
    assert levels(m) == ([], [[1000, 2], [1001, 2]])
    assert m.engine.order(ids[1]).qty_lots == 2
    check(m)


def test_stp_cancel_both_cancels_resting_and_incoming():
    m, ids = _stp_market(SelfTradePolicy.CANCEL_BOTH)
    r = m.engine.submit_market(0, BUY, 5, m.alice)
    assert (r.status, r.filled_lots) == (OrderStatus.SELF_TRADE, 3)
    assert m.engine.order(ids[1]) is None and levels(m) == ([], [[1001, 2]])
    check(m)


# ====================================================================== funding
def test_limit_buy_that_cannot_be_funded_is_rejected_and_changes_nothing():
    m = make_market(quote=19_999)
    before = m.state()
    r = m.engine.submit_limit(0, BUY, 1000, 2, m.alice)
    assert (r.status, r.order_id) == (OrderStatus.INSUFFICIENT_FUNDS, 0)
    assert m.state() == before
    assert m.engine.submit_limit(0, BUY, 1000, 1, m.alice).order_id == 1  # no id was used


def test_limit_sell_needs_all_its_base():
    m = make_market(base=2 * LOT)
    before = m.state()
    assert m.engine.submit_limit(0, SELL, 1000, 3, m.alice).status == (
        OrderStatus.INSUFFICIENT_FUNDS
    )
    assert m.state() == before
    assert m.engine.submit_limit(0, SELL, 1000, 2, m.alice).status == OrderStatus.OK


def test_crossing_limit_buy_must_be_funded_at_the_larger_fee_rate():
    m = make_market(maker=0.001, taker=0.003, quote=10_010)
    build_book(m, [(m.bob, SELL, 1000, 1)])
    before = m.state()
    # Resting at the maker rate would need 10_000 + 10, but it can take: 10_000 + 30.
    r = m.engine.submit_limit(0, BUY, 1000, 1, m.alice)
    assert r.status == OrderStatus.INSUFFICIENT_FUNDS and m.state() == before
    r = m.engine.submit_limit(0, BUY, 999, 1, m.alice)  # cannot cross: 9_990 + 10
    assert (r.status, r.resting_lots) == (OrderStatus.OK, 1)
    assert m.bal(m.alice, USDC) == 10


def test_market_buy_is_capped_at_what_the_quote_balance_pays():
    m = make_market(taker=0.002, quote=20_039)
    build_book(m, [(m.bob, SELL, 1000, 5)])
    # Two lots would cost 20_000 + 40 > 20_039; one costs 10_000 + 20.
    r = m.engine.submit_market(0, BUY, 5, m.alice)
    assert (r.status, r.filled_lots) == (OrderStatus.OK, 1)
    assert m.bal(m.alice, USDC) == 20_039 - 10_020
    check(m)


def test_market_buy_cap_applies_across_levels():
    m = make_market(quote=45_000)
    build_book(m, [(m.bob, SELL, 1000, 2), (m.bob, SELL, 2000, 5)])
    # 2 lots at 1000 cost 20_000; of the 25_000 left one lot at 2000 (20_000) is payable.
    r = m.engine.submit_market(0, BUY, 7, m.alice)
    assert [(f.price_ticks, f.qty_lots) for f in r.fills] == [(1000, 2), (2000, 1)]
    assert m.bal(m.alice, USDC) == 5_000
    check(m)


def test_market_buy_that_cannot_pay_one_lot_is_rejected():
    m = make_market(quote=9_999)
    build_book(m, [(m.bob, SELL, 1000, 5)])
    before = m.state()
    r = m.engine.submit_market(0, BUY, 1, m.alice)
    assert (r.status, r.order_id) == (OrderStatus.INSUFFICIENT_FUNDS, 0)
    assert m.state() == before


def test_market_sell_is_capped_at_the_base_balance():
    m = make_market(base=2 * LOT + 999)
    build_book(m, [(m.bob, BUY, 1000, 5)])
    r = m.engine.submit_market(0, SELL, 5, m.alice)
    assert (r.status, r.filled_lots) == (OrderStatus.OK, 2)
    assert m.bal(m.alice, WETH) == 999
    m2 = make_market(base=LOT - 1)
    build_book(m2, [(m2.bob, BUY, 1000, 5)])
    assert m2.engine.submit_market(0, SELL, 1, m2.alice).status == OrderStatus.INSUFFICIENT_FUNDS


def test_market_order_into_an_empty_book_is_accepted_and_fills_nothing():
    m = make_market(quote=0)
    r = m.engine.submit_market(0, BUY, 5, m.alice)
    assert (r.status, r.order_id, r.filled_lots) == (OrderStatus.OK, 1, 0)


# ====================================================================== rejects
@pytest.mark.parametrize(
    ("args", "status"),
    [
        (("WETH-USDC", BUY, 1000, 0), OrderStatus.NON_POSITIVE_QTY),
        (("WETH-USDC", BUY, 1000, -3), OrderStatus.NON_POSITIVE_QTY),
        (("WETH-USDC", BUY, 0, 1), OrderStatus.NON_POSITIVE_PRICE),
        (("WETH-USDC", SELL, -5, 1), OrderStatus.NON_POSITIVE_PRICE),
        (("WETH-USDC", BUY, 1000.5, 1), OrderStatus.OFF_TICK),
        (("WETH-USDC", BUY, 1000, 1.5), OrderStatus.OFF_LOT),
        (("WETH-USDC", BUY, MAX_PRICE_TICKS + 1, 1), OrderStatus.PRICE_TOO_LARGE),
        (("WETH-USDC", SELL, 1000, MAX_QTY_LOTS + 1), OrderStatus.QTY_TOO_LARGE),
        (("WETH-USDC", SELL, MAX_PRICE_TICKS, MAX_QTY_LOTS), OrderStatus.NOTIONAL_TOO_LARGE),
        (("NOPE", BUY, 1000, 1), OrderStatus.UNKNOWN_INSTRUMENT),
        ((7, BUY, 1000, 1), OrderStatus.UNKNOWN_INSTRUMENT),
        (("WETH-USDC", 0, 1000, 1), OrderStatus.INVALID_SIDE),
        (("WETH-USDC", BUY, 10**6, 10**4), OrderStatus.INSUFFICIENT_FUNDS),
    ],
)
def test_bad_orders_are_rejected_with_the_reason_and_change_nothing(args, status):
    m = make_market()
    build_book(m, [(m.bob, SELL, 1010, 3), (m.bob, BUY, 990, 3)])
    before = m.state()
    r = m.engine.submit_limit(*args, m.alice)
    assert (r.status, r.order_id, r.filled_lots, r.fills) == (status, 0, 0, ())
    assert not r.accepted
    assert m.state() == before


@pytest.mark.parametrize("account", ["escrow", 99, -1])
def test_unknown_accounts_are_rejected(account):
    m = make_market()
    acct = m.escrow if account == "escrow" else account
    before = m.state()
    assert m.engine.submit_limit(0, BUY, 1000, 1, acct).status == OrderStatus.UNKNOWN_ACCOUNT
    assert m.state() == before


def test_unknown_order_kind_is_rejected():
    m = make_market()
    res = m.engine.submit_batch(
        np.array([0]),
        np.array([1]),
        np.array([9]),
        np.array([1000]),
        np.array([1]),
        np.array([m.alice]),
    )
    assert res.status.tolist() == [OrderStatus.INVALID_KIND]


# ====================================================================== perp books
def test_perp_book_matches_without_moving_tokens_or_charging_fees():
    m = make_market(perp=True)
    poor = m.ledger.add_holder("poor")  # holds nothing, and a perp book does not ask
    before = m.ledger.balances.copy()
    m.engine.submit_limit("BTC-PERP", SELL, 50_000, 3, poor)
    m.engine.submit_limit("BTC-PERP", SELL, 50_010, 3, m.bob)
    r = m.engine.submit_market("BTC-PERP", BUY, 4, m.alice)
    assert [(f.price_ticks, f.qty_lots, f.seller) for f in r.fills] == [
        (50_000, 3, poor),
        (50_010, 1, m.bob),
    ]
    np.testing.assert_array_equal(m.ledger.balances[: before.shape[0]], before)
    assert m.engine.order(2).reserved_units == 0
    cost = m.engine.market_order_cost("BTC-PERP", BUY, 2)
    assert cost[:2] == (2, 2 * 50_010)  # no fee in the engine
    check(m)


# ====================================================================== batch API
def test_batch_processes_in_order_across_instruments_and_returns_arrays():
    m = make_market(perp=True)
    a, b = m.alice, m.bob
    L, MK, C = int(OrderKind.LIMIT), int(OrderKind.MARKET), int(OrderKind.CANCEL)
    res = m.engine.submit_batch(
        instrument=np.array([0, 1, 0, 0, 1, 0, 0]),
        side=np.array([-1, -1, 1, 1, 1, 1, 1]),
        kind=np.array([L, L, L, MK, MK, C, L]),
        price_ticks=np.array([1000, 500, 990, 0, 0, 0, 0]),
        qty_lots=np.array([5, 2, 1, 3, 1, 0, 1]),
        account=np.array([b, b, a, a, a, b, a]),
        order_ref=np.array([0, 0, 0, 0, 0, 1, 0]),
    )
    assert res.order_id.tolist() == [1, 2, 3, 4, 5, 1, 0]
    assert res.status.tolist() == [0, 0, 0, 0, 0, 0, OrderStatus.NON_POSITIVE_PRICE]
    assert res.filled_lots.tolist() == [0, 0, 0, 3, 1, 0, 0]
    assert res.resting_lots.tolist() == [5, 2, 1, 0, 0, 0, 0]
    order_id, status, filled, resting = res  # unpacks like a tuple
    assert order_id is res.order_id
    t = m.engine.trade_arrays()
    assert t["instrument"].tolist() == [0, 1] and t["maker_order_id"].tolist() == [1, 2]
    assert t["taker_order_id"].tolist() == [4, 5]
    assert levels(m) == ([[990, 1]], [])
    check(m)


def test_batch_accepts_scalars_lists_floats_and_instrument_ids():
    m = make_market()
    res = m.engine.submit_batch("WETH-USDC", [1, 1, -1], 0, [990.0, 990.5, 1000.0], 2, m.alice)
    assert res.status.tolist() == [OrderStatus.OK, OrderStatus.OFF_TICK, OrderStatus.OK]
    res = m.engine.submit_batch(np.array(["WETH-USDC", "X"]), 1, 0, 980, 1, m.alice)
    assert res.status.tolist() == [OrderStatus.OK, OrderStatus.UNKNOWN_INSTRUMENT]
    res = m.engine.submit_batch(np.array([0, 0], np.int32), 1, 0, np.array([970, 960]), 1, m.alice)
    assert res.status.tolist() == [0, 0]
    empty = m.engine.submit_batch(*(np.zeros(0, np.int64) for _ in range(6)))
    assert empty.order_id.shape == (0,)


def test_batch_arrays_of_different_lengths_are_an_error():
    m = make_market()
    z = np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="equal lengths"):
        m.engine.submit_batch(z, z, z, z, np.zeros(2, np.int64), z)
    with pytest.raises(ValueError, match="equal lengths"):
        m.engine.submit_batch([0, 0], 1, 0, [1, 2, 3], 1, 1)
    with pytest.raises(TypeError, match="numeric"):
        m.engine.submit_batch(0, 1, 0, "cheap", 1, m.alice)


def test_tiny_capacities_grow_and_give_the_same_results():
    rng = np.random.default_rng(5)
    n = 3000
    kind = rng.choice([0, 0, 0, 1, 4], size=n)
    cols = (
        np.zeros(n, np.int64),
        rng.choice([1, -1], size=n),
        kind,
        rng.integers(990, 1010, n),
        rng.integers(1, 5, n),
        rng.integers(2, 5, n),
        rng.integers(1, 1500, n),
    )
    big = make_market()
    small = make_market(order_capacity=1, level_capacity=1, trade_capacity=1, id_window=2)
    r_big = big.engine.submit_batch(*cols)
    r_small = small.engine.submit_batch(*cols)
    for x, y in zip(r_big, r_small, strict=True):
        np.testing.assert_array_equal(x, y)
    pd.testing.assert_frame_equal(big.engine.trades_frame(), small.engine.trades_frame())
    assert big.engine.book_snapshot(0) == small.engine.book_snapshot(0)
    check(small)


def test_old_orders_outside_the_id_window_are_still_found():
    m = make_market(id_window=4, max_id_window=4)
    (old,) = build_book(m, [(m.bob, BUY, 900, 1)])
    build_book(m, [(m.alice, BUY, 950 + k, 1) for k in range(20)])
    assert m.engine.order(old).price_ticks == 900
    assert m.engine.modify(0, old, m.bob, 900, 1).status == OrderStatus.OK
    assert m.engine.cancel(0, old, m.bob).status == OrderStatus.OK
    assert m.engine.order(old) is None
    check(m)


def test_cancel_all_of_an_account_optionally_on_one_instrument():
    m = make_market(perp=True)
    build_book(m, [(m.alice, BUY, 990, 1), (m.alice, SELL, 1010, 1), (m.bob, BUY, 980, 1)])
    build_book(m, [(m.alice, BUY, 40_000, 1)], ins="BTC-PERP")
    assert m.engine.cancel_all(m.alice, "WETH-USDC") == 2
    assert m.engine.open_orders(m.alice).tolist() == [4]
    assert m.engine.cancel_all(np.array([m.alice, m.bob])) == 2
    assert m.engine.n_live_orders == 0 and m.engine.cancel_all(m.carol) == 0
    check(m)


# ====================================================================== trade tape
def test_trades_frame_has_human_units_and_the_step():
    m = make_market()
    build_book(m, [(m.bob, SELL, 200_000, 2)])
    m.engine.step = 3
    m.engine.submit_market(0, BUY, 1, m.alice)
    m.engine.step = 4
    mark = m.engine.n_trades
    m.engine.submit_market(0, BUY, 1, m.carol)
    df = m.engine.trades_frame()
    assert list(df.columns) == [
        "step",
        "instrument",
        "price",
        "price_ticks",
        "qty",
        "qty_lots",
        "buyer",
        "seller",
        "aggressor_side",
        "maker_order_id",
        "taker_order_id",
    ]
    assert df["step"].tolist() == [3, 4] and df["instrument"].tolist() == ["WETH-USDC"] * 2
    assert df["price"].tolist() == pytest.approx([2000.0, 2000.0])
    assert df["qty"].tolist() == pytest.approx([0.001, 0.001])
    assert df["taker_order_id"].tolist() == [2, 3]
    since = m.engine.trade_arrays(mark)
    assert since["buyer"].tolist() == [m.carol] and since["step"].tolist() == [4]
    assert len(m.engine.trades_frame(mark)) == 1


def test_same_stream_gives_identical_results_and_tape():
    def run() -> tuple:
        m = make_market(maker=0.0003, taker=0.0007, quote=10**7, base=50 * LOT)
        rng = np.random.default_rng(11)
        n = 5000
        cols = (
            np.zeros(n, np.int64),
            rng.choice([1, -1], size=n),
            rng.choice([0, 0, 1, 2, 3, 4, 5], n),
            rng.integers(990, 1010, n),
            rng.integers(1, 6, n),
            rng.integers(2, 5, n),
            rng.integers(1, 3000, n),
        )
        res = m.engine.submit_batch(*cols)
        return tuple(a.tolist() for a in res), m.engine.trades_frame(), m.ledger.balances.tolist()

    (r1, t1, b1), (r2, t2, b2) = run(), run()
    assert r1 == r2 and b1 == b2
    pd.testing.assert_frame_equal(t1, t2)
    assert len(t1) > 100


# ====================================================================== construction
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("instrument_id", ""),
        ("kind", "future"),
        ("base_units_per_lot", 0),
        ("quote_units_per_tick_lot", 2.5),
        ("tick", 0.0),
        ("lot", float("nan")),
        ("maker_fee", -0.001),
        ("taker_fee", 1.0),
        ("fee_holder", "fees"),
    ],
)
def test_book_spec_rejects_bad_fields_naming_field_and_value(field, value):
    good = spot_spec(1)
    with pytest.raises(ValueError) as err:
        dataclasses.replace(good, **{field: value})
    assert repr(field) in str(err.value) and repr(value) in str(err.value)


def test_engine_rejects_specs_that_do_not_fit_the_ledger():
    m = make_market()
    ledger = m.ledger
    cases = [
        ([dataclasses.replace(spot_spec(m.fees), quote_asset=9)], "quote_asset"),
        ([dataclasses.replace(spot_spec(m.fees), base_asset=USDC)], "base_asset"),
        ([dataclasses.replace(spot_spec(m.fees), fee_holder=m.escrow)], "fee_holder"),
        ([spot_spec(m.fees), spot_spec(m.fees)], "unique"),
    ]
    for specs, what in cases:
        with pytest.raises(ValueError, match=what):
            MatchingEngine(ledger, specs, m.escrow)
    with pytest.raises(ValueError, match="escrow_holder"):
        MatchingEngine(ledger, [spot_spec(m.fees)], 99)
    with pytest.raises(ValueError, match="self_trade_policy"):
        MatchingEngine(ledger, [spot_spec(m.fees)], m.escrow, self_trade_policy=7)
    with pytest.raises(ValueError, match="order_capacity"):
        MatchingEngine(ledger, [spot_spec(m.fees)], m.escrow, order_capacity=0)


def test_order_ids_are_per_engine():
    m1, m2 = make_market(), make_market()
    assert m1.engine.submit_limit(0, BUY, 990, 1, m1.alice).order_id == 1
    assert m2.engine.submit_limit(0, BUY, 990, 1, m2.alice).order_id == 1


def test_holders_added_after_the_engine_can_trade():
    m = make_market()
    late = m.ledger.add_holders("late", 200)  # the ledger reallocates its balance array
    m.ledger.mint(late + 150, USDC, 10**6, "test endowment")
    build_book(m, [(m.bob, SELL, 1000, 1)])
    r = m.engine.submit_market(0, BUY, 1, late + 150)
    assert r.filled_lots == 1 and m.bal(late + 150, WETH) == LOT
    check(m)
