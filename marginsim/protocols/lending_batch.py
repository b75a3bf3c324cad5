"""Batch lending actions: many supplies, borrows, withdrawals or repayments in one call.

A batch is defined as the sequence of single calls it replaces: row ``i`` of
``LendingPool.borrow_many(holders, symbol, amounts)`` has exactly the outcome (executed or
refused, the refusal code and reason, units and scaled tokens moved), the ledger moves and
the journal lines of ``pool.borrow(holders[i], symbol, amounts[i])`` called after rows
``0 .. i-1``. ``tests/protocols/test_lending_batch.py`` checks this against the single calls
on random inputs.

What makes it fast is the valuation, not a change of rules. A single borrow or withdrawal
values the account with ``Fraction`` arithmetic (about 60 us); a batch reads every row's
position in one numpy gather and decides ``debt value > borrowing power`` with Python
integers: with exact prices ``p_r``, LTVs ``ltv_r`` and units ``u_r`` per reserve, the
coefficients ``p_r / u_r`` and ``p_r * ltv_r / u_r`` are scaled by the least common
multiple ``L`` of their denominators to integers ``KD_r`` and ``KC_r``, and

    sum_r debt_units_r * p_r / u_r > sum_r coll_units_r * p_r * ltv_r / u_r
    <=>  sum_r debt_units_r * KD_r > sum_r coll_units_r * KC_r        (L > 0)

which is the same exact comparison (the units are the same integers the single call rounds
to). Prices and indexes cannot change inside a batch (no lending action moves an index or
an oracle), so the coefficients are computed once per batch. Everything that depends on
earlier rows (available liquidity, the caps' totals, a holder already acted for in the
batch) is tracked row by row in order; a row whose holder already appeared, or whose
inputs are unusual (an unknown holder, a non-positive amount), is handed to the single
method, which sees the state the earlier rows left.

Ledger moves are the single calls' own ``Ledger.transfer``/``mint``/``burn`` per executed
row, in row order, so journals are identical line for line. ``Ledger.transfer_many`` is not
used: it nets a batch through a holders x assets array (O(all holders) per call), which at a
few hundred rows per step costs more than the per-row moves it would replace.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from marginsim.protocols.lending import RAY, ActionResult, Refusal

if TYPE_CHECKING:
    from marginsim.protocols.lending import LendingPool, ReserveInfo

__all__ = ["BatchResult", "borrow_many", "repay_many", "supply_many", "withdraw_many"]


@dataclasses.dataclass(frozen=True, eq=False)
class BatchResult:
    """Outcome of a batch of one kind of lending action, one entry per row, in row order.

    Attributes:
        action: ``"supply"``, ``"withdraw"``, ``"borrow"`` or ``"repay"``.
        symbol: Reserve symbol of the batch.
        holder: Acting holder of each row (int64; -1 where the input was not a holder id).
        ok: Whether each row was executed (bool).
        amount: Underlying units moved (int64, 0 when refused).
        scaled: Receipt or debt tokens minted or burned (int64, 0 when refused).
        code: Refusal code of each row (``None`` when executed).
        reason: Human-readable refusal detail of each row (``""`` when executed), worded
            as the single call words it; formatted on first access (a drained pool refuses
            thousands of borrows a step, and the model reads only the count).
    """

    action: str
    symbol: str
    holder: np.ndarray
    ok: np.ndarray
    amount: np.ndarray
    scaled: np.ndarray
    code: tuple[Refusal | None, ...]
    _reasons: tuple[str | tuple[int, int], ...] = dataclasses.field(repr=False)

    def __len__(self) -> int:
        return int(self.ok.shape[0])

    @functools.cached_property
    def reason(self) -> tuple[str, ...]:
        """Refusal detail of each row (see the class docstring)."""
        return tuple(
            r
            if isinstance(r, str)
            else f"{self.action}: {r[0]} {self.symbol} units available, amount {r[1]}"
            for r in self._reasons
        )

    @property
    def refused(self) -> int:
        """Number of refused rows."""
        return int(np.count_nonzero(~self.ok))

    def results(self) -> list[ActionResult]:
        """The rows as the :class:`ActionResult` the single calls return."""
        return [
            ActionResult(
                bool(self.ok[i]),
                self.action,
                int(self.holder[i]),
                self.symbol,
                int(self.amount[i]),
                int(self.scaled[i]),
                self.code[i],
                self.reason[i],
            )
            for i in range(len(self))
        ]


class _Rows:
    """Accumulates per-row outcomes of a batch."""

    def __init__(self, action: str, symbol: str, n: int) -> None:
        self.action, self.symbol = action, symbol
        self.holder = [-1] * n
        self.ok = [False] * n
        self.amount = [0] * n
        self.scaled = [0] * n
        self.code: list[Refusal | None] = [None] * n
        # A string, or (available, amount) of an insufficient-liquidity refusal.
        self.reason: list[str | tuple[int, int]] = [""] * n

    def done(self, i: int, holder: int, amount: int, scaled: int) -> None:
        self.holder[i], self.ok[i], self.amount[i], self.scaled[i] = holder, True, amount, scaled

    def refuse(self, i: int, holder: int, code: Refusal, reason: str | tuple[int, int]) -> None:
        self.holder[i], self.code[i], self.reason[i] = holder, code, reason

    def take(self, i: int, result: ActionResult) -> None:
        self.holder[i], self.ok[i] = result.holder, result.ok
        self.amount[i], self.scaled[i] = result.amount, result.scaled
        self.code[i], self.reason[i] = result.code, result.reason

    def result(self) -> BatchResult:
        return BatchResult(
            self.action,
            self.symbol,
            np.array(self.holder, dtype=np.int64),
            np.array(self.ok, dtype=bool),
            np.array(self.amount, dtype=np.int64),
            np.array(self.scaled, dtype=np.int64),
            tuple(self.code),
            tuple(self.reason),
        )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class _Valuation:
    """Exact integer form of ``LendingPool._values`` for one batch (see the module docstring)."""

    def __init__(self, pool: LendingPool) -> None:
        reserves = pool.reserves
        self.n = len(reserves)
        self.symbols = [r.symbol for r in reserves]
        self.priced = [False] * self.n
        self.collateral = [r.liquidation_threshold > 0 for r in reserves]
        self.li = list(pool._liquidity_index)
        self.bi = list(pool._borrow_index)
        coeff_d: list[Fraction] = [Fraction(0)] * self.n
        coeff_c: list[Fraction] = [Fraction(0)] * self.n
        for res in reserves:
            price = pool._price_exact(res)
            if price is None:
                continue
            self.priced[res.index] = True
            coeff_d[res.index] = price / res.unit
            coeff_c[res.index] = price * res.ltv / res.unit
        scale = math.lcm(*(q.denominator for q in coeff_d + coeff_c))
        self.kd = [int(q * scale) for q in coeff_d]
        self.kc = [int(q * scale) for q in coeff_c]

    def exceeds_ltv(self, coll: Sequence[int], debt: Sequence[int], need: int = -1) -> str | bool:
        """``debt value > borrowing power`` of a position, or the symbol missing a price.

        Mirrors ``_values``: a reserve counts when it holds collateral (with a threshold) or
        debt, or is ``need``; the first such reserve without a price is returned.
        """
        lhs = rhs = 0
        for r in range(self.n):
            s_coll = coll[r] if self.collateral[r] else 0
            s_debt = debt[r]
            if not s_coll and not s_debt and r != need:
                continue
            if not self.priced[r]:
                return self.symbols[r]
            if s_coll:
                rhs += (s_coll * self.li[r] // RAY) * self.kc[r]
            if s_debt:
                lhs += _ceil_div(s_debt * self.bi[r], RAY) * self.kd[r]
        return lhs > rhs


def _inputs(
    pool: LendingPool, holders: Any, symbol: Any, amounts: Any
) -> tuple[list[Any], list[Any], ReserveInfo | None]:
    """Rows as Python values; the reserve when the fast path applies to the batch at all."""
    h = np.asarray(holders).reshape(-1)
    a = np.asarray(amounts).reshape(-1)
    if a.shape[0] == 1 and h.shape[0] != 1:
        a = np.broadcast_to(a, h.shape)
    if h.shape != a.shape:
        raise ValueError(f"holders ({h.shape[0]}) and amounts ({a.shape[0]}) differ in length")
    res = pool._by_symbol.get(symbol) if isinstance(symbol, str) else None
    integral = h.dtype.kind == "i" and a.dtype.kind == "i"
    # Non-integer arrays (or an unknown reserve) go row by row through the single methods,
    # which refuse them with their own messages.
    return h.tolist(), a.tolist(), res if integral else None


def _fast_row(pool: LendingPool, holder: int, amount: int) -> bool:
    """Whether the single method's common checks (holder, amount) pass for this row."""
    return amount > 0 and 0 <= holder < pool.ledger.n_holders and holder not in pool._internal


