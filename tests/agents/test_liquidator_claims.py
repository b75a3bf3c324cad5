"""Liquidation bots and claim collateral: another pool's receipt token, a bridge's wrapped asset.

Pool C lends USDC against WETH; pool B accepts C's receipt token aUSDC.C. A bad debt at C writes
down C's liquidity index to 0.676190477, so B's borrower y (1,000 aUSDC.C against 800 USDC) is
liquidatable. The bot must value the aUSDC.C it would seize at exchange rate x USDC price,
redeemed at C as far as C's liquidity allows (as the model's claim redemption does).
"""

from fractions import Fraction

import mesa
import numpy as np
import pytest

from marginsim.agents.liquidator import LiquidateCall, Liquidator
from marginsim.config import LendingConfig, LiquidatorsConfig, ReserveConfig
from marginsim.experiments.scenarios import load_scenario
from marginsim.ledger import AssetSpec, Ledger
from marginsim.model import MarginModel
from marginsim.protocols.lending import RAY, FixedPriceFeed, LendingPool
from marginsim.protocols.view import ProtocolsView, Redemption

USDC = 10**6
WETH = 10**9


class BookView:
    """A MarketView: wallets from a ledger, a spot book only for the assets in ``books``.

    ``books[asset] = price``: the book absorbs any sale at that price (quote units of USDC).
    """

    def __init__(self, ledger, books=None):
        self.ledger = ledger
        self.books = books or {}

    def balances(self, holders, asset):
        return self.ledger.balances[np.asarray(holders), asset]

    def spot_instrument(self, base_asset, quote_asset=None):
        return base_asset if base_asset in self.books else None

    def asset_decimals(self, asset):
        return self.ledger.assets[asset].decimals

    def base_units_per_lot(self, ins):
        return 10 ** self.asset_decimals(ins) // 1000

    def quote_asset(self, ins):
        return self.ledger.asset_id("USDC")

    def market_order_cost(self, ins, side, lots):
        units = lots * self.base_units_per_lot(ins)
        quote = int(units / 10 ** self.asset_decimals(ins) * self.books[ins] * USDC)
        return lots, quote, self.books[ins]


def _collateral(price):
    return ReserveConfig(
        price=price,
        ltv=0.8,
        liquidation_threshold=0.85,
        liquidation_bonus=0.05,
        protocol_share=0.0,
        borrowable=False,
    )


def bot(holder, **cfg):
    return Liquidator(mesa.Model(rng=1), LiquidatorsConfig(count=1, **cfg), holder=holder)


@pytest.fixture
def chain():
    configs = {
        "C": LendingConfig(
            kind="lending",
            reserves={"USDC": ReserveConfig(price=1.0), "WETH": _collateral("eth")},
        ),
        "B": LendingConfig(
            kind="lending",
            reserves={"USDC": ReserveConfig(price=1.0), "aUSDC.C": _collateral(1.0)},
        ),
    }
    decimals = {"USDC": 6, "WETH": 9, "aUSDC.C": 6}
    assets = [AssetSpec("USDC", 6), AssetSpec("WETH", 9)]
    for name, cfg in configs.items():
        assets += LendingPool.derived_assets(name, cfg, decimals)
    ledger = Ledger(assets)
    feed = FixedPriceFeed({"eth": 1000.0})
    pools = {name: LendingPool(ledger, name, cfg, feed) for name, cfg in configs.items()}
    C, B = pools["C"], pools["B"]
    B.set_exchange_rate("aUSDC.C", lambda: Fraction(C.liquidity_index_ray("USDC"), RAY))
    h = {n: ledger.add_holder(n) for n in ("x", "y", "z", "liq", "bot")}
    usdc, weth = ledger.asset_id("USDC"), ledger.asset_id("WETH")
    ledger.mint(h["x"], weth, 1 * WETH, "endowment")
    for who in ("y", "z"):
        ledger.mint(h[who], usdc, 1000 * USDC, "endowment")
    ledger.mint(h["liq"], usdc, 10_000 * USDC, "endowment")
    ledger.mint(h["bot"], usdc, 10_000 * USDC, "endowment")
    assert C.supply(h["y"], "USDC", 1000 * USDC).ok
    assert B.supply(h["z"], "USDC", 1000 * USDC).ok
    assert B.supply(h["y"], "aUSDC.C", 1000 * USDC).ok
    assert C.supply(h["x"], "WETH", 1 * WETH).ok
    assert C.borrow(h["x"], "USDC", 800 * USDC).ok
    assert B.borrow(h["y"], "USDC", 800 * USDC).ok
    # WETH halves: x is liquidated at C and leaves 323.809523 USDC of bad debt, which writes
    # C's USDC index down to 0.676190477 (tests/protocols/test_network_chain.py).
    feed.prices["eth"] = 500.0
    assert C.liquidate(h["liq"], h["x"], "USDC", "WETH", 800 * USDC).ok
    assert C.liquidity_index_ray("USDC") == RAY - 323_809_523 * 10**18
    view = ProtocolsView(pools, {})
    view.set_claims({ledger.asset_id("aUSDC.C"): ("C", "USDC")})
    yield pools, view, ledger, h
    ledger.check_conservation()


