"""Basis arbitrageurs: individuals that trade the gap between a perp book and its spot book."""

from __future__ import annotations

from typing import TYPE_CHECKING

import mesa
import numpy as np

from marginsim.agents.base import OrderBatch, Trader
from marginsim.config import BasisArbitrageursConfig
from marginsim.market.engine import OrderKind

if TYPE_CHECKING:
    from marginsim.market.view import MarketView
    from marginsim.protocols.view import ProtocolsView

__all__ = ["BasisArbitrageur"]


class BasisArbitrageur(Trader):
    """One cash-and-carry arbitrageur between a perp contract and the spot book of its base.

    Each step it reads both mids; with ``basis = perp mid / spot mid - 1``:

    - ``basis > entry_bps``: the perp is rich: sell ``trade_size`` of perp and buy as much
      spot (short perp, long spot), while its short stays within ``max_position``;
    - ``basis < -entry_bps``: the reverse (long perp, short spot out of its own inventory);
    - ``|basis| < exit_bps``: unwind one ``trade_size`` of its position toward flat.

    Both legs are market orders in the same activation; the venue's margin check and the
    engine's funds check refuse what its margin or wallet cannot carry. Its funding is paid
    or received by the venue like any position's.

    Args:
        model: The model.
        config: The arbitrageurs' scenario section.
        holder: This arbitrageur's ledger holder id.
        perp: Engine index of the perp contract.
        spot: Engine index of the spot book of the same base.
        venue: Name of the perp venue.
        protocols: Read-only view of the protocols (for its own perp position).
    """

    def __init__(
        self,
        model: mesa.Model,
        config: BasisArbitrageursConfig,
        holder: int,
        perp: int,
        spot: int,
        venue: str,
        protocols: ProtocolsView,
    ) -> None:
        super().__init__(model)
        self.config = config
        self.holder = holder
        self.perp = perp
        self.spot = spot
        self.venue = venue
        self.protocols = protocols

    def basis(self, view: MarketView) -> float | None:
        """``perp mid / spot mid - 1``, ``None`` when either book has an empty side."""
        perp_mid, spot_mid = view.mid_price(self.perp), view.mid_price(self.spot)
        if perp_mid is None or spot_mid is None:
            return None
        return perp_mid / spot_mid - 1.0

    def act(self, view: MarketView) -> OrderBatch:
        """Open, add to or unwind the carry trade by the rules in the class docstring."""
        cfg = self.config
        basis = self.basis(view)
        if basis is None:
            return OrderBatch.empty()
        lot = view.lot(self.perp)
        size = int(cfg.trade_size / lot)
        limit = int(cfg.max_position / lot)
        position = int(
            self.protocols.perp_positions(self.venue, np.array([self.holder]), self.perp)[0]
        )
        if basis > cfg.entry_bps / 1e4 and position > -limit:
            perp_side, lots = -1, min(size, limit + position)
        elif basis < -cfg.entry_bps / 1e4 and position < limit:
            perp_side, lots = 1, min(size, limit - position)
        elif abs(basis) < cfg.exit_bps / 1e4 and position != 0:
            perp_side, lots = (1 if position < 0 else -1), min(size, abs(position))
        else:
            return OrderBatch.empty()
        if lots <= 0:
            return OrderBatch.empty()
        market = int(OrderKind.MARKET)
        return OrderBatch.concat(
            [
                OrderBatch.build(self.perp, perp_side, market, 0, lots, self.holder),
                OrderBatch.build(self.spot, -perp_side, market, 0, lots, self.holder),
            ]
        )