def _fast_mask(pool: LendingPool, holders: list[int], amounts: list[int]) -> list[bool]:
    """:func:`_fast_row` of every row, in one vectorised pass."""
    h = np.array(holders, dtype=np.int64)
    a = np.array(amounts, dtype=np.int64)
    ok = (a > 0) & (h >= 0) & (h < pool.ledger.n_holders)
    ok &= ~np.isin(h, np.fromiter(pool._internal, dtype=np.int64))
    return ok.tolist()


class _Positions:
    """Scaled receipt and debt balances of the rows' holders, read in one gather each.

    Kept as flat lists of ints (no list per row): a row's lists are cut only for the rows
    that are valued, since a per-row list for thousands of refused rows costs more than
    the gather (allocations of tracked containers wake the garbage collector).
    """

    def __init__(self, pool: LendingPool, holders: list[int]) -> None:
        n_holders = pool.ledger.n_holders
        ids = np.array([h if 0 <= h < n_holders else 0 for h in holders], dtype=np.int64)
        bal = pool.ledger.balances
        self.n = pool._receipt_cols.shape[0]
        self._coll = bal[ids[:, None], pool._receipt_cols[None, :]].ravel().tolist()
        self._debt = bal[ids[:, None], pool._debt_cols[None, :]].ravel().tolist()

    def coll(self, k: int) -> list[int]:
        """Scaled receipt balances of row ``k``, per reserve (a new list)."""
        return self._coll[k * self.n : (k + 1) * self.n]

    def debt(self, k: int) -> list[int]:
        """Scaled debt balances of row ``k``, per reserve (a new list)."""
        return self._debt[k * self.n : (k + 1) * self.n]


