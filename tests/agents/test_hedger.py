"""The hedger on fakes: hedge ratio formula and clipping, exact order sizes, the band."""

from __future__ import annotations

import mesa
import numpy as np
import pytest

from marginsim.agents.hedger import Hedger, hedge_ratio
from marginsim.config import HedgersConfig
from marginsim.market.engine import OrderKind

BASE = 1
HOLDER = 9
INS = 1


class FakeView:
    """Lots of 0.001 base; the base asset has 9 decimals."""

    def __init__(self, spot: float) -> None:
        self.spot_units = round(spot * 10**9)

    def lot(self, instrument: int) -> float:
        return 0.001

    def asset_decimals(self, asset: int) -> int:
        return 9

    def balances(self, holders: np.ndarray, asset: int) -> np.ndarray:
        assert asset == BASE
        return np.array([self.spot_units], dtype=np.int64)


class FakeProtocols:
    def __init__(self, debt: float, funding: float, position_lots: int, mark=2000.0) -> None:
        self.debt, self.funding, self.position_lots, self.mark = debt, funding, position_lots, mark
        self.margin_balance = 100_000.0

    def perp_mark(self, venue: str, instrument: int):
        return self.mark

    def perp_positions(self, venue: str, holders: np.ndarray, instrument: int) -> np.ndarray:
        return np.array([self.position_lots], dtype=np.int64)

    def perp_margin_debt(self, venue: str) -> float:
        return self.debt

    def perp_funding_rate(self, venue: str, instrument: int) -> float:
        return self.funding

    def perp_margin_balance(self, venue: str, holder: int) -> float:
        return self.margin_balance


def make(debt=0.0, funding=0.0, position_lots=0, spot=100.0, **cfg):
    params = (
        dict(
            count=1,
            base_ratio=0.2,
            sensitivity_debt=0.5,
            debt_reference=10_000_000.0,
            sensitivity_funding=1_000.0,
            band=0.5,
        )
        | cfg
    )
    config = HedgersConfig(**params)
    protocols = FakeProtocols(debt, funding, position_lots)
    hedger = Hedger(mesa.Model(), config, HOLDER, INS, "perpx", BASE, protocols)
    return hedger, FakeView(spot), protocols


def test_hedge_ratio_is_the_documented_formula():
    config = HedgersConfig(
        base_ratio=0.2, sensitivity_debt=0.5, debt_reference=10_000_000.0, sensitivity_funding=1e3
    )
    # 0.2 + 0.5 * 4e6 / 1e7 + 1000 * 1e-4 = 0.2 + 0.2 + 0.1
    assert hedge_ratio(config, 4_000_000.0, 1e-4) == pytest.approx(0.5)


def test_hedge_ratio_is_clipped_to_zero_and_one():
    config = HedgersConfig(
        base_ratio=0.5, sensitivity_debt=1.0, debt_reference=1e6, sensitivity_funding=1e3
    )
    assert hedge_ratio(config, 5e6, 0.0) == 1.0  # 5.5 -> 1
    assert hedge_ratio(config, 0.0, -1e-3) == 0.0  # 0.5 - 1 -> 0
    assert hedge_ratio(config, 0.0, -2e-4) == pytest.approx(0.3)


def test_order_is_the_exact_difference_to_the_target_short():
    # ratio 0.2 + 0.5 * 0.4 + 0.1 = 0.5; target -0.5 * 100 = -50 WETH = -50,000 lots;
    # holding -20,000 lots: sell 30,000 lots at market.
    hedger, view, _ = make(debt=4_000_000.0, funding=1e-4, position_lots=-20_000)
    batch = hedger.act(view)
    assert hedger.ratio == pytest.approx(0.5)
    assert len(batch) == 1
    assert batch.side.tolist() == [-1]
    assert batch.qty_lots.tolist() == [30_000]
    assert batch.kind.tolist() == [int(OrderKind.MARKET)]
    assert batch.account.tolist() == [HOLDER] and batch.instrument.tolist() == [INS]


def test_overhedged_position_is_bought_back():
    # ratio 0.2 (no debt, no funding); 37.5 WETH spot: target -7.5 WETH = -7,500 lots.
    hedger, view, _ = make(spot=37.5, position_lots=-10_000)
    batch = hedger.act(view)
    assert batch.side.tolist() == [1]
    assert batch.qty_lots.tolist() == [2_500]


def test_ratio_is_clipped_in_the_order_too():
    # 0.2 + 0.5 * 10 = 5.2 -> 1: the whole 100 WETH is shorted, never more.
    hedger, view, _ = make(debt=100_000_000.0)
    batch = hedger.act(view)
    assert hedger.ratio == 1.0
    assert batch.side.tolist() == [-1] and batch.qty_lots.tolist() == [100_000]


def test_no_order_inside_the_band():
    # target -20,000 lots (ratio 0.2 of 100 WETH); 0.5 WETH band = 500 lots.
    hedger, view, _ = make(position_lots=-19_500)
    assert len(hedger.act(view)) == 0  # exactly at the band: inside
    hedger, view, _ = make(position_lots=-20_400)
    assert len(hedger.act(view)) == 0
    hedger, view, _ = make(position_lots=-19_499)
    batch = hedger.act(view)
    assert batch.side.tolist() == [-1] and batch.qty_lots.tolist() == [501]


def test_no_order_without_a_mark_and_pnl_from_the_start():
    hedger, view, protocols = make()
    protocols.mark = None
    assert len(hedger.act(view)) == 0
    assert hedger.pnl(view) == 0.0
    protocols.mark = 2000.0
    hedger.act(view)
    assert hedger.start_value == pytest.approx(100 * 2000.0 + 100_000.0)
    # Spot falls 10%, the short gains 5,000 on the venue.
    protocols.mark = 1800.0
    protocols.margin_balance = 105_000.0
    assert hedger.pnl(view) == pytest.approx(-20_000.0 + 5_000.0)
