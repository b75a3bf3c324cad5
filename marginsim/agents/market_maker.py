"""Market makers: individuals quoting ladders around a fair price with an inventory skew."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import mesa
import numpy as np

from marginsim.agents.base import OrderBatch, Trader
from marginsim.config import MarketMakersConfig, PerpMarketMakersConfig
from marginsim.market.engine import OrderKind

if TYPE_CHECKING:
    from collections.abc import Sequence

    from marginsim.market.view import MarketView
    from marginsim.protocols.events import LiquidationPrices
    from marginsim.protocols.view import ProtocolsView

__all__ = ["MarketMaker", "PerpMarketMaker", "debt_near"]


def debt_near(parts: Sequence[LiquidationPrices], distance: float) -> tuple[float, float]:
    """Liquidatable debt within a relative price move of ``distance``, below and above.

    Each protocol's accounts are placed by the relative move of that protocol's own price
    they need (``price / current_price``), as :func:`marginsim.metrics.liquidation_map`
    does. Returns ``(long, short)``: the debt value of long-side accounts liquidated by a
    fall of at most ``distance`` (already liquidatable ones included), and of short-side
    accounts liquidated by a rise of at most ``distance``; the liquidation map's
    ``long_debt`` at ``(1 - distance)`` and ``short_debt`` at ``(1 + distance)`` times the
    reference.
    """
    long_debt = short_debt = 0.0
    for part in parts:
        q0 = part.current_price
        if not len(part) or not (np.isfinite(q0) and q0 > 0):
            continue
        rel = part.price * (1.0 / q0)
        ok = np.isfinite(part.debt_value)
        long_debt += float(part.debt_value[ok & (part.side == 1) & (rel >= 1.0 - distance)].sum())
        short_debt += float(part.debt_value[ok & (part.side == -1) & (rel <= 1.0 + distance)].sum())
    return long_debt, short_debt


class MarketMaker(Trader):
    """One market maker: cancels its quotes and posts a new ladder every step.

    Fair value ``f = w * index + (1 - w) * book reference`` (``w`` = ``fair_value_weight``).
    With ``q`` the inventory imbalance ``(base value - quote value) / (base value + quote
    value)`` in [-1, 1], every quote shifts by ``-inventory_skew * q`` relative to ``f``, so a
    maker long the asset quotes lower on both sides and sheds inventory (Avellaneda-Stoikov's
    reservation price, in relative form). The half-spread widens with realised volatility
    ``rv`` (standard deviation of the maker's observed log returns over
    ``volatility_window_steps``) against the calm per-step volatility ``cv``:
    ``h = half_spread * (1 + vol_widening * max(0, rv / cv - 1))``. While ``rv / cv`` exceeds
    ``withdraw_on_volatility`` the maker quotes ``withdraw_speed`` less of its ladder each step
    (all of it at once with the default 1), so depth vanishes in a crash, and it comes back
    at the same speed once volatility calms.
    Level ``k`` (0-based) sits at ``f * (1 +- (h + k * level_spacing) - inventory shift)``
    with ``level_size`` each, scaled down to what the maker's wallet can fund.

    With ``liquidation_map_aware`` the model hands the maker, before it quotes, the step's
    scan of the public liquidation map of its base asset (:attr:`liquidation_parts`, one
    scan per asset per step shared by all makers that read it). With ``d`` =
    ``liquidation_map_distance`` and the maker's side depth ``levels * level_size * f`` (at
    full size), a side is *threatened* when the debt that :func:`debt_near` finds within
    ``d`` on its side (long debt for the bids, which forced sales would hit; short debt for
    the asks) is positive and at least ``liquidation_map_threshold`` times that depth. A
    threatened side's half-spread becomes ``h * liquidation_map_widen`` (action
    ``widen``) or the side is not quoted (``pull``); the other side is unchanged.

    Args:
        model: The model.
        config: The makers' scenario section.
        holder: This maker's ledger holder id.
        instrument: Engine index of the quoted book.
        base_asset: Ledger id of the base asset.
        quote_asset: Ledger id of the quote asset.
        calm_volatility: Per-step volatility regarded as calm (from the exogenous driver).
    """

    def __init__(
        self,
        model: mesa.Model,
        config: MarketMakersConfig,
        holder: int,
        instrument: int,
        base_asset: int,
        quote_asset: int,
        calm_volatility: float,
    ) -> None:
        super().__init__(model)
        self.config = config
        self.holder = holder
        self.instrument = instrument
        self.base_asset = base_asset
        self.quote_asset = quote_asset
        self.calm_volatility = max(calm_volatility, 1e-9)
        self.observed: collections.deque[float] = collections.deque(
            maxlen=config.volatility_window_steps + 1
        )
        self.live_orders = np.zeros(0, dtype=np.int64)
        #: Fraction of normal size quoted (a liquidity-withdrawal shock lowers it).
        self.size_factor = 1.0
        #: Step from which a liquidity-withdrawal shock no longer applies.
        self.restore_step = 0
        self.withdrawn = False
        #: Share of the ladder quoted under volatility stress (1 calm, 0 fully withdrawn).
        self.stress_share = 1.0
        #: This step's liquidation-map scan of the base asset (set by the model when the
        #: maker is ``liquidation_map_aware``; empty otherwise).
        self.liquidation_parts: Sequence[LiquidationPrices] = ()
        #: Steps in which the liquidation map made the maker protect its bids / its asks.
        self.map_threatened_bid_steps = 0
        self.map_threatened_ask_steps = 0

    def withdraw(self) -> OrderBatch:
        """Cancel every live quote (run before :meth:`act` so escrowed funds come back)."""
        batch = OrderBatch.cancels(self.instrument, np.int64(self.holder), self.live_orders)
        self.live_orders = np.zeros(0, dtype=np.int64)
        return batch

    def realised_volatility(self) -> float:
        """Standard deviation of the observed per-step log returns (0 before two returns)."""
        if len(self.observed) < 3:
            return 0.0
        returns = np.diff(np.log(np.fromiter(self.observed, dtype=np.float64)))
        return float(returns.std())

    def act(self, view: MarketView) -> OrderBatch:
        """Post this step's ladder (or nothing when volatility says withdraw)."""
        cfg, ins = self.config, self.instrument
        w = cfg.fair_value_weight
        fair = w * view.index_price + (1.0 - w) * view.reference_price(ins)
        self.observed.append(fair)
        ratio = self.realised_volatility() / self.calm_volatility
        # Under stress the quoted share falls by withdraw_speed per step, and recovers as fast.
        step = cfg.withdraw_speed if ratio > cfg.withdraw_on_volatility else -cfg.withdraw_speed
        self.stress_share = min(1.0, max(0.0, self.stress_share - step))
        self.withdrawn = self.stress_share <= 1e-12
        if self.withdrawn or self.size_factor <= 0:
            return OrderBatch.empty()
        half = cfg.half_spread * (1.0 + cfg.vol_widening * max(0.0, ratio - 1.0))
        lot, tick = view.lot(ins), view.tick(ins)
        lots = max(int(cfg.level_size * self.size_factor * self.stress_share / lot), 0)
        if lots == 0:
            return OrderBatch.empty()
        imbalance = self.inventory_imbalance(view, fair)
        shift = -cfg.inventory_skew * imbalance
        bid_half, ask_half = half, half
        quote_bids = quote_asks = True
        if cfg.liquidation_map_aware:
            threat_bid, threat_ask = self.map_threats(fair)
            self.map_threatened_bid_steps += threat_bid
            self.map_threatened_ask_steps += threat_ask
            if cfg.liquidation_map_action == "pull":
                quote_bids, quote_asks = not threat_bid, not threat_ask
            else:
                bid_half = half * cfg.liquidation_map_widen if threat_bid else half
                ask_half = half * cfg.liquidation_map_widen if threat_ask else half
        k = np.arange(cfg.levels, dtype=np.float64)
        bid_offsets = bid_half + k * cfg.level_spacing
        ask_offsets = ask_half + k * cfg.level_spacing
        bid_ticks = np.floor(fair * (1.0 - bid_offsets + shift) / tick).astype(np.int64)
        ask_ticks = np.ceil(fair * (1.0 + ask_offsets + shift) / tick).astype(np.int64)
        bid_lots, ask_lots = self.fundable_lots(view, bid_ticks, lots)
        bid_lots = bid_lots if quote_bids else 0
        ask_lots = ask_lots if quote_asks else 0
        orders = []
        if bid_lots > 0:
            keep = bid_ticks > 0
            orders.append(
                OrderBatch.build(
                    ins, 1, int(OrderKind.LIMIT), bid_ticks[keep], bid_lots, self.holder
                )
            )
        if ask_lots > 0:
            orders.append(
                OrderBatch.build(ins, -1, int(OrderKind.LIMIT), ask_ticks, ask_lots, self.holder)
            )
        return OrderBatch.concat(orders)

    def map_threats(self, fair: float) -> tuple[bool, bool]:
        """Whether the liquidation map threatens the bids and the asks (class docstring)."""
        cfg = self.config
        long_debt, short_debt = debt_near(self.liquidation_parts, cfg.liquidation_map_distance)
        limit = cfg.liquidation_map_threshold * cfg.levels * cfg.level_size * fair
        return (long_debt > 0 and long_debt >= limit, short_debt > 0 and short_debt >= limit)

    def _wallet(self, view: MarketView) -> tuple[int, int]:
        holder = np.array([self.holder])
        return (
            int(view.balances(holder, self.base_asset)[0]),
            int(view.balances(holder, self.quote_asset)[0]),
        )

    def inventory_imbalance(self, view: MarketView, fair: float) -> float:
        """``(base value - quote value) / (base value + quote value)`` of the wallet."""
        base, quote = self._wallet(view)
        base_value = base / 10 ** view.asset_decimals(self.base_asset) * fair
        quote_value = quote / 10 ** view.asset_decimals(self.quote_asset)
        total = base_value + quote_value
        return (base_value - quote_value) / total if total > 0 else 0.0

    def fundable_lots(self, view: MarketView, bid_ticks: np.ndarray, lots: int) -> tuple[int, int]:
        """Lots per level on each side, scaled to what the wallet funds (1% kept back)."""
        base, quote = self._wallet(view)
        ins = self.instrument
        lot, tick = view.lot(ins), view.tick(ins)
        quote_value = quote / 10 ** view.asset_decimals(self.quote_asset)
        bid_cost = lots * float(np.maximum(bid_ticks, 1).sum()) * tick * lot
        bid_lots = min(lots, int(lots * 0.99 * quote_value / bid_cost)) if bid_cost > 0 else 0
        ask_lots = min(lots, int(0.99 * base / view.base_units_per_lot(ins) / self.config.levels))
        return bid_lots, ask_lots

    def on_results(
        self, batch: OrderBatch, order_id: np.ndarray, status: np.ndarray, resting: np.ndarray
    ) -> None:
        """Remember which quotes rest, to cancel them next step."""
        rests = (resting > 0) & (batch.kind == int(OrderKind.LIMIT))
        self.live_orders = np.concatenate([self.live_orders, order_id[rests]])


