"""Scenario configuration: validated, immutable, TOML in and out.

A :class:`Scenario` describes one run completely: run length and seed, assets, instruments,
AMM pools, the exogenous price driver, scheduled shocks, oracles, protocols, the protocol
network, agents and explicit initial accounts. It is validated once, at construction, and
every error names the dotted field, the rule and the value given; all errors of a file are
reported together in one :class:`ScenarioError`.

Amounts in a scenario are in human units (``1.5`` WETH); the model converts them to ledger
units with each asset's decimals.

Sections whose simulation arrives with a later capability (perp venues, leveraged traders,
...) are not accepted yet: ``extra="forbid"`` turns them into a clear "unknown field" error
instead of a silently ignored table.
"""

from __future__ import annotations

import contextvars
import fractions
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from marginsim.presets import LENDING_PRESETS

__all__ = [
    "AccountConfig",
    "AgentsConfig",
    "AmmConfig",
    "ArbitrageursConfig",
    "AssetConfig",
    "AuctionConfig",
    "CircuitBreakerPolicyConfig",
    "DynamicMarginPolicyConfig",
    "GradualPolicyConfig",
    "IntegratedPolicyConfig",
    "PredictivePolicyConfig",
    "StaticPolicyConfig",
    "BasisArbitrageursConfig",
    "BridgeConfig",
    "CdpConfig",
    "LendingConfig",
    "LendingLoopersConfig",
    "LeveragedTradersConfig",
    "MarginTierConfig",
    "PerpConfig",
    "PerpMarketMakersConfig",
    "PerpTradersConfig",
    "RateModelConfig",
    "ReserveConfig",
    "Dist",
    "EdgeConfig",
    "ExogenousConfig",
    "FundamentalTradersConfig",
    "HedgersConfig",
    "InstrumentConfig",
    "LiquidationHunterConfig",
    "LiquidatorsConfig",
    "MarketMakersConfig",
    "MetricsConfig",
    "NetworkConfig",
    "NoiseTradersConfig",
    "OracleConfig",
    "OracleManipulatorConfig",
    "RunConfig",
    "Scenario",
    "ProblemsError",
    "ScenarioError",
    "ShockConfig",
    "StablecoinSellersConfig",
    "WrappedSellersConfig",
    "ThinBookMakerConfig",
    "parse_override_value",
]


class ProblemsError(ValueError):
    """Bad input with every problem found: ``problems`` lists them as ``(field, message)``.

    The message counts them, names the ``source`` (a file, "overrides") when given, and
    puts one problem per line.
    """

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"{len(problems)} problem(s){where}:"]
        lines += [f"  {field}: {message}" for field, message in problems]
        super().__init__("\n".join(lines))


class ScenarioError(ProblemsError):
    """A scenario is invalid; ``problems`` lists every error as ``(field, message)``."""


#: True while :class:`Scenario` validates its repaired copy (the second pass that finds the
#: cross-field problems): whole-table checks are skipped then. A context variable, set and
#: reset around that one call, so concurrent validations in other threads are unaffected.
_REPAIR_PASS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "marginsim_repair_pass", default=False
)


