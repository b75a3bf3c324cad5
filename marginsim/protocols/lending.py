"""Lending pool with Aave v3 semantics; Compound v2 is a parameter preset of the same pool.

Balances live in the :class:`~marginsim.ledger.Ledger` only. For every reserve ``SYM`` the pool
adds two ledger assets (see :meth:`LendingPool.derived_assets`), created before the ledger:

* ``aSYM.<pool>``, the receipt token (Aave's aToken). Its ledger balance is the holder's
  *scaled* supply; the underlying it is worth is ``scaled * liquidity_index``. A ledger transfer
  of it is a transfer of supplied collateral, so another protocol can accept it as collateral
  and a loss written into the liquidity index reaches every holder (contagion, DESIGN.md s. 6).
* ``dSYM.<pool>``, the variable debt token: scaled debt, actual debt ``scaled * borrow_index``.
  Only the pool mints and burns it, always with a journal reason (``borrow``, ``repay``,
  ``liquidation``, ``bad debt write-off``), so debt never disappears without a journal line.
  Debt tokens are non-transferable by convention: nothing in the pool moves them between
  holders.

The pool registers three ledger holders: ``<pool>:liquidity`` holds the underlying supplied
and not borrowed, ``<pool>:treasury`` holds the protocol's receipt tokens (reserve-factor
income, the protocol's share of liquidation bonuses, flash-loan fees), and ``<pool>:genesis``
supplies each reserve's ``initial_supply`` at construction (minted with reason
``genesis supply``). No separate bad-debt account is needed: written-off debt is a journal line
(the burn of debt tokens) plus a row of the ``bad_debt`` event table.

Rules (each one is tested):

* Indexes are integers in ray units (1e27, as Aave) and **compound per step** (GLOSSARY):
  ``I <- I * (1 + rate * step_seconds / year)`` with a 365-day year (Aave's
  ``SECONDS_PER_YEAR``), the rates taken from the utilisation at the start of the step. The
  borrow index rounds up and the liquidity index down. Utilisation ``U = borrowed / supplied``
  (0 with nothing supplied), borrow rate kinked, supply rate ``borrow rate * U * (1 - reserve
  factor)``, so suppliers earn exactly ``1 - reserve factor`` of the interest borrowers pay.
* Reserve-factor income goes to the treasury as Aave does it: every step the treasury is
  minted receipt tokens worth ``reserve_factor`` of the interest accrued (rounded down), so
  the underlying stays in the pool and conservation is exact.
* Rounding never favours a user over the protocol: receipt tokens minted on supply, debt
  burned on repay and in liquidations, and collateral seized round **down**; receipt tokens
  burned on withdraw, debt minted on borrow, the repay amount a liquidator pays when the
  collateral runs out, protocol fees and flash-loan fees round **up**. Amount arithmetic on
  single actions is exact: prices and parameters enter as the decimal their ``repr`` shows
  (``Fraction(repr(x))``), so hand-computed amounts match to the unit. Vectorised scans
  (:meth:`LendingPool.health_factors`, :meth:`LendingPool.liquidatable`) use float64.
* Refused actions change nothing: every check runs before the first ledger operation.
* Oracle without a price (``None``, or a non-finite or non-positive value): borrows and
  withdrawals that need it, and every liquidation of an account holding that asset, are
  refused; scans give such accounts a NaN health factor, so they are never liquidatable.
* Liquidation: Aave v3 close factor (``close_factor`` of that debt, rounded up, all of it
  when the health factor is below ``full_close_below_hf``; 0 disables, as Compound v2); the
  health factor is checked exactly (1 is healthy); collateral seized =
  repay value * (1 + bonus) / collateral price, capped at the account's collateral in that
  asset (the repay is then reduced, rounded up, to what that collateral covers). The
  protocol's share of the bonus part is Aave v3's liquidation protocol fee and goes to the
  treasury as receipt tokens. The liquidator receives the underlying, withdrawn from
  liquidity, or receipt tokens when it asks for them or when liquidity cannot pay.
* Bad debt (Aave v3.3 "deficit"): when an account holds debt and no collateral is left (no
  reserve with a liquidation threshold worth a whole unit), all its debt is written off at
  the end of :meth:`LendingPool.liquidate` (and by :meth:`LendingPool.settle` for any account
  found in that state). The treasury's receipt tokens of that asset absorb it first
  (burned); suppliers bear the rest through a write-down of the liquidity index (rounded so
  that suppliers, not the pool, carry the rounding).
* Flash loans: fee ``ceil(amount * flash_loan_fee)``, paid into liquidity and credited to the
  treasury as receipt tokens (Aave v3 with the whole premium assigned to the protocol).
  Failure (the action raises, or the holder cannot repay ``amount + fee``) restores the
  ledger, the pool and every participant from snapshots taken before the loan. A ledger
  snapshot copies the balance array, so flash loans cost O(holders).

Receipt tokens moved with a plain ledger transfer skip the borrowing-power check that Aave
runs on aToken transfers; agents holding debt move collateral with
:meth:`LendingPool.transfer_receipt`, which checks it.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Protocol

import numba
import numpy as np
import pandas as pd

from marginsim.config import LendingConfig, RateModelConfig
from marginsim.ledger import AssetSpec, Ledger
from marginsim.protocols.events import LIQUIDATION_COLUMNS, AccountExposures, LiquidationPrices
from marginsim.protocols.policies import LiquidationPolicy, LiquidationQuote

if TYPE_CHECKING:
    from marginsim.protocols.lending_batch import BatchResult

__all__ = [
    "RAY",
    "SECONDS_PER_YEAR",
    "AccountData",
    "ActionResult",
    "FixedPriceFeed",
    "FlashLoanResult",
    "LendingPool",
    "LiquidatableAccounts",
    "LiquidationResult",
    "PARALLEL_SCAN_MIN_ACCOUNTS",
    "PoolSnapshot",
    "PriceFeed",
    "Refusal",
    "ReserveInfo",
    "kinked_borrow_rate",
]

logger = logging.getLogger(__name__)

#: Fixed-point unit of the indexes (Aave's ray).
RAY = 10**27
#: Seconds in the year that annual rates refer to (Aave v3: 365 days).
SECONDS_PER_YEAR = 365 * 24 * 3600

_INT64_MAX = 2**63 - 1


# ===================================================================================== values
class PriceFeed(Protocol):
    """Where a pool reads prices, in its unit of account per whole token."""

    def price(self, ref: str | float) -> float | None:
        """Price for a reserve's ``price`` reference.

        Args:
            ref: An oracle name, or a constant the feed returns as given.

        Returns:
            The price, or ``None`` while the oracle has no price yet.
        """
        ...


class FixedPriceFeed:
    """A :class:`PriceFeed` over a mutable mapping of oracle names (tests, scripts).

    Args:
        prices: Price by oracle name; ``None`` or a missing name means no price yet.

    Examples:
        >>> feed = FixedPriceFeed({"eth": 2000.0})
        >>> feed.price("eth"), feed.price(1.0), feed.price("btc")
        (2000.0, 1.0, None)
    """

    def __init__(self, prices: Mapping[str, float | None] | None = None) -> None:
        self.prices: dict[str, float | None] = dict(prices or {})

    def price(self, ref: str | float) -> float | None:
        """Price of an oracle name, or the constant itself."""
        if isinstance(ref, str):
            return self.prices.get(ref)
        return float(ref)


class Refusal(enum.StrEnum):
    """Why an action was refused (the ``code`` of a result)."""

    UNKNOWN_ASSET = "unknown asset"
    BAD_AMOUNT = "bad amount"
    UNKNOWN_ACCOUNT = "unknown account"
    INSUFFICIENT_BALANCE = "insufficient balance"
    SUPPLY_CAP = "supply cap"
    BORROW_CAP = "borrow cap"
    NOT_BORROWABLE = "not borrowable"
    NO_PRICE = "no price"
    INSUFFICIENT_LIQUIDITY = "insufficient liquidity"
    BORROWING_POWER = "above borrowing power"
    UNHEALTHY = "health factor below 1"
    EXCEEDS_SUPPLY = "exceeds supplied"
    EXCEEDS_DEBT = "exceeds debt"
    NO_DEBT = "no debt"
    NO_COLLATERAL = "no collateral"
    NOT_COLLATERAL = "not collateral"
    HEALTHY = "healthy"
    FLASH_LOANS_DISABLED = "flash loans disabled"
    ACTION_FAILED = "action raised"
    NOT_REPAID = "not repaid"
    POLICY = "refused by the liquidation policy"


@dataclasses.dataclass(frozen=True)
class ActionResult:
    """Outcome of supply, withdraw, borrow, repay or a receipt transfer.

    Attributes:
        ok: Whether the action was executed.
        action: ``"supply"``, ``"withdraw"``, ``"borrow"``, ``"repay"`` or ``"transfer"``.
        holder: Acting holder id.
        symbol: Underlying asset symbol.
        amount: Underlying units moved (0 when refused).
        scaled: Receipt or debt tokens (scaled units) minted, burned or moved.
        code: Why it was refused, ``None`` when ok.
        reason: Human-readable detail of the refusal, ``""`` when ok.
    """

    ok: bool
    action: str
    holder: int
    symbol: str
    amount: int = 0
    scaled: int = 0
    code: Refusal | None = None
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class LiquidationResult:
    """Outcome of :meth:`LendingPool.liquidate`.

    Attributes:
        ok: Whether the liquidation was executed.
        liquidator: Liquidator holder id.
        account: Liquidated holder id.
        debt_symbol: Debt asset repaid.
        collateral_symbol: Collateral asset seized.
        debt_repaid: Units of the debt asset the liquidator paid.
        collateral_seized: Units of collateral taken from the account (fee included).
        liquidator_received: Units of collateral value credited to the liquidator.
        protocol_fee: Units of collateral due to the treasury (Aave's protocol fee).
        received_receipt: The liquidator got receipt tokens instead of the underlying.
        bad_debt: Units of the debt asset written off after the liquidation.
        health_factor: The account's health factor before the liquidation.
        code: Why it was refused, ``None`` when ok.
        reason: Human-readable detail of the refusal.
    """

    ok: bool
    liquidator: int
    account: int
    debt_symbol: str
    collateral_symbol: str
    debt_repaid: int = 0
    collateral_seized: int = 0
    liquidator_received: int = 0
    protocol_fee: int = 0
    received_receipt: bool = False
    bad_debt: int = 0
    health_factor: float = math.nan
    code: Refusal | None = None
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class FlashLoanResult:
    """Outcome of :meth:`LendingPool.flash_loan`.

    Attributes:
        ok: The loan was repaid and everything the action did stands.
        holder: Borrowing holder id.
        symbol: Asset lent.
        amount: Units lent.
        fee: Fee in units (charged only when repaid).
        repaid: Same as ``ok`` once the loan was handed out.
        code: Why it failed, ``None`` when ok.
        reason: Human-readable detail (the exception of a failed action).
    """

    ok: bool
    holder: int
    symbol: str
    amount: int = 0
    fee: int = 0
    repaid: bool = False
    code: Refusal | None = None
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class AccountData:
    """An account's position valued at current prices (unit of account, float).

    Attributes:
        holder: Holder id.
        collateral_value: Value of supplied collateral (reserves with a liquidation threshold).
        borrowing_power: Sum of collateral value * LTV.
        liquidation_value: Sum of collateral value * liquidation threshold.
        debt_value: Value of all debt.
        health_factor: ``liquidation_value / debt_value``; inf without debt, NaN without a
            needed price.
    """

    holder: int
    collateral_value: float
    borrowing_power: float
    liquidation_value: float
    debt_value: float
    health_factor: float


@dataclasses.dataclass(frozen=True)
class LiquidatableAccounts:
    """Accounts with a health factor below 1, from one vectorised scan.

    Arrays are aligned, in registration order. Values are in the pool's unit of account.

    Attributes:
        holder: Holder ids.
        health_factor: Health factors (< 1).
        debt_value: Total debt value per account.
        collateral_value: Total collateral value per account.
        debt_asset: Ledger asset id of the account's largest debt (by value).
        collateral_asset: Ledger asset id of its largest collateral, -1 when none is left.
    """

    holder: np.ndarray
    health_factor: np.ndarray
    debt_value: np.ndarray
    collateral_value: np.ndarray
    debt_asset: np.ndarray
    collateral_asset: np.ndarray

    def __len__(self) -> int:
        return int(self.holder.shape[0])


@dataclasses.dataclass(frozen=True)
class PoolSnapshot:
    """The pool's own state, captured by :meth:`LendingPool.snapshot`."""

    liquidity_index: tuple[int, ...]
    borrow_index: tuple[int, ...]
    bad_debt_units: tuple[int, ...]
    n_accounts: int
    n_liquidations: int
    n_flash_loans: int
    n_bad_debt: int
    step: int
    policy_state: dict[str, object] | None = None


@dataclasses.dataclass(frozen=True)
class ReserveInfo:
    """One reserve as the pool uses it: ids, units and exact parameters.

    Attributes:
        index: Position among the pool's reserves.
        symbol: Underlying symbol.
        asset: Ledger id of the underlying.
        receipt: Ledger id of the receipt token (scaled supply).
        debt: Ledger id of the debt token (scaled debt).
        decimals: Decimals of the underlying.
        unit: Smallest units per whole token.
        price_ref: Oracle name or constant price.
        ltv: LTV as an exact fraction.
        liquidation_threshold: Liquidation threshold as an exact fraction.
        liquidation_bonus: Bonus as an exact fraction.
        protocol_share: Protocol's share of the bonus part, exact.
        reserve_factor: Reserve factor, exact.
        supply_cap_units: Supply cap in units (0: none).
        borrow_cap_units: Borrow cap in units (0: none).
        borrowable: Whether the asset can be borrowed.
        rate: The interest-rate model.
    """

    index: int
    symbol: str
    asset: int
    receipt: int
    debt: int
    decimals: int
    unit: int
    price_ref: str | float
    ltv: Fraction
    liquidation_threshold: Fraction
    liquidation_bonus: Fraction
    protocol_share: Fraction
    reserve_factor: Fraction
    supply_cap_units: int
    borrow_cap_units: int
    borrowable: bool
    rate: RateModelConfig


@dataclasses.dataclass(frozen=True)
class _Values:
    """Exact valuation of a position."""

    collateral: Fraction
    borrowing_power: Fraction
    liquidation: Fraction
    debt: Fraction

    @property
    def health_factor(self) -> Fraction | None:
        return self.liquidation / self.debt if self.debt else None


# ===================================================================================== helpers
def kinked_borrow_rate(rate: RateModelConfig, utilisation: float) -> float:
    """Annual borrow rate of the kinked model (GLOSSARY.md, Lending).

    Args:
        rate: The rate model.
        utilisation: Borrowed / supplied.

    Returns:
        ``base + slope1 * U / U_opt`` up to the kink, ``base + slope1 + slope2 * (U - U_opt)
        / (1 - U_opt)`` above it.

    Examples:
        >>> from marginsim.config import RateModelConfig
        >>> round(kinked_borrow_rate(RateModelConfig(slope1=0.04, optimal=0.8), 0.4), 12)
        0.02
    """
    if utilisation <= rate.optimal:
        return rate.base + rate.slope1 * utilisation / rate.optimal
    excess = (utilisation - rate.optimal) / (1.0 - rate.optimal)
    return rate.base + rate.slope1 + rate.slope2 * excess


def _exact(x: float) -> Fraction:
    """The decimal a float prints as, as an exact fraction (0.05 -> 1/20)."""
    return Fraction(repr(float(x)))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _ceil(q: Fraction) -> int:
    return -((-q.numerator) // q.denominator)


def _floor(q: Fraction) -> int:
    return q.numerator // q.denominator


def _is_units(amount: Any) -> bool:
    return isinstance(amount, int | np.integer) and not isinstance(amount, bool | np.bool_)


# ===================================================================================== kernels
#: Scans of at least this many accounts run on all cores. Smaller ones run on one: a parallel
#: region costs microseconds to open alone, and milliseconds when the OpenMP workers compete
#: with the rest of a model step for two cores (measured in the lending_cascade scenario).
PARALLEL_SCAN_MIN_ACCOUNTS = 200_000


@numba.njit(cache=True, nogil=True, inline="always")
def _scan_account(
    balance: np.ndarray,
    h: int,
    i: int,
    receipt_cols: np.ndarray,
    debt_cols: np.ndarray,
    collateral_unit_value: np.ndarray,
    debt_unit_value: np.ndarray,
    threshold: np.ndarray,
    health: np.ndarray,
    debt_value: np.ndarray,
    collateral_value: np.ndarray,
    largest_debt: np.ndarray,
    largest_collateral: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Health factor, values and largest positions of account ``h``, written at ``i``."""
    adjusted = 0.0
    coll = 0.0
    debt = 0.0
    best_debt = -1
    best_debt_value = 0.0
    best_coll = -1
    best_coll_value = 0.0
    for r in range(receipt_cols.shape[0]):
        if threshold[r] > 0.0:
            s = balance[h, receipt_cols[r]]
            if s > 0:
                v = s * collateral_unit_value[r]
                coll += v
                adjusted += v * threshold[r]
                if best_coll < 0 or v > best_coll_value:
                    best_coll = r
                    best_coll_value = v
        d = balance[h, debt_cols[r]]
        if d > 0:
            v = d * debt_unit_value[r]
            debt += v
            if best_debt < 0 or v > best_debt_value:
                best_debt = r
                best_debt_value = v
    debt_value[i] = debt
    collateral_value[i] = coll
    largest_debt[i] = best_debt
    largest_collateral[i] = best_coll
    if debt > 0.0:
        health[i] = adjusted / debt
    elif debt == 0.0:
        health[i] = np.inf
    else:  # NaN: an asset the account holds has no price
        health[i] = np.nan


@numba.njit(cache=True, nogil=True)
def _scan_serial(
    balance: np.ndarray,
    holders: np.ndarray,
    receipt_cols: np.ndarray,
    debt_cols: np.ndarray,
    collateral_unit_value: np.ndarray,
    debt_unit_value: np.ndarray,
    threshold: np.ndarray,
    health: np.ndarray,
    debt_value: np.ndarray,
    collateral_value: np.ndarray,
    largest_debt: np.ndarray,
    largest_collateral: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """One fused pass over many accounts, on one core."""
    for i in range(holders.shape[0]):
        _scan_account(
            balance,
            holders[i],
            i,
            receipt_cols,
            debt_cols,
            collateral_unit_value,
            debt_unit_value,
            threshold,
            health,
            debt_value,
            collateral_value,
            largest_debt,
            largest_collateral,
        )


@numba.njit(cache=True, nogil=True, parallel=True)
def _scan_parallel(
    balance: np.ndarray,
    holders: np.ndarray,
    receipt_cols: np.ndarray,
    debt_cols: np.ndarray,
    collateral_unit_value: np.ndarray,
    debt_unit_value: np.ndarray,
    threshold: np.ndarray,
    health: np.ndarray,
    debt_value: np.ndarray,
    collateral_value: np.ndarray,
    largest_debt: np.ndarray,
    largest_collateral: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """One fused pass over many accounts, on all cores."""
    for i in numba.prange(holders.shape[0]):
        _scan_account(
            balance,
            holders[i],
            i,
            receipt_cols,
            debt_cols,
            collateral_unit_value,
            debt_unit_value,
            threshold,
            health,
            debt_value,
            collateral_value,
            largest_debt,
            largest_collateral,
        )


@numba.njit(cache=True, nogil=True)
def _liquidation_price_inputs(
    balance: np.ndarray,
    holders: np.ndarray,
    receipt_cols: np.ndarray,
    debt_cols: np.ndarray,
    collateral_unit_value: np.ndarray,
    weighted_unit_value: np.ndarray,
    debt_unit_value: np.ndarray,
    threshold: np.ndarray,
    r: int,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Per account, the sums :meth:`LendingPool.liquidation_prices` solves with.

    Writes ``out[i] = (A, D, C_r, D_r, P, P_r)``: threshold-weighted value of the collateral
    in the reserves other than ``r``, value of the debt in them, threshold-weighted value of
    the collateral in ``r``, value of the debt in ``r``, plain value of the collateral in
    the other reserves and in ``r``. Balances of zero contribute 0 even where a price is
    missing (NaN otherwise). The sums over the other reserves add in the order numpy's row
    sum does (the first term, plus the rest summed from 0), so that results equal the
    array formula's to the last bit.
    """
    n_res = receipt_cols.shape[0]
    for i in range(holders.shape[0]):
        h = holders[i]
        a_first = 0.0
        a_rest = 0.0
        d_first = 0.0
        d_rest = 0.0
        p_first = 0.0
        p_rest = 0.0
        seen = 0
        out[i, 2] = 0.0
        out[i, 3] = 0.0
        out[i, 5] = 0.0
        for j in range(n_res):
            s = float(balance[h, receipt_cols[j]])
            held = s > 0 and threshold[j] > 0
            a = s * weighted_unit_value[j] if held else 0.0
            pv = s * collateral_unit_value[j] if held else 0.0
            dd = float(balance[h, debt_cols[j]])
            dv = dd * debt_unit_value[j] if dd > 0 else 0.0
            if j == r:
                out[i, 2] = a
                out[i, 3] = dv
                out[i, 5] = pv
            elif seen == 0:
                a_first, d_first, p_first = a, dv, pv
                seen = 1
            else:
                a_rest += a
                d_rest += dv
                p_rest += pv
        out[i, 0] = a_first + a_rest
        out[i, 1] = d_first + d_rest
        out[i, 4] = p_first + p_rest


@numba.njit(cache=True, nogil=True)
def _orphan_debt_kernel(
    balance: np.ndarray,
    holders: np.ndarray,
    receipt_cols: np.ndarray,
    debt_cols: np.ndarray,
    threshold: np.ndarray,
    liquidity_index: np.ndarray,
    out: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Candidates holding debt and (almost) no collateral; exact check follows in Python."""
    count = 0
    n_reserves = receipt_cols.shape[0]
    for i in range(holders.shape[0]):
        h = holders[i]
        has_debt = False
        for r in range(n_reserves):
            if balance[h, debt_cols[r]] > 0:
                has_debt = True
                break
        if not has_debt:
            continue
        has_collateral = False
        for r in range(n_reserves):
            # Worth more than one unit with margin: certainly collateral. Anything less is
            # a candidate, decided exactly by the caller.
            if threshold[r] > 0.0 and balance[h, receipt_cols[r]] * liquidity_index[r] > 1.000001:
                has_collateral = True
                break
        if not has_collateral:
            out[count] = h
            count += 1
    return count


# ===================================================================================== the pool
class LendingPool:
    """A lending pool: supply, borrow, accrue, liquidate, write off bad debt, flash loans.

    Aave v3 semantics; Compound v2 is the same pool with its preset parameters (collateral
    factor as both LTV and threshold, fixed close factor, ``full_close_below_hf = 0``). The
    rules for rounding, compounding, bad debt and flash loans are in the module docstring.

    Args:
        ledger: The ledger; it must contain :meth:`derived_assets` of this pool.
        name: Protocol name (prefix of the pool's holders and derived assets).
        config: The pool's scenario configuration.
        prices: Where prices come from.

    Raises:
        ValueError: If a reserve's asset or derived asset is missing from the ledger, or an
            ``initial_supply`` exceeds its supply cap.

    Attributes:
        step: Current step, set by the model each step; stamped on event rows.
        liquidity_holder: Holder id of ``<name>:liquidity``.
        treasury_holder: Holder id of ``<name>:treasury``.
        genesis_holder: Holder id of ``<name>:genesis``.
        reserves: The reserves, in configuration order.
    """

    # ------------------------------------------------------------------------------- setup
    @staticmethod
    def receipt_symbol(name: str, symbol: str) -> str:
        """Ledger symbol of a reserve's receipt token, ``a<SYMBOL>.<name>``."""
        return f"a{symbol}.{name}"

    @staticmethod
    def debt_symbol(name: str, symbol: str) -> str:
        """Ledger symbol of a reserve's debt token, ``d<SYMBOL>.<name>``."""
        return f"d{symbol}.{name}"

    @classmethod
    def derived_assets(
        cls, name: str, config: LendingConfig, decimals: Mapping[str, int]
    ) -> list[AssetSpec]:
        """Ledger assets the pool needs beyond the scenario's own.

        The model calls this before building the ledger and appends the result to its asset
        list. Receipt and debt tokens carry the underlying's decimals (at index 1 a scaled
        unit is worth one unit of the underlying).

        Args:
            name: Protocol name.
            config: The pool's configuration.
            decimals: Decimals by asset symbol.

        Returns:
            A receipt and a debt token per reserve, in reserve order.

        Raises:
            ValueError: If a reserve's decimals are unknown.
        """
        specs: list[AssetSpec] = []
        for symbol in config.reserves:
            if symbol not in decimals:
                raise ValueError(
                    f"reserve {symbol!r} of lending pool {name!r} is not an asset; "
                    f"assets are {sorted(decimals)}"
                )
            specs.append(AssetSpec(cls.receipt_symbol(name, symbol), int(decimals[symbol])))
            specs.append(AssetSpec(cls.debt_symbol(name, symbol), int(decimals[symbol])))
        return specs

    @classmethod
    def standalone(
        cls,
        config: LendingConfig,
        decimals: Mapping[str, int],
        prices: PriceFeed,
        name: str = "pool",
    ) -> LendingPool:
        """A pool on a ledger of its own (scripts, notebooks, tests).

        Args:
            config: The pool's configuration.
            decimals: Decimals by asset symbol; every one becomes a ledger asset, in order.
            prices: Where prices come from.
            name: Protocol name.

        Returns:
            The pool; its ledger is :attr:`ledger`.

        Examples:
            >>> from marginsim.config import LendingConfig, ReserveConfig
            >>> cfg = LendingConfig(kind="lending", reserves={"USDC": ReserveConfig(price=1.0)})
            >>> pool = LendingPool.standalone(cfg, {"USDC": 6}, FixedPriceFeed())
            >>> [a.symbol for a in pool.ledger.assets]
            ['USDC', 'aUSDC.pool', 'dUSDC.pool']
        """
        assets = [AssetSpec(symbol, int(d)) for symbol, d in decimals.items()]
        assets += cls.derived_assets(name, config, decimals)
        return cls(Ledger(assets), name, config, prices)

    def __init__(self, ledger: Ledger, name: str, config: LendingConfig, prices: PriceFeed) -> None:
        if not name:
            raise ValueError("a lending pool needs a non-empty name")
        self.ledger = ledger
        self.name = name
        self.config = config
        self.prices = prices
        self.step = 0
        self.reserves: tuple[ReserveInfo, ...] = tuple(
            self._reserve_info(i, symbol) for i, symbol in enumerate(config.reserves)
        )
        self._by_symbol = {res.symbol: res for res in self.reserves}
        self._close_factor = _exact(config.close_factor)
        self._full_close_below = _exact(config.full_close_below_hf)
        self._flash_fee = _exact(config.flash_loan_fee)

        self.liquidity_holder = ledger.add_holder(f"{name}:liquidity")
        self.treasury_holder = ledger.add_holder(f"{name}:treasury")
        self.genesis_holder = ledger.add_holder(f"{name}:genesis")
        self._internal = {self.liquidity_holder, self.treasury_holder}

        n = len(self.reserves)
        self._liquidity_index = [RAY] * n
        self._borrow_index = [RAY] * n
        self._bad_debt_units = [0] * n

        # Accounts are registered on first interaction; slot[holder] is the position in
        # _accounts (-1: not registered), so registration and scans stay vectorised.
        self._accounts = np.empty(1024, dtype=np.int64)
        self._n_accounts = 0
        self._slot = np.full(max(ledger.n_holders, 1024), -1, dtype=np.int64)

        self._liquidations: list[tuple[Any, ...]] = []
        self._flash_loans: list[tuple[Any, ...]] = []
        self._bad_debt_rows: list[tuple[Any, ...]] = []

        self._receipt_cols = np.array([r.receipt for r in self.reserves], dtype=np.int64)
        self._debt_cols = np.array([r.debt for r in self.reserves], dtype=np.int64)
        self._asset_ids = np.array([r.asset for r in self.reserves], dtype=np.int64)
        self._threshold = np.array(
            [float(r.liquidation_threshold) for r in self.reserves], dtype=np.float64
        )
        self._scan_buffers: tuple[np.ndarray, ...] | None = None
        # Reserve index -> exchange rate of a claim token (see set_exchange_rate).
        self._exchange_rates: dict[int, Callable[[], Fraction | int]] = {}
        #: Liquidation policy (None: the static rules; see :meth:`attach_policy`).
        self.policy: LiquidationPolicy | None = None
        self._policy_reserve: ReserveInfo | None = None

        self._supply_genesis()

    def _reserve_info(self, index: int, symbol: str) -> ReserveInfo:
        cfg = self.config.reserves[symbol]
        ledger = self.ledger
        ids = []
        for sym in (
            symbol,
            self.receipt_symbol(self.name, symbol),
            self.debt_symbol(self.name, symbol),
        ):
            try:
                ids.append(ledger.asset_id(sym))
            except ValueError:
                raise ValueError(
                    f"lending pool {self.name!r}: the ledger has no asset {sym!r}; build the "
                    "ledger with the scenario's assets plus LendingPool.derived_assets(...)"
                ) from None
        decimals = ledger.assets[ids[0]].decimals
        unit = 10**decimals
        return ReserveInfo(
            index=index,
            symbol=symbol,
            asset=ids[0],
            receipt=ids[1],
            debt=ids[2],
            decimals=decimals,
            unit=unit,
            price_ref=cfg.price,
            ltv=_exact(cfg.ltv),
            liquidation_threshold=_exact(cfg.liquidation_threshold),
            liquidation_bonus=_exact(cfg.liquidation_bonus),
            protocol_share=_exact(cfg.protocol_share),
            reserve_factor=_exact(cfg.reserve_factor),
            supply_cap_units=_floor(_exact(cfg.supply_cap) * unit),
            borrow_cap_units=_floor(_exact(cfg.borrow_cap) * unit),
            borrowable=cfg.borrowable,
            rate=cfg.rate,
        )

    def _supply_genesis(self) -> None:
        for res in self.reserves:
            amount = self.config.reserves[res.symbol].initial_supply
            units = _floor(_exact(amount) * res.unit)
            if units <= 0:
                continue
            if res.supply_cap_units and units > res.supply_cap_units:
                raise ValueError(
                    f"protocols.{self.name}.reserves.{res.symbol}.initial_supply ({amount}) "
                    f"exceeds the supply cap ({self.config.reserves[res.symbol].supply_cap})"
                )
            self.ledger.mint(self.genesis_holder, res.asset, units, reason="genesis supply")
            result = self.supply(self.genesis_holder, res.symbol, units)
            if not result.ok:  # pragma: no cover - only a broken invariant gets here
                raise RuntimeError(f"genesis supply of {res.symbol} refused: {result.reason}")

    # ------------------------------------------------------------------------------- reading
    def reserve(self, symbol: str) -> ReserveInfo:
        """A reserve by symbol.

        Raises:
            KeyError: If the pool has no such reserve.
        """
        return self._by_symbol[symbol]

    @property
    def symbols(self) -> tuple[str, ...]:
        """Reserve symbols, in configuration order."""
        return tuple(r.symbol for r in self.reserves)

    @property
    def accounts(self) -> np.ndarray:
        """Registered account holder ids, in registration order (a copy)."""
        return self._accounts[: self._n_accounts].copy()

    def liquidity_index(self, symbol: str) -> float:
        """Underlying units one scaled receipt unit is worth (the exchange rate of aSYM)."""
        return self._liquidity_index[self._by_symbol[symbol].index] / RAY

    def borrow_index(self, symbol: str) -> float:
        """Units of debt one scaled debt unit is worth."""
        return self._borrow_index[self._by_symbol[symbol].index] / RAY

    def liquidity_index_ray(self, symbol: str) -> int:
        """The exact liquidity index, in ray units."""
        return self._liquidity_index[self._by_symbol[symbol].index]

    def borrow_index_ray(self, symbol: str) -> int:
        """The exact variable-borrow index, in ray units."""
        return self._borrow_index[self._by_symbol[symbol].index]

    def supplied_units(self, holder: int, symbol: str) -> int:
        """Underlying units a holder's receipt tokens are worth (rounded down)."""
        res = self._by_symbol[symbol]
        scaled = self.ledger.balance(int(holder), res.receipt)
        return scaled * self._liquidity_index[res.index] // RAY

    def debt_units(self, holder: int, symbol: str) -> int:
        """Units a holder owes in an asset (rounded up): what repaying all of it costs."""
        res = self._by_symbol[symbol]
        scaled = self.ledger.balance(int(holder), res.debt)
        return _ceil_div(scaled * self._borrow_index[res.index], RAY)

    def total_supplied_units(self, symbol: str) -> int:
        """Underlying units all receipt tokens of a reserve are worth, treasury included."""
        res = self._by_symbol[symbol]
        return self.ledger.supply(res.receipt) * self._liquidity_index[res.index] // RAY

    def total_borrowed_units(self, symbol: str) -> int:
        """Units owed to a reserve by all borrowers."""
        res = self._by_symbol[symbol]
        return _ceil_div(self.ledger.supply(res.debt) * self._borrow_index[res.index], RAY)

    def available_units(self, symbol: str) -> int:
        """Underlying held by the pool and not lent: what can be withdrawn or borrowed."""
        return self.ledger.balance(self.liquidity_holder, self._by_symbol[symbol].asset)

    def utilisation(self, symbol: str) -> float:
        """Borrowed / supplied of a reserve (0 with nothing supplied)."""
        res = self._by_symbol[symbol]
        return self._utilisation(res)

    def rates(self, symbol: str) -> tuple[float, float]:
        """Current annual ``(borrow rate, supply rate)`` of a reserve."""
        res = self._by_symbol[symbol]
        u = self._utilisation(res)
        borrow = kinked_borrow_rate(res.rate, u)
        return borrow, borrow * u * (1.0 - float(res.reserve_factor))

    def account_data(self, holder: int) -> AccountData:
        """An account's collateral, borrowing power, debt and health factor.

        Values are NaN when an asset the account holds has no price.
        """
        holder = int(holder)
        coll, debt = self._position(holder)
        values, _ = self._values(coll, debt)
        if values is None:
            nan = math.nan
            return AccountData(holder, nan, nan, nan, nan, nan)
        hf = values.health_factor
        return AccountData(
            holder,
            float(values.collateral),
            float(values.borrowing_power),
            float(values.liquidation),
            float(values.debt),
            math.inf if hf is None else float(hf),
        )

    # ------------------------------------------------------------------------------- internals
    def _utilisation(self, res: ReserveInfo) -> float:
        supplied = self.ledger.supply(res.receipt) * self._liquidity_index[res.index]
        if supplied <= 0:
            return 0.0
        return self.ledger.supply(res.debt) * self._borrow_index[res.index] / supplied

    def _mint_room(self, asset: int) -> int:
        """Units of ``asset`` the ledger can still mint without overflowing int64."""
        return _INT64_MAX - int(self.ledger.minted[asset])

    def _oracle_price(self, res: ReserveInfo) -> float | None:
        p = self.prices.price(res.price_ref)
        if p is None:
            return None
        p = float(p)
        if not math.isfinite(p) or p <= 0.0:
            return None
        return p

    def _price(self, res: ReserveInfo) -> float | None:
        p = self._oracle_price(res)
        rate = self._exchange_rates.get(res.index)
        if p is None or rate is None:
            return p
        r = float(rate())
        return p * r if math.isfinite(r) and r > 0 else None

    def _price_exact(self, res: ReserveInfo) -> Fraction | None:
        p = self._oracle_price(res)
        if p is None:
            return None
        rate = self._exchange_rates.get(res.index)
        if rate is None:
            return _exact(p)
        r = Fraction(rate())
        return _exact(p) * r if r > 0 else None

    # ------------------------------------------------------------------ receipt-token collateral
    def set_exchange_rate(self, symbol: str, rate: Callable[[], Fraction | int]) -> None:
        """Price reserve ``symbol`` as ``oracle price x rate()`` from now on.

        For a reserve that is a claim on something else (another pool's receipt token
        ``aSYM.<v>``, whose ``price`` names the underlying ``SYM``'s oracle), ``rate`` is the
        claim's exchange rate read live, e.g. ``v``'s liquidity index as an exact
        ``Fraction``: when ``v`` writes down its index to socialise bad debt, this pool's
        accounts holding the token lose collateral value at once and may become liquidatable
        (mechanical contagion, DESIGN.md s. 6). A non-positive rate means "no price".

        Args:
            symbol: The reserve.
            rate: Returns the exchange rate (underlying per token), exact.

        Raises:
            KeyError: If the pool has no such reserve.
        """
        self._exchange_rates[self._by_symbol[symbol].index] = rate

    def _position(self, holder: int) -> tuple[list[int], list[int]]:
        """Scaled receipt and debt balances of a holder, per reserve."""
        row = self.ledger.balances[holder]
        coll = [int(row[r.receipt]) for r in self.reserves]
        debt = [int(row[r.debt]) for r in self.reserves]
        return coll, debt

    def _values(
        self, coll: Sequence[int], debt: Sequence[int], need: Iterable[int] = ()
    ) -> tuple[_Values | None, str | None]:
        """Exact valuation; ``(None, symbol)`` when a needed price is missing."""
        needed = set(need)
        c = bp = lq = d = Fraction(0)
        for res in self.reserves:
            r = res.index
            s_coll = coll[r] if res.liquidation_threshold > 0 else 0
            s_debt = debt[r]
            if not s_coll and not s_debt and r not in needed:
                continue
            price = self._price_exact(res)
            if price is None:
                return None, res.symbol
            if s_coll:
                units = s_coll * self._liquidity_index[r] // RAY
                v = units * price / res.unit
                c += v
                bp += v * res.ltv
                lq += v * res.liquidation_threshold
            if s_debt:
                units = _ceil_div(s_debt * self._borrow_index[r], RAY)
                d += units * price / res.unit
        return _Values(c, bp, lq, d), None

    def _holder_problem(self, holder: Any, role: str = "holder") -> str | None:
        if not _is_units(holder) or not 0 <= int(holder) < self.ledger.n_holders:
            return f"unknown {role} {holder!r}; the ledger has {self.ledger.n_holders} holders"
        if int(holder) in self._internal:
            return f"{role} {holder} is an internal account of pool {self.name!r}"
        return None

    def _precheck(
        self, action: str, holder: Any, symbol: Any, amount: Any
    ) -> tuple[ReserveInfo | None, ActionResult | None]:
        """Common validation; returns the reserve, or a refusal."""
        h = int(holder) if _is_units(holder) else -1
        sym = str(symbol)

        def refuse(code: Refusal, reason: str) -> tuple[None, ActionResult]:
            return None, ActionResult(False, action, h, sym, code=code, reason=reason)

        res = self._by_symbol.get(sym) if isinstance(symbol, str) else None
        if res is None:
            return refuse(
                Refusal.UNKNOWN_ASSET,
                f"{action}: pool {self.name!r} has no reserve {symbol!r}; "
                f"reserves are {list(self._by_symbol)}",
            )
        if not _is_units(amount) or int(amount) <= 0:
            return refuse(
                Refusal.BAD_AMOUNT,
                f"{action}: amount must be a positive integer number of units, got {amount!r}",
            )
        problem = self._holder_problem(holder)
        if problem:
            return refuse(Refusal.UNKNOWN_ACCOUNT, f"{action}: {problem}")
        return res, None

    def _register(self, holder: int) -> None:
        if holder >= self._slot.shape[0]:
            grown = np.full(max(holder + 1, 2 * self._slot.shape[0]), -1, dtype=np.int64)
            grown[: self._slot.shape[0]] = self._slot
            self._slot = grown
        if self._slot[holder] >= 0:
            return
        if self._n_accounts == self._accounts.shape[0]:
            grown = np.empty(2 * self._accounts.shape[0], dtype=np.int64)
            grown[: self._n_accounts] = self._accounts[: self._n_accounts]
            self._accounts = grown
        self._accounts[self._n_accounts] = holder
        self._slot[holder] = self._n_accounts
        self._n_accounts += 1

    def register_accounts(self, holders: np.ndarray | Sequence[int]) -> None:
        """Register many holders at once (a population's block), in ascending id order.

        Registration only makes accounts part of the scans; actions register their accounts
        themselves.

        Raises:
            ValueError: If an id is not a ledger holder.
        """
        ids = np.unique(np.asarray(holders, dtype=np.int64))
        if ids.size == 0:
            return
        if ids[0] < 0 or ids[-1] >= self.ledger.n_holders:
            raise ValueError(
                f"holder ids must be in 0..{self.ledger.n_holders - 1}, "
                f"got {int(ids[0])}..{int(ids[-1])}"
            )
        if ids[-1] >= self._slot.shape[0]:
            grown = np.full(max(int(ids[-1]) + 1, 2 * self._slot.shape[0]), -1, dtype=np.int64)
            grown[: self._slot.shape[0]] = self._slot
            self._slot = grown
        new = ids[self._slot[ids] < 0]
        need = self._n_accounts + new.size
        if need > self._accounts.shape[0]:
            grown = np.empty(max(need, 2 * self._accounts.shape[0]), dtype=np.int64)
            grown[: self._n_accounts] = self._accounts[: self._n_accounts]
            self._accounts = grown
        self._accounts[self._n_accounts : need] = new
        self._slot[new] = np.arange(self._n_accounts, need, dtype=np.int64)
        self._n_accounts = need

    # ------------------------------------------------------------------------------- actions
    def supply(self, holder: int, symbol: str, amount: int) -> ActionResult:
        """Supply ``amount`` units of the underlying; mint receipt tokens (rounded down).

        Refused on an unknown asset or holder, a non-positive amount, an insufficient wallet
        balance, the supply cap, or an amount too small to mint one scaled unit.
        """
        res, refused = self._precheck("supply", holder, symbol, amount)
        if refused:
            return refused
        assert res is not None
        holder, amount = int(holder), int(amount)
        ledger = self.ledger

        def refuse(code: Refusal, reason: str) -> ActionResult:
            return ActionResult(False, "supply", holder, symbol, code=code, reason=reason)

        have = ledger.balance(holder, res.asset)
        if have < amount:
            return refuse(
                Refusal.INSUFFICIENT_BALANCE,
                f"supply: holder {holder} has {have} {symbol} units, amount {amount}",
            )
        if res.supply_cap_units:
            total = self.total_supplied_units(symbol)
            if total + amount > res.supply_cap_units:
                return refuse(
                    Refusal.SUPPLY_CAP,
                    f"supply: {symbol} supply would be {total + amount} units, "
                    f"cap {res.supply_cap_units}",
                )
        scaled = amount * RAY // self._liquidity_index[res.index]
        if scaled == 0:
            return refuse(Refusal.BAD_AMOUNT, f"supply: {amount} units mint no receipt token")
        if scaled > self._mint_room(res.receipt):
            # Only after a write-down of (almost) everything: receipts would overflow int64.
            return refuse(Refusal.BAD_AMOUNT, f"supply: {amount} units mint too many receipts")
        self._register(holder)
        ledger.transfer(holder, self.liquidity_holder, res.asset, amount)
        ledger.mint(holder, res.receipt, scaled, reason="supply")
        return ActionResult(True, "supply", holder, symbol, amount, scaled)

    def withdraw(self, holder: int, symbol: str, amount: int) -> ActionResult:
        """Withdraw ``amount`` units of supplied underlying; burn receipt tokens (rounded up).

        Refused above the holder's supply, above available liquidity, when it would leave
        debt value above borrowing power (checked only for collateral reserves of accounts
        with debt), or when a price that check needs is missing.
        """
        res, refused = self._precheck("withdraw", holder, symbol, amount)
        if refused:
            return refused
        assert res is not None
        holder, amount = int(holder), int(amount)
        r = res.index

        def refuse(code: Refusal, reason: str) -> ActionResult:
            return ActionResult(False, "withdraw", holder, symbol, code=code, reason=reason)

        coll, debt = self._position(holder)
        have = coll[r] * self._liquidity_index[r] // RAY
        if amount > have:
            return refuse(
                Refusal.EXCEEDS_SUPPLY,
                f"withdraw: holder {holder} has supplied {have} {symbol} units, amount {amount}",
            )
        available = self.available_units(symbol)
        if amount > available:
            return refuse(
                Refusal.INSUFFICIENT_LIQUIDITY,
                f"withdraw: {available} {symbol} units available, amount {amount}",
            )
        burn = min(coll[r], _ceil_div(amount * RAY, self._liquidity_index[r]))
        refused = self._collateral_removal_refusal("withdraw", res, coll, debt, burn)
        if refused is not None:
            return refuse(*refused)
        self.ledger.burn(holder, res.receipt, burn, reason="withdraw")
        self.ledger.transfer(self.liquidity_holder, holder, res.asset, amount)
        return ActionResult(True, "withdraw", holder, symbol, amount, burn)

    def _collateral_removal_refusal(
        self, action: str, res: ReserveInfo, coll: list[int], debt: list[int], scaled: int
    ) -> tuple[Refusal, str] | None:
        """Why removing ``scaled`` receipt units of ``res`` must be refused, or ``None``.

        Collateral backing debt may leave only while the debt stays within borrowing power
        (a withdrawal or a receipt transfer, as Aave checks both). ``coll`` is changed.
        """
        if not any(debt) or res.liquidation_threshold <= 0:
            return None
        coll[res.index] -= scaled
        values, missing = self._values(coll, debt)
        if values is None:
            return Refusal.NO_PRICE, f"{action}: no price for {missing}"
        if values.debt > values.borrowing_power:
            return (
                Refusal.BORROWING_POWER,
                f"{action}: debt value {float(values.debt):.12g} would exceed borrowing "
                f"power {float(values.borrowing_power):.12g}",
            )
        return None

    def borrow(self, holder: int, symbol: str, amount: int) -> ActionResult:
        """Borrow ``amount`` units; mint debt tokens (rounded up).

        Refused when the asset is not borrowable, above available liquidity, above the
        borrow cap, when the resulting debt value exceeds borrowing power (sum of collateral
        value * LTV), or when a needed price is missing.
        """
        return self._borrow(holder, symbol, amount, limit="ltv")

    def _borrow(self, holder: Any, symbol: Any, amount: Any, limit: str) -> ActionResult:
        res, refused = self._precheck("borrow", holder, symbol, amount)
        if refused:
            return refused
        assert res is not None
        holder, amount = int(holder), int(amount)
        r = res.index

        def refuse(code: Refusal, reason: str) -> ActionResult:
            return ActionResult(False, "borrow", holder, symbol, code=code, reason=reason)

        if not res.borrowable:
            return refuse(Refusal.NOT_BORROWABLE, f"borrow: {symbol} is not borrowable")
        if self.policy is not None and self.policy.blocks_borrowing(self.step):
            return refuse(Refusal.POLICY, "borrow: borrowing is paused by the circuit breaker")
        available = self.available_units(symbol)
        if amount > available:
            return refuse(
                Refusal.INSUFFICIENT_LIQUIDITY,
                f"borrow: {available} {symbol} units available, amount {amount}",
            )
        if res.borrow_cap_units:
            total = self.total_borrowed_units(symbol)
            if total + amount > res.borrow_cap_units:
                return refuse(
                    Refusal.BORROW_CAP,
                    f"borrow: {symbol} debt would be {total + amount} units, "
                    f"cap {res.borrow_cap_units}",
                )
        scaled = _ceil_div(amount * RAY, self._borrow_index[r])
        coll, debt = self._position(holder)
        debt[r] += scaled
        values, missing = self._values(coll, debt, need=(r,))
        if values is None:
            return refuse(Refusal.NO_PRICE, f"borrow: no price for {missing}")
        if limit == "ltv" and values.debt > values.borrowing_power:
            return refuse(
                Refusal.BORROWING_POWER,
                f"borrow: debt value {float(values.debt):.12g} would exceed borrowing power "
                f"{float(values.borrowing_power):.12g}",
            )
        if limit == "health" and values.debt > values.liquidation:
            return refuse(
                Refusal.UNHEALTHY,
                f"borrow: debt value {float(values.debt):.12g} would exceed the liquidation "
                f"value {float(values.liquidation):.12g}",
            )
        self._register(holder)
        self.ledger.transfer(self.liquidity_holder, holder, res.asset, amount)
        self.ledger.mint(holder, res.debt, scaled, reason="borrow")
        return ActionResult(True, "borrow", holder, symbol, amount, scaled)

    def repay(
        self, holder: int, symbol: str, amount: int, on_behalf_of: int | None = None
    ) -> ActionResult:
        """Repay ``amount`` units of debt from ``holder``'s wallet; burn debt (rounded down).

        Repaying more than is owed is refused (use :meth:`repay_max` to clear a debt):
        an over-payment would otherwise have to be either kept (a loss to the user) or
        silently clamped. Repaying exactly :meth:`debt_units` clears the debt completely.

        Args:
            holder: Payer.
            symbol: Debt asset.
            amount: Units to repay.
            on_behalf_of: Account whose debt is repaid (default: the payer).
        """
        res, refused = self._precheck("repay", holder, symbol, amount)
        if refused:
            return refused
        assert res is not None
        holder, amount = int(holder), int(amount)
        account = holder if on_behalf_of is None else on_behalf_of
        r = res.index

        def refuse(code: Refusal, reason: str) -> ActionResult:
            return ActionResult(False, "repay", holder, symbol, code=code, reason=reason)

        problem = self._holder_problem(account, "account")
        if problem:
            return refuse(Refusal.UNKNOWN_ACCOUNT, f"repay: {problem}")
        account = int(account)
        scaled = self.ledger.balance(account, res.debt)
        owed = _ceil_div(scaled * self._borrow_index[r], RAY)
        if owed == 0:
            return refuse(Refusal.NO_DEBT, f"repay: account {account} owes no {symbol}")
        if amount > owed:
            return refuse(
                Refusal.EXCEEDS_DEBT,
                f"repay: account {account} owes {owed} {symbol} units, amount {amount}",
            )
        have = self.ledger.balance(holder, res.asset)
        if have < amount:
            return refuse(
                Refusal.INSUFFICIENT_BALANCE,
                f"repay: holder {holder} has {have} {symbol} units, amount {amount}",
            )
        burn = scaled if amount == owed else amount * RAY // self._borrow_index[r]
        if burn == 0:
            return refuse(Refusal.BAD_AMOUNT, f"repay: {amount} units burn no debt token")
        self.ledger.transfer(holder, self.liquidity_holder, res.asset, amount)
        self.ledger.burn(account, res.debt, burn, reason="repay")
        return ActionResult(True, "repay", holder, symbol, amount, burn)

    def repay_max(self, holder: int, symbol: str, on_behalf_of: int | None = None) -> ActionResult:
        """Repay all of an account's debt in ``symbol`` (the explicit "max" path)."""
        account = holder if on_behalf_of is None else on_behalf_of
        owed = 1  # any positive amount lets repay() name an unknown asset or account
        if symbol in self._by_symbol and self._holder_problem(account, "account") is None:
            owed = self.debt_units(int(account), symbol)
            if owed == 0:
                return ActionResult(
                    False,
                    "repay",
                    int(holder) if _is_units(holder) else -1,
                    symbol,
                    code=Refusal.NO_DEBT,
                    reason=f"repay: account {account} owes no {symbol}",
                )
        return self.repay(holder, symbol, owed, on_behalf_of)

    def transfer_receipt(self, holder: int, to: int, symbol: str, amount: int) -> ActionResult:
        """Move supplied collateral worth ``amount`` units to another holder, as receipt tokens.

        The scaled amount moved rounds up (the sender gives at least ``amount``). Refused,
        like a withdrawal, when it would leave the sender's debt above its borrowing power.
        """
        res, refused = self._precheck("transfer", holder, symbol, amount)
        if refused:
            return refused
        assert res is not None
        holder, amount = int(holder), int(amount)
        r = res.index

        def refuse(code: Refusal, reason: str) -> ActionResult:
            return ActionResult(False, "transfer", holder, symbol, code=code, reason=reason)

        problem = self._holder_problem(to, "recipient")
        if problem:
            return refuse(Refusal.UNKNOWN_ACCOUNT, f"transfer: {problem}")
        coll, debt = self._position(holder)
        have = coll[r] * self._liquidity_index[r] // RAY
        if amount > have:
            return refuse(
                Refusal.EXCEEDS_SUPPLY,
                f"transfer: holder {holder} has supplied {have} {symbol} units, amount {amount}",
            )
        scaled = min(coll[r], _ceil_div(amount * RAY, self._liquidity_index[r]))
        refused = self._collateral_removal_refusal("transfer", res, coll, debt, scaled)
        if refused is not None:
            return refuse(*refused)
        self._register(int(to))
        self.ledger.transfer(holder, int(to), res.receipt, scaled)
        return ActionResult(True, "transfer", holder, symbol, amount, scaled)

    def open_position(
        self,
        holder: int,
        collateral: Mapping[str, int],
        debt: Mapping[str, int],
        enforce_ltv: bool = True,
    ) -> None:
        """Place an account that starts with collateral and debt (model initialisation).

        Supplies every collateral amount from the holder's wallet (the model mints it there
        first), then borrows every debt amount. Everything is checked before anything moves.

        Args:
            holder: The account.
            collateral: Units to supply, by symbol.
            debt: Units to borrow, by symbol.
            enforce_ltv: Require debt value <= borrowing power (the rule of :meth:`borrow`).
                ``False`` only requires a health factor of at least 1, to replay a position
                that prices have already pushed beyond its LTV.

        Raises:
            ValueError: Naming the problem, if the position cannot be opened; nothing changes.
        """
        problem = self._holder_problem(holder)
        if problem:
            raise ValueError(f"open_position: {problem}")
        holder = int(holder)
        where = f"open_position of holder {holder} in pool {self.name!r}"
        coll, owed = self._position(holder)
        extra_liquidity = [0] * len(self.reserves)
        for symbol, units in collateral.items():
            res = self._by_symbol.get(symbol)
            if res is None:
                raise ValueError(f"{where}: no reserve {symbol!r}")
            if not _is_units(units) or units < 0:
                raise ValueError(f"{where}: collateral {symbol} must be units >= 0, got {units}")
            if units == 0:
                continue
            have = self.ledger.balance(holder, res.asset)
            if have < units:
                raise ValueError(f"{where}: wallet holds {have} {symbol} units, needs {units}")
            if res.supply_cap_units and (
                self.total_supplied_units(symbol) + units > res.supply_cap_units
            ):
                raise ValueError(f"{where}: supplying {units} {symbol} units exceeds the cap")
            scaled = int(units) * RAY // self._liquidity_index[res.index]
            if scaled == 0:
                raise ValueError(f"{where}: {units} {symbol} units mint no receipt token")
            coll[res.index] += scaled
            extra_liquidity[res.index] += int(units)
        for symbol, units in debt.items():
            res = self._by_symbol.get(symbol)
            if res is None:
                raise ValueError(f"{where}: no reserve {symbol!r}")
            if not _is_units(units) or units < 0:
                raise ValueError(f"{where}: debt {symbol} must be units >= 0, got {units}")
            if units == 0:
                continue
            if not res.borrowable:
                raise ValueError(f"{where}: {symbol} is not borrowable")
            available = self.available_units(symbol) + extra_liquidity[res.index]
            if units > available:
                raise ValueError(
                    f"{where}: borrowing {units} {symbol} units, only {available} available"
                )
            extra_liquidity[res.index] -= int(units)
            if res.borrow_cap_units and (
                self.total_borrowed_units(symbol) + units > res.borrow_cap_units
            ):
                raise ValueError(f"{where}: borrowing {units} {symbol} units exceeds the cap")
            owed[res.index] += _ceil_div(int(units) * RAY, self._borrow_index[res.index])
        values, missing = self._values(coll, owed)
        if values is None:
            raise ValueError(f"{where}: no price for {missing}")
        limit = values.borrowing_power if enforce_ltv else values.liquidation
        if values.debt > limit:
            what = "borrowing power" if enforce_ltv else "liquidation value (health factor < 1)"
            raise ValueError(
                f"{where}: debt value {float(values.debt):.12g} exceeds {what} {float(limit):.12g}"
            )
        for symbol, units in collateral.items():
            if units:
                result = self.supply(holder, symbol, int(units))
                if not result.ok:  # pragma: no cover - pre-validation mirrors supply
                    raise RuntimeError(f"{where}: {result.reason}")
        for symbol, units in debt.items():
            if units:
                result = self._borrow(
                    holder, symbol, int(units), "ltv" if enforce_ltv else "health"
                )
                if not result.ok:  # pragma: no cover - pre-validation mirrors borrow
                    raise RuntimeError(f"{where}: {result.reason}")

    # ------------------------------------------------------------------------------- accrual
    def accrue(self, step: int, step_seconds: float) -> None:
        """Accrue one step of interest on every reserve and pay the reserve factor.

        Indexes compound per step (see the module docstring); the treasury is minted
        receipt tokens worth ``reserve_factor`` of the interest, rounded down.

        Args:
            step: The step being run (stored as :attr:`step`).
            step_seconds: Length of the step in seconds.

        Raises:
            ValueError: If ``step_seconds`` is not positive and finite.
        """
        if not (math.isfinite(step_seconds) and step_seconds > 0):
            raise ValueError(f"step_seconds must be positive, got {step_seconds}")
        self.step = int(step)
        fraction_of_year = step_seconds / SECONDS_PER_YEAR
        for res in self.reserves:
            r = res.index
            u = self._utilisation(res)
            borrow_rate = kinked_borrow_rate(res.rate, u)
            supply_rate = borrow_rate * u * (1.0 - float(res.reserve_factor))
            growth_b = round(borrow_rate * fraction_of_year * RAY)
            growth_l = round(supply_rate * fraction_of_year * RAY)
            scaled_debt = self.ledger.supply(res.debt)
            old_b = self._borrow_index[r]
            # As Aave: the borrow index moves only while someone owes (a base rate alone
            # does not inflate it).
            new_b = old_b + _ceil_div(old_b * growth_b, RAY) if scaled_debt else old_b
            new_l = self._liquidity_index[r] + self._liquidity_index[r] * growth_l // RAY
            self._borrow_index[r] = new_b
            self._liquidity_index[r] = new_l
            if new_b > old_b and res.reserve_factor:
                # interest = scaled_debt * (new_b - old_b) / RAY units; the treasury's share,
                # in scaled receipt units at the new liquidity index, rounded down.
                rf = res.reserve_factor
                to_treasury = (scaled_debt * (new_b - old_b) * rf.numerator) // (
                    rf.denominator * new_l
                )
                to_treasury = min(to_treasury, self._mint_room(res.receipt))
                if to_treasury:
                    self.ledger.mint(
                        self.treasury_holder, res.receipt, to_treasury, reason="reserve factor"
                    )

    # ------------------------------------------------------------------------------- scans
    def _unit_values(self) -> tuple[np.ndarray, np.ndarray]:
        """Value of one scaled receipt / debt unit per reserve (NaN without a price)."""
        coll = np.empty(len(self.reserves), dtype=np.float64)
        debt = np.empty(len(self.reserves), dtype=np.float64)
        for res in self.reserves:
            p = self._price(res)
            price = math.nan if p is None else p
            coll[res.index] = self._liquidity_index[res.index] / RAY / res.unit * price
            debt[res.index] = self._borrow_index[res.index] / RAY / res.unit * price
        return coll, debt

    def _scan(self, holders: np.ndarray, reuse: bool) -> tuple[np.ndarray, ...]:
        n = holders.shape[0]
        if reuse:
            buffers = self._scan_buffers
            if buffers is None or buffers[0].shape[0] < n:
                size = max(n, 1024)
                buffers = (
                    np.empty(size, dtype=np.float64),
                    np.empty(size, dtype=np.float64),
                    np.empty(size, dtype=np.float64),
                    np.empty(size, dtype=np.int64),
                    np.empty(size, dtype=np.int64),
                )
                self._scan_buffers = buffers
            out = tuple(b[:n] for b in buffers)
        else:
            out = (
                np.empty(n, dtype=np.float64),
                np.empty(n, dtype=np.float64),
                np.empty(n, dtype=np.float64),
                np.empty(n, dtype=np.int64),
                np.empty(n, dtype=np.int64),
            )
        coll_unit, debt_unit = self._unit_values()
        kernel = _scan_parallel if n >= PARALLEL_SCAN_MIN_ACCOUNTS else _scan_serial
        kernel(
            self.ledger.balances,
            holders,
            self._receipt_cols,
            self._debt_cols,
            coll_unit,
            debt_unit,
            self._threshold,
            *out,
        )
        return out

    def health_factors(self, holders: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
        """Health factors of many accounts in one vectorised (numba) call.

        Args:
            holders: Holder ids; ``None`` scans every registered account (see
                :attr:`accounts` for the order).

        Returns:
            float64 array: inf without debt, NaN when an asset held has no price.

        Raises:
            ValueError: If an id is not a ledger holder.
        """
        if holders is None:
            ids = self._accounts[: self._n_accounts]
        else:
            ids = np.ascontiguousarray(holders, dtype=np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= self.ledger.n_holders):
                raise ValueError(f"holder ids must be in 0..{self.ledger.n_holders - 1}")
        return self._scan(ids, reuse=False)[0]

    def bad_debt_units(self, symbol: str) -> int:
        """Cumulative bad debt written off in reserve ``symbol``, underlying units."""
        return self._bad_debt_units[self._by_symbol[symbol].index]

    def reserve_price(self, symbol: str) -> float | None:
        """The price the pool values ``symbol`` at now (exchange rate included), or None."""
        return self._price(self._by_symbol[symbol])

    def account_values(
        self, holders: np.ndarray | Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Registered accounts (or ``holders``) with their debt and collateral values, one scan.

        Args:
            holders: Holder ids to read (any ledger holder; 0 for one without a position);
                ``None``: every registered account, in registration order.

        Returns:
            ``(holders, debt_value, collateral_value)`` in the pool's unit of account (NaN
            for accounts holding an asset without a price).
        """
        if holders is None:
            ids = self._accounts[: self._n_accounts].copy()
        else:
            ids = np.array(holders, dtype=np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= self.ledger.n_holders):
                raise ValueError(f"holder ids must be in 0..{self.ledger.n_holders - 1}")
        _, debt, coll, *_ = self._scan(ids, reuse=False)
        return ids, debt, coll

    def liquidatable(self) -> LiquidatableAccounts:
        """Every registered account with a health factor below 1, from one fused scan.

        Accounts holding an asset without a price have a NaN health factor and are never
        listed. A float64 scan: :meth:`liquidate` re-checks exactly.
        """
        ids = self._accounts[: self._n_accounts]
        hf, debt, coll, big_debt, big_coll = self._scan(ids, reuse=True)
        flagged = hf < 1.0
        if self.policy is not None:
            flagged = self.policy.liquidatable_mask(self.step, ids, hf, flagged)
        pick = np.flatnonzero(flagged)
        big_d = big_debt[pick]
        big_c = big_coll[pick]
        return LiquidatableAccounts(
            holder=ids[pick],
            health_factor=hf[pick],
            debt_value=debt[pick],
            collateral_value=coll[pick],
            debt_asset=np.where(big_d >= 0, self._asset_ids[np.maximum(big_d, 0)], -1),
            collateral_asset=np.where(big_c >= 0, self._asset_ids[np.maximum(big_c, 0)], -1),
        )

    def liquidation_prices(self, symbol: str) -> LiquidationPrices:
        """Price of ``symbol`` at which each registered account becomes liquidatable.

        One vectorised read of the receipt and debt balances. **Approximation:** only the
        price of ``symbol`` moves; every other reserve is held at its current price (exact
        for the usual one-volatile-collateral account, e.g. WETH against stablecoin debt).
        With ``c`` the collateral in ``symbol`` (whole tokens) times its liquidation
        threshold, ``d`` the debt in ``symbol``, ``A`` the threshold-weighted value of the
        other collateral and ``D`` the value of the other debt, the health factor is below 1
        when ``p * (c - d) < D - A``:

        * ``c > d`` (net long the asset): liquidatable at ``p <= (D - A) / (c - d)``
          (side +1; listed only when that price is positive);
        * ``c < d`` (net short, e.g. WETH debt against stablecoin collateral): liquidatable
          at ``p >= (A - D) / (d - c)`` (side -1; ``0`` when it already is at any price);
        * ``c = d``: the price does not matter (listed at ``inf`` on the long side when
          already liquidatable).

        The debt value is taken at the liquidation price, ``d * p + D``, and so is the
        collateral value (not threshold-weighted): the other collateral at its price plus
        the ``symbol`` collateral at ``p`` (at today's price for an account listed at
        ``inf``). Accounts holding an asset without a price are left out. A float64 scan,
        like :meth:`liquidatable`.

        Args:
            symbol: The volatile reserve.

        Returns:
            The accounts at risk, in registration order.

        Raises:
            KeyError: If the pool has no such reserve.
        """
        res = self._by_symbol[symbol]
        p0 = self._price(res)
        current = math.nan if p0 is None else p0
        ids = self._accounts[: self._n_accounts]
        if ids.size == 0 or p0 is None:
            return LiquidationPrices.empty(current)
        coll_unit, debt_unit = self._unit_values()
        r = res.index
        # One compiled pass over the accounts' balances gives the per-account sums (a loop
        # of array operations over (accounts x reserves) cost several times more).
        sums = np.empty((ids.shape[0], 6), dtype=np.float64)
        _liquidation_price_inputs(
            self.ledger.balances,
            ids,
            self._receipt_cols,
            self._debt_cols,
            coll_unit,
            coll_unit * self._threshold,
            debt_unit,
            self._threshold,
            r,
            sums,
        )
        a_other, d_other, plain_other = sums[:, 0], sums[:, 1], sums[:, 4]
        c = sums[:, 2] / p0  # threshold-weighted tokens of ``symbol``
        d = sums[:, 3] / p0  # tokens of ``symbol`` owed
        c_tokens = sums[:, 5] / p0  # tokens of ``symbol`` held as collateral
        k = c - d
        rhs = d_other - a_other
        with np.errstate(divide="ignore", invalid="ignore"):
            price = np.where(k != 0.0, rhs / np.where(k != 0.0, k, 1.0), np.inf)
        finite_inputs = np.isfinite(a_other) & np.isfinite(d_other) & np.isfinite(k)
        long_ = finite_inputs & (((k > 0) & (price > 0)) | ((k == 0) & (rhs > 0)))
        short = finite_inputs & (k < 0) & (d > 0)
        price = np.where(short & (price < 0), 0.0, price)
        keep = long_ | short
        p = price[keep]
        debt_at = d_other[keep] + np.where(d[keep] > 0, d[keep] * np.where(np.isinf(p), 0, p), 0)
        # Collateral at the liquidation price: the other reserves at their prices, the
        # ``symbol`` tokens at ``p``.
        coll_at = plain_other[keep] + c_tokens[keep] * np.where(np.isinf(p), p0, p)
        return LiquidationPrices(
            holder=ids[keep].copy(),
            price=p,
            debt_value=debt_at,
            side=np.where(long_[keep], 1, -1).astype(np.int64),
            current_price=current,
            collateral_value=coll_at,
        )

    @property
    def liquidation_count(self) -> int:
        """Rows of :meth:`liquidations_frame` so far."""
        return len(self._liquidations)

    def account_exposures(self) -> AccountExposures:
        """Every registered account with debt, valued at the pool's prices (vectorised).

        Per account: ``notional`` = value of its collateral (reserves with a positive
        liquidation threshold), ``debt`` = value of its debt, ``equity`` = notional - debt,
        ``maintenance`` = ``sum(collateral_value_j * (1 - liquidation_threshold_j))`` (the
        equity the account must keep: its health factor is below 1 exactly when equity is
        below it), computed as ``notional - health_factor * debt``. Accounts holding an
        asset without a price are left out. One compiled scan, as :meth:`health_factors`.
        """
        ids = self._accounts[: self._n_accounts]
        if ids.size == 0:
            return AccountExposures.empty()
        hf, debt, coll, _, _ = self._scan(ids, reuse=True)
        keep = (debt > 0) & np.isfinite(debt) & np.isfinite(coll) & np.isfinite(hf)
        debt, coll = debt[keep], coll[keep]  # copies: the scan buffers are reused
        return AccountExposures(
            holder=ids[keep].copy(),
            notional=coll,
            equity=coll - debt,
            debt=debt,
            maintenance=coll - hf[keep] * debt,
        )

    # ------------------------------------------------------------------------------- liquidation
    def liquidate(
        self,
        liquidator: int,
        account: int,
        debt_symbol: str,
        collateral_symbol: str,
        repay_amount: int,
        receive_receipt: bool = False,
    ) -> LiquidationResult:
        """Repay part of an unhealthy account's debt and seize its collateral with a bonus.

        ``repay_amount`` is the most the liquidator is willing to repay; the close factor
        and the account's collateral may reduce it (the result says what was repaid). The
        liquidator pays from its wallet and receives the collateral as underlying, or as
        receipt tokens when ``receive_receipt`` is set or liquidity cannot pay. Any debt
        left on an account without collateral is then written off as bad debt.

        Refused (nothing changes) when the health factor is at least 1 (``healthy``), a
        price the account needs is missing, the account has no such debt or collateral,
        the collateral reserve has no liquidation threshold, the liquidator lacks the
        funds, or the amount is too small to seize one unit.
        """
        liq = int(liquidator) if _is_units(liquidator) else -1
        acc = int(account) if _is_units(account) else -1

        def refuse(code: Refusal, reason: str, hf: float = math.nan) -> LiquidationResult:
            return LiquidationResult(
                False,
                liq,
                acc,
                str(debt_symbol),
                str(collateral_symbol),
                health_factor=hf,
                code=code,
                reason=f"liquidate: {reason}",
            )

        rd = self._by_symbol.get(debt_symbol) if isinstance(debt_symbol, str) else None
        rc = self._by_symbol.get(collateral_symbol) if isinstance(collateral_symbol, str) else None
        if rd is None or rc is None:
            missing = debt_symbol if rd is None else collateral_symbol
            return refuse(Refusal.UNKNOWN_ASSET, f"pool {self.name!r} has no reserve {missing!r}")
        if not _is_units(repay_amount) or int(repay_amount) <= 0:
            return refuse(
                Refusal.BAD_AMOUNT, f"repay_amount must be a positive integer, got {repay_amount!r}"
            )
        for who, role in ((liquidator, "liquidator"), (account, "account")):
            problem = self._holder_problem(who, role)
            if problem:
                return refuse(Refusal.UNKNOWN_ACCOUNT, problem)
        if rc.liquidation_threshold <= 0:
            return refuse(Refusal.NOT_COLLATERAL, f"{rc.symbol} is not collateral")
        coll, debt = self._position(acc)
        if debt[rd.index] == 0:
            return refuse(Refusal.NO_DEBT, f"account {acc} owes no {rd.symbol}")
        il = self._liquidity_index[rc.index]
        ib = self._borrow_index[rd.index]
        held = coll[rc.index] * il // RAY
        if held == 0:
            return refuse(Refusal.NO_COLLATERAL, f"account {acc} has no {rc.symbol} collateral")
        values, missing = self._values(coll, debt)
        if values is None:
            return refuse(Refusal.NO_PRICE, f"no price for {missing}")
        hf = values.health_factor
        assert hf is not None  # the account has debt
        owed = _ceil_div(debt[rd.index] * ib, RAY)
        terms = None
        if self.policy is not None:  # docs/policies.md: the policy may refuse, cap or re-price
            terms = self.policy.terms(self.step, acc, hf, rd.symbol, owed, rc.liquidation_bonus)
            if terms.refusal is not None:
                return refuse(Refusal.POLICY, terms.refusal, float(hf))
        if hf >= 1 and (terms is None or not terms.early):
            return refuse(Refusal.HEALTHY, f"health factor {float(hf):.12g} >= 1", float(hf))

        full_close = self._full_close_below > 0 and hf < self._full_close_below
        close_factor = Fraction(1) if full_close else self._close_factor
        max_repay = min(owed, _ceil(owed * close_factor))
        if terms is not None and terms.max_repay_units is not None:
            max_repay = min(max_repay, terms.max_repay_units)
        repay = min(int(repay_amount), max_repay)
        p_debt = self._price_exact(rd)
        p_coll = self._price_exact(rc)
        assert p_debt is not None and p_coll is not None  # checked by _values
        bonus = rc.liquidation_bonus
        if terms is not None and terms.bonus is not None:
            bonus = terms.bonus
        # Collateral units per unit of debt repaid, bonus included.
        per_unit = p_debt * rc.unit * (1 + bonus) / (p_coll * rd.unit)
        seize = _floor(repay * per_unit)
        all_collateral = seize >= held
        if all_collateral:
            seize = held
            repay = min(repay, _ceil(held / per_unit))
        if seize == 0 or repay == 0:
            return refuse(
                Refusal.BAD_AMOUNT,
                f"repaying {repay} {rd.symbol} units seizes no collateral",
                float(hf),
            )
        wallet = self.ledger.balance(liq, rd.asset)
        if wallet < repay:
            return refuse(
                Refusal.INSUFFICIENT_BALANCE,
                f"liquidator {liq} has {wallet} {rd.symbol} units, needs {repay}",
                float(hf),
            )
        fee = min(seize, _ceil(seize * bonus / (1 + bonus) * rc.protocol_share))
        to_liquidator = seize - fee
        scaled_seized = (
            coll[rc.index] if all_collateral else min(coll[rc.index], _ceil_div(seize * RAY, il))
        )
        liquidity = self.available_units(rc.symbol) + (repay if rc.asset == rd.asset else 0)
        use_receipt = bool(receive_receipt) or liquidity < to_liquidator
        if use_receipt:
            scaled_to_liquidator = to_liquidator * RAY // il
        else:
            scaled_to_liquidator = _ceil_div(to_liquidator * RAY, il)
        scaled_to_treasury = scaled_seized - scaled_to_liquidator
        debt_burn = debt[rd.index] if repay == owed else repay * RAY // ib

        ledger = self.ledger
        ledger.transfer(liq, self.liquidity_holder, rd.asset, repay)
        ledger.burn(acc, rd.debt, debt_burn, reason="liquidation")
        if use_receipt:
            self._register(liq)
            ledger.transfer(acc, liq, rc.receipt, scaled_to_liquidator)
        else:
            ledger.burn(acc, rc.receipt, scaled_to_liquidator, reason="liquidation")
            ledger.transfer(self.liquidity_holder, liq, rc.asset, to_liquidator)
        if scaled_to_treasury:
            ledger.transfer(acc, self.treasury_holder, rc.receipt, scaled_to_treasury)

        if terms is not None:
            assert self.policy is not None
            self.policy.record(self.step, acc, rd.symbol, repay, terms.early)
        bad_debt = 0
        if self._no_collateral_left(acc):
            bad_debt = self._write_off(acc).get(rd.index, 0)
        bonus_value = float(seize * p_coll / rc.unit - repay * p_debt / rd.unit)
        self._liquidations.append(
            (
                self.step,
                self.name,
                acc,
                liq,
                rd.symbol,
                repay,
                rc.symbol,
                seize,
                float(p_coll),
                bonus_value,
                fee,
                bad_debt,
                to_liquidator,
                use_receipt,
            )
        )
        return LiquidationResult(
            True,
            liq,
            acc,
            rd.symbol,
            rc.symbol,
            debt_repaid=repay,
            collateral_seized=seize,
            liquidator_received=to_liquidator,
            protocol_fee=fee,
            received_receipt=use_receipt,
            bad_debt=bad_debt,
            health_factor=float(hf),
        )

    # ------------------------------------------------------------------------------- bad debt
    def _no_collateral_left(self, account: int) -> bool:
        row = self.ledger.balances[account]
        for res in self.reserves:
            if res.liquidation_threshold > 0:
                scaled = int(row[res.receipt])
                if scaled * self._liquidity_index[res.index] // RAY > 0:
                    return False
        return True

    def _write_off(self, account: int) -> dict[int, int]:
        """Write off all debt of an account without collateral; return units by reserve."""
        ledger = self.ledger
        written: dict[int, int] = {}
        for res in self.reserves:
            r = res.index
            scaled = ledger.balance(account, res.debt)
            if scaled == 0:
                continue
            owed = _ceil_div(scaled * self._borrow_index[r], RAY)
            ledger.burn(account, res.debt, scaled, reason="bad debt write-off")
            il = self._liquidity_index[r]
            treasury_scaled = ledger.balance(self.treasury_holder, res.receipt)
            covered = min(owed, treasury_scaled * il // RAY)
            if covered:
                burn = min(treasury_scaled, _ceil_div(covered * RAY, il))
                ledger.burn(
                    self.treasury_holder, res.receipt, burn, reason="bad debt covered by reserves"
                )
            borne = owed - covered
            if borne:
                remaining_scaled = ledger.supply(res.receipt)
                if remaining_scaled:
                    # Suppliers bear the loss: every scaled unit is worth less. Rounding the
                    # index down leaves any dust with the pool, not with the suppliers.
                    cut = _ceil_div(borne * RAY, remaining_scaled)
                    self._liquidity_index[r] = max(il - cut, 1)
                else:
                    logger.warning(
                        "pool %s: %d %s units of bad debt with no supplier left to bear it",
                        self.name,
                        borne,
                        res.symbol,
                    )
            self._bad_debt_units[r] += owed
            self._bad_debt_rows.append(
                (self.step, self.name, account, res.symbol, owed, covered, borne)
            )
            written[r] = owed
        return written

    def settle(self, step: int) -> int:
        """Write off the debt of every account that holds debt and no collateral.

        One vectorised pass over the registered accounts (balances only, no prices), then an
        exact check per candidate.

        Args:
            step: The step being run (stored as :attr:`step`).

        Returns:
            Number of accounts whose debt was written off.
        """
        self.step = int(step)
        ids = self._accounts[: self._n_accounts]
        if ids.size == 0:
            return 0
        out = np.empty(ids.shape[0], dtype=np.int64)
        index = np.array([i / RAY for i in self._liquidity_index], dtype=np.float64)
        count = _orphan_debt_kernel(
            self.ledger.balances,
            ids,
            self._receipt_cols,
            self._debt_cols,
            self._threshold,
            index,
            out,
        )
        written = 0
        for holder in out[:count]:
            if self._no_collateral_left(int(holder)):
                self._write_off(int(holder))
                written += 1
        return written

    # ------------------------------------------------------------------------------- flash loans
    def flash_loan(
        self,
        holder: int,
        symbol: str,
        amount: int,
        action: Callable[[], None],
        participants: Sequence[Any] = (),
    ) -> FlashLoanResult:
        """Lend ``amount`` for the duration of ``action()``, then take back amount + fee.

        If ``action`` raises or the holder cannot repay ``amount + ceil(amount *
        flash_loan_fee)``, everything is reverted: the ledger, this pool and every object in
        ``participants`` (matching engine, other protocols, AMM pools: anything with
        ``snapshot()``/``restore()``) return to their state before the loan, and a
        ``flash_loans`` row records ``repaid=False``.

        Refused (nothing happens, no row) for a non-borrowable reserve (as Aave) or an amount
        above the available liquidity.

        Args:
            holder: Borrower.
            symbol: Asset lent.
            amount: Units lent, at most the available liquidity.
            action: What the borrower does with the funds.
            participants: Other stateful objects the action may change.
        """
        res, refused = self._precheck("flash_loan", holder, symbol, amount)
        if refused:
            return FlashLoanResult(
                False, refused.holder, refused.symbol, code=refused.code, reason=refused.reason
            )
        assert res is not None
        holder, amount = int(holder), int(amount)
        if not self.config.flash_loans:  # Compound v2 has none
            return FlashLoanResult(
                False,
                holder,
                symbol,
                amount,
                code=Refusal.FLASH_LOANS_DISABLED,
                reason=f"flash_loan: pool {self.name!r} offers no flash loans",
            )
        if not res.borrowable:  # Aave lends flash only from reserves with borrowing enabled
            return FlashLoanResult(
                False,
                holder,
                symbol,
                amount,
                code=Refusal.NOT_BORROWABLE,
                reason=f"flash_loan: {symbol} is not borrowable",
            )
        available = self.available_units(symbol)
        if amount > available:
            return FlashLoanResult(
                False,
                holder,
                symbol,
                amount,
                code=Refusal.INSUFFICIENT_LIQUIDITY,
                reason=f"flash_loan: {available} {symbol} units available, amount {amount}",
            )
        fee = _ceil(amount * self._flash_fee)
        ledger_snap = self.ledger.snapshot()
        pool_snap = self.snapshot()
        participant_snaps = [p.snapshot() for p in participants]
        self.ledger.transfer(self.liquidity_holder, holder, res.asset, amount)
        code: Refusal | None = None
        reason = ""
        try:
            action()
        except Exception as exc:  # any failure of the borrower's action reverts the loan
            code = Refusal.ACTION_FAILED
            reason = f"flash_loan: action raised {type(exc).__name__}: {exc}"
        if code is None:
            have = self.ledger.balance(holder, res.asset)
            if have < amount + fee:
                code = Refusal.NOT_REPAID
                reason = (
                    f"flash_loan: holder {holder} has {have} {symbol} units, owes {amount + fee}"
                )
        if code is not None:
            for participant, snap in zip(participants, participant_snaps, strict=True):
                participant.restore(snap)
            self.restore(pool_snap)
            self.ledger.restore(ledger_snap)
            self._flash_loans.append((self.step, self.name, holder, symbol, amount, fee, False))
            return FlashLoanResult(False, holder, symbol, amount, fee, False, code, reason)
        self.ledger.transfer(holder, self.liquidity_holder, res.asset, amount + fee)
        scaled_fee = min(
            fee * RAY // self._liquidity_index[res.index], self._mint_room(res.receipt)
        )
        if scaled_fee:
            self.ledger.mint(self.treasury_holder, res.receipt, scaled_fee, reason="flash loan fee")
        self._flash_loans.append((self.step, self.name, holder, symbol, amount, fee, True))
        return FlashLoanResult(True, holder, symbol, amount, fee, True)

    # ------------------------------------------------------------------------------- state
    def snapshot(self) -> PoolSnapshot:
        """Capture the pool's own state (indexes, accounts, event-table lengths)."""
        return PoolSnapshot(
            liquidity_index=tuple(self._liquidity_index),
            borrow_index=tuple(self._borrow_index),
            bad_debt_units=tuple(self._bad_debt_units),
            n_accounts=self._n_accounts,
            n_liquidations=len(self._liquidations),
            n_flash_loans=len(self._flash_loans),
            n_bad_debt=len(self._bad_debt_rows),
            step=self.step,
            policy_state=None if self.policy is None else self.policy.snapshot_state(),
        )

    def restore(self, snap: PoolSnapshot) -> None:
        """Return to a state captured by :meth:`snapshot` (balances are the ledger's job)."""
        self._liquidity_index = list(snap.liquidity_index)
        self._borrow_index = list(snap.borrow_index)
        self._bad_debt_units = list(snap.bad_debt_units)
        if self._n_accounts > snap.n_accounts:
            self._slot[self._accounts[snap.n_accounts : self._n_accounts]] = -1
            self._n_accounts = snap.n_accounts
        del self._liquidations[snap.n_liquidations :]
        del self._flash_loans[snap.n_flash_loans :]
        del self._bad_debt_rows[snap.n_bad_debt :]
        self.step = snap.step
        if self.policy is not None and snap.policy_state is not None:
            self.policy.restore_state(snap.policy_state)

    # ------------------------------------------------------------------------------- policy
    def attach_policy(self, policy: LiquidationPolicy | None, asset: str = "") -> None:
        """Use ``policy`` for liquidations (``None``: the static rules); see docs/policies.md.

        Args:
            policy: The policy (:func:`marginsim.protocols.policies.make_policy`).
            asset: Reserve whose oracle price the policy watches; empty: the first reserve
                priced by an oracle (or the first reserve).

        Raises:
            KeyError: If the pool has no reserve ``asset``.
        """
        self.policy = policy
        if asset:
            self._policy_reserve = self._by_symbol[asset]
        else:
            priced = [r for r in self.reserves if isinstance(r.price_ref, str)]
            self._policy_reserve = (priced or list(self.reserves))[0]

    def update_policy(self, step: int) -> None:
        """Phase 2 hook: the policy observes the watched price; a new requirement is applied.

        A no-op without a policy. With dynamic margin, every reserve's liquidation threshold
        becomes ``configured / m`` (and its LTV, with ``adjust_ltv``), ``m`` the policy's
        requirement multiplier.
        """
        policy = self.policy
        if policy is None:
            return
        assert self._policy_reserve is not None
        ids = hf = None
        if policy.needs_health:
            ids = self._accounts[: self._n_accounts].copy()
            hf = self.health_factors()
        before = policy.requirement_scale
        policy.observe(step, self._price(self._policy_reserve), ids, hf)
        if policy.requirement_scale != before:
            self._scale_requirement(policy.requirement_scale)

    def liquidation_quote(
        self, account: int, debt_symbol: str, collateral_symbol: str
    ) -> LiquidationQuote:
        """The terms :meth:`liquidate` would give a call on ``account`` now; changes nothing.

        The same checks and caps as :meth:`liquidate` before it looks at the liquidator's
        wallet and the collateral held: health (or the policy's early terms), the pause of a
        circuit breaker, the close factor, the policy's cap (a gradual slice, an early share)
        and the bonus (the policy's, else the collateral reserve's). Bots read it through
        :meth:`marginsim.protocols.view.ProtocolsView.liquidation_quote`.

        Raises:
            KeyError: If the pool has no such reserve.
        """
        rd, rc = self._by_symbol[debt_symbol], self._by_symbol[collateral_symbol]
        acc = int(account)
        policy = self.policy
        if policy is not None and policy.paused(self.step):
            return LiquidationQuote("liquidations are paused", paused=True)
        coll, debt = self._position(acc)
        if debt[rd.index] == 0:
            return LiquidationQuote(f"account {acc} owes no {rd.symbol}")
        values, missing = self._values(coll, debt)
        if values is None:
            return LiquidationQuote(f"no price for {missing}")
        hf = values.health_factor
        assert hf is not None  # the account has debt
        owed = _ceil_div(debt[rd.index] * self._borrow_index[rd.index], RAY)
        terms = None
        if policy is not None:
            terms = policy.quote(self.step, acc, hf, rd.symbol, owed, rc.liquidation_bonus)
            if terms.refusal is not None:
                return LiquidationQuote(terms.refusal)
        if hf >= 1 and (terms is None or not terms.early):
            return LiquidationQuote(f"health factor {float(hf):.12g} >= 1")
        full_close = self._full_close_below > 0 and hf < self._full_close_below
        max_repay = min(owed, _ceil(owed * (Fraction(1) if full_close else self._close_factor)))
        bonus = rc.liquidation_bonus
        if terms is not None:
            if terms.max_repay_units is not None:
                max_repay = min(max_repay, terms.max_repay_units)
            if terms.bonus is not None:
                bonus = terms.bonus
        return LiquidationQuote(None, max_repay, bonus, bool(terms is not None and terms.early))

    def _scale_requirement(self, m: float) -> None:
        adjust_ltv = bool(getattr(getattr(self.policy, "config", None), "adjust_ltv", False))
        reserves = []
        for res in self.reserves:
            cfg = self.config.reserves[res.symbol]
            changes = {"liquidation_threshold": _exact(cfg.liquidation_threshold / m)}
            if adjust_ltv:
                changes["ltv"] = _exact(cfg.ltv / m)
            reserves.append(dataclasses.replace(res, **changes))
        self.reserves = tuple(reserves)
        self._by_symbol = {res.symbol: res for res in self.reserves}
        if self._policy_reserve is not None:
            self._policy_reserve = self._by_symbol[self._policy_reserve.symbol]
        self._threshold = np.array(
            [float(r.liquidation_threshold) for r in self.reserves], dtype=np.float64
        )

    # ------------------------------------------------------------------------------- outputs
    def metrics(self) -> dict[str, float]:
        """Per-step measures of the pool (the model prefixes keys with the protocol name).

        Per reserve ``SYM`` (human units are whole tokens; values are in the pool's unit of
        account, NaN without a price):

        * ``SYM_supplied``: underlying all receipt tokens are worth, treasury included.
        * ``SYM_supplied_value``: the same, valued.
        * ``SYM_borrowed``: debt owed to the reserve.
        * ``SYM_borrowed_value``: the same, valued.
        * ``SYM_available``: underlying held by the pool (supplied and not borrowed).
        * ``SYM_utilisation``: borrowed / supplied.
        * ``SYM_borrow_rate``, ``SYM_supply_rate``: current annual rates.
        * ``SYM_reserves``: underlying the treasury's receipt tokens are worth.
        * ``SYM_bad_debt``: cumulative bad debt written off.
        * ``SYM_liquidity_index``, ``SYM_borrow_index``: the indexes (1 at the start).
        * ``SYM_price``: the oracle price the pool sees.

        Pool totals:

        * ``debt_value``: value of all borrowed assets (this pool's margin debt).
        * ``supplied_value``: value of all supplied assets.
        * ``accounts_with_debt``: registered accounts that owe anything.
        * ``accounts_hf_below_1``, ``accounts_hf_below_1_1``: registered accounts with a
          health factor below 1 and below 1.1 (accounts without a price are not counted).
        """
        out: dict[str, float] = {}
        debt_value = 0.0
        supplied_value = 0.0
        for res in self.reserves:
            s = res.symbol
            p = self._price(res)
            price = math.nan if p is None else p
            supplied = self.total_supplied_units(s) / res.unit
            borrowed = self.total_borrowed_units(s) / res.unit
            borrow_rate, supply_rate = self.rates(s)
            treasury = self.ledger.balance(self.treasury_holder, res.receipt)
            out[f"{s}_supplied"] = supplied
            out[f"{s}_supplied_value"] = supplied * price
            out[f"{s}_borrowed"] = borrowed
            out[f"{s}_borrowed_value"] = borrowed * price
            out[f"{s}_available"] = self.available_units(s) / res.unit
            out[f"{s}_utilisation"] = self._utilisation(res)
            out[f"{s}_borrow_rate"] = borrow_rate
            out[f"{s}_supply_rate"] = supply_rate
            out[f"{s}_reserves"] = (treasury * self._liquidity_index[res.index] // RAY) / res.unit
            out[f"{s}_bad_debt"] = self._bad_debt_units[res.index] / res.unit
            out[f"{s}_liquidity_index"] = self._liquidity_index[res.index] / RAY
            out[f"{s}_borrow_index"] = self._borrow_index[res.index] / RAY
            out[f"{s}_price"] = price
            debt_value += borrowed * price
            supplied_value += supplied * price
        out["debt_value"] = debt_value
        out["supplied_value"] = supplied_value
        ids = self._accounts[: self._n_accounts]
        hf, debt, *_ = self._scan(ids, reuse=True)
        out["accounts_with_debt"] = float(np.count_nonzero(debt != 0.0))
        out["accounts_hf_below_1"] = float(np.count_nonzero(hf < 1.0))
        out["accounts_hf_below_1_1"] = float(np.count_nonzero(hf < 1.1))
        return out

    _FLASH_LOAN_COLUMNS = {
        "step": "int64",
        "protocol": "object",
        "holder": "int64",
        "asset": "object",
        "amount": "int64",
        "fee": "int64",
        "repaid": "bool",
    }
    _BAD_DEBT_COLUMNS = {
        "step": "int64",
        "protocol": "object",
        "account": "int64",
        "asset": "object",
        "amount": "int64",
        "covered_by_reserves": "int64",
        "borne_by_suppliers": "int64",
    }

    @staticmethod
    def _frame(rows: list[tuple[Any, ...]], columns: Mapping[str, str]) -> pd.DataFrame:
        frame = pd.DataFrame.from_records(rows, columns=list(columns))
        return frame.astype(dict(columns))

    def liquidations_frame(self) -> pd.DataFrame:
        """Liquidations, one row each.

        Columns: step, protocol, account and liquidator (holder ids), debt_asset,
        debt_repaid (units), collateral_asset, collateral_seized (units, fee included),
        oracle_price (of the collateral), bonus_value (value seized minus value repaid, unit
        of account), protocol_fee (units of collateral), bad_debt (units of the debt asset
        written off afterwards), liquidator_received (units), received_receipt.
        """
        return self._frame(self._liquidations, LIQUIDATION_COLUMNS)

    def flash_loans_frame(self) -> pd.DataFrame:
        """Flash loans: step, protocol, holder, asset, amount, fee (units), repaid."""
        return self._frame(self._flash_loans, self._FLASH_LOAN_COLUMNS)

    def bad_debt_frame(self) -> pd.DataFrame:
        """Bad debt written off, one row per account and asset.

        Columns: step, protocol, account, asset, amount (units), covered_by_reserves and
        borne_by_suppliers (units; they add up to amount).
        """
        return self._frame(self._bad_debt_rows, self._BAD_DEBT_COLUMNS)

    # ------------------------------------------------------------------------------- batches
    # Many actions of one kind in one call (marginsim.protocols.lending_batch): each row has
    # exactly the outcome, ledger moves and journal lines of the single call made in row order,
    # at a fraction of the cost (integer valuation instead of Fraction arithmetic).
    def supply_many(self, holders: Any, symbol: str, amounts: Any) -> BatchResult:
        """:meth:`supply` for each row in order (``amounts`` may be one value for all).

        Returns:
            A :class:`~marginsim.protocols.lending_batch.BatchResult`, one entry per row.
        """
        from marginsim.protocols import lending_batch

        return lending_batch.supply_many(self, holders, symbol, amounts)

    def borrow_many(self, holders: Any, symbol: str, amounts: Any) -> BatchResult:
        """:meth:`borrow` for each row in order; see :meth:`supply_many`."""
        from marginsim.protocols import lending_batch

        return lending_batch.borrow_many(self, holders, symbol, amounts)

    def withdraw_many(self, holders: Any, symbol: str, amounts: Any) -> BatchResult:
        """:meth:`withdraw` for each row in order; see :meth:`supply_many`."""
        from marginsim.protocols import lending_batch

        return lending_batch.withdraw_many(self, holders, symbol, amounts)

    def repay_many(self, holders: Any, symbol: str, amounts: Any) -> BatchResult:
        """:meth:`repay` of each row's own debt, in order; see :meth:`supply_many`."""
        from marginsim.protocols import lending_batch

        return lending_batch.repay_many(self, holders, symbol, amounts)
