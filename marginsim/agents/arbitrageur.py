"""Arbitrageurs: individuals that close the gap between an AMM pool and a spot book."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import mesa
import numpy as np

from marginsim.agents.base import OrderBatch, Trader
from marginsim.config import ArbitrageursConfig
from marginsim.market.engine import OrderKind

if TYPE_CHECKING:
    from marginsim.market.view import MarketView

__all__ = ["ArbitragePlan", "Arbitrageur", "SwapCall"]

#: How many times an arbitrageur halves a round trip whose edge is below ``min_edge``.
_SIZE_HALVINGS = 8


@dataclasses.dataclass(frozen=True)
class SwapCall:
    """Ask AMM pool ``pool`` to swap ``amount_in`` units for at least ``min_out`` units.

    ``side`` +1 pays quote in for base out, -1 pays base in for quote out (as
    :meth:`~marginsim.market.amm.ConstantProductPool.swap`). The model routes it; a swap the
    pool refuses changes nothing.
    """

    pool: str
    side: int
    amount_in: int
    min_out: int


@dataclasses.dataclass(frozen=True)
class ArbitragePlan:
    """One activation's actions: book orders (submitted first), then swaps, in order."""

    orders: OrderBatch
    swaps: tuple[SwapCall, ...] = ()

    @classmethod
    def nothing(cls) -> ArbitragePlan:
        """A plan that does nothing."""
        return cls(OrderBatch.empty())