def _one_by_one(
    rows: _Rows,
    single: Callable[[Any, Any, Any], ActionResult],
    holders: list[Any],
    symbol: Any,
    amounts: list[Any],
) -> BatchResult:
    """Every row through the pool's single method, in order (no fast path applies)."""
    for i, (h, a) in enumerate(zip(holders, amounts, strict=True)):
        rows.take(i, single(h, symbol, a))
    return rows.result()


def borrow_many(pool: LendingPool, holders: Any, symbol: str, amounts: Any) -> BatchResult:
    """Borrows in row order, each exactly as ``pool.borrow`` (see the module docstring)."""
    hl, al, res = _inputs(pool, holders, symbol, amounts)
    rows = _Rows("borrow", str(symbol), len(hl))
    if res is None or not hl:
        return _one_by_one(rows, pool.borrow, hl, symbol, al)
    ledger, r = pool.ledger, res.index
    value = _Valuation(pool)
    bi = pool._borrow_index[r]
    available = pool.available_units(symbol)
    debt_supply = ledger.supply(res.debt)
    touched: set[int] = set()
    fast = _fast_mask(pool, hl, al)
    # Rows asking more than the liquidity available at the start are refused whatever the
    # rows before them do (liquidity only falls within a batch of borrows) when nothing
    # before the liquidity check can refuse: they are worded after the loop, with the
    # liquidity left when their turn came, and their positions are never read.
    available0 = available
    plain = res.borrowable and pool.policy is None
    certain = (np.array(al, dtype=np.int64) > available0) & plain
    todo = np.flatnonzero(~certain).tolist()
    pos = _Positions(pool, [hl[i] for i in todo])
    done_rows: list[int] = []
    done_amounts: list[int] = []

    def single(i: int, h: int, a: int) -> None:
        nonlocal available, debt_supply
        result = pool.borrow(h, symbol, a)
        rows.take(i, result)
        if result.ok:
            touched.add(h)
            available = pool.available_units(symbol)
            debt_supply = ledger.supply(res.debt)
            done_rows.append(i)
            done_amounts.append(a)

    for k, i in enumerate(todo):
        h, a = hl[i], al[i]
        if h in touched or not fast[i]:
            single(i, h, a)
            continue
        if not res.borrowable:
            rows.refuse(i, h, Refusal.NOT_BORROWABLE, f"borrow: {symbol} is not borrowable")
            continue
        if pool.policy is not None and pool.policy.blocks_borrowing(pool.step):
            rows.refuse(i, h, Refusal.POLICY, "borrow: borrowing is paused by the circuit breaker")
            continue
        if a > available:
            rows.refuse(i, h, Refusal.INSUFFICIENT_LIQUIDITY, (available, a))
            continue
        if res.borrow_cap_units:
            total = _ceil_div(debt_supply * bi, RAY)
            if total + a > res.borrow_cap_units:
                rows.refuse(
                    i,
                    h,
                    Refusal.BORROW_CAP,
                    f"borrow: {symbol} debt would be {total + a} units, cap {res.borrow_cap_units}",
                )
                continue
        scaled = _ceil_div(a * RAY, bi)
        coll, after = pos.coll(k), pos.debt(k)
        after[r] += scaled
        if value.exceeds_ltv(coll, after, need=r) is not False:
            # Refused: the single method's Fraction valuation words the reason identically
            # (called directly, since calling ``borrow`` would ask the policy a second time).
            values, missing = pool._values(coll, after, need=(r,))
            if values is None:
                rows.refuse(i, h, Refusal.NO_PRICE, f"borrow: no price for {missing}")
                continue
            if values.debt > values.borrowing_power:
                rows.refuse(
                    i,
                    h,
                    Refusal.BORROWING_POWER,
                    f"borrow: debt value {float(values.debt):.12g} would exceed borrowing "
                    f"power {float(values.borrowing_power):.12g}",
                )
                continue
            # Not reached while the integer form equals the Fraction one; the latter rules.
        pool._register(h)
        ledger.transfer(pool.liquidity_holder, h, res.asset, a)
        ledger.mint(h, res.debt, scaled, reason="borrow")
        rows.done(i, h, a, scaled)
        touched.add(h)
        available -= a
        debt_supply += scaled
        done_rows.append(i)
        done_amounts.append(a)
    cert = np.flatnonzero(certain)
    if cert.size:
        # Liquidity when each certain row's turn came: the start minus earlier executions.
        taken = np.concatenate([[0], np.cumsum(np.array(done_amounts, dtype=np.int64))])
        before = np.searchsorted(np.array(done_rows, dtype=np.int64), cert)
        for j, left in zip(cert.tolist(), (available0 - taken[before]).tolist(), strict=True):
            if fast[j]:
                rows.refuse(j, hl[j], Refusal.INSUFFICIENT_LIQUIDITY, (left, al[j]))
            else:  # an id the single call refuses before looking at any state
                single(j, hl[j], al[j])
    return rows.result()


