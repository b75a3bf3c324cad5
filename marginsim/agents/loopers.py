"""Lending loopers: leveraged traders who loop on a lending pool (recursive leverage)."""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING

import mesa
import numpy as np

from marginsim.agents.base import OrderBatch, Population, draw
from marginsim.config import LendingLoopersConfig
from marginsim.market.engine import OrderKind

if TYPE_CHECKING:
    from marginsim.market.view import MarketView
    from marginsim.protocols.view import ProtocolsView

__all__ = ["LendingAction", "LendingActions", "LendingLoopers"]


class LendingAction(enum.IntEnum):
    """What a row of :class:`LendingActions` asks the pool to do."""

    SUPPLY = 0
    WITHDRAW = 1
    BORROW = 2
    REPAY = 3


@dataclasses.dataclass(frozen=True)
class LendingActions:
    """Lending-pool calls of one agent phase, as aligned arrays, in the order to execute.

    The model executes row by row through the pool's own methods (``supply``, ``withdraw``,
    ``borrow``, ``repay``); a refused row is skipped and counted. A ``REPAY`` row repays
    ``min(amount, owed)``, so an agent may ask to repay "up to" what its wallet holds.

    Attributes:
        pool: Name of the lending pool.
        kind: :class:`LendingAction` codes (int64).
        holder: Ledger holder id of each acting account (int64).
        symbol: Reserve symbol of each row (str array).
        amount: Units of the underlying (int64, positive).
    """

    pool: str
    kind: np.ndarray
    holder: np.ndarray
    symbol: np.ndarray
    amount: np.ndarray

    @classmethod
    def empty(cls, pool: str) -> LendingActions:
        """No actions."""
        z = np.zeros(0, dtype=np.int64)
        return cls(pool, z, z, np.zeros(0, dtype=str), z)

    @classmethod
    def build(
        cls,
        pool: str,
        kind: int | np.ndarray,
        holder: np.ndarray,
        symbol: str,
        amount: np.ndarray,
    ) -> LendingActions:
        """Rows for ``holder`` (broadcasting ``kind`` and ``symbol``)."""
        holder = np.asarray(holder, dtype=np.int64).reshape(-1)
        n = holder.shape[0]
        return cls(
            pool,
            np.broadcast_to(np.asarray(kind, dtype=np.int64), (n,)).copy(),
            holder,
            np.full(n, symbol),
            np.broadcast_to(np.asarray(amount, dtype=np.int64), (n,)).copy(),
        )

    @classmethod
    def concat(cls, pool: str, parts: list[LendingActions]) -> LendingActions:
        """Concatenate parts of the same pool, keeping their order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(pool)
        return cls(
            pool,
            np.concatenate([p.kind for p in parts]),
            np.concatenate([p.holder for p in parts]),
            np.concatenate([p.symbol for p in parts]),
            np.concatenate([p.amount for p in parts]),
        )

    def __len__(self) -> int:
        return int(self.kind.shape[0])


class LendingLoopers(Population):
    """Accounts that lever up by looping on a lending pool, decided in vectorised calls.

    Each account starts with ``capital`` of the collateral asset in its wallet and draws,
    from the population's stream, a target leverage ``L`` (collateral value / equity) and a
    risk buffer ``b``. Values are at the pool's own prices, so accounts see what the pool's
    oracle sees. The model calls three phases in sequence within the account's activation:

    1. :meth:`plan_lending` (lending actions, executed at once):

       - accounts that never entered supply their wallet collateral (step 0);
       - accounts left without collateral (fully liquidated) re-enter with probability
         ``reentry_probability`` if their wallet holds collateral or debt asset: they
         supply the collateral (the debt asset is spent on collateral in phase 2);
       - accounts with debt whose health factor is below ``1 + b`` (and ``b > 0``)
         *deleverage* one step: withdraw collateral worth
         ``X = (h * D - lt * C) / (h - lt)`` with ``h = 1 + 2b`` (what brings the health
         factor back to ``h`` if sold at the pool's price), capped by what the pool lets
         them withdraw (debt within borrowing power; an account past its LTV cannot
         withdraw and waits for a liquidator);
       - other accounts below target *loop* with probability ``loop_probability``: borrow
         ``B = min(L' * E - C, ltv * C - D)`` of the debt asset (values; ``C`` collateral,
         ``D`` debt, ``E = C - D`` equity after this phase's supply), where the effective
         target ``L' = min(L, h / (h - lt))`` keeps the health factor at target (``lt *
         L' / (L' - 1)``) at or above ``h``: the band between ``1 + b`` and ``1 + 2b``
         stops accounts from looping into their own deleverage trigger. A loop is skipped
         when ``B`` is below 1% of equity.

    2. :meth:`act` (orders): accounts in the market buy collateral at market with all the
       debt asset in their wallet (the engine caps a market buy by the wallet);
       deleveraging accounts sell the collateral they withdrew at market. These forced
       sales move the price the other accounts' positions depend on.

    3. :meth:`after_trades` (lending actions): accounts in the market repay debt with the
       debt asset left in their wallet (sale proceeds, unspent borrowings) and supply the
       collateral in their wallet (what they bought, or what the book did not take).

    The target leverage must be below ``1 / (1 - ltv)`` (checked by the scenario): beyond
    that the pool's LTV does not let a loop reach it.

    Args:
        model: The model.
        config: The population's scenario section.
        first_holder: Ledger id of account 0.
        instrument: Engine index of the spot book they trade.
        collateral_asset: Ledger id of the collateral (the book's base asset).
        stream: The population's random stream.

    Attributes:
        entered: Whether each account has entered the pool.
        loops: Loop iterations planned so far (borrows asked for).
        deleverages: Deleverage steps planned so far (withdrawals asked for).
        reentries: Re-entries so far.
        refused_actions: Lending actions the pool refused (counted by the model).
    """

    def __init__(
        self,
        model: mesa.Model,
        config: LendingLoopersConfig,
        first_holder: int,
        instrument: int,
        collateral_asset: int,
        stream: np.random.Generator,
    ) -> None:
        super().__init__(model, first_holder, config.count, stream)
        self.config = config
        self.pool = config.pool
        self.instrument = instrument
        self.collateral_asset = collateral_asset
        n = self.count
        self.leverage = draw(config.leverage, n, stream)
        self.risk_buffer = np.maximum(draw(config.risk_buffer, n, stream), 0.0)
        self.entered = np.zeros(n, dtype=bool)
        self.loops = 0
        self.deleverages = 0
        self.reentries = 0
        self.refused_actions = 0
        # Set by plan_lending for act and after_trades of the same step.
        self._in_market = np.zeros(n, dtype=bool)
        self._selling = np.zeros(n, dtype=bool)

    def target_leverage(self, liquidation_threshold: float) -> np.ndarray:
        """Effective target ``min(L, h / (h - lt))`` with ``h = 1 + 2 * risk_buffer``."""
        h = 1.0 + 2.0 * self.risk_buffer
        with np.errstate(divide="ignore"):
            cap = np.where(h > liquidation_threshold, h / (h - liquidation_threshold), np.inf)
        return np.minimum(self.leverage, cap)

    def plan_lending(self, view: MarketView, protocols: ProtocolsView) -> LendingActions:
        """Phase 1: supply (entry), withdraw (deleverage) and borrow (loop)."""
        cfg, pool, n = self.config, self.pool, self.count
        self._in_market = np.zeros(n, dtype=bool)
        self._selling = np.zeros(n, dtype=bool)
        res_c = protocols.reserve(pool, cfg.collateral)
        res_d = protocols.reserve(pool, cfg.debt)
        p_c = protocols.reserve_price(pool, cfg.collateral)
        p_d = protocols.reserve_price(pool, cfg.debt)
        # Draws come first and always, so one step's decisions never shift the next's.
        u_reenter = self.stream.random(n)
        u_loop = self.stream.random(n)
        if p_c is None or p_d is None:
            return LendingActions.empty(pool)
        h = self.holders
        supplied = protocols.supplied_amounts(pool, h, cfg.collateral)
        debt = protocols.debt_amounts(pool, h, cfg.debt)
        hf = protocols.health_factors(pool, h)
        w_c = view.balances(h, res_c.asset)
        w_d = view.balances(h, res_d.asset)

        has_funds = (w_c > 0) | (w_d > 0)
        entering = ~self.entered & has_funds
        out = self.entered & (supplied <= 0)
        reentering = out & has_funds & (u_reenter < cfg.reentry_probability)
        self.entered |= entering
        self.reentries += int(reentering.sum())
        supplying = (entering | reentering) & (w_c > 0)
        holding = supplied > 0
        in_market = holding | entering | reentering

        ltv = float(res_c.ltv)
        lt = float(res_c.liquidation_threshold)
        coll_units = supplied + np.where(supplying, w_c, 0)
        c_val = coll_units * (p_c / res_c.unit)
        d_val = debt * (p_d / res_d.unit)
        equity = c_val - d_val

        # Deleverage: health factor below 1 + buffer (never when the buffer is 0).
        b = self.risk_buffer
        delever = holding & (debt > 0) & (b > 0) & (hf < 1.0 + b)
        target_hf = 1.0 + 2.0 * b
        x_target = (target_hf * d_val - lt * c_val) / (target_hf - lt)
        x_allowed = (c_val - d_val / ltv) * 0.999 if ltv > 0 else np.zeros(n)
        x_val = np.minimum(x_target, x_allowed)
        withdraw_units = np.floor(np.maximum(x_val, 0.0) / p_c * res_c.unit)
        withdraw_units = np.minimum(withdraw_units, supplied)
        delever &= withdraw_units >= view.base_units_per_lot(self.instrument)

        # Loop: one more borrow towards the effective target leverage.
        looping = in_market & ~delever & (equity > 0) & (u_loop < cfg.loop_probability)
        b_target = self.target_leverage(lt) * equity - c_val
        b_ltv = (ltv * c_val - d_val) * 0.999
        b_val = np.minimum(b_target, b_ltv)
        looping &= b_val > 0.01 * equity
        borrow_units = np.floor(np.maximum(b_val, 0.0) / p_d * res_d.unit)
        looping &= borrow_units >= 1

        self._in_market = in_market & ~delever
        self._selling = delever
        self.loops += int(looping.sum())
        self.deleverages += int(delever.sum())
        sup, wd, bor = np.flatnonzero(supplying), np.flatnonzero(delever), np.flatnonzero(looping)
        return LendingActions.concat(
            pool,
            [
                LendingActions.build(pool, LendingAction.SUPPLY, h[sup], cfg.collateral, w_c[sup]),
                LendingActions.build(
                    pool,
                    LendingAction.WITHDRAW,
                    h[wd],
                    cfg.collateral,
                    withdraw_units[wd].astype(np.int64),
                ),
                LendingActions.build(
                    pool, LendingAction.BORROW, h[bor], cfg.debt, borrow_units[bor].astype(np.int64)
                ),
            ],
        )

    def act(self, view: MarketView) -> OrderBatch:
        """Phase 2: buy collateral with the wallet's debt asset; sell withdrawn collateral."""
        ins, h = self.instrument, self.holders
        quote_unit = 10 ** view.asset_decimals(view.quote_asset(ins))
        w_d = view.balances(h, view.quote_asset(ins))
        price = view.reference_price(ins)
        lots = np.floor(w_d / quote_unit / price / view.lot(ins)).astype(np.int64)
        buy = np.flatnonzero(self._in_market & (lots > 0))
        w_c = view.balances(h, self.collateral_asset)
        sell_lots = w_c // view.base_units_per_lot(ins)
        sell = np.flatnonzero(self._selling & (sell_lots > 0))
        market = int(OrderKind.MARKET)
        return OrderBatch.concat(
            [
                OrderBatch.build(ins, -1, market, 0, sell_lots[sell], h[sell]),
                OrderBatch.build(ins, 1, market, 0, lots[buy], h[buy]),
            ]
        )

    def after_trades(self, view: MarketView, protocols: ProtocolsView) -> LendingActions:
        """Phase 3: repay debt with the wallet's debt asset; supply the wallet's collateral."""
        cfg, pool, h = self.config, self.pool, self.holders
        res_c = protocols.reserve(pool, cfg.collateral)
        res_d = protocols.reserve(pool, cfg.debt)
        active = self._in_market | self._selling
        w_d = view.balances(h, res_d.asset)
        debt = protocols.debt_amounts(pool, h, cfg.debt)
        repay = np.flatnonzero(active & (w_d > 0) & (debt > 0))
        w_c = view.balances(h, res_c.asset)
        min_supply = max(1, res_c.unit // 1_000_000)
        supply = np.flatnonzero(active & (w_c >= min_supply))
        return LendingActions.concat(
            pool,
            [
                LendingActions.build(
                    pool,
                    LendingAction.REPAY,
                    h[repay],
                    cfg.debt,
                    np.minimum(w_d[repay], debt[repay].astype(np.int64)),
                ),
                LendingActions.build(
                    pool, LendingAction.SUPPLY, h[supply], cfg.collateral, w_c[supply]
                ),
            ],
        )