class Arbitrageur(Trader):
    """One arbitrageur between an AMM pool and the spot book of the same pair.

    Rules, each activation, from the view only (all amounts exact ledger units):

    - Pool cheap (buying ``n`` lots from the pool costs less than selling them on the book
      pays, net of the taker fee): buy base from the pool (a :class:`SwapCall` of side +1 for
      exactly ``n`` lots of base) and sell ``n`` lots on the book with an IOC order.
    - Pool dear (the reverse): buy ``n`` lots on the book with an IOC order and sell them into
      the pool (side -1).
    - Size: the largest ``n`` whose *marginal* lot still pays (book proceeds of lot ``n``
      minus the pool cost of lot ``n``, both from exact quotes: ``market_order_cost`` and the
      pool's ``amount_in_for`` / ``quote_out``). This is the trade that brings the pool to the
      book's price net of both fees, walking the book's depth. ``n`` is capped by
      ``max_trade``, the wallet (base for the leg that sells base, quote for the leg that
      buys it; each leg is funded from the wallet as it is before the trade) and the book's
      depth. If the whole round trip earns less than ``min_edge`` (proceeds / cost - 1),
      ``n`` is halved up to 8 times; a gap smaller than the fees gives no trade.
    - The IOC limit is the pool's cost (or proceeds) of the marginal lot, so the order fills
      exactly the ``n`` lots the walk priced and never a lot at a loss; the swap's
      ``min_out`` is the exact quote, so it executes as planned or not at all.

    Args:
        model: The model.
        config: The arbitrageurs' scenario section.
        holder: This arbitrageur's ledger holder id.
        pool: Id of the AMM pool.
        instrument: Engine index of the spot book of the pool's pair.
        base_asset: Ledger id of the base asset.
        quote_asset: Ledger id of the quote asset.

    Attributes:
        round_trips: Round trips planned over the run.
        swaps_refused: Swaps the pool refused (counted by the model).
    """

    def __init__(
        self,
        model: mesa.Model,
        config: ArbitrageursConfig,
        holder: int,
        pool: str,
        instrument: int,
        base_asset: int,
        quote_asset: int,
    ) -> None:
        super().__init__(model)
        self.config = config
        self.holder = holder
        self.pool = pool
        self.instrument = instrument
        self.base_asset = base_asset
        self.quote_asset = quote_asset
        self.round_trips = 0
        self.swaps_refused = 0

    def act(self, view: MarketView) -> OrderBatch:
        """The book orders of :meth:`plan` (the model routes the whole plan)."""
        return self.plan(view).orders

    def plan(self, view: MarketView) -> ArbitragePlan:
        """Decide this step's round trip, if one pays."""
        pool, ins = self.pool, self.instrument
        r_base, r_quote = view.amm_reserves(pool)
        if r_base == 0 or r_quote == 0:
            return ArbitragePlan.nothing()
        bupl = view.base_units_per_lot(ins)
        holder = np.array([self.holder])
        base = int(view.balances(holder, self.base_asset)[0])
        quote = int(view.balances(holder, self.quote_asset)[0])
        cap = min(int(self.config.max_trade / view.lot(ins) + 1e-9), (r_base - 1) // bupl)
        # Cheap necessary conditions first: the gross best price must beat the pool's marginal
        # price with its fee, else no lot can pay (most steps end here).
        qupt = self._quote_units_per_tick_lot(view)
        lot_at_pool = r_quote * bupl / r_base  # quote units of one lot at the pool's mid
        keep = 1.0 - view.amm_fee_ppm(pool) / 1_000_000
        bid, ask = view.best_bid(ins), view.best_ask(ins)
        cheap = bid is not None and bid * qupt * keep > lot_at_pool
        dear = ask is not None and ask * qupt < lot_at_pool * keep
        if not (cheap or dear):
            return ArbitragePlan.nothing()

        # Pool cheap: buy base from the pool, sell it on the book.
        def pool_cost(n: int) -> int:
            return view.amm_amount_in_for(pool, 1, n * bupl)

        def book_proceeds(n: int) -> int:
            return view.market_order_cost(ins, -1, n)[1]

        hi = min(cap, base // bupl, view.amm_quote_out(pool, 1, quote) // bupl) if cheap else 0
        hi = min(hi, view.market_order_cost(ins, -1, hi)[0]) if hi > 0 else 0
        n = self._size(hi, book_proceeds, pool_cost)
        if n > 0:
            cost = pool_cost(n)
            limit = -(-(cost - pool_cost(n - 1)) // qupt)
            self.round_trips += 1
            return ArbitragePlan(
                OrderBatch.build(ins, -1, int(OrderKind.IOC), limit, n, self.holder),
                (SwapCall(pool, 1, cost, n * bupl),),
            )

        # Pool dear: buy base on the book, sell it into the pool.
        def book_cost(n: int) -> int:
            return view.market_order_cost(ins, 1, n)[1]

        def pool_proceeds(n: int) -> int:
            return view.amm_quote_out(pool, -1, n * bupl)

        hi = min(cap, base // bupl) if dear else 0
        hi = min(hi, view.market_order_cost(ins, 1, hi)[0]) if hi > 0 else 0
        while hi > 0 and book_cost(hi) > quote:
            hi //= 2
        n = self._size(hi, pool_proceeds, book_cost)
        if n <= 0:
            return ArbitragePlan.nothing()
        marginal = pool_proceeds(n) - pool_proceeds(n - 1)
        limit = marginal // qupt
        if limit <= 0:
            return ArbitragePlan.nothing()
        self.round_trips += 1
        return ArbitragePlan(
            OrderBatch.build(ins, 1, int(OrderKind.IOC), limit, n, self.holder),
            (SwapCall(pool, -1, n * bupl, pool_proceeds(n)),),
        )

    def _size(self, hi: int, proceeds: Callable[[int], int], cost: Callable[[int], int]) -> int:
        """Largest ``n <= hi`` whose marginal lot pays, halved until the edge is met; else 0.

        ``proceeds`` and ``cost`` give the quote units of ``n`` lots on the selling and the
        buying leg. The marginal profit ``proceeds(n) - proceeds(n-1) - (cost(n) -
        cost(n-1))`` falls with ``n`` (both venues get worse as they are walked), so a
        bisection finds the largest ``n`` where it is still >= 0.
        """

        def pays(n: int) -> bool:
            return proceeds(n) - proceeds(n - 1) >= cost(n) - cost(n - 1)

        if hi <= 0 or not pays(1):
            return 0
        lo = 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if pays(mid):
                lo = mid
            else:
                hi = mid - 1
        n = lo
        for _ in range(_SIZE_HALVINGS + 1):
            if n <= 0:
                return 0
            c = cost(n)
            if c > 0 and proceeds(n) >= c * (1.0 + self.config.min_edge):
                return n
            n //= 2
        return 0

    def _quote_units_per_tick_lot(self, view: MarketView) -> int:
        ins = self.instrument
        units = 10 ** view.asset_decimals(view.quote_asset(ins))
        return max(round(view.tick(ins) * view.lot(ins) * units), 1)