def test_redemption_preview_pays_what_the_issuer_liquidity_allows(chain):
    pools, view, ledger, h = chain
    a_c, usdc = ledger.asset_id("aUSDC.C"), ledger.asset_id("USDC")
    # C holds 1,000 - 800 (x's borrow) + 476.190477 (the liquidation's repay) = 676.190477 USDC.
    assert pools["C"].available_units("USDC") == 676_190_477
    # 1,000e6 scaled units x 0.676190477 = 676,190,477 units: exactly what C can pay.
    assert view.redemption(a_c, 1000 * USDC) == Redemption(usdc, 676_190_477, 1.0, 0.0)
    # Twice that is worth 1,352,380,954 units; C pays 676,190,477, the rest stays a claim
    # valued at exchange rate x USDC price = 676.190477.
    r = view.redemption(a_c, 2000 * USDC)
    assert (r.asset, r.units, r.price) == (usdc, 676_190_477, 1.0)
    assert r.kept_value == pytest.approx(676.190477, rel=1e-12)
    # An asset that is no claim is returned as it is.
    assert view.redemption(usdc, 5) == Redemption(usdc, 5)
    # The view prices the claim reserve as the pool does: underlying price x exchange rate.
    assert view.reserve_price("B", "aUSDC.C") == pytest.approx(0.676190477, rel=1e-15)


def test_bot_liquidates_receipt_collateral_valued_at_the_exchange_rate(chain):
    pools, view, ledger, h = chain
    market = BookView(ledger)  # no book at all: USDC redeemed is cash, nothing to sell
    # y: HF = 676.190477 * 0.85 / 800 = 0.718 < 0.95, so the whole 800 USDC may be repaid.
    # Seized at the pool's price 0.676190477 with the 5% bonus: floor(840 / 0.676190477 *
    # 1e6) = 1,242,253,519 aUSDC.C, redeemable for floor(1,242,253,519 * 0.676190477) =
    # 839,999,999 USDC units: 676,190,477 from C's liquidity (cash, the debt asset itself)
    # and 163.809522 held as the claim at its exchange rate: 839.999999 in all, >= 800 * 1.04.
    calls = list(bot(h["bot"], min_profit=0.04).plan(market, view))
    assert calls == [LiquidateCall("B", h["y"], "USDC", "aUSDC.C", 800 * USDC)]
    # 839.999999 < 800 * 1.06 = 848, and every halving keeps the ratio at 1.05: no call.
    assert list(bot(h["bot"], min_profit=0.06).plan(market, view)) == []


def test_flash_liquidation_of_receipt_collateral_is_sized_to_what_redeems_in_cash(chain):
    pools, view, ledger, h = chain
    ledger.transfer(h["bot"], h["liq"], ledger.asset_id("USDC"), 10_000 * USDC)  # no capital
    market = BookView(ledger)
    calls = list(bot(h["bot"], uses_flash_loans=True, min_profit=0.0).plan(market, view))
    # The loan is capped by B's USDC liquidity: 1,000 (z) - 800 (y's borrow) = 200 USDC.
    # 200 * 1.05 / 0.676190477 -> 310,563,379 aUSDC.C -> 209,999,999 USDC units, all paid
    # by C's liquidity (nothing held), so 209.999999 >= 200 * 1.0005 repays the loan.
    assert calls == [LiquidateCall("B", h["y"], "USDC", "aUSDC.C", 200 * USDC, flash=True)]


