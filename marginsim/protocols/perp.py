"""Perpetual-futures venue: positions, margin tiers, mark price, funding, liquidation and ADL.

Contracts trade on perp books of the shared matching engine, which matches them like spot books
but moves nothing in the ledger. The venue settles from the fills: it keeps every account's
margin, positions and cost basis in arrays (so margin checks and liquidation scans are
vectorised, numba-compiled), and all tokens it is responsible for sit in three ledger holders:
``<name>:margin`` (every unit deposited as margin), ``<name>:insurance`` (the insurance fund,
minted with reason ``insurance fund genesis`` at construction) and ``<name>:fees``. A fourth
holder, ``<name>:liquidator``, is the liquidation engine's order account; it never holds tokens.

Sources (Binance USD-M futures unless named; found with the project's search tool, dates are
the pages' own):

* Funding: Binance FAQ "Introduction to Binance Futures Funding Rates" (2020-06-09,
  binance.com/en/support/faq/360033525031) and the funding-history page: funding rate =
  premium index + clamp(interest rate - premium index, -0.05%, +0.05%); interest 0.01% per
  8-hour interval (0.03% a day); premium index = [max(0, impact bid - index) - max(0, index -
  impact ask)] / index, the impact price being the average fill price of the impact margin
  notional (IMN = 200 USDT / initial margin rate at maximum leverage: 25,000 USDT at 125x);
  the rate paid is the time-weighted average of the premium index over the interval
  (5,760 five-second samples per 8 h). We weight the i-th sample by i, as the formula in that
  FAQ does to our knowledge; the pages the search returned confirm only "time-weighted
  average", and a plain mean is a one-line change in :meth:`PerpVenue.accrue`. The capped
  funding rate is clamp(rate, -0.75 * MMR, +0.75 * MMR) with MMR the maintenance rate of the
  first tier (a Binance announcement of 2021-11-11 on OMGUSDT, republished by mobie.io,
  which raised that multiplier from its default 0.75 to 1 for one contract).
* Mark price: Binance FAQ on mark price (faq/fff6ec1b3f5845d19f1fb924644a0877, which spells
  out the formula): median of (price 1 = index * (1 + last funding rate * time until funding
  / interval), price 2 = index + moving average of (mid - index), last price); the USD-M page
  (faq/360033525071, 2020-07-03) names the same inputs (last price, bid1/ask1, funding rate,
  price index).
* Tiers: maintenance margin = notional * rate - maintenance amount (Binance trading rules
  page, "Leverage and Margin"); the BTCUSDT bracket table (notional cap, rate, amount, max
  leverage): 50k 0.4% 0 125x, 250k 0.5% 50 100x, 1M 1% 1,300 50x, 10M 2.5% 16,300 20x,
  20M 5% 266,300 10x, 50M 10% 1,266,300 5x, 100M 12.5% 2,516,300 4x, 200M 15% 5,016,300 3x,
  300M 25% 25,016,300 2x, 500M 50% 100,016,300 1x: caps, rates and amounts as read from
  Binance's web client on 2021-03-26 (github gist highfestiva/b71e76f51eed84d56c1be8ebbcc286b5),
  the maximum leverage per rate as in the copy of the table bitforex publishes. The ETHUSDT
  example of Binance's API docs (GET /fapi/v1/leverageBracket) shows the same structure
  (first bracket 75x, cap 10,000, 0.65%).
* Auto-deleveraging ranking: BitMEX "What is Auto-Deleveraging" (support.bitmex.com
  18589621443357): PnL% * effective leverage when PnL% > 0, PnL% / effective leverage
  otherwise, effective leverage = |mark value| / (mark value - bankrupt value).
* Insurance fund: Binance FAQ "Insurance Fund" (2019-09-09, faq/360033525371).

Rules (each one is tested):

Units
    Fill notional is exact: ``qty_lots * price_ticks * quote_units_per_tick_lot`` settlement
    units. Marks are float64 prices (quote per base); notional at mark is
    ``|size_lots| * mark * lot * unit``.
Positions and PnL
    Each position keeps its signed size in lots and its integer cost basis (signed sum of the
    fill notionals that opened it; entry price = cost / size). An increase adds the fill's
    notional; a reduction of ``q`` of ``|s|`` lots removes ``ceil(cost * q / |s|)`` of the
    cost, so the realised PnL (fill notional minus cost removed) is rounded *down* for the
    account; what the rounding holds back stays in the cost basis and is realised when the
    position closes, so over a position's life realised PnL is exactly its cash flow and PnL
    between accounts nets to zero exactly. A flip closes, then opens the rest at the fill price.
    Realised PnL is credited at once to the position's margin pot: the account's wallet (cross)
    or the position's isolated margin (isolated).
Margin modes
    Cross: one wallet per account; margin balance = wallet + sum of unrealised PnL; maintenance
    = sum over positions of the tier maintenance. Isolated: margin allocated per position; on
    an increase ``ceil(fill notional * IM rate) + fee`` moves from the wallet to the position
    (at most what the wallet holds), on a reduction ``floor(pot * q / |s|)`` goes back and on
    a full close all of a positive pot. The mode is per account (default
    ``config.margin_mode``) and can change only without positions.
Tiers
    Per position notional at mark: maintenance = notional * rate(tier) - amount(tier), the
    amounts computed from the table so the requirement is continuous (:func:`maintenance_amounts`);
    a notional equal to a tier's cap belongs to that tier. Initial margin rate = max(1 /
    account leverage, 1 / max leverage of the tier of the resulting notional). Liquidation when
    margin balance < maintenance (exactly at it is not liquidated).
Fees
    Maker and taker rates of the contract's ``BookSpec`` on the fill notional, per fill and
    side, ``ceil(notional * rate)`` with the rate held in parts per 10^8 rounded up (as the
    engine does), from the position's pot into ``<name>:fees``. ``BookSpec.fee_holder`` is not
    used. Auto-deleveraging trades pay no fee.
Pre-trade check (:meth:`PerpVenue.check_orders`)
    Orders are taken in batch order and each accepted order is assumed to fill in full (so
    later orders of the same account see it). An order that only reduces the position is
    always accepted. Otherwise the conservative execution price is the limit price (limit,
    IOC, post-only, modify) or, for a market order, the price of the deepest level it would
    reach on the current book after the batch's earlier market orders on the same side (the
    mark on an empty side). Notional for the tier and initial margin uses max(mark, that
    price); the order also needs its fee (``max(maker, taker)`` for limit orders, taker for
    market and IOC, maker for post-only) and its open loss ``q * max(0, side * (price -
    mark))``. Cross: margin balance - fees and open losses of the batch >= initial margin of
    all positions after the order. Isolated: wallet >= margin allocated + fee + open loss.
    Resting orders from earlier steps are not reserved: a later fill is applied as it
    happened, and the maintenance check catches the account. A MODIFY is checked as a limit
    order with the side given (pass the resting order's side).
Mark price (:meth:`PerpVenue.update_mark`)
    Binance's median of (price 1, price 2, last trade price); missing components are dropped
    (the mean when two remain). The moving average of price 2 runs over the last
    ``mark_smoothing_steps`` updates, skipping updates without a book mid (0 with none);
    a second update in the same step replaces that step's sample. No index: no mark (NaN):
    nothing is liquidated, no funding is paid and orders that need a mark are refused.
Funding (:meth:`PerpVenue.accrue`)
    Every step the premium index is sampled from the impact bid and ask (a book walk for
    ``impact_notional``; a side too thin for it is extended at its deepest price, an empty
    side contributes 0). At the end of every ``funding_interval_steps``-th step (``(step + 1)
    % interval == 0``) the rate = P + clamp(interest - P, -clamp, +clamp), capped at
    +-``funding_cap``, where P is the average of the interval's samples weighted 1, 2, ..., n
    (Binance's time-weighted average; later samples weigh more). Payment = notional at mark *
    |rate|; longs pay shorts when positive. Payers pay ``ceil``, receivers get ``floor``; the
    remainder (never negative: receivers are trimmed if float rounding ever made it so) goes to
    the insurance fund, so the venue never pays out more than it receives. Both roundings
    apply to the amount scaled by 1 -+ 1e-12, so an amount that is a whole number of units is
    not shifted by float representation error.
Liquidation (:meth:`begin_liquidations`, :meth:`apply_fills`, :meth:`finish_liquidations`)
    The liquidation engine takes over every liquidatable position: all positions of a cross
    account (its wallet split into per-position margins so that each position gets a share
    of the margin balance proportional to its notional; floors, remainder to the last), or the
    isolated position with its pot. It is closed in full (no partial steps down the tiers)
    with one IOC order per position at the worst price whose loss the insurance fund can still
    cover: its budget is the fund's balance shared pro rata to the positions' notionals.
    Whatever the book does not absorb within that price is, in :meth:`finish_liquidations`,
    auto-deleveraged at the bankruptcy price against opposite positions ranked by PnL% *
    effective leverage (profitable first; losing ones after, by PnL% / leverage, so the
    remainder can always be closed; ties by holder id). A counterparty buying pays
    ``ceil(q * price)``, one selling receives ``floor``. Then what is left of the position's
    margin goes to the insurance fund, or the fund pays the shortfall; a shortfall the fund
    cannot pay is recorded as uncovered bad debt and repaid first from later fund income.
    With ``adl = false`` the orders are market orders and an unfilled remainder stays with the
    liquidation engine (it pays and receives funding) and is offered again at the next
    :meth:`begin_liquidations`. Accounts left with a negative pot and no position are topped
    up to 0 by the insurance fund.
Refusals
    Refused actions return a result with a :class:`PerpRefusal` code and change nothing.
Invariants (:meth:`PerpVenue.check_invariants`)
    sum over accounts and liquidation records of (wallet + isolated margin - cost basis) -
    uncovered bad debt == ledger balance of ``<name>:margin`` (the left side is the sum of
    margin balances at any common mark, because positions sum to zero); the fund and fee
    counters equal their holders' balances; positions of every contract sum to zero; a flat
    position has no cost basis; cross accounts have no isolated margin.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any, Protocol

import numba
import numpy as np
import pandas as pd

from marginsim.config import MarginTierConfig, PerpConfig
from marginsim.ledger import Ledger
from marginsim.market.engine import MAX_PRICE_TICKS, BookSpec, OrderKind
from marginsim.protocols.events import (
    BAD_DEBT_COLUMNS,
    LIQUIDATION_COLUMNS,
    AccountExposures,
    LiquidationPrices,
)
from marginsim.protocols.lending import PriceFeed
from marginsim.protocols.policies import LiquidationPolicy

__all__ = [
    "LiquidatablePositions",
    "LiquidationOrders",
    "MarginTiers",
    "OrderCheck",
    "PerpBookView",
    "PerpContract",
    "PerpInvariantError",
    "PerpRefusal",
    "PerpResult",
    "PerpSnapshot",
    "PerpVenue",
    "PositionInfo",
    "bankruptcy_price",
    "liquidation_price",
    "maintenance_amounts",
]

logger = logging.getLogger(__name__)

_FEE_DENOM = 10**8
_I64 = np.int64
_BOOK_DEPTH = 1 << 30  # "every level" for l2 queries
_FUNDING_TOL = 1e-12

_K_LIMIT = int(OrderKind.LIMIT)
_K_MARKET = int(OrderKind.MARKET)
_K_IOC = int(OrderKind.IOC)
_K_POST_ONLY = int(OrderKind.POST_ONLY)
_K_CANCEL = int(OrderKind.CANCEL)
_K_MODIFY = int(OrderKind.MODIFY)


# ===================================================================================== values
class PerpBookView(Protocol):
    """What the venue reads of the matching engine (the engine itself satisfies it)."""

    def mid_price(self, instrument_id: int) -> float | None:
        """Book mid in quote per base, ``None`` when a side is empty."""
        ...

    def l2(self, instrument: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` levels per side as ``[price_ticks, qty_lots]`` rows, best first."""
        ...

    def last_price(self, instrument_id: int) -> float | None:
        """Last trade price, ``None`` before the first trade."""
        ...


@dataclasses.dataclass(frozen=True)
class PerpContract:
    """A perpetual contract of the venue: its engine instrument index and its book spec.

    Attributes:
        instrument: Index of the instrument in the matching engine.
        spec: The engine's :class:`~marginsim.market.engine.BookSpec` (``kind="perp"``, quote
            asset = the venue's settlement asset).
    """

    instrument: int
    spec: BookSpec


class PerpRefusal(enum.StrEnum):
    """Why an action was refused (the ``code`` of a :class:`PerpResult`)."""

    UNKNOWN_ACCOUNT = "unknown account"
    UNKNOWN_INSTRUMENT = "unknown instrument"
    BAD_AMOUNT = "bad amount"
    INSUFFICIENT_BALANCE = "insufficient balance"
    INSUFFICIENT_MARGIN = "below initial margin"
    NO_PRICE = "no price"
    OPEN_POSITIONS = "open positions"
    NOT_ISOLATED = "not isolated"
    VENUE_SHORT = "venue holds too little"


@dataclasses.dataclass(frozen=True)
class PerpResult:
    """Outcome of a margin action (deposit, withdraw, mode, leverage, isolated margin).

    Attributes:
        ok: Whether the action was executed.
        action: Name of the action.
        holder: Acting holder id.
        amount: Settlement units moved (0 when refused or when nothing moves).
        code: Why it was refused, ``None`` when ok.
        reason: Human-readable detail of the refusal, ``""`` when ok.
    """

    ok: bool
    action: str
    holder: int
    amount: int = 0
    code: PerpRefusal | None = None
    reason: str = ""


