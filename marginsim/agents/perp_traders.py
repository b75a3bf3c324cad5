"""Leveraged perp traders: a population that opens and closes leveraged perp positions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import mesa
import numpy as np

from marginsim.agents.base import OrderBatch, Population, draw
from marginsim.config import PerpTradersConfig
from marginsim.market.engine import OrderKind

if TYPE_CHECKING:
    from marginsim.market.view import MarketView
    from marginsim.protocols.view import ProtocolsView

__all__ = ["PerpTraders"]

_TREND, _CONTRARIAN, _NOISE = 0, 1, 2


class PerpTraders(Population):
    """Leveraged accounts on one perp contract, decided in one vectorised call per step.

    Each account has a target leverage, a risk buffer (the share of its margin it refuses to
    lose; 0 rides into liquidation), a holding horizon and a signal type (trend, contrarian,
    noise), all drawn at construction from the population's stream. Every step:

    - accounts whose position vanished (liquidated or auto-deleveraged) are marked flat;
    - open accounts close at market when the horizon is reached or the loss since entry
      (at the mark) reaches ``(1 - risk_buffer) * margin``;
    - flat accounts enter with probability ``entry_probability``: direction from their signal
      (the sign of the mark's move over ``trend_window`` steps; contrarians take the other
      side; noise traders flip a coin), size ``leverage * margin / mark``, at market.

    The venue's margin check refuses entries beyond the account's margin and tier limits.

    Args:
        model: The model.
        config: The population's scenario section.
        first_holder: Ledger id of account 0.
        instrument: Engine index of the perp contract.
        venue: Name of its perp venue.
        protocols: Read-only view of the protocols.
        stream: The population's random stream.
    """

    def __init__(
        self,
        model: mesa.Model,
        config: PerpTradersConfig,
        first_holder: int,
        instrument: int,
        venue: str,
        protocols: ProtocolsView,
        stream: np.random.Generator,
    ) -> None:
        super().__init__(model, first_holder, config.count, stream)
        self.config = config
        self.instrument = instrument
        self.venue = venue
        self.protocols = protocols
        n = self.count
        self.leverage = draw(config.leverage, n, stream)
        self.risk_buffer = np.clip(draw(config.risk_buffer, n, stream), 0.0, 1.0)
        self.hold_steps = np.maximum(1, np.round(draw(config.hold_steps, n, stream)))
        u = stream.random(n)
        self.signal = np.where(
            u < config.trend_share,
            _TREND,
            np.where(u < config.trend_share + config.contrarian_share, _CONTRARIAN, _NOISE),
        )
        self.entry_mark = np.full(n, np.nan)
        self.entry_step = np.zeros(n, dtype=np.int64)
        self.marks: list[float] = []

    def act(self, view: MarketView) -> OrderBatch:
        """Close what must close, open what wants to open; all at market."""
        cfg, ins = self.config, self.instrument
        mark = self.protocols.perp_mark(self.venue, ins)
        if mark is None:
            return OrderBatch.empty()
        self.marks.append(mark)
        size = self.protocols.perp_positions(self.venue, self.holders, ins)
        open_ = size != 0
        self.entry_mark[~open_] = np.nan
        # Close: horizon reached, or the loss has eaten (1 - buffer) of the margin.
        direction = np.sign(size)
        loss_share = -direction * (mark / self.entry_mark - 1.0) * self.leverage
        held = view.step - self.entry_step
        closing = open_ & (
            (held >= self.hold_steps)
            | (loss_share >= 1.0 - self.risk_buffer) & (self.risk_buffer > 0)
        )
        # Enter: flat accounts, by signal.
        entering = ~open_ & (self.stream.random(self.count) < cfg.entry_probability)
        window = self.marks[-cfg.trend_window - 1 :]
        trend = np.sign(window[-1] - window[0]) if len(window) > 1 else 0.0
        coin = np.where(self.stream.random(self.count) < 0.5, 1, -1)
        side = np.where(
            self.signal == _TREND, trend, np.where(self.signal == _CONTRARIAN, -trend, coin)
        ).astype(np.int64)
        side = np.where(side == 0, coin, side)
        lots = np.floor(self.leverage * cfg.margin / mark / view.lot(ins)).astype(np.int64)
        entering &= lots > 0
        self.entry_mark[entering] = mark
        self.entry_step[entering] = view.step
        close_idx = np.flatnonzero(closing)
        enter_idx = np.flatnonzero(entering)
        return OrderBatch.concat(
            [
                OrderBatch.build(
                    ins,
                    -direction[close_idx],
                    int(OrderKind.MARKET),
                    0,
                    np.abs(size[close_idx]),
                    self.holders[close_idx],
                ),
                OrderBatch.build(
                    ins,
                    side[enter_idx],
                    int(OrderKind.MARKET),
                    0,
                    lots[enter_idx],
                    self.holders[enter_idx],
                ),
            ]
        )
