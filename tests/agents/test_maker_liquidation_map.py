"""Market makers that read the liquidation map: which side they protect, and by how much."""

import mesa
import numpy as np
import pandas as pd
import pytest

from marginsim.agents.market_maker import MarketMaker, debt_near
from marginsim.config import MarketMakersConfig, ScenarioError
from marginsim.experiments.scenarios import load_scenario
from marginsim.metrics import liquidation_map_from_prices
from marginsim.model import MarginModel
from marginsim.protocols.events import LiquidationPrices


class FakeView:
    """Index and mid at 2000, tick 0.01, lot 0.001, WETH (1) 9 / USDC (0) 6 decimals."""

    index_price = 2000.0
    step = 0

    def __init__(self, balances):
        self._balances = balances

    def tick(self, ins):
        return 0.01

    def lot(self, ins):
        return 0.001

    def reference_price(self, ins):
        return 2000.0

    def asset_decimals(self, asset):
        return {0: 6, 1: 9}[asset]

    def balances(self, holders, asset):
        return np.array([self._balances.get((int(h), asset), 0) for h in holders])

    def base_units_per_lot(self, ins):
        return 1_000_000


# 10 WETH and 20,000 USDC: balanced at 2000, so no inventory skew.
WALLET = {(7, 1): 10 * 10**9, (7, 0): 20_000 * 10**6}


def ladder(parts=(), **cfg):
    """(bid ticks, ask ticks) of one maker's first quote with the given map scan."""
    base = dict(
        count=1,
        levels=2,
        level_size=1.0,
        half_spread=0.001,
        level_spacing=0.002,
        inventory_skew=0.0,
        fair_value_weight=1.0,
    )
    base.update(cfg)
    mm = MarketMaker(
        mesa.Model(),
        MarketMakersConfig(**base),
        holder=7,
        instrument=0,
        base_asset=1,
        quote_asset=0,
        calm_volatility=0.001,
    )
    mm.liquidation_parts = list(parts)
    batch = mm.act(FakeView(WALLET))
    return (
        batch.price_ticks[batch.side == 1].tolist(),
        batch.price_ticks[batch.side == -1].tolist(),
        mm,
    )


def scan(prices, debts, sides, current=2000.0):
    n = len(prices)
    return LiquidationPrices(
        holder=np.arange(n, dtype=np.int64),
        price=np.asarray(prices, dtype=np.float64),
        debt_value=np.asarray(debts, dtype=np.float64),
        side=np.asarray(sides, dtype=np.int64),
        current_price=current,
    )


# Longs liquidated at 1990 (0.5% below: 50,000 of debt) and 1900 (5% below: 1,000,000);
# a short at 2100 (5% above: 1,000,000). A second protocol reads a price of 1000 (its own
# oracle) with a short liquidated at 1005 (0.5% above: 30,000).
PARTS = [
    scan([1990.0, 1900.0, 2100.0], [50_000.0, 1_000_000.0, 1_000_000.0], [1, 1, -1]),
    scan([1005.0], [30_000.0], [-1], current=1000.0),
]


def test_debt_near_matches_the_liquidation_map():
    # Within 1%: long 50,000 (1990 >= 1980), short 30,000 (1005/1000 <= 1.01).
    assert debt_near(PARTS, 0.01) == (50_000.0, 30_000.0)
    # Within 10%: everything on both sides.
    assert debt_near(PARTS, 0.10) == (1_050_000.0, 1_030_000.0)
    # The independent reference: the map's long_debt at 0.99 x and short_debt at 1.01 x.
    m = liquidation_map_from_prices(PARTS, [1980.0, 2020.0], 2000.0)
    assert (m.long_debt[0], m.short_debt[1]) == debt_near(PARTS, 0.01)


def test_unaware_maker_ignores_the_map():
    # fair 2000, half 0.001, spacing 0.002: bids 1998.00 and 1994.00, asks 2002.00, 2006.00.
    bids, asks, _ = ladder(PARTS)
    assert bids == [199800, 199400]
    assert asks == [200200, 200600]


