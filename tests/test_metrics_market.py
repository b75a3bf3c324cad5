"""Market-wide metrics (issue #8) on hand-built states with hand-computed values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from marginsim.config import (
    AuctionConfig,
    CdpConfig,
    LendingConfig,
    MarginTierConfig,
    PerpConfig,
    ReserveConfig,
    Scenario,
    ScenarioError,
)
from marginsim.ledger import AssetSpec, Ledger
from marginsim.market.engine import BookSpec, MatchingEngine, OrderKind
from marginsim.metrics import (
    LiquidationMapRecorder,
    LiquidationRounds,
    account_leverage,
    aggregate_leverage,
    book_depth,
    liquidatable_debt,
    liquidation_distances,
    liquidation_map_from_prices,
    market_wide_metrics,
    wamm,
    weighted_quantile,
    weighted_quantiles,
)
from marginsim.protocols.cdp import CdpProtocol
from marginsim.protocols.events import LiquidationPrices
from marginsim.protocols.lending import FixedPriceFeed, LendingPool
from marginsim.protocols.perp import PerpContract, PerpVenue
from marginsim.protocols.view import ProtocolsView

WETH = 10**9
USDC = 10**6


# ------------------------------------------------------------------------------ fixtures
def lending_state() -> tuple[LendingPool, int, int, int]:
    """WETH at 2,000; WETH threshold 0.8, USDC threshold 0.75.

    a: 10 WETH against 12,000 USDC: liquidated at 12,000 / (10 * 0.8) = 1,500.
    b: 5 WETH against 7,700 USDC: at 7,700 / (5 * 0.8) = 1,925 (within a 5% fall).
    c: 20,000 USDC against 5 WETH (short): at 20,000 * 0.75 / 5 = 3,000, debt 15,000 there.
    """
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
    lender = pool.ledger.add_holder("lender")
    pool.ledger.mint(lender, pool.reserve("WETH").asset, 100 * WETH, "test")
    assert pool.supply(lender, "WETH", 100 * WETH).ok
    units = {"WETH": WETH, "USDC": USDC}

    def place(name: str, collateral: dict, debt: dict) -> int:
        h = pool.ledger.add_holder(name)
        for sym, amount in collateral.items():
            pool.ledger.mint(h, pool.reserve(sym).asset, int(amount * units[sym]), "test")
        pool.open_position(
            h,
            {s: int(x * units[s]) for s, x in collateral.items()},
            {s: int(x * units[s]) for s, x in debt.items()},
            enforce_ltv=False,
        )
        return h

    a = place("a", {"WETH": 10}, {"USDC": 12_000})
    b = place("b", {"WETH": 5}, {"USDC": 7_700})
    c = place("c", {"USDC": 20_000}, {"WETH": 5})
    return pool, a, b, c


TIERS = [
    MarginTierConfig(max_notional=50_000, maintenance_rate=0.004, max_leverage=125),
    MarginTierConfig(max_notional=250_000, maintenance_rate=0.005, max_leverage=100),
    MarginTierConfig(max_notional=0, maintenance_rate=0.01, max_leverage=50),
]


def perp_state() -> tuple[PerpVenue, int, int]:
    """a long 10 ETH at 2,000 with 2,000 USDC margin; b short 10 ETH with 100,000 (cross)."""
    ledger = Ledger([AssetSpec("USDC", 6)])
    escrow = ledger.add_holder("escrow")
    fees = ledger.add_holder("fees")
    spec = BookSpec("ETH-PERP", "perp", -1, 0, 1, 100, 0.01, 0.01, 0.0, 0.0, fees)
    engine = MatchingEngine(ledger, [spec], escrow_holder=escrow)
    cfg = PerpConfig(kind="perp", index_oracle="eth", insurance_fund=0.0, tiers=TIERS)
    venue = PerpVenue(
        ledger, "perp", cfg, [PerpContract(0, spec)], FixedPriceFeed({"eth": 2000.0}), engine
    )
    venue.update_mark(0)
    a, b = ledger.add_holder("a"), ledger.add_holder("b")
    for h, usdc in ((a, 2_000), (b, 100_000)):
        ledger.mint(h, 0, usdc * USDC, "test")
        assert venue.deposit(h, usdc * USDC).ok
    start = engine.n_trades
    engine.submit_batch(0, -1, int(OrderKind.LIMIT), 200_000, 1000, b)
    engine.submit_batch(0, 1, int(OrderKind.IOC), 200_000, 1000, a)
    venue.apply_tape(engine.trade_arrays(start))
    assert venue.mark_price(0) == 2000.0
    return venue, a, b


def spot_book() -> MatchingEngine:
    """A WETH-USDC book (tick 1 USDC, lot 0.01 WETH) with mid 2,000.

    Bids: 1 WETH at 1,990, 2 at 1,960, 3 at 1,900. Asks: 1 at 2,010, 0.5 at 2,050, 4 at 2,200.
    """
    ledger = Ledger([AssetSpec("USDC", 6), AssetSpec("WETH", 9)])
    escrow, fees, maker = (ledger.add_holder(n) for n in ("escrow", "fees", "maker"))
    ledger.mint(maker, 0, 100_000 * USDC, "test")
    ledger.mint(maker, 1, 100 * WETH, "test")
    # One lot is 0.01 WETH = 10^7 units; one lot at one tick costs 0.01 USDC = 10^4 units.
    spec = BookSpec("WETH-USDC", "spot", 1, 0, 10**7, 10**4, 1.0, 0.01, 0.0, 0.0, fees)
    engine = MatchingEngine(ledger, [spec], escrow_holder=escrow)
    for side, price, lots in (
        (1, 1990, 100),
        (1, 1960, 200),
        (1, 1900, 300),
        (-1, 2010, 100),
        (-1, 2050, 50),
        (-1, 2200, 400),
    ):
        assert engine.submit_limit(0, side, price, lots, maker).accepted
    return engine


def fake_model(view: ProtocolsView, engine: MatchingEngine | None) -> SimpleNamespace:
    """What the market-wide metrics read of a model, around hand-built venues."""
    return SimpleNamespace(
        protocols_view=view,
        engine=engine,
        primary_instrument=0 if engine is not None else -1,
        index_price=2000.0,
        scenario=SimpleNamespace(exogenous=SimpleNamespace(asset="WETH")),
        view=SimpleNamespace(reference_price=lambda instrument: 2000.0),
    )


# ------------------------------------------------------------------------------ helpers
def test_weighted_quantile_is_the_inverted_cdf():
    # Values 1, 2, 3 with weights 1, 1, 2 (cumulative shares 0.25, 0.5, 1): q <= 0.25 -> 1,
    # q in (0.25, 0.5] -> 2, above -> 3.
    v, w = np.array([3.0, 1.0, 2.0]), np.array([2.0, 1.0, 1.0])
    assert weighted_quantiles(v, w, [0.1, 0.25, 0.3, 0.5, 0.51, 1.0]) == [1, 1, 2, 2, 3, 3]
    # Unweighted: the same as numpy's inverted-CDF quantile.
    x = np.array([5.0, 1.0, np.inf, 2.0, 4.0])
    for q in (0.1, 0.5, 0.8, 0.99):
        assert weighted_quantile(x, None, q) == np.quantile(x, q, method="inverted_cdf")
    # NaN values and non-positive weights are dropped; nothing left gives NaN.
    assert weighted_quantile(np.array([np.nan, 7.0]), np.array([5.0, 1.0]), 0.5) == 7.0
    assert math.isnan(weighted_quantile(np.array([1.0]), np.array([0.0]), 0.5))


def test_leverage_helpers():
    # Notional 30 on equity 10 is 3x; equity <= 0 is infinitely levered.
    lev = account_leverage(np.array([30.0, 5.0, 5.0]), np.array([10.0, 0.0, -1.0]))
    assert lev.tolist() == [3.0, math.inf, math.inf]
    assert aggregate_leverage(np.array([30.0, 10.0]), np.array([10.0, 10.0])) == 2.0
    assert math.isnan(aggregate_leverage(np.array([30.0]), np.array([-1.0])))
    assert math.isnan(aggregate_leverage(np.zeros(0), np.zeros(0)))
    assert wamm(np.array([100.0, 300.0]), np.array([1.0, 15.0])) == pytest.approx(0.04)
    assert math.isnan(wamm(np.zeros(0), np.zeros(0)))


# ------------------------------------------------------------------------------ exposures
def test_lending_account_exposures():
    pool, a, b, c = lending_state()
    exp = pool.account_exposures()
    got = {
        int(h): (n, e, d, m)
        for h, n, e, d, m in zip(
            exp.holder, exp.notional, exp.equity, exp.debt, exp.maintenance, strict=True
        )
    }
    assert set(got) == {a, b, c}  # the lender and the initial supplier owe nothing
    # a: 10 WETH = 20,000, debt 12,000, maintenance 20,000 * (1 - 0.8) = 4,000.
    np.testing.assert_allclose(got[a], (20_000, 8_000, 12_000, 4_000))
    # b: 5 WETH = 10,000, debt 7,700, maintenance 2,000.
    np.testing.assert_allclose(got[b], (10_000, 2_300, 7_700, 2_000))
    # c: 20,000 USDC, debt 5 WETH = 10,000, maintenance 20,000 * 0.25 = 5,000.
    np.testing.assert_allclose(got[c], (20_000, 10_000, 10_000, 5_000))


def test_cdp_account_exposures_and_locked_collateral():
    ledger = Ledger([AssetSpec("WETH", 9), AssetSpec("DAI", 6)])
    cfg = CdpConfig(
        kind="cdp",
        collateral="WETH",
        stablecoin="DAI",
        price="eth",
        liquidation_ratio=1.5,
        stability_fee=0.0,
        auction=AuctionConfig(),
    )
    cdp = CdpProtocol(ledger, "maker", cfg, FixedPriceFeed({"eth": 2000.0}))
    a, b = ledger.add_holder("a"), ledger.add_holder("b")
    for h in (a, b):
        ledger.mint(h, 0, 10 * WETH, "test")
    assert cdp.open_position(a, 10 * WETH, 10_000 * USDC).ok
    assert cdp.open_or_deposit(b, 5 * WETH).ok  # no debt: not leveraged
    exp = cdp.account_exposures()
    assert exp.holder.tolist() == [a]
    # 10 WETH at 2,000 against 10,000 DAI; unsafe when equity < 20,000 * (1 - 1 / 1.5).
    np.testing.assert_allclose(
        [exp.notional[0], exp.equity[0], exp.debt[0], exp.maintenance[0]],
        [20_000, 10_000, 10_000, 20_000 / 3],
    )
    assert cdp.locked_collateral == 15.0
    view = ProtocolsView({}, {"maker": cdp})
    assert view.total_value_locked() == {"maker": 30_000.0}
    # Collateral at the liquidation price: 10 WETH at 1.5 * 10,000 / 10 = 1,500.
    lp = cdp.liquidation_prices()
    np.testing.assert_allclose(lp.collateral_value, [15_000.0])


def test_perp_account_exposures_match_the_venue_metrics():
    venue, a, b = perp_state()
    exp = venue.account_exposures()
    got = {int(h): i for i, h in enumerate(exp.holder)}
    # a: 10 ETH at mark 2,000 = 20,000 notional, margin balance 2,000, margin debt 18,000,
    # maintenance 20,000 * 0.4% = 80. b: the same notional, 100,000 margin, no margin debt.
    i, j = got[a], got[b]
    np.testing.assert_allclose(
        [exp.notional[i], exp.equity[i], exp.debt[i], exp.maintenance[i]],
        [20_000, 2_000, 18_000, 80],
    )
    np.testing.assert_allclose(
        [exp.notional[j], exp.equity[j], exp.debt[j], exp.maintenance[j]],
        [20_000, 100_000, 0, 80],
    )
    m = venue.metrics()
    assert exp.debt.sum() == pytest.approx(m["margin_debt"])
    assert wamm(exp.notional, exp.maintenance) == pytest.approx(m["wamm"])
    # Collateral behind each position on the map: its margin.
    lp = venue.liquidation_prices(0)
    coll = dict(zip(lp.holder.tolist(), lp.collateral_value.tolist(), strict=True))
    assert coll == {a: 2_000.0, b: 100_000.0}
    # TVL: the margin the venue holds (2,000 + 100,000) plus its (empty) insurance fund.
    view = ProtocolsView({}, {}, {"perp": venue}, {0: "WETH"})
    assert view.total_value_locked() == {"perp": 102_000.0}


# ------------------------------------------------------------------------------ the map
def test_liquidation_map_collateral_columns():
    pool, *_ = lending_state()
    view = ProtocolsView({"pool": pool}, {})
    m = view.liquidation_map("WETH", [1400.0, 1600.0, 1950.0, 2900.0, 3100.0], 2000.0)
    assert m.columns.tolist() == [
        "price",
        "long_debt",
        "short_debt",
        "long_collateral",
        "short_collateral",
    ]
    # Longs at or above the grid price: a (1,500) and b (1,925) at 1,400; b at 1,600.
    np.testing.assert_allclose(m["long_debt"], [19_700, 7_700, 0, 0, 0])
    # Their collateral at their liquidation prices: 10 * 1,500 = 15,000 and 5 * 1,925 =
    # 9,625.
    np.testing.assert_allclose(m["long_collateral"], [24_625, 9_625, 0, 0, 0])
    # The short c (3,000) counts at 3,100 only: 15,000 of debt, its 20,000 USDC collateral.
    np.testing.assert_allclose(m["short_debt"], [0, 0, 0, 0, 15_000])
    np.testing.assert_allclose(m["short_collateral"], [0, 0, 0, 0, 20_000])


def test_map_collateral_is_nan_when_a_protocol_does_not_report_it():
    part = LiquidationPrices(
        np.array([1]), np.array([1900.0]), np.array([50.0]), np.array([1]), 2000.0
    )
    m = liquidation_map_from_prices([part], [1800.0, 2000.0], 2000.0)
    assert m["long_debt"].tolist() == [50.0, 0.0]
    assert m["long_collateral"].isna().all()


# ------------------------------------------------------------------------------ distances
def test_liquidation_distances_and_liquidatable_debt():
    pool, *_ = lending_state()
    parts = ProtocolsView({"pool": pool}, {}).liquidation_prices("WETH")
    dist, debt = liquidation_distances(parts)
    order = np.argsort(dist)
    # a: 1 - 1,500 / 2,000 = 0.25; b: 1 - 1,925 / 2,000 = 0.0375; c: 3,000 / 2,000 - 1 = 0.5.
    np.testing.assert_allclose(dist[order], [0.0375, 0.25, 0.5])
    np.testing.assert_allclose(debt[order], [7_700, 12_000, 15_000])
    # Within 5%: b only (1,925 >= 1,900); within 30%: a and b (>= 1,400); within 60%: all
    # three (c: 3,000 <= 3,200).
    assert liquidatable_debt(parts, 0.05) == pytest.approx(7_700)
    assert liquidatable_debt(parts, 0.3) == pytest.approx(19_700)
    assert liquidatable_debt(parts, 0.6) == pytest.approx(34_700)
    # An account already liquidatable is at distance 0.
    under = LiquidationPrices(
        np.array([1, 2]),
        np.array([2100.0, 1900.0]),
        np.array([5.0, 6.0]),
        np.array([1, -1]),
        2000.0,
    )
    assert liquidation_distances([under])[0].tolist() == [0.0, 0.0]


def test_book_depth_within_2_and_5_percent():
    engine = spot_book()
    depth = book_depth(SimpleNamespace(engine=engine, primary_instrument=0), (0.02, 0.05))
    # 2%: bids >= 1,960 (1 + 2 WETH), asks <= 2,040 (1 WETH).
    # 5%: bids >= 1,900 (6 WETH), asks <= 2,100 (1.5 WETH); quote 1,990 + 3,920 + 5,700 =
    # 11,610 bid and 2,010 + 1,025 = 3,035 ask.
    np.testing.assert_allclose(depth[0.02], (3.0, 1.0, 1_990 + 3_920, 2_010))
    np.testing.assert_allclose(depth[0.05], (6.0, 1.5, 11_610, 3_035))
    # The engine's own 1% measure agrees with the same rule.
    assert engine.depth(0, 0.02) == (300, 100)


# ------------------------------------------------------------------------------ all columns
def test_market_wide_metrics_of_a_hand_built_market():
    pool, *_ = lending_state()
    venue, *_ = perp_state()
    view = ProtocolsView({"pool": pool}, {}, {"perp": venue}, {0: "WETH"})
    got = market_wide_metrics(fake_model(view, spot_book()))
    # Margin debt: lending 12,000 + 7,700 + 10,000; perp 18,000 (a) + 0 (b).
    assert got["margin_debt_lending"] == pytest.approx(29_700)
    assert got["margin_debt_cdp"] == 0.0
    assert got["margin_debt_perp"] == pytest.approx(18_000)
    assert got["margin_debt"] == pytest.approx(47_700)
    # Notional 20,000 + 10,000 + 20,000 + 20,000 + 20,000 = 90,000 on equity 8,000 + 2,300
    # + 10,000 + 2,000 + 100,000 = 122,300.
    assert got["leverage"] == pytest.approx(90_000 / 122_300)
    # Per account 2.5, 10,000 / 2,300 = 4.35, 2, 10, 0.2: sorted 0.2, 2, 2.5, 4.35, 10;
    # the median is the 3rd of 5, p90 and p99 the 5th.
    assert got["leverage_p50"] == pytest.approx(2.5)
    assert got["leverage_p90"] == pytest.approx(10.0)
    assert got["leverage_p99"] == pytest.approx(10.0)
    # Maintenance 4,000 + 2,000 + 5,000 + 80 + 80 = 11,160 over 90,000.
    assert got["wamm"] == pytest.approx(11_160 / 90_000)
    # Distances with their debts: perp a 1 - (18,000 / 9.96) / 2,000 = 0.0964 (18,000),
    # b 0.0375 (7,700), a 0.25 (12,000), c 0.5 (15,000), perp b 120,050 / 10.05 / 2,000 - 1
    # = 4.97 (debt 10 * 11,945.27 = 119,452.7). Total 172,152.7: p10 is at 17,215 -> the
    # second (cumulative 7,700, 25,700) = 0.0964; p50 at 86,076 -> the last = 4.97.
    p_short = 120_050 / 10.05
    assert got["distance_to_liquidation_p10"] == pytest.approx(1 - 18_000 / 9.96 / 2000)
    assert got["distance_to_liquidation_p50"] == pytest.approx(p_short / 2000 - 1)
    # Depth of the spot book (see test_book_depth_within_2_and_5_percent).
    assert (got["depth_bid_2pct"], got["depth_ask_2pct"]) == pytest.approx((3.0, 1.0))
    assert (got["depth_bid_5pct"], got["depth_ask_5pct"]) == pytest.approx((6.0, 1.5))
    # Within 5% of 2,000: lending b (1,925, 7,700) and the perp long (1,807 < 1,900: no).
    assert got["liquidatable_debt_5pct"] == pytest.approx(7_700)
    assert got["leverage_to_depth"] == pytest.approx(7_700 / (11_610 + 3_035))
    # TVL: the pool holds 100 WETH (200,000) + 1,000,000 + 20,000 USDC supplied and 10 WETH
    # + 5 WETH of collateral (30,000); the venue 102,000.
    assert got["pool_tvl"] == pytest.approx(200_000 + 1_000_000 + 20_000 + 30_000)
    assert got["perp_tvl"] == pytest.approx(102_000)


def test_market_wide_metrics_without_accounts_or_book():
    got = market_wide_metrics(fake_model(ProtocolsView({}, {}), None))
    assert got["margin_debt"] == 0.0
    for key in ("leverage", "leverage_p50", "wamm", "distance_to_liquidation_p10"):
        assert math.isnan(got[key]), key
    assert math.isnan(got["depth_bid_5pct"]) and math.isnan(got["leverage_to_depth"])
    assert got["liquidatable_debt_5pct"] == 0.0


# ------------------------------------------------------------------------------ recorders
def test_liquidation_map_recorder_every_k_steps():
    pool, *_ = lending_state()
    model = fake_model(ProtocolsView({"pool": pool}, {}), None)
    recorder = LiquidationMapRecorder(every=2, half_width=0.3, points=3)
    for step in range(4):
        recorder.record(model, step)
    frame = recorder.frame()
    assert frame.columns.tolist() == list(LiquidationMapRecorder.COLUMNS)
    # Steps 0 and 2, grid 2,000 * (0.7, 1, 1.3) = 1,400, 2,000, 2,600.
    assert frame["step"].tolist() == [0, 0, 0, 2, 2, 2]
    assert frame["price"].tolist() == pytest.approx([1400.0, 2000.0, 2600.0] * 2)
    # a (1,500) and b (1,925) at 1,400; nothing at or above 2,000; the short c (3,000) is
    # beyond 2,600.
    assert frame["long_debt"].tolist() == pytest.approx([19_700, 0, 0] * 2)
    assert (frame["short_debt"] == 0).all()
    off = LiquidationMapRecorder(every=0, half_width=0.3, points=61)
    off.record(model, 0)
    assert off.frame().empty and off.frame().dtypes.to_dict() == frame.dtypes.to_dict()


def test_liquidation_rounds_assign_rows_to_rounds():
    p = SimpleNamespace(liquidation_count=0)
    rounds = LiquidationRounds()
    # Step 3: round 0 writes two rows, round 1 one, round 2 none. Step 4: round 0 one row.
    for step, writes in ((3, [2, 1, 0]), (4, [1, 0])):
        for r, n in enumerate(writes):
            rounds.mark({"p": p}, step, r)
            p.liquidation_count += n
    frame = pd.DataFrame({"step": [3, 3, 3, 4, 9]})  # the last row was written elsewhere
    assert rounds.rounds("p", frame).tolist() == [0, 0, 1, 0, -1]
    assert rounds.rounds("other", frame).tolist() == [-1] * 5


# ------------------------------------------------------------------------------ config
def test_metrics_section_defaults_and_validation():
    m = Scenario().metrics
    assert (m.liquidation_map_every, m.liquidation_map_range, m.liquidation_map_points) == (
        10,
        0.3,
        61,
    )
    assert "[metrics]" in Scenario().to_toml()
    for field, value in (
        ("liquidation_map_every", -1),
        ("liquidation_map_range", 1.0),
        ("liquidation_map_range", 0.0),
        ("liquidation_map_points", 1),
    ):
        with pytest.raises(ScenarioError) as info:
            Scenario(metrics={field: value})
        assert [p[0] for p in info.value.problems] == [f"metrics.{field}"]
        assert str(value) in str(info.value)


# ------------------------------------------------------------------------------ the kernel
def _reference_liquidation_prices(pool: LendingPool, symbol: str) -> tuple[np.ndarray, ...]:
    """The array formula the compiled scan of LendingPool.liquidation_prices replaced."""
    res = pool.reserve(symbol)
    p0 = pool.prices.price(res.price_ref)
    ids = pool.accounts
    thr = np.array([r.liquidation_threshold for r in pool.reserves], dtype=np.float64)
    coll_unit = np.array(
        [
            pool.liquidity_index(r.symbol) / r.unit * pool.prices.price(r.price_ref)
            for r in pool.reserves
        ]
    )
    debt_unit = np.array(
        [
            pool.borrow_index(r.symbol) / r.unit * pool.prices.price(r.price_ref)
            for r in pool.reserves
        ]
    )
    bal = pool.ledger.balances
    scaled_coll = bal[np.ix_(ids, [r.receipt for r in pool.reserves])].astype(np.float64)
    scaled_debt = bal[np.ix_(ids, [r.debt for r in pool.reserves])].astype(np.float64)
    held = (scaled_coll > 0) & (thr > 0)
    coll_values = np.where(held, scaled_coll * (coll_unit * thr), 0.0)
    debt_values = np.where(scaled_debt > 0, scaled_debt * debt_unit, 0.0)
    other = np.ones(len(pool.reserves), dtype=bool)
    other[res.index] = False
    a_other = coll_values[:, other].sum(axis=1)
    d_other = debt_values[:, other].sum(axis=1)
    c = coll_values[:, res.index] / p0
    d = debt_values[:, res.index] / p0
    k = c - d
    rhs = d_other - a_other
    with np.errstate(divide="ignore", invalid="ignore"):
        price = np.where(k != 0.0, rhs / np.where(k != 0.0, k, 1.0), np.inf)
    long_ = ((k > 0) & (price > 0)) | ((k == 0) & (rhs > 0))
    short = (k < 0) & (d > 0)
    price = np.where(short & (price < 0), 0.0, price)
    keep = long_ | short
    p = price[keep]
    debt_at = d_other[keep] + np.where(d[keep] > 0, d[keep] * np.where(np.isinf(p), 0, p), 0)
    return ids[keep], p, debt_at


def test_compiled_liquidation_price_scan_equals_the_array_formula_bit_for_bit():
    # Four reserves with different thresholds and prices, 600 accounts with random mixes of
    # collateral and debt (some short WETH, some in two debts at once); the healthy ones open.
    symbols = {"WETH": 9, "WBTC": 8, "USDC": 6, "DAI": 6}
    prices = {"eth": 2000.0, "btc": 30_000.0, "dai": 0.999}
    cfg = LendingConfig(
        kind="lending",
        reserves={
            "WETH": ReserveConfig(price="eth", ltv=0.75, liquidation_threshold=0.8),
            "WBTC": ReserveConfig(price="btc", ltv=0.7, liquidation_threshold=0.75),
            "USDC": ReserveConfig(price=1.0, ltv=0.8, liquidation_threshold=0.85),
            "DAI": ReserveConfig(price="dai", ltv=0.0, liquidation_threshold=0.0),
        },
    )
    pool = LendingPool.standalone(cfg, symbols, FixedPriceFeed(prices))
    lender = pool.ledger.add_holder("lender")
    for sym, dec in symbols.items():
        pool.ledger.mint(lender, pool.reserve(sym).asset, 10**6 * 10**dec, "test")
        assert pool.supply(lender, sym, 10**6 * 10**dec).ok
    rng = np.random.default_rng(3)
    value = {"WETH": 2000.0, "WBTC": 30_000.0, "USDC": 1.0, "DAI": 0.999}
    for i in range(600):
        h = pool.ledger.add_holder(f"acc{i}")
        coll, debt = {}, {}
        for sym, dec in symbols.items():
            if rng.random() < 0.5:
                coll[sym] = int(rng.uniform(1_000, 50_000) / value[sym] * 10**dec)
                pool.ledger.mint(h, pool.reserve(sym).asset, coll[sym], "test")
            elif rng.random() < 0.5:
                debt[sym] = int(rng.uniform(1_000, 40_000) / value[sym] * 10**dec)
        try:  # accounts that would open below a health factor of 1 are refused: skip them
            pool.open_position(h, coll, debt, enforce_ltv=False)
        except ValueError:
            continue
    for symbol in ("WETH", "WBTC"):
        lp = pool.liquidation_prices(symbol)
        ids, price, debt_at = _reference_liquidation_prices(pool, symbol)
        assert len(lp) > 30
        assert np.array_equal(lp.holder, ids)
        assert np.array_equal(lp.price, price)
        assert np.array_equal(lp.debt_value, debt_at)


def _reference_perp_liquidation_prices(venue: PerpVenue, k: int) -> tuple[np.ndarray, ...]:
    """The array formula the compiled perp scan replaced (reads the venue's arrays)."""
    n = venue._n
    rows = np.flatnonzero(venue._size[:n, k] != 0)
    u = float(venue.unit)
    size = venue._size[rows, k].astype(np.float64) * float(venue._lot[k])
    cost = venue._cost[rows, k].astype(np.float64) / u
    marks = np.where(np.isfinite(venue._mark), venue._mark, 0.0)
    upnl_all = venue._size[rows].astype(np.float64) * marks * venue._vpl - venue._cost[rows]
    upnl_all = np.where(venue._size[rows] != 0, upnl_all, 0.0)
    upnl_other = upnl_all.sum(axis=1) - upnl_all[:, k]
    cross = venue._wallet[rows] + venue._iso[rows].sum(axis=1) + upnl_other
    margin = np.where(venue._isolated[rows], venue._iso[rows, k], cross).astype(np.float64) / u
    qty = np.abs(size)
    caps = np.array(venue.tiers.caps, dtype=np.float64)
    lower = np.concatenate([[-np.inf], caps[:-1]])
    price = np.zeros(rows.size)
    found = np.zeros(rows.size, dtype=bool)
    for i in range(caps.shape[0]):
        with np.errstate(divide="ignore", invalid="ignore"):
            p_i = (margin + venue.tiers.amounts[i] - cost) / (qty * venue.tiers.rates[i] - size)
        notional = qty * p_i
        ok = ~found & (p_i > 0) & (notional <= caps[i]) & (notional > lower[i])
        price[ok] = p_i[ok]
        found |= ok
    keep = found | (size < 0)
    return venue._holder[rows][keep], price[keep], margin[keep]


def test_compiled_perp_liquidation_scan_equals_the_array_formula_bit_for_bit():
    # Three contracts on one venue; 60 accounts (a third isolated) trade random sizes in
    # each at prices off the index, so the other contracts' unrealised PnL matters.
    ledger = Ledger([AssetSpec("USDC", 6)])
    escrow, fees, maker = (ledger.add_holder(n) for n in ("escrow", "fees", "maker"))
    specs = [
        BookSpec(f"P{i}-PERP", "perp", -1, 0, 1, 100, 0.01, 0.01, 0.0, 0.0, fees) for i in range(3)
    ]
    engine = MatchingEngine(ledger, specs, escrow_holder=escrow)
    cfg = PerpConfig(kind="perp", index_oracle="eth", insurance_fund=0.0, tiers=TIERS)
    contracts = [PerpContract(i, spec) for i, spec in enumerate(specs)]
    feed = FixedPriceFeed({"eth": 2000.0})
    venue = PerpVenue(ledger, "perp", cfg, contracts, feed, engine)
    venue.update_mark(0)
    ledger.mint(maker, 0, 10**9 * USDC, "test")
    assert venue.deposit(maker, 10**9 * USDC).ok
    rng = np.random.default_rng(5)
    for i in range(60):
        h = ledger.add_holder(f"t{i}")
        margin = int(rng.uniform(2_000, 40_000))
        ledger.mint(h, 0, margin * USDC, "test")
        assert venue.deposit(h, margin * USDC).ok
        if i % 3 == 0:
            assert venue.set_margin_mode(h, "isolated").ok
        for k in range(3):
            if rng.random() < 0.3:
                continue
            side = 1 if rng.random() < 0.5 else -1
            ticks = int(rng.uniform(1_900, 2_100) * 100)
            lots = int(rng.integers(10, 500))
            start = engine.n_trades
            engine.submit_batch(k, -side, int(OrderKind.LIMIT), ticks, lots, maker)
            engine.submit_batch(k, side, int(OrderKind.IOC), ticks, lots, h)
            venue.apply_tape(engine.trade_arrays(start))
            engine.cancel_all(maker, k)
    for k in range(3):
        lp = venue.liquidation_prices(k)
        holders, price, margin = _reference_perp_liquidation_prices(venue, k)
        assert len(lp) > 20
        assert np.array_equal(lp.holder, holders)
        assert np.array_equal(lp.price, price)
        assert np.array_equal(lp.collateral_value, np.maximum(margin, 0.0))
