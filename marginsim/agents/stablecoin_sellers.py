"""Stablecoin sellers: holders of a CDP's stablecoin who dump it when its backing fails.

The depeg mechanism is order flow, not a scripted price: when a CDP's auctions fail and
leave uncovered *system debt*, part of the stablecoin in circulation is backed by nothing.
These holders read the system debt and the supply from the read-only protocols view and
sell the stablecoin at market on its book with a probability that grows with the share of
the supply left unbacked. The book's bids (a small maker) absorb the flow; the maker's
inventory skew and its shrinking quote wallet lower its quotes, so the mid falls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mesa
import numpy as np

from marginsim.agents.base import OrderBatch, Population
from marginsim.config import StablecoinSellersConfig

if TYPE_CHECKING:
    from marginsim.market.view import MarketView
    from marginsim.protocols.view import ProtocolsView

__all__ = ["StablecoinSellers"]


class StablecoinSellers(Population):
    """A population that sells a CDP's stablecoin when the CDP carries system debt.

    Each step, with ``u = system debt / supply`` read from ``protocols.cdp_backing``: if
    ``u > threshold``, every account sends, with probability ``min(1, sensitivity * u)``,
    one market sell of ``sell_share`` of the stablecoin in its wallet (whole lots). Before
    the backing fails (``u = 0``) they do nothing at all.

    Args:
        model: The model.
        config: The population's scenario section.
        first_holder: Ledger id of account 0.
        instrument: Engine index of the stablecoin's book.
        stable_asset: Ledger id of the stablecoin (the book's base).
        protocols: Read-only view of the protocols.
        rng: The population's stream.

    Attributes:
        unbacked_share: ``u`` as last read (0 before the first activation).
    """

    def __init__(
        self,
        model: mesa.Model,
        config: StablecoinSellersConfig,
        first_holder: int,
        instrument: int,
        stable_asset: int,
        protocols: ProtocolsView,
        rng: np.random.Generator,
    ) -> None:
        super().__init__(model, first_holder, config.count, rng)
        self.config = config
        self.instrument = instrument
        self.stable_asset = stable_asset
        self._protocols = protocols
        self.unbacked_share = 0.0

    def selling_probability(self, protocols: ProtocolsView) -> float:
        """Chance that one account sells this step, from the CDP's backing now."""
        cfg = self.config
        system_debt, supply = protocols.cdp_backing(cfg.cdp)
        self.unbacked_share = system_debt / supply if supply > 0 else 0.0
        if self.unbacked_share <= cfg.threshold:
            return 0.0
        return min(1.0, cfg.sensitivity * self.unbacked_share)

    def act(self, view: MarketView) -> OrderBatch:
        """Market sells of part of the wallets of the accounts that panic this step."""
        p = self.selling_probability(self._protocols)
        if p <= 0.0:
            return OrderBatch.empty()
        active = np.flatnonzero(self.stream.random(self.count) < p)
        if active.shape[0] == 0:
            return OrderBatch.empty()
        return OrderBatch.sell_wallet_share(
            view, self.instrument, self.holders[active], self.stable_asset, self.config.sell_share
        )
