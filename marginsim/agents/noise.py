"""Noise traders: a population that sends random market and limit orders around the mid."""

from __future__ import annotations

from typing import TYPE_CHECKING

import mesa
import numpy as np

from marginsim.agents.base import OrderBatch, Population, RestingOrders, draw
from marginsim.config import NoiseTradersConfig
from marginsim.market.engine import OrderKind

if TYPE_CHECKING:
    from marginsim.market.view import MarketView

__all__ = ["NoiseTraders"]


class NoiseTraders(Population):
    """Background order flow with no information.

    Each step every account sends an order with probability ``order_probability``: a buy or
    a sell with equal chance, of a size drawn from ``size``; a share ``limit_share`` are limit
    orders priced ``limit_offset`` away from the mid on the passive side (buys below, sells
    above), the rest market orders. Limit orders left resting are cancelled after
    ``order_lifetime_steps``. Orders the account cannot fund are rejected by the engine
    (market orders are capped at what it can pay), so no account ever trades on credit.

    Args:
        model: The model.
        config: The population's scenario section.
        first_holder: Ledger id of account 0.
        instrument: Engine index of the book traded.
        rng: The population's stream.
    """

    def __init__(
        self,
        model: mesa.Model,
        config: NoiseTradersConfig,
        first_holder: int,
        instrument: int,
        rng: np.random.Generator,
    ) -> None:
        super().__init__(model, first_holder, config.count, rng)
        self.config = config
        self.instrument = instrument
        self.resting = RestingOrders()
        self._step = 0

    def act(self, view: MarketView) -> OrderBatch:
        """Expire old limit orders, then send this step's random orders."""
        cfg, rng, ins = self.config, self.stream, self.instrument
        self._step = view.step
        expired_ids, expired_accounts = self.resting.pop_expired(
            view.step, cfg.order_lifetime_steps
        )
        cancels = OrderBatch.cancels(ins, expired_accounts, expired_ids)
        active = np.flatnonzero(rng.random(self.count) < cfg.order_probability)
        n = active.shape[0]
        if n == 0:
            return cancels
        side = np.where(rng.random(n) < 0.5, 1, -1)
        qty_lots = np.maximum(1, np.floor(draw(cfg.size, n, rng) / view.lot(ins))).astype(np.int64)
        is_limit = rng.random(n) < cfg.limit_share
        offset = draw(cfg.limit_offset, n, rng)
        tick = view.tick(ins)
        ref = view.reference_price(ins)
        # Buys round down and sells round up so that the offset never makes an order more
        # aggressive than intended.
        raw = ref * (1.0 - side * offset) / tick
        price_ticks = np.maximum(1, np.where(side > 0, np.floor(raw), np.ceil(raw))).astype(
            np.int64
        )
        kind = np.where(is_limit, int(OrderKind.LIMIT), int(OrderKind.MARKET))
        orders = OrderBatch.build(ins, side, kind, price_ticks, qty_lots, self.holders[active])
        return OrderBatch.concat([cancels, orders])

    def on_results(
        self, batch: OrderBatch, order_id: np.ndarray, status: np.ndarray, resting: np.ndarray
    ) -> None:
        """Remember the limit orders that rest, to cancel them when they expire."""
        rests = (resting > 0) & (batch.kind == int(OrderKind.LIMIT))
        self.resting.add(order_id[rests], batch.account[rests], self._step)
