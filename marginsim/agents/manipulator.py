"""The oracle manipulator: pumps a thin book that a lending pool's oracle reads, then borrows.

Attack timing. Oracles observe the market only in the oracle phase (2) and between
liquidation rounds of a step that liquidated something, never during the agent phase (4).
A pump in step ``T``'s agent phase is therefore seen by a ``mid`` oracle in step ``T + 1``'s
oracle phase, and the pool prices the collateral at the pumped mid for the whole of step
``T + 1``'s agent phase, even after the book's maker has requoted around the true value.
So the attack spans two steps: step ``T`` buys (the pump), step ``T + 1`` supplies and
borrows (before any order of its own). A TWAP oracle averages the pump over its window, so
the same two steps borrow far less.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import mesa
import numpy as np

from marginsim.agents.base import OrderBatch, Trader
from marginsim.agents.loopers import LendingAction, LendingActions
from marginsim.agents.market_maker import MarketMaker
from marginsim.config import OracleManipulatorConfig
from marginsim.market.engine import OrderKind

if TYPE_CHECKING:
    from marginsim.market.view import MarketView
    from marginsim.protocols.view import ProtocolsView

__all__ = ["ATTACK_COLUMNS", "OracleManipulator", "ThinBookMaker"]

#: Columns of the ``attacks`` event table (amounts in human units of their asset).
ATTACK_COLUMNS: dict[str, object] = {
    "step": np.int64,
    "borrow_step": np.int64,
    "pool": object,
    "pumped_price": np.float64,
    "oracle_price": np.float64,
    "collateral_bought": np.float64,
    "pump_cost": np.float64,
    "collateral_supplied": np.float64,
    "borrowed": np.float64,
}


class _FixedFairView:
    """A market view whose index and reference price are a fixed fair value."""

    def __init__(self, view: MarketView, price: float) -> None:
        self._view = view
        self.index_price = price
        self._price = price

    def reference_price(self, instrument: int) -> float:
        return self._price

    def __getattr__(self, name: str) -> Any:
        return getattr(self._view, name)


class ThinBookMaker(MarketMaker):
    """A :class:`MarketMaker` whose fair value is a fixed ``price`` (a second token's book).

    It quotes its ladder around ``config.price`` every agent phase (before the traders), so
    its realised volatility stays zero and it never withdraws.
    """

    def act(self, view: MarketView) -> OrderBatch:
        """Post the ladder around the fixed fair value."""
        return super().act(_FixedFairView(view, self.config.price))  # type: ignore[arg-type]


class OracleManipulator(Trader):
    """Pumps a thin book, then borrows against the collateral its pumped mid overvalues.

    The model activates it in three calls in a row (like the lending loopers):
    :meth:`plan_lending` (lending actions, executed at once), :meth:`act` (orders) and
    :meth:`after_trades` (bookkeeping). It never touches a venue.

    - Pump (step ``T``): at ``attack_step``, or with ``attack_step < 0`` at the first step at
      which :meth:`pump_lots` finds a pump within ``budget`` and :meth:`estimated_profit` is
      positive, it sends one market buy of the lots that lift the mid by ``pump``.
    - Borrow (step ``T + 1``): it supplies all the collateral in its wallet and borrows
      ``borrow_share`` of its borrowing power at the pool's (oracle) prices, capped by the
      pool's available liquidity; then it stops for good, leaving the position to the
      liquidators (limited liability: a position worth less than its debt is abandoned).

    Args:
        model: The model.
        config: The scenario section.
        holder: Ledger holder id.
        instrument: Engine index of the thin book.
        collateral_asset: Ledger id of the collateral (the book's base).
        debt_asset: Ledger id of the borrowed asset (the book's quote).
        protocols: Read-only view of the protocols (the profit estimate reads the pool).
        collateral_is_index: The collateral is the exogenous index asset (then the index is
            the P&L reference when ``reference_price`` is 0).

    Attributes:
        state: ``"waiting"``, ``"pumped"`` or ``"done"``.
        reference: Oracle-free collateral price the P&L uses (``None`` until known).
        rows: Rows of the ``attacks`` table.
    """

    def __init__(
        self,
        model: mesa.Model,
        config: OracleManipulatorConfig,
        holder: int,
        instrument: int,
        collateral_asset: int,
        debt_asset: int,
        protocols: ProtocolsView,
        collateral_is_index: bool = False,
    ) -> None:
        super().__init__(model)
        self.config = config
        self.holder = int(holder)
        self.instrument = instrument
        self.collateral_asset = collateral_asset
        self.debt_asset = debt_asset
        self.collateral_is_index = collateral_is_index
        self._protocols = protocols
        self.state = "waiting"
        self.reference: float | None = config.reference_price or None
        self.rows: list[dict[str, object]] = []
        self._initial: tuple[int, int] | None = None
        self._pump_step = -1
        self._pump_lots = 0
        self._wallet_before = (0, 0)
        self._bought_units = 0
        self._pump_cost_units = 0
        self._pumped_price = math.nan

    # ---------------------------------------------------------------- estimates
    def _wallet(self, view: MarketView) -> tuple[int, int]:
        h = np.array([self.holder])
        return (
            int(view.balances(h, self.collateral_asset)[0]),
            int(view.balances(h, self.debt_asset)[0]),
        )

    @staticmethod
    def _marginal(view: MarketView, ins: int, q: int) -> float | None:
        """Price of the ``q + 1``-th ask lot (the best ask after buying ``q`` lots)."""
        f1, _, a1 = view.market_order_cost(ins, 1, q + 1)
        if f1 < q + 1 or a1 is None:
            return None
        if q == 0:
            return a1
        _, _, a0 = view.market_order_cost(ins, 1, q)
        return (a1 * (q + 1) - a0 * q) if a0 is not None else None

    def pump_lots(self, view: MarketView) -> tuple[int, int] | None:
        """``(lots, quote_units)`` of the smallest market buy lifting the mid by ``pump``.

        The mid after buying ``q`` lots is estimated as ``(best bid + price of ask lot
        q + 1) / 2`` from :meth:`MarketView.market_order_cost` (the book unchanged); ``None``
        when the book has no mid, or the pump would empty the ask side or cost more than the
        budget (capped by the wallet).
        """
        ins = self.instrument
        mid, bid = view.mid_price(ins), view.best_bid(ins)
        if mid is None or bid is None:
            return None
        target = mid * (1.0 + self.config.pump)
        bid_price = bid * view.tick(ins)
        quote_unit = 10 ** view.asset_decimals(self.debt_asset)
        budget = min(self.config.budget * quote_unit, self._wallet(view)[1])

        def reaches(q: int) -> bool:
            nxt = self._marginal(view, ins, q)
            return nxt is not None and (bid_price + nxt) / 2.0 >= target

        # Leave at least one ask lot (an empty side has no mid): search 1 .. depth - 1.
        depth = view.market_order_cost(ins, 1, 2**62)[0]
        if depth < 2 or not reaches(depth - 1):
            return None
        lo, hi = 0, depth - 1  # reaches(hi) holds; smallest such q, by bisection
        while hi - lo > 1:
            m = (lo + hi) // 2
            if reaches(m):
                hi = m
            else:
                lo = m
        cost = view.market_order_cost(ins, 1, hi)[1]
        return (hi, cost) if cost <= budget else None

    def estimated_profit(
        self, view: MarketView, protocols: ProtocolsView, lots: int, cost_units: int
    ) -> float:
        """Estimated attack P&L (debt asset, human units) if the pool prices at the target mid.

        ``ltv * collateral * target mid * borrow_share - pump cost - collateral * reference``:
        what it borrows, less the pump and the collateral it gives up (it assumes the oracle
        reports the pumped mid; it does not know the oracle's design).
        """
        ins, cfg = self.instrument, self.config
        mid = view.mid_price(ins)
        if mid is None:
            return -math.inf
        res = protocols.reserve(cfg.pool, cfg.collateral)
        c_unit = 10 ** view.asset_decimals(self.collateral_asset)
        q_unit = 10 ** view.asset_decimals(self.debt_asset)
        held = self._wallet(view)[0] / c_unit
        bought = lots * view.lot(ins)
        ref = self._reference(view)
        borrow = float(res.ltv) * (held + bought) * mid * (1.0 + cfg.pump) * cfg.borrow_share
        return borrow - cost_units / q_unit - (held + bought) * ref

    def _reference(self, view: MarketView) -> float:
        if self.reference is not None:
            return self.reference
        if self.collateral_is_index:
            return view.index_price
        return view.reference_price(self.instrument)

    # ---------------------------------------------------------------- the three calls
    def plan_lending(self, view: MarketView, protocols: ProtocolsView) -> LendingActions:
        """Step ``T + 1``: supply all wallet collateral and borrow against it at pool prices."""
        cfg = self.config
        if self._initial is None:
            self._initial = self._wallet(view)
        if self.state != "pumped":
            return LendingActions.empty(cfg.pool)
        self.state = "done"
        res_c = protocols.reserve(cfg.pool, cfg.collateral)
        res_d = protocols.reserve(cfg.pool, cfg.debt)
        p_c = protocols.reserve_price(cfg.pool, cfg.collateral)
        p_d = protocols.reserve_price(cfg.pool, cfg.debt)
        w_c = self._wallet(view)[0]
        h = np.array([self.holder], dtype=np.int64)
        supplied = int(protocols.supplied_amounts(cfg.pool, h, cfg.collateral)[0])
        borrow = 0
        if p_c is not None and p_d:
            power = float(res_c.ltv) * (supplied + w_c) / res_c.unit * p_c
            borrow = math.floor(power * cfg.borrow_share / p_d * res_d.unit)
            borrow = min(borrow, protocols.available_units(cfg.pool, cfg.debt))
        self.rows.append(
            {
                "step": self._pump_step,
                "borrow_step": view.step,
                "pool": cfg.pool,
                "pumped_price": self._pumped_price,
                "oracle_price": math.nan if p_c is None else float(p_c),
                "collateral_bought": self._bought_units / res_c.unit,
                "pump_cost": self._pump_cost_units / res_d.unit,
                "collateral_supplied": w_c / res_c.unit,
                "borrowed": 0.0,  # set by record_borrow from the wallet
            }
        )
        parts = []
        if w_c > 0:
            parts.append(
                LendingActions.build(cfg.pool, LendingAction.SUPPLY, h, cfg.collateral, w_c)
            )
        if borrow > 0:
            parts.append(LendingActions.build(cfg.pool, LendingAction.BORROW, h, cfg.debt, borrow))
        return LendingActions.concat(cfg.pool, parts)

    def record_borrow(self, view: MarketView, protocols: ProtocolsView) -> None:
        """After the lending actions: note what was actually borrowed."""
        if self.rows and self.rows[-1]["borrow_step"] == view.step:
            owed = protocols.debt_units(self.config.pool, self.holder, self.config.debt)
            unit = 10 ** view.asset_decimals(self.debt_asset)
            self.rows[-1]["borrowed"] = owed / unit

    def act(self, view: MarketView) -> OrderBatch:
        """Step ``T``: the pump (one market buy), when it is time and it pays."""
        cfg = self.config
        if self.state != "waiting":
            return OrderBatch.empty()
        if 0 <= cfg.attack_step != view.step:
            return OrderBatch.empty()
        plan = self.pump_lots(view)
        if plan is None:
            return OrderBatch.empty()
        lots, cost = plan
        if cfg.attack_step < 0 and self.estimated_profit(view, self._protocols, lots, cost) <= 0:
            return OrderBatch.empty()
        if self.reference is None:
            self.reference = self._reference(view)
        self.state = "pumped"
        self._pump_step = view.step
        self._pump_lots = lots
        self._wallet_before = self._wallet(view)
        return OrderBatch.build(self.instrument, 1, int(OrderKind.MARKET), 0, lots, self.holder)

    def after_trades(self, view: MarketView) -> None:
        """Step ``T``: record what the pump bought, cost and where it left the mid."""
        if self.state == "pumped" and self._pump_step == view.step:
            c, d = self._wallet(view)
            self._bought_units = c - self._wallet_before[0]
            self._pump_cost_units = self._wallet_before[1] - d
            mid = view.mid_price(self.instrument)
            self._pumped_price = math.nan if mid is None else mid

    # ---------------------------------------------------------------- P&L
    def pnl(self, view: MarketView, protocols: ProtocolsView) -> float:
        """Holdings now minus at the start, valued at the oracle-free reference (debt asset).

        Holdings are the wallet plus the pool position's equity floored at zero (collateral
        at the reference less debt): an attacker walks away from an underwater position.
        0 before the first activation or while no reference is known.
        """
        if self._initial is None:
            return 0.0
        ref = self._reference(view)
        cfg = self.config
        c_unit = 10 ** view.asset_decimals(self.collateral_asset)
        d_unit = 10 ** view.asset_decimals(self.debt_asset)
        c, d = self._wallet(view)
        h = np.array([self.holder], dtype=np.int64)
        supplied = float(protocols.supplied_amounts(cfg.pool, h, cfg.collateral)[0]) / c_unit
        owed = protocols.debt_units(cfg.pool, self.holder, cfg.debt) / d_unit
        now = c / c_unit * ref + d / d_unit + max(0.0, supplied * ref - owed)
        start = self._initial[0] / c_unit * ref + self._initial[1] / d_unit
        return now - start