class OrderCheck(enum.IntEnum):
    """Reason codes of :meth:`PerpVenue.check_orders` (``OK`` = accepted)."""

    OK = 0
    BAD_ORDER = 1
    UNKNOWN_INSTRUMENT = 2
    UNKNOWN_ACCOUNT = 3
    NO_PRICE = 4
    INSUFFICIENT_MARGIN = 5


class PerpInvariantError(AssertionError):
    """The venue's accounts no longer agree with the ledger or with each other (a bug)."""


@dataclasses.dataclass(frozen=True)
class LiquidatablePositions:
    """Positions below maintenance, from one vectorised scan (aligned arrays).

    For a cross account every position gets a row, each carrying the account's margin
    balance and total maintenance; an isolated position carries its own.

    Attributes:
        account: Holder ids.
        instrument: Engine instrument indexes.
        size: Signed sizes in lots.
        margin_balance: Margin balance, settlement units (float).
        maintenance: Maintenance margin, settlement units (float).
        mark: Mark price of the contract.
    """

    account: np.ndarray
    instrument: np.ndarray
    size: np.ndarray
    margin_balance: np.ndarray
    maintenance: np.ndarray
    mark: np.ndarray

    def __len__(self) -> int:
        return int(self.account.shape[0])


@dataclasses.dataclass(frozen=True)
class LiquidationOrders:
    """Orders of the liquidation engine, to submit in this order (int64 arrays).

    Attributes:
        instrument: Engine instrument indexes.
        side: +1 buy, -1 sell.
        kind: :class:`~marginsim.market.engine.OrderKind` codes (IOC, or MARKET without ADL).
        price_ticks: Limit prices (0 for market orders).
        qty_lots: Quantities.
        account: The liquidation engine's holder, on every order.
        liquidated_accounts: Holders whose positions were taken over this call (the model
            should cancel their resting orders).
    """

    instrument: np.ndarray
    side: np.ndarray
    kind: np.ndarray
    price_ticks: np.ndarray
    qty_lots: np.ndarray
    account: np.ndarray
    liquidated_accounts: np.ndarray

    def __len__(self) -> int:
        return int(self.instrument.shape[0])


@dataclasses.dataclass(frozen=True)
class PositionInfo:
    """One position as the venue sees it.

    Attributes:
        holder: Account.
        instrument: Engine instrument index.
        size_lots: Signed size.
        cost_units: Cost basis (signed entry notional), settlement units.
        entry_price: ``cost / size`` in quote per base (NaN when flat).
        mark: Mark price (NaN without an index).
        unrealised: Unrealised PnL at mark, settlement units (float).
        realised: Cumulative realised PnL of the account in this contract, units.
        isolated_margin: Margin allocated to the position (isolated accounts), units.
        notional: Notional at mark, units (float).
        maintenance: Maintenance margin of the position, units (float).
    """

    holder: int
    instrument: int
    size_lots: int
    cost_units: int
    entry_price: float
    mark: float
    unrealised: float
    realised: int
    isolated_margin: int
    notional: float
    maintenance: float


@dataclasses.dataclass
class _Record:
    """A position taken over by the liquidation engine."""

    account: int
    k: int
    size: int
    cost: int
    margin: int
    taken_margin: int
    bankruptcy: float
    mark: float
    step: int
    closed_notional: int = 0
    fees: int = 0


@dataclasses.dataclass(frozen=True)
class PerpSnapshot:
    """The venue's own state, captured by :meth:`PerpVenue.snapshot` (balances: the ledger)."""

    n_accounts: int
    arrays: tuple[np.ndarray, ...]
    records: tuple[_Record, ...]
    mark: np.ndarray
    index: float
    basis: np.ndarray
    basis_count: int
    mark_step: int
    funding: tuple[np.ndarray, ...]
    counters: tuple[int, ...]
    events: tuple[int, ...]
    step: int


# ===================================================================================== tiers
def _exact(x: float) -> Fraction:
    """A float as the decimal its ``repr`` shows (0.005 is 1/200, not its binary value)."""
    return Fraction(repr(float(x)))


def _tier_table(
    tiers: Sequence[MarginTierConfig] | MarginTiers,
) -> MarginTiers:
    return tiers if isinstance(tiers, MarginTiers) else MarginTiers.from_config(tiers)


def maintenance_amounts(tiers: Sequence[MarginTierConfig]) -> list[float]:
    """Maintenance amount of every tier, making maintenance continuous across tiers.

    ``amount[0] = 0`` and ``amount[i] = amount[i-1] + cap[i-1] * (rate[i] - rate[i-1])``, so
    that ``cap * rate[i-1] - amount[i-1] == cap * rate[i] - amount[i]`` at every tier cap.
    Computed with exact decimals (Binance's table: 0, 50, 1,300, 16,300, ...).

    Args:
        tiers: The margin table (ascending caps, the last unbounded).

    Returns:
        Amounts in settlement units (human), one per tier.

    Examples:
        >>> from marginsim.config import MarginTierConfig as T
        >>> maintenance_amounts([T(max_notional=50_000, maintenance_rate=0.004, max_leverage=125),
        ...                      T(max_notional=0, maintenance_rate=0.005, max_leverage=100)])
        [0.0, 50.0]
    """
    amounts = [Fraction(0)]
    for prev, cur in zip(tiers[:-1], tiers[1:], strict=True):
        step = _exact(prev.max_notional) * (
            _exact(cur.maintenance_rate) - _exact(prev.maintenance_rate)
        )
        amounts.append(amounts[-1] + step)
    return [float(a) for a in amounts]


@dataclasses.dataclass(frozen=True)
class MarginTiers:
    """A margin table ready for lookups: caps, rates, maintenance amounts, leverage.

    Attributes:
        caps: Upper notional bound of each tier (``inf`` for the last), settlement units
            (human).
        rates: Maintenance rates.
        amounts: Maintenance amounts (:func:`maintenance_amounts`).
        max_leverage: Maximum leverage per tier.
    """

    caps: tuple[float, ...]
    rates: tuple[float, ...]
    amounts: tuple[float, ...]
    max_leverage: tuple[float, ...]

    @classmethod
    def from_config(cls, tiers: Sequence[MarginTierConfig]) -> MarginTiers:
        """Build the table from the scenario's tiers."""
        if not tiers:
            raise ValueError("a margin table needs at least one tier")
        caps = tuple(float(t.max_notional) for t in tiers[:-1]) + (math.inf,)
        return cls(
            caps=caps,
            rates=tuple(float(t.maintenance_rate) for t in tiers),
            amounts=tuple(maintenance_amounts(tiers)),
            max_leverage=tuple(float(t.max_leverage) for t in tiers),
        )

    def tier_for(self, notional: float) -> int:
        """Index of the tier a notional falls in (a notional equal to a cap is in that tier)."""
        for i, cap in enumerate(self.caps):
            if notional <= cap:
                return i
        return len(self.caps) - 1

    def maintenance_margin(self, notional: float) -> float:
        """``notional * rate - amount`` of the notional's tier (settlement units, human)."""
        if notional <= 0:
            return 0.0
        i = self.tier_for(notional)
        return notional * self.rates[i] - self.amounts[i]

    def initial_margin_rate(self, notional: float, leverage: float | None = None) -> float:
        """``max(1 / leverage, 1 / max leverage of the notional's tier)``."""
        rate = 1.0 / self.max_leverage[self.tier_for(notional)]
        return rate if leverage is None else max(rate, 1.0 / leverage)


def liquidation_price(
    entry_price: float,
    size: float,
    margin: float,
    tiers: Sequence[MarginTierConfig] | MarginTiers,
) -> float:
    """Mark price at which an isolated position's margin balance equals its maintenance.

    Solves ``margin + size * (P - entry) = |size| * P * rate(t) - amount(t)`` for each tier
    ``t``, ``P = (margin + amount - size * entry) / (|size| * rate - size)``, and returns the
    solution whose notional ``|size| * P`` falls in the tier it was solved with (the
    requirement is continuous, so one always does). A long is liquidated when the mark falls
    below the result, a short when it rises above.

    Args:
        entry_price: Entry price (quote per base).
        size: Signed size in base units (positive long).
        margin: Margin allocated to the position, settlement units (human).
        tiers: The margin table.

    Returns:
        The liquidation price; 0.0 for a long that no positive price liquidates.

    Raises:
        ValueError: If ``size`` is 0.

    Examples:
        >>> from marginsim.config import MarginTierConfig as T
        >>> tiers = [T(max_notional=50_000, maintenance_rate=0.004, max_leverage=125),
        ...          T(max_notional=0, maintenance_rate=0.005, max_leverage=100)]
        >>> round(liquidation_price(2000.0, 10.0, 2000.0, tiers), 6)  # 10x long
        1807.228916
    """
    if size == 0:
        raise ValueError("a position of size 0 has no liquidation price")
    table = _tier_table(tiers)
    qty = abs(size)
    for i in range(len(table.caps)):
        denom = qty * table.rates[i] - size
        price = (margin + table.amounts[i] - size * entry_price) / denom
        if price <= 0:
            continue
        if table.tier_for(qty * price) == i:
            return price
    return 0.0


def bankruptcy_price(entry_price: float, size: float, margin: float) -> float:
    """Mark price at which an isolated position's margin balance is zero.

    ``margin + size * (P - entry) = 0``, so ``P = entry - margin / size``.

    Args:
        entry_price: Entry price.
        size: Signed size in base units.
        margin: Margin of the position, settlement units (human).

    Raises:
        ValueError: If ``size`` is 0.

    Examples:
        >>> bankruptcy_price(2000.0, 10.0, 2000.0), bankruptcy_price(2000.0, -10.0, 2000.0)
        (1800.0, 2200.0)
    """
    if size == 0:
        raise ValueError("a position of size 0 has no bankruptcy price")
    return entry_price - margin / size


# ===================================================================================== kernels
@numba.njit(cache=True, nogil=True)
def _tier_of(notional: float, caps: np.ndarray) -> int:  # pragma: no cover - compiled
    last = caps.shape[0] - 1
    for i in range(last):
        if notional <= caps[i]:
            return i
    return last


