"""Fundamental traders: a population that trades the book toward the exogenous value."""

from __future__ import annotations

from typing import TYPE_CHECKING

import mesa
import numpy as np

from marginsim.agents.base import OrderBatch, Population, draw
from marginsim.config import FundamentalTradersConfig
from marginsim.market.engine import OrderKind

if TYPE_CHECKING:
    from marginsim.market.view import MarketView

__all__ = ["FundamentalTraders"]


class FundamentalTraders(Population):
    """Informed flow that ties the book to the fundamental value.

    An account that looks at the market (probability ``order_probability``) and sees the
    relative mispricing ``m = (index - mid) / mid`` beyond its own ``threshold`` sends an
    immediate-or-cancel order toward the index: it buys when the book is cheap, sells when
    it is rich, ``aggressiveness * |m|`` base units capped at ``max_order``, limited at the
    index price itself so it never pays more than it believes the asset is worth.

    Args:
        model: The model.
        config: The population's scenario section.
        first_holder: Ledger id of account 0.
        instrument: Engine index of the book traded.
        rng: The population's stream; per-account thresholds and aggressiveness are drawn
            from it at construction.
    """

    def __init__(
        self,
        model: mesa.Model,
        config: FundamentalTradersConfig,
        first_holder: int,
        instrument: int,
        rng: np.random.Generator,
    ) -> None:
        super().__init__(model, first_holder, config.count, rng)
        self.config = config
        self.instrument = instrument
        self.threshold = draw(config.threshold, self.count, rng)
        self.aggressiveness = draw(config.aggressiveness, self.count, rng)

    def act(self, view: MarketView) -> OrderBatch:
        """Trade toward the index where the mispricing exceeds each account's threshold."""
        cfg, ins = self.config, self.instrument
        mid = view.mid_price(ins)
        looking = self.stream.random(self.count) < cfg.order_probability
        if mid is None or not looking.any():
            return OrderBatch.empty()
        index = view.index_price
        mispricing = (index - mid) / mid
        acting = np.flatnonzero(looking & (abs(mispricing) > self.threshold))
        if acting.shape[0] == 0:
            return OrderBatch.empty()
        side = 1 if mispricing > 0 else -1
        size = np.minimum(self.aggressiveness[acting] * abs(mispricing), cfg.max_order)
        qty_lots = np.floor(size / view.lot(ins)).astype(np.int64)
        keep = qty_lots > 0
        raw = index / view.tick(ins)
        limit_ticks = int(np.floor(raw)) if side > 0 else int(np.ceil(raw))
        return OrderBatch.build(
            ins,
            side,
            int(OrderKind.IOC),
            max(limit_ticks, 1),
            qty_lots[keep],
            self.holders[acting[keep]],
        )
