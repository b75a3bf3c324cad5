"""The liquidation map: per-protocol liquidation prices and their aggregation, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from marginsim.config import (
    AuctionConfig,
    CdpConfig,
    LendingConfig,
    MarginTierConfig,
    PerpConfig,
    ReserveConfig,
)
from marginsim.experiments.scenarios import load_scenario
from marginsim.ledger import AssetSpec, Ledger
from marginsim.market.engine import BookSpec, MatchingEngine, OrderKind
from marginsim.metrics import liquidation_map, liquidation_map_from_prices
from marginsim.model import MarginModel
from marginsim.protocols.cdp import CdpProtocol
from marginsim.protocols.events import LiquidationPrices
from marginsim.protocols.lending import FixedPriceFeed, LendingPool
from marginsim.protocols.perp import PerpContract, PerpVenue, liquidation_price
from marginsim.protocols.view import ProtocolsView

WETH = 10**9
USDC = 10**6


# ------------------------------------------------------------------------------ lending
def lending_pool() -> LendingPool:
    cfg = LendingConfig(
        kind="lending",
        reserves={
            "WETH": ReserveConfig(price="eth", ltv=0.75, liquidation_threshold=0.8),
            "USDC": ReserveConfig(
                price=1.0, ltv=0.7, liquidation_threshold=0.75, initial_supply=1_000_000.0
            ),
        },
    )
    pool = LendingPool.standalone(cfg, {"WETH": 9, "USDC": 6}, FixedPriceFeed({"eth": 2000.0}))
    # WETH to borrow for the short account.
    lender = pool.ledger.add_holder("lender")
    pool.ledger.mint(lender, pool.reserve("WETH").asset, 100 * WETH, "test")
    assert pool.supply(lender, "WETH", 100 * WETH).ok
    return pool


def place(pool: LendingPool, name: str, collateral: dict, debt: dict) -> int:
    h = pool.ledger.add_holder(name)
    units = {"WETH": WETH, "USDC": USDC}
    for sym, amount in collateral.items():
        pool.ledger.mint(h, pool.reserve(sym).asset, int(amount * units[sym]), "test")
    pool.open_position(
        h,
        {s: int(a * units[s]) for s, a in collateral.items()},
        {s: int(a * units[s]) for s, a in debt.items()},
        enforce_ltv=False,
    )
    return h


def three_accounts() -> tuple[LendingPool, int, int, int]:
    """a: 10 WETH against 12,000 USDC (liquidated at 12,000 / (10 * 0.8) = 1,500);
    b: 5 WETH against 7,200 USDC (at 7,200 / 4 = 1,800);
    c: 20,000 USDC against 5 WETH (short: at 20,000 * 0.75 / 5 = 3,000, debt 15,000 there).
    """
    pool = lending_pool()
    a = place(pool, "a", {"WETH": 10}, {"USDC": 12_000})
    b = place(pool, "b", {"WETH": 5}, {"USDC": 7_200})
    c = place(pool, "c", {"USDC": 20_000}, {"WETH": 5})
    return pool, a, b, c


def test_lending_liquidation_prices_of_three_accounts():
    pool, a, b, c = three_accounts()
    lp = pool.liquidation_prices("WETH")
    rows = zip(lp.holder, lp.price, lp.debt_value, lp.side, strict=True)
    got = {int(h): (p, d, s) for h, p, d, s in rows}
    assert set(got) == {a, b, c}  # the lender has no debt: never liquidatable
    assert got[a][0] == pytest.approx(1500.0) and got[a][1] == pytest.approx(12_000.0)
    assert got[b][0] == pytest.approx(1800.0) and got[b][1] == pytest.approx(7_200.0)
    assert got[c][0] == pytest.approx(3000.0) and got[c][1] == pytest.approx(15_000.0)
    assert (got[a][2], got[b][2], got[c][2]) == (1, 1, -1)
    assert lp.current_price == 2000.0
    # At the liquidation price the pool's own health factor is 1.
    pool.prices.prices["eth"] = 1500.0
    assert pool.account_data(a).health_factor == pytest.approx(1.0)


def test_lending_liquidation_prices_hold_other_assets_at_their_price():
    # 10 WETH and 4,000 USDC collateral against 14,000 USDC debt: the USDC counts
    # 4,000 * 0.75 = 3,000 at its price, so p = (14,000 - 3,000) / (10 * 0.8) = 1,375.
    pool = lending_pool()
    h = place(pool, "mixed", {"WETH": 10, "USDC": 4_000}, {"USDC": 14_000})
    lp = pool.liquidation_prices("WETH")
    assert lp.holder.tolist() == [h]
    assert lp.price[0] == pytest.approx(1375.0)
    assert lp.debt_value[0] == pytest.approx(14_000.0)


def test_the_map_of_three_accounts():
    pool, *_ = three_accounts()
    view = ProtocolsView({"pool": pool}, {})
    grid = [1400.0, 1600.0, 1900.0, 2000.0, 2900.0, 3100.0]
    m = view.liquidation_map("WETH", grid, 2000.0)
    assert m.columns.tolist()[:3] == ["price", "long_debt", "short_debt"]
    assert m["price"].tolist() == grid
    np.testing.assert_allclose(m["long_debt"], [19_200, 7_200, 0, 0, 0, 0])
    np.testing.assert_allclose(m["short_debt"], [0, 0, 0, 0, 0, 15_000])


def test_the_map_puts_protocols_with_other_oracles_on_one_axis():
    # A protocol whose oracle reads 1,000 now liquidates at 900 (-10%): on an axis whose
    # price is 2,000 that is 1,800. Parts without a current price are left out.
    part = LiquidationPrices(
        np.array([1]), np.array([900.0]), np.array([50.0]), np.array([1]), 1000.0
    )
    nan_part = LiquidationPrices(
        np.array([2]), np.array([900.0]), np.array([70.0]), np.array([1]), float("nan")
    )
    m = liquidation_map_from_prices([part, nan_part], [1799.0, 1801.0], 2000.0)
    assert m["long_debt"].tolist() == [50.0, 0.0]
    assert m["short_debt"].tolist() == [0.0, 0.0]
    assert liquidation_map_from_prices([], [1.0], 2.0)["long_debt"].tolist() == [0.0]


# ------------------------------------------------------------------------------ CDP
def test_cdp_liquidation_prices():
    ledger = Ledger([AssetSpec("WETH", 9), AssetSpec("DAI", 6)])
    feed = FixedPriceFeed({"eth": 2000.0})
    cfg = CdpConfig(
        kind="cdp",
        collateral="WETH",
        stablecoin="DAI",
        price="eth",
        liquidation_ratio=1.5,
        stability_fee=0.0,
        auction=AuctionConfig(),
    )
    cdp = CdpProtocol(ledger, "maker", cfg, feed)
    a, b, c = (ledger.add_holder(n) for n in ("a", "b", "c"))
    for h in (a, b, c):
        ledger.mint(h, 0, 10 * WETH, "test")
    # a: 10 WETH, 10,000 DAI: unsafe below 1.5 * 10,000 / 10 = 1,500. b: 4 WETH, 4,000 DAI:
    # also 1,500. c: collateral only (no debt, never liquidated).
    assert cdp.open_position(a, 10 * WETH, 10_000 * USDC).ok
    assert cdp.open_position(b, 4 * WETH, 4_000 * USDC).ok
    assert cdp.open_or_deposit(c, 5 * WETH).ok
    lp = cdp.liquidation_prices()
    assert lp.holder.tolist() == [a, b]
    np.testing.assert_allclose(lp.price, [1500.0, 1500.0])
    np.testing.assert_allclose(lp.debt_value, [10_000.0, 4_000.0])
    assert lp.side.tolist() == [1, 1] and lp.current_price == 2000.0
    m = ProtocolsView({}, {"maker": cdp}).liquidation_map("WETH", [1499.0, 1501.0], 2000.0)
    np.testing.assert_allclose(m["long_debt"], [14_000.0, 0.0])


# ------------------------------------------------------------------------------ perps
def test_perp_liquidation_prices_long_and_short():
    tiers = [
        MarginTierConfig(max_notional=50_000, maintenance_rate=0.004, max_leverage=125),
        MarginTierConfig(max_notional=250_000, maintenance_rate=0.005, max_leverage=100),
        MarginTierConfig(max_notional=0, maintenance_rate=0.01, max_leverage=50),
    ]
    ledger = Ledger([AssetSpec("USDC", 6)])
    escrow = ledger.add_holder("escrow")
    fees = ledger.add_holder("fees")
    # 0.01 ETH lots, 0.01 USDC ticks: 100 units per tick-lot.
    spec = BookSpec("ETH-PERP", "perp", -1, 0, 1, 100, 0.01, 0.01, 0.0, 0.0, fees)
    engine = MatchingEngine(ledger, [spec], escrow_holder=escrow)
    feed = FixedPriceFeed({"eth": 2000.0})
    cfg = PerpConfig(kind="perp", index_oracle="eth", insurance_fund=0.0, tiers=tiers)
    venue = PerpVenue(ledger, "perp", cfg, [PerpContract(0, spec)], feed, engine)
    venue.update_mark(0)
    a, b = ledger.add_holder("a"), ledger.add_holder("b")
    for h, usdc in ((a, 2_000), (b, 100_000)):
        ledger.mint(h, 0, usdc * USDC, "test")
        assert venue.deposit(h, usdc * USDC).ok
    # a buys 10 ETH from b at 2,000 (cross margin, no fees).
    start = engine.n_trades
    engine.submit_batch(0, -1, int(OrderKind.LIMIT), 200_000, 1000, b)
    engine.submit_batch(0, 1, int(OrderKind.IOC), 200_000, 1000, a)
    venue.apply_tape(engine.trade_arrays(start))
    lp = venue.liquidation_prices(0)
    rows = zip(lp.holder, lp.price, lp.debt_value, lp.side, strict=True)
    got = {int(h): (p, d, s) for h, p, d, s in rows}
    # Long, 2,000 margin: P = (2,000 - 20,000) / (10 * 0.004 - 10) = 18,000 / 9.96, its debt
    # the quote borrowed, 20,000 - 2,000.
    assert got[a][0] == pytest.approx(18_000 / 9.96)
    assert got[a][0] == pytest.approx(liquidation_price(2000.0, 10.0, 2000.0, tiers))
    assert got[a][1:] == (pytest.approx(18_000.0), 1)
    # Short, 100,000 margin: tier 2 (0.5%, amount 50):
    # P = (100,000 + 50 + 20,000) / (10 * 0.005 + 10) = 120,050 / 10.05, debt 10 * P.
    p_short = 120_050 / 10.05
    assert got[b][0] == pytest.approx(p_short)
    assert got[b][0] == pytest.approx(liquidation_price(2000.0, -10.0, 100_000.0, tiers))
    assert got[b][1:] == (pytest.approx(10 * p_short), -1)
    view = ProtocolsView({}, {}, {"perp": venue}, {0: "WETH"})
    m = view.liquidation_map("WETH", [1800.0, 1900.0, 11_900.0, 12_000.0], 2000.0)
    np.testing.assert_allclose(m["long_debt"], [18_000.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(m["short_debt"], [0.0, 0.0, 0.0, 10 * p_short])
    # No base symbol for the contract: the venue is not on the WETH map.
    assert ProtocolsView({}, {}, {"perp": venue}).liquidation_prices("WETH") == []


# ------------------------------------------------------------------------------ the model
def test_metrics_liquidation_map_of_the_liquidation_hunt_scenario():
    scenario = load_scenario("liquidation_hunt").with_overrides(
        {"agents.liquidation_hunter.count": 0}
    )
    model = MarginModel(scenario)
    # The pool's oracle reads the book mid, which exists from the second step on.
    model.step()
    model.step()
    oracle = model.oracles.price("book_mid")
    reference = model.view.reference_price(model.primary_instrument)
    # Every account's USDC debt is WETH * liquidation price * 0.8 (see the scenario), its
    # liquidation price on the map's axis is scaled by reference / oracle.
    debts = {acc.id: acc.debt["USDC"] for acc in scenario.accounts}
    cluster = sum(v for k, v in debts.items() if k.startswith("hunt-"))
    scale = reference / oracle
    grid = [g * scale for g in (1960.0, 1944.0, 1900.0, 1800.0)]
    m = liquidation_map(model, grid)
    # Debt accrues interest for two steps: a relative tolerance of 1e-6 covers it.
    np.testing.assert_allclose(
        m["long_debt"], [0.0, cluster, cluster, sum(debts.values())], rtol=1e-6
    )
    assert (m["short_debt"] == 0).all()
    assert m.equals(model.protocols_view.liquidation_map("WETH", grid, reference))