class _Frozen(BaseModel):
    """Base of every config section: immutable, unknown keys rejected, checks on defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


def _is_integral(x: float, tol: float = 1e-9) -> bool:
    return abs(x - round(x)) <= tol * max(1.0, abs(x))


# ------------------------------------------------------------------------------- run
class RunConfig(_Frozen):
    """How long a run lasts and where its randomness comes from.

    Attributes:
        seed: Master seed; a run is a pure function of the scenario and this seed.
        steps: Number of steps.
        step_seconds: Length of one step in seconds (rates and volatilities are annual).
        max_liquidation_rounds: Rounds of liquidation inside one step.
        block_space: Liquidation calls (liquidations, auction starts and takes) that fit in
            one round, all bots together; 0 means unlimited. When block space is limited,
            bots are included in the order of their gas bids (highest first, ties in a
            seeded order) and pay their bid for every call included.
        spawn_key: Optional path below ``seed`` in numpy's seed tree: the run draws from
            ``SeedSequence(seed, spawn_key=spawn_key)``. A sweep sets ``[point, replicate]``
            here so that every run of the sweep can be replayed alone; unset (the default, and
            then absent from ``scenario.toml``) means ``SeedSequence(seed)``, so runs without
            a key are unchanged. Entries are integers in ``[0, 2**32)``; at most 8.
    """

    seed: int = Field(default=7, ge=0, lt=2**63)
    steps: int = Field(default=1440, ge=1, le=10_000_000)
    step_seconds: PositiveFloat = 60.0
    max_liquidation_rounds: int = Field(default=5, ge=1, le=1000)
    block_space: int = Field(default=0, ge=0)
    spawn_key: tuple[int, ...] | None = None

    @field_validator("spawn_key")
    @classmethod
    def _spawn_key_words(cls, key: tuple[int, ...] | None) -> tuple[int, ...] | None:
        # One check for the whole key, so the error names run.spawn_key (not an item).
        if key is not None and (len(key) > 8 or any(not 0 <= k < 2**32 for k in key)):
            raise ValueError(f"must be at most 8 integers in [0, 2**32); got {list(key)}")
        return key


# ------------------------------------------------------------------------------- assets
class AssetConfig(_Frozen):
    """A token: symbol and decimals of its smallest ledger unit."""

    symbol: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9._-]{0,31}$")
    decimals: int = Field(ge=0, le=12)


class InstrumentConfig(_Frozen):
    """A book in the shared matching engine.

    Attributes:
        id: Unique instrument id, e.g. ``"WETH-USDC"`` or ``"ETH-PERP"``.
        kind: ``spot`` (settles base against quote) or ``perp`` (a perpetual contract on
            ``base``, margined and settled in ``quote`` by its venue).
        base: Asset traded (spot) or underlying (perp).
        quote: Asset prices are quoted and paid in.
        venue: Perp venue that margins the contract (perp only).
        tick: Price increment, in quote per base.
        lot: Quantity increment, in base.
        maker_fee: Fee rate on the quote notional charged to the resting side.
        taker_fee: Fee rate on the quote notional charged to the aggressor.
    """

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    kind: Literal["spot", "perp"] = "spot"
    base: str
    quote: str
    venue: str | None = None
    tick: PositiveFloat
    lot: PositiveFloat
    maker_fee: Annotated[float, Field(ge=0, lt=0.1)] = 0.0
    taker_fee: Annotated[float, Field(ge=0, lt=0.1)] = 0.0005

    @model_validator(mode="after")
    def _base_is_not_quote(self) -> InstrumentConfig:
        if _REPAIR_PASS.get():
            return self
        if self.base == self.quote:
            raise ValueError(f"base and quote must differ, both are {self.base!r}")
        return self


class AmmConfig(_Frozen):
    """A constant-product pool (Uniswap v2 style) seeded with initial reserves.

    Attributes:
        id: Unique pool id (also an oracle source name).
        base: Base asset.
        quote: Quote asset.
        fee: Swap fee rate (0.003 is 30 bp), kept by the pool for its liquidity providers.
        initial_base: Base reserve at start, in human units.
        initial_quote: Quote reserve at start, in human units.
    """

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    base: str
    quote: str
    fee: Annotated[float, Field(ge=0, lt=0.1)] = 0.003
    initial_base: PositiveFloat
    initial_quote: PositiveFloat


# ------------------------------------------------------------------------------- exogenous
class ExogenousConfig(_Frozen):
    """The outside world's price of ``asset`` in ``quote``: the fundamental / index.

    Which fields apply depends on ``model``: ``gbm`` (initial, drift, volatility), ``jump``
    (plus jump_intensity, jump_mean, jump_std), ``garch`` (plus alpha, beta), ``path``
    (values or segments), ``replay`` (file, column, start_row, scale).
    """

    model: Literal["gbm", "jump", "garch", "path", "replay"] = "gbm"
    asset: str = "WETH"
    quote: str = "USDC"
    initial: PositiveFloat = 2000.0
    drift: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    volatility: NonNegFloat = 0.8
    jump_intensity: NonNegFloat = 12.0
    jump_mean: Annotated[float, Field(allow_inf_nan=False)] = -0.05
    jump_std: NonNegFloat = 0.1
    alpha: Annotated[float, Field(ge=0, lt=1)] = 0.08
    beta: Annotated[float, Field(ge=0, lt=1)] = 0.9
    values: list[PositiveFloat] | None = None
    segments: list[dict[str, float]] | None = None
    file: str | None = None
    column: str = "price"
    start_row: int = Field(default=0, ge=0)
    scale: PositiveFloat = 1.0

    @model_validator(mode="after")
    def _model_fields(self) -> ExogenousConfig:
        if _REPAIR_PASS.get():
            return self
        if self.model == "garch" and self.alpha + self.beta >= 1:
            raise ValueError(f"garch needs alpha + beta < 1, got {self.alpha} + {self.beta}")
        if self.model == "path" and (self.values is None) == (self.segments is None):
            raise ValueError("model 'path' needs exactly one of 'values' or 'segments'")
        if self.model == "replay" and not self.file:
            raise ValueError("model 'replay' needs 'file'")
        for i, seg in enumerate(self.segments or []):
            if set(seg) != {"steps", "change"} or seg["steps"] < 1 or seg["change"] <= -1:
                raise ValueError(f"segments[{i}] must be {{steps >= 1, change > -1}}, got {seg}")
        return self


class ShockConfig(_Frozen):
    """A scheduled shock.

    Attributes:
        step: Step at which it fires (in the exogenous phase). A shock at or after
            ``run.steps`` does not fire (so a run can be shortened with ``--steps``); the model
            logs a warning for it.
        kind: ``fundamental_jump`` (the index moves by ``size``, relative, from this step
            on), ``sell_order`` (an outside seller sends a market order of ``size`` base units
            on ``instrument``; a negative size buys), or ``liquidity_withdrawal`` (market
            makers pull ``size`` (a fraction in 0..1) of their quotes for ``duration_steps``),
            or ``bridge_failure`` (the share ``size``, in (0, 1], of ``bridge``'s locked asset
            is lost to an exploiter: the wrapped asset's backing, and with it its price in
            every protocol that accepts it, falls; see :class:`BridgeConfig`).
        size: Magnitude, meaning depends on ``kind``.
        instrument: Book hit by a ``sell_order``.
        duration_steps: How long a ``liquidity_withdrawal`` lasts.
        bridge: Bridge hit by a ``bridge_failure`` (a name in ``network.bridges``).
    """

    step: int = Field(ge=0)
    kind: Literal["fundamental_jump", "sell_order", "liquidity_withdrawal", "bridge_failure"]
    size: Annotated[float, Field(allow_inf_nan=False)]
    instrument: str | None = None
    duration_steps: int = Field(default=1, ge=1)
    bridge: str | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> ShockConfig:
        if _REPAIR_PASS.get():
            return self
        if self.kind == "fundamental_jump" and self.size <= -1:
            raise ValueError(f"a fundamental_jump size must be > -1, got {self.size}")
        if self.kind == "sell_order" and (self.instrument is None or self.size == 0):
            raise ValueError("a sell_order shock needs 'instrument' and a non-zero 'size'")
        if self.kind == "liquidity_withdrawal" and not 0 < self.size <= 1:
            raise ValueError(f"a liquidity_withdrawal size must be in (0, 1], got {self.size}")
        if self.kind == "bridge_failure" and (self.bridge is None or not 0 < self.size <= 1):
            raise ValueError(
                f"a bridge_failure shock needs 'bridge' and a size in (0, 1], got "
                f"bridge={self.bridge!r}, size={self.size}"
            )
        return self


# ------------------------------------------------------------------------------- oracles
class OracleConfig(_Frozen):
    """A price feed a protocol reads.

    Attributes:
        kind: ``last`` trade, book ``mid``, ``twap`` over ``window_steps``, ``push`` (publishes
            on a ``deviation`` or after ``heartbeat_steps``, as Chainlink feeds do),
            ``median`` of ``sources``, or ``index`` (the exogenous index itself).
        source: Instrument id, AMM pool id, or ``"index"``.
        sources: Sources of a ``median`` oracle.
        reads: What a ``twap``, ``push`` or ``median`` oracle observes of a market source.
        window_steps: TWAP window.
        deviation: Relative move that makes a push feed publish.
        heartbeat_steps: Steps after which a push feed publishes regardless.
    """

    kind: Literal["last", "mid", "twap", "push", "median", "index"] = "index"
    source: str = "index"
    sources: list[str] = Field(default_factory=list)
    reads: Literal["mid", "last", "index"] = "mid"
    window_steps: int = Field(default=30, ge=1)
    deviation: Annotated[float, Field(gt=0, lt=1)] = 0.005
    heartbeat_steps: int = Field(default=60, ge=1)

    @model_validator(mode="after")
    def _sources(self) -> OracleConfig:
        if _REPAIR_PASS.get():
            return self
        if self.kind == "median" and len(self.sources) < 1:
            raise ValueError("a median oracle needs at least one entry in 'sources'")
        return self


# ------------------------------------------------------------------------------- protocols
PriceRef = Annotated[str, Field(min_length=1)] | PositiveFloat


class RateModelConfig(_Frozen):
    """Kinked interest-rate model (GLOSSARY.md, Lending): annual rates.

    Borrow rate = base + slope1 * U / optimal below the kink, base + slope1 + slope2 *
    (U - optimal) / (1 - optimal) above it.
    """

    base: NonNegFloat = 0.0
    slope1: NonNegFloat = 0.04
    slope2: NonNegFloat = 0.75
    optimal: Annotated[float, Field(gt=0, lt=1)] = 0.8


class ReserveConfig(_Frozen):
    """One asset's reserve in a lending pool.

    Attributes:
        price: Oracle name the pool values this asset with, or a fixed price in the pool's
            unit of account (``1.0`` for a USD stablecoin). For a reserve that is another
            pool's receipt token ``a<SYM>.<pool>`` (or a bridge's wrapped asset) this prices
            the underlying; the model multiplies it by the issuer's liquidity index (or the
            bridge's backing), read live.
        ltv: Loan-to-value: share of the collateral value that may be borrowed against
            (0: not usable to borrow against).
        liquidation_threshold: Share of the collateral value counted in the health factor.
        liquidation_bonus: Extra collateral a liquidator receives, relative to the repaid
            value (0.05 = 5%).
        protocol_share: Share of the bonus part of seized collateral paid to the treasury.
        reserve_factor: Share of borrow interest kept as protocol reserves.
        supply_cap: Maximum total supplied, human units (0: no cap).
        borrow_cap: Maximum total borrowed, human units (0: no cap).
        borrowable: Whether the asset can be borrowed.
        rate: The interest-rate model.
        initial_supply: Liquidity supplied at the start by the pool's genesis depositor,
            human units.
    """

    price: PriceRef
    ltv: Fraction = 0.0
    liquidation_threshold: Fraction = 0.0
    liquidation_bonus: Annotated[float, Field(ge=0, lt=0.5)] = 0.05
    protocol_share: Fraction = 0.1
    reserve_factor: Fraction = 0.1
    supply_cap: NonNegFloat = 0.0
    borrow_cap: NonNegFloat = 0.0
    borrowable: bool = True
    rate: RateModelConfig = RateModelConfig()
    initial_supply: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _thresholds(self) -> ReserveConfig:
        if _REPAIR_PASS.get():
            return self
        if self.liquidation_threshold < self.ltv:
            raise ValueError(
                f"liquidation_threshold must be >= ltv, got {self.liquidation_threshold} "
                f"< {self.ltv}"
            )
        if self.liquidation_threshold * (1 + self.liquidation_bonus) > 1 + 1e-12:
            # As Aave requires: otherwise a liquidation could not be covered by collateral.
            raise ValueError(
                "liquidation_threshold * (1 + liquidation_bonus) must be <= 1, got "
                f"{self.liquidation_threshold} * {1 + self.liquidation_bonus}"
            )
        return self


# ------------------------------------------------------------------------------- policies
# Liquidation policies of lending pools and perp venues (marginsim.protocols.policies holds
# the rules; docs/policies.md the formulas). ``static`` is today's behaviour and the default.
class _VolatilityParams(_Frozen):
    """Volatility forecast shared by the policies that need one (EWMA or GARCH(1,1)).

    The forecast is updated online, once a step, from the log return of the price the
    policy watches (the pool's oracle price of ``asset``, a perp venue's mark price).

    Attributes:
        estimator: ``"ewma"`` (RiskMetrics: ``v <- lam * v + (1 - lam) * r^2``) or
            ``"garch"`` (GARCH(1,1): ``v <- omega + alpha * r^2 + beta * v`` with
            ``omega = (1 - alpha - beta) * reference variance``, i.e. variance targeting).
        reference_volatility: Annualised volatility the requirement is calibrated for; the
            forecast starts at it and GARCH reverts to it.
        ewma_lambda: Decay of the EWMA (RiskMetrics daily: 0.94).
        garch_alpha: GARCH weight of the last squared return.
        garch_beta: GARCH weight of the last variance (``alpha + beta < 1``).
        horizon_steps: Steps ahead the forecast covers (``k``).
    """

    estimator: Literal["ewma", "garch"] = "ewma"
    reference_volatility: PositiveFloat = 0.8
    ewma_lambda: Annotated[float, Field(gt=0, lt=1)] = 0.94
    garch_alpha: Annotated[float, Field(ge=0, lt=1)] = 0.1
    garch_beta: Annotated[float, Field(ge=0, lt=1)] = 0.85
    horizon_steps: int = Field(default=10, ge=1, le=100_000)

    @model_validator(mode="after")
    def _stationary(self) -> _VolatilityParams:
        if _REPAIR_PASS.get():
            return self
        if self.garch_alpha + self.garch_beta >= 1:
            raise ValueError(
                "garch_alpha + garch_beta must be < 1 (a stationary GARCH), got "
                f"{self.garch_alpha} + {self.garch_beta} = {self.garch_alpha + self.garch_beta}"
            )
        return self


class StaticPolicyConfig(_Frozen):
    """Today's rules: fixed thresholds, maintenance rates, close factor and bonus.

    Attributes:
        kind: ``"static"``.
    """

    kind: Literal["static"] = "static"


class DynamicMarginPolicyConfig(_VolatilityParams):
    """Dynamic margin: the collateral requirement follows a volatility forecast.

    Each step the target multiplier is ``1 + sensitivity * (sigma_k / sigma_ref_k - 1)``
    clipped to ``[min_multiplier, max_multiplier]``, where ``sigma_k`` is the forecast
    volatility over ``horizon_steps`` and ``sigma_ref_k`` the reference volatility over the
    same horizon; the multiplier then moves toward the target by at most ``max_step``. A
    lending pool divides each reserve's liquidation threshold (and, with ``adjust_ltv``, its
    LTV) by the multiplier; a perp venue multiplies its maintenance margin by it.

    Attributes:
        kind: ``"dynamic"``.
        sensitivity: How strongly the requirement follows the volatility ratio.
        min_multiplier: Lowest multiplier (1: the requirement never falls below the static one).
        max_multiplier: Highest multiplier.
        max_step: Largest change of the multiplier in one step.
        adjust_ltv: Lending: scale the LTV with the threshold (so a new borrow is not
            liquidatable at once).
        asset: Lending: reserve whose oracle price is watched (empty: the first reserve
            priced by an oracle).
    """

    kind: Literal["dynamic"]
    sensitivity: NonNegFloat = 1.0
    min_multiplier: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 1.0
    max_multiplier: Annotated[float, Field(ge=1, le=10, allow_inf_nan=False)] = 1.5
    max_step: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = 0.01
    adjust_ltv: bool = True
    asset: str = ""


class GradualPolicyConfig(_Frozen):
    """Gradual liquidation: an unhealthy account is liquidated in slices over several steps.

    The liquidation bots execute the slices (one per account and step); the pool limits
    each step's repay to ``1 / (slices - j)`` of the debt then owed (slice ``j`` of
    ``slices``: equal slices of the starting debt when nothing else changes), never more
    than the close factor, and re-checks the health factor before every slice.

    Attributes:
        kind: ``"gradual"``.
        slices: Number of slices (steps) the debt is spread over.
        schedule: ``"twap"`` (the reserve's bonus on every slice) or ``"dutch"`` (the bonus
            starts at ``start_bonus`` when the account is first seen unhealthy and rises by
            ``bonus_step`` each step up to the reserve's bonus).
        start_bonus: Dutch schedule: bonus of the first step.
        bonus_step: Dutch schedule: increase of the bonus per step.
    """

    kind: Literal["gradual"]
    slices: int = Field(default=4, ge=1, le=10_000)
    schedule: Literal["twap", "dutch"] = "twap"
    start_bonus: Annotated[float, Field(ge=0, lt=0.5)] = 0.0
    bonus_step: Annotated[float, Field(ge=0, lt=0.5)] = 0.01


class PredictivePolicyConfig(_VolatilityParams):
    """Predictive liquidation: early, smaller, cheaper deleveraging of accounts at risk.

    A healthy account (HF >= 1) whose probability of crossing HF = 1 within
    ``horizon_steps``, ``2 * Phi(-ln(HF) / (sigma * sqrt(k)))`` with ``sigma`` the one-step
    volatility forecast (driftless log price, reflection principle), is at least
    ``trigger_probability`` may be liquidated once per step for at most
    ``early_close_factor`` of a debt, with ``early_bonus`` instead of the reserve's bonus.
    Unhealthy accounts are liquidated as under ``static``.

    Attributes:
        kind: ``"predictive"``.
        trigger_probability: Probability that triggers early deleveraging.
        early_close_factor: Share of a debt repaid in one early liquidation.
        early_bonus: Bonus of an early liquidation.
        asset: Reserve whose oracle price is watched (empty: the first reserve priced by an
            oracle).
    """

    kind: Literal["predictive"]
    trigger_probability: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.5
    early_close_factor: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.1
    early_bonus: Annotated[float, Field(ge=0, lt=0.5)] = 0.01
    asset: str = ""


class CircuitBreakerPolicyConfig(_Frozen):
    """Circuit breaker: liquidations pause when the watched price moves too fast.

    At the start of each step (after the oracles), if ``|p_t / p_(t-j) - 1| > threshold``
    for some ``j`` in ``1..window_steps`` (prices observed since the last pause), no
    liquidation is allowed in steps ``t .. t + pause_steps - 1``; the window then starts
    afresh. Accounts keep losing value during a pause, so bad debt can grow.

    Attributes:
        kind: ``"circuit_breaker"``.
        threshold: Relative price move that trips the breaker.
        window_steps: Steps the move is measured over.
        pause_steps: Length of a pause.
        pause_borrowing: Lending: also refuse borrows during a pause (Aave's reserve freeze).
        asset: Lending: reserve whose oracle price is watched (empty: the first reserve priced
            by an oracle).
    """

    kind: Literal["circuit_breaker"]
    threshold: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.05
    window_steps: int = Field(default=10, ge=1, le=100_000)
    pause_steps: int = Field(default=10, ge=1, le=100_000)
    pause_borrowing: bool = False
    asset: str = ""


class IntegratedPolicyConfig(_Frozen):
    """Integrated cross-protocol monitoring: early liquidation on the holder's combined health.

    The pool reads the holder's combined health across every lending pool of the run (the
    contagion monitor's cross-protocol account view): ``H = sum_p C_p / sum_p D_p`` over the
    pools ``p`` where the holder owes something, ``C_p`` its collateral value and ``D_p`` its
    debt value in ``p`` at ``p``'s prices (no liquidation thresholds). An account that is
    healthy in this pool (HF >= 1) but owes in at least ``min_protocols`` pools and has
    ``H < threshold`` may be liquidated once per step for at most ``early_close_factor`` of a
    debt, with ``early_bonus``. Unhealthy accounts are liquidated as under ``static``.

    Attributes:
        kind: ``"integrated"``.
        threshold: Combined health below which the account may be deleveraged early.
        min_protocols: Pools the holder must owe in (2: only holders present in several
            protocols; 1 also lets a one-pool account's collateral/debt ratio trigger).
        early_close_factor: Share of a debt repaid in one early liquidation.
        early_bonus: Bonus of an early liquidation.
    """

    kind: Literal["integrated"]
    threshold: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 1.1
    min_protocols: int = Field(default=2, ge=1, le=1_000)
    early_close_factor: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.25
    early_bonus: Annotated[float, Field(ge=0, lt=0.5)] = 0.02


LendingPolicyConfig = Annotated[
    StaticPolicyConfig
    | DynamicMarginPolicyConfig
    | GradualPolicyConfig
    | PredictivePolicyConfig
    | CircuitBreakerPolicyConfig
    | IntegratedPolicyConfig,
    Field(discriminator="kind"),
]
#: Perp venues take the policies that change the requirement or pause the engine; gradual and
#: predictive liquidation are lending-pool policies (see docs/policies.md).
PerpPolicyConfig = Annotated[
    StaticPolicyConfig | DynamicMarginPolicyConfig | CircuitBreakerPolicyConfig,
    Field(discriminator="kind"),
]


class LendingConfig(_Frozen):
    """A lending pool (Aave v3 / Compound v2 semantics).

    Attributes:
        kind: ``"lending"``.
        preset: ``"aave-v3"`` or ``"compound-v2"``: published parameters (see
            :mod:`marginsim.presets` for sources and dates) fill every field the scenario
            leaves out, pool-wide and for each reserve the scenario lists (a reserve still
            needs its ``price``). Fields the scenario gives win.
        close_factor: Share of one debt asset a liquidator may repay in one call.
        full_close_below_hf: Health factor below which the whole debt may be repaid
            (Aave v3: 0.95; 0 disables, as in Compound v2).
        flash_loans: Whether the pool lends flash loans (Compound v2 does not).
        flash_loan_fee: Fee of a flash loan, relative to the amount (Aave v3: 0.0005).
        reserves: Reserves by asset symbol.
        liquidation_policy: How the pool liquidates: ``{kind = "static"}`` (the rules above,
            the default), ``"dynamic"``, ``"gradual"``, ``"predictive"``,
            ``"circuit_breaker"`` or ``"integrated"`` with their parameters
            (docs/policies.md).
    """

    kind: Literal["lending"]
    preset: Literal["aave-v3", "compound-v2"] | None = None
    close_factor: Annotated[float, Field(gt=0, le=1)] = 0.5
    full_close_below_hf: Fraction = 0.95
    flash_loans: bool = True
    flash_loan_fee: Annotated[float, Field(ge=0, lt=0.1)] = 0.0005
    reserves: dict[str, ReserveConfig]
    liquidation_policy: LendingPolicyConfig = StaticPolicyConfig()

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") not in LENDING_PRESETS:
            return data
        preset = LENDING_PRESETS[data["preset"]]
        merged = {k: v for k, v in preset.items() if k != "reserves"} | data
        reserves = data.get("reserves")
        if isinstance(reserves, dict):
            merged["reserves"] = {
                symbol: (preset["reserves"].get(symbol, {}) | given)
                if isinstance(given, dict)
                else given
                for symbol, given in reserves.items()
            }
        return merged

    @field_validator("reserves")
    @classmethod
    def _some_reserve(cls, reserves: dict[str, ReserveConfig]) -> dict[str, ReserveConfig]:
        if not reserves:
            raise ValueError("a lending pool needs at least one reserve")
        return reserves

    @model_validator(mode="after")
    def _policy_fits(self) -> LendingConfig:
        if _REPAIR_PASS.get():
            return self
        policy = self.liquidation_policy
        asset = getattr(policy, "asset", "")
        if asset and asset not in self.reserves:
            raise ValueError(
                f"liquidation_policy.asset must be one of the pool's reserves "
                f"{sorted(self.reserves)}, got {asset!r}"
            )
        if policy.kind in ("dynamic", "predictive", "circuit_breaker") and not asset:
            if not any(isinstance(r.price, str) for r in self.reserves.values()):
                raise ValueError(
                    f"liquidation_policy {policy.kind!r} watches a reserve priced by an oracle; "
                    "this pool has none (every reserve has a fixed price)"
                )
        if isinstance(policy, DynamicMarginPolicyConfig):
            for symbol, r in self.reserves.items():
                lowest = r.liquidation_threshold / policy.min_multiplier
                if lowest * (1 + r.liquidation_bonus) > 1 + 1e-12:
                    raise ValueError(
                        "liquidation_policy.min_multiplier must keep every liquidation threshold "
                        "times (1 + bonus) <= 1 (as the reserve itself must be): reserve "
                        f"{symbol} has {r.liquidation_threshold} / {policy.min_multiplier} * "
                        f"{1 + r.liquidation_bonus} > 1"
                    )
        return self


class AuctionConfig(_Frozen):
    """Descending-price (Dutch) collateral auction of a CDP (Maker's Clipper).

    Attributes:
        start_multiplier: Start price = oracle price * this.
        step_decay: The price is multiplied by this every step.
        reset_after_steps: An auction running this long restarts from a fresh start price.
        reset_below: An auction whose price falls below this share of its start price
            restarts.
        penalty: Added to the debt to raise (0.13 = 13%).
        max_resets: An auction that would need more resets than this expires: its collateral
            goes to the protocol and its unraised debt becomes bad debt.
    """

    start_multiplier: Annotated[float, Field(ge=1, le=10)] = 1.2
    step_decay: Annotated[float, Field(gt=0, le=1)] = 0.99
    reset_after_steps: int = Field(default=90, ge=1)
    reset_below: Annotated[float, Field(gt=0, lt=1)] = 0.4
    penalty: Annotated[float, Field(ge=0, lt=1)] = 0.13
    max_resets: int = Field(default=3, ge=0, le=1000)


class CdpConfig(_Frozen):
    """A collateralised-debt-position stablecoin (Maker semantics).

    Attributes:
        kind: ``"cdp"``.
        collateral: Collateral asset.
        stablecoin: Asset minted against it (must be declared in ``assets``).
        price: Oracle name valuing the collateral in the stablecoin's unit, or a fixed price.
        liquidation_ratio: Minimum collateral value / debt; below it a vault is unsafe.
        stability_fee: Annual fee accrued on debt.
        debt_ceiling: Maximum total debt, human units (0: no ceiling).
        auction: The collateral auction.
    """

    kind: Literal["cdp"]
    collateral: str
    stablecoin: str
    price: PriceRef
    liquidation_ratio: Annotated[float, Field(gt=1, le=10)] = 1.5
    stability_fee: Annotated[float, Field(ge=0, le=1)] = 0.02
    debt_ceiling: NonNegFloat = 0.0
    auction: AuctionConfig = AuctionConfig()


class MarginTierConfig(_Frozen):
    """One notional tier of a perp venue's margin table.

    Attributes:
        max_notional: Upper notional bound of the tier, in the settlement asset (human
            units); the last tier has no bound and gives 0.
        maintenance_rate: Maintenance margin rate within the tier.
        max_leverage: Largest leverage an order may open within the tier (initial margin
            rate = 1 / max_leverage).
    """

    max_notional: NonNegFloat
    maintenance_rate: Annotated[float, Field(gt=0, lt=1)]
    max_leverage: Annotated[float, Field(ge=1, le=1000)]


def _default_tiers() -> list[MarginTierConfig]:
    # Binance USD-M BTCUSDT leverage brackets (notional cap, maintenance rate, max leverage),
    # as published in Binance's "Leverage and Margin of USD-M Futures" table (caps and rates
    # from a public transcription dated 2021-03-26; see marginsim.protocols.perp).
    brackets = [
        (50_000, 0.004, 125), (250_000, 0.005, 100), (1_000_000, 0.01, 50),
        (10_000_000, 0.025, 20), (20_000_000, 0.05, 10), (50_000_000, 0.10, 5),
        (100_000_000, 0.125, 4), (200_000_000, 0.15, 3), (300_000_000, 0.25, 2),
        (0, 0.50, 1),
    ]  # fmt: skip
    return [
        MarginTierConfig(max_notional=cap, maintenance_rate=rate, max_leverage=lev)
        for cap, rate, lev in brackets
    ]


class PerpConfig(_Frozen):
    """A perpetual-futures venue: margin tiers, funding, insurance fund, auto-deleveraging.

    Its contracts are the scenario's ``perp`` instruments whose ``venue`` is this protocol.

    Attributes:
        kind: ``"perp"``.
        settlement: Asset margin, PnL and funding are paid in.
        index_oracle: Oracle giving the index price of the underlying.
        tiers: Margin table, ascending ``max_notional`` (the last with 0 = unbounded).
        mark_smoothing_steps: Window of the moving average of the premium (book mid over
            index) that is added to the index to form the mark price.
        funding_interval_steps: Steps between funding payments.
        interest_rate: Interest rate per funding interval (Binance: 0.0001 per 8 h).
        funding_clamp: Clamp ``c`` of ``interest - premium`` (Binance: 0.0005).
        funding_cap: Absolute cap of the funding rate per interval (Binance: 0.75 x the first
            tier's maintenance rate).
        impact_notional: Notional of the impact bid/ask used by the premium index (Binance:
            200 USDT / initial margin rate of the first tier).
        insurance_fund: Initial insurance fund, human units of ``settlement``; it receives
            what is left of a liquidated position's margin above bankruptcy and pays the
            shortfall below it.
        adl: Auto-deleverage profitable opposite positions when the fund cannot pay.
        margin_mode: Default margin mode of accounts: ``cross`` or ``isolated``.
        liquidation_policy: ``{kind = "static"}`` (the default), ``"dynamic"`` (the
            maintenance margin scales with a volatility forecast of the mark price) or
            ``"circuit_breaker"`` (the liquidation engine pauses); docs/policies.md.
    """

    kind: Literal["perp"]
    settlement: str = "USDC"
    index_oracle: str
    tiers: list[MarginTierConfig] = Field(default_factory=_default_tiers)
    mark_smoothing_steps: int = Field(default=5, ge=1)
    funding_interval_steps: int = Field(default=480, ge=1)
    interest_rate: Annotated[float, Field(ge=-0.01, le=0.01)] = 0.0001
    funding_clamp: Annotated[float, Field(ge=0, le=0.01)] = 0.0005
    funding_cap: Annotated[float, Field(gt=0, le=0.1)] = 0.003
    impact_notional: PositiveFloat = 25_000.0
    insurance_fund: NonNegFloat = 1_000_000.0
    adl: bool = True
    margin_mode: Literal["cross", "isolated"] = "cross"
    liquidation_policy: PerpPolicyConfig = StaticPolicyConfig()

    @model_validator(mode="after")
    def _policy_fits(self) -> PerpConfig:
        if _REPAIR_PASS.get():
            return self
        policy = self.liquidation_policy
        if getattr(policy, "asset", ""):
            raise ValueError(
                "liquidation_policy.asset is a lending-pool option; a perp venue watches the "
                f"mark price of its first contract, got asset = {policy.asset!r}"
            )
        if isinstance(policy, DynamicMarginPolicyConfig):
            for t in self.tiers:
                if t.maintenance_rate * policy.max_multiplier >= 1 / t.max_leverage:
                    raise ValueError(
                        "liquidation_policy.max_multiplier must keep every tier's maintenance "
                        "rate below its initial margin rate: "
                        f"{t.maintenance_rate} * {policy.max_multiplier} >= 1/{t.max_leverage}"
                    )
        return self

    @field_validator("tiers")
    @classmethod
    def _tiers_ascend(cls, tiers: list[MarginTierConfig]) -> list[MarginTierConfig]:
        if not tiers:
            raise ValueError("a perp venue needs at least one margin tier")
        bounds = [t.max_notional for t in tiers]
        if (
            bounds[-1] != 0
            or any(b <= 0 for b in bounds[:-1])
            or bounds[:-1] != sorted(set(bounds[:-1]))
        ):
            raise ValueError(
                f"tier max_notional must ascend strictly, the last tier 0 (unbounded); got {bounds}"
            )
        rates = [t.maintenance_rate for t in tiers]
        if rates != sorted(rates):
            raise ValueError(f"maintenance rates must not decrease with notional; got {rates}")
        for t in tiers:
            if t.maintenance_rate >= 1 / t.max_leverage:
                raise ValueError(
                    f"maintenance_rate {t.maintenance_rate} must be below the initial margin "
                    f"rate 1/max_leverage = {1 / t.max_leverage}"
                )
        return tiers


ProtocolConfig = Annotated[LendingConfig | CdpConfig | PerpConfig, Field(discriminator="kind")]
_PROTOCOL_KINDS = ("lending", "cdp", "perp")
_POLICY_KINDS = ("static", "dynamic", "gradual", "predictive", "circuit_breaker", "integrated")


# ------------------------------------------------------------------------------- network
class EdgeConfig(_Frozen):
    """An explicit exposure edge ``from -> to`` of the protocol network."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    source: str = Field(alias="from")
    target: str = Field(alias="to")
    kind: Literal["collateral", "oracle", "liquidity", "shared_accounts"]
    asset: str | None = None
    weight: NonNegFloat = 1.0


class BridgeConfig(_Frozen):
    """A cross-chain bridge: locks ``asset`` and issues ``wrapped`` one for one.

    The bridge holds the locked asset in the ledger holder ``bridge:<name>:lock``; the wrapped
    asset's supply is minted only against it (a deposit is minted after ``delay_steps``). A
    lending reserve of the wrapped asset is priced as ``oracle price of the underlying x
    backing``, where backing = locked units / wrapped supply, capped at 1 (a proof-of-reserve
    feed), so a ``bridge_failure`` shock that loses part of the lock lowers the wrapped
    asset's value in every protocol that accepts it.

    Attributes:
        name: Node name of the bridge.
        asset: The locked asset.
        wrapped: The wrapped asset (declared in ``assets`` with the same decimals).
        delay_steps: Steps between a deposit and the wrapped mint.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    asset: str
    wrapped: str
    delay_steps: int = Field(default=10, ge=0, le=100_000)


class NetworkConfig(_Frozen):
    """The protocol network beyond what the scenario implies.

    Attributes:
        edges: Explicit exposure edges (added to the implied ones).
        bridges: Cross-chain bridges (nodes of the network).
        debtrank_every: Compute DebtRank of every protocol every this many steps (1: each
            step; its columns hold the last value in between).
    """

    edges: list[EdgeConfig] = Field(default_factory=list)
    bridges: list[BridgeConfig] = Field(default_factory=list)
    debtrank_every: int = Field(default=1, ge=1)


# ------------------------------------------------------------------------------- agents
class Dist(_Frozen):
    """A distribution of a heterogeneous agent parameter.

    ``const`` (value), ``uniform`` (low, high), ``normal`` (mean, std), ``lognormal`` (median,
    sigma); every draw is then clipped to [min, max] when those are given.
    """

    dist: Literal["const", "uniform", "normal", "lognormal"] = "const"
    value: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    low: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    high: Annotated[float, Field(allow_inf_nan=False)] = 1.0
    mean: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    std: NonNegFloat = 1.0
    median: PositiveFloat = 1.0
    sigma: NonNegFloat = 0.5
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Dist:
        if _REPAIR_PASS.get():
            return self
        if self.dist == "uniform" and not self.low < self.high:
            raise ValueError(f"uniform needs low < high, got low={self.low}, high={self.high}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min must be <= max, got min={self.min}, max={self.max}")
        return self


def _dist_from_number(value: Any) -> Any:
    """Let a plain number stand for a constant distribution."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"dist": "const", "value": value}
    return value


class NoiseTradersConfig(_Frozen):
    """A population of noise traders: random market and limit orders around the mid.

    Attributes:
        count: Number of accounts.
        instrument: Book they trade (default: the first spot instrument).
        order_probability: Chance that an account sends an order in a step.
        limit_share: Share of orders that are limit orders (the rest are market orders).
        size: Order size in base units (a distribution over orders).
        limit_offset: Relative distance of a limit price from the mid (a distribution;
            buys below, sells above; values outside the spread rest).
        capital_quote: Quote each account starts with.
        capital_base: Base each account starts with.
        order_lifetime_steps: Resting orders are cancelled after this many steps.
    """

    count: int = Field(default=0, ge=0, le=10_000_000)
    instrument: str | None = None
    order_probability: Fraction = 0.02
    limit_share: Fraction = 0.6
    size: Dist = Dist(dist="lognormal", median=0.5, sigma=1.0, max=50.0)
    limit_offset: Dist = Dist(dist="uniform", low=0.0, high=0.01)
    capital_quote: NonNegFloat = 20_000.0
    capital_base: NonNegFloat = 10.0
    order_lifetime_steps: int = Field(default=30, ge=1)

    _coerce = field_validator("size", "limit_offset", mode="before")(_dist_from_number)


class FundamentalTradersConfig(_Frozen):
    """A population that trades the book toward the exogenous fundamental value.

    Attributes:
        count: Number of accounts.
        instrument: Book they trade (default: the first spot instrument).
        threshold: Per-account relative mispricing below which it does nothing (a
            distribution).
        aggressiveness: Base units traded per unit of relative mispricing (a distribution).
        max_order: Largest order of one account in one step, in base units.
        order_probability: Chance that an account looks at the market in a step.
        capital_quote: Quote each account starts with.
        capital_base: Base each account starts with.
    """

    count: int = Field(default=0, ge=0, le=10_000_000)
    instrument: str | None = None
    threshold: Dist = Dist(dist="uniform", low=0.002, high=0.02)
    aggressiveness: Dist = Dist(dist="lognormal", median=20.0, sigma=0.5)
    max_order: PositiveFloat = 5.0
    order_probability: Fraction = 0.1
    capital_quote: NonNegFloat = 100_000.0
    capital_base: NonNegFloat = 50.0

    _coerce = field_validator("threshold", "aggressiveness", mode="before")(_dist_from_number)


class MarketMakersConfig(_Frozen):
    """Individual market makers quoting ladders around a fair price.

    Attributes:
        count: Number of makers.
        instrument: Book they quote (default: the first spot instrument).
        capital_quote: Quote each maker starts with.
        capital_base: Base each maker starts with.
        levels: Price levels per side.
        level_size: Base units per level.
        half_spread: Relative half-spread at calm volatility.
        level_spacing: Relative distance between consecutive levels.
        inventory_skew: Relative shift of the quotes per unit of inventory imbalance
            (Avellaneda-Stoikov style: a long maker lowers both sides).
        fair_value_weight: Weight of the exogenous index against the book's last price in
            the maker's fair value (1 = follow the index only).
        volatility_window_steps: Window of the realised volatility estimate.
        vol_widening: Spreads scale by (1 + vol_widening * realised vol / calm vol - ...),
            see :mod:`marginsim.agents.market_maker`.
        withdraw_on_volatility: Realised/calm volatility ratio above which the maker pulls
            its quotes.
        withdraw_speed: Share of its ladder a stressed maker pulls per step (and puts back
            per calm step): 1 pulls everything at once, 0.25 thins the book over four steps.
        liquidation_map_aware: Read the public liquidation map every step and protect the
            side where a large cluster of liquidatable debt sits near the mid (off by
            default; the book makers of ``market_makers`` and ``perp_market_makers`` only).
        liquidation_map_distance: Relative price move within which liquidatable debt counts
            as near: long debt liquidated by a fall of at most this much threatens the bids
            (forced sales), short debt liquidated by such a rise the asks.
        liquidation_map_threshold: Near debt (quote value) at or above this multiple of the
            maker's own depth on that side (``levels * level_size * fair``) is a cluster.
        liquidation_map_action: ``"widen"`` multiplies that side's half-spread by
            ``liquidation_map_widen``; ``"pull"`` quotes nothing on that side.
        liquidation_map_widen: Half-spread multiplier of a threatened side (``widen``).
    """

    count: int = Field(default=0, ge=0, le=10_000)
    instrument: str | None = None
    capital_quote: NonNegFloat = 2_000_000.0
    capital_base: NonNegFloat = 1_000.0
    levels: int = Field(default=5, ge=1, le=100)
    level_size: PositiveFloat = 2.0
    half_spread: Annotated[float, Field(gt=0, lt=0.5)] = 0.0005
    level_spacing: Annotated[float, Field(gt=0, lt=0.5)] = 0.001
    inventory_skew: NonNegFloat = 0.0005
    fair_value_weight: Fraction = 0.7
    volatility_window_steps: int = Field(default=30, ge=2)
    vol_widening: NonNegFloat = 1.0
    withdraw_on_volatility: PositiveFloat = 3.0
    withdraw_speed: Annotated[float, Field(gt=0, le=1)] = 1.0
    liquidation_map_aware: bool = False
    liquidation_map_distance: Annotated[float, Field(gt=0, lt=1)] = 0.02
    liquidation_map_threshold: PositiveFloat = 1.0
    liquidation_map_action: Literal["widen", "pull"] = "widen"
    liquidation_map_widen: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 3.0


class PerpMarketMakersConfig(MarketMakersConfig):
    """Market makers quoting a perp book, margined on its venue.

    The fields of ``market_makers`` apply (``capital_base`` is unused); in addition:

    Attributes:
        margin: Settlement-asset margin each maker deposits on the venue, human units.
        max_inventory: Position (base units) at which the inventory skew is at its full
            ``inventory_skew``.
    """

    margin: NonNegFloat = 2_000_000.0
    max_inventory: PositiveFloat = 100.0


class PerpTradersConfig(_Frozen):
    """A population of leveraged perp traders (a first, simple strategy family).

    A flat account enters with probability ``entry_probability`` per step, long or short by
    its signal (``trend`` followers use the sign of the mark's move over ``trend_window``
    steps, ``contrarian`` accounts the opposite, the rest a coin flip), for
    ``leverage * margin`` of notional at market. It closes after ``hold_steps`` or when its
    loss reaches ``(1 - risk_buffer)`` of its margin; an account with ``risk_buffer = 0``
    rides its position into liquidation.

    Attributes:
        count: Number of accounts.
        instrument: Perp instrument traded (default: the first perp instrument).
        margin: Margin each account deposits, human units of the settlement asset.
        leverage: Target leverage (a distribution over accounts).
        risk_buffer: Share of its margin an account refuses to lose (a distribution).
        hold_steps: Steps a position is held at most (a distribution).
        entry_probability: Chance per step that a flat account enters.
        trend_share: Share of trend followers.
        contrarian_share: Share of contrarians (the rest trade on noise).
        trend_window: Steps of the trend signal.
    """

    count: int = Field(default=0, ge=0, le=10_000_000)
    instrument: str | None = None
    margin: PositiveFloat = 10_000.0
    leverage: Dist = Dist(dist="lognormal", median=5.0, sigma=0.5, min=1.0, max=50.0)
    risk_buffer: Dist = Dist(dist="uniform", low=0.0, high=0.5)
    hold_steps: Dist = Dist(dist="lognormal", median=120.0, sigma=0.7, min=1.0)
    entry_probability: Fraction = 0.01
    trend_share: Fraction = 0.5
    contrarian_share: Fraction = 0.2
    trend_window: int = Field(default=30, ge=1)

    _coerce = field_validator("leverage", "risk_buffer", "hold_steps", mode="before")(
        _dist_from_number
    )

    @model_validator(mode="after")
    def _shares(self) -> PerpTradersConfig:
        if _REPAIR_PASS.get():
            return self
        if self.trend_share + self.contrarian_share > 1 + 1e-12:
            raise ValueError(
                f"trend_share + contrarian_share must be <= 1, got "
                f"{self.trend_share} + {self.contrarian_share}"
            )
        return self


class LendingLoopersConfig(_Frozen):
    """A population of leveraged traders looping on a lending pool (recursive leverage).

    Each account starts with ``capital`` of ``collateral`` in its wallet and supplies it to
    ``pool`` at step 0. An account below its target leverage (collateral value / equity, at
    the pool's prices) takes one more loop with probability ``loop_probability`` per step:
    borrow ``debt`` up to the target (and the pool's LTV limit), buy ``collateral`` with it at
    market on ``instrument``, supply what it bought. It never loops past the leverage at
    which its health factor would fall below ``1 + 2 * risk_buffer``. An account whose health
    factor is below ``1 + risk_buffer`` deleverages one step instead: it withdraws collateral
    (as much as the pool allows, at most what brings it back to ``1 + 2 * risk_buffer``),
    sells it at market and repays debt with the proceeds; ``risk_buffer = 0`` never
    deleverages early and rides into liquidation. An account left without collateral
    re-enters with probability ``reentry_probability`` per step when its wallet holds
    collateral or the debt asset. See :class:`marginsim.agents.loopers.LendingLoopers`.

    Attributes:
        count: Number of accounts.
        pool: Name of the lending protocol they loop on.
        collateral: Symbol of the collateral they supply and buy (a reserve of ``pool``).
        debt: Symbol of the asset they borrow (a borrowable reserve of ``pool``).
        capital: Collateral each account starts with, human units.
        leverage: Target leverage, collateral value / equity (a distribution over accounts);
            every value it can take must be below ``1 / (1 - ltv)`` of the collateral reserve.
        risk_buffer: Health-factor margin above 1 an account keeps (a distribution).
        loop_probability: Chance per step that an account below its target loops once more
            (spreads the build-up over time).
        reentry_probability: Chance per step that a fully liquidated account re-enters.
        instrument: Spot instrument they trade (default: the first spot book of
            ``collateral``/``debt``).
    """

    count: int = Field(default=0, ge=0, le=10_000_000)
    pool: str = ""
    collateral: str = "WETH"
    debt: str = "USDC"
    capital: PositiveFloat = 1.0
    leverage: Dist = Dist(dist="lognormal", median=3.0, sigma=0.4, min=1.0, max=8.0)
    risk_buffer: Dist = Dist(dist="uniform", low=0.0, high=0.3)
    loop_probability: Fraction = 0.05
    reentry_probability: Fraction = 0.01
    instrument: str | None = None

    _coerce = field_validator("leverage", "risk_buffer", mode="before")(_dist_from_number)

    def max_leverage(self) -> float:
        """The largest target leverage a draw can give (``inf`` when unbounded)."""
        d = self.leverage
        top = {"const": d.value, "uniform": d.high}.get(d.dist, math.inf)
        return min(top, math.inf if d.max is None else d.max)


class LeveragedTradersConfig(_Frozen):
    """Leveraged traders using a lending pool and a perp venue with cross-protocol collateral.

    Each account starts with ``capital`` of ``collateral`` in its wallet and supplies it to
    ``pool`` at step 0. To *add* exposure it borrows ``debt`` (the perp venue's settlement
    asset) against that collateral, deposits what it borrowed as margin on the venue of
    ``perp_instrument`` and opens ``perp_leverage`` times as much notional at market, long
    or short by its signal. A fall in the collateral price hurts the lending position
    whatever the perp position's direction. Each step an account decides with probability
    ``decision_probability`` between add, hold, reduce and close, by the expected return on
    equity of its perp exposure over its horizon minus ``p / risk_tolerance``, where ``p``
    is its estimated probability of liquidation on either venue over the horizon
    (``2 * Phi(-d / (sigma * sqrt(h)))`` per barrier). Accounts with the early-deleverage
    flag count the lower liquidation probability of reducing or closing; the others reduce
    or close only when their signal turns. See
    :class:`marginsim.agents.leveraged.LeveragedTraders` for the exact rule.

    Attributes:
        count: Number of accounts.
        pool: Name of the lending protocol they borrow from.
        collateral: Symbol of the collateral they supply (a reserve of ``pool``; the base of
            ``perp_instrument``).
        debt: Symbol they borrow (a borrowable reserve of ``pool``; the settlement asset of
            the perp venue).
        perp_instrument: Perp contract they trade (default: the first perp instrument).
        capital: Collateral each account starts with, human units.
        borrow_ratio: Largest debt an account takes, as a share of its borrowing power
            (collateral value times LTV) (a distribution, clipped to [0, 1]).
        perp_leverage: Notional opened per unit of margin added (a distribution, >= 1).
        add_fraction: Share of its largest debt that one add borrows (an add of less than
            a quarter of this is not made).
        reduce_fraction: Share of its perp position that one reduce closes.
        risk_tolerance: Scale of the liquidation-probability penalty: a liquidation
            probability ``p`` costs ``p / risk_tolerance`` of expected return on equity (a
            distribution, > 0).
        horizon_steps: Steps over which an account weighs gain and liquidation risk (a
            distribution, >= 1).
        weight_trend: Weight of the trend signal (a distribution).
        weight_value: Weight of the value signal ``ln(fundamental / mark)`` (a distribution).
        weight_noise: Weight of the private noise signal (a distribution).
        trend_window: Steps of the trend signal (log move of the mark over the window).
        volatility_window: Steps of the realised-volatility estimate.
        early_deleverage_share: Share of accounts that deleverage early near liquidation.
        decision_probability: Chance per step that an account decides (the others hold).
        trading_cost: Cost an account expects per unit of perp notional it trades (fees
            plus half the spread); a move must gain more than it costs.
    """

    count: int = Field(default=0, ge=0, le=10_000_000)
    pool: str = ""
    collateral: str = "WETH"
    debt: str = "USDC"
    perp_instrument: str | None = None
    capital: PositiveFloat = 1.0
    borrow_ratio: Dist = Dist(dist="uniform", low=0.3, high=0.9, min=0.0, max=1.0)
    perp_leverage: Dist = Dist(dist="lognormal", median=3.0, sigma=0.4, min=1.0, max=20.0)
    add_fraction: Annotated[float, Field(gt=0, le=1)] = 0.25
    reduce_fraction: Annotated[float, Field(gt=0, le=1)] = 0.5
    risk_tolerance: Dist = Dist(dist="lognormal", median=1.0, sigma=0.5, min=0.01)
    horizon_steps: Dist = Dist(dist="lognormal", median=60.0, sigma=0.5, min=1.0)
    weight_trend: Dist = Dist(dist="uniform", low=0.0, high=1.0)
    weight_value: Dist = Dist(dist="uniform", low=0.0, high=1.0)
    weight_noise: Dist = Dist(dist="uniform", low=0.0, high=0.5)
    trend_window: int = Field(default=30, ge=1)
    volatility_window: int = Field(default=60, ge=2)
    early_deleverage_share: Fraction = 0.5
    decision_probability: Fraction = 0.05
    trading_cost: Annotated[float, Field(ge=0, lt=1)] = 0.001

    _coerce = field_validator(
        "borrow_ratio",
        "perp_leverage",
        "risk_tolerance",
        "horizon_steps",
        "weight_trend",
        "weight_value",
        "weight_noise",
        mode="before",
    )(_dist_from_number)

    @field_validator("borrow_ratio", "perp_leverage", "risk_tolerance", "horizon_steps")
    @classmethod
    def _ranges(cls, d: Dist, info: ValidationInfo) -> Dist:
        # A draw outside these ranges would make the decision rule meaningless, and a clip
        # would silently change the user's distribution, so the bounds must be stated.
        low, strict = _LEVERAGED_FLOORS[info.field_name]
        if d.dist == "lognormal":
            least, reached = 0.0, False  # lognormal draws are > 0
        elif d.dist == "normal":
            least, reached = -math.inf, True
        else:
            least, reached = (d.value if d.dist == "const" else d.low), True
        if d.min is not None and d.min > least:
            least, reached = d.min, True
        if least < low or (strict and reached and least <= low):
            rule = ">" if strict else ">="
            raise ValueError(
                f"must only take values {rule} {low}; the distribution reaches {least:.6g}: "
                f"set a min"
            )
        if info.field_name == "borrow_ratio":
            top = {"const": d.value, "uniform": d.high}.get(d.dist, math.inf)
            top = min(top, math.inf if d.max is None else d.max)
            if top > 1.0:
                raise ValueError(
                    f"must only take values <= 1; the distribution reaches {top:.6g}: set max = 1"
                )
        return d


#: Lower bound of each checked distribution of :class:`LeveragedTradersConfig`, and whether
#: the bound itself is excluded.
_LEVERAGED_FLOORS = {
    "borrow_ratio": (0.0, False),
    "perp_leverage": (1.0, False),
    "risk_tolerance": (0.0, True),
    "horizon_steps": (1.0, False),
}


class LiquidatorsConfig(_Frozen):
    """Liquidation bots and CDP keepers (individuals).

    Every liquidation round each bot, in a seeded shuffled order, scans the lending pools for
    accounts with health factor below 1 (largest debt first) and the CDPs for unsafe vaults
    and running auctions, and acts where it expects a profit of at least ``min_profit`` after
    selling the seized collateral on the shared book, as far as its wallet can pay.

    Attributes:
        count: Number of bots.
        capital: Starting wallet of each bot, by asset symbol, in human units.
        min_profit: Least expected profit, relative to the value repaid, to act.
        sell_collateral: Sell seized collateral on the book (``true``) or keep it. Another
            pool's receipt token is redeemed at its issuer first; a wrapped asset (or a
            redeemed stablecoin) that no book trades is kept and valued at its pool's price
            (docs/network.md).
        sell_over_steps: Sell it at once (1) or in equal slices over this many steps (a
            flash-loan liquidation always sells at once: the loan is repaid from the sale).
        max_actions_per_round: Liquidations or takes one bot makes in one round.
        max_candidates: Liquidatable accounts per pool one bot evaluates in a round, largest
            debt first (bots watch the big ones; this bounds a round's work when thousands
            of accounts are under water at once).
        uses_flash_loans: When its wallet lacks the debt asset, borrow it with a flash loan
            from the same pool, liquidate, sell the collateral for the debt asset on the book
            and repay the loan plus its fee in one atomic action (reverted if it cannot).
        gas_bid: Priority fee each bot bids per call (a distribution over bots, human units
            of ``gas_asset``); it matters only when ``run.block_space`` is limited.
        gas_asset: Asset gas is paid in (to the holder ``chain:block_producer``).
    """

    count: int = Field(default=0, ge=0, le=10_000)
    capital: dict[str, NonNegFloat] = Field(default_factory=lambda: {"USDC": 500_000.0})
    min_profit: Annotated[float, Field(ge=-1, lt=1)] = 0.0
    sell_collateral: bool = True
    sell_over_steps: int = Field(default=1, ge=1, le=10_000)
    max_actions_per_round: int = Field(default=20, ge=1)
    max_candidates: int = Field(default=50, ge=1)
    uses_flash_loans: bool = False
    gas_bid: Dist = Dist(dist="const", value=0.0)
    gas_asset: str = "USDC"

    _coerce = field_validator("gas_bid", mode="before")(_dist_from_number)


class ThinBookMakerConfig(MarketMakersConfig):
    """One small market maker quoting a ladder around a fixed fair price (a thin book).

    It is a :class:`MarketMakersConfig` maker whose fair value is ``price`` instead of the
    exogenous index (which prices another asset): it gives a second token's book its only
    resting liquidity, requoting every agent phase around ``price``, so a pump of that
    book's mid lasts until the maker's next quotes.

    Attributes:
        price: The maker's fixed fair value (quote per base).
    """

    count: int = Field(default=0, ge=0, le=1)
    price: PositiveFloat = 1.0


class OracleManipulatorConfig(_Frozen):
    """The oracle manipulator (adversarial individual): pump a thin book, borrow against it.

    At ``attack_step`` (or, with ``attack_step < 0``, at the first step at which pumping the
    book's mid by ``pump`` costs at most ``budget`` and the attack is estimated to pay) it
    buys the collateral on ``instrument`` at market, enough to lift the mid by ``pump``
    (estimated from the book with ``market_order_cost``). Oracles observe the pumped book in
    the next step's oracle phase, so one step later it supplies all its collateral to
    ``pool`` and borrows ``debt`` up to ``borrow_share`` of its borrowing power, then stops.

    Attributes:
        enabled: Whether the manipulator exists.
        pool: Victim lending pool.
        collateral: Collateral reserve symbol (the thin book's base asset).
        debt: Reserve borrowed (the book's quote asset).
        instrument: Thin book (default: the spot book of ``collateral`` against ``debt``).
        capital_collateral: Collateral the manipulator starts with.
        capital_debt: Debt asset the manipulator starts with (pays for the pump).
        attack_step: Step of the pump; negative: attack when the book is thin enough.
        pump: Relative rise of the mid the pump aims for (1.5: the mid times 2.5).
        budget: Most of ``debt`` the pump may spend (human units; capped by the wallet).
        borrow_share: Share of the borrowing power the borrow asks for (under 1 for rounding).
        reference_price: Oracle-free value of the collateral for the P&L; 0: the mid before
            the attack (the exogenous index when the collateral is the index asset).
    """

    enabled: bool = False
    pool: str = ""
    collateral: str = "TKN"
    debt: str = "USDC"
    instrument: str | None = None
    capital_collateral: NonNegFloat = 0.0
    capital_debt: NonNegFloat = 0.0
    attack_step: int = -1
    pump: PositiveFloat = 1.5
    budget: NonNegFloat = 100_000.0
    borrow_share: Annotated[float, Field(gt=0, le=1)] = 0.999
    reference_price: NonNegFloat = 0.0


class ArbitrageursConfig(_Frozen):
    """Arbitrageurs (individuals) between a constant-product AMM pool and a spot book.

    Each step, in the shuffled trader order, an arbitrageur compares the pool with the book of
    the same pair. When the pool's price, after the pool fee, is below what the best bid pays
    net of the taker fee, it buys base from the pool and sells it on the book (and the reverse
    when the pool is above the best ask). The size brings the pool to the book's price, capped
    by ``max_trade``, the wallet and the depth of the book, and is halved until the round trip
    earns at least ``min_edge`` (see :mod:`marginsim.agents.arbitrageur`).

    Attributes:
        count: Number of arbitrageurs.
        pool: Id of the AMM pool they arbitrage (default: the first pool).
        instrument: Spot book they trade against the pool (default: the first spot book
            with the pool's base and quote).
        capital_base: Base each arbitrageur starts with, human units.
        capital_quote: Quote each arbitrageur starts with, human units.
        min_edge: Least relative profit of a round trip after all fees (proceeds / cost - 1)
            to act.
        max_trade: Most base (human units) one arbitrageur moves through the pool in one
            step.
    """

    count: int = Field(default=0, ge=0, le=10_000)
    pool: str | None = None
    instrument: str | None = None
    capital_base: NonNegFloat = 100.0
    capital_quote: NonNegFloat = 200_000.0
    min_edge: Annotated[float, Field(ge=0, lt=1)] = 0.0005
    max_trade: PositiveFloat = 10.0


class LiquidationHunterConfig(_Frozen):
    """The liquidation hunter (individual, adversarial): pushes the price through a cluster.

    Every step it reads the public liquidation map of the book's base asset on a grid from
    the mid down to ``max_push`` below it (spacing ``grid_step``). The nearest grid price
    below the mid where the long debt newly liquidatable reaches ``min_cluster_debt`` is the
    cluster; the target is ``overshoot`` below it. It estimates the sale that moves the book's
    mid there (bids swept down to ``2 * target - best ask``, the asks left in place), its
    cost (mid value minus the proceeds, from ``market_order_cost``) and its gain (its size
    times the fall of the book to the marginal price after its own sale plus the forced
    sales of ``cascade_share`` of the cluster's debt, bonus included), and attacks, selling
    its own base at market, when gain > ``profit_margin`` * cost. From ``hold_steps`` later it
    buys back at market, step by step, what is still missing of the base it held before (as
    far as its quote pays), then rests ``cooldown_steps``.

    Attributes:
        count: Number of hunters (each with its own wallet).
        instrument: Spot book it trades (default: the first spot instrument).
        capital: Starting wallet of each hunter, by asset symbol, human units.
        grid_step: Relative spacing of the map's grid.
        max_push: Deepest relative move below the mid it considers.
        min_cluster_debt: Least newly liquidatable debt (quote human units) of a cluster.
        overshoot: Relative distance it pushes beyond the cluster's price.
        cascade_share: Share of the cluster's debt it expects to be repaid by liquidators
            (whose collateral is then sold on the book).
        liquidation_bonus: Bonus it assumes on the seized collateral.
        profit_margin: Attack when estimated gain > profit_margin * estimated cost.
        hold_steps: Steps between the attack and the buy-back.
        cooldown_steps: Steps after a buy-back before it may attack again.
    """

    count: int = Field(default=0, ge=0, le=100)
    instrument: str | None = None
    capital: dict[str, NonNegFloat] = Field(default_factory=lambda: {"WETH": 500.0})
    grid_step: Annotated[float, Field(gt=0, lt=0.5)] = 0.0025
    max_push: Annotated[float, Field(gt=0, lt=0.9)] = 0.1
    min_cluster_debt: NonNegFloat = 500_000.0
    overshoot: Annotated[float, Field(ge=0, lt=0.5)] = 0.002
    cascade_share: Fraction = 0.5
    liquidation_bonus: Annotated[float, Field(ge=0, lt=1)] = 0.05
    profit_margin: NonNegFloat = 1.0
    hold_steps: int = Field(default=2, ge=1)
    cooldown_steps: int = Field(default=30, ge=0)


class BasisArbitrageursConfig(_Frozen):
    """Cash-and-carry arbitrageurs between a perp contract and the spot book of its base.

    Attributes:
        count: Number of arbitrageurs.
        perp_instrument: Perp contract (default: the first perp instrument).
        spot_instrument: Spot book of the same base (default: the first spot book of the
            perp's base and quote).
        capital_base: Base each starts with in its wallet, human units.
        capital_quote: Quote each starts with in its wallet, human units.
        margin: Settlement-asset margin each deposits on the perp venue, human units.
        entry_bps: Basis (perp mid over spot mid) beyond which it trades, basis points.
        exit_bps: Basis within which it unwinds, basis points.
        trade_size: Base units per trade (each leg).
        max_position: Largest perp position, base units.
    """

    count: int = Field(default=0, ge=0, le=1000)
    perp_instrument: str | None = None
    spot_instrument: str | None = None
    capital_base: NonNegFloat = 100.0
    capital_quote: NonNegFloat = 200_000.0
    margin: NonNegFloat = 200_000.0
    entry_bps: PositiveFloat = 20.0
    exit_bps: NonNegFloat = 5.0
    trade_size: PositiveFloat = 2.0
    max_position: PositiveFloat = 50.0

    @model_validator(mode="after")
    def _exit_below_entry(self) -> BasisArbitrageursConfig:
        if _REPAIR_PASS.get():
            return self
        if self.exit_bps >= self.entry_bps:
            raise ValueError(
                f"exit_bps must be below entry_bps, got {self.exit_bps} >= {self.entry_bps}"
            )
        return self


class HedgersConfig(_Frozen):
    """Hedgers (individuals): risk managers shorting the perp against spot they hold.

    Each hedger holds ``spot_holdings`` of the perp's base asset in its wallet and
    ``margin`` of settlement asset on the venue. Every step it reads the venue's aggregate
    margin debt ``D`` (settlement human units) and the contract's last funding rate ``r``
    and sets

    ``hedge_ratio = clip(base_ratio + sensitivity_debt * D / debt_reference
    + sensitivity_funding * r, 0, 1)``,

    then targets a perp position of ``-hedge_ratio * spot`` (``spot``: base in its wallet,
    rounded to lots) and sends a market order for the difference when it exceeds ``band``.

    Attributes:
        count: Number of hedgers (each with its own wallet and venue account).
        instrument: Perp instrument it hedges with (default: the first perp instrument).
        spot_holdings: Base asset each hedger holds in its wallet, human units.
        margin: Settlement-asset margin each hedger deposits on the venue, human units.
        base_ratio: Hedge ratio with no margin debt and zero funding.
        sensitivity_debt: Added hedge ratio per ``debt_reference`` of venue margin debt.
        debt_reference: Venue margin debt (settlement human units) the debt term scales by.
        sensitivity_funding: Added hedge ratio per unit of funding rate (per interval;
            positive when longs pay shorts).
        band: Rebalance band: no order while ``|target - position|`` is at most this many
            base units.
    """

    count: int = Field(default=0, ge=0, le=100)
    instrument: str | None = None
    spot_holdings: NonNegFloat = 100.0
    margin: NonNegFloat = 100_000.0
    base_ratio: Fraction = 0.2
    sensitivity_debt: NonNegFloat = 0.5
    debt_reference: PositiveFloat = 50_000_000.0
    sensitivity_funding: NonNegFloat = 1_000.0
    band: NonNegFloat = 0.5


class StablecoinSellersConfig(_Frozen):
    """Holders of a CDP's stablecoin who sell it when its backing fails (a population).

    Each step every account reads the CDP's uncovered system debt ``D`` and the stablecoin's
    supply ``S`` (a read-only view) and, when ``D / S`` exceeds ``threshold``, sends with
    probability ``min(1, sensitivity * D / S)`` one market sell of ``sell_share`` of the
    stablecoin in its wallet on ``instrument``. They never buy back: nothing defends the peg
    once the backing is gone, so the book's bids absorb the flow and its mid falls.

    Attributes:
        count: Number of accounts.
        cdp: Name of the CDP protocol whose stablecoin they hold.
        instrument: Book they sell on (default: the first spot book of the stablecoin).
        capital_base: Stablecoin each account starts with, human units.
        capital_quote: Quote each account starts with, human units.
        threshold: Least system debt per unit of supply at which anyone sells.
        sensitivity: Selling probability per unit of system debt per unit of supply.
        sell_share: Share of its stablecoin an account sells in one order.
    """

    count: int = Field(default=0, ge=0, le=10_000_000)
    cdp: str = ""
    instrument: str | None = None
    capital_base: NonNegFloat = 10_000.0
    capital_quote: NonNegFloat = 0.0
    threshold: NonNegFloat = 0.0
    sensitivity: NonNegFloat = 1.0
    sell_share: Annotated[float, Field(gt=0, le=1)] = 0.25


class WrappedSellersConfig(_Frozen):
    """Holders of a bridge's wrapped asset who sell it while it trades above its backing.

    Each step every account, with probability ``order_probability``, compares the wrapped
    book's best bid with what one wrapped unit is backed by: ``underlying mid x backing``
    (the bridge's proof of reserve, read-only). When the bid exceeds that value by more than
    ``min_edge`` it sends one market sell of ``sell_share`` of its wrapped wallet (whole lots).
    While the bridge is whole (backing 1) this only caps a premium; after a
    ``bridge_failure`` the wrapped asset is worth less than the underlying and they sell until
    the book's bid has fallen to the backing value, so the discount comes from order flow.

    Attributes:
        count: Number of accounts.
        bridge: Name of the bridge (``network.bridges``) whose wrapped asset they hold.
        instrument: Book of the wrapped asset (default: the first spot book of it).
        underlying_instrument: Book of the bridge's locked asset against the same quote whose
            mid values the backing (default: the first such spot book).
        capital_base: Wrapped asset each account starts with, human units (bridged before
            step 0).
        capital_quote: Quote each account starts with, human units.
        order_probability: Chance that one account looks at the books in a step.
        sell_share: Share of its wrapped asset an account sells in one order.
        min_edge: Least relative premium of the bid over the backing value to sell.
    """

    count: int = Field(default=0, ge=0, le=10_000_000)
    bridge: str = ""
    instrument: str | None = None
    underlying_instrument: str | None = None
    capital_base: NonNegFloat = 10.0
    capital_quote: NonNegFloat = 0.0
    order_probability: Annotated[float, Field(gt=0, le=1)] = 0.1
    sell_share: Annotated[float, Field(gt=0, le=1)] = 0.25
    min_edge: Annotated[float, Field(ge=0, lt=1)] = 0.0


class AgentsConfig(_Frozen):
    """The agents of a run: populations and individuals, by kind."""

    noise: NoiseTradersConfig = NoiseTradersConfig()
    fundamental: FundamentalTradersConfig = FundamentalTradersConfig()
    market_makers: MarketMakersConfig = MarketMakersConfig()
    perp_market_makers: PerpMarketMakersConfig = PerpMarketMakersConfig()
    perp_traders: PerpTradersConfig = PerpTradersConfig()
    lending_loopers: LendingLoopersConfig = LendingLoopersConfig()
    leveraged_traders: LeveragedTradersConfig = LeveragedTradersConfig()
    liquidators: LiquidatorsConfig = LiquidatorsConfig()
    thin_book_maker: ThinBookMakerConfig = ThinBookMakerConfig()
    oracle_manipulator: OracleManipulatorConfig = OracleManipulatorConfig()
    arbitrageurs: ArbitrageursConfig = ArbitrageursConfig()
    liquidation_hunter: LiquidationHunterConfig = LiquidationHunterConfig()
    hedgers: HedgersConfig = HedgersConfig()
    basis_arbitrageurs: BasisArbitrageursConfig = BasisArbitrageursConfig()
    stablecoin_sellers: StablecoinSellersConfig = StablecoinSellersConfig()
    #: Market makers of a second book (the wrapped asset's): the ``market_makers`` rules,
    #: ``instrument`` required, fair value from the exogenous index and that book.
    wrapped_makers: MarketMakersConfig = MarketMakersConfig()
    wrapped_sellers: WrappedSellersConfig = WrappedSellersConfig()


# ------------------------------------------------------------------------------- accounts
class AccountConfig(_Frozen):
    """An explicit account the user places in the world, e.g. to replay a real whale.

    Attributes:
        id: Unique account name (its ledger holder name is ``account:<id>``).
        wallet: Token balances held in the wallet, by asset symbol, in human units.
        protocol: Protocol the positions below are held in (protocols arrive with the lending,
            CDP and perp capabilities; until then only wallet accounts are accepted).
        collateral: Collateral by asset in ``protocol``.
        debt: Debt by asset in ``protocol``.
        positions: Perp positions by instrument id (signed base units) in ``protocol``.
    """

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    wallet: dict[str, NonNegFloat] = Field(default_factory=dict)
    protocol: str | None = None
    collateral: dict[str, NonNegFloat] = Field(default_factory=dict)
    debt: dict[str, NonNegFloat] = Field(default_factory=dict)
    positions: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(default_factory=dict)


# ------------------------------------------------------------------------------- metrics
class MetricsConfig(_Frozen):
    """What the run records beyond the per-step metrics (``[metrics]``).

    Attributes:
        liquidation_map_every: Record the liquidation map of the exogenous asset every this
            many steps (at steps 0, k, 2k, ...) into the ``liquidation_map`` event table,
            for the liquidation heatmap; 0 records none.
        liquidation_map_range: Relative half-width of the map's price grid around the
            reference price (0.3: from 30% below to 30% above); in (0, 1).
        liquidation_map_points: Grid prices per recorded map (at least 2), evenly spaced.
    """

    liquidation_map_every: int = Field(default=10, ge=0)
    liquidation_map_range: float = Field(default=0.3, gt=0, lt=1, allow_inf_nan=False)
    liquidation_map_points: int = Field(default=61, ge=2, le=10_001)


# ------------------------------------------------------------------------------- scenario
class Scenario(_Frozen):
    """A complete, validated, immutable description of one run.

    Build it from TOML with :meth:`from_toml` / :meth:`from_toml_str`, write it back with
    :meth:`to_toml`, derive variants with :meth:`with_overrides`.

    Raises:
        ScenarioError: From every constructor, listing all problems at once.
    """

    name: str = Field(default="scenario", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    description: str = ""
    run: RunConfig = RunConfig()
    assets: list[AssetConfig] = Field(
        default_factory=lambda: [
            AssetConfig(symbol="USDC", decimals=6),
            AssetConfig(symbol="WETH", decimals=9),
        ]
    )
    instruments: list[InstrumentConfig] = Field(default_factory=list)
    amms: list[AmmConfig] = Field(default_factory=list)
    exogenous: ExogenousConfig = ExogenousConfig()
    shocks: list[ShockConfig] = Field(default_factory=list)
    oracles: dict[str, OracleConfig] = Field(default_factory=dict)
    protocols: dict[str, ProtocolConfig] = Field(default_factory=dict)
    network: NetworkConfig = NetworkConfig()
    agents: AgentsConfig = AgentsConfig()
    accounts: list[AccountConfig] = Field(default_factory=list)
    metrics: MetricsConfig = MetricsConfig()

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            if _REPAIR_PASS.get():
                raise
            problems = _problems(exc)
            # Cross-field checks run only on valid fields. To still report every problem at
            # once, drop the invalid values (their defaults stand in) and validate again;
            # the cross-field problems that this second pass finds are added. A table that
            # failed only its own whole-table check (ltv above the threshold, say) is kept and
            # its check skipped in that pass, so that the names it defines (a reserve, an
            # instrument) stay known and no echo of the first problem is reported.
            repaired = _without_invalid_values(data, exc)
            if repaired is not None:
                token = _REPAIR_PASS.set(True)
                try:
                    Scenario(**repaired)
                except ValidationError as again:
                    problems += [p for p in _problems(again) if p not in problems]
                except Exception:  # noqa: BLE001, S110 - a best-effort pass: the first
                    pass  # pass's problems are reported whatever a skipped check let through
                finally:
                    _REPAIR_PASS.reset(token)
            raise ScenarioError(problems) from None

    # ---------------------------------------------------------------- cross-field checks
    @model_validator(mode="after")
    def _cross_references(self) -> Scenario:
        problems: list[tuple[str, str]] = []
        decimals = {a.symbol: a.decimals for a in self.assets}
        _unique(problems, "assets", [a.symbol for a in self.assets], "symbol")
        _unique(problems, "instruments", [i.id for i in self.instruments], "id")
        _unique(problems, "amms", [p.id for p in self.amms], "id")
        _unique(problems, "accounts", [a.id for a in self.accounts], "id")
        clash = {i.id for i in self.instruments} & {p.id for p in self.amms}
        if clash:
            problems.append(
                ("amms", f"ids must differ from instrument ids, both use {sorted(clash)}")
            )

        def asset(field: str, symbol: str) -> None:
            if symbol not in decimals:
                problems.append((field, f"unknown asset {symbol!r}; assets are {sorted(decimals)}"))

        for k, ins in enumerate(self.instruments):
            f = f"instruments[{k}]"
            asset(f"{f}.base", ins.base)
            asset(f"{f}.quote", ins.quote)
            if ins.kind == "perp":
                venue = self.protocols.get(ins.venue or "")
                if not isinstance(venue, PerpConfig):
                    perps = sorted(
                        n for n, p in self.protocols.items() if isinstance(p, PerpConfig)
                    )
                    problems.append(
                        (
                            f"{f}.venue",
                            f"a perp instrument needs the name of a perp "
                            f"protocol; perp protocols are {perps}, got {ins.venue!r}",
                        )
                    )
                elif ins.quote != venue.settlement:
                    problems.append(
                        (
                            f"{f}.quote",
                            f"must be the settlement asset of venue "
                            f"{ins.venue!r} ({venue.settlement}); got {ins.quote!r}",
                        )
                    )
            elif ins.venue is not None:
                problems.append((f"{f}.venue", "only perp instruments have a venue"))
            if ins.base in decimals and ins.quote in decimals:
                base_per_lot = ins.lot * 10 ** decimals[ins.base]
                if base_per_lot < 1 - 1e-9 or not _is_integral(base_per_lot):
                    problems.append(
                        (
                            f"{f}.lot",
                            f"must be a whole number of {ins.base} ledger "
                            f"units (10^-{decimals[ins.base]}); got {ins.lot}",
                        )
                    )
                quote_per_tick_lot = ins.tick * ins.lot * 10 ** decimals[ins.quote]
                if quote_per_tick_lot < 1 - 1e-9 or not _is_integral(quote_per_tick_lot):
                    problems.append(
                        (
                            f"{f}.tick",
                            "tick * lot must be a whole number of "
                            f"{ins.quote} ledger units (10^-{decimals[ins.quote]}); "
                            f"got tick={ins.tick}, lot={ins.lot}",
                        )
                    )
        for k, pool in enumerate(self.amms):
            asset(f"amms[{k}].base", pool.base)
            asset(f"amms[{k}].quote", pool.quote)
        asset("exogenous.asset", self.exogenous.asset)
        asset("exogenous.quote", self.exogenous.quote)

        markets = {i.id for i in self.instruments} | {p.id for p in self.amms}
        for name, oracle in self.oracles.items():
            names = oracle.sources if oracle.kind == "median" else [oracle.source]
            for s in names:
                if s != "index" and s not in markets:
                    problems.append(
                        (
                            f"oracles.{name}.source",
                            f"unknown source {s!r}; sources are 'index' or one of "
                            f"{sorted(markets)}",
                        )
                    )
            if oracle.reads == "index" and oracle.kind != "index" and oracle.source != "index":
                problems.append(
                    (
                        f"oracles.{name}.reads",
                        f"'index' can only be read from source 'index'; got source "
                        f"{oracle.source!r}",
                    )
                )
            if oracle.kind in ("last", "mid") and oracle.source == "index":
                problems.append(
                    (
                        f"oracles.{name}.source",
                        f"a {oracle.kind!r} oracle reads a market, got 'index'",
                    )
                )
        spot = [i.id for i in self.instruments if i.kind == "spot"]
        perp_ids = [i.id for i in self.instruments if i.kind == "perp"]
        agents = self.agents
        basis = agents.basis_arbitrageurs
        for key, cfg, field, kind, ids in (
            ("noise", agents.noise, "instrument", "spot", spot),
            ("fundamental", agents.fundamental, "instrument", "spot", spot),
            ("market_makers", agents.market_makers, "instrument", "spot", spot),
            ("perp_market_makers", agents.perp_market_makers, "instrument", "perp", perp_ids),
            ("perp_traders", agents.perp_traders, "instrument", "perp", perp_ids),
            ("liquidation_hunter", agents.liquidation_hunter, "instrument", "spot", spot),
            ("hedgers", agents.hedgers, "instrument", "perp", perp_ids),
            ("basis_arbitrageurs", basis, "perp_instrument", "perp", perp_ids),
            ("basis_arbitrageurs", basis, "spot_instrument", "spot", spot),
        ):
            chosen = getattr(cfg, field)
            if cfg.count and chosen is None and not ids:
                problems.append((f"agents.{key}.{field}", f"agents need a {kind} instrument"))
            if chosen is not None and chosen not in ids:
                problems.append(
                    (
                        f"agents.{key}.{field}",
                        f"unknown {kind} instrument {chosen!r}; have {ids}",
                    )
                )
        problems.extend(self._looper_problems(spot))
        problems.extend(self._leveraged_problems(perp_ids))
        problems.extend(self._arbitrageur_problems())
        for sym in self.agents.liquidators.capital if self.agents.liquidators.count else ():
            asset(f"agents.liquidators.capital.{sym}", sym)
        hunter = self.agents.liquidation_hunter
        for sym in hunter.capital if hunter.count else ():
            asset(f"agents.liquidation_hunter.capital.{sym}", sym)
        if self.agents.liquidators.count and self.run.block_space:
            asset("agents.liquidators.gas_asset", self.agents.liquidators.gas_asset)
        for k, shock in enumerate(self.shocks):
            if shock.instrument is not None and shock.instrument not in spot:
                problems.append(
                    (
                        f"shocks[{k}].instrument",
                        f"unknown spot instrument {shock.instrument!r}; have {spot}",
                    )
                )

        def price(field: str, ref: str | float) -> None:
            if isinstance(ref, str) and ref not in self.oracles:
                problems.append(
                    (field, f"unknown oracle {ref!r}; oracles are {sorted(self.oracles)}")
                )

        for name, proto in self.protocols.items():
            f = f"protocols.{name}"
            if name in markets or name in self.oracles:
                problems.append((f, "a protocol name must differ from market and oracle names"))
            if isinstance(proto, LendingConfig):
                receipts = self.receipt_tokens()
                for symbol, reserve in proto.reserves.items():
                    issuer = receipts.get(symbol)
                    if issuer is None:
                        asset(f"{f}.reserves.{symbol}", symbol)
                    elif issuer[0] == name:
                        problems.append(
                            (f"{f}.reserves.{symbol}", "a pool cannot accept its own receipt token")
                        )
                    price(f"{f}.reserves.{symbol}.price", reserve.price)
            elif isinstance(proto, PerpConfig):
                asset(f"{f}.settlement", proto.settlement)
                price(f"{f}.index_oracle", proto.index_oracle)
            else:
                asset(f"{f}.collateral", proto.collateral)
                asset(f"{f}.stablecoin", proto.stablecoin)
                price(f"{f}.price", proto.price)
                if proto.collateral == proto.stablecoin:
                    problems.append((f"{f}.stablecoin", "must differ from the collateral"))
        bridge_names = [b.name for b in self.network.bridges]
        _unique(problems, "network.bridges", bridge_names, "name")
        for k, bridge in enumerate(self.network.bridges):
            bf = f"network.bridges[{k}]"
            asset(f"{bf}.asset", bridge.asset)
            asset(f"{bf}.wrapped", bridge.wrapped)
            if (
                bridge.name in markets
                or bridge.name in self.oracles
                or bridge.name in self.protocols
            ):
                problems.append(
                    (f"{bf}.name", "must differ from market, oracle and protocol names")
                )
            if bridge.asset == bridge.wrapped:
                problems.append((f"{bf}.wrapped", "must differ from the locked asset"))
            elif bridge.asset in decimals and bridge.wrapped in decimals:
                if decimals[bridge.asset] != decimals[bridge.wrapped]:
                    problems.append(
                        (
                            f"{bf}.wrapped",
                            f"must have the decimals of {bridge.asset} "
                            f"({decimals[bridge.asset]}), got {decimals[bridge.wrapped]}",
                        )
                    )
        problems.extend(self._wrapped_market_problems(bridge_names))
        for k, shock in enumerate(self.shocks):
            if shock.kind == "bridge_failure" and shock.bridge not in bridge_names:
                problems.append(
                    (
                        f"shocks[{k}].bridge",
                        f"unknown bridge {shock.bridge!r}; bridges are {bridge_names}",
                    )
                )
        nodes = set(markets) | set(self.oracles) | set(self.protocols) | set(bridge_names)
        for k, edge in enumerate(self.network.edges):
            for end, value in (("from", edge.source), ("to", edge.target)):
                if value not in nodes:
                    problems.append(
                        (
                            f"network.edges[{k}].{end}",
                            f"unknown node {value!r}; nodes are {sorted(nodes)}",
                        )
                    )
        for k, acc in enumerate(self.accounts):
            for sym in acc.wallet:
                asset(f"accounts[{k}].wallet.{sym}", sym)
            problems.extend(self._account_problems(k, acc))
        if problems:
            raise _CrossFieldErrors(problems)
        return self

    def _wrapped_market_problems(self, bridge_names: list[str]) -> list[tuple[str, str]]:
        """The wrapped book's makers and the wrapped asset's sellers name what exists."""
        problems: list[tuple[str, str]] = []
        spot = {i.id: i for i in self.instruments if i.kind == "spot"}
        wm = self.agents.wrapped_makers
        if wm.count and wm.instrument is None:
            problems.append(("agents.wrapped_makers.instrument", "required when count > 0"))
        elif wm.instrument is not None and wm.instrument not in spot:
            problems.append(
                (
                    "agents.wrapped_makers.instrument",
                    f"unknown spot instrument {wm.instrument!r}; have {sorted(spot)}",
                )
            )
        ws = self.agents.wrapped_sellers
        if not ws.count:
            return problems
        f = "agents.wrapped_sellers"
        bridge = next((b for b in self.network.bridges if b.name == ws.bridge), None)
        if bridge is None:
            problems.append((f"{f}.bridge", f"no bridge {ws.bridge!r}; bridges are {bridge_names}"))
            return problems
        for field, base in (
            ("instrument", bridge.wrapped),
            ("underlying_instrument", bridge.asset),
        ):
            chosen = getattr(ws, field)
            if chosen is None and not any(i.base == base for i in spot.values()):
                problems.append((f"{f}.{field}", f"no spot book of {base}"))
            if chosen is not None and (chosen not in spot or spot[chosen].base != base):
                problems.append((f"{f}.{field}", f"needs a spot book of {base}, got {chosen!r}"))
        return problems

    def _arbitrageur_problems(self) -> list[tuple[str, str]]:
        """Arbitrageurs need a known AMM pool and a spot book of the same pair."""
        cfg, f = self.agents.arbitrageurs, "agents.arbitrageurs"
        if not cfg.count:
            return []
        pools = {p.id: p for p in self.amms}
        pool = pools.get(cfg.pool) if cfg.pool is not None else next(iter(pools.values()), None)
        if pool is None:
            return [(f"{f}.pool", f"arbitrageurs need an AMM pool; pools are {sorted(pools)}")]
        books = [
            i.id
            for i in self.instruments
            if i.kind == "spot" and (i.base, i.quote) == (pool.base, pool.quote)
        ]
        if cfg.instrument is None and not books:
            return [(f"{f}.instrument", f"no spot book trades {pool.base}/{pool.quote}")]
        if cfg.instrument is not None and cfg.instrument not in books:
            return [
                (
                    f"{f}.instrument",
                    f"must be a spot book of the pool's pair {pool.base}/{pool.quote}; "
                    f"have {books}",
                )
            ]
        return []

    def _borrower_pool_problems(
        self, cfg: Any, f: str
    ) -> tuple[LendingConfig | None, list[tuple[str, str]]]:
        """Checks shared by the populations that borrow ``cfg.debt`` against ``cfg.collateral``.

        Returns the lending pool ``cfg.pool`` (``None`` when it is not one or lacks one of the
        reserves, so that no further check can run) and the problems found.
        """
        pool = self.protocols.get(cfg.pool)
        if pool is None:
            return None, [
                (
                    f"{f}.pool",
                    f"unknown protocol {cfg.pool!r}; protocols are {sorted(self.protocols)}",
                )
            ]
        if not isinstance(pool, LendingConfig):
            lending = sorted(n for n, p in self.protocols.items() if isinstance(p, LendingConfig))
            return None, [
                (
                    f"{f}.pool",
                    f"must name a lending protocol; lending protocols are {lending}, "
                    f"got {cfg.pool!r}",
                )
            ]
        out = []
        for part in ("collateral", "debt"):
            sym = getattr(cfg, part)
            if sym not in pool.reserves:
                out.append(
                    (
                        f"{f}.{part}",
                        f"{sym!r} is not a reserve of {cfg.pool!r}; "
                        f"reserves are {sorted(pool.reserves)}",
                    )
                )
        if out:
            return None, out
        if cfg.collateral == cfg.debt:
            out.append((f"{f}.debt", "must differ from the collateral"))
        if not pool.reserves[cfg.debt].borrowable:
            out.append((f"{f}.debt", f"{cfg.debt!r} is not borrowable on {cfg.pool!r}"))
        return pool, out

    def _looper_problems(self, spot: list[str]) -> list[tuple[str, str]]:
        """Cross-field checks of ``agents.lending_loopers`` (only when it has accounts)."""
        cfg, f = self.agents.lending_loopers, "agents.lending_loopers"
        if not cfg.count:
            return []
        pool, out = self._borrower_pool_problems(cfg, f)
        if pool is None:
            return out
        ltv = pool.reserves[cfg.collateral].ltv
        limit = math.inf if ltv >= 1 else 1.0 / (1.0 - ltv)
        top = cfg.max_leverage()
        # Exactly, on the decimals as written (1 / (1 - 0.8) is 5, not 5.000000000000001).
        room = 1 - fractions.Fraction(repr(ltv))
        if not (math.isfinite(top) and fractions.Fraction(repr(top)) * room < 1):
            out.append(
                (
                    f"{f}.leverage",
                    f"every target leverage must be below 1 / (1 - ltv) = "
                    f"{limit:.6g} of {cfg.collateral} on {cfg.pool!r} (ltv {ltv}); the "
                    f"distribution reaches {top:.6g}: set a lower max",
                )
            )
        books = [
            i.id
            for i in self.instruments
            if i.kind == "spot" and i.base == cfg.collateral and i.quote == cfg.debt
        ]
        if cfg.instrument is None and not books:
            out.append(
                (
                    f"{f}.instrument",
                    f"no spot book of {cfg.collateral}/{cfg.debt}; spot books are {spot}",
                )
            )
        elif cfg.instrument is not None and cfg.instrument not in books:
            out.append(
                (
                    f"{f}.instrument",
                    f"must be a spot book of {cfg.collateral}/{cfg.debt}; "
                    f"have {books}, got {cfg.instrument!r}",
                )
            )
        return out

    def _leveraged_problems(self, perp_ids: list[str]) -> list[tuple[str, str]]:
        """Cross-field checks of ``agents.leveraged_traders`` (only when it has accounts)."""
        cfg, f = self.agents.leveraged_traders, "agents.leveraged_traders"
        if not cfg.count:
            return []
        pool, out = self._borrower_pool_problems(cfg, f)
        if pool is None:
            return out
        perp_id = cfg.perp_instrument or next(iter(perp_ids), None)
        if perp_id is None or perp_id not in perp_ids:
            out.append(
                (
                    f"{f}.perp_instrument",
                    f"must be a perp instrument; have {perp_ids}, got {cfg.perp_instrument!r}",
                )
            )
            return out
        ins = next(i for i in self.instruments if i.id == perp_id)
        if ins.base != cfg.collateral:
            out.append(
                (
                    f"{f}.perp_instrument",
                    f"must be a perp on the collateral {cfg.collateral!r}; "
                    f"{perp_id!r} has base {ins.base!r}",
                )
            )
        if ins.quote != cfg.debt:
            out.append(
                (
                    f"{f}.debt",
                    f"must be the settlement asset of {perp_id!r} ({ins.quote}), since the "
                    f"borrowed asset is posted as perp margin; got {cfg.debt!r}",
                )
            )
        return out

    def _account_problems(self, k: int, acc: AccountConfig) -> list[tuple[str, str]]:
        f = f"accounts[{k}]"
        if acc.positions:
            return [
                (
                    f"{f}.positions",
                    "perp positions need a perp venue, which this version does not simulate yet",
                )
            ]
        if acc.protocol is None:
            if acc.collateral or acc.debt:
                return [(f"{f}.protocol", "collateral and debt need a protocol")]
            return []
        proto = self.protocols.get(acc.protocol)
        if proto is None:
            return [
                (
                    f"{f}.protocol",
                    f"unknown protocol {acc.protocol!r}; protocols are {sorted(self.protocols)}",
                )
            ]
        out = []
        if isinstance(proto, PerpConfig):
            return [(f"{f}.protocol", "explicit perp accounts are not supported yet")]
        if isinstance(proto, LendingConfig):
            for part in ("collateral", "debt"):
                for sym in getattr(acc, part):
                    if sym not in proto.reserves:
                        out.append(
                            (
                                f"{f}.{part}.{sym}",
                                f"not a reserve of {acc.protocol!r}; "
                                f"reserves are {sorted(proto.reserves)}",
                            )
                        )
            for sym in acc.debt:
                if sym in proto.reserves and not proto.reserves[sym].borrowable:
                    out.append((f"{f}.debt.{sym}", "asset is not borrowable"))
        else:
            if set(acc.collateral) - {proto.collateral}:
                out.append(
                    (
                        f"{f}.collateral",
                        f"a vault of {acc.protocol!r} holds only "
                        f"{proto.collateral}; got {sorted(acc.collateral)}",
                    )
                )
            if set(acc.debt) - {proto.stablecoin}:
                out.append(
                    (
                        f"{f}.debt",
                        f"a vault of {acc.protocol!r} owes only "
                        f"{proto.stablecoin}; got {sorted(acc.debt)}",
                    )
                )
        return out

    # ---------------------------------------------------------------- helpers
    def asset_decimals(self, symbol: str) -> int:
        """Decimals of an asset symbol (a lending pool's receipt token has its underlying's)."""
        for a in self.assets:
            if a.symbol == symbol:
                return a.decimals
        issuer = self.receipt_tokens().get(symbol)
        if issuer is not None:
            return self.asset_decimals(issuer[1])
        raise KeyError(symbol)

    def receipt_tokens(self) -> dict[str, tuple[str, str]]:
        """Receipt token symbol ``a<SYM>.<pool>`` -> ``(pool, SYM)`` of every lending reserve.

        Another pool may list such a symbol as a reserve (receipt-token collateral, the
        protocol network's ``collateral`` edge); its ``price`` then prices the underlying and
        the model multiplies it by the issuer's liquidity index.
        """
        return {
            f"a{symbol}.{name}": (name, symbol)
            for name, proto in self.protocols.items()
            if isinstance(proto, LendingConfig)
            for symbol in proto.reserves
        }

    def instrument(self, instrument_id: str | None = None) -> InstrumentConfig:
        """An instrument by id; ``None`` gives the first spot instrument."""
        for ins in self.instruments:
            if (instrument_id is None and ins.kind == "spot") or ins.id == instrument_id:
                return ins
        raise KeyError(instrument_id)

    # ---------------------------------------------------------------- TOML
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> Scenario:
        """Validate a plain dict (as read from TOML).

        Raises:
            ScenarioError: Listing every problem, with ``source`` in the message.
        """
        try:
            return cls(**dict(data))
        except ScenarioError as exc:
            raise ScenarioError(exc.problems, source) from None

    @classmethod
    def from_toml_str(cls, text: str, source: str | None = None) -> Scenario:
        """Parse and validate TOML text.

        Raises:
            ScenarioError: On a TOML syntax error or any invalid field.
        """
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError([("<toml>", f"not valid TOML: {exc}")], source) from None
        return cls.from_dict(data, source)

    @classmethod
    def from_toml(cls, path: str | Path) -> Scenario:
        """Read and validate a scenario file.

        Relative ``exogenous.file`` paths are resolved against the file's folder.

        Raises:
            ScenarioError: If the file is missing, unreadable or invalid.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(
                [("<file>", f"cannot read {path}: {exc.strerror}")], str(path)
            ) from None
        scenario = cls.from_toml_str(text, str(path))
        replay = scenario.exogenous.file
        if replay and not Path(replay).is_absolute():
            resolved = str((path.parent / replay).resolve())
            scenario = scenario.with_overrides({"exogenous.file": resolved})
        return scenario

    def to_dict(self) -> dict[str, Any]:
        """Plain data with every default written out (``None`` fields omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_toml(self) -> str:
        """TOML text that :meth:`from_toml_str` reads back into an equal scenario."""
        return tomli_w.dumps(self.to_dict())

    def with_overrides(self, overrides: Mapping[str, Any]) -> Scenario:
        """A new, validated scenario with dotted fields replaced.

        Keys are dotted paths: ``"run.seed"``, ``"agents.noise.count"``,
        ``"oracles.eth.deviation"``. List items are addressed by index
        (``"instruments.0.tick"``) or by their ``id``/``symbol`` (``"instruments.WETH-USDC.tick"``).

        Raises:
            ScenarioError: If a path does not exist or the result is invalid.
        """
        data = self.to_dict()
        problems: list[tuple[str, str]] = []
        for key, value in overrides.items():
            try:
                _set_dotted(data, key, value)
            except KeyError as exc:
                problems.append((key, str(exc.args[0])))
        try:
            scenario = Scenario.from_dict(data, "overrides")
        except ScenarioError as exc:
            raise ScenarioError(problems + exc.problems, "overrides") from None
        if problems:
            raise ScenarioError(problems, "overrides")
        return scenario


class _CrossFieldErrors(ValueError):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


def _unique(problems: list[tuple[str, str]], field: str, values: list[str], key: str) -> None:
    seen: set[str] = set()
    for k, v in enumerate(values):
        if v in seen:
            problems.append((f"{field}[{k}].{key}", f"must be unique; {v!r} repeats"))
        seen.add(v)


def _loc_to_field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<scenario>"


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _CrossFieldErrors):
            problems.extend(ctx_error.problems)
            continue
        loc = _without_policy_tag(tuple(err["loc"]))
        if len(loc) > 2 and loc[0] == "protocols" and loc[2] in _PROTOCOL_KINDS:
            loc = loc[:2] + loc[3:]  # pydantic puts the union's tag in the path: drop it
        field = _loc_to_field(loc)
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            message = "unknown field (not part of the scenario format)"
        elif err["type"] != "missing" and not isinstance(err["input"], dict | list):
            # Whole tables are not echoed back: the message already says what is wrong.
            message = f"{message}; got {err['input']!r}"
        problems.append((field, message))
    return problems


def _without_invalid_values(data: dict[str, Any], exc: ValidationError) -> dict[str, Any] | None:
    """A deep copy of ``data`` without the values that failed validation.

    Returns ``None`` when a required field is missing (nothing can stand in for it), so that
    no second pass reports problems that are only echoes of the first.
    """
    import copy

    repaired = copy.deepcopy(data)
    for err in exc.errors(include_url=False):
        if err["type"] == "missing":
            return None
        loc = [part for part in _without_policy_tag(err["loc"]) if part not in _PROTOCOL_KINDS]
        node: Any = repaired
        for part in loc[:-1]:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                node = None
                break
        if err["type"] == "value_error" and isinstance(err["input"], dict) and loc:
            # A whole table failed its own check: kept (its check is skipped in the repair
            # pass) so the names it defines stay known to the cross-field checks.
            continue
        if isinstance(node, dict) and loc and loc[-1] in node:
            del node[loc[-1]]
        elif not loc:
            return None
    return repaired


def _without_policy_tag(loc: Any) -> tuple[Any, ...]:
    """``loc`` without the tag pydantic adds after ``liquidation_policy`` (its union's kind)."""
    out = tuple(loc)
    for i in range(len(out) - 1):
        if out[i] == "liquidation_policy" and out[i + 1] in _POLICY_KINDS:
            return out[: i + 1] + out[i + 2 :]
    return out


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data[a][b]... = value`` for ``key = "a.b..."``.

    Missing tables are created: optional fields are omitted from the dict and user-named
    tables (oracles, wallets) grow, and validation afterwards rejects keys that do not exist
    in the scenario format with the usual "unknown field" message.
    """
    parts = key.split(".")
    if not all(parts):
        raise KeyError(f"empty part in dotted key {key!r}")
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            index = _list_index(node, part)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise KeyError(f"{'.'.join(parts[:depth])} is a value, not a table")


def _list_index(items: list[Any], part: str) -> int:
    if part.lstrip("-").isdigit():
        index = int(part)
        if not -len(items) <= index < len(items):
            raise KeyError(f"index {index} out of range (list has {len(items)} items)")
        return index
    for i, item in enumerate(items):
        if isinstance(item, dict) and part in (item.get("id"), item.get("symbol")):
            return i
    raise KeyError(f"no item with id or symbol {part!r}")


def parse_override_value(text: str) -> Any:
    """Parse the value of a ``--set key=value`` as a TOML value, else as a bare string.

    ``0.8`` is a float, ``7`` an int, ``true`` a bool, ``[1, 2]`` a list, ``"x"`` and ``x``
    are strings.
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