def withdraw_many(pool: LendingPool, holders: Any, symbol: str, amounts: Any) -> BatchResult:
    """Withdrawals in row order, each exactly as ``pool.withdraw``."""
    hl, al, res = _inputs(pool, holders, symbol, amounts)
    rows = _Rows("withdraw", str(symbol), len(hl))
    if res is None or not hl:
        return _one_by_one(rows, pool.withdraw, hl, symbol, al)
    ledger, r = pool.ledger, res.index
    pos = _Positions(pool, hl)
    value = _Valuation(pool)
    li = pool._liquidity_index[r]
    available = pool.available_units(symbol)
    touched: set[int] = set()

    def single(i: int, h: int, a: int) -> None:
        nonlocal available
        result = pool.withdraw(h, symbol, a)
        rows.take(i, result)
        if result.ok:
            touched.add(h)
            available = pool.available_units(symbol)

    for i, (h, a) in enumerate(zip(hl, al, strict=True)):
        if h in touched or not _fast_row(pool, h, a):
            single(i, h, a)
            continue
        c = pos.coll(i)
        have = c[r] * li // RAY
        if a > have:
            rows.refuse(
                i,
                h,
                Refusal.EXCEEDS_SUPPLY,
                f"withdraw: holder {h} has supplied {have} {symbol} units, amount {a}",
            )
            continue
        if a > available:
            rows.refuse(i, h, Refusal.INSUFFICIENT_LIQUIDITY, (available, a))
            continue
        burn = min(c[r], _ceil_div(a * RAY, li))
        debt = pos.debt(i)
        if any(debt) and res.liquidation_threshold > 0:
            after = list(c)
            after[r] -= burn
            if value.exceeds_ltv(after, debt) is not False:
                single(i, h, a)
                continue
        ledger.burn(h, res.receipt, burn, reason="withdraw")
        ledger.transfer(pool.liquidity_holder, h, res.asset, a)
        rows.done(i, h, a, burn)
        touched.add(h)
        available -= a
    return rows.result()


