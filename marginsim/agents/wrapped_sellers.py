"""Wrapped-asset sellers: holders of a bridged asset who sell it above what backs it.

A bridge's wrapped asset is a claim on the bridge's lock. While the lock is whole one wrapped
unit is worth one unit of the underlying; after a bridge failure it is worth only the
*backing* share of it (the bridge's proof of reserve). These holders compare the wrapped
book's best bid with ``underlying mid x backing`` and sell at market while the bid is above
it. Nothing sets the wrapped price: the book's makers absorb the flow, go long the wrapped
asset, their inventory skew and shrinking quote wallets lower their quotes, and the mid
falls to a discount that comes from trading alone.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING

import mesa
import numpy as np

from marginsim.agents.base import OrderBatch, Population
from marginsim.config import WrappedSellersConfig

if TYPE_CHECKING:
    from marginsim.market.view import MarketView

__all__ = ["WrappedSellers"]


class WrappedSellers(Population):
    """A population that sells a wrapped asset while its bid exceeds its backing value.

    Each step, with ``v = mid(underlying book) x backing`` and ``b`` the wrapped book's best
    bid: if ``b > v x (1 + min_edge)``, every account sends, with probability
    ``order_probability``, one market sell of ``sell_share`` of its wrapped wallet (whole
    lots). No bid, or no underlying mid, means no sale that step.

    Args:
        model: The model.
        config: The population's scenario section.
        first_holder: Ledger id of account 0.
        instrument: Engine index of the wrapped asset's book.
        underlying_instrument: Engine index of the underlying's book (same quote asset).
        wrapped_asset: Ledger id of the wrapped asset (the book's base).
        backing: The bridge's backing now, a read-only callable
            (:meth:`marginsim.protocols.bridge.Bridge.backing`).
        rng: The population's stream.

    Attributes:
        backing_value: ``v`` as last read (quote per wrapped unit; NaN before the first).
        orders_sent: Market sells sent over the run.
    """

    def __init__(
        self,
        model: mesa.Model,
        config: WrappedSellersConfig,
        first_holder: int,
        instrument: int,
        underlying_instrument: int,
        wrapped_asset: int,
        backing: Callable[[], Fraction],
        rng: np.random.Generator,
    ) -> None:
        super().__init__(model, first_holder, config.count, rng)
        self.config = config
        self.instrument = instrument
        self.underlying_instrument = underlying_instrument
        self.wrapped_asset = wrapped_asset
        self._backing = backing
        self.backing_value = float("nan")
        self.orders_sent = 0

    def sells(self, view: MarketView) -> bool:
        """Whether the wrapped book's best bid is above the backing value now."""
        mid = view.mid_price(self.underlying_instrument)
        bid = view.best_bid(self.instrument)
        if mid is None or bid is None:
            return False
        self.backing_value = mid * float(self._backing())
        bid_price = bid * view.tick(self.instrument)
        return bid_price > self.backing_value * (1.0 + self.config.min_edge)

    def act(self, view: MarketView) -> OrderBatch:
        """Market sells of part of the wallets of the accounts that act this step."""
        # Draw first, every step, so the stream's use does not depend on the market.
        active = np.flatnonzero(self.stream.random(self.count) < self.config.order_probability)
        if active.shape[0] == 0 or not self.sells(view):
            return OrderBatch.empty()
        batch = OrderBatch.sell_wallet_share(
            view, self.instrument, self.holders[active], self.wrapped_asset, self.config.sell_share
        )
        self.orders_sent += len(batch)
        return batch
