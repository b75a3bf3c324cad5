"""Liquidations of the CDP protocol: Dutch auctions, resets, takes, shortfalls, bad debt."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from marginsim.config import AuctionConfig, CdpConfig
from marginsim.ledger import AssetSpec, Ledger
from marginsim.protocols.cdp import (
    SECONDS_PER_YEAR,
    AuctionStatus,
    CdpProtocol,
    TickResult,
)
from marginsim.protocols.events import LIQUIDATION_COLUMNS

WETH = 10**9  # units per WETH (9 decimals)
DAI = 10**6  # units per DAI (6 decimals)


class Feed:
    """A price feed the test sets by hand: oracle name -> price (None: no price yet)."""

    def __init__(self, **prices: float | None) -> None:
        self.prices = dict(prices)

    def price(self, ref: str | float) -> float | None:
        return float(ref) if isinstance(ref, float) else self.prices.get(ref)


@dataclasses.dataclass
class World:
    ledger: Ledger
    cdp: CdpProtocol
    feed: Feed
    alice: int
    bob: int
    keeper1: int
    keeper2: int
    broke: int

    def set_price(self, price: float | None) -> None:
        self.feed.prices["eth"] = price

    def dai(self, holder: int) -> int:
        return self.ledger.balance(holder, self.cdp.stable_asset)

    def weth(self, holder: int) -> int:
        return self.ledger.balance(holder, self.cdp.collateral_asset)


_WORLDS: list[World] = []

# Round numbers for hand computation: top = oracle * 1.25, the price falls 20% a step, a
# reset after more than 3 steps or below 30% of top, a 10% penalty.
AUCTION = {
    "start_multiplier": 1.25,
    "step_decay": 0.8,
    "reset_after_steps": 3,
    "reset_below": 0.3,
    "penalty": 0.1,
}


def make_world(max_resets: int = 3, stability_fee: float = 0.0, **auction: float) -> World:
    ledger = Ledger([AssetSpec("WETH", 9), AssetSpec("DAI", 6)])
    cfg = CdpConfig(
        kind="cdp",
        collateral="WETH",
        stablecoin="DAI",
        price="eth",
        liquidation_ratio=1.5,
        stability_fee=stability_fee,
        auction=AuctionConfig(**{**AUCTION, **auction, "max_resets": max_resets}),
    )
    feed = Feed(eth=2000.0)
    cdp = CdpProtocol(ledger, "maker", cfg, feed)
    names = ("alice", "bob", "keeper1", "keeper2", "broke")
    holders = [ledger.add_holder(n) for n in names]
    for h in holders[:2]:
        ledger.mint(h, 0, 100 * WETH, reason="endowment")
    for h in holders[2:4]:
        ledger.mint(h, 1, 20_000 * DAI, reason="keeper endowment")
    world = World(ledger, cdp, feed, *holders)
    # Alice: 10 WETH against 10,000 DAI at 2000 (collateralisation 2.0).
    cdp.open_position(world.alice, 10 * WETH, 10_000 * DAI)
    _WORLDS.append(world)
    return world


@pytest.fixture(autouse=True)
def _conservation_after_every_test():
    _WORLDS.clear()
    yield
    for world in _WORLDS:
        world.ledger.check_conservation()
        world.cdp.check_invariants()


def fingerprint(w: World) -> tuple:
    led = w.ledger
    return (
        led.balances.copy().tolist(),
        led.minted.tolist(),
        led.burned.tolist(),
        len(led.journal),
        w.cdp.vaults()[["holder", "collateral", "debt"]].to_dict("list"),
        w.cdp.auctions().to_csv(),
        w.cdp.totals(),
        len(w.cdp.liquidations()),
        len(w.cdp.bad_debt()),
    )


def bark_alice_at_1400(w: World, step: int = 10):
    """Price 1400: alice's 14,000 DAI of collateral / 10,000 DAI of debt = 1.4 < 1.5."""
    w.set_price(1400.0)
    w.cdp.tick(step)
    start = w.cdp.bark(w.alice, w.keeper1)
    assert start.ok, start.reason
    return start