def supply_many(pool: LendingPool, holders: Any, symbol: str, amounts: Any) -> BatchResult:
    """Supplies in row order, each exactly as ``pool.supply``."""
    hl, al, res = _inputs(pool, holders, symbol, amounts)
    rows = _Rows("supply", str(symbol), len(hl))
    if res is None or not hl:
        return _one_by_one(rows, pool.supply, hl, symbol, al)
    ledger = pool.ledger
    li = pool._liquidity_index[res.index]
    wallet = _wallets(pool, hl, res.asset)
    receipt_supply = ledger.supply(res.receipt)
    touched: set[int] = set()

    def single(i: int, h: int, a: int) -> None:
        nonlocal receipt_supply
        result = pool.supply(h, symbol, a)
        rows.take(i, result)
        if result.ok:
            touched.add(h)
            receipt_supply = ledger.supply(res.receipt)

    for i, (h, a) in enumerate(zip(hl, al, strict=True)):
        if h in touched or not _fast_row(pool, h, a):
            single(i, h, a)
            continue
        if wallet[i] < a:
            rows.refuse(
                i,
                h,
                Refusal.INSUFFICIENT_BALANCE,
                f"supply: holder {h} has {wallet[i]} {symbol} units, amount {a}",
            )
            continue
        if res.supply_cap_units:
            total = receipt_supply * li // RAY
            if total + a > res.supply_cap_units:
                rows.refuse(
                    i,
                    h,
                    Refusal.SUPPLY_CAP,
                    f"supply: {symbol} supply would be {total + a} units, "
                    f"cap {res.supply_cap_units}",
                )
                continue
        scaled = a * RAY // li
        if scaled == 0 or scaled > pool._mint_room(res.receipt):
            single(i, h, a)
            continue
        pool._register(h)
        ledger.transfer(h, pool.liquidity_holder, res.asset, a)
        ledger.mint(h, res.receipt, scaled, reason="supply")
        rows.done(i, h, a, scaled)
        touched.add(h)
        receipt_supply += scaled
    return rows.result()


def repay_many(pool: LendingPool, holders: Any, symbol: str, amounts: Any) -> BatchResult:
    """Repayments of the holders' own debt in row order, each exactly as ``pool.repay``."""
    hl, al, res = _inputs(pool, holders, symbol, amounts)
    rows = _Rows("repay", str(symbol), len(hl))
    if res is None or not hl:
        return _one_by_one(rows, pool.repay, hl, symbol, al)
    ledger = pool.ledger
    bi = pool._borrow_index[res.index]
    wallet = _wallets(pool, hl, res.asset)
    owed_scaled = _wallets(pool, hl, res.debt)
    touched: set[int] = set()

    def single(i: int, h: int, a: int) -> None:
        result = pool.repay(h, symbol, a)
        rows.take(i, result)
        if result.ok:
            touched.add(h)

    for i, (h, a) in enumerate(zip(hl, al, strict=True)):
        if h in touched or not _fast_row(pool, h, a):
            single(i, h, a)
            continue
        scaled = owed_scaled[i]
        owed = _ceil_div(scaled * bi, RAY)
        if owed == 0:
            rows.refuse(i, h, Refusal.NO_DEBT, f"repay: account {h} owes no {symbol}")
            continue
        if a > owed:
            rows.refuse(
                i,
                h,
                Refusal.EXCEEDS_DEBT,
                f"repay: account {h} owes {owed} {symbol} units, amount {a}",
            )
            continue
        if wallet[i] < a:
            rows.refuse(
                i,
                h,
                Refusal.INSUFFICIENT_BALANCE,
                f"repay: holder {h} has {wallet[i]} {symbol} units, amount {a}",
            )
            continue
        burn = scaled if a == owed else a * RAY // bi
        if burn == 0:
            rows.refuse(i, h, Refusal.BAD_AMOUNT, f"repay: {a} units burn no debt token")
            continue
        ledger.transfer(h, pool.liquidity_holder, res.asset, a)
        ledger.burn(h, res.debt, burn, reason="repay")
        rows.done(i, h, a, burn)
        touched.add(h)
    return rows.result()


def _wallets(pool: LendingPool, holders: list[int], asset: int) -> list[int]:
    """Balances of one asset of the rows' holders (0 for ids that are not holders)."""
    n_holders = pool.ledger.n_holders
    ids = np.array([h if 0 <= h < n_holders else 0 for h in holders], dtype=np.int64)
    return pool.ledger.balances[ids, asset].tolist()