class PerpMarketMaker(MarketMaker):
    """A market maker on a perp book: its inventory is its position on the venue.

    The imbalance is ``position / max_inventory`` clipped to [-1, 1]; both sides quote the
    full ``level_size`` and the venue's pre-trade margin check refuses what its margin
    cannot carry.

    Args:
        model: The model.
        config: The perp makers' scenario section.
        holder: This maker's ledger holder id.
        instrument: Engine index of the perp book.
        venue: Name of the perp venue.
        protocols: Read-only view of the protocols (for the maker's own position).
        calm_volatility: Per-step volatility regarded as calm.
    """

    def __init__(
        self,
        model: mesa.Model,
        config: PerpMarketMakersConfig,
        holder: int,
        instrument: int,
        venue: str,
        protocols: ProtocolsView,
        calm_volatility: float,
    ) -> None:
        super().__init__(model, config, holder, instrument, -1, -1, calm_volatility)
        self.venue = venue
        self.protocols = protocols
        self.max_inventory = config.max_inventory

    def inventory_imbalance(self, view: MarketView, fair: float) -> float:
        """Position over ``max_inventory``, clipped to [-1, 1]."""
        lots = self.protocols.perp_positions(self.venue, np.array([self.holder]), self.instrument)[
            0
        ]
        return float(np.clip(lots * view.lot(self.instrument) / self.max_inventory, -1, 1))

    def fundable_lots(self, view: MarketView, bid_ticks: np.ndarray, lots: int) -> tuple[int, int]:
        """Full size on both sides: the venue's margin check is the limit."""
        return lots, lots