# ------------------------------------------------------------------------ bark
def test_bark_moves_collateral_and_debt_to_an_auction_with_the_penalty():
    w = make_world()
    before = fingerprint(w)
    refused = w.cdp.bark(w.alice)  # 2.0 >= 1.5: safe
    assert not refused.ok and "safe: collateralisation 2.0000" in refused.reason
    assert fingerprint(w) == before
    start = bark_alice_at_1400(w)
    # tab = 10,000 DAI + ceil(10% of it) = 11,000 DAI; top = 1400 * 1.25 = 1750.
    assert (start.auction_id, start.collateral_units, start.debt_units) == (0, 10 * WETH, 10**10)
    assert (start.tab_units, start.top_price) == (11_000 * DAI, 1750.0)
    assert w.cdp.vault(w.alice).debt_units == 0 and w.cdp.vault(w.alice).collateral_units == 0
    assert w.weth(w.cdp.auctions_holder) == 10 * WETH and w.weth(w.cdp.vaults_holder) == 0
    # The debt is not gone: it is pending in the auction, matched by the DAI alice holds.
    assert w.cdp.totals()["auction_debt"] == 10_000 * DAI
    assert w.cdp.metrics()["auction_debt"] == 10_000.0
    row = w.cdp.auctions().iloc[0]
    assert (row.step, row.account, row.kicker, row.status) == (10, w.alice, w.keeper1, "active")
    assert row.tab == 11_000 * DAI and row.end_step is pd.NA
    assert not w.cdp.bark(w.alice).ok  # the vault has no debt left


def test_penalty_is_rounded_up_to_a_whole_unit():
    w = make_world(penalty=0.13)
    w.cdp.repay(w.alice, 1)  # debt 9,999.999999 DAI: 13% is 1,299.99999987 DAI
    start = bark_alice_at_1400(w)
    assert start.tab_units == 9_999_999_999 + 1_300_000_000


# ------------------------------------------------------------------------ price path
def test_price_path_decays_by_step_and_resets_after_the_time_limit():
    w = make_world()
    bark_alice_at_1400(w, step=10)
    prices = {}
    for step in range(10, 14):  # k = 0..3: 1750 * 0.8**k; k = 3 is not more than 3 steps
        assert w.cdp.tick(step).reset == ()
        prices[step] = w.cdp.auction(0).price
    # Quoted to 12 significant digits, the float noise of 0.8**k is gone: exact values.
    assert prices == {10: 1750.0, 11: 1400.0, 12: 1120.0, 13: 896.0}
    w.set_price(1300.0)
    # Step 14: k = 4 > 3 steps (the price 716.8 = 0.4096 top is still above 0.3 top): reset
    # from the oracle now, top = 1300 * 1.25 = 1625, and k counts from 14.
    assert w.cdp.auction(0).needs_reset is False  # the protocol is still at step 13
    tick = w.cdp.tick(14)
    assert (tick.reset, tick.expired) == ((0,), ())
    state = w.cdp.auction(0)
    assert (state.top_price, state.price, state.restart_step, state.resets) == (
        1625.0,
        1625.0,
        14,
        1,
    )
    w.cdp.tick(15)
    assert w.cdp.auction(0).price == 1300.0  # 1625 * 0.8
    assert w.cdp.auctions().iloc[0].resets == 1


def test_price_path_resets_when_the_price_falls_below_the_threshold():
    # Halving each step with a reset below 50% of top: k=1 is exactly 50% (not below), k=2 is 25%.
    w = make_world(step_decay=0.5, reset_below=0.5, reset_after_steps=90)
    bark_alice_at_1400(w, step=10)
    w.cdp.tick(11)
    assert w.cdp.auction(0).price == 875.0 and not w.cdp.auction(0).needs_reset
    w.cdp.step = 12  # the model moved on but has not ticked yet: 437.5 < 875
    state = w.cdp.auction(0)
    assert state.price == 437.5 and state.needs_reset
    before = fingerprint(w)
    r = w.cdp.take(0, w.keeper1, WETH, 10_000.0)
    assert not r.ok and "needs a reset" in r.reason
    assert fingerprint(w) == before
    w.set_price(1200.0)
    assert w.cdp.tick(12).reset == (0,)
    assert (w.cdp.auction(0).top_price, w.cdp.auction(0).price) == (1500.0, 1500.0)


