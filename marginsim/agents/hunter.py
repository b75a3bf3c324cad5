"""The liquidation hunter: an adversary that pushes the price through a cluster of liquidations."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import mesa
import numpy as np
import pandas as pd

from marginsim.agents.base import OrderBatch, Trader
from marginsim.config import LiquidationHunterConfig
from marginsim.market.engine import OrderKind

if TYPE_CHECKING:
    from marginsim.market.view import MarketView
    from marginsim.protocols.view import ProtocolsView

__all__ = ["ATTACK_COLUMNS", "AttackPlan", "LiquidationHunter"]

#: Columns of the ``attacks`` event table (one row per attack): the hunter's holder id, the
#: book mid before it, the cluster's grid price and the target price of the mid (quote per
#: base), the base it sold (human units), the cluster's newly liquidatable long debt and the
#: estimated cost and gain (quote human units).
ATTACK_COLUMNS: dict[str, str] = {
    "step": "int64",
    "hunter": "int64",
    "mid_before": "float64",
    "cluster_price": "float64",
    "target_price": "float64",
    "size_sold": "float64",
    "cluster_debt": "float64",
    "estimated_cost": "float64",
    "estimated_gain": "float64",
}

#: Levels of the bid side the hunter reads (deeper levels are ignored).
_BOOK_LEVELS = 100_000


@dataclasses.dataclass(frozen=True)
class AttackPlan:
    """What an attack would do, as the hunter estimates it from the book and the map.

    Attributes:
        lots: Lots to sell at market.
        mid: Book mid now.
        cluster_price: Grid price of the cluster.
        target_price: Price the mid is pushed to.
        cluster_debt: Long debt newly liquidatable at the target, quote human units.
        cost: Mid value of the lots minus the sale's proceeds, quote human units.
        gain: Lots (base) times the fall from the mid to the marginal book price after the
            hunter's sale plus the expected forced sales.
    """

    lots: int
    mid: float
    cluster_price: float
    target_price: float
    cluster_debt: float
    cost: float
    gain: float


class LiquidationHunter(Trader):
    """One liquidation hunter: reads the public liquidation map, attacks when it pays.

    Rules (see :class:`~marginsim.config.LiquidationHunterConfig` for the parameters):

    1. **Cluster.** On the grid ``mid * (1 - j * grid_step)`` down to ``max_push`` it reads
       the long side of the public map (:meth:`ProtocolsView.liquidation_map`, reference the
       book mid); the cluster is the first grid price where the long debt minus the debt
       already liquidatable at the mid reaches ``min_cluster_debt``. The target is
       ``overshoot`` below the cluster price; the cluster debt is the newly liquidatable long
       debt at the target.
    2. **Push size.** Oracles that read the book mid see ``(best bid + best ask) / 2`` and the
       makers do not requote within a step, so the mid falls to the target once every bid at
       or above ``2 * target - best ask`` is taken: that many lots. No attack when the sale
       would empty the bid side (the mid would vanish) or exceeds the hunter's base.
    3. **Cost and gain.** cost = lots * lot * mid - proceeds (``market_order_cost``, fee
       included); the liquidators are expected to repay ``cascade_share`` of the cluster debt
       and sell ``cascade_share * debt * (1 + liquidation_bonus) / target`` base on the same
       bids; gain = lots * lot * (mid - marginal bid after both sales). It attacks when
       gain > ``profit_margin`` * cost, by selling its own base at market (a short against
       its inventory: it holds the quote).
    4. **Buy-back.** From ``hold_steps`` steps later it buys at market, each step, what is
       still missing of the base it held before the attack (at most the lots it sold, as far
       as its quote pays; a thin book may fill only part); once nothing is missing or its
       quote pays for nothing, it rests ``cooldown_steps`` steps.

    Its P&L (:meth:`pnl`) is the value of its holdings at the mid minus the value of its
    initial holdings at the same mid, quote human units: what the hunting earned, net of the
    market's move on the inventory it started with. It acts only by returning orders.

    Args:
        model: The model.
        config: The hunter's scenario section.
        holder: Its ledger holder id.
        instrument: Engine index of the spot book it trades.
        base_asset: Ledger id of the book's base asset.
        quote_asset: Ledger id of the book's quote asset.
        symbol: Symbol of the base asset (the map's asset).
        protocols: Read-only view of the protocols.
    """

    def __init__(
        self,
        model: mesa.Model,
        config: LiquidationHunterConfig,
        holder: int,
        instrument: int,
        base_asset: int,
        quote_asset: int,
        symbol: str,
        protocols: ProtocolsView,
    ) -> None:
        super().__init__(model)
        self.config = config
        self.holder = int(holder)
        self.instrument = int(instrument)
        self.base_asset = int(base_asset)
        self.quote_asset = int(quote_asset)
        self.symbol = symbol
        self.protocols = protocols
        self.initial: tuple[int, int] | None = None
        #: Lots sold in the open attack (0: none open) and the step it was made.
        self.open_lots = 0
        self.base_before = 0
        self.attack_step = -1
        self.rest_until = 0
        self.attacks = 0
        self._rows: list[tuple[object, ...]] = []

    # ---------------------------------------------------------------- reading
    def _holdings(self, view: MarketView) -> tuple[int, int]:
        me = np.array([self.holder], dtype=np.int64)
        return (
            int(view.balances(me, self.base_asset)[0]),
            int(view.balances(me, self.quote_asset)[0]),
        )

    def _capture(self, view: MarketView) -> None:
        if self.initial is None:
            self.initial = self._holdings(view)

    def pnl(self, view: MarketView) -> float:
        """Holdings at the book's reference price (mid) minus initial holdings at that price.

        Quote human units; 0 before the hunter first looked at its wallet.
        """
        if self.initial is None:
            return 0.0
        base, quote = self._holdings(view)
        price = view.reference_price(self.instrument)
        d_base = (base - self.initial[0]) / 10 ** view.asset_decimals(self.base_asset)
        d_quote = (quote - self.initial[1]) / 10 ** view.asset_decimals(self.quote_asset)
        return d_base * price + d_quote

    # ---------------------------------------------------------------- deciding
    def plan(self, view: MarketView) -> AttackPlan | None:
        """The attack the hunter would make now, or ``None`` when there is none to make."""
        cfg, ins = self.config, self.instrument
        mid = view.mid_price(ins)
        best_ask = view.best_ask(ins)
        if mid is None or best_ask is None:
            return None
        n_grid = int(cfg.max_push / cfg.grid_step + 1e-9)
        grid = mid * (1.0 - cfg.grid_step * np.arange(n_grid + 1))
        lmap = self.protocols.liquidation_map(self.symbol, grid, mid)
        newly = lmap["long_debt"].to_numpy() - float(lmap["long_debt"].iloc[0])
        hits = np.flatnonzero(newly[1:] >= cfg.min_cluster_debt)
        if hits.size == 0:
            return None
        cluster_price = float(grid[hits[0] + 1])
        target = cluster_price * (1.0 - cfg.overshoot)
        at_target = self.protocols.liquidation_map(self.symbol, [target], mid)
        cluster_debt = float(at_target["long_debt"].iloc[0]) - float(lmap["long_debt"].iloc[0])
        tick, lot = view.tick(ins), view.lot(ins)
        bid_limit = 2.0 * target - best_ask * tick
        bids, _ = view.l2(ins, _BOOK_LEVELS)
        if bids.shape[0] == 0:
            return None
        bid_prices = bids[:, 0] * tick
        cum_lots = np.cumsum(bids[:, 1])
        lots = int(bids[bid_prices >= bid_limit, 1].sum())
        if lots <= 0 or lots >= int(cum_lots[-1]):
            return None
        base, _ = self._holdings(view)
        if lots * view.base_units_per_lot(ins) > base:
            return None
        filled, proceeds_units, _ = view.market_order_cost(ins, -1, lots)
        if filled < lots:
            return None
        proceeds = proceeds_units / 10 ** view.asset_decimals(self.quote_asset)
        size = lots * lot
        cost = size * mid - proceeds
        forced_lots = cfg.cascade_share * cluster_debt * (1.0 + cfg.liquidation_bonus) / target
        forced_lots /= lot
        reach = np.searchsorted(cum_lots, lots + forced_lots, side="left")
        after = float(bid_prices[min(int(reach), bid_prices.shape[0] - 1)])
        gain = size * (mid - after)
        if not (gain > 0 and gain > cfg.profit_margin * cost and math.isfinite(gain)):
            return None
        return AttackPlan(lots, mid, cluster_price, target, cluster_debt, cost, gain)

    def act(self, view: MarketView) -> OrderBatch:
        """Buy back when an attack's holding time is over; else attack when it pays."""
        self._capture(view)
        cfg, ins, step = self.config, self.instrument, view.step
        if self.open_lots:
            if step < self.attack_step + cfg.hold_steps:
                return OrderBatch.empty()
            # Buy back what is still missing from the base held before the attack (a thin
            # book may fill a market order only in part: the rest is bought next step).
            base, _ = self._holdings(view)
            missing = -(-(self.base_before - base) // view.base_units_per_lot(ins))
            lots = self._affordable(view, min(self.open_lots, max(missing, 0)))
            if lots <= 0:
                self.open_lots = 0
                self.rest_until = step + cfg.cooldown_steps
                return OrderBatch.empty()
            return OrderBatch.build(ins, 1, int(OrderKind.MARKET), 0, lots, self.holder)
        if step < self.rest_until:
            return OrderBatch.empty()
        plan = self.plan(view)
        if plan is None:
            return OrderBatch.empty()
        self.open_lots = plan.lots
        self.base_before = self._holdings(view)[0]
        self.attack_step = step
        self.attacks += 1
        self._rows.append(
            (
                step,
                self.holder,
                plan.mid,
                plan.cluster_price,
                plan.target_price,
                plan.lots * view.lot(ins),
                plan.cluster_debt,
                plan.cost,
                plan.gain,
            )
        )
        return OrderBatch.build(ins, -1, int(OrderKind.MARKET), 0, plan.lots, self.holder)

    def _affordable(self, view: MarketView, lots: int) -> int:
        """Largest lot count up to ``lots`` whose market buy the hunter's quote pays."""
        _, quote = self._holdings(view)
        lo, hi = 0, int(lots)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            _, cost, _ = view.market_order_cost(self.instrument, 1, mid)
            if cost <= quote:
                lo = mid
            else:
                hi = mid - 1
        return lo

    # ---------------------------------------------------------------- outputs
    def attacks_frame(self) -> pd.DataFrame:
        """The hunter's attacks, one row each (columns :data:`ATTACK_COLUMNS`)."""
        frame = pd.DataFrame.from_records(self._rows, columns=list(ATTACK_COLUMNS))
        return frame.astype(ATTACK_COLUMNS)