def test_aware_maker_widens_the_threatened_side_only():
    # Depth per side = levels * level_size * fair = 2 * 1 * 2000 = 4,000; threshold 10
    # -> 40,000. Within 1%: long 50,000 >= 40,000 (bids threatened), short 30,000 < 40,000.
    # Bids widen to half 0.001 * 3 = 0.003: 2000 * (1 - 0.003) = 1994.00 and
    # 2000 * (1 - 0.005) = 1990.00; asks as the unaware maker's.
    bids, asks, mm = ladder(
        PARTS,
        liquidation_map_aware=True,
        liquidation_map_distance=0.01,
        liquidation_map_threshold=10.0,
        liquidation_map_widen=3.0,
    )
    assert bids == [199400, 199000]
    assert asks == [200200, 200600]
    assert (mm.map_threatened_bid_steps, mm.map_threatened_ask_steps) == (1, 0)


def test_aware_maker_protects_both_sides_under_a_lower_threshold():
    # Threshold 5 -> 20,000: short 30,000 also threatens the asks: 2000 * 1.003 = 2006.00,
    # 2000 * 1.005 = 2010.00.
    bids, asks, _ = ladder(
        PARTS,
        liquidation_map_aware=True,
        liquidation_map_distance=0.01,
        liquidation_map_threshold=5.0,
        liquidation_map_widen=3.0,
    )
    assert bids == [199400, 199000]
    assert asks == [200600, 201000]


def test_aware_maker_pulls_the_threatened_side():
    bids, asks, _ = ladder(
        PARTS,
        liquidation_map_aware=True,
        liquidation_map_distance=0.01,
        liquidation_map_threshold=10.0,
        liquidation_map_action="pull",
    )
    assert bids == []
    assert asks == [200200, 200600]


def test_far_or_small_clusters_change_nothing():
    # Distance 0.1%: nothing within (1990 is 0.5% away) -> the unaware ladder.
    far = ladder(PARTS, liquidation_map_aware=True, liquidation_map_distance=0.001)
    # Threshold 100 -> 400,000 against 50,000 and 30,000 near -> the unaware ladder.
    small = ladder(
        PARTS,
        liquidation_map_aware=True,
        liquidation_map_distance=0.01,
        liquidation_map_threshold=100.0,
    )
    assert far[:2] == small[:2] == ([199800, 199400], [200200, 200600])


def test_config_rejects_a_widen_factor_below_one():
    with pytest.raises(ScenarioError) as err:
        load_scenario("default").with_overrides({"agents.market_makers.liquidation_map_widen": 0.5})
    assert "agents.market_makers.liquidation_map_widen" in dict(err.value.problems)


def _metrics(**maker_cfg):
    overrides = {"run.steps": 60, "agents.noise.count": 300}
    overrides.update({f"agents.market_makers.{k}": v for k, v in maker_cfg.items()})
    model = MarginModel(load_scenario("default").with_overrides(overrides))
    model.run()
    return model, model.metrics_frame()


def test_default_run_is_unchanged_when_the_option_is_off_or_never_fires():
    _, off = _metrics()
    # Aware, but no cluster can reach 10^12 times a maker's depth: reading the map alone
    # must not change anything (no draws, no state).
    aware_model, never = _metrics(liquidation_map_aware=True, liquidation_map_threshold=1e12)
    pd.testing.assert_frame_equal(off, never)
    assert all(m.map_threatened_bid_steps == 0 for m in aware_model.market_makers)


def test_aware_makers_react_to_the_default_books_debt():
    # Threshold tiny and 10% distance: the default scenario's loopers and vaults sit
    # within 10% below, so the makers protect their bids every step and the book differs.
    _, off = _metrics()
    model, on = _metrics(
        liquidation_map_aware=True,
        liquidation_map_distance=0.1,
        liquidation_map_threshold=1e-6,
        liquidation_map_widen=5.0,
    )
    aware = [m for m in model.market_makers if m.config.liquidation_map_aware]
    assert len(aware) == 5  # the spot makers; the perp makers keep their own section
    assert min(m.map_threatened_bid_steps for m in aware) > 0
    assert not off["best_bid"].equals(on["best_bid"])
