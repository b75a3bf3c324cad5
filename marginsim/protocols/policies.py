"""Liquidation policies: static, dynamic margin, gradual, predictive, breaker, integrated.

A policy is attached to a lending pool (:class:`LendingPolicy`) or a perp venue
(:class:`PerpPolicy`) and changes, through a few small hooks in those venues, *when* an account
may be liquidated, *how much* of it and *at what bonus*, or *what the requirement is*. The
venue keeps doing every ledger operation; a policy only holds its own state (a volatility
forecast, schedules, pauses) and returns numbers. ``static`` is no policy at all: the venue's
``policy`` attribute stays ``None`` and every hook is skipped, so a static run is bit-identical
to one without this module.

The hooks (all called by the venue itself, except :meth:`LendingPool.update_policy` /
:meth:`PerpVenue.update_policy`, which the model calls once a step in phase 2, after the
oracles):

* ``observe(step, price, ...)``: the policy reads the price it watches once a step and
  updates its volatility forecast, multiplier, schedules or pause.
* ``requirement_scale``: the multiplier ``m`` of the collateral requirement (dynamic margin).
  The pool divides liquidation thresholds (and LTVs) by ``m``; the venue multiplies its
  maintenance margin by ``m``.
* ``paused(step)``: no liquidation in this step (circuit breaker).
* ``liquidatable_mask(step, holders, hf, flagged)``: which accounts the pool lists as
  liquidatable (the bots read this list).
* ``terms(step, account, hf, debt_symbol, owed_units)``: the most that may be repaid in this
  call and the bonus, or a refusal.
* ``record(step, account, debt_symbol, repaid_units, early)``: a liquidation happened.
* ``quote(...)``: the terms ``terms`` would give now, without changing any state: what
  :meth:`LendingPool.liquidation_quote` shows the bots (through the read-only
  :class:`marginsim.protocols.view.ProtocolsView`) so they size their calls to the slice.
* ``bind_network(source)``: the model hands the ``integrated`` policy the holders'
  combined health across the network (:meth:`ContagionMonitor.combined_health`).

Who executes gradual slices: the liquidation bots, as for static liquidations. The pool
only allows one slice per account and step and prices it (TWAP: the reserve's bonus; Dutch:
a bonus rising from the step the account was first seen unhealthy); the bot sells what it
seized on the shared book through the model, as any liquidation. The pool therefore never
calls an agent (DESIGN.md s. 8), and health is re-checked exactly before every slice by
:meth:`LendingPool.liquidate`.

Every policy appends rows to :attr:`LiquidationPolicy.rows` (the ``policy_events`` table, see
:data:`POLICY_EVENT_COLUMNS`): ``requirement`` (new multiplier), ``pause`` / ``resume``
(the move that tripped the breaker), ``slice`` and ``early`` (repaid units of one
liquidation). A policy draws no random numbers.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import math
from collections.abc import Callable
from fractions import Fraction
from statistics import NormalDist

import numpy as np

from marginsim.config import (
    CircuitBreakerPolicyConfig,
    DynamicMarginPolicyConfig,
    GradualPolicyConfig,
    IntegratedPolicyConfig,
    PredictivePolicyConfig,
    StaticPolicyConfig,
)

__all__ = [
    "POLICY_EVENT_COLUMNS",
    "CircuitBreaker",
    "DynamicMargin",
    "GradualLiquidation",
    "IntegratedLiquidation",
    "LiquidationPolicy",
    "LiquidationQuote",
    "LiquidationTerms",
    "PredictiveLiquidation",
    "VolatilityForecaster",
    "crossing_probability",
    "ewma_variance",
    "garch_variance",
    "make_policy",
    "step_multiplier",
]

SECONDS_PER_YEAR = 365 * 24 * 3600

#: Columns (and dtypes) of the ``policy_events`` table.
POLICY_EVENT_COLUMNS: dict[str, object] = {
    "step": np.int64,
    "protocol": object,
    "policy": object,
    "event": object,
    "account": np.int64,
    "value": np.float64,
}


# ===================================================================================== forecasts
def ewma_variance(variance: float, log_return: float, lam: float) -> float:
    """One EWMA (RiskMetrics) update: ``lam * variance + (1 - lam) * r^2``."""
    return lam * variance + (1.0 - lam) * log_return * log_return


def garch_variance(
    variance: float, log_return: float, omega: float, alpha: float, beta: float
) -> float:
    """One GARCH(1,1) update: ``omega + alpha * r^2 + beta * variance``."""
    return omega + alpha * log_return * log_return + beta * variance


class VolatilityForecaster:
    """Online one-step variance forecast of a price's log returns (EWMA or GARCH(1,1)).

    The forecast starts at the reference variance ``v_ref`` (the annual reference volatility
    scaled to one step). GARCH uses variance targeting, ``omega = (1 - alpha - beta) *
    v_ref``: its parameters are given, not re-estimated by maximum likelihood each step (a
    fit on a few hundred one-minute returns is unstable and would make the requirement jump
    with the optimiser). A missing or non-positive price leaves the forecast unchanged and
    the next return is taken from the last valid price.

    Args:
        estimator: ``"ewma"`` or ``"garch"``.
        reference_variance: ``v_ref``, per step.
        ewma_lambda: EWMA decay.
        garch_alpha: GARCH weight of the squared return.
        garch_beta: GARCH weight of the last variance.

    Attributes:
        variance: Forecast variance of the next step's log return.
        last_price: Last valid price observed (``None`` before the first).
    """

    def __init__(
        self,
        estimator: str,
        reference_variance: float,
        ewma_lambda: float = 0.94,
        garch_alpha: float = 0.1,
        garch_beta: float = 0.85,
    ) -> None:
        if estimator not in ("ewma", "garch"):
            raise ValueError(f"estimator must be 'ewma' or 'garch', got {estimator!r}")
        self.estimator = estimator
        self.reference_variance = float(reference_variance)
        self.ewma_lambda = float(ewma_lambda)
        self.alpha = float(garch_alpha)
        self.beta = float(garch_beta)
        self.omega = (1.0 - self.alpha - self.beta) * self.reference_variance
        self.variance = self.reference_variance
        self.last_price: float | None = None

    def observe(self, price: float | None) -> None:
        """Update the forecast with the return from the last valid price to ``price``."""
        if price is None or not math.isfinite(price) or price <= 0.0:
            return
        if self.last_price is not None:
            r = math.log(price / self.last_price)
            if self.estimator == "ewma":
                self.variance = ewma_variance(self.variance, r, self.ewma_lambda)
            else:
                self.variance = garch_variance(self.variance, r, self.omega, self.alpha, self.beta)
        self.last_price = float(price)

    def horizon_variance(self, k: int) -> float:
        """Forecast variance of the log return over the next ``k`` steps.

        EWMA: ``k * v`` (a random walk's variance). GARCH: ``sum_{i=0}^{k-1} (v_ref +
        (alpha + beta)^i * (v - v_ref))``, the forecast reverting to ``v_ref``.
        """
        if self.estimator == "ewma":
            return k * self.variance
        persistence = self.alpha + self.beta
        geometric = (1.0 - persistence**k) / (1.0 - persistence)
        return k * self.reference_variance + geometric * (self.variance - self.reference_variance)


def step_multiplier(
    current: float, target: float, low: float, high: float, max_step: float
) -> float:
    """Next requirement multiplier: the target clipped to ``[low, high]``, moved by <= max_step."""
    target = min(max(target, low), high)
    return current + min(max(target - current, -max_step), max_step)


def crossing_probability(health_factor: np.ndarray, sigma: float, k: int) -> np.ndarray:
    """Probability that a driftless log price falls by ``ln(HF)`` within ``k`` steps.

    Reflection principle for Brownian motion: ``P = 2 * Phi(-ln(HF) / (sigma * sqrt(k)))``
    (1 at HF <= 1, 0 without debt). ``sigma`` is the one-step volatility.
    """
    hf = np.asarray(health_factor, dtype=np.float64)
    scale = sigma * math.sqrt(k)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.log(np.maximum(hf, 1.0))  # inf without debt, nan without a price
        z = distance / scale if scale > 0 else np.where(distance > 0, np.inf, 0.0)
    # 2 * Phi(-z) = erfc(z / sqrt(2)).
    p = np.array([math.erfc(x / math.sqrt(2.0)) if not math.isnan(x) else 0.0 for x in z.ravel()])
    return p.reshape(hf.shape)


# ===================================================================================== policies
@dataclasses.dataclass(frozen=True)
class LiquidationTerms:
    """What a policy allows in one liquidation call.

    Attributes:
        refusal: Why the call is refused (``None``: allowed).
        max_repay_units: Most the call may repay (``None``: the close factor decides).
        bonus: Liquidation bonus (``None``: the reserve's).
        early: The account is healthy and may be liquidated early (predictive).
    """

    refusal: str | None = None
    max_repay_units: int | None = None
    bonus: Fraction | None = None
    early: bool = False


_ALLOW = LiquidationTerms()


@dataclasses.dataclass(frozen=True)
class LiquidationQuote:
    """The terms a pool would give one liquidation call now (read-only; for the bots).

    Attributes:
        refusal: Why the pool would refuse it (``None``: allowed).
        max_repay_units: Most the call may repay of the debt (close factor and policy cap;
            0 when refused).
        bonus: Bonus on the collateral (the policy's or the reserve's).
        early: A healthy account that the policy lets be liquidated early.
        paused: Liquidations of the pool are paused in this step (circuit breaker).
    """

    refusal: str | None
    max_repay_units: int = 0
    bonus: Fraction = Fraction(0)
    early: bool = False
    paused: bool = False

    @property
    def allowed(self) -> bool:
        """Whether the call would be accepted (given funds and collateral)."""
        return self.refusal is None


class LiquidationPolicy:
    """Base of the policies: no-op hooks and the event rows.

    Args:
        protocol: The pool's or venue's name.
        step_seconds: Length of a step (volatilities are annual).
    """

    kind = "static"
    #: The policy needs every account's health factor in :meth:`observe`.
    needs_health = False
    #: Attributes that are not state (a flash-loan snapshot neither copies nor restores them).
    _not_state: tuple[str, ...] = ("rows", "config")

    def __init__(self, protocol: str, step_seconds: float) -> None:
        self.protocol = protocol
        self.step_seconds = float(step_seconds)
        self.rows: list[tuple[int, str, str, str, int, float]] = []
        self.requirement_scale = 1.0

    def snapshot_state(self) -> dict[str, object]:
        """A copy of the mutable state (a flash loan that fails restores it)."""
        state = {k: copy.deepcopy(v) for k, v in vars(self).items() if k not in self._not_state}
        state["rows"] = len(self.rows)
        return state

    def restore_state(self, state: dict[str, object]) -> None:
        """Return to a state taken by :meth:`snapshot_state`."""
        n_rows = state["rows"]
        assert isinstance(n_rows, int)
        vars(self).update({k: copy.deepcopy(v) for k, v in state.items() if k != "rows"})
        del self.rows[n_rows:]

    def _row(self, step: int, event: str, account: int = -1, value: float = math.nan) -> None:
        self.rows.append((int(step), self.protocol, self.kind, event, int(account), float(value)))

    def observe(
        self,
        step: int,
        price: float | None,
        holders: np.ndarray | None = None,
        health: np.ndarray | None = None,
    ) -> None:
        """Read the watched price once a step (phase 2); see the module docstring."""

    def paused(self, step: int) -> bool:
        """Whether liquidations are paused in ``step``."""
        return False

    def blocks_borrowing(self, step: int) -> bool:
        """Whether a lending pool refuses borrows in ``step``."""
        return False

    def liquidatable_mask(
        self, step: int, holders: np.ndarray, health: np.ndarray, flagged: np.ndarray
    ) -> np.ndarray:
        """Which scanned accounts the pool lists as liquidatable (``flagged``: HF < 1)."""
        return flagged

    def terms(
        self,
        step: int,
        account: int,
        health_factor: Fraction,
        debt_symbol: str,
        owed_units: int,
        reserve_bonus: Fraction,
    ) -> LiquidationTerms:
        """Terms of one liquidation call of ``account``.

        Args:
            step: The step.
            account: The account.
            health_factor: Its exact health factor (the pool refuses HF >= 1 unless the
                terms say ``early``).
            debt_symbol: The debt being repaid.
            owed_units: What the account owes of it.
            reserve_bonus: The collateral reserve's own bonus.
        """
        return _ALLOW

    def quote(
        self,
        step: int,
        account: int,
        health_factor: Fraction,
        debt_symbol: str,
        owed_units: int,
        reserve_bonus: Fraction,
    ) -> LiquidationTerms:
        """What :meth:`terms` would return now, changing no state (same arguments).

        The base delegates to :meth:`terms`; policies whose ``terms`` keeps state override it.
        """
        return self.terms(step, account, health_factor, debt_symbol, owed_units, reserve_bonus)

    def bind_network(self, source: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
        """Receive the network's combined-health reader (only ``integrated`` uses it)."""

    def record(
        self, step: int, account: int, debt_symbol: str, repaid_units: int, early: bool
    ) -> None:
        """A liquidation of ``account`` repaid ``repaid_units`` of ``debt_symbol``."""


def _reference_variance(annual_volatility: float, step_seconds: float) -> float:
    return annual_volatility**2 * step_seconds / SECONDS_PER_YEAR


def _forecaster(
    config: DynamicMarginPolicyConfig | PredictivePolicyConfig, step_seconds: float
) -> VolatilityForecaster:
    """The volatility forecaster a policy's estimator settings describe."""
    return VolatilityForecaster(
        config.estimator,
        _reference_variance(config.reference_volatility, step_seconds),
        config.ewma_lambda,
        config.garch_alpha,
        config.garch_beta,
    )


class DynamicMargin(LiquidationPolicy):
    """Dynamic margin: the requirement multiplier follows the volatility forecast.

    Each observed step: ``ratio = sqrt(V_k / (k * v_ref))`` with ``V_k`` the forecast
    variance over ``k = horizon_steps``; ``target = 1 + sensitivity * (ratio - 1)``;
    ``m <- m + clip(clip(target, min, max) - m, -max_step, +max_step)``. A ``requirement``
    row is recorded whenever ``m`` changes.
    """

    kind = "dynamic"

    def __init__(self, protocol: str, step_seconds: float, config: DynamicMarginPolicyConfig):
        super().__init__(protocol, step_seconds)
        self.config = config
        self.forecaster = _forecaster(config, step_seconds)

    def target(self) -> float:
        """Unclipped target multiplier from the current forecast."""
        k = self.config.horizon_steps
        ratio = math.sqrt(
            max(self.forecaster.horizon_variance(k), 0.0) / (k * self.forecaster.reference_variance)
        )
        return 1.0 + self.config.sensitivity * (ratio - 1.0)

    def observe(
        self,
        step: int,
        price: float | None,
        holders: np.ndarray | None = None,
        health: np.ndarray | None = None,
    ) -> None:
        """Update the forecast and move the multiplier toward its target."""
        self.forecaster.observe(price)
        c = self.config
        new = step_multiplier(
            self.requirement_scale, self.target(), c.min_multiplier, c.max_multiplier, c.max_step
        )
        if new != self.requirement_scale:
            self.requirement_scale = new
            self._row(step, "requirement", value=new)


class CircuitBreaker(LiquidationPolicy):
    """Circuit breaker: no liquidation for ``pause_steps`` after a fast price move.

    The breaker keeps the prices observed since the last pause, at most ``window_steps + 1``
    of them. When ``max_j |p_t / p_(t-j) - 1| > threshold`` it pauses steps ``t`` to
    ``t + pause_steps - 1`` (a ``pause`` row with the move; a ``resume`` row at the first
    step after), and forgets the window.
    """

    kind = "circuit_breaker"

    def __init__(self, protocol: str, step_seconds: float, config: CircuitBreakerPolicyConfig):
        super().__init__(protocol, step_seconds)
        self.config = config
        self.window: collections.deque[float] = collections.deque(maxlen=config.window_steps + 1)
        #: First step after the current pause (-1: never paused).
        self.paused_until = -1
        #: ``(start_step, end_step, move)`` of every pause (end exclusive).
        self.pauses: list[tuple[int, int, float]] = []

    def observe(
        self,
        step: int,
        price: float | None,
        holders: np.ndarray | None = None,
        health: np.ndarray | None = None,
    ) -> None:
        """Record the price; trip the breaker when the move in the window is too large."""
        if self.paused_until == step:
            self._row(step, "resume")
        if self.paused(step):
            return
        if price is None or not math.isfinite(price) or price <= 0.0:
            return
        self.window.append(float(price))
        past = np.fromiter(self.window, dtype=np.float64, count=len(self.window))[:-1]
        if past.size == 0:
            return
        move = float(np.max(np.abs(price / past - 1.0)))
        if move > self.config.threshold:
            self.paused_until = step + self.config.pause_steps
            self.pauses.append((int(step), self.paused_until, move))
            self._row(step, "pause", value=move)
            self.window.clear()

    def paused(self, step: int) -> bool:
        """Whether ``step`` is inside a pause."""
        return step < self.paused_until

    def liquidatable_mask(
        self, step: int, holders: np.ndarray, health: np.ndarray, flagged: np.ndarray
    ) -> np.ndarray:
        """No account is listed during a pause."""
        return np.zeros_like(flagged) if self.paused(step) else flagged

    def blocks_borrowing(self, step: int) -> bool:
        """Refuse borrows during a pause when ``pause_borrowing`` is set."""
        return self.config.pause_borrowing and self.paused(step)

    def terms(
        self,
        step: int,
        account: int,
        health_factor: Fraction,
        debt_symbol: str,
        owed_units: int,
        reserve_bonus: Fraction,
    ) -> LiquidationTerms:
        """Refuse every liquidation during a pause."""
        if self.paused(step):
            return LiquidationTerms(refusal=f"liquidations paused until step {self.paused_until}")
        return _ALLOW


@dataclasses.dataclass
class _Schedule:
    start_step: int
    slices_done: int = 0
    step: int = -1
    allowance: dict[str, int] = dataclasses.field(default_factory=dict)
    repaid: dict[str, int] = dataclasses.field(default_factory=dict)


class GradualLiquidation(LiquidationPolicy):
    """Gradual liquidation: one slice per unhealthy account and step.

    A schedule starts at the step an account is first seen unhealthy (HF < 1 in the scan of
    :meth:`observe`) and ends when it is seen healthy again. In step ``t``, with ``j``
    slices done in earlier steps, a call may repay up to ``ceil(owed * 1 / (slices - j))``
    of a debt (``owed`` at the first call of that step; the last slices take what is left),
    never more than the pool's close factor; several calls in one step share that
    allowance. The bonus is the reserve's (``twap``) or ``min(reserve bonus, start_bonus +
    bonus_step * (t - start))`` (``dutch``). An account whose slice of this step is used up
    is not listed as liquidatable until the next step.
    """

    kind = "gradual"
    needs_health = True

    def __init__(self, protocol: str, step_seconds: float, config: GradualPolicyConfig):
        super().__init__(protocol, step_seconds)
        self.config = config
        self.schedules: dict[int, _Schedule] = {}
        #: Accounts whose slice of step ``_used_step`` is used up (for the vectorised mask).
        self._used: set[int] = set()
        self._used_step = -1

    def observe(
        self,
        step: int,
        price: float | None,
        holders: np.ndarray | None = None,
        health: np.ndarray | None = None,
    ) -> None:
        """Start schedules for accounts seen unhealthy, end those seen healthy."""
        if holders is None or health is None:
            return
        unhealthy = set(holders[health < 1.0].tolist())
        for account in [a for a in self.schedules if a not in unhealthy]:
            del self.schedules[account]
        for account in sorted(unhealthy - self.schedules.keys()):
            self.schedules[account] = _Schedule(start_step=int(step))

    def _schedule(self, step: int, account: int) -> _Schedule:
        sched = self.schedules.get(account)
        if sched is None:  # became unhealthy inside this step's liquidation rounds
            sched = self.schedules[account] = _Schedule(start_step=int(step))
        if sched.step != step:
            if sched.step >= 0 and any(sched.repaid.values()):
                sched.slices_done += 1
            sched.step = int(step)
            sched.allowance = {}
            sched.repaid = {}
        return sched

    def liquidatable_mask(
        self, step: int, holders: np.ndarray, health: np.ndarray, flagged: np.ndarray
    ) -> np.ndarray:
        """Leave out accounts whose slice of this step is used up."""
        if self._used_step != step or not self._used:
            return flagged
        used = np.fromiter(self._used, dtype=np.int64, count=len(self._used))
        return flagged & ~np.isin(holders, used)

    def bonus(self, step: int, start_step: int, reserve_bonus: Fraction) -> Fraction | None:
        """Bonus of a slice in ``step`` of a schedule started at ``start_step``."""
        if self.config.schedule == "twap":
            return None
        c = self.config
        raw = Fraction(repr(c.start_bonus)) + Fraction(repr(c.bonus_step)) * (step - start_step)
        return min(raw, reserve_bonus)

    def terms(
        self,
        step: int,
        account: int,
        health_factor: Fraction,
        debt_symbol: str,
        owed_units: int,
        reserve_bonus: Fraction,
    ) -> LiquidationTerms:
        """This step's slice allowance and the schedule's bonus."""
        if health_factor >= 1:
            return _ALLOW  # the pool refuses it as healthy
        sched = self._schedule(step, account)
        if debt_symbol not in sched.allowance:
            left = max(self.config.slices - sched.slices_done, 1)
            sched.allowance[debt_symbol] = -(-owed_units // left)
        room = sched.allowance[debt_symbol] - sched.repaid.get(debt_symbol, 0)
        if room <= 0:
            return LiquidationTerms(refusal=f"this step's slice of account {account} is used up")
        bonus = self.bonus(step, sched.start_step, reserve_bonus)
        return LiquidationTerms(max_repay_units=room, bonus=bonus)

    def quote(
        self,
        step: int,
        account: int,
        health_factor: Fraction,
        debt_symbol: str,
        owed_units: int,
        reserve_bonus: Fraction,
    ) -> LiquidationTerms:
        """This step's slice as :meth:`terms` computes it, without starting or moving a schedule."""
        if health_factor >= 1:
            return _ALLOW
        sched = self.schedules.get(account)
        start, done, allowance, repaid = int(step), 0, None, 0
        if sched is not None:
            start, done = sched.start_step, sched.slices_done
            if sched.step == step:
                allowance = sched.allowance.get(debt_symbol)
                repaid = sched.repaid.get(debt_symbol, 0)
            elif sched.step >= 0 and any(sched.repaid.values()):
                done += 1  # the slice of an earlier step is counted at the first call
        if allowance is None:
            allowance = -(-owed_units // max(self.config.slices - done, 1))
        room = allowance - repaid
        if room <= 0:
            return LiquidationTerms(refusal=f"this step's slice of account {account} is used up")
        return LiquidationTerms(max_repay_units=room, bonus=self.bonus(step, start, reserve_bonus))

    def record(
        self, step: int, account: int, debt_symbol: str, repaid_units: int, early: bool
    ) -> None:
        """Count a slice against this step's allowance."""
        sched = self._schedule(step, account)
        sched.repaid[debt_symbol] = sched.repaid.get(debt_symbol, 0) + int(repaid_units)
        if sched.repaid[debt_symbol] >= sched.allowance.get(debt_symbol, 0):
            if self._used_step != step:
                self._used_step, self._used = int(step), set()
            self._used.add(int(account))
        self._row(step, "slice", account, repaid_units)


class _EarlyLiquidation(LiquidationPolicy):
    """Shared rules of the policies that deleverage healthy accounts early (once per step).

    A subclass says which healthy accounts are at risk (:meth:`liquidatable_mask` and
    :meth:`_refusal`); this class gives them one call per step that may repay up to
    ``ceil(owed * early_close_factor)`` at ``early_bonus``, and keeps unhealthy accounts on
    the static terms.
    """

    def __init__(
        self,
        protocol: str,
        step_seconds: float,
        config: PredictivePolicyConfig | IntegratedPolicyConfig,
    ):
        super().__init__(protocol, step_seconds)
        self.config = config
        self._early_done: set[int] = set()
        self._early_step = -1
        self._bonus = Fraction(repr(config.early_bonus))
        self._share = Fraction(repr(config.early_close_factor))

    def _done(self, step: int) -> set[int]:
        if self._early_step != step:
            self._early_step = step
            self._early_done = set()
        return self._early_done

    def _refusal(self, account: int, health_factor: Fraction) -> str | None:
        """Why a healthy ``account`` may not be deleveraged early now (``None``: it may)."""
        raise NotImplementedError

    def _early_terms(
        self, account: int, health_factor: Fraction, owed_units: int, done: set[int]
    ) -> LiquidationTerms:
        refusal = self._refusal(account, health_factor)
        if refusal is None and account in done:
            refusal = f"account {account} was already deleveraged early in this step"
        if refusal is not None:
            return LiquidationTerms(refusal=refusal)
        share = -(-owed_units * self._share.numerator // self._share.denominator)
        return LiquidationTerms(
            max_repay_units=min(owed_units, share), bonus=self._bonus, early=True
        )

    def terms(
        self,
        step: int,
        account: int,
        health_factor: Fraction,
        debt_symbol: str,
        owed_units: int,
        reserve_bonus: Fraction,
    ) -> LiquidationTerms:
        """Early terms for a healthy account at risk; the static terms when unhealthy."""
        if health_factor < 1:
            return _ALLOW
        return self._early_terms(account, health_factor, owed_units, self._done(step))

    def quote(
        self,
        step: int,
        account: int,
        health_factor: Fraction,
        debt_symbol: str,
        owed_units: int,
        reserve_bonus: Fraction,
    ) -> LiquidationTerms:
        """:meth:`terms` without resetting the per-step record of early liquidations."""
        if health_factor < 1:
            return _ALLOW
        done = self._early_done if self._early_step == step else set()
        return self._early_terms(account, health_factor, owed_units, done)

    def record(
        self, step: int, account: int, debt_symbol: str, repaid_units: int, early: bool
    ) -> None:
        """Remember an early liquidation (one per account and step)."""
        if early:
            self._done(step).add(int(account))
            self._row(step, "early", account, repaid_units)


class PredictiveLiquidation(_EarlyLiquidation):
    """Predictive liquidation: early, smaller, cheaper deleveraging of accounts at risk.

    With ``sigma`` the one-step volatility forecast (EWMA or GARCH, updated in
    :meth:`observe`), an account with ``1 <= HF < h*`` where ``h* = exp(sigma * sqrt(k) *
    Phi^-1(1 - p*/2))`` has a crossing probability :func:`crossing_probability` of at least
    ``p* = trigger_probability`` within ``k = horizon_steps``: it is listed as liquidatable
    and one call per step may repay up to ``ceil(owed * early_close_factor)`` at
    ``early_bonus``. Unhealthy accounts keep the static terms.
    """

    kind = "predictive"

    def __init__(self, protocol: str, step_seconds: float, config: PredictivePolicyConfig):
        super().__init__(protocol, step_seconds, config)
        self.config: PredictivePolicyConfig = config
        self.forecaster = _forecaster(config, step_seconds)

    def observe(
        self,
        step: int,
        price: float | None,
        holders: np.ndarray | None = None,
        health: np.ndarray | None = None,
    ) -> None:
        """Update the volatility forecast."""
        self.forecaster.observe(price)

    def trigger_health(self) -> float:
        """``h*``: healthy accounts below it have a crossing probability >= the trigger."""
        k = self.config.horizon_steps
        sigma_k = math.sqrt(max(self.forecaster.horizon_variance(k), 0.0))
        p = self.config.trigger_probability
        return math.exp(sigma_k * NormalDist().inv_cdf(1.0 - p / 2.0)) if p < 1 else 1.0

    def liquidatable_mask(
        self, step: int, holders: np.ndarray, health: np.ndarray, flagged: np.ndarray
    ) -> np.ndarray:
        """Add healthy accounts below the trigger health factor (once per step each)."""
        early = (health >= 1.0) & (health < self.trigger_health())
        if not early.any():
            return flagged
        done = self._done(step)
        if done:
            early &= ~np.isin(holders, np.fromiter(done, dtype=np.int64))
        return flagged | early

    def _refusal(self, account: int, health_factor: Fraction) -> str | None:
        trigger = self.trigger_health()
        if float(health_factor) >= trigger:
            return (
                f"health factor {float(health_factor):.6g} >= 1 and not at risk "
                f"(trigger {trigger:.6g})"
            )
        return None


#: Reads ``(combined health, pools owed)`` of holders across the network (see
#: :meth:`marginsim.protocols.contagion.ContagionMonitor.combined_health`).
NetworkHealthSource = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class IntegratedLiquidation(_EarlyLiquidation):
    """Integrated cross-protocol monitoring: early liquidation on the network-wide health.

    The pool reads each holder's combined health across every lending pool of the run,
    ``H = sum_p C_p / sum_p D_p`` over the pools ``p`` the holder owes in (collateral and debt
    values at each pool's prices, no thresholds: the contagion monitor's cross-protocol
    account view). An account with ``HF >= 1`` in this pool, debt in at least
    ``min_protocols`` pools and ``H < threshold`` is listed as liquidatable, and one call per
    step may repay up to ``ceil(owed * early_close_factor)`` at ``early_bonus``. Unhealthy
    accounts keep the static terms. ``H`` is read live (each scan and each call), so a loss in
    another pool during the liquidation rounds reaches this pool at once.

    Before :meth:`bind_network` (a pool used alone, outside a model) no account is at risk:
    the policy then behaves as ``static``.
    """

    kind = "integrated"
    _not_state = ("rows", "config", "_source")

    def __init__(self, protocol: str, step_seconds: float, config: IntegratedPolicyConfig):
        super().__init__(protocol, step_seconds, config)
        self.config: IntegratedPolicyConfig = config
        self._source: NetworkHealthSource | None = None

    def bind_network(self, source: NetworkHealthSource) -> None:
        """Read combined health through ``source(holders) -> (health, pools_owed)``."""
        self._source = source

    def at_risk(self, holders: np.ndarray) -> np.ndarray:
        """Which ``holders`` owe in >= ``min_protocols`` pools with combined health < threshold."""
        holders = np.asarray(holders, dtype=np.int64)
        if self._source is None or holders.size == 0:
            return np.zeros(holders.shape, dtype=bool)
        health, owed_in = self._source(holders)
        # NaN (a price missing somewhere) compares False: never at risk on a missing price.
        return (owed_in >= self.config.min_protocols) & (health < self.config.threshold)

    def liquidatable_mask(
        self, step: int, holders: np.ndarray, health: np.ndarray, flagged: np.ndarray
    ) -> np.ndarray:
        """Add healthy accounts at risk across the network (once per step each)."""
        candidates = (health >= 1.0) & ~flagged
        if not candidates.any():
            return flagged
        early = np.zeros_like(flagged)
        early[candidates] = self.at_risk(holders[candidates])
        done = self._early_done if self._early_step == step else set()
        if done:
            early &= ~np.isin(holders, np.fromiter(done, dtype=np.int64))
        return flagged | early

    def _refusal(self, account: int, health_factor: Fraction) -> str | None:
        if bool(self.at_risk(np.array([account]))[0]):
            return None
        return (
            f"account {account} is healthy here and not at risk across the network "
            f"(combined health >= {self.config.threshold} or owes in fewer than "
            f"{self.config.min_protocols} pools)"
        )


def make_policy(
    protocol: str,
    config: StaticPolicyConfig
    | DynamicMarginPolicyConfig
    | GradualPolicyConfig
    | PredictivePolicyConfig
    | CircuitBreakerPolicyConfig
    | IntegratedPolicyConfig,
    step_seconds: float,
) -> LiquidationPolicy | None:
    """The policy a config asks for; ``None`` for ``static`` (the venue's own rules).

    Args:
        protocol: The pool's or venue's name (stamped on event rows).
        config: The ``liquidation_policy`` section.
        step_seconds: Length of a step.
    """
    if isinstance(config, DynamicMarginPolicyConfig):
        return DynamicMargin(protocol, step_seconds, config)
    if isinstance(config, GradualPolicyConfig):
        return GradualLiquidation(protocol, step_seconds, config)
    if isinstance(config, PredictivePolicyConfig):
        return PredictiveLiquidation(protocol, step_seconds, config)
    if isinstance(config, CircuitBreakerPolicyConfig):
        return CircuitBreaker(protocol, step_seconds, config)
    if isinstance(config, IntegratedPolicyConfig):
        return IntegratedLiquidation(protocol, step_seconds, config)
    return None
