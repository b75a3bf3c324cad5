"""The liquidation hunter on a hand-built book and map (hand-computed plan, orders, P&L)."""

from __future__ import annotations

import mesa
import numpy as np
import pytest

from marginsim.agents.hunter import ATTACK_COLUMNS, LiquidationHunter
from marginsim.config import LiquidationHunterConfig, ScenarioError
from marginsim.experiments.scenarios import load_scenario
from marginsim.market.engine import OrderKind
from marginsim.metrics import liquidation_map_from_prices
from marginsim.protocols.events import LiquidationPrices

BASE, QUOTE = 1, 0
HOLDER = 7


class StubView:
    """A market view of one book with whole-unit lots and no fees.

    Bids: 10 lots each at 1,999, 1,990, 1,980, 1,950 and 1,900; asks: 50 lots at 2,001.
    Assets have 0 decimals, so balances are in whole units.
    """

    def __init__(self) -> None:
        self.step = 0
        self.bids = np.array(
            [[199_900, 10], [199_000, 10], [198_000, 10], [195_000, 10], [190_000, 10]]
        )
        self.asks = np.array([[200_100, 50]])
        self.wallet = {BASE: 600, QUOTE: 0}

    def mid_price(self, instrument: int) -> float:
        return 2000.0

    def reference_price(self, instrument: int) -> float:
        return 2000.0

    def best_ask(self, instrument: int) -> int:
        return 200_100

    def tick(self, instrument: int) -> float:
        return 0.01

    def lot(self, instrument: int) -> float:
        return 1.0

    def base_units_per_lot(self, instrument: int) -> int:
        return 1

    def asset_decimals(self, asset: int) -> int:
        return 0

    def balances(self, holders: np.ndarray, asset: int) -> np.ndarray:
        return np.array([self.wallet[asset]], dtype=np.int64)

    def l2(self, instrument: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.bids[:n], self.asks[:n]

    def market_order_cost(self, instrument: int, side: int, qty: int):
        levels = self.asks if side > 0 else self.bids
        left, filled, notional = qty, 0, 0.0
        for p, q in levels.tolist():
            k = min(q, left)
            filled, notional, left = filled + k, notional + k * p / 100, left - k
        return filled, int(round(notional)), notional / filled if filled else None


class StubProtocols:
    """One long account owing 1,000,000 that is liquidated at 1,986 (protocol price 2,000)."""

    def liquidation_map(self, symbol, grid, reference):
        part = LiquidationPrices(
            np.array([1]), np.array([1986.0]), np.array([1_000_000.0]), np.array([1]), 2000.0
        )
        return liquidation_map_from_prices([part], grid, reference)


def make_hunter(**cfg) -> tuple[LiquidationHunter, StubView]:
    params = (
        dict(
            count=1,
            grid_step=0.0025,
            max_push=0.1,
            min_cluster_debt=500_000.0,
            overshoot=0.0,
            cascade_share=0.5,
            liquidation_bonus=0.0,
            profit_margin=1.0,
            hold_steps=3,
            cooldown_steps=5,
        )
        | cfg
    )
    config = LiquidationHunterConfig(**params)
    hunter = LiquidationHunter(
        mesa.Model(), config, HOLDER, 0, BASE, QUOTE, "WETH", StubProtocols()
    )
    return hunter, StubView()


def test_plan_is_computed_from_the_map_and_the_book_by_hand():
    hunter, view = make_hunter()
    plan = hunter.plan(view)
    assert plan is not None
    # Grid 2,000 * (1 - 0.0025 j): 1,990 (j=2) is above 1,986, 1,985 (j=3) is the first
    # price at which the 1,000,000 of debt is liquidatable; no overshoot: target 1,985.
    assert plan.cluster_price == pytest.approx(1985.0)
    assert plan.target_price == pytest.approx(1985.0)
    assert plan.cluster_debt == 1_000_000.0
    # The mid reaches 1,985 when the best bid is below 2 * 1,985 - 2,001 = 1,969: the 30
    # lots at 1,999, 1,990 and 1,980 go, proceeds 10 * (1,999 + 1,990 + 1,980) = 59,690,
    # cost 30 * 2,000 - 59,690 = 310.
    assert plan.lots == 30
    assert plan.cost == pytest.approx(310.0)
    # Forced sales 0.5 * 1,000,000 / 1,985 = 251.9 lots exhaust the bids: the marginal
    # price is the lowest bid, 1,900; gain = 30 * (2,000 - 1,900) = 3,000.
    assert plan.gain == pytest.approx(3000.0)


@pytest.mark.parametrize(
    "change",
    [
        {"profit_margin": 10.0},  # 3,000 < 10 * 310
        {"min_cluster_debt": 2_000_000.0},  # no cluster that large within 10%
        {"max_push": 0.005},  # the cluster is beyond the grid
        {"overshoot": 0.04},  # the push would empty the bid side
    ],
)
def test_no_attack_when_it_does_not_pay_or_cannot_be_done(change):
    hunter, view = make_hunter(**change)
    assert hunter.plan(view) is None


def test_no_attack_without_the_base_to_sell():
    hunter, view = make_hunter()
    view.wallet[BASE] = 29
    assert hunter.plan(view) is None


def test_attack_buy_back_and_cooldown_are_orders_only_and_recorded():
    hunter, view = make_hunter()
    batch = hunter.act(view)
    assert len(batch) == 1
    assert (batch.side[0], batch.kind[0], batch.qty_lots[0], batch.account[0]) == (
        -1,
        int(OrderKind.MARKET),
        30,
        HOLDER,
    )
    attacks = hunter.attacks_frame()
    assert attacks.columns.tolist() == list(ATTACK_COLUMNS)
    row = attacks.iloc[0]
    assert (row["step"], row["hunter"], row["size_sold"]) == (0, HOLDER, 30.0)
    assert row["target_price"] == pytest.approx(1985.0)
    assert row["cluster_debt"] == 1_000_000.0
    # The model filled the sale: the wallet changes only through the orders.
    view.wallet = {BASE: 570, QUOTE: 59_690}
    assert hunter.pnl(view) == pytest.approx(-30 * 2000 + 59_690)  # -310 at the mid
    for step in (1, 2):
        view.step = step
        assert len(hunter.act(view)) == 0  # holding
    view.step = 3
    # Buy back at 2,001: the quote pays for floor(59,690 / 2,001) = 29 lots.
    batch = hunter.act(view)
    assert (batch.side[0], batch.qty_lots[0]) == (1, 29)
    view.wallet = {BASE: 599, QUOTE: 59_690 - 29 * 2001}
    view.step = 4
    assert len(hunter.act(view)) == 0  # nothing left it can pay for: rests
    view.step = 9
    assert len(hunter.act(view)) == 1  # cooldown over (4 + 5): attacks again
    assert len(hunter.attacks_frame()) == 2


def test_pnl_is_zero_before_the_hunter_has_looked():
    hunter, view = make_hunter()
    assert hunter.pnl(view) == 0.0


def test_config_rejects_an_unknown_capital_asset():
    with pytest.raises(ScenarioError, match="liquidation_hunter.capital"):
        load_scenario("liquidation_hunt").with_overrides(
            {"agents.liquidation_hunter.capital": {"XYZ": 1.0}}
        )
