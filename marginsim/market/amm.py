"""Constant-product AMM pools (Uniswap v2 style) with exact integer arithmetic on the ledger.

A pool's reserves are the ledger balances of its ``pool_holder`` in the base and quote assets:
there is no second copy that could drift from the ledger. Liquidity shares are the ledger
asset ``lp_asset``, minted and burned with a recorded reason. All amounts are integers in
the assets' smallest units; every rounding favours the pool (its liquidity providers) over the
caller.
"""

from __future__ import annotations

import dataclasses
import enum
import math

import numpy as np
import pandas as pd

from marginsim.ledger import InsufficientBalanceError, Ledger, LedgerError

__all__ = ["FEE_DENOMINATOR", "ConstantProductPool", "SwapResult", "SwapStatus"]

#: Fees are given in parts per million of the input amount.
FEE_DENOMINATOR = 1_000_000

_INT64_MAX = int(np.iinfo(np.int64).max)


class SwapStatus(enum.IntEnum):
    """Outcome of a swap: ``OK`` or the reason it was refused (then nothing moved)."""

    OK = 0
    NON_POSITIVE_AMOUNT = 1
    INSUFFICIENT_BALANCE = 2
    EMPTY_POOL = 3
    BELOW_MIN_OUT = 4
    ZERO_OUTPUT = 5


