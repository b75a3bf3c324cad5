"""Leveraged traders: a population that borrows on a lending pool to margin perp positions."""

from __future__ import annotations

import collections
import dataclasses
import enum
from typing import TYPE_CHECKING

import mesa
import numpy as np
from scipy.special import ndtr

from marginsim.agents.base import OrderBatch, Population, draw
from marginsim.agents.loopers import LendingAction, LendingActions
from marginsim.config import LeveragedTradersConfig
from marginsim.market.engine import OrderKind

if TYPE_CHECKING:
    from marginsim.market.view import MarketView
    from marginsim.protocols.view import ProtocolsView

__all__ = [
    "Choice",
    "LeveragedPlan",
    "LeveragedTraders",
    "PerpMarginAction",
    "PerpMarginActions",
    "barrier_hit_probability",
    "choose",
    "lending_liquidation_distance",
    "liquidation_probability",
    "perp_liquidation_distances",
]


class Choice(enum.IntEnum):
    """What an account does with its exposure this step (ties go to the lowest code)."""

    HOLD = 0
    ADD = 1
    REDUCE = 2
    CLOSE = 3


class PerpMarginAction(enum.IntEnum):
    """What a row of :class:`PerpMarginActions` asks the perp venue to do."""

    DEPOSIT = 0
    WITHDRAW = 1


@dataclasses.dataclass(frozen=True)
class PerpMarginActions:
    """Margin deposits and withdrawals on one perp venue, as aligned arrays, in order.

    The model executes row by row through the venue's ``deposit`` and ``withdraw``; a
    ``WITHDRAW`` row takes ``min(amount, what the venue lets the account withdraw)``, so an
    agent may ask for "up to" an amount. A refused row is skipped and counted.

    Attributes:
        venue: Name of the perp venue.
        kind: :class:`PerpMarginAction` codes (int64).
        holder: Ledger holder id of each account (int64).
        amount: Settlement-asset units (int64, positive).
    """

    venue: str
    kind: np.ndarray
    holder: np.ndarray
    amount: np.ndarray

    @classmethod
    def empty(cls, venue: str) -> PerpMarginActions:
        """No actions."""
        z = np.zeros(0, dtype=np.int64)
        return cls(venue, z, z, z)

    @classmethod
    def build(
        cls, venue: str, kind: int, holder: np.ndarray, amount: np.ndarray
    ) -> PerpMarginActions:
        """Rows of one kind for ``holder``."""
        holder = np.asarray(holder, dtype=np.int64).reshape(-1)
        n = holder.shape[0]
        return cls(
            venue,
            np.full(n, int(kind), dtype=np.int64),
            holder,
            np.broadcast_to(np.asarray(amount, dtype=np.int64), (n,)).copy(),
        )

    @classmethod
    def concat(cls, venue: str, parts: list[PerpMarginActions]) -> PerpMarginActions:
        """Concatenate parts of the same venue, keeping their order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(venue)
        return cls(
            venue,
            np.concatenate([p.kind for p in parts]),
            np.concatenate([p.holder for p in parts]),
            np.concatenate([p.amount for p in parts]),
        )

    def __len__(self) -> int:
        return int(self.kind.shape[0])


@dataclasses.dataclass(frozen=True)
class LeveragedPlan:
    """The pre-trade calls of one activation: lending first, then margin deposits."""

    lending: LendingActions
    margin: PerpMarginActions


# ----------------------------------------------------------------------------- the estimates
def barrier_hit_probability(
    distance: np.ndarray, sigma: np.ndarray | float, horizon: np.ndarray | float
) -> np.ndarray:
    """Probability that a driftless log price hits a barrier within ``horizon`` steps.

    Reflection principle for Brownian motion: ``2 * Phi(-d / (sigma * sqrt(h)))`` with
    ``d`` the log distance to the barrier and ``sigma`` the per-step volatility. A barrier
    already reached (``d <= 0``) gives 1, an absent one (``d = inf``) 0.

    Args:
        distance: Log distance to the barrier (``inf``: no barrier).
        sigma: Per-step volatility of the log price (> 0).
        horizon: Horizon in steps (> 0).

    Returns:
        float64 array of probabilities in [0, 1].
    """
    d = np.asarray(distance, dtype=np.float64)
    scale = np.asarray(sigma, dtype=np.float64) * np.sqrt(np.asarray(horizon, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2.0 * ndtr(-d / scale)
    return np.where(d <= 0, 1.0, np.minimum(p, 1.0))


def lending_liquidation_distance(
    collateral_value: np.ndarray, debt_value: np.ndarray, liquidation_threshold: float
) -> np.ndarray:
    """Log fall of the collateral price that brings the health factor to 1: ``ln(HF)``.

    With one collateral and a stablecoin debt, ``HF = lt * C / D`` scales with the
    collateral price, so the account is liquidated after a fall by the factor ``1 / HF``.
    ``inf`` without debt; ``<= 0`` when already liquidatable.
    """
    c = np.asarray(collateral_value, dtype=np.float64)
    d = np.asarray(debt_value, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        hf = liquidation_threshold * c / d
        out = np.log(np.maximum(hf, 1e-300))
    return np.where(d > 0, out, np.inf)


def perp_liquidation_distances(
    notional: np.ndarray, margin: np.ndarray, maintenance_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Log distance of the mark to a one-position cross account's liquidation, down and up.

    With ``n`` the signed notional at mark ``P`` (``q * P``), ``M`` the margin balance and
    ``m`` the maintenance rate, the account is liquidated at the mark ``P'`` where
    ``M + q * (P' - P) = m * |q| * P'``, i.e. at ``x = P' / P`` equal to
    ``(1 - M / n) / (1 - m)`` for a long and ``(1 + M / |n|) / (1 + m)`` for a short
    (one maintenance rate: the trader's estimate ignores higher tiers). A long's barrier
    is below (distance ``-ln x``, ``inf`` when ``x <= 0``: no positive price liquidates
    it), a short's above (distance ``ln x``).

    Returns:
        ``(down, up)``: float64 arrays; ``inf`` where there is no barrier on that side,
        ``<= 0`` where the account is already liquidatable.
    """
    n = np.asarray(notional, dtype=np.float64)
    m_bal = np.asarray(margin, dtype=np.float64)
    size = np.abs(n)
    down = np.full(n.shape, np.inf)
    up = np.full(n.shape, np.inf)
    long_, short = n > 0, n < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        x_long = (1.0 - m_bal / size) / (1.0 - maintenance_rate)
        x_short = (1.0 + m_bal / size) / (1.0 + maintenance_rate)
        d_long = np.where(x_long > 0, -np.log(np.where(x_long > 0, x_long, 1.0)), np.inf)
        d_short = np.where(x_short > 0, np.log(np.where(x_short > 0, x_short, 1.0)), 0.0)
    down[long_] = d_long[long_]
    up[short] = d_short[short]
    return down, up