def test_a_reset_waits_for_a_price():
    w = make_world()
    bark_alice_at_1400(w, step=10)
    w.set_price(None)
    assert w.cdp.tick(14) == TickResult((), ())
    assert w.cdp.auction(0).needs_reset and w.cdp.auction(0).resets == 0
    assert not w.cdp.take(0, w.keeper1, WETH, 1e9).ok
    w.set_price(1000.0)
    assert w.cdp.tick(15).reset == (0,)
    assert w.cdp.auction(0).top_price == 1250.0


# ------------------------------------------------------------------------ takes
def test_a_take_that_raises_the_whole_tab_returns_the_rest_to_the_owner():
    w = make_world()
    bark_alice_at_1400(w, step=10)
    # At 1750 all 10 WETH would cost 17,500 DAI > the 11,000 DAI tab: the keeper pays the
    # tab and gets floor(11,000 / 1750 WETH) = floor(6.2857142857142) = 6.285714285 WETH.
    r = w.cdp.take(0, w.keeper1, 10 * WETH, 1800.0)
    assert r.ok and r.price == 1750.0
    assert (r.collateral_units, r.paid_units) == (6_285_714_285, 11_000 * DAI)
    assert (r.debt_repaid_units, r.penalty_units) == (10_000 * DAI, 1_000 * DAI)
    assert (r.returned_units, r.shortfall_units, r.status) == (
        3_714_285_715,
        0,
        AuctionStatus.RAISED,
    )
    assert w.weth(w.keeper1) == 6_285_714_285 and w.dai(w.keeper1) == 9_000 * DAI
    assert w.weth(w.alice) == 90 * WETH + 3_714_285_715  # remainder back in alice's wallet
    assert w.weth(w.cdp.auctions_holder) == 0
    assert w.dai(w.cdp.surplus_holder) == 1_000 * DAI  # the penalty
    assert w.ledger.journal[-1][2:] == (-10_000 * DAI, "auction proceeds")
    # Supply: alice's 10,000 + keepers' 40,000 - 10,000 burned.
    assert w.ledger.supply(w.cdp.stable_asset) == 40_000 * DAI
    row = w.cdp.liquidations().iloc[0].to_dict()
    assert row == {
        "step": 10,
        "protocol": "maker",
        "account": w.alice,
        "liquidator": w.keeper1,
        "debt_asset": "DAI",
        "debt_repaid": 10_000 * DAI,
        "collateral_asset": "WETH",
        "collateral_seized": 6_285_714_285,
        "oracle_price": 1400.0,
        "bonus_value": 1_000.0,  # the penalty as a value, human DAI
        "protocol_fee": 1_000 * DAI,
        "bad_debt": 0,
        "liquidator_received": 6_285_714_285,  # a keeper gets exactly what it bought
        "received_receipt": False,
    }
    auction = w.cdp.auctions().iloc[0]
    assert (auction.status, auction.end_step, auction.raised, auction.shortfall) == (
        "raised",
        10,
        11_000 * DAI,
        0,
    )
    assert w.cdp.active_auctions() == [] and not w.cdp.take(0, w.keeper2, WETH, 1e9).ok