@dataclasses.dataclass(frozen=True)
class SwapResult:
    """What a swap did.

    Attributes:
        status: ``SwapStatus.OK`` or the refusal reason.
        side: +1 bought base with quote, -1 sold base for quote.
        amount_in: Units the holder paid in (0 when refused).
        amount_out: Units the holder received (0 when refused).
        quoted_out: What the pool formula gave for the request (also when refused, e.g. for
            ``BELOW_MIN_OUT``).
        price: Execution price in human units, quote per base, fee included; ``None`` when
            refused.
        reason: Human-readable explanation of a refusal; empty when ``OK``.
    """

    status: SwapStatus
    side: int
    amount_in: int
    amount_out: int
    quoted_out: int
    price: float | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Whether the swap executed."""
        return self.status is SwapStatus.OK


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


def _param_error(owner: str, name: str, rule: str, value: object) -> ValueError:
    return ValueError(f"The {name!r} parameter of {owner} must be {rule}. Got {value!r} instead.")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class ConstantProductPool:
    """A Uniswap-v2 constant-product pool of a base and a quote asset.

    Swap output (v2's ``getAmountOut`` with the fee in ppm): ``in_with_fee = amount_in *
    (1_000_000 - fee_ppm)``, ``out = floor(in_with_fee * reserve_out / (reserve_in *
    1_000_000 + in_with_fee))``. The whole ``amount_in`` enters the reserves, so the fee stays
    in the pool and accrues to liquidity providers, and ``k = reserve_base * reserve_quote``
    never decreases on a swap.

    Liquidity rules (documented choices):

    - First deposit (no shares outstanding): ``isqrt(base_units * quote_units)`` shares, and
      both amounts are taken in full. No minimum liquidity is locked (Uniswap locks 1000 wei
      against share-price inflation by a first depositor; no agent here does that). Tokens
      already held by ``pool_holder`` while no shares exist go to that first provider.
    - Later deposits: ``shares = min(base_units * S // R_base, quote_units * S // R_quote)``
      for supply ``S``, and the provider pays only what those shares are worth, rounded up:
      ``ceil(shares * R_base / S)`` and ``ceil(shares * R_quote / S)``. The rest of the
      offered amounts stays with the provider (unlike a raw v2 ``mint``, which keeps a
      donation; like the v2 router, which deposits the proportional part). Reserves per share
      therefore never decrease.
    - Removal: ``floor(shares * R / S)`` of each reserve; refused if either would be zero
      (v2's ``INSUFFICIENT_LIQUIDITY_BURNED``).

    Swaps that cannot execute return a :class:`SwapResult` with the reason and move nothing;
    liquidity operations that cannot execute raise and move nothing.

    Args:
        ledger: The ledger holding the reserves and LP shares.
        pool_id: Pool id (an oracle source name).
        base_asset: Ledger asset id of the base.
        quote_asset: Ledger asset id of the quote.
        lp_asset: Ledger asset id of this pool's LP share (used by no other pool).
        pool_holder: Ledger holder whose balances are the reserves.
        fee_ppm: Swap fee in parts per million of the input (3000 = 0.3%), in [0, 10^6).

    Attributes:
        step: Step stamped on swap events; the model sets it every step (-1 before).

    Examples:
        >>> from marginsim.ledger import AssetSpec, Ledger
        >>> ledger = Ledger([AssetSpec("WETH", 0), AssetSpec("USDC", 0), AssetSpec("LP", 0)])
        >>> pool = ConstantProductPool(ledger, "amm", 0, 1, 2, ledger.add_holder("amm"))
        >>> lp = ledger.add_holder("lp")
        >>> ledger.mint(lp, 0, 1000, "test"); ledger.mint(lp, 1, 2_000_000, "test")
        >>> pool.add_liquidity(lp, 1000, 2_000_000)
        44721
        >>> pool.quote_out(-1, 10)
        19743
    """

    def __init__(
        self,
        ledger: Ledger,
        pool_id: str,
        base_asset: int,
        quote_asset: int,
        lp_asset: int,
        pool_holder: int,
        fee_ppm: int = 3000,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(ledger, Ledger):
            raise _param_error(owner, "ledger", "a Ledger", ledger)
        if not isinstance(pool_id, str) or not pool_id:
            raise _param_error(owner, "pool_id", "a non-empty string", pool_id)
        n = ledger.n_assets
        for name, value in (
            ("base_asset", base_asset),
            ("quote_asset", quote_asset),
            ("lp_asset", lp_asset),
        ):
            if not _is_int(value) or not 0 <= value < n:
                raise _param_error(owner, name, f"a ledger asset id in [0, {n - 1}]", value)
        if len({int(base_asset), int(quote_asset), int(lp_asset)}) != 3:
            raise ValueError(
                f"The 'base_asset', 'quote_asset' and 'lp_asset' parameters of {owner} must be "
                f"three different assets. Got {base_asset}, {quote_asset}, {lp_asset} instead."
            )
        if not _is_int(pool_holder) or not 0 <= pool_holder < ledger.n_holders:
            raise _param_error(
                owner,
                "pool_holder",
                f"a ledger holder id in [0, {ledger.n_holders - 1}]",
                pool_holder,
            )
        if not _is_int(fee_ppm) or not 0 <= fee_ppm < FEE_DENOMINATOR:
            raise _param_error(owner, "fee_ppm", f"an int in [0, {FEE_DENOMINATOR})", fee_ppm)
        self.ledger = ledger
        self.pool_id = pool_id
        self.base_asset = int(base_asset)
        self.quote_asset = int(quote_asset)
        self.lp_asset = int(lp_asset)
        self.pool_holder = int(pool_holder)
        self.fee_ppm = int(fee_ppm)
        self.step = -1
        self._base_unit = 10 ** ledger.assets[self.base_asset].decimals
        self._quote_unit = 10 ** ledger.assets[self.quote_asset].decimals
        self._rows: dict[str, list[int | float]] = {
            "step": [],
            "holder": [],
            "side": [],
            "amount_in": [],
            "amount_out": [],
            "price": [],
        }

    # ------------------------------------------------------------------------- state
    @property
    def reserves(self) -> tuple[int, int]:
        """``(base_units, quote_units)`` held by the pool: its ledger balances."""
        balances = self.ledger.balances
        return int(balances[self.pool_holder, self.base_asset]), int(
            balances[self.pool_holder, self.quote_asset]
        )

    @property
    def k(self) -> int:
        """The invariant ``reserve_base * reserve_quote`` (exact Python int)."""
        base, quote = self.reserves
        return base * quote

    @property
    def total_shares(self) -> int:
        """LP shares outstanding: the LP asset's ledger supply."""
        return self.ledger.supply(self.lp_asset)

    def _human_price(self, base_units: int, quote_units: int) -> float:
        # Exact integer operands; Python's int true division rounds correctly.
        return (quote_units * self._base_unit) / (base_units * self._quote_unit)

    def mid_price(self) -> float | None:
        """Marginal price (fee excluded) in quote per base, human units; ``None`` if empty."""
        base, quote = self.reserves
        if base == 0 or quote == 0:
            return None
        return self._human_price(base, quote)

    def last_price(self) -> float | None:
        """Execution price of the last swap, quote per base; ``None`` before the first."""
        prices = self._rows["price"]
        return float(prices[-1]) if prices else None

    # ------------------------------------------------------------------------- quotes
    def _check_side(self, side: object) -> int:
        if not _is_int(side) or side not in (1, -1):
            raise _param_error(type(self).__name__, "side", "+1 (buy base) or -1 (sell base)", side)
        return int(side)

    def _legs(self, side: int) -> tuple[int, int, int, int]:
        """``(asset_in, asset_out, reserve_in, reserve_out)`` for a swap of ``side``."""
        base, quote = self.reserves
        if side > 0:
            return self.quote_asset, self.base_asset, quote, base
        return self.base_asset, self.quote_asset, base, quote

    def _amount_out(self, amount_in: int, reserve_in: int, reserve_out: int) -> int:
        with_fee = amount_in * (FEE_DENOMINATOR - self.fee_ppm)
        return with_fee * reserve_out // (reserve_in * FEE_DENOMINATOR + with_fee)

    def quote_out(self, side: int, amount_in: int) -> int:
        """Units a swap of ``amount_in`` would pay out now (0 if none or the pool is empty).

        Args:
            side: +1 pays quote in for base out; -1 pays base in for quote out.
            amount_in: Units of the input asset.
        """
        side = self._check_side(side)
        _, _, r_in, r_out = self._legs(side)
        if amount_in <= 0 or r_in == 0 or r_out == 0:
            return 0
        return self._amount_out(int(amount_in), r_in, r_out)

    def amount_in_for(self, side: int, amount_out: int) -> int:
        """The least input that pays out at least ``amount_out`` (v2 ``getAmountIn``, exact).

        ``ceil(amount_out * reserve_in * 10^6 / ((10^6 - fee_ppm) * (reserve_out -
        amount_out)))``; v2 adds 1 to the floor instead, which overpays by one unit when the
        division is exact. ``quote_out(side, amount_in_for(side, x)) >= x`` always holds.

        Raises:
            ValueError: If ``amount_out`` is negative, or not below the output reserve (an
                empty pool has no output to give).
        """
        side = self._check_side(side)
        if not _is_int(amount_out) or amount_out < 0:
            raise _param_error(
                "ConstantProductPool.amount_in_for", "amount_out", "an int >= 0", amount_out
            )
        if amount_out == 0:
            return 0
        _, _, r_in, r_out = self._legs(side)
        if amount_out >= r_out or r_in == 0:
            raise ValueError(
                f"pool {self.pool_id!r} cannot pay out {amount_out} units: the output reserve "
                f"is {r_out} (a constant-product pool pays out strictly less than its reserve)"
            )
        return _ceil_div(
            int(amount_out) * r_in * FEE_DENOMINATOR,
            (FEE_DENOMINATOR - self.fee_ppm) * (r_out - int(amount_out)),
        )

    def market_order_cost(self, side: int, base_units: int) -> tuple[int, int, float | None]:
        """What buying or selling ``base_units`` would cost or yield now, pool unchanged.

        Mirrors :meth:`MatchingEngine.market_order_cost`, in ledger units instead of lots,
        so a caller can compare a pool and a book alike.

        Args:
            side: +1 buy ``base_units`` of base, -1 sell them.
            base_units: Base amount in smallest units.

        Returns:
            ``(filled_base_units, quote_units, average_price)``: for a buy the quote needed
            (:meth:`amount_in_for`, fee included), for a sell the quote received
            (:meth:`quote_out`, net of the fee); the average price in quote per base (human
            units). A pool fills all or nothing: ``(0, 0, None)`` when the amount is not
            positive, a buy is not below the base reserve, a sale would yield nothing, or the
            pool is empty.
        """
        side = self._check_side(side)
        base_units = int(base_units)
        base, quote = self.reserves
        if base_units <= 0 or base == 0 or quote == 0:
            return 0, 0, None
        if side > 0:
            if base_units >= base:
                return 0, 0, None
            cost = self.amount_in_for(1, base_units)
        else:
            cost = self._amount_out(base_units, base, quote)
            if cost == 0:
                return 0, 0, None
        return base_units, cost, self._human_price(base_units, cost)

    # ------------------------------------------------------------------------- swaps
    def swap(self, holder: int, side: int, amount_in: int, min_out: int = 0) -> SwapResult:
        """Swap ``amount_in`` of the input asset for the output asset, at least ``min_out``.

        Refused, with nothing moved, when ``amount_in <= 0``, the pool is empty, the holder
        holds less than ``amount_in``, the output would be zero, or below ``min_out``.

        Args:
            holder: Ledger holder paying in and receiving out.
            side: +1 buys base with quote; -1 sells base for quote.
            amount_in: Input units (quote for a buy, base for a sale).
            min_out: Least acceptable output units (slippage limit).

        Returns:
            The :class:`SwapResult`; executed swaps are also recorded for
            :meth:`swaps_frame`.

        Raises:
            ValueError: If ``side`` is not +1 or -1, ``min_out`` is negative, a value is not
                an int, or ``holder`` is the pool itself.
            LedgerError: If ``holder`` is not a ledger holder.
        """
        side = self._check_side(side)
        owner = "ConstantProductPool.swap"
        if not _is_int(amount_in):
            raise _param_error(owner, "amount_in", "an int", amount_in)
        if not _is_int(min_out) or min_out < 0:
            raise _param_error(owner, "min_out", "an int >= 0", min_out)
        if not _is_int(holder) or holder == self.pool_holder:
            raise _param_error(owner, "holder", "a holder id other than the pool's", holder)
        amount_in, min_out, holder = int(amount_in), int(min_out), int(holder)
        asset_in, asset_out, r_in, r_out = self._legs(side)
        have = self.ledger.balance(holder, asset_in)  # also validates the holder id

        def refuse(status: SwapStatus, out: int, reason: str) -> SwapResult:
            return SwapResult(status, side, 0, 0, out, None, reason)

        if amount_in <= 0:
            return refuse(
                SwapStatus.NON_POSITIVE_AMOUNT, 0, f"amount_in must be > 0, got {amount_in}"
            )
        if r_in == 0 or r_out == 0:
            return refuse(
                SwapStatus.EMPTY_POOL, 0, f"pool {self.pool_id!r} has reserves {self.reserves}"
            )
        out = self._amount_out(amount_in, r_in, r_out)
        if have < amount_in:
            return refuse(
                SwapStatus.INSUFFICIENT_BALANCE,
                out,
                f"holder {self.ledger.holder_name(holder)!r} has {have}, needs {amount_in}",
            )
        if out == 0:
            return refuse(SwapStatus.ZERO_OUTPUT, 0, f"{amount_in} units in would pay out 0")
        if out < min_out:
            return refuse(SwapStatus.BELOW_MIN_OUT, out, f"output {out} is below min_out {min_out}")
        # Neither transfer can fail now: the holder has amount_in and out < reserve_out.
        self.ledger.transfer(holder, self.pool_holder, asset_in, amount_in)
        self.ledger.transfer(self.pool_holder, holder, asset_out, out)
        base_units, quote_units = (out, amount_in) if side > 0 else (amount_in, out)
        price = self._human_price(base_units, quote_units)
        rows = self._rows
        rows["step"].append(self.step)
        rows["holder"].append(holder)
        rows["side"].append(side)
        rows["amount_in"].append(amount_in)
        rows["amount_out"].append(out)
        rows["price"].append(price)
        return SwapResult(SwapStatus.OK, side, amount_in, out, out, price)

    def snapshot(self) -> int:
        """The number of swap rows, for :meth:`restore` (reserves live in the ledger)."""
        return len(self._rows["step"])

    def restore(self, n_rows: int) -> None:
        """Forget the swaps recorded since :meth:`snapshot` (the ledger restores reserves)."""
        for column in self._rows.values():
            del column[n_rows:]

    def swaps_frame(self) -> pd.DataFrame:
        """Executed swaps, in order.

        Columns: ``step, pool, holder, side`` (+1 bought base, -1 sold base), ``amount_in,
        amount_out`` (units of the input and output asset), ``price`` (execution price,
        quote per base, human units, fee included).
        """
        rows = self._rows
        n = len(rows["step"])
        return pd.DataFrame(
            {
                "step": np.asarray(rows["step"], dtype=np.int64),
                "pool": pd.Series([self.pool_id] * n, dtype=object),
                "holder": np.asarray(rows["holder"], dtype=np.int64),
                "side": np.asarray(rows["side"], dtype=np.int64),
                "amount_in": np.asarray(rows["amount_in"], dtype=np.int64),
                "amount_out": np.asarray(rows["amount_out"], dtype=np.int64),
                "price": np.asarray(rows["price"], dtype=np.float64),
            }
        )

    # ------------------------------------------------------------------------- liquidity
    def quote_add_liquidity(self, base_units: int, quote_units: int) -> tuple[int, int, int]:
        """What :meth:`add_liquidity` would do now: ``(shares, base_taken, quote_taken)``.

        Raises:
            ValueError: If an amount is not a positive int, or the pool holds one reserve
                without the other while shares exist.
        """
        owner = "ConstantProductPool.add_liquidity"
        for name, value in (("base_units", base_units), ("quote_units", quote_units)):
            if not _is_int(value) or value <= 0:
                raise _param_error(owner, name, "an int > 0", value)
        base_units, quote_units = int(base_units), int(quote_units)
        supply = self.total_shares
        if supply == 0:
            return math.isqrt(base_units * quote_units), base_units, quote_units
        r_base, r_quote = self.reserves
        if r_base == 0 or r_quote == 0:
            raise ValueError(
                f"pool {self.pool_id!r} has {supply} shares but reserves {self.reserves}"
            )
        shares = min(base_units * supply // r_base, quote_units * supply // r_quote)
        return (
            shares,
            _ceil_div(shares * r_base, supply),
            _ceil_div(shares * r_quote, supply),
        )

    def add_liquidity(self, holder: int, base_units: int, quote_units: int) -> int:
        """Deposit base and quote for new LP shares (rules in the class docstring).

        Args:
            holder: The provider; receives the shares.
            base_units: Most base units to deposit.
            quote_units: Most quote units to deposit.

        Nothing moves when an error is raised.

        Returns:
            Shares minted.

        Raises:
            ValueError: If the amounts are too small to mint a share, or invalid.
            InsufficientBalanceError: If the provider lacks what the shares cost.
            LedgerError: If the LP supply would overflow or the holder is unknown.
        """
        if not _is_int(holder) or holder == self.pool_holder:
            raise _param_error(
                "ConstantProductPool.add_liquidity",
                "holder",
                "a holder id other than the pool's",
                holder,
            )
        holder = int(holder)
        shares, base_taken, quote_taken = self.quote_add_liquidity(base_units, quote_units)
        if shares <= 0:
            raise ValueError(
                f"depositing {base_units} base and {quote_units} quote units into pool "
                f"{self.pool_id!r} (reserves {self.reserves}, {self.total_shares} shares) "
                f"would mint no share"
            )
        for asset, need in ((self.base_asset, base_taken), (self.quote_asset, quote_taken)):
            have = self.ledger.balance(holder, asset)
            if have < need:
                raise InsufficientBalanceError(
                    f"add_liquidity refused: holder {self.ledger.holder_name(holder)!r} has "
                    f"{have} units of {self.ledger.assets[asset].symbol}, needs {need}"
                )
        if int(self.ledger.minted[self.lp_asset]) + shares > _INT64_MAX:
            raise LedgerError(f"minting {shares} shares of pool {self.pool_id!r} would overflow")
        self.ledger.transfer(holder, self.pool_holder, self.base_asset, base_taken)
        self.ledger.transfer(holder, self.pool_holder, self.quote_asset, quote_taken)
        self.ledger.mint(holder, self.lp_asset, shares, f"LP shares of {self.pool_id}")
        return shares

    def remove_liquidity(self, holder: int, shares: int) -> tuple[int, int]:
        """Burn ``shares`` for ``floor(shares / supply)`` of each reserve.

        Nothing moves when an error is raised.

        Returns:
            ``(base_units, quote_units)`` paid to the holder.

        Raises:
            ValueError: If ``shares`` is not a positive int or would pay out zero of a
                reserve.
            InsufficientBalanceError: If the holder has fewer shares.
        """
        owner = "ConstantProductPool.remove_liquidity"
        if not _is_int(shares) or shares <= 0:
            raise _param_error(owner, "shares", "an int > 0", shares)
        if not _is_int(holder) or holder == self.pool_holder:
            raise _param_error(owner, "holder", "a holder id other than the pool's", holder)
        holder, shares = int(holder), int(shares)
        have = self.ledger.balance(holder, self.lp_asset)
        if have < shares:
            raise InsufficientBalanceError(
                f"remove_liquidity refused: holder {self.ledger.holder_name(holder)!r} has "
                f"{have} shares of pool {self.pool_id!r}, burns {shares}"
            )
        supply = self.total_shares
        r_base, r_quote = self.reserves
        base_out, quote_out = shares * r_base // supply, shares * r_quote // supply
        if base_out == 0 or quote_out == 0:
            raise ValueError(
                f"burning {shares} of {supply} shares of pool {self.pool_id!r} would pay out "
                f"{base_out} base and {quote_out} quote units; both must be positive"
            )
        self.ledger.burn(holder, self.lp_asset, shares, f"LP shares of {self.pool_id} redeemed")
        self.ledger.transfer(self.pool_holder, holder, self.base_asset, base_out)
        self.ledger.transfer(self.pool_holder, holder, self.quote_asset, quote_out)
        return base_out, quote_out

    def __repr__(self) -> str:
        base, quote = self.reserves
        return (
            f"ConstantProductPool({self.pool_id!r}, base={base}, quote={quote}, "
            f"fee_ppm={self.fee_ppm})"
        )