@numba.njit(cache=True, nogil=True)
def _mm_of(notional: float, rates: np.ndarray, amounts: np.ndarray) -> float:  # pragma: no cover
    # Continuous and convex (rates ascend): the requirement is the largest tier line.
    best = 0.0
    for i in range(rates.shape[0]):
        v = notional * rates[i] - amounts[i]
        if v > best:
            best = v
    return best


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _liquidation_price_kernel(
    rows: np.ndarray,
    k: int,
    size: np.ndarray,
    cost: np.ndarray,
    iso: np.ndarray,
    wallet: np.ndarray,
    isolated: np.ndarray,
    marks: np.ndarray,
    vpl: np.ndarray,
    lot: float,
    unit: float,
    rates: np.ndarray,
    amounts: np.ndarray,
    caps: np.ndarray,
    lower: np.ndarray,
    out_price: np.ndarray,
    out_found: np.ndarray,
    out_margin: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Liquidation price of the position in contract ``k`` of each account in ``rows``.

    See :meth:`PerpVenue.liquidation_prices`. The arithmetic is that of the array formula
    it replaced, operation for operation (the other contracts' unrealised PnL is summed in
    numpy's row-sum order: the first term plus the rest summed from 0), so the results are
    the same to the last bit.
    """
    nk = size.shape[1]
    for i in range(rows.shape[0]):
        a = rows[i]
        if isolated[a]:
            margin = float(iso[a, k]) / unit
        else:
            first = 0.0
            rest = 0.0
            iso_sum = 0
            upnl_k = 0.0
            for j in range(nk):
                x = 0.0
                if size[a, j] != 0:
                    x = float(size[a, j]) * marks[j] * vpl[j] - float(cost[a, j])
                if j == 0:
                    first = x
                else:
                    rest += x
                if j == k:
                    upnl_k = x
                iso_sum += iso[a, j]
            upnl_other = (first + rest) - upnl_k
            margin = (float(wallet[a] + iso_sum) + upnl_other) / unit
        out_margin[i] = margin
        s = float(size[a, k]) * lot
        c = float(cost[a, k]) / unit
        q = abs(s)
        out_found[i] = False
        out_price[i] = 0.0
        for t in range(rates.shape[0]):
            p = (margin + amounts[t] - c) / (q * rates[t] - s)
            notional = q * p
            if p > 0 and notional <= caps[t] and notional > lower[t]:
                out_price[i] = p
                out_found[i] = True
                break


@numba.njit(cache=True, nogil=True)
def _scan_kernel(
    wallet: np.ndarray,
    size: np.ndarray,
    cost: np.ndarray,
    iso: np.ndarray,
    isolated: np.ndarray,
    mark: np.ndarray,
    vpl: np.ndarray,
    rates: np.ndarray,
    amounts: np.ndarray,
    pos_mb: np.ndarray,
    pos_mm: np.ndarray,
    pos_notional: np.ndarray,
    pos_flag: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Margin balance, maintenance and the liquidation flag of every position; returns count."""
    n = wallet.shape[0]
    nk = size.shape[1]
    count = 0
    for a in range(n):
        if isolated[a]:
            for k in range(nk):
                s = size[a, k]
                pos_flag[a, k] = False
                if s == 0:
                    pos_mb[a, k] = 0.0
                    pos_mm[a, k] = 0.0
                    pos_notional[a, k] = 0.0
                    continue
                value = s * mark[k] * vpl[k]
                notional = abs(value)
                mm = _mm_of(notional, rates, amounts)
                mb = iso[a, k] + value - cost[a, k]
                pos_mb[a, k] = mb
                pos_mm[a, k] = mm
                pos_notional[a, k] = notional
                if mb < mm:
                    pos_flag[a, k] = True
                    count += 1
        else:
            mb = float(wallet[a])
            mm = 0.0
            held = False
            for k in range(nk):
                s = size[a, k]
                if s == 0:
                    pos_notional[a, k] = 0.0
                    continue
                held = True
                value = s * mark[k] * vpl[k]
                notional = abs(value)
                pos_notional[a, k] = notional
                mb += value - cost[a, k]
                mm += _mm_of(notional, rates, amounts)
            flag = held and mb < mm
            for k in range(nk):
                pos_mb[a, k] = mb
                pos_mm[a, k] = mm
                pos_flag[a, k] = flag and size[a, k] != 0
                if pos_flag[a, k]:
                    count += 1
    return count


@numba.njit(cache=True, nogil=True)
def _check_kernel(
    slot: np.ndarray,
    kk: np.ndarray,
    side: np.ndarray,
    kind: np.ndarray,
    qty: np.ndarray,
    px: np.ndarray,
    fee_rate: np.ndarray,
    wallet: np.ndarray,
    size: np.ndarray,
    cost: np.ndarray,
    isolated: np.ndarray,
    inv_lev: np.ndarray,
    mark: np.ndarray,
    vpl: np.ndarray,
    caps: np.ndarray,
    inv_max_lev: np.ndarray,
    pend: np.ndarray,
    spent: np.ndarray,
    touched: np.ndarray,
    reason: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Sequential pre-trade margin check of a batch (see the module docstring)."""
    n = slot.shape[0]
    nk = size.shape[1]
    nt = 0
    for i in range(n):
        kd = kind[i]
        if kd == 4:  # cancel: frees margin, never refused here
            reason[i] = 0
            continue
        k = kk[i]
        if k < 0:
            reason[i] = 2
            continue
        d = side[i]
        q = qty[i]
        if (d != 1 and d != -1) or q <= 0 or kd < 0 or kd > 5:
            reason[i] = 1
            continue
        a = slot[i]
        if a < 0:
            reason[i] = 3
            continue
        s = size[a, k] + pend[a, k]
        if s * d < 0 and q <= abs(s):  # only reduces: always allowed
            reason[i] = 0
            pend[a, k] += d * q
            touched[nt] = a
            nt += 1
            continue
        m = mark[k]
        p = px[i]
        if not (m > 0.0) or not (p > 0.0):
            reason[i] = 4
            continue
        q_inc = q if s * d >= 0 else q - abs(s)
        s_new = s + d * q
        ref = max(m, p)
        v = vpl[k]
        n_new = abs(s_new) * ref * v
        im_rate = max(inv_lev[a, k], inv_max_lev[_tier_of(n_new, caps)])
        open_loss = q_inc * max(0.0, d * (p - m)) * v
        fee = q * p * v * fee_rate[i]
        if isolated[a]:
            need = q_inc * ref * v * im_rate + open_loss + fee
            if wallet[a] - spent[a] < need:
                reason[i] = 5
                continue
            spent[a] += need
        else:
            mb = float(wallet[a])
            im = n_new * im_rate
            priced = True
            for j in range(nk):
                sj = size[a, j]
                if sj != 0:
                    mj = mark[j]
                    if not (mj > 0.0):
                        priced = False
                        break
                    mb += sj * mj * vpl[j] - cost[a, j]
                if j != k:
                    sp = sj + pend[a, j]
                    if sp != 0:
                        mj = mark[j]
                        if not (mj > 0.0):
                            priced = False
                            break
                        nj = abs(sp) * mj * vpl[j]
                        im += nj * max(inv_lev[a, j], inv_max_lev[_tier_of(nj, caps)])
            if not priced:
                reason[i] = 4
                continue
            if mb - spent[a] - open_loss - fee < im:
                reason[i] = 5
                continue
            spent[a] += open_loss + fee
        reason[i] = 0
        pend[a, k] += d * q
        touched[nt] = a
        nt += 1
    for t in range(nt):
        a = touched[t]
        spent[a] = 0.0
        for j in range(nk):
            pend[a, j] = 0


# ===================================================================================== helpers
def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def _rate_units(rate: float) -> int:
    """A fee rate in parts per 10^8, rounded up (the engine's rule)."""
    return max(0, math.ceil(rate * _FEE_DENOM - 1e-6))


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


def _impact_price(levels: np.ndarray, notional: float, qutl: int) -> float | None:
    """Average fill price (ticks) of ``notional`` units walked through ``levels``.

    A side too thin for the notional is extended at its deepest price; ``None`` when empty.
    """
    if levels.shape[0] == 0:
        return None
    px = levels[:, 0].astype(np.float64)
    qty = levels[:, 1].astype(np.float64)
    cum = np.cumsum(px * qty * qutl)
    cum_lots = np.cumsum(qty)
    j = int(np.searchsorted(cum, notional, side="left"))
    if j >= levels.shape[0]:
        j = levels.shape[0] - 1
        before, before_lots = float(cum[j]), float(cum_lots[j])
    else:
        before = float(cum[j - 1]) if j else 0.0
        before_lots = float(cum_lots[j - 1]) if j else 0.0
    lots = before_lots + (notional - before) / (px[j] * qutl)
    return notional / (lots * qutl)


# ===================================================================================== venue
class PerpVenue:
    """A perpetual-futures venue settling its contracts' fills through the ledger.

    See the module docstring for every rule (rounding, margin modes, mark, funding,
    liquidation, insurance fund, auto-deleveraging, invariants).

    Args:
        ledger: The ledger; the settlement asset must exist.
        name: Protocol name (prefix of the venue's holders).
        config: The venue's configuration.
        books: The venue's contracts: engine instrument index and book spec.
        prices: Where the index comes from (``prices.price(config.index_oracle)``).
        engine_view: Read-only book queries (:class:`PerpBookView`; the matching engine).

    Raises:
        ValueError: If the name is empty, a spec is not a perp book settled in the
            settlement asset, or instruments repeat.

    Attributes:
        step: Current step, set by the model; stamped on event rows.
        margin_holder: Holder id of ``<name>:margin``.
        insurance_holder: Holder id of ``<name>:insurance``.
        fee_holder: Holder id of ``<name>:fees``.
        liquidator_holder: Holder id of ``<name>:liquidator`` (the liquidation engine's
            order account).
        contracts: The contracts, in configuration order.
        tiers: The margin table.
    """

    def __init__(
        self,
        ledger: Ledger,
        name: str,
        config: PerpConfig,
        books: Sequence[PerpContract],
        prices: PriceFeed,
        engine_view: PerpBookView,
    ) -> None:
        if not name:
            raise ValueError("a perp venue needs a non-empty name")
        self.ledger = ledger
        self.name = name
        self.config = config
        self.prices = prices
        self.view = engine_view
        self.step = 0
        self.settlement = ledger.asset_id(config.settlement)
        self.unit = 10 ** ledger.assets[self.settlement].decimals
        self.contracts: tuple[PerpContract, ...] = tuple(books)
        self._k_of: dict[int | str, int] = {}
        for k, c in enumerate(self.contracts):
            spec = c.spec
            if not isinstance(spec, BookSpec) or not spec.is_perp:
                raise ValueError(f"perp venue {name!r}: contract {k} is not a perp BookSpec")
            if spec.quote_asset != self.settlement:
                raise ValueError(
                    f"perp venue {name!r}: {spec.instrument_id!r} settles in asset "
                    f"{spec.quote_asset}, the venue in {config.settlement} ({self.settlement})"
                )
            if c.instrument in self._k_of or spec.instrument_id in self._k_of:
                raise ValueError(f"perp venue {name!r}: instrument {c.instrument} repeats")
            self._k_of[int(c.instrument)] = k
            self._k_of[spec.instrument_id] = k
        nk = len(self.contracts)
        self._ids = [c.spec.instrument_id for c in self.contracts]
        self._instrument = np.array([c.instrument for c in self.contracts], dtype=_I64)
        self._qutl = [int(c.spec.quote_units_per_tick_lot) for c in self.contracts]
        self._tick = np.array([c.spec.tick for c in self.contracts], dtype=np.float64)
        self._lot = np.array([c.spec.lot for c in self.contracts], dtype=np.float64)
        # Settlement units per lot per unit of price: notional = |lots| * price * vpl.
        self._vpl = self._lot * self.unit
        self._maker = [_rate_units(c.spec.maker_fee) for c in self.contracts]
        self._taker = [_rate_units(c.spec.taker_fee) for c in self.contracts]
        self._k_lookup = np.full(int(self._instrument.max()) + 1 if nk else 1, -1, dtype=_I64)
        self._k_lookup[self._instrument] = np.arange(nk)

        self.tiers = MarginTiers.from_config(config.tiers)
        u = float(self.unit)
        self._caps = np.array(self.tiers.caps, dtype=np.float64) * u
        self._rates = np.array(self.tiers.rates, dtype=np.float64)
        self._amounts = np.array(self.tiers.amounts, dtype=np.float64) * u
        self._inv_max_lev = 1.0 / np.array(self.tiers.max_leverage, dtype=np.float64)
        #: Liquidation policy (None: the static rules; see :meth:`attach_policy`).
        self.policy: LiquidationPolicy | None = None

        self.margin_holder = ledger.add_holder(f"{name}:margin")
        self.insurance_holder = ledger.add_holder(f"{name}:insurance")
        self.fee_holder = ledger.add_holder(f"{name}:fees")
        self.liquidator_holder = ledger.add_holder(f"{name}:liquidator")
        self._internal = {
            self.margin_holder,
            self.insurance_holder,
            self.fee_holder,
            self.liquidator_holder,
        }

        # Accounts are registered on first interaction; slot[holder] is the row (-1: none).
        cap = 1024
        self._n = 0
        self._holder = np.empty(cap, dtype=_I64)
        self._slot = np.full(max(ledger.n_holders, 1024), -1, dtype=_I64)
        self._wallet = np.zeros(cap, dtype=_I64)
        self._isolated = np.zeros(cap, dtype=np.bool_)
        self._size = np.zeros((cap, nk), dtype=_I64)
        self._cost = np.zeros((cap, nk), dtype=_I64)
        self._iso = np.zeros((cap, nk), dtype=_I64)
        self._realised = np.zeros((cap, nk), dtype=_I64)
        self._inv_lev = np.zeros((cap, nk), dtype=np.float64)
        self._scratch: tuple[np.ndarray, ...] | None = None
        self._records: list[_Record] = []

        window = int(config.mark_smoothing_steps)
        self._mark = np.full(nk, np.nan)
        self._index = math.nan
        self._basis = np.full((nk, window), np.nan)
        self._basis_count = 0
        self._mark_step = -1
        self._prem_sum = np.zeros(nk)
        self._prem_weight = np.zeros(nk)
        self._prem_n = np.zeros(nk, dtype=_I64)
        self._last_rate = np.zeros(nk)
        self._last_premium = np.full(nk, np.nan)

        self._insurance_units = 0
        self._fee_units = 0
        self._uncovered = 0
        self._deficits_covered = 0

        self._liquidations: list[tuple[Any, ...]] = []
        self._adl_rows: list[tuple[Any, ...]] = []
        self._funding_rows: list[tuple[Any, ...]] = []
        self._bad_debt_rows: list[tuple[Any, ...]] = []

        fund = math.floor(_exact(config.insurance_fund) * self.unit)
        if fund > 0:
            ledger.mint(self.insurance_holder, self.settlement, fund, "insurance fund genesis")
            self._insurance_units = fund

    # ------------------------------------------------------------------------------- reading
    @property
    def accounts(self) -> np.ndarray:
        """Registered account holder ids, in registration order (a copy)."""
        return self._holder[: self._n].copy()

    @property
    def insurance_fund_units(self) -> int:
        """Balance of the insurance fund, settlement units."""
        return self._insurance_units

    @property
    def fee_units(self) -> int:
        """Fees collected, settlement units."""
        return self._fee_units

    @property
    def uncovered_bad_debt_units(self) -> int:
        """Liquidation shortfall the insurance fund has not been able to pay yet."""
        return self._uncovered

    def mark_price(self, instrument: int | str) -> float | None:
        """Mark price of a contract (``None`` without an index)."""
        m = float(self._mark[self._contract(instrument)])
        return None if math.isnan(m) else m

    def last_funding_rate(self, instrument: int | str) -> float:
        """Rate of the last funding payment (0 before the first)."""
        return float(self._last_rate[self._contract(instrument)])

    def wallet_units(self, holder: int) -> int:
        """Wallet (cross margin / free balance) of an account, units (0 if unregistered)."""
        a = self._slot_of(holder)
        return 0 if a < 0 else int(self._wallet[a])

    def is_isolated(self, holder: int) -> bool:
        """Whether the account margins its positions in isolation."""
        a = self._slot_of(holder)
        return self.config.margin_mode == "isolated" if a < 0 else bool(self._isolated[a])

    def position(self, holder: int, instrument: int | str) -> PositionInfo:
        """One account's position in a contract, valued at mark."""
        k = self._contract(instrument)
        a = self._slot_of(holder)
        m = float(self._mark[k])
        if a < 0:
            return PositionInfo(
                int(holder), int(self._instrument[k]), 0, 0, math.nan, m, 0.0, 0, 0, 0.0, 0.0
            )
        s, c = int(self._size[a, k]), int(self._cost[a, k])
        value = s * m * float(self._vpl[k])
        notional = abs(value)
        return PositionInfo(
            holder=int(holder),
            instrument=int(self._instrument[k]),
            size_lots=s,
            cost_units=c,
            entry_price=c / (s * float(self._vpl[k])) if s else math.nan,
            mark=m,
            unrealised=value - c if s else 0.0,
            realised=int(self._realised[a, k]),
            isolated_margin=int(self._iso[a, k]),
            notional=notional if s else 0.0,
            maintenance=self._mm_units(notional) if s else 0.0,
        )

    def margin_balance(self, holder: int, instrument: int | str | None = None) -> float:
        """Margin balance in units (float, at mark).

        Without ``instrument``: the whole account, wallet + isolated margin + unrealised PnL.
        With it, for an isolated account: that position's isolated margin + unrealised PnL
        (a cross account's positions share the account's balance, which is returned).
        """
        a = self._slot_of(holder)
        if a < 0:
            return 0.0
        if instrument is not None and self._isolated[a]:
            k = self._contract(instrument)
            return float(self._iso[a, k]) + self._upnl(a, k)
        upnl = sum(self._upnl(a, k) for k in range(len(self.contracts)))
        return float(self._wallet[a]) + float(self._iso[a].sum()) + upnl

    def maintenance_margin(self, holder: int, instrument: int | str | None = None) -> float:
        """Maintenance margin in units: the account's total, or of one position."""
        a = self._slot_of(holder)
        if a < 0:
            return 0.0
        ks = range(len(self.contracts)) if instrument is None else [self._contract(instrument)]
        return sum(self._mm_units(self._notional(a, k)) for k in ks)

    def margin_ratio(self, holder: int, instrument: int | str | None = None) -> float:
        """Maintenance margin / margin balance (Binance's margin ratio; liquidation at >1)."""
        mb = self.margin_balance(holder, instrument)
        mm = self.maintenance_margin(holder, instrument)
        if mm == 0:
            return 0.0
        return math.inf if mb <= 0 else mm / mb

    def position_sizes(self, holders: np.ndarray, instrument: int | str) -> np.ndarray:
        """Signed position sizes in lots of many holders in one contract (0 without one)."""
        k = self._contract(instrument)
        holders = np.asarray(holders, dtype=_I64)
        inside = (holders >= 0) & (holders < self._slot.shape[0])
        slots = np.full(holders.shape[0], -1, dtype=_I64)
        slots[inside] = self._slot[holders[inside]]
        out = np.zeros(holders.shape[0], dtype=_I64)
        have = slots >= 0
        out[have] = self._size[slots[have], k]
        return out

    def margin_balances(self, holders: np.ndarray) -> np.ndarray:
        """Margin balances of many accounts at mark in one vectorised read, units (float64).

        The vector form of :meth:`margin_balance` without an instrument: wallet + isolated
        margin + unrealised PnL of every position (a contract without a mark adds no PnL);
        0 for a holder the venue does not know.
        """
        holders = np.asarray(holders, dtype=_I64).reshape(-1)
        inside = (holders >= 0) & (holders < self._slot.shape[0])
        slots = np.full(holders.shape[0], -1, dtype=_I64)
        slots[inside] = self._slot[holders[inside]]
        out = np.zeros(holders.shape[0], dtype=np.float64)
        have = np.flatnonzero(slots >= 0)
        if have.size == 0:
            return out
        rows = slots[have]
        size = self._size[rows]
        marks = np.where(np.isfinite(self._mark), self._mark, 0.0)
        upnl = np.where(
            (size != 0) & np.isfinite(self._mark),
            size.astype(np.float64) * marks * self._vpl - self._cost[rows],
            0.0,
        )
        out[have] = (
            self._wallet[rows].astype(np.float64)
            + self._iso[rows].sum(axis=1).astype(np.float64)
            + upnl.sum(axis=1)
        )
        return out

    def withdrawable_units(self, holder: int) -> int:
        """Most units :meth:`withdraw` would let ``holder`` take out now (0 when nothing).

        The same limit :meth:`withdraw` applies: the free wallet of an isolated account;
        for a cross account ``wallet + min(0, unrealised PnL) - initial margin`` (0 without
        a mark for a contract it holds).
        """
        a = self._slot_of(holder)
        if a < 0:
            return 0
        wallet = int(self._wallet[a])
        if self._isolated[a]:
            free = float(wallet)
        else:
            used = self._used_initial_margin(a)
            if used is None:
                return 0
            upnl = sum(self._upnl(a, k) for k in range(len(self.contracts)))
            free = min(float(wallet), wallet + min(0.0, upnl) - used)
        return max(0, math.floor(free))

    def liquidation_prices(self, instrument: int | str) -> LiquidationPrices:
        """Mark price at which each open position in a contract is liquidated (vectorised).

        Solves :func:`liquidation_price` for all accounts at once: an isolated position with
        its isolated margin; a cross account with its wallet, its isolated margins and the
        unrealised PnL of its other positions at the current marks (**approximation:** the
        other contracts' marks stay where they are and their maintenance is ignored). Longs
        (side +1) are liquidated at or below the price, shorts (-1) at or above; a long that
        no positive price liquidates is left out.

        The debt value is the borrowed part of the position: for a long the quote borrowed,
        entry notional minus margin (at least 0); for a short the value of the base borrowed
        at the liquidation price, ``|size| * p``. The collateral value is the margin backing
        the position (isolated margin, or the cross account's wallet, isolated margins and
        other unrealised PnL), not below 0. Settlement human units.
        """
        k = self._contract(instrument)
        mark = float(self._mark[k])
        current = mark if math.isfinite(mark) and mark > 0 else math.nan
        n = self._n
        size_lots = self._size[:n, k]
        rows = np.flatnonzero(size_lots != 0)
        if rows.size == 0:
            return LiquidationPrices.empty(current)
        u = float(self.unit)
        size = size_lots[rows].astype(np.float64) * float(self._lot[k])  # base, signed
        cost = self._cost[rows, k].astype(np.float64) / u  # signed entry notional
        qty = np.abs(size)
        caps = np.array(self.tiers.caps, dtype=np.float64)
        lower = np.concatenate([[-np.inf], caps[:-1]])
        price = np.empty(rows.size, dtype=np.float64)
        found = np.empty(rows.size, dtype=np.bool_)
        margin = np.empty(rows.size, dtype=np.float64)
        # One compiled pass: the margin behind each position (isolated margin, or the cross
        # account's wallet, isolated margins and the other contracts' unrealised PnL at
        # their marks) and the first tier whose notional range holds the solution.
        _liquidation_price_kernel(
            rows,
            k,
            self._size,
            self._cost,
            self._iso,
            self._wallet,
            self._isolated,
            np.where(np.isfinite(self._mark), self._mark, 0.0),
            self._vpl,
            float(self._lot[k]),
            u,
            np.asarray(self.tiers.rates, dtype=np.float64),
            np.asarray(self.tiers.amounts, dtype=np.float64),
            caps,
            lower,
            price,
            found,
            margin,
        )
        long_ = size > 0
        keep = found | ~long_
        debt = np.where(long_, np.maximum(cost - margin, 0.0), qty * price)
        return LiquidationPrices(
            holder=self._holder[rows][keep].copy(),
            price=price[keep],
            debt_value=debt[keep],
            side=np.where(long_[keep], 1, -1).astype(np.int64),
            current_price=current,
            collateral_value=np.maximum(margin[keep], 0.0),
        )

    @property
    def liquidation_count(self) -> int:
        """Rows of :meth:`liquidations_frame` so far."""
        return len(self._liquidations)

    def account_exposures(self) -> AccountExposures:
        """Every account with an open position, at the current marks (vectorised).

        Per account (settlement human units): ``notional`` = sum of its positions'
        ``|size| * mark``; ``equity`` = margin balance (wallet + isolated margin + unrealised
        PnL); ``debt`` = margin debt as in :meth:`metrics` (``max(0, notional - margin
        balance)`` per isolated position, per account for a cross account);
        ``maintenance`` = ``sum(position_notional * tier_rate)`` (the rate of the tier
        the notional falls in, as in the venue's ``wamm``). Accounts with a position in a
        contract without a mark are left out. One compiled scan, as :meth:`metrics`.
        """
        n = self._n
        if n == 0:
            return AccountExposures.empty()
        u = float(self.unit)
        mb, _, notional, _ = self._scan()
        sizes = self._size[:n]
        held = sizes != 0
        iso = self._isolated[:n]
        pos_notional = np.where(held, notional, 0.0)
        total = pos_notional.sum(axis=1)
        iso_debt = np.where(iso[:, None] & held, np.maximum(notional - mb, 0.0), 0.0).sum(axis=1)
        cross_mb = mb[:, 0] if mb.shape[1] else np.zeros(n)
        cross_debt = np.where(~iso & (total > 0), np.maximum(total - cross_mb, 0.0), 0.0)
        marks = np.where(np.isfinite(self._mark), self._mark, 0.0)
        upnl = np.where(held, sizes.astype(np.float64) * marks * self._vpl - self._cost[:n], 0.0)
        equity = self._wallet[:n] + self._iso[:n].sum(axis=1) + upnl.sum(axis=1)
        tier = np.searchsorted(self._caps[:-1], pos_notional, side="left")
        maintenance = np.where(held, pos_notional * self._rates[tier], 0.0).sum(axis=1)
        keep = held.any(axis=1) & np.isfinite(total)
        return AccountExposures(
            holder=self._holder[:n][keep].copy(),
            notional=total[keep] / u,
            equity=equity[keep].astype(np.float64) / u,
            debt=np.where(iso, iso_debt, cross_debt)[keep] / u,
            maintenance=maintenance[keep] / u,
        )

    def positions_sum(self) -> np.ndarray:
        """Sum of all positions (accounts and the liquidation engine) per contract, lots."""
        out = self._size[: self._n].sum(axis=0)
        for rec in self._records:
            out[rec.k] += rec.size
        return out

    # ------------------------------------------------------------------------------- internals
    def _contract(self, instrument: int | str) -> int:
        key = int(instrument) if _is_int(instrument) else instrument
        k = self._k_of.get(key)  # type: ignore[arg-type]
        if k is None:
            raise ValueError(
                f"perp venue {self.name!r} has no instrument {instrument!r}; it has {self._ids}"
            )
        return k

    def _slot_of(self, holder: Any) -> int:
        if not _is_int(holder) or not 0 <= int(holder) < self._slot.shape[0]:
            return -1
        return int(self._slot[int(holder)])

    def _upnl(self, a: int, k: int) -> float:
        s = int(self._size[a, k])
        if s == 0:
            return 0.0
        return s * float(self._mark[k]) * float(self._vpl[k]) - int(self._cost[a, k])

    def _notional(self, a: int, k: int) -> float:
        return abs(int(self._size[a, k]) * float(self._mark[k]) * float(self._vpl[k]))

    def _mm_units(self, notional: float) -> float:
        return self.tiers.maintenance_margin(notional / self.unit) * self.unit

    def _im_rate(self, a: int, k: int, notional_units: float) -> float:
        t = self.tiers.tier_for(notional_units / self.unit)
        return max(float(self._inv_lev[a, k]), float(self._inv_max_lev[t]))

    def _index_price(self) -> float | None:
        p = self.prices.price(self.config.index_oracle)
        if p is None:
            return None
        p = float(p)
        return p if math.isfinite(p) and p > 0 else None

    def _holder_problem(self, holder: Any) -> str | None:
        if not _is_int(holder) or not 0 <= int(holder) < self.ledger.n_holders:
            return f"unknown holder {holder!r}; the ledger has {self.ledger.n_holders} holders"
        if int(holder) in self._internal:
            return f"holder {holder} is an internal account of perp venue {self.name!r}"
        return None

    def _grow(self, need: int) -> None:
        cap = self._holder.shape[0]
        if need <= cap:
            return
        new = max(need, 2 * cap)

        def grown(arr: np.ndarray, fill: Any = 0) -> np.ndarray:
            out = np.full((new,) + arr.shape[1:], fill, dtype=arr.dtype)
            out[: self._n] = arr[: self._n]
            return out

        self._holder = grown(self._holder)
        self._wallet = grown(self._wallet)
        self._isolated = grown(self._isolated, False)
        self._size = grown(self._size)
        self._cost = grown(self._cost)
        self._iso = grown(self._iso)
        self._realised = grown(self._realised)
        self._inv_lev = grown(self._inv_lev, 0.0)
        self._scratch = None

    def _grow_slots(self, top: int) -> None:
        if top >= self._slot.shape[0]:
            grown = np.full(max(top + 1, 2 * self._slot.shape[0]), -1, dtype=_I64)
            grown[: self._slot.shape[0]] = self._slot
            self._slot = grown

    def _register(self, holder: int) -> int:
        self._grow_slots(holder)
        a = int(self._slot[holder])
        if a >= 0:
            return a
        self._grow(self._n + 1)
        a = self._n
        self._holder[a] = holder
        self._isolated[a] = self.config.margin_mode == "isolated"
        self._slot[holder] = a
        self._n += 1
        return a

    def register_accounts(self, holders: np.ndarray | Sequence[int]) -> None:
        """Register many holders at once (a population's block), in ascending id order.

        Registration makes accounts part of the scans; actions register their accounts
        themselves. Accounts start in ``config.margin_mode``.

        Raises:
            ValueError: If an id is not a ledger holder or is an internal holder of the venue.
        """
        ids = np.unique(np.asarray(holders, dtype=_I64))
        if ids.size == 0:
            return
        if ids[0] < 0 or ids[-1] >= self.ledger.n_holders:
            raise ValueError(
                f"holder ids must be in 0..{self.ledger.n_holders - 1}, "
                f"got {int(ids[0])}..{int(ids[-1])}"
            )
        if np.isin(ids, list(self._internal)).any():
            raise ValueError(f"internal holders of perp venue {self.name!r} cannot be accounts")
        self._grow_slots(int(ids[-1]))
        new = ids[self._slot[ids] < 0]
        need = self._n + new.size
        self._grow(need)
        self._holder[self._n : need] = new
        self._isolated[self._n : need] = self.config.margin_mode == "isolated"
        self._slot[new] = np.arange(self._n, need, dtype=_I64)
        self._n = need

    def _transfer(self, src: int, dst: int, amount: int) -> None:
        if amount <= 0:
            return
        self.ledger.transfer(src, dst, self.settlement, amount)
        for holder, sign in ((src, -1), (dst, 1)):
            if holder == self.insurance_holder:
                self._insurance_units += sign * amount
            elif holder == self.fee_holder:
                self._fee_units += sign * amount

    # ------------------------------------------------------------------------------- margin
    def deposit(self, holder: int, units: int) -> PerpResult:
        """Move ``units`` of the settlement asset from the holder's wallet into margin.

        Refused on an unknown or internal holder, a non-positive amount or an insufficient
        ledger balance.
        """

        def refuse(code: PerpRefusal, reason: str) -> PerpResult:
            h = int(holder) if _is_int(holder) else -1
            return PerpResult(False, "deposit", h, code=code, reason=f"deposit: {reason}")

        problem = self._holder_problem(holder)
        if problem:
            return refuse(PerpRefusal.UNKNOWN_ACCOUNT, problem)
        if not _is_int(units) or int(units) <= 0:
            return refuse(
                PerpRefusal.BAD_AMOUNT, f"units must be a positive integer, got {units!r}"
            )
        holder, units = int(holder), int(units)
        have = self.ledger.balance(holder, self.settlement)
        if have < units:
            return refuse(
                PerpRefusal.INSUFFICIENT_BALANCE,
                f"holder {holder} has {have} {self.config.settlement} units, amount {units}",
            )
        a = self._register(holder)
        self.ledger.transfer(holder, self.margin_holder, self.settlement, units)
        self._wallet[a] += units
        return PerpResult(True, "deposit", holder, units)

    def _used_initial_margin(self, a: int) -> float | None:
        """Initial margin of a cross account's positions at mark (``None``: no price)."""
        total = 0.0
        for k in range(len(self.contracts)):
            if self._size[a, k] == 0:
                continue
            if math.isnan(self._mark[k]):
                return None
            n = self._notional(a, k)
            total += n * self._im_rate(a, k, n)
        return total

    def withdraw(self, holder: int, units: int) -> PerpResult:
        """Move ``units`` of margin back to the holder's wallet.

        Cross accounts may withdraw at most ``wallet + min(0, unrealised PnL) - initial
        margin of their positions`` (unrealised profit is not withdrawable, as on Binance);
        isolated accounts their free wallet. Refused (nothing changes) beyond that, without a
        mark for a contract the account holds, or if the venue's margin holder held less
        (only possible while bankrupt accounts await liquidation).
        """

        def refuse(code: PerpRefusal, reason: str) -> PerpResult:
            h = int(holder) if _is_int(holder) else -1
            return PerpResult(False, "withdraw", h, code=code, reason=f"withdraw: {reason}")

        problem = self._holder_problem(holder)
        if problem:
            return refuse(PerpRefusal.UNKNOWN_ACCOUNT, problem)
        if not _is_int(units) or int(units) <= 0:
            return refuse(
                PerpRefusal.BAD_AMOUNT, f"units must be a positive integer, got {units!r}"
            )
        holder, units = int(holder), int(units)
        a = self._slot_of(holder)
        if a < 0:
            return refuse(PerpRefusal.UNKNOWN_ACCOUNT, f"holder {holder} has no margin account")
        wallet = int(self._wallet[a])
        if self._isolated[a]:
            free = float(wallet)
        else:
            used = self._used_initial_margin(a)
            if used is None:
                return refuse(PerpRefusal.NO_PRICE, "no mark price for a contract held")
            upnl = sum(self._upnl(a, k) for k in range(len(self.contracts)))
            free = min(float(wallet), wallet + min(0.0, upnl) - used)
        if units > free:
            return refuse(
                PerpRefusal.INSUFFICIENT_MARGIN,
                f"holder {holder} can withdraw at most {max(0, math.floor(free))} units, "
                f"asked {units}",
            )
        held = self.ledger.balance(self.margin_holder, self.settlement)
        if held < units:
            return refuse(PerpRefusal.VENUE_SHORT, f"the venue holds {held} units, asked {units}")
        self.ledger.transfer(self.margin_holder, holder, self.settlement, units)
        self._wallet[a] -= units
        return PerpResult(True, "withdraw", holder, units)

    def set_margin_mode(self, holder: int, mode: str) -> PerpResult:
        """Set an account's margin mode, ``"cross"`` or ``"isolated"``.

        Refused while the account holds a position or isolated margin.
        """
        problem = self._holder_problem(holder)
        h = int(holder) if _is_int(holder) else -1
        if problem:
            return PerpResult(
                False,
                "set_margin_mode",
                h,
                code=PerpRefusal.UNKNOWN_ACCOUNT,
                reason=f"set_margin_mode: {problem}",
            )
        if mode not in ("cross", "isolated"):
            return PerpResult(
                False,
                "set_margin_mode",
                h,
                code=PerpRefusal.BAD_AMOUNT,
                reason=f"set_margin_mode: mode must be 'cross' or 'isolated', got {mode!r}",
            )
        a = self._slot_of(h)
        if a >= 0 and (self._size[a].any() or self._iso[a].any()):
            return PerpResult(
                False,
                "set_margin_mode",
                h,
                code=PerpRefusal.OPEN_POSITIONS,
                reason=f"set_margin_mode: holder {h} has open positions",
            )
        a = self._register(h)
        self._isolated[a] = mode == "isolated"
        return PerpResult(True, "set_margin_mode", h)

    def set_leverage(self, holder: int, instrument: int | str, leverage: float) -> PerpResult:
        """Set the leverage an account opens a contract at (initial margin = 1 / leverage).

        The tier's maximum leverage still caps it. Refused unless ``1 <= leverage <=`` the
        first tier's maximum.
        """
        problem = self._holder_problem(holder)
        h = int(holder) if _is_int(holder) else -1
        if problem:
            return PerpResult(
                False,
                "set_leverage",
                h,
                code=PerpRefusal.UNKNOWN_ACCOUNT,
                reason=f"set_leverage: {problem}",
            )
        try:
            k = self._contract(instrument)
        except ValueError as exc:
            return PerpResult(
                False,
                "set_leverage",
                h,
                code=PerpRefusal.UNKNOWN_INSTRUMENT,
                reason=f"set_leverage: {exc}",
            )
        top = self.tiers.max_leverage[0]
        if not isinstance(leverage, int | float) or not 1 <= leverage <= top:
            return PerpResult(
                False,
                "set_leverage",
                h,
                code=PerpRefusal.BAD_AMOUNT,
                reason=f"set_leverage: leverage must be in [1, {top}], got {leverage!r}",
            )
        a = self._register(h)
        self._inv_lev[a, k] = 1.0 / float(leverage)
        return PerpResult(True, "set_leverage", h)

    def add_isolated_margin(self, holder: int, instrument: int | str, units: int) -> PerpResult:
        """Move ``units`` from an isolated account's wallet to one position's margin."""
        return self._move_isolated(holder, instrument, units, add=True)

    def remove_isolated_margin(self, holder: int, instrument: int | str, units: int) -> PerpResult:
        """Move ``units`` from a position's isolated margin back to the wallet.

        Refused if the position's margin balance would fall below its initial margin.
        """
        return self._move_isolated(holder, instrument, units, add=False)

    def _move_isolated(self, holder: Any, instrument: Any, units: Any, add: bool) -> PerpResult:
        action = "add_isolated_margin" if add else "remove_isolated_margin"
        h = int(holder) if _is_int(holder) else -1

        def refuse(code: PerpRefusal, reason: str) -> PerpResult:
            return PerpResult(False, action, h, code=code, reason=f"{action}: {reason}")

        problem = self._holder_problem(holder)
        if problem:
            return refuse(PerpRefusal.UNKNOWN_ACCOUNT, problem)
        try:
            k = self._contract(instrument)
        except ValueError as exc:
            return refuse(PerpRefusal.UNKNOWN_INSTRUMENT, str(exc))
        if not _is_int(units) or int(units) <= 0:
            return refuse(
                PerpRefusal.BAD_AMOUNT, f"units must be a positive integer, got {units!r}"
            )
        units = int(units)
        a = self._slot_of(h)
        if a < 0 or not self._isolated[a]:
            return refuse(PerpRefusal.NOT_ISOLATED, f"holder {h} is not an isolated account")
        if add:
            if units > self._wallet[a]:
                return refuse(
                    PerpRefusal.INSUFFICIENT_BALANCE,
                    f"wallet holds {int(self._wallet[a])} units, asked {units}",
                )
            self._wallet[a] -= units
            self._iso[a, k] += units
            return PerpResult(True, action, h, units)
        pot = int(self._iso[a, k])
        need = 0.0
        if self._size[a, k] != 0:
            if math.isnan(self._mark[k]):
                return refuse(PerpRefusal.NO_PRICE, "no mark price")
            n = self._notional(a, k)
            need = n * self._im_rate(a, k, n) - self._upnl(a, k)
        if units > pot or pot - units < need:
            return refuse(
                PerpRefusal.INSUFFICIENT_MARGIN,
                f"the position keeps {pot} units and needs {need:.0f}, asked {units}",
            )
        self._iso[a, k] -= units
        self._wallet[a] += units
        return PerpResult(True, action, h, units)

    # ------------------------------------------------------------------------------- mark
    @property
    def instruments(self) -> np.ndarray:
        """Engine instrument indexes of this venue's contracts."""
        return self._instrument

    def update_mark(self, step: int) -> None:
        """Recompute every contract's mark price (the model's oracle phase).

        Args:
            step: The step being run (stored as :attr:`step`).
        """
        self.step = int(step)
        index = self._index_price()
        window = self._basis.shape[1]
        if self._mark_step != self.step or self._basis_count == 0:
            self._basis_count += 1
        self._mark_step = self.step
        col = (self._basis_count - 1) % window
        interval = int(self.config.funding_interval_steps)
        frac = (interval - self.step % interval) / interval
        if index is None:
            self._index = math.nan
            self._basis[:, col] = np.nan
            self._mark[:] = np.nan
            return
        self._index = index
        last_of = getattr(self.view, "last_price", None)
        for k, c in enumerate(self.contracts):
            mid = self.view.mid_price(c.instrument)
            self._basis[k, col] = np.nan if mid is None else float(mid) - index
            samples = self._basis[k][~np.isnan(self._basis[k])]
            basis = float(samples.mean()) if samples.size else 0.0
            parts = [index * (1.0 + float(self._last_rate[k]) * frac), index + basis]
            last = last_of(c.instrument) if last_of is not None else None
            if last is not None:
                parts.append(float(last))
            self._mark[k] = float(np.median(parts))

    # ------------------------------------------------------------------------------- funding
    def premium_index(self, instrument: int | str) -> float | None:
        """Premium index of a contract now, from the impact bid/ask (``None``: no index)."""
        index = self._index_price()
        if index is None:
            return None
        return self._premium(self._contract(instrument), index)

    def _premium(self, k: int, index: float) -> float:
        c = self.contracts[k]
        bids, asks = self.view.l2(c.instrument, _BOOK_DEPTH)
        notional = float(self.config.impact_notional) * self.unit
        tick = float(self._tick[k])
        bid = _impact_price(np.asarray(bids), notional, self._qutl[k])
        ask = _impact_price(np.asarray(asks), notional, self._qutl[k])
        up = 0.0 if bid is None else max(0.0, bid * tick - index)
        down = 0.0 if ask is None else max(0.0, index - ask * tick)
        return (up - down) / index

    def funding_rate(self, premium: float) -> float:
        """Funding rate for an (averaged) premium index: P + clamp(i - P, -c, c), capped."""
        cfg = self.config
        clamp = float(cfg.funding_clamp)
        rate = premium + min(max(float(cfg.interest_rate) - premium, -clamp), clamp)
        cap = float(cfg.funding_cap)
        return min(max(rate, -cap), cap)

    def accrue(self, step: int, step_seconds: float) -> None:
        """Sample the premium index and pay funding at the end of each funding interval.

        Args:
            step: The step being run (stored as :attr:`step`).
            step_seconds: Length of the step (funding is set per interval of steps; the
                value is only validated).

        Raises:
            ValueError: If ``step_seconds`` is not positive and finite.
        """
        if not (math.isfinite(step_seconds) and step_seconds > 0):
            raise ValueError(f"step_seconds must be positive, got {step_seconds}")
        self.step = int(step)
        index = self._index_price()
        if index is not None:
            for k in range(len(self.contracts)):
                p = self._premium(k, index)
                self._prem_n[k] += 1
                w = float(self._prem_n[k])
                self._prem_sum[k] += w * p
                self._prem_weight[k] += w
                self._last_premium[k] = p
        if (self.step + 1) % int(self.config.funding_interval_steps):
            return
        for k in range(len(self.contracts)):
            if self._prem_n[k] and index is not None and not math.isnan(self._mark[k]):
                premium = float(self._prem_sum[k] / self._prem_weight[k])
                self._pay_funding(k, self.funding_rate(premium), premium, index)
        self._prem_sum[:] = 0.0
        self._prem_weight[:] = 0.0
        self._prem_n[:] = 0

    def _pay_funding(self, k: int, rate: float, premium: float, index: float) -> None:
        mark = float(self._mark[k])
        self._last_rate[k] = rate
        n = self._n
        sizes = self._size[:n, k]
        recs = [r for r in self._records if r.k == k and r.size != 0]
        all_sizes = np.concatenate([sizes, np.array([r.size for r in recs], dtype=_I64)])
        amount = np.abs(all_sizes) * (mark * float(self._vpl[k]) * abs(rate))
        payer = np.sign(all_sizes) == (1 if rate > 0 else -1)
        receiver = (all_sizes != 0) & ~payer
        # Payers round up, receivers down. The 1e-12 relative tolerance keeps an amount that
        # is a whole number of units from moving by one unit through float representation
        # error (0.0045 is not a binary fraction); the trim below still guarantees that
        # the venue never pays out more than it receives.
        pay = np.where(payer, np.ceil(amount * (1.0 - _FUNDING_TOL)), 0.0).astype(_I64)
        recv = np.where(receiver, np.floor(amount * (1.0 + _FUNDING_TOL)), 0.0).astype(_I64)
        paid, received = int(pay.sum()), int(recv.sum())
        if received > paid:  # float rounding only: trim the largest receivers
            for j in np.argsort(-recv, kind="stable"):
                cut = min(received - paid, int(recv[j]))
                recv[j] -= cut
                received -= cut
                if received <= paid:
                    break
        delta = recv - pay
        user = delta[:n]
        iso_rows = self._isolated[:n]
        self._iso[:n, k] += np.where(iso_rows, user, 0)
        self._wallet[:n] += np.where(iso_rows, 0, user)
        for rec, d in zip(recs, delta[n:].tolist(), strict=True):
            rec.margin += int(d)
        self._transfer(self.margin_holder, self.insurance_holder, paid - received)
        self._funding_rows.append(
            (self.step, self.name, self._ids[k], rate, premium, mark, index, paid, received)
        )

    # ------------------------------------------------------------------------------- orders
    def _scan_buffers(self) -> tuple[np.ndarray, ...]:
        n = self._n
        nk = len(self.contracts)
        buf = self._scratch
        if buf is None or buf[0].shape[0] < max(n, 1):
            cap = self._holder.shape[0]
            buf = (
                np.zeros((cap, nk)),
                np.zeros((cap, nk)),
                np.zeros((cap, nk)),
                np.zeros((cap, nk), dtype=np.bool_),
                np.zeros((cap, nk), dtype=_I64),
                np.zeros(cap),
            )
            self._scratch = buf
        return buf

    def _scan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = self._n
        mb, mm, notional, flag, _, _ = self._scan_buffers()
        _scan_kernel(
            self._wallet[:n],
            self._size[:n],
            self._cost[:n],
            self._iso[:n],
            self._isolated[:n],
            self._mark,
            self._vpl,
            self._rates,
            self._amounts,
            mb[:n],
            mm[:n],
            notional[:n],
            flag[:n],
        )
        return mb[:n], mm[:n], notional[:n], flag[:n]

    def check_orders(
        self,
        instrument: np.ndarray | int,
        side: np.ndarray | int,
        kind: np.ndarray | int,
        price_ticks: np.ndarray | int,
        qty_lots: np.ndarray | int,
        account: np.ndarray | int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pre-trade margin check of an order batch, in batch order (one compiled call).

        Args:
            instrument: Engine instrument index of each order.
            side: +1 buy, -1 sell.
            kind: :class:`~marginsim.market.engine.OrderKind` codes.
            price_ticks: Limit prices (ignored for market orders).
            qty_lots: Quantities (the new open quantity of a modify).
            account: Holder placing each order.

        Returns:
            ``(ok, reason)``: a bool array and :class:`OrderCheck` codes (int8). Nothing
            changes; submit only the accepted orders.
        """
        cols = np.broadcast_arrays(
            *(
                np.asarray(x, dtype=_I64)
                for x in (instrument, side, kind, price_ticks, qty_lots, account)
            )
        )
        ins, sd, kd, pt, qty, acc = (np.ascontiguousarray(c.reshape(-1)) for c in cols)
        n = ins.shape[0]
        reason = np.zeros(n, dtype=np.int8)
        if n == 0:
            return np.zeros(0, dtype=np.bool_), reason
        if not self.contracts:
            reason[:] = OrderCheck.UNKNOWN_INSTRUMENT
            return np.zeros(n, dtype=np.bool_), reason
        in_range = (ins >= 0) & (ins < self._k_lookup.shape[0])
        kk = np.where(in_range, self._k_lookup[np.where(in_range, ins, 0)], -1)
        acc_ok = (acc >= 0) & (acc < self._slot.shape[0])
        slot = np.where(acc_ok, self._slot[np.where(acc_ok, acc, 0)], -1)
        slot = np.ascontiguousarray(slot)
        kc = np.maximum(kk, 0)
        px = np.full(n, np.nan)
        limitish = (kk >= 0) & np.isin(kd, (_K_LIMIT, _K_IOC, _K_POST_ONLY, _K_MODIFY))
        px[limitish] = pt[limitish] * self._tick[kc[limitish]]
        maker = np.array(self._maker, dtype=np.float64) / _FEE_DENOM
        taker = np.array(self._taker, dtype=np.float64) / _FEE_DENOM
        fee_rate = np.where(
            kd == _K_POST_ONLY,
            maker[kc],
            np.where(
                (kd == _K_MARKET) | (kd == _K_IOC), taker[kc], np.maximum(maker[kc], taker[kc])
            ),
        )
        market = (kk >= 0) & (kd == _K_MARKET) & (qty > 0) & ((sd == 1) | (sd == -1))
        if market.any():
            self._market_prices(kk, sd, qty, market, px)
        mb, mm, notional, flag, pend, spent = self._scan_buffers()
        touched = np.empty(n, dtype=_I64)
        _check_kernel(
            slot,
            np.ascontiguousarray(kk),
            sd,
            kd,
            qty,
            px,
            fee_rate,
            self._wallet,
            self._size,
            self._cost,
            self._isolated,
            self._inv_lev,
            self._mark,
            self._vpl,
            self._caps,
            self._inv_max_lev,
            pend,
            spent,
            touched,
            reason,
        )
        return reason == 0, reason

    def _market_prices(
        self, kk: np.ndarray, sd: np.ndarray, qty: np.ndarray, market: np.ndarray, px: np.ndarray
    ) -> None:
        """Worst level each market order would reach, after the batch's earlier ones."""
        group = np.where(market, kk * 2 + (sd > 0), -1)
        for g in np.unique(group[market]).tolist():
            k, buy = divmod(int(g), 2)
            idx = np.flatnonzero(group == g)
            bids, asks = self.view.l2(int(self._instrument[k]), _BOOK_DEPTH)
            levels = np.asarray(asks if buy else bids)
            if levels.shape[0] == 0:
                px[idx] = self._mark[k]
                continue
            cum_levels = np.cumsum(levels[:, 1])
            cum_orders = np.cumsum(qty[idx])
            j = np.minimum(
                np.searchsorted(cum_levels, cum_orders, side="left"), levels.shape[0] - 1
            )
            px[idx] = levels[j, 0] * self._tick[k]

    # ------------------------------------------------------------------------------- fills
    def apply_tape(self, trades: Mapping[str, np.ndarray]) -> int:
        """Apply the rows of an engine tape (``engine.trade_arrays(start)``) of this venue.

        Rows of other instruments are skipped.

        Returns:
            Number of fills applied.
        """
        ins = np.asarray(trades["instrument"], dtype=_I64)
        mine = np.isin(ins, self._instrument)
        self.apply_fills(
            ins[mine],
            np.asarray(trades["price_ticks"])[mine],
            np.asarray(trades["qty_lots"])[mine],
            np.asarray(trades["buyer"])[mine],
            np.asarray(trades["seller"])[mine],
            np.asarray(trades["aggressor_side"])[mine],
        )
        return int(mine.sum())

    def apply_fills(
        self,
        instrument: np.ndarray,
        price_ticks: np.ndarray,
        qty_lots: np.ndarray,
        buyer: np.ndarray,
        seller: np.ndarray,
        aggressor_side: np.ndarray,
    ) -> None:
        """Settle fills of this venue's books: positions, cost basis, realised PnL and fees.

        Arrays come from ``engine.trade_arrays(start)``, only this venue's rows, in tape
        order. Unregistered traders are registered. Fills of the liquidation engine's holder
        close the positions it took over, oldest first.

        Raises:
            ValueError: If an instrument is not one of the venue's, or the liquidation engine
                trades more than it holds.
        """
        cols = [
            np.asarray(x, dtype=_I64).reshape(-1)
            for x in (instrument, price_ticks, qty_lots, buyer, seller, aggressor_side)
        ]
        if len({c.shape[0] for c in cols}) != 1:
            raise ValueError(f"fill arrays must have equal lengths, got {[c.shape for c in cols]}")
        if cols[0].shape[0] == 0:
            return
        fee_total = 0
        liq = self.liquidator_holder
        for ins, p, q, b, s, agg in zip(*(c.tolist() for c in cols), strict=True):
            k = self._k_of.get(ins)
            if k is None:
                raise ValueError(
                    f"perp venue {self.name!r}: fill on instrument {ins}, not one of "
                    f"{self._instrument.tolist()}"
                )
            notional = q * p * self._qutl[k]
            for holder, d, taker in ((b, 1, agg > 0), (s, -1, agg < 0)):
                rate = self._taker[k] if taker else self._maker[k]
                if holder == liq:
                    fee_total += self._record_fill(k, d, q, p, rate)
                    continue
                fee = _ceil_div(notional * rate, _FEE_DENOM)
                a = self._slot_of(holder)
                if a < 0:
                    if self._holder_problem(holder):
                        raise ValueError(
                            f"perp venue {self.name!r}: fill of {holder}: "
                            f"{self._holder_problem(holder)}"
                        )
                    a = self._register(int(holder))
                self._apply_trade(a, k, d, q, p, fee)
                fee_total += fee
        self._transfer(self.margin_holder, self.fee_holder, fee_total)

    def _apply_trade(
        self, a: int, k: int, d: int, q: int, p: int, fee: int, notional: int | None = None
    ) -> None:
        """One side of a trade for account row ``a``: ``d * q`` lots at ``p`` ticks.

        ``notional`` overrides ``q * p * qutl`` (auto-deleveraging at a non-tick price; it
        never flips a position).
        """
        qutl = self._qutl[k]
        isolated = bool(self._isolated[a])
        s = int(self._size[a, k])
        c = int(self._cost[a, k])
        pot = int(self._iso[a, k]) if isolated else int(self._wallet[a])
        wallet = int(self._wallet[a])
        opened = q
        if s != 0 and _sign(s) != d:
            close = min(q, abs(s))
            flow = notional if notional is not None else close * p * qutl
            removed = _ceil_div(c * close, abs(s))
            realised = -(d * flow) - removed
            # The fee is paid before isolated margin is released, so it never leaves a
            # closed position's pot negative while the wallet holds the margin.
            pot += realised - fee
            fee = 0
            self._realised[a, k] += realised
            c -= removed
            s += d * close
            opened = q - close
            if isolated and pot > 0:
                release = pot if s == 0 else pot * close // (abs(s) + close)
                pot -= release
                wallet += release
        if opened:
            if notional is not None:
                raise ValueError("an auto-deleveraging trade cannot open a position")
            flow = opened * p * qutl
            s += d * opened
            c += d * flow
            if isolated:
                rate = self._im_rate(a, k, abs(s) * p * qutl)
                alloc = min(math.ceil(flow * rate) + fee, max(wallet, 0))
                wallet -= alloc
                pot += alloc
            pot -= fee
        self._size[a, k] = s
        self._cost[a, k] = c
        if isolated:
            self._iso[a, k] = pot
            self._wallet[a] = wallet
        else:
            self._wallet[a] = pot

    def _record_fill(self, k: int, d: int, q: int, p: int, rate: int) -> int:
        """Allocate a liquidation-engine fill to its records, oldest first; returns the fee."""
        qutl = self._qutl[k]
        fee_total = 0
        for rec in self._records:
            if q == 0:
                break
            if rec.k != k or rec.size == 0 or _sign(rec.size) == d:
                continue
            close = min(q, abs(rec.size))
            flow = close * p * qutl
            fee = _ceil_div(flow * rate, _FEE_DENOM)
            self._close_record(rec, close, flow, fee)
            fee_total += fee
            q -= close
        if q:
            raise ValueError(
                f"perp venue {self.name!r}: the liquidation engine traded {q} lots of "
                f"{self._ids[k]} more than it holds"
            )
        return fee_total

    @staticmethod
    def _close_record(rec: _Record, close: int, flow: int, fee: int) -> None:
        d = -_sign(rec.size)
        removed = _ceil_div(rec.cost * close, abs(rec.size))
        rec.margin += -(d * flow) - removed - fee
        rec.cost -= removed
        rec.size += d * close
        rec.closed_notional += flow
        rec.fees += fee

    # ------------------------------------------------------------------------------- liquidation
    def liquidatable(self) -> LiquidatablePositions:
        """Positions whose margin balance is below maintenance (one compiled scan).

        Accounts without a mark for a contract they hold are never liquidatable.
        """
        mb, mm, _, flag = self._scan()
        rows, ks = np.nonzero(flag)
        return LiquidatablePositions(
            account=self._holder[rows].copy(),
            instrument=self._instrument[ks],
            size=self._size[rows, ks],
            margin_balance=mb[rows, ks],
            maintenance=mm[rows, ks],
            mark=self._mark[ks],
        )

    def begin_liquidations(self, step: int) -> LiquidationOrders:
        """Take over every liquidatable position and return the orders that close them.

        The model submits the orders (in this order) to the engine, applies the resulting
        fills with :meth:`apply_fills`, then calls :meth:`finish_liquidations`. Positions
        still held by the liquidation engine from earlier rounds (``adl = false``) get orders
        too.

        Args:
            step: The step being run (stored as :attr:`step`).
        """
        self.step = int(step)
        if self.policy is not None and self.policy.paused(self.step):
            return self._liquidation_orders_none()
        found = self.liquidatable()
        taken: list[int] = []
        last = -1
        for holder, ins in zip(found.account.tolist(), found.instrument.tolist(), strict=True):
            a = int(self._slot[holder])
            if self._isolated[a]:
                self._take_over(a, [self._k_of[ins]], int(self._iso[a, self._k_of[ins]]))
            elif holder != last:
                ks = [k for k in range(len(self.contracts)) if self._size[a, k] != 0]
                self._take_over(a, ks, int(self._wallet[a]))
            if holder != last:
                taken.append(holder)
                last = holder
        return self._liquidation_orders(np.array(taken, dtype=_I64))

    def _liquidation_orders_none(self) -> LiquidationOrders:
        empty = np.zeros(0, dtype=_I64)
        return LiquidationOrders(empty, empty, empty, empty, empty, empty, empty)

    # ------------------------------------------------------------------------------- policy
    def attach_policy(self, policy: LiquidationPolicy | None) -> None:
        """Use ``policy`` (``None``: the static rules); it watches the first contract's mark."""
        self.policy = policy

    def update_policy(self, step: int) -> None:
        """Phase 2 hook (after :meth:`update_mark`): the policy observes the mark price.

        With dynamic margin the maintenance margin of every tier (rate and amount) is
        multiplied by the policy's requirement multiplier ``m``: ``mm = m * (notional *
        rate - amount)``. Initial margin rates do not change (the config keeps ``m * rate``
        below them). A no-op without a policy.
        """
        policy = self.policy
        if policy is None:
            return
        mark = float(self._mark[0]) if len(self._mark) else math.nan
        before = policy.requirement_scale
        policy.observe(step, None if math.isnan(mark) else mark)
        m = policy.requirement_scale
        if m != before:
            base = MarginTiers.from_config(self.config.tiers)
            self.tiers = dataclasses.replace(
                base,
                rates=tuple(r * m for r in base.rates),
                amounts=tuple(x * m for x in base.amounts),
            )
            self._rates = np.array(self.tiers.rates, dtype=np.float64)
            self._amounts = np.array(self.tiers.amounts, dtype=np.float64) * float(self.unit)

    def _take_over(self, a: int, ks: list[int], margin: int) -> None:
        """Move positions of account row ``a`` and their margin to the liquidation engine."""
        holder = int(self._holder[a])
        upnl = [self._upnl(a, k) for k in ks]
        notional = [self._notional(a, k) for k in ks]
        equity = margin + sum(upnl)
        total = sum(notional)
        shares = []
        for j in range(len(ks) - 1):
            shares.append(math.floor(equity * notional[j] / total - upnl[j]))
        shares.append(margin - sum(shares))
        for k, m in zip(ks, shares, strict=True):
            s, c = int(self._size[a, k]), int(self._cost[a, k])
            vpl = float(self._vpl[k])
            self._records.append(
                _Record(
                    account=holder,
                    k=k,
                    size=s,
                    cost=c,
                    margin=m,
                    taken_margin=m,
                    bankruptcy=(c - m) / (s * vpl),
                    mark=float(self._mark[k]),
                    step=self.step,
                )
            )
            self._size[a, k] = 0
            self._cost[a, k] = 0
            if self._isolated[a]:
                self._iso[a, k] = 0
        if not self._isolated[a]:
            self._wallet[a] = 0

    def _liquidation_orders(self, taken: np.ndarray) -> LiquidationOrders:
        open_recs = [r for r in self._records if r.size != 0]
        notional = [abs(r.size) * float(self._mark[r.k]) * float(self._vpl[r.k]) for r in open_recs]
        notional = [0.0 if math.isnan(x) else x for x in notional]
        total = sum(notional)
        fund = max(self._insurance_units - self._uncovered, 0)
        out: list[tuple[int, int, int, int, int]] = []
        for rec, n in zip(open_recs, notional, strict=True):
            k = rec.k
            d = -_sign(rec.size)
            if not self.config.adl:
                out.append((int(self._instrument[k]), d, _K_MARKET, 0, abs(rec.size)))
                continue
            budget = math.floor(fund * n / total) if total > 0 else 0
            fee = self._taker[k] / _FEE_DENOM
            vpl = float(self._vpl[k])
            # Worst price at which closing leaves a loss the budget covers (fee included).
            limit = (rec.cost - rec.margin - budget) / (rec.size * vpl * (1.0 + d * fee))
            tick = float(self._tick[k])
            if d < 0:
                ticks = max(1, math.ceil(limit / tick - 1e-9))
            else:
                ticks = min(math.floor(limit / tick + 1e-9), MAX_PRICE_TICKS)
                if ticks < 1:
                    continue
            out.append((int(self._instrument[k]), d, _K_IOC, ticks, abs(rec.size)))
        cols = np.array(out, dtype=_I64).reshape(-1, 5)
        return LiquidationOrders(
            instrument=cols[:, 0].copy(),
            side=cols[:, 1].copy(),
            kind=cols[:, 2].copy(),
            price_ticks=cols[:, 3].copy(),
            qty_lots=cols[:, 4].copy(),
            account=np.full(cols.shape[0], self.liquidator_holder, dtype=_I64),
            liquidated_accounts=taken,
        )

    def finish_liquidations(self, step: int) -> int:
        """Auto-deleverage what the book did not take, settle margins with the insurance fund.

        For every position held by the liquidation engine: the unfilled remainder is
        auto-deleveraged at the bankruptcy price (``adl = true``; otherwise it waits for
        the next round), then a closed position's remaining margin goes to the insurance
        fund or the fund pays its shortfall, and a ``liquidations`` row is recorded.
        Accounts left with negative margin and no position are then topped up by the fund,
        and uncovered bad debt is repaid from it.

        Args:
            step: The step being run (stored as :attr:`step`).

        Returns:
            Number of taken-over positions settled.
        """
        self.step = int(step)
        settled = 0
        for rec in list(self._records):
            if rec.size != 0 and self.config.adl:
                self._deleverage(rec)
            if rec.size == 0:
                self._settle(rec)
                self._records.remove(rec)
                settled += 1
        self._cover_deficits()
        self._repay_uncovered()
        return settled

    def _deleverage(self, rec: _Record) -> None:
        """Close the record's remainder at its bankruptcy price against ranked positions.

        Accounts' opposite positions come first, in rank order; if the remainder is larger
        (only when another taken-over position holds the opposite side), the two records
        close against each other at this record's bankruptcy price.
        """
        k = rec.k
        n = self._n
        sizes = self._size[:n, k]
        want = -_sign(rec.size)  # counterparties hold the opposite sign
        rows = np.flatnonzero(np.sign(sizes) == want)
        price = max(rec.bankruptcy, float(self._tick[k]))
        vpl = float(self._vpl[k])
        d_rec = -_sign(rec.size)
        if rows.size:
            score = self._adl_scores(k, rows, rec.bankruptcy)
            order = np.lexsort((self._holder[rows], -score))
            for j in order.tolist():
                if rec.size == 0:
                    break
                a = int(rows[j])
                close = min(abs(rec.size), abs(int(self._size[a, k])))
                exact = close * price * vpl
                d_cp = -d_rec
                # The counterparty pays the rounding: it buys for ceil, sells for floor.
                flow = math.ceil(exact) if d_cp > 0 else math.floor(exact)
                self._apply_trade(a, k, d_cp, close, 0, 0, notional=flow)
                self._close_record(rec, close, flow, 0)
                self._adl_rows.append(
                    (
                        self.step,
                        self.name,
                        self._ids[k],
                        rec.account,
                        int(self._holder[a]),
                        close * float(self._lot[k]),
                        close,
                        price,
                        float(score[j]),
                    )
                )
        for other in self._records:
            if rec.size == 0:
                break
            if other is rec or other.k != k or _sign(other.size) != want:
                continue
            close = min(abs(rec.size), abs(other.size))
            flow = round(close * price * vpl)
            self._close_record(other, close, flow, 0)
            self._close_record(rec, close, flow, 0)
            self._adl_rows.append(
                (
                    self.step,
                    self.name,
                    self._ids[k],
                    rec.account,
                    self.liquidator_holder,
                    close * float(self._lot[k]),
                    close,
                    price,
                    math.nan,
                )
            )
        if rec.size != 0:  # pragma: no cover - positions sum to zero, so this cannot happen
            raise PerpInvariantError(
                f"{self.name}: no opposite position left to deleverage {rec.size} lots of "
                f"{self._ids[k]}"
            )

    def _adl_scores(self, k: int, rows: np.ndarray, fallback_mark: float) -> np.ndarray:
        """Ranking of positions ``rows`` of contract ``k``: PnL% * leverage (BitMEX)."""
        mark = float(self._mark[k])
        priced = not math.isnan(mark)
        if not priced:
            mark = fallback_mark
        vpl = float(self._vpl[k])
        s = self._size[rows, k].astype(np.float64)
        cost = self._cost[rows, k].astype(np.float64)
        upnl = s * mark * vpl - cost
        pnl_pct = np.where(cost != 0, upnl / np.where(cost != 0, np.abs(cost), 1.0), 0.0)
        if priced:
            margin_bal = self._scan()[0][rows, k]
        else:
            iso = self._isolated[rows]
            margin_bal = np.where(iso, self._iso[rows, k], self._wallet[rows]) + upnl
        notional = np.abs(s) * mark * vpl
        with np.errstate(divide="ignore", invalid="ignore"):
            lev = np.where(margin_bal > 0, notional / margin_bal, np.inf)
            score = np.where(pnl_pct > 0, pnl_pct * lev, pnl_pct / lev)
        return np.nan_to_num(score, nan=0.0, posinf=np.finfo(np.float64).max)

    def _settle(self, rec: _Record) -> None:
        net = rec.margin
        surplus = max(net, 0)
        shortfall = max(-net, 0)
        self._transfer(self.margin_holder, self.insurance_holder, surplus)
        paid = min(shortfall, self._insurance_units)
        self._transfer(self.insurance_holder, self.margin_holder, paid)
        self._uncovered += shortfall - paid
        if shortfall > 0:
            self._bad_debt_rows.append(
                (
                    self.step,
                    self.name,
                    rec.account,
                    self.config.settlement,
                    shortfall,
                    paid,
                    shortfall - paid,
                )
            )
        self._liquidations.append(
            (
                self.step,
                self.name,
                rec.account,
                self.liquidator_holder,
                self._ids[rec.k],
                rec.closed_notional,
                self.config.settlement,
                max(rec.taken_margin, 0),
                rec.mark,
                (surplus - shortfall) / self.unit,
                rec.fees,
                shortfall,
                surplus,
                False,
            )
        )

    def _cover_deficits(self) -> None:
        n = self._n
        if n == 0 or self._insurance_units <= 0:
            return
        flat = ~self._size[:n].any(axis=1)
        cross = flat & ~self._isolated[:n] & (self._wallet[:n] < 0)
        for a in np.flatnonzero(cross).tolist():
            pay = min(-int(self._wallet[a]), self._insurance_units)
            self._transfer(self.insurance_holder, self.margin_holder, pay)
            self._wallet[a] += pay
            self._deficits_covered += pay
            self._record_covered_deficit(a, pay)
        rows, ks = np.nonzero((self._iso[:n] < 0) & (self._size[:n] == 0))
        for a, k in zip(rows.tolist(), ks.tolist(), strict=True):
            pay = min(-int(self._iso[a, k]), self._insurance_units)
            self._transfer(self.insurance_holder, self.margin_holder, pay)
            self._iso[a, k] += pay
            self._deficits_covered += pay
            self._record_covered_deficit(a, pay)

    def _record_covered_deficit(self, slot: int, pay: int) -> None:
        """A ``bad_debt`` row for a deficit the insurance fund paid (bad debt it covered).

        A deficit the fund cannot pay yet stays on the account (a negative margin balance)
        and is recorded when the fund pays it.
        """
        if pay > 0:
            holder = int(self._holder[slot])
            self._bad_debt_rows.append(
                (self.step, self.name, holder, self.config.settlement, pay, pay, 0)
            )

    def _repay_uncovered(self) -> None:
        pay = min(self._uncovered, self._insurance_units)
        if pay > 0:
            self._transfer(self.insurance_holder, self.margin_holder, pay)
            self._uncovered -= pay

    # ------------------------------------------------------------------------------- state
    _ARRAYS = ("_holder", "_wallet", "_isolated", "_size", "_cost", "_iso", "_realised", "_inv_lev")

    def snapshot(self) -> PerpSnapshot:
        """Capture the venue's own state (accounts, records, mark, funding, event lengths)."""
        n = self._n
        return PerpSnapshot(
            n_accounts=n,
            arrays=tuple(getattr(self, name)[:n].copy() for name in self._ARRAYS),
            records=tuple(dataclasses.replace(r) for r in self._records),
            mark=self._mark.copy(),
            index=self._index,
            basis=self._basis.copy(),
            basis_count=self._basis_count,
            mark_step=self._mark_step,
            funding=(
                self._prem_sum.copy(),
                self._prem_weight.copy(),
                self._prem_n.copy(),
                self._last_rate.copy(),
                self._last_premium.copy(),
            ),
            counters=(
                self._insurance_units,
                self._fee_units,
                self._uncovered,
                self._deficits_covered,
            ),
            events=(
                len(self._liquidations),
                len(self._adl_rows),
                len(self._funding_rows),
                len(self._bad_debt_rows),
            ),
            step=self.step,
        )

    def restore(self, snap: PerpSnapshot) -> None:
        """Return to a state captured by :meth:`snapshot` (balances are the ledger's job)."""
        n = snap.n_accounts
        if self._n > n:
            self._slot[self._holder[n : self._n]] = -1
        for name, arr in zip(self._ARRAYS, snap.arrays, strict=True):
            target = getattr(self, name)
            target[:n] = arr
            target[n : self._n] = 0
        self._n = n
        self._records = [dataclasses.replace(r) for r in snap.records]
        self._mark = snap.mark.copy()
        self._index = snap.index
        self._basis = snap.basis.copy()
        self._basis_count = snap.basis_count
        self._mark_step = snap.mark_step
        (self._prem_sum, self._prem_weight, self._prem_n, self._last_rate, self._last_premium) = (
            x.copy() for x in snap.funding
        )
        (self._insurance_units, self._fee_units, self._uncovered, self._deficits_covered) = (
            snap.counters
        )
        del self._liquidations[snap.events[0] :]
        del self._adl_rows[snap.events[1] :]
        del self._funding_rows[snap.events[2] :]
        del self._bad_debt_rows[snap.events[3] :]
        self.step = snap.step

    def check_invariants(self) -> None:
        """Verify the venue's accounts against the ledger and against each other.

        Raises:
            PerpInvariantError: Naming the first violation (see the module docstring).
        """
        n = self._n
        sizes = self.positions_sum()
        for k in range(len(self.contracts)):
            if sizes[k] != 0:
                raise PerpInvariantError(
                    f"{self.name}: positions in {self._ids[k]} sum to {int(sizes[k])} lots, not 0"
                )
        size, cost = self._size[:n], self._cost[:n]
        bad = np.argwhere((size == 0) & (cost != 0))
        if bad.size:
            a, k = (int(x) for x in bad[0])
            raise PerpInvariantError(
                f"{self.name}: holder {int(self._holder[a])} is flat in {self._ids[k]} "
                f"with cost basis {int(cost[a, k])}"
            )
        bad = np.argwhere(size * np.sign(cost) < 0)
        if bad.size:
            a, k = (int(x) for x in bad[0])
            raise PerpInvariantError(
                f"{self.name}: holder {int(self._holder[a])} has size {int(size[a, k])} and "
                f"cost basis {int(cost[a, k])} of opposite signs in {self._ids[k]}"
            )
        cross_iso = np.flatnonzero(~self._isolated[:n] & self._iso[:n].any(axis=1))
        if cross_iso.size:
            raise PerpInvariantError(
                f"{self.name}: cross account {int(self._holder[cross_iso[0]])} holds isolated "
                "margin"
            )
        claims = (
            int(self._wallet[:n].sum(dtype=object))
            + int(self._iso[:n].sum(dtype=object))
            - int(cost.sum(dtype=object))
            + sum(r.margin - r.cost for r in self._records)
            - self._uncovered
        )
        held = self.ledger.balance(self.margin_holder, self.settlement)
        if claims != held:
            raise PerpInvariantError(
                f"{self.name}: accounts claim {claims} units (wallets + isolated margin - cost "
                f"basis - uncovered bad debt) but {self.name}:margin holds {held}"
            )
        for holder, counter, what in (
            (self.insurance_holder, self._insurance_units, "insurance fund"),
            (self.fee_holder, self._fee_units, "fees"),
        ):
            have = self.ledger.balance(holder, self.settlement)
            if have != counter:
                raise PerpInvariantError(
                    f"{self.name}: {what} counter is {counter} units, the ledger holds {have}"
                )

    # ------------------------------------------------------------------------------- outputs
    def metrics(self) -> dict[str, float]:
        """Per-step measures of the venue (the model prefixes keys with the venue name).

        Per contract ``ID`` (base in human units, money in settlement human units):

        * ``ID_open_interest_long``, ``ID_open_interest_short``: sum of long / of short
          positions (the liquidation engine's included), base units.
        * ``ID_long_short_account_ratio``: accounts long / accounts short (NaN with none short).
        * ``ID_funding_rate``: rate of the last funding payment.
        * ``ID_premium``: last sampled premium index.
        * ``ID_mark``: mark price (NaN without an index).

        Venue totals:

        * ``insurance_fund``: insurance fund balance.
        * ``fees``: fees collected.
        * ``uncovered_bad_debt``: shortfall the fund has not paid.
        * ``margin_debt``: sum over positions of max(0, notional - margin balance): per
          account for cross accounts, per position for isolated ones (GLOSSARY market-wide
          measures).
        * ``accounts_liquidatable``: accounts with a position below maintenance.
        * ``wamm``: notional-weighted maintenance rate of the positions' tiers (NaN without
          positions).
        * ``open_notional``: notional of all account positions at mark.
        * ``deficits_covered``: cumulative amount the fund paid to bring accounts left with
          negative margin and no position back to zero.
        """
        u = float(self.unit)
        n = self._n
        out: dict[str, float] = {}
        sizes = self._size[:n]
        rec_long = np.zeros(len(self.contracts))
        rec_short = np.zeros(len(self.contracts))
        for r in self._records:
            if r.size > 0:
                rec_long[r.k] += r.size
            else:
                rec_short[r.k] -= r.size
        for k, ins in enumerate(self._ids):
            col = sizes[:, k]
            lot = float(self._lot[k])
            longs = int(np.count_nonzero(col > 0))
            shorts = int(np.count_nonzero(col < 0))
            out[f"{ins}_open_interest_long"] = float(col[col > 0].sum() + rec_long[k]) * lot
            out[f"{ins}_open_interest_short"] = float(-col[col < 0].sum() + rec_short[k]) * lot
            out[f"{ins}_long_short_account_ratio"] = longs / shorts if shorts else math.nan
            out[f"{ins}_funding_rate"] = float(self._last_rate[k])
            out[f"{ins}_premium"] = float(self._last_premium[k])
            out[f"{ins}_mark"] = float(self._mark[k])
        out["insurance_fund"] = self._insurance_units / u
        out["fees"] = self._fee_units / u
        out["uncovered_bad_debt"] = self._uncovered / u
        mb, _, notional, flag = self._scan()
        iso = self._isolated[:n]
        iso_debt = np.where(iso[:, None] & (sizes != 0), np.maximum(notional - mb, 0.0), 0.0)
        cross_total = notional.sum(axis=1)
        cross_mb = mb[:, 0] if mb.shape[1] else np.zeros(n)
        cross_debt = np.where(
            ~iso & (cross_total > 0), np.maximum(cross_total - cross_mb, 0.0), 0.0
        )
        out["margin_debt"] = float(np.nansum(iso_debt) + np.nansum(cross_debt)) / u
        out["accounts_liquidatable"] = float(np.count_nonzero(flag.any(axis=1)))
        held = (sizes != 0) & ~np.isnan(notional)
        weights = notional[held]
        if weights.size:
            tier = np.searchsorted(self._caps[:-1], weights, side="left")
            out["wamm"] = float((weights * self._rates[tier]).sum() / weights.sum())
        else:
            out["wamm"] = math.nan
        out["open_notional"] = float(weights.sum()) / u
        out["deficits_covered"] = self._deficits_covered / u
        return out

    ADL_COLUMNS = {
        "step": "int64",
        "protocol": "object",
        "instrument": "object",
        "account": "int64",
        "counterparty": "int64",
        "qty": "float64",
        "qty_lots": "int64",
        "price": "float64",
        "rank_score": "float64",
    }
    FUNDING_COLUMNS = {
        "step": "int64",
        "protocol": "object",
        "instrument": "object",
        "rate": "float64",
        "premium": "float64",
        "mark": "float64",
        "index": "float64",
        "paid": "int64",
        "received": "int64",
    }

    @staticmethod
    def _frame(rows: list[tuple[Any, ...]], columns: Mapping[str, str]) -> pd.DataFrame:
        frame = pd.DataFrame.from_records(rows, columns=list(columns))
        return frame.astype(dict(columns))

    def liquidations_frame(self) -> pd.DataFrame:
        """Liquidated positions, one row each, with the lending pool's columns.

        Mapping: step (settlement), protocol (venue name), account, liquidator (the
        liquidation engine's holder), debt_asset (contract id), debt_repaid (notional closed,
        settlement units: book fills plus ADL), collateral_asset (settlement symbol),
        collateral_seized (margin taken over, units, 0 if negative), oracle_price (mark at
        takeover), bonus_value (the insurance fund's net gain, settlement human units,
        negative when it paid), protocol_fee (taker fees of the liquidation fills, units),
        bad_debt (shortfall below bankruptcy, units, paid by the fund or left uncovered),
        liquidator_received (surplus paid into the insurance fund, units), received_receipt
        (always false).
        """
        return self._frame(self._liquidations, LIQUIDATION_COLUMNS)

    def bad_debt_units(self) -> int:
        """Cumulative bad debt in settlement units: the sum of the ``bad_debt`` rows' amounts."""
        return sum(int(row[4]) for row in self._bad_debt_rows)

    def bad_debt_frame(self) -> pd.DataFrame:
        """Bad debt: liquidation shortfalls and deficits of flat accounts, in settlement units.

        Columns: step, protocol, account (holder), asset (the settlement token), amount,
        covered (paid by the insurance fund at once), uncovered (left to the fund's later
        income, :meth:`metrics` ``uncovered_bad_debt``, or to auto-deleveraging).
        """
        return self._frame(self._bad_debt_rows, BAD_DEBT_COLUMNS)

    def adl_frame(self) -> pd.DataFrame:
        """Auto-deleveraging trades, one row per closed counterparty position part.

        Columns: step, protocol, instrument, account (liquidated), counterparty, qty (base
        units), qty_lots, price (bankruptcy price), rank_score.
        """
        return self._frame(self._adl_rows, self.ADL_COLUMNS)

    def funding_frame(self) -> pd.DataFrame:
        """Funding payments, one row per contract and funding time.

        Columns: step, protocol, instrument, rate, premium (interval average), mark, index,
        paid (units paid by payers), received (units received by receivers; paid - received
        went to the insurance fund).
        """
        return self._frame(self._funding_rows, self.FUNDING_COLUMNS)

    # ------------------------------------------------------------------------------- batches
    def deposit_many(self, holders: Any, units: Any) -> np.ndarray:
        """:meth:`deposit` for each row in order; returns whether each row was executed.

        Exactly the sequence of single deposits (outcome, ledger moves, account slots in
        registration order), with the checks done in one gather when the rows' holders are
        distinct, valid and the amounts positive integers (a population's block of deposits);
        otherwise row by row through :meth:`deposit`. The ledger moves are the single
        deposits' own per-row transfers (``Ledger.transfer_many`` nets through an array of all
        holders, which costs more than a few hundred rows of transfers).

        Args:
            holders: Depositing holder ids.
            units: Settlement-asset units of each row (or one value for all).

        Returns:
            bool array, one entry per row.
        """
        h = np.asarray(holders).reshape(-1)
        u = np.broadcast_to(np.asarray(units), h.shape)
        fast = (
            h.size > 0
            and h.dtype.kind in "iu"
            and u.dtype.kind in "iu"
            and bool((u > 0).all())
            and int(h.min()) >= 0
            and int(h.max()) < self.ledger.n_holders
            and not np.isin(h, list(self._internal)).any()
            and np.unique(h).size == h.size
        )
        if not fast:
            return np.array(
                [self.deposit(x, y).ok for x, y in zip(h.tolist(), u.tolist(), strict=True)],
                dtype=bool,
            )
        h = h.astype(np.int64)
        u = u.astype(np.int64)
        # Distinct holders: each row's wallet is what it was before the batch.
        ok = self.ledger.balances[h, self.settlement] >= u
        moved_h, moved_u = h[ok], u[ok]
        slots = np.array([self._register(x) for x in moved_h.tolist()], dtype=_I64)
        for x, y in zip(moved_h.tolist(), moved_u.tolist(), strict=True):
            self.ledger.transfer(x, self.margin_holder, self.settlement, y)
        if slots.size:
            self._wallet[slots] += moved_u
        return ok