def test_partial_takes_by_two_keepers_cover_debt_first_then_the_penalty():
    w = make_world()
    bark_alice_at_1400(w, step=10)
    w.cdp.tick(11)  # price 1750 * 0.8 = 1400
    assert not w.cdp.take(0, w.keeper1, 4 * WETH, 1399.99).ok  # above the keeper's limit
    # Keeper 1: 4 WETH * 1400 = 5,600 DAI, all of it debt (burned). Tab left 5,400 DAI,
    # of which 4,400 debt and 1,000 penalty; 6 WETH left.
    r1 = w.cdp.take(0, w.keeper1, 4 * WETH, 1400.0)
    assert (r1.collateral_units, r1.paid_units, r1.debt_repaid_units, r1.penalty_units) == (
        4 * WETH,
        5_600 * DAI,
        5_600 * DAI,
        0,
    )
    state = w.cdp.auction(0)
    assert (state.lot_units, state.tab_units, state.debt_units) == (
        6 * WETH,
        5_400 * DAI,
        4_400 * DAI,
    )
    # Keeper 2 asks for 10 WETH: the 6 left would cost 8,400 > 5,400 DAI, so it pays the tab
    # for floor(5,400 / 1400 WETH) = 3.857142857 WETH; 4,400 burned, 1,000 to the surplus.
    r2 = w.cdp.take(0, w.keeper2, 10 * WETH, 1400.0)
    assert (r2.collateral_units, r2.paid_units) == (3_857_142_857, 5_400 * DAI)
    assert (r2.debt_repaid_units, r2.penalty_units) == (4_400 * DAI, 1_000 * DAI)
    assert r2.returned_units == 6 * WETH - 3_857_142_857 == 2_142_857_143
    assert w.weth(w.alice) == 90 * WETH + 2_142_857_143
    assert w.dai(w.keeper1) == 14_400 * DAI and w.dai(w.keeper2) == 14_600 * DAI
    frame = w.cdp.liquidations()
    assert frame["liquidator"].tolist() == [w.keeper1, w.keeper2]
    assert frame["debt_repaid"].tolist() == [5_600 * DAI, 4_400 * DAI]
    assert frame["protocol_fee"].tolist() == [0, 1_000 * DAI]
    assert frame["step"].tolist() == [11, 11]
    assert w.cdp.totals()["auction_debt"] == 0 and w.cdp.totals()["raised_debt"] == 10**10


def test_a_keeper_without_stablecoin_cannot_take():
    w = make_world()
    bark_alice_at_1400(w, step=10)
    before = fingerprint(w)
    r = w.cdp.take(0, w.broke, WETH, 2000.0)
    assert not r.ok and r.reason == "keeper holds 0 stablecoin units, the take costs 1750000000"
    w.ledger.mint(w.broke, w.cdp.stable_asset, 100 * DAI, reason="endowment")
    before = fingerprint(w)
    r = w.cdp.take(0, w.broke, WETH, 2000.0)  # 1 WETH at 1750 costs 1,750 DAI
    assert not r.ok and "holds 100000000" in r.reason and r.collateral_units == 0
    assert fingerprint(w) == before
    # What 100 DAI buys at 1750: 57,142,857 WETH units cost ceil(99.99999975) = 100 DAI.
    r = w.cdp.take(0, w.broke, 57_142_857, 2000.0)
    assert (r.ok, r.paid_units, w.dai(w.broke)) == (True, 100 * DAI, 0)


def test_take_refusals_change_nothing():
    w = make_world()
    bark_alice_at_1400(w, step=10)
    before = fingerprint(w)
    for r in (
        w.cdp.take(7, w.keeper1, WETH, 1e9),
        w.cdp.take(0, w.keeper1, 0, 1e9),
        w.cdp.take(0, w.keeper1, WETH, 1749.0),
        w.cdp.take(0, w.keeper1, WETH, float("nan")),
    ):
        assert not r.ok and r.reason and r.paid_units == 0
    assert fingerprint(w) == before