def liquidation_probability(
    down: np.ndarray,
    up: np.ndarray,
    sigma: np.ndarray | float,
    horizon: np.ndarray | float,
) -> np.ndarray:
    """Probability of liquidation on any venue within the horizon.

    The nearest barrier below and the nearest above are each hit with
    :func:`barrier_hit_probability`; the two are added (a union bound, exact when at most
    one side has a barrier) and capped at 1.
    """
    p = barrier_hit_probability(down, sigma, horizon) + barrier_hit_probability(up, sigma, horizon)
    return np.minimum(p, 1.0)


def choose(
    *,
    mu: np.ndarray,
    sigma: float,
    horizon: np.ndarray,
    tolerance: np.ndarray,
    early: np.ndarray,
    collateral_value: np.ndarray,
    debt_value: np.ndarray,
    margin: np.ndarray,
    notional: np.ndarray,
    liquidation_threshold: float,
    maintenance_rate: float,
    add_debt: np.ndarray,
    add_notional: np.ndarray,
    reduce_fraction: float,
    reduce_withdraw: np.ndarray,
    trading_cost: float,
) -> np.ndarray:
    """The add / hold / reduce / close rule, one vectorised evaluation for all accounts.

    For each candidate the account's state after it is estimated (``C`` collateral value,
    ``D`` debt, ``M`` perp margin balance, ``n`` signed notional):

    - hold: unchanged;
    - add: ``D + b``, ``M + b``, ``n + a`` (``b = add_debt`` borrowed and deposited,
      ``a = add_notional`` signed, opened at market);
    - reduce: ``n * (1 - f)``, ``M - w``, ``max(0, D - w)`` (``w = reduce_withdraw`` taken
      back from the venue and repaid);
    - close: ``n = 0``, ``M`` withdrawn, ``max(0, D - M)``.

    Each is scored ``J = mu * n / E - p / tolerance - k * |traded| / E`` with ``E = C - D +
    M`` the equity (unchanged by the moves), ``k = trading_cost`` per unit of notional
    traded (``|a|`` for an add, ``f * |n|`` for a reduce, ``|n|`` for a close, 0 for hold;
    it makes a small or noisy signal not worth a trade), ``mu`` the expected log return over
    the horizon and ``p``
    :func:`liquidation_probability` of the state (lending barrier ``ln(lt * C / D)`` below,
    perp barrier by :func:`perp_liquidation_distances`). An account with ``early`` False
    does not credit reduce or close with a lower ``p`` (they are scored with the hold
    state's ``p``), so it cuts exposure only when its signal turns. Add needs ``b > 0`` and
    ``a != 0``; reduce needs a position; close a position or margin. The highest score
    wins; ties go to the lowest :class:`Choice` code (hold first). Accounts with ``E <= 0``
    hold.

    Returns:
        int64 array of :class:`Choice` codes.
    """
    c = np.asarray(collateral_value, dtype=np.float64)
    d = np.asarray(debt_value, dtype=np.float64)
    m = np.asarray(margin, dtype=np.float64)
    n = np.asarray(notional, dtype=np.float64)
    equity = c - d + m
    safe_e = np.where(equity > 0, equity, 1.0)
    lt, mm = liquidation_threshold, maintenance_rate

    def score(
        d_new: np.ndarray, m_new: np.ndarray, n_new: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        p_down, p_up = perp_liquidation_distances(n_new, m_new, mm)
        down = np.minimum(lending_liquidation_distance(c, d_new, lt), p_down)
        p = liquidation_probability(down, p_up, sigma, horizon)
        return mu * n_new / safe_e, p

    g_hold, p_hold = score(d, m, n)
    g_add, p_add = score(d + add_debt, m + add_debt, n + add_notional)
    w = np.minimum(reduce_withdraw, np.maximum(m, 0.0))
    g_red, p_red = score(np.maximum(d - w, 0.0), m - w, n * (1.0 - reduce_fraction))
    m_pos = np.maximum(m, 0.0)
    g_close, p_close = score(np.maximum(d - m_pos, 0.0), m - m_pos, np.zeros_like(n))
    p_red = np.where(early, p_red, p_hold)
    p_close = np.where(early, p_close, p_hold)
    tol = np.asarray(tolerance, dtype=np.float64)
    # What trading the notional costs, as a share of equity: a move must beat it.
    cost = trading_cost / safe_e
    add_notional = np.asarray(add_notional, dtype=np.float64)
    j = np.stack(
        [
            g_hold - p_hold / tol,
            np.where(
                (add_debt > 0) & (add_notional != 0),
                g_add - p_add / tol - cost * np.abs(add_notional),
                -np.inf,
            ),
            np.where(n != 0, g_red - p_red / tol - cost * reduce_fraction * np.abs(n), -np.inf),
            np.where((n != 0) | (m > 0), g_close - p_close / tol - cost * np.abs(n), -np.inf),
        ]
    )
    out = np.argmax(j, axis=0).astype(np.int64)
    return np.where(equity > 0, out, int(Choice.HOLD))


# ----------------------------------------------------------------------------- the population
class LeveragedTraders(Population):
    """Accounts that borrow on a lending pool and post the loan as perp margin.

    Each account starts with ``capital`` of the collateral in its wallet and draws, from
    the population's stream: a borrow ratio ``beta`` (largest debt as a share of its
    borrowing power ``ltv * C``), a perp leverage ``l`` (notional per unit of margin
    added), a risk tolerance ``tau``, a horizon ``h`` (steps), signal weights ``w_t, w_v,
    w_n`` and the early-deleverage flag (with probability ``early_deleverage_share``).

    Every step, from the perp mark ``P``, the fundamental ``F`` (the exogenous index) and
    the realised per-step volatility ``sigma`` of the mark's log returns over
    ``volatility_window`` steps (never below the scenario's calm volatility), each account's
    expected log return over its horizon is

    ``mu = w_t * ln(P_t / P_(t-W)) * h / W + w_v * ln(F / P) + w_n * sigma * sqrt(h) * z``

    (``W = trend_window``; the trend term is 0 until ``W`` marks are seen). ``z`` is the
    account's private view, a standard normal that persists over about its horizon: every
    step ``z <- rho * z + sqrt(1 - rho^2) * eps`` with ``rho = exp(-1 / h)`` and ``eps`` a
    fresh standard normal, so a position opened on a private view is not closed on the
    next draw. With probability ``decision_probability`` an
    account that holds collateral, a position or margin decides by :func:`choose` between
    hold, add (borrow ``b = min(add_fraction * beta * ltv * C, beta * ltv * C - D)``,
    deposit it, open ``l * b`` of notional in the direction of its position, or of ``mu``
    when flat; an add with ``b`` below a quarter of ``add_fraction * beta * ltv * C`` is
    not offered), reduce (close ``reduce_fraction`` of the position at market, withdraw the
    margin above ``|n'| / l`` and repay debt with it) and close (close the position,
    withdraw all margin, repay). Values are at the pool's prices for the lending leg and at
    the mark for the perp leg.

    The model calls four phases in a row within the population's activation:
    :meth:`plan` (supply at entry, borrow and deposit for adds), :meth:`act` (perp market
    orders), :meth:`after_trades` (margin withdrawals of reduces and closes) and
    :meth:`settle` (repayments from the wallet).

    Args:
        model: The model.
        config: The population's scenario section.
        first_holder: Ledger id of account 0.
        instrument: Engine index of the perp contract.
        venue: Name of its perp venue.
        calm_volatility: Per-step volatility used as the floor of ``sigma``.
        stream: The population's random stream.

    Attributes:
        early: Early-deleverage flag of each account.
        choices: Count of each :class:`Choice` made so far (indexed by code).
        refused_actions: Lending and margin actions the venues refused (counted by the
            model).
        last_choice: Each account's choice of the last step (HOLD when it did not decide).
    """

    def __init__(
        self,
        model: mesa.Model,
        config: LeveragedTradersConfig,
        first_holder: int,
        instrument: int,
        venue: str,
        calm_volatility: float,
        stream: np.random.Generator,
    ) -> None:
        super().__init__(model, first_holder, config.count, stream)
        self.config = config
        self.pool = config.pool
        self.instrument = instrument
        self.venue = venue
        self.calm_volatility = max(float(calm_volatility), 1e-12)
        n = self.count
        self.borrow_ratio = draw(config.borrow_ratio, n, stream)
        self.perp_leverage = draw(config.perp_leverage, n, stream)
        self.tolerance = draw(config.risk_tolerance, n, stream)
        self.horizon = draw(config.horizon_steps, n, stream)
        self.weight_trend = draw(config.weight_trend, n, stream)
        self.weight_value = draw(config.weight_value, n, stream)
        self.weight_noise = draw(config.weight_noise, n, stream)
        self.early = stream.random(n) < config.early_deleverage_share
        #: Each account's private view (standard normal), persistent over its horizon.
        self.view_z = stream.standard_normal(n)
        # AR(1) memory of the private view: its correlation over h steps is exp(-1).
        self._view_rho = np.exp(-1.0 / self.horizon)
        self.entered = np.zeros(n, dtype=bool)
        self.marks: collections.deque[float] = collections.deque(
            maxlen=max(config.trend_window, config.volatility_window) + 1
        )
        self.choices = np.zeros(len(Choice), dtype=np.int64)
        self.refused_actions = 0
        self.last_choice = np.zeros(n, dtype=np.int64)
        # Set by plan for act, after_trades and settle of the same step.
        self._side = np.zeros(n, dtype=np.int64)
        self._lots = np.zeros(n, dtype=np.int64)
        self._withdraw = np.zeros(n, dtype=np.float64)

    # ----------------------------------------------------------------------- signal
    def volatility(self) -> float:
        """Realised per-step volatility of the mark, floored at the calm volatility."""
        window = self.config.volatility_window
        marks = np.fromiter(self.marks, dtype=np.float64)[-window - 1 :]
        if marks.shape[0] < 3:
            return self.calm_volatility
        return max(float(np.diff(np.log(marks)).std()), self.calm_volatility)

    def trend(self) -> float:
        """``ln(P_t / P_(t-W))`` over ``trend_window`` steps (0 before enough marks)."""
        w = self.config.trend_window
        if len(self.marks) <= w:
            return 0.0
        return float(np.log(self.marks[-1] / self.marks[-1 - w]))

    def expected_return(
        self, mark: float, fundamental: float, z: np.ndarray, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """``mu`` (see the class docstring) of the accounts ``rows`` (all by default).

        Args:
            mark: The perp mark now.
            fundamental: The fundamental value now.
            z: The private views of all accounts.
            rows: Indices of the accounts wanted.
        """
        idx = slice(None) if rows is None else rows
        sigma, h = self.volatility(), self.horizon[idx]
        return (
            self.weight_trend[idx] * self.trend() * h / self.config.trend_window
            + self.weight_value[idx] * np.log(fundamental / mark)
            + self.weight_noise[idx] * sigma * np.sqrt(h) * z[idx]
        )

    # ----------------------------------------------------------------------- phases
    def plan(self, view: MarketView, protocols: ProtocolsView) -> LeveragedPlan:
        """Phase 1: supply at entry; decide; borrow and deposit for the accounts that add."""
        cfg, pool, n, h = self.config, self.pool, self.count, self.holders
        self._side = np.zeros(n, dtype=np.int64)
        self._lots = np.zeros(n, dtype=np.int64)
        self._withdraw = np.zeros(n, dtype=np.float64)
        self.last_choice = np.zeros(n, dtype=np.int64)
        # Draws come first and always, so one step's decisions never shift the next's.
        u_decide = self.stream.random(n)
        eps = self.stream.standard_normal(n)
        empty = LeveragedPlan(LendingActions.empty(pool), PerpMarginActions.empty(self.venue))
        mark = protocols.perp_mark(self.venue, self.instrument)
        res_c = protocols.reserve(pool, cfg.collateral)
        res_d = protocols.reserve(pool, cfg.debt)
        p_c = protocols.reserve_price(pool, cfg.collateral)
        p_d = protocols.reserve_price(pool, cfg.debt)
        if mark is None or p_c is None or p_d is None:
            return empty
        self.marks.append(mark)
        w_c = view.balances(h, res_c.asset)
        entering = ~self.entered & (w_c > 0)
        self.entered |= entering
        rho = self._view_rho
        self.view_z = rho * self.view_z + np.sqrt(1.0 - rho * rho) * eps
        # Only the accounts that decide this step are read and scored (a few percent of a
        # large population).
        r = np.flatnonzero(self.entered & (u_decide < cfg.decision_probability))
        hr = h[r]
        supplied = protocols.supplied_amounts(pool, hr, cfg.collateral) + np.where(
            entering[r], w_c[r], 0
        )
        debt = protocols.debt_amounts(pool, hr, cfg.debt)
        c_val = supplied * (p_c / res_c.unit)
        d_val = debt * (p_d / res_d.unit)
        lot = view.lot(self.instrument)
        size = protocols.perp_positions(self.venue, hr, self.instrument)
        notional = size * lot * mark
        margin = protocols.perp_margin_balances(self.venue, hr)
        mu = self.expected_return(mark, view.index_price, self.view_z, r)
        leverage = self.perp_leverage[r]
        # An account whose collateral was all seized still decides while it has a position
        # or margin to bring back (it can no longer add: its borrowing power is 0).
        active = (supplied > 0) | (size != 0) | (margin > 0)
        b_max = self.borrow_ratio[r] * float(res_c.ltv) * c_val
        add_debt = np.floor(
            np.maximum(np.minimum(cfg.add_fraction * b_max, b_max - d_val), 0.0) / p_d * res_d.unit
        ) * (p_d / res_d.unit)
        direction = np.where(size != 0, np.sign(size), np.sign(mu)).astype(np.int64)
        add_lots = np.floor(leverage * add_debt / mark / lot).astype(np.int64)
        # Adds smaller than a quarter of a full increment are not worth a borrow, a deposit
        # and an order (they would only top up debt grown by interest or room opened by a
        # small price rise).
        worth = (add_lots > 0) & (add_debt >= 0.25 * cfg.add_fraction * b_max)
        add_debt = np.where(worth, add_debt, 0.0)
        add_notional = direction * add_lots * lot * mark
        reduce_lots = np.ceil(cfg.reduce_fraction * np.abs(size)).astype(np.int64)
        kept = np.abs(size) - reduce_lots
        withdraw = np.maximum(margin - kept * lot * mark / leverage, 0.0)
        choice = choose(
            mu=mu,
            sigma=self.volatility(),
            horizon=self.horizon[r],
            tolerance=self.tolerance[r],
            early=self.early[r],
            collateral_value=c_val,
            debt_value=d_val,
            margin=margin,
            notional=notional,
            liquidation_threshold=float(res_c.liquidation_threshold),
            maintenance_rate=protocols.perp_maintenance_rate(self.venue),
            add_debt=add_debt,
            add_notional=add_notional,
            reduce_fraction=cfg.reduce_fraction,
            reduce_withdraw=withdraw,
            trading_cost=cfg.trading_cost,
        )
        choice = np.where(active, choice, int(Choice.HOLD))
        self.last_choice[r] = choice
        self.choices += np.bincount(self.last_choice, minlength=len(Choice))

        add = choice == Choice.ADD
        red = choice == Choice.REDUCE
        close = choice == Choice.CLOSE
        side = np.where(add, direction, np.where(red | close, -np.sign(size), 0))
        lots = np.where(add, add_lots, np.where(red, reduce_lots, np.abs(size)))
        self._side[r] = side
        self._lots[r] = np.where(side != 0, lots, 0)
        self._withdraw[r] = np.where(red, withdraw, np.where(close, np.inf, 0.0))

        sup, bor = np.flatnonzero(entering), np.flatnonzero(add)
        borrow_units = np.round(add_debt[bor] / p_d * res_d.unit).astype(np.int64)
        return LeveragedPlan(
            LendingActions.concat(
                pool,
                [
                    LendingActions.build(
                        pool, LendingAction.SUPPLY, h[sup], cfg.collateral, w_c[sup]
                    ),
                    LendingActions.build(
                        pool, LendingAction.BORROW, hr[bor], cfg.debt, borrow_units
                    ),
                ],
            ),
            PerpMarginActions.build(self.venue, PerpMarginAction.DEPOSIT, hr[bor], borrow_units),
        )

    def act(self, view: MarketView) -> OrderBatch:
        """Phase 2: the perp market orders of adds, reduces and closes."""
        rows = np.flatnonzero((self._side != 0) & (self._lots > 0))
        return OrderBatch.build(
            self.instrument,
            self._side[rows],
            int(OrderKind.MARKET),
            0,
            self._lots[rows],
            self.holders[rows],
        )

    def after_trades(self, view: MarketView, protocols: ProtocolsView) -> PerpMarginActions:
        """Phase 3: withdraw margin after reducing (the excess) or closing (all of it)."""
        rows = np.flatnonzero(self._withdraw > 0)
        if rows.size == 0:
            return PerpMarginActions.empty(self.venue)
        unit = 10 ** view.asset_decimals(protocols.perp_settlement(self.venue))
        balance = protocols.perp_margin_balances(self.venue, self.holders[rows])
        # Rounded up: the balance is a float read of an integer, and the model caps each
        # withdrawal at what the venue allows, so a close takes every unit.
        amount = np.ceil(np.minimum(self._withdraw[rows], balance) * unit - 1e-6)
        keep = amount >= 1
        return PerpMarginActions.build(
            self.venue,
            PerpMarginAction.WITHDRAW,
            self.holders[rows[keep]],
            amount[keep].astype(np.int64),
        )

    def settle(self, view: MarketView, protocols: ProtocolsView) -> LendingActions:
        """Phase 4: repay debt with the debt asset in the wallet (reduces and closes)."""
        cfg, pool = self.config, self.pool
        rows = np.flatnonzero(self._withdraw > 0)
        if rows.size == 0:
            return LendingActions.empty(pool)
        h = self.holders[rows]
        res_d = protocols.reserve(pool, cfg.debt)
        w_d = view.balances(h, res_d.asset)
        debt = protocols.debt_amounts(pool, h, cfg.debt)
        pay = np.flatnonzero((w_d > 0) & (debt > 0))
        return LendingActions.build(
            pool,
            LendingAction.REPAY,
            h[pay],
            cfg.debt,
            np.minimum(w_d[pay], debt[pay].astype(np.int64)),
        )