def test_wrapped_collateral_is_held_at_its_backing_price_without_a_book():
    cfg = LendingConfig(
        kind="lending", reserves={"USDC": ReserveConfig(price=1.0), "wWETH": _collateral("eth")}
    )
    backing = [Fraction(1)]
    feed = FixedPriceFeed({"eth": 2000.0})
    pool = LendingPool.standalone(cfg, {"USDC": 6, "wWETH": 9}, feed, name="P")
    pool.set_exchange_rate("wWETH", lambda: backing[0])
    ledger = pool.ledger
    lp, acct, liq = (ledger.add_holder(n) for n in ("lp", "acct", "bot"))
    usdc, wweth = ledger.asset_id("USDC"), ledger.asset_id("wWETH")
    ledger.mint(lp, usdc, 10_000 * USDC, "endowment")
    ledger.mint(liq, usdc, 10_000 * USDC, "endowment")
    ledger.mint(acct, wweth, 1 * WETH, "endowment")
    assert pool.supply(lp, "USDC", 10_000 * USDC).ok and pool.supply(acct, "wWETH", WETH).ok
    assert pool.borrow(acct, "USDC", 1000 * USDC).ok
    # The bridge loses half its lock: 1 wWETH is worth 2000 * 1/2 = 1000, HF = 0.85.
    backing[0] = Fraction(1, 2)
    view = ProtocolsView({"P": pool}, {})
    view.set_claims({}, [wweth])
    b = bot(liq, min_profit=0.04)
    # HF 0.85 < 0.95: repay all 1,000 USDC; the 5% bonus at the backing price 1000 is a 5%
    # profit on what the bot holds: acts with min_profit 4%, not 6%.
    assert list(b.plan(BookView(ledger), view)) == [
        LiquidateCall("P", acct, "USDC", "wWETH", 1000 * USDC)
    ]
    assert list(bot(liq, min_profit=0.06).plan(BookView(ledger), view)) == []
    # With a book the wrapped asset is sold on it, and the book's price decides: at 990 per
    # wWETH the 1.05 wWETH seized fetch 1,039.5 < 1,040; at 1,000 they fetch 1,050.
    assert list(b.plan(BookView(ledger, {wweth: 990.0}), view)) == []
    assert len(list(b.plan(BookView(ledger, {wweth: 1000.0}), view))) == 1
    # What no book trades is held and counted, not sold.
    assert len(b.after(BookView(ledger), wweth, 1_050_000_000)) == 0
    assert b.held_units == {wweth: 1_050_000_000}
    sold = b.after(BookView(ledger, {wweth: 1000.0}), wweth, 1_050_000_000)
    assert sold.qty_lots.tolist() == [1050] and b.held_units == {wweth: 1_050_000_000}


def test_contagion_bots_redeem_receipts_and_hold_the_wrapped_asset():
    model = MarginModel(load_scenario("contagion"))
    assert model.scenario.agents.liquidators.sell_collateral
    for _ in range(61):  # steps 0..60: the bridge fails at step 60
        model.step()
    liq = model.event_tables()["liquidations"]
    # Every account of the chain is liquidated in step 60 by the bots, with sales on.
    assert liq[["step", "protocol", "collateral_asset"]].values.tolist() == [
        [60, "corelend", "wWETH"],
        [60, "corelend", "wWETH"],
        [60, "midlend", "aUSDC.corelend"],
        [60, "edgelend", "aUSDC.midlend"],
    ]
    ledger = model.ledger
    usdc, wweth = ledger.asset_id("USDC"), ledger.asset_id("wWETH")
    held_wweth = sum(b.held_units.get(wweth, 0) for b in model.liquidators)
    held_usdc = sum(b.held_units.get(usdc, 0) for b in model.liquidators)
    # Both corelend accounts lose their whole 500 wWETH: 1,000 wWETH held (no book).
    assert held_wweth == 1000 * WETH
    # midlend's 2,000,000 aUSDC.corelend and edgelend's 1,000,000 aUSDC.midlend were redeemed
    # at their issuers' indexes after the write-downs (no accrual since, within step 60).
    i_core = model.lending["corelend"].liquidity_index_ray("USDC")
    i_mid = model.lending["midlend"].liquidity_index_ray("USDC")
    assert held_usdc == 2_000_000 * USDC * i_core // RAY + 1_000_000 * USDC * i_mid // RAY
    # Withdrawing floor(units x index) burns ceil(amount / index) <= units scaled units: at
    # most one scaled unit of dust stays with the bot per redemption.
    left = [
        sum(ledger.balance(b.holder, ledger.asset_id(s)) for b in model.liquidators)
        for s in ("aUSDC.corelend", "aUSDC.midlend")
    ]
    assert all(0 <= n <= 1 for n in left)