# ------------------------------------------------------------------------ shortfall
def test_an_auction_clearing_below_market_leaves_bad_debt_covered_first_by_surplus():
    w = make_world(stability_fee=0.0625)
    w.cdp.open_position(w.bob, 20 * WETH, 5_000 * DAI)
    # A surplus buffer of 1,000 DAI (donated, as if from earlier fees).
    w.ledger.transfer(w.keeper2, w.cdp.surplus_holder, w.cdp.stable_asset, 1_000 * DAI)
    w.set_price(900.0)  # alice: 9,000 / 10,000 = 0.9; bob: 18,000 / 5,000 = 3.6
    w.cdp.tick(10)
    start = w.cdp.bark(w.alice)
    assert start.top_price == 1125.0 and start.tab_units == 11_000 * DAI
    w.cdp.tick(12)  # k = 2: 1125 * 0.64 = 720, while the oracle still says 900
    # All 10 WETH at 720 raise 7,200 DAI: 2,800 DAI of debt stays unraised. The surplus
    # burns its 1,000 DAI against it; 1,800 DAI becomes system debt.
    r = w.cdp.take(0, w.keeper1, 10 * WETH, 750.0)
    assert r.price == 720.0  # 1125 * 0.8**2 = 720.0000000000001 in float, quoted 720
    assert (r.collateral_units, r.paid_units, r.debt_repaid_units) == (
        10 * WETH,
        7_200 * DAI,
        7_200 * DAI,
    )
    assert (r.shortfall_units, r.returned_units, r.status) == (
        2_800 * DAI,
        0,
        AuctionStatus.EXHAUSTED,
    )
    assert w.dai(w.cdp.surplus_holder) == 0
    bad = w.cdp.bad_debt().iloc[0].to_dict()
    assert bad == {
        "step": 12,
        "protocol": "maker",
        "account": w.alice,
        "asset": "DAI",
        "amount": 2_800 * DAI,
        "covered": 1_000 * DAI,
        "uncovered": 1_800 * DAI,
        "auction_id": 0,
        "cause": "collateral exhausted",
    }
    assert w.cdp.liquidations().iloc[0]["bad_debt"] == 2_800 * DAI
    assert w.cdp.auctions().iloc[0]["shortfall"] == 2_800 * DAI
    m = w.cdp.metrics()
    assert (m["system_debt"], m["surplus"], m["bad_debt"]) == (1_800.0, 0.0, 2_800.0)
    assert w.ledger.journal[-1][2:] == (-1_000 * DAI, "bad debt covered by surplus")
    # Later fees heal the system debt: one year at 6.25% on bob's 5,000 DAI is 312.5 DAI.
    assert w.cdp.accrue(0, float(SECONDS_PER_YEAR)) == 312_500_000
    assert w.cdp.totals()["system_debt"] == 1_487_500_000
    assert w.dai(w.cdp.surplus_holder) == 0


def test_an_auction_without_bidders_expires_after_max_resets():
    w = make_world(max_resets=1)
    bark_alice_at_1400(w, step=10)
    assert w.cdp.tick(14).reset == (0,)  # k = 4 > 3: first reset, top 1750 again
    assert w.cdp.tick(17).expired == ()  # k = 3 after the reset
    tick = w.cdp.tick(18)  # needs a second reset: expires instead
    assert (tick.reset, tick.expired) == ((), (0,))
    # The protocol keeps the collateral; the whole 10,000 DAI of debt is bad debt (the
    # penalty was never minted, so it is simply not raised). No surplus: all system debt.
    assert w.weth(w.cdp.surplus_holder) == 10 * WETH and w.weth(w.cdp.auctions_holder) == 0
    row = w.cdp.auctions().iloc[0]
    assert (row.status, row.end_step, row.shortfall, row.resets, row.raised) == (
        "expired",
        18,
        10_000 * DAI,
        1,
        0,
    )
    assert w.cdp.bad_debt()["cause"].tolist() == ["auction expired"]
    assert w.cdp.totals()["system_debt"] == 10_000 * DAI
    assert w.cdp.auction(0).shortfall_units == 10_000 * DAI
    r = w.cdp.take(0, w.keeper1, WETH, 1e9)
    assert not r.ok and r.reason == "auction is expired"


def test_event_tables_have_fixed_columns_and_dtypes_even_when_empty():
    w = make_world()
    empty = w.cdp.liquidations()
    assert len(empty) == 0
    assert {c: str(t) for c, t in empty.dtypes.items()} == LIQUIDATION_COLUMNS
    assert len(w.cdp.auctions()) == 0 and len(w.cdp.bad_debt()) == 0
    bark_alice_at_1400(w)
    w.cdp.take(0, w.keeper1, WETH, 2000.0)
    full = w.cdp.liquidations()
    assert {c: str(t) for c, t in full.dtypes.items()} == LIQUIDATION_COLUMNS
    assert str(w.cdp.auctions()["end_step"].dtype) == "Int64"
