"""Hedgers: risk managers shorting the perp against their spot, more when leverage is hot."""

from __future__ import annotations

from typing import TYPE_CHECKING

import mesa
import numpy as np

from marginsim.agents.base import OrderBatch, Trader
from marginsim.config import HedgersConfig
from marginsim.market.engine import OrderKind

if TYPE_CHECKING:
    from marginsim.market.view import MarketView
    from marginsim.protocols.view import ProtocolsView

__all__ = ["Hedger", "hedge_ratio"]


def hedge_ratio(config: HedgersConfig, margin_debt: float, funding_rate: float) -> float:
    """The share of its spot a hedger keeps shorted on the perp.

    ``clip(base_ratio + sensitivity_debt * margin_debt / debt_reference
    + sensitivity_funding * funding_rate, 0, 1)``

    Args:
        config: The hedgers' scenario section.
        margin_debt: The venue's aggregate margin debt, settlement human units.
        funding_rate: The contract's last funding rate (positive: longs pay shorts).
    """
    raw = (
        config.base_ratio
        + config.sensitivity_debt * margin_debt / config.debt_reference
        + config.sensitivity_funding * funding_rate
    )
    return float(min(max(raw, 0.0), 1.0))


class Hedger(Trader):
    """One hedger: spot base in its wallet, settlement margin on a perp venue.

    Every step it reads, from the read-only protocols view, the venue's aggregate margin
    debt ``D`` (:meth:`ProtocolsView.perp_margin_debt`) and the contract's last funding rate
    ``r`` (:meth:`ProtocolsView.perp_funding_rate`), computes :func:`hedge_ratio`
    ``h = clip(base_ratio + sensitivity_debt * D / debt_reference + sensitivity_funding * r,
    0, 1)`` and targets the perp position ``-round(h * spot / lot)`` lots (``spot``: the
    base in its wallet, human units). When ``|target - position| * lot`` exceeds ``band``
    it sends one market order for the difference (the venue's margin check may refuse it;
    it tries again next step). It never trades spot.

    Its P&L (:meth:`pnl`) is spot valued at the perp's mark plus its margin balance on the
    venue at mark, minus the same at its first step with a mark.

    Args:
        model: The model.
        config: The hedgers' scenario section.
        holder: This hedger's ledger holder id.
        instrument: Engine index of the perp contract.
        venue: Name of its perp venue.
        base_asset: Ledger id of the spot asset it holds (the perp's base).
        protocols: Read-only view of the protocols.
    """

    def __init__(
        self,
        model: mesa.Model,
        config: HedgersConfig,
        holder: int,
        instrument: int,
        venue: str,
        base_asset: int,
        protocols: ProtocolsView,
    ) -> None:
        super().__init__(model)
        self.config = config
        self.holder = holder
        self.instrument = instrument
        self.venue = venue
        self.base_asset = base_asset
        self.protocols = protocols
        #: Hedge ratio decided at the last activation (NaN before the first with a mark).
        self.ratio = float("nan")
        #: Value (quote human units) and mark at the first activation with a mark.
        self.start_value: float | None = None
        self.start_mark: float | None = None

    def spot(self, view: MarketView) -> float:
        """Base asset in the wallet, human units."""
        units = int(view.balances(np.array([self.holder]), self.base_asset)[0])
        return units / 10 ** view.asset_decimals(self.base_asset)

    def position_lots(self) -> int:
        """Signed perp position, lots."""
        return int(
            self.protocols.perp_positions(self.venue, np.array([self.holder]), self.instrument)[0]
        )

    def value(self, view: MarketView, mark: float) -> float:
        """Spot at ``mark`` plus margin balance on the venue, quote human units."""
        return self.spot(view) * mark + self.protocols.perp_margin_balance(self.venue, self.holder)

    def pnl(self, view: MarketView) -> float:
        """Value now minus value at the start (0 before the first activation with a mark)."""
        mark = self.protocols.perp_mark(self.venue, self.instrument)
        if self.start_value is None or mark is None:
            return 0.0
        return self.value(view, mark) - self.start_value

    def act(self, view: MarketView) -> OrderBatch:
        """Move the perp short towards ``-hedge_ratio * spot`` when outside the band."""
        ins = self.instrument
        mark = self.protocols.perp_mark(self.venue, ins)
        if mark is None:
            return OrderBatch.empty()
        if self.start_value is None:
            self.start_value = self.value(view, mark)
            self.start_mark = mark
        self.ratio = hedge_ratio(
            self.config,
            self.protocols.perp_margin_debt(self.venue),
            self.protocols.perp_funding_rate(self.venue, ins),
        )
        lot = view.lot(ins)
        target = -round(self.ratio * self.spot(view) / lot)
        diff = target - self.position_lots()
        if diff == 0 or abs(diff) * lot <= self.config.band:
            return OrderBatch.empty()
        side = 1 if diff > 0 else -1
        return OrderBatch.build(ins, side, int(OrderKind.MARKET), 0, abs(diff), self.holder)
