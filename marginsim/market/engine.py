"""The matching engine: price-time order books of every instrument, settled through the ledger.

One :class:`MatchingEngine` hosts one order book per instrument (:class:`BookSpec`). Prices
are integer ticks, quantities integer lots. Orders arrive as batches of arrays in activation
order (:meth:`MatchingEngine.submit_batch`, one numba-compiled call per batch) or one at a
time (:meth:`MatchingEngine.submit_limit` and friends, which are batches of one). The engine
returns results and appends every fill to its trade tape; it never calls an agent.

Rules (every one is exercised by ``tests/market``):

Matching
    Price-time priority. A trade executes at the resting order's price. Order kinds:
    ``LIMIT`` (good till cancelled: takes what crosses, rests the rest), ``MARKET`` (takes
    at any price, never rests), ``IOC`` (takes up to its limit, the rest expires),
    ``POST_ONLY`` (rejected with ``WOULD_CROSS`` if it would take anything), ``CANCEL`` and
    ``MODIFY``. A modify sets the new price and the new *open* quantity of a resting order:
    the same price with a quantity not larger than the open one shrinks the order in place
    and keeps its time priority; a larger quantity or another price cancels the order and
    re-enters it, with the same order id, at the back of its new level (it may trade on the
    way in, like a limit order; a post-only order stays post-only and is rejected with
    ``WOULD_CROSS`` instead). Cancels and modifies must name the order's instrument
    (``UNKNOWN_ORDER`` otherwise) and come from its account (``NOT_OWNER`` otherwise).

Self-trade prevention (``self_trade_policy``)
    When an incoming order meets a resting order of the same account:
    ``CANCEL_RESTING`` (default) cancels the resting order (its escrow goes back) and
    matching continues; ``CANCEL_INCOMING`` cancels the rest of the incoming order;
    ``CANCEL_BOTH`` does both. Fills made before stand. When the incoming order is cancelled
    its status is ``SELF_TRADE`` (accepted, remainder cancelled), never a reject.

Funds, spot books
    A resting order holds in ``escrow_holder`` exactly what it can still need: a sell
    ``open_lots * base_units_per_lot`` of base; a buy ``open_lots * price_ticks *
    quote_units_per_tick_lot`` of quote plus the maker fee that notional can still add
    (fee rule below). The reservation shrinks with fills and modifies and the remainder goes
    back on cancel, so escrow always equals the sum of the live orders' reservations.
    Fills settle through the ledger at once: base from the seller (its escrow if resting),
    quote from the buyer (its escrow if resting), fees to the book's ``fee_holder``.
    Funding checks, made before anything changes (a rejected order changes nothing):

    * ``LIMIT``/``POST_ONLY`` sell: the wallet must hold the full ``qty * base_units_per_lot``.
    * ``LIMIT``/``POST_ONLY`` buy: the wallet must hold ``x + ceil(rate * x)`` with
      ``x = qty * price * quote_units_per_tick_lot``, where ``rate`` is the maker fee rate if
      the order cannot cross on arrival and the larger of maker and taker rates if it can.
      Price improvement and the cheaper rate only lower the real cost, so the order is
      fully funded whatever it meets; otherwise ``INSUFFICIENT_FUNDS``.
    * ``MARKET``/``IOC`` orders are capped by the wallet while they walk the book: a buy
      takes, fill by fill, the most lots its quote balance pays for (notional plus taker
      fee), a sell at most ``base balance // base_units_per_lot`` lots. They are rejected
      with ``INSUFFICIENT_FUNDS`` only if they could trade but cannot pay for one lot at the
      best opposite price (buy) or hold less than one lot (sell). Capped remainders expire.
    * A modify is funded from the wallet plus the order's own current reservation.

    No fill ever settles against funds that are not there: every transfer goes through
    :func:`~marginsim.ledger.kernel_transfer`, which refuses overdrafts, and the checks above
    guarantee it never has to.

Fees, spot books
    Maker and taker fees are rates of the quote notional, charged in quote: the buyer pays
    notional plus fee, the seller receives notional minus fee. Rates are held as integers
    in parts per 10^8, rounded up. Rounding is per order, never in the user's favour: the
    total fee an order has paid after any fill is its exact cumulative fee (maker and taker
    fills together) rounded *up* to a whole quote unit, and each fill is charged the
    increase of that total. So every fill is rounded up as part of its order, and rounding
    never compounds across many small fills.

Perp books
    Matched exactly like spot books, but the engine moves no tokens: no funding check, no
    reservation, no settlement and no fee (the perp venue margins accounts, settles
    positions and charges fees from the returned fills).

Limits
    ``1 <= price_ticks <= MAX_PRICE_TICKS`` (2**40), ``1 <= qty_lots <= MAX_QTY_LOTS``
    (2**40) and ``qty * price * quote_units_per_tick_lot <= MAX_NOTIONAL_UNITS`` (2**62), so
    no amount overflows int64. Any price in range works; the book stores only non-empty
    levels. A price or quantity that is not a whole number of ticks or lots (a float array
    with a fractional value) is rejected with ``OFF_TICK``/``OFF_LOT``.

Order ids come from a per-engine counter (1, 2, ...) and are given only to accepted orders
(a cancel or modify reports its target's id); rejected instructions report id 0. Results and
the trade tape depend only on the order stream: no clock, no hash-order iteration.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from marginsim.ledger import Ledger
from marginsim.market import _kernels as K

__all__ = [
    "MAX_NOTIONAL_UNITS",
    "MAX_PRICE_TICKS",
    "MAX_QTY_LOTS",
    "BatchResult",
    "BookInvariantError",
    "BookSnapshot",
    "BookSpec",
    "Fill",
    "MatchingEngine",
    "OrderKind",
    "OrderResult",
    "OrderStatus",
    "RejectReason",
    "RestingOrder",
    "SelfTradePolicy",
    "Side",
]

MAX_PRICE_TICKS = K.MAX_PRICE_TICKS
MAX_QTY_LOTS = K.MAX_QTY_LOTS
MAX_NOTIONAL_UNITS = K.MAX_NOTIONAL_UNITS

_I64 = np.int64
_I64_DTYPE = np.dtype(np.int64)
_new_tuple = tuple.__new__
_INT64_LIMIT = float(2**62)


class Side(enum.IntEnum):
    """Order side: +1 buy, -1 sell (the sign of the base the account receives)."""

    BUY = 1
    SELL = -1


class OrderKind(enum.IntEnum):
    """Instruction codes of the ``kind`` array of a batch."""

    LIMIT = K.K_LIMIT
    MARKET = K.K_MARKET
    IOC = K.K_IOC
    POST_ONLY = K.K_POST_ONLY
    CANCEL = K.K_CANCEL
    MODIFY = K.K_MODIFY


class OrderStatus(enum.IntEnum):
    """Outcome of one instruction: ``OK``, ``SELF_TRADE`` (accepted) or a reject reason.

    A rejected instruction changes nothing. ``SELF_TRADE`` means the order was accepted,
    may have traded, and its remainder was cancelled by self-trade prevention.
    """

    OK = K.ST_OK
    NON_POSITIVE_QTY = K.ST_NON_POSITIVE_QTY
    NON_POSITIVE_PRICE = K.ST_NON_POSITIVE_PRICE
    OFF_TICK = K.ST_OFF_TICK
    OFF_LOT = K.ST_OFF_LOT
    PRICE_TOO_LARGE = K.ST_PRICE_TOO_LARGE
    QTY_TOO_LARGE = K.ST_QTY_TOO_LARGE
    NOTIONAL_TOO_LARGE = K.ST_NOTIONAL_TOO_LARGE
    UNKNOWN_INSTRUMENT = K.ST_UNKNOWN_INSTRUMENT
    UNKNOWN_ACCOUNT = K.ST_UNKNOWN_ACCOUNT
    INSUFFICIENT_FUNDS = K.ST_INSUFFICIENT_FUNDS
    WOULD_CROSS = K.ST_WOULD_CROSS
    UNKNOWN_ORDER = K.ST_UNKNOWN_ORDER
    NOT_OWNER = K.ST_NOT_OWNER
    INVALID_SIDE = K.ST_INVALID_SIDE
    INVALID_KIND = K.ST_INVALID_KIND
    SELF_TRADE = K.ST_SELF_TRADE

    @property
    def accepted(self) -> bool:
        """Whether the instruction was accepted (``OK`` or ``SELF_TRADE``)."""
        return self in (OrderStatus.OK, OrderStatus.SELF_TRADE)


#: The brief's name for the status codes; the same enum.
RejectReason = OrderStatus


class SelfTradePolicy(enum.IntEnum):
    """What happens when an incoming order meets a resting order of the same account."""

    CANCEL_RESTING = K.STP_CANCEL_RESTING
    CANCEL_INCOMING = K.STP_CANCEL_INCOMING
    CANCEL_BOTH = K.STP_CANCEL_BOTH


class BookInvariantError(AssertionError):
    """The books or the escrow no longer satisfy an invariant (a bug, never bad input)."""


def _spec_error(spec_id: object, field: str, rule: str, value: object) -> ValueError:
    return ValueError(
        f"The {field!r} field of BookSpec {spec_id!r} must be {rule}. Got {value!r} instead."
    )


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


def _is_real(x: object) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(
        x, bool | np.bool_
    )


@dataclasses.dataclass(frozen=True)
class BookSpec:
    """An instrument of the engine: its assets, grid and fees.

    Attributes:
        instrument_id: Unique id, e.g. ``"WETH-USDC"``.
        kind: ``"spot"`` (settles base against quote through the ledger) or ``"perp"``
            (matched only; the perp venue settles).
        base_asset: Ledger asset id of the base; ``-1`` allowed for a perp (never moved).
        quote_asset: Ledger asset id of the quote (for a perp: its margin asset).
        base_units_per_lot: Smallest base units in one lot.
        quote_units_per_tick_lot: Smallest quote units that 1 lot costs at a price of 1 tick:
            a fill of ``q`` lots at ``p`` ticks has notional ``q * p * quote_units_per_tick_lot``.
        tick: Tick size in quote per base (human units, for price conversion).
        lot: Lot size in base (human units).
        maker_fee: Fee rate of the quote notional charged to the resting side, in [0, 1).
        taker_fee: Fee rate of the quote notional charged to the incoming side, in [0, 1).
        fee_holder: Ledger holder receiving the fees.

    Raises:
        ValueError: Naming the field, the rule and the value, when a field is invalid.
    """

    instrument_id: str
    kind: str
    base_asset: int
    quote_asset: int
    base_units_per_lot: int
    quote_units_per_tick_lot: int
    tick: float
    lot: float
    maker_fee: float
    taker_fee: float
    fee_holder: int

    def __post_init__(self) -> None:
        sid = self.instrument_id
        if not isinstance(sid, str) or not sid:
            raise _spec_error(sid, "instrument_id", "a non-empty string", sid)
        if self.kind not in ("spot", "perp"):
            raise _spec_error(sid, "kind", "'spot' or 'perp'", self.kind)
        for name in ("base_asset", "quote_asset", "fee_holder"):
            if not _is_int(getattr(self, name)):
                raise _spec_error(sid, name, "an int", getattr(self, name))
        for name in ("base_units_per_lot", "quote_units_per_tick_lot"):
            value = getattr(self, name)
            if not _is_int(value) or not 1 <= value <= MAX_NOTIONAL_UNITS:
                raise _spec_error(sid, name, f"an int in [1, {MAX_NOTIONAL_UNITS}]", value)
        for name in ("tick", "lot"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value <= 0:
                raise _spec_error(sid, name, "a finite float > 0", value)
        for name in ("maker_fee", "taker_fee"):
            value = getattr(self, name)
            if not _is_real(value) or not 0 <= value < 1:
                raise _spec_error(sid, name, "a float in the range [0, 1)", value)

    @property
    def is_perp(self) -> bool:
        """Whether the book is a perp (matched only, never settled by the engine)."""
        return self.kind == "perp"


@dataclasses.dataclass(frozen=True)
class Fill:
    """One trade: a resting (maker) order met an incoming (taker) order.

    Attributes:
        step: Model step stamped on the trade (``MatchingEngine.step`` at the time).
        instrument: Instrument id.
        price_ticks: Execution price (the resting order's price).
        qty_lots: Quantity traded.
        buyer: Ledger holder that bought.
        seller: Ledger holder that sold.
        aggressor_side: +1 when the taker bought, -1 when it sold.
        maker_order_id: Id of the resting order.
        taker_order_id: Id of the incoming order.
    """

    step: int
    instrument: str
    price_ticks: int
    qty_lots: int
    buyer: int
    seller: int
    aggressor_side: int
    maker_order_id: int
    taker_order_id: int


@dataclasses.dataclass(frozen=True)
class OrderResult:
    """The engine's answer to one instruction of the per-order API.

    Attributes:
        order_id: Id given to the order (the target's id for a cancel or modify); 0 if
            rejected.
        status: ``OK``, ``SELF_TRADE`` or the reject reason.
        filled_lots: Lots traded by this instruction.
        resting_lots: Lots left resting on the book after it.
        fills: The trades it made, in execution order.
    """

    order_id: int
    status: OrderStatus
    filled_lots: int
    resting_lots: int
    fills: tuple[Fill, ...]

    @property
    def accepted(self) -> bool:
        """Whether the instruction was accepted."""
        return self.status.accepted


class BatchResult(NamedTuple):
    """Per-order results of :meth:`MatchingEngine.submit_batch` (int64 arrays, batch order).

    Unpacks as ``order_id, status, filled_lots, resting_lots``.
    """

    order_id: np.ndarray
    status: np.ndarray
    filled_lots: np.ndarray
    resting_lots: np.ndarray


@dataclasses.dataclass(frozen=True)
class RestingOrder:
    """A live order on a book.

    Attributes:
        order_id: Its id.
        instrument: Instrument id.
        side: +1 bid, -1 ask.
        price_ticks: Limit price.
        qty_lots: Open quantity.
        account: Owner (ledger holder).
        reserved_units: Units held in escrow for it (quote for a bid, base for an ask; 0 on
            perp books).
        post_only: Whether it was entered post-only.
    """

    order_id: int
    instrument: str
    side: int
    price_ticks: int
    qty_lots: int
    account: int
    reserved_units: int
    post_only: bool


@dataclasses.dataclass(frozen=True)
class BookSnapshot:
    """Every resting order of one book, best level first, each level in time priority.

    Attributes:
        bids: ``((price_ticks, ((order_id, account, qty_lots), ...)), ...)``, best first.
        asks: Same for the ask side.
    """

    bids: tuple[tuple[int, tuple[tuple[int, int, int], ...]], ...]
    asks: tuple[tuple[int, tuple[tuple[int, int, int], ...]], ...]


_TRADE_COLUMNS = (
    ("step", K.T_STEP),
    ("instrument", K.T_INSTRUMENT),
    ("price_ticks", K.T_PRICE),
    ("qty_lots", K.T_QTY),
    ("buyer", K.T_BUYER),
    ("seller", K.T_SELLER),
    ("aggressor_side", K.T_AGGRESSOR),
    ("maker_order_id", K.T_MAKER_ID),
    ("taker_order_id", K.T_TAKER_ID),
)

_INVARIANT_MESSAGES = {
    1: "levels not strictly sorted",
    2: "empty price level",
    3: "broken FIFO links",
    4: "non-positive resting quantity",
    5: "level quantity differs from the sum of its orders",
    6: "time priority violated inside a level",
    7: "order in the wrong book or at the wrong price",
    8: "order id index does not find the order",
    9: "live order count differs from the orders on the books",
    10: "crossed book",
    11: "order reservation differs from the reservation rule",
    12: "level map does not find a level",
    13: "level count differs from the levels on the books",
}


def _touched(shape: tuple[int, ...], value: int = 0) -> np.ndarray:
    """An int64 array written once, so that its pages are faulted in now, not mid-batch."""
    out = np.empty(shape, dtype=_I64)
    out.fill(value)
    return out


_HASH_MIN_SIZE = 1024


def _pow2_at_least(n: int) -> int:
    return 1 << max(int(n) - 1, 1).bit_length()


_VEC = "int64[::1]"
_MAT = "int64[:, ::1]"
#: The one signature of the batch kernel (see ``MatchingEngine.submit_batch``).
_KERNEL_SIGNATURE = (
    f"int64({', '.join([_VEC] * 7)}, {_MAT}, int64, {_VEC}, {_MAT}, {_VEC}, {_VEC}, {_VEC}, "
    f"{_VEC}, {_VEC}, {_MAT}, {_MAT})"
)


def _compile_kernel() -> None:
    """Compile (or load from numba's cache) the batch kernel's signature, and only it.

    With compilation of other signatures disabled, an argument of another type raises
    TypeError at dispatch instead of compiling a slow specialisation, which lets
    ``submit_batch`` skip its own per-array checks on the hot path.
    """
    if not K.process_batch.signatures:
        K.process_batch.compile(_KERNEL_SIGNATURE)
        K.process_batch.disable_compile()


def _rehashed(table: np.ndarray, entries: int) -> np.ndarray:
    """A hash table at least twice as large as ``entries + 1``, holding ``table``'s entries."""
    size = table.shape[0] // 2
    while 2 * (entries + 1) > size:
        size *= 2
    grown = _touched((2 * size,))
    K.ht_rehash(table, grown)
    return grown


class MatchingEngine:
    """Price-time order books for many instruments, settled through the ledger.

    See the module docstring for the matching, funding, fee, self-trade and perp rules.

    Args:
        ledger: The ledger; spot fills and reservations move tokens in it.
        specs: The instruments; their order defines the instrument indices.
        escrow_holder: Ledger holder that holds the reservations of resting spot orders.
            It must be used by nothing else, and may not trade.
        self_trade_policy: What happens when an order meets its own account's resting order.
        order_capacity: Initial resting-order capacity (grows by doubling).
        level_capacity: Initial price levels per book side (grows by doubling).
        trade_capacity: Initial trade-tape capacity (grows by doubling).
        id_window: Initial size of the direct-mapped order-id window (rounded up to a power
            of two); orders still resting this many ids after their own are found through a
            hash table instead. The window doubles while many orders outlive it.
        max_id_window: Largest id window (rounded up to a power of two, 8 bytes per cell).

    Raises:
        ValueError: If a spec refers to an unknown asset or holder, ids repeat, or a
            capacity is not positive.

    Attributes:
        specs: The instruments, by index.
        step: Stamped on every trade; the model sets it at the start of each step.
        self_trade_policy: The self-trade prevention policy.

    Examples:
        >>> from marginsim.ledger import AssetSpec, Ledger
        >>> ledger = Ledger([AssetSpec("USDC", 6), AssetSpec("WETH", 9)])
        >>> escrow, fees = ledger.add_holder("escrow"), ledger.add_holder("fees")
        >>> alice, bob = ledger.add_holder("alice"), ledger.add_holder("bob")
        >>> spec = BookSpec("WETH-USDC", "spot", 1, 0, 10**7, 100, 0.01, 0.01, 0.0, 0.0, fees)
        >>> engine = MatchingEngine(ledger, [spec], escrow_holder=escrow)
        >>> ledger.mint(alice, 0, 10**9, "example"); ledger.mint(bob, 1, 10**9, "example")
        >>> engine.submit_limit("WETH-USDC", Side.SELL, 200_000, 5, bob).resting_lots
        5
        >>> engine.submit_market("WETH-USDC", Side.BUY, 2, alice).filled_lots
        2
        >>> engine.last_price("WETH-USDC")
        2000.0
    """

    def __init__(
        self,
        ledger: Ledger,
        specs: Sequence[BookSpec],
        escrow_holder: int,
        *,
        self_trade_policy: SelfTradePolicy | int = SelfTradePolicy.CANCEL_RESTING,
        order_capacity: int = 1024,
        level_capacity: int = 64,
        trade_capacity: int = 4096,
        id_window: int = 1 << 16,
        max_id_window: int = 1 << 22,
    ) -> None:
        self.ledger = ledger
        self.specs: tuple[BookSpec, ...] = tuple(specs)
        self.escrow_holder = self._validate(ledger, self.specs, escrow_holder)
        try:
            self.self_trade_policy = SelfTradePolicy(self_trade_policy)
        except ValueError:
            raise ValueError(
                "The 'self_trade_policy' parameter of MatchingEngine must be a "
                f"SelfTradePolicy. Got {self_trade_policy!r} instead."
            ) from None
        for name, value in (
            ("order_capacity", order_capacity),
            ("level_capacity", level_capacity),
            ("trade_capacity", trade_capacity),
            ("id_window", id_window),
            ("max_id_window", max_id_window),
        ):
            if not _is_int(value) or value < 1:
                raise ValueError(
                    f"The {name!r} parameter of MatchingEngine must be an int >= 1. "
                    f"Got {value!r} instead."
                )
        self.step = 0
        self._index = {s.instrument_id: k for k, s in enumerate(self.specs)}
        self._ids = np.array([s.instrument_id for s in self.specs], dtype=object)
        self._tick = np.array([s.tick for s in self.specs], dtype=np.float64)
        self._lot = np.array([s.lot for s in self.specs], dtype=np.float64)
        nb = len(self.specs)
        # One int64 array holds the engine scalars, level counts, last prices and specs; the
        # names below are views into it.
        self._meta = _touched((K.N_STATE + 3 * nb + nb * K.N_SPEC_FIELDS,))
        self._bind_meta_views()
        for k, s in enumerate(self.specs):
            row = self._spec[k]
            row[K.SP_PERP] = int(s.is_perp)
            row[K.SP_BASE] = s.base_asset
            row[K.SP_QUOTE] = s.quote_asset
            row[K.SP_BASE_PER_LOT] = s.base_units_per_lot
            row[K.SP_QUOTE_PER_TICK_LOT] = s.quote_units_per_tick_lot
            # The engine charges no fee on perp books: the perp venue does.
            maker = 0 if s.is_perp else _rate_units(s.maker_fee)
            taker = 0 if s.is_perp else _rate_units(s.taker_fee)
            row[K.SP_MAKER_RATE] = maker
            row[K.SP_TAKER_RATE] = taker
            row[K.SP_MAX_RATE] = max(maker, taker)
            row[K.SP_FEE_HOLDER] = s.fee_holder
        cap = int(order_capacity)
        # Pool and nodes are 2-d here; the kernel gets flat views (rows of a power-of-two
        # width, so a row offset is a shift rather than a multiply by a runtime stride).
        self._pool = _touched((cap, K.NP))
        self._pool[:, K.P_NEXT] = np.arange(1, cap + 1)
        self._pool[cap - 1, K.P_NEXT] = -1
        self._lv = _touched((2 * nb, int(level_capacity) * K.N_LEVEL_FIELDS))
        # Level nodes: a book never has more levels than orders, so the node pool starts
        # with the order pool's capacity (it grows on its own if ever needed).
        self._nodes = _touched((cap, K.NN))
        self._nodes[:, K.N_HEAD] = np.arange(1, cap + 1)
        self._nodes[cap - 1, K.N_HEAD] = -1
        # Order id -> slot: the direct-mapped window, and the overflow table for orders that
        # outlive it. Hash tables start small and double at load 1/2 (their probes are
        # scattered, so a table much larger than its contents only adds cache misses).
        self._idmap = _touched((_pow2_at_least(int(id_window)),), -1)
        self._state[K.S_MAX_WINDOW] = max(_pow2_at_least(int(max_id_window)), self._idmap.size)
        self._ht = _touched((2 * _HASH_MIN_SIZE,))
        self._lmap = _touched((2 * _HASH_MIN_SIZE,))
        self._trades = _touched((int(trade_capacity), K.N_TRADE_FIELDS))
        self._state[K.S_INSTRUMENTS] = nb
        self._state[K.S_NEXT_ID] = 1
        self._state[K.S_FREE] = 0
        self._state[K.S_FREE_NODE] = 0
        self._state[K.S_ESCROW] = self.escrow_holder
        self._state[K.S_STP] = int(self.self_trade_policy)
        _compile_kernel()
        self._kernel_args: tuple[np.ndarray, ...] = ()
        # Shared zeros for batches without order_ref (the kernel never writes its inputs).
        self._zero_refs = np.zeros(0, dtype=_I64)
        self._refresh_kernel_args()

    def _bind_meta_views(self) -> None:
        """Name the parts of ``_meta``: engine scalars, level counts, last prices, specs."""
        nb = len(self.specs)
        self._state = self._meta[: K.N_STATE]
        self._nlv = self._meta[K.N_STATE : K.N_STATE + 2 * nb]
        self._last_px = self._meta[K.N_STATE + 2 * nb : K.N_STATE + 3 * nb]
        self._spec = self._meta[K.N_STATE + 3 * nb :].reshape(nb, K.N_SPEC_FIELDS)

    def _refresh_kernel_args(self) -> None:
        """Cache the engine arrays the kernel takes (rebuilt when one is replaced)."""
        self._kernel_args = (
            self._pool.reshape(-1),
            self._lv,
            self._nodes.reshape(-1),
            self._lmap,
            self._idmap,
            self._ht,
            self._meta,
            self._trades,
            self.ledger.kernel_balances(),
        )

    @staticmethod
    def _validate(ledger: Ledger, specs: tuple[BookSpec, ...], escrow_holder: int) -> int:
        n_holders, n_assets = ledger.n_holders, ledger.n_assets
        if not _is_int(escrow_holder) or not 0 <= escrow_holder < n_holders:
            raise ValueError(
                "The 'escrow_holder' parameter of MatchingEngine must be a ledger holder id "
                f"in [0, {n_holders}). Got {escrow_holder!r} instead."
            )
        seen: set[str] = set()
        for s in specs:
            if not isinstance(s, BookSpec):
                raise TypeError(f"specs must be BookSpec instances, got {type(s).__name__}")
            sid = s.instrument_id
            if sid in seen:
                raise _spec_error(sid, "instrument_id", "unique among the specs", sid)
            seen.add(sid)
            if not 0 <= s.quote_asset < n_assets:
                raise _spec_error(
                    sid, "quote_asset", f"a ledger asset id in [0, {n_assets})", s.quote_asset
                )
            if s.is_perp:
                if s.base_asset != -1 and not 0 <= s.base_asset < n_assets:
                    raise _spec_error(
                        sid,
                        "base_asset",
                        f"-1 or a ledger asset id in [0, {n_assets})",
                        s.base_asset,
                    )
            elif not 0 <= s.base_asset < n_assets or s.base_asset == s.quote_asset:
                raise _spec_error(
                    sid,
                    "base_asset",
                    f"a ledger asset id in [0, {n_assets}) other than quote_asset",
                    s.base_asset,
                )
            if not 0 <= s.fee_holder < n_holders or s.fee_holder == escrow_holder:
                raise _spec_error(
                    sid,
                    "fee_holder",
                    f"a ledger holder id in [0, {n_holders}) other than the escrow",
                    s.fee_holder,
                )
        return int(escrow_holder)

    # ================================================================ instruments
    def instrument_index(self, instrument: int | str) -> int:
        """Index of an instrument given by index or id.

        Raises:
            ValueError: If there is no such instrument.
        """
        k = self._lookup_instrument(instrument)
        if k < 0:
            raise ValueError(
                f"unknown instrument {instrument!r}; known instruments are {list(self._index)}"
            )
        return k

    def _lookup_instrument(self, instrument: int | str) -> int:
        if isinstance(instrument, str):
            return self._index.get(instrument, -1)
        if _is_int(instrument) and 0 <= instrument < len(self.specs):
            return int(instrument)
        return -1

    def price_to_ticks(self, instrument: int | str, price: float) -> int:
        """Convert a human price (quote per base) to ticks.

        Raises:
            ValueError: If the price is not positive or not a whole number of ticks.
        """
        tick = self.specs[self.instrument_index(instrument)].tick
        ticks = price / tick if price > 0 and math.isfinite(price) else 0.0
        rounded = round(ticks)
        if rounded < 1 or abs(ticks - rounded) > 1e-9 * max(1.0, abs(ticks)):
            raise ValueError(f"price {price!r} is not a positive multiple of the tick {tick}")
        return int(rounded)

    # ================================================================ order entry
    def submit_batch(
        self,
        instrument: np.ndarray | int | str,
        side: np.ndarray | int,
        kind: np.ndarray | int,
        price_ticks: np.ndarray | int | float,
        qty_lots: np.ndarray | int | float,
        account: np.ndarray | int,
        order_ref: np.ndarray | int | None = None,
    ) -> BatchResult:
        """Process a batch of instructions, in array order, in one compiled call.

        Args:
            instrument: Instrument index (or id strings) of each instruction.
            side: +1 buy / -1 sell (ignored by cancel and modify).
            kind: :class:`OrderKind` codes.
            price_ticks: Limit price (ignored by market orders and cancels; the new price of
                a modify).
            qty_lots: Quantity (the new open quantity of a modify; ignored by cancels).
            account: Ledger holder sending each instruction.
            order_ref: Target order id of each cancel or modify (ignored otherwise).

        Scalars broadcast against arrays. Integer arrays are used as they are; in float
        arrays a fractional price or quantity is rejected (``OFF_TICK``/``OFF_LOT``).

        Returns:
            ``(order_id, status, filled_lots, resting_lots)`` int64 arrays.

        Raises:
            ValueError: If array lengths differ.
            TypeError: If an array is not numeric.
        """
        if order_ref is None:
            order_ref = self._zeros(instrument)
        cols: Sequence[object] = (instrument, side, kind, price_ticks, qty_lots, account, order_ref)
        state = self._state
        state[K.S_STEP] = self.step
        state[K.S_HOLDERS] = self.ledger.n_holders
        if self.ledger.kernel_balances() is not self._kernel_args[-1]:
            self._refresh_kernel_args()  # the ledger grew its balance array
        # Hot path: the kernel accepts exactly 1-d C-contiguous writable int64 arrays (its
        # only compiled signature) and checks their lengths itself, so agents' arrays go
        # straight in; anything else raises TypeError at dispatch and is converted.
        try:
            n = instrument.shape[0]  # type: ignore[union-attr]
            out = np.empty((4, n), dtype=_I64)
            start = K.process_batch(*cols, out, 0, *self._kernel_args)
        except (TypeError, AttributeError, IndexError):
            cols = self._coerce(cols)
            n = cols[0].shape[0]
            out = np.empty((4, n), dtype=_I64)
            start = K.process_batch(*cols, out, 0, *self._kernel_args)
        if start != n or state[K.S_ERROR]:
            self._resume(cols, out, start)
        return _new_tuple(BatchResult, (out[0], out[1], out[2], out[3]))

    def _widen_id_window(self) -> None:
        """Double the id window and redistribute live orders between it and the overflow.

        Each window cell takes the newest live order that maps to it, as the kernel does;
        the others go to the overflow table (any such split is valid: a lookup checks the
        cell, then the table).
        """
        state = self._state
        live = np.flatnonzero(self._pool[:, K.P_QTY] > 0)
        ids = self._pool[live, K.P_ID]
        order = np.argsort(-ids, kind="stable")  # newest first: np.unique keeps the first
        live, ids = live[order], ids[order]
        size = min(2 * self._idmap.shape[0], int(state[K.S_MAX_WINDOW]))
        cells = ids & (size - 1)
        _, first = np.unique(cells, return_index=True)
        in_window = np.zeros(ids.shape[0], dtype=bool)
        in_window[first] = True
        idmap = _touched((size,), -1)
        idmap[cells[in_window]] = live[in_window]
        over_ids = np.ascontiguousarray(ids[~in_window])
        over_slots = np.ascontiguousarray(live[~in_window])
        table = 2 * _HASH_MIN_SIZE
        while 2 * (over_ids.shape[0] + 1) > table // 2:
            table *= 2
        ht = _touched((table,))
        K.ht_insert_many(ht, over_ids, over_slots)
        self._idmap, self._ht = idmap, ht
        state[K.S_OVERFLOW] = over_ids.shape[0]

    def _zeros(self, like: object) -> np.ndarray | int:
        """A zero ``order_ref`` shaped like the instrument column (0 for a scalar)."""
        if type(like) is np.ndarray and like.ndim == 1:
            n = like.shape[0]
            if self._zero_refs.shape[0] < n:
                self._zero_refs = np.zeros(max(n, 2 * self._zero_refs.shape[0]), dtype=_I64)
            return self._zero_refs[:n]
        return 0

    _FIELD_NAMES = ("instrument", "side", "kind", "price_ticks", "qty_lots", "account", "order_ref")

    def _coerce(self, cols: Sequence[object]) -> list[np.ndarray]:
        arrays = []
        for name, col in zip(self._FIELD_NAMES, cols, strict=True):
            a = np.asarray(col)
            if name == "instrument" and a.dtype.kind in "UOS":
                a = np.vectorize(lambda x: self._index.get(str(x), -1), otypes=[_I64])(a)
            if a.dtype.kind == "f":
                whole = np.isfinite(a) & (a == np.round(a))
                if name not in ("price_ticks", "qty_lots") and not whole.all():
                    raise TypeError(f"{name} must hold whole numbers, got {a[~whole][:3]}")
                clipped = np.clip(np.where(whole, a, 0.0), -_INT64_LIMIT, _INT64_LIMIT)
                a = np.where(whole, clipped.astype(_I64), K.OFF_GRID)
            elif a.dtype.kind in "iub":
                a = a.astype(_I64, copy=False)
            else:
                raise TypeError(f"{name} must be numeric, got dtype {a.dtype}")
            arrays.append(a)
        shapes = {a.shape for a in arrays if a.ndim}
        if any(len(s) > 1 for s in shapes) or len(shapes) > 1:
            raise ValueError(
                f"batch arrays must be 1-d of equal lengths, got shapes {sorted(shapes)}"
            )
        n = next(iter(shapes))[0] if shapes else 1
        # Fresh writable copies: the kernel's signature takes writable arrays only.
        return [np.array(np.broadcast_to(a, (n,)), dtype=_I64) for a in arrays]

    def _resume(self, cols: Sequence[np.ndarray], out: np.ndarray, start: int) -> None:
        """Handle a kernel call that stopped early: grow arrays and go on, or report."""
        n = out.shape[1]
        state = self._state
        while True:
            if state[K.S_ERROR]:
                raise RuntimeError(
                    f"matching engine internal error {int(state[K.S_ERROR])}: a guaranteed "
                    "ledger transfer was refused"
                )
            if start < 0:
                raise ValueError(
                    f"batch arrays must have equal lengths, got {[len(c) for c in cols]}"
                )
            if start >= n:
                return
            self._grow(int(state[K.S_GROW]))
            state[K.S_GROW] = 0
            start = K.process_batch(*cols, out, start, *self._kernel_args)

    def _grow(self, what: int) -> None:
        """Grow the arrays the kernel stopped for (between orders, so nothing is in flight)."""
        state = self._state
        if what & K.GROW_POOL:
            old = self._pool
            cap = old.shape[0]
            pool = _touched((2 * cap, K.NP))
            pool[:cap] = old
            pool[cap:, K.P_NEXT] = np.arange(cap + 1, 2 * cap + 1)
            pool[2 * cap - 1, K.P_NEXT] = state[K.S_FREE]
            state[K.S_FREE] = cap
            self._pool = pool
        if what & K.GROW_NODES:
            old = self._nodes
            cap = old.shape[0]
            nodes = _touched((2 * cap, K.NN))
            nodes[:cap] = old
            nodes[cap:, K.N_HEAD] = np.arange(cap + 1, 2 * cap + 1)
            nodes[2 * cap - 1, K.N_HEAD] = state[K.S_FREE_NODE]
            state[K.S_FREE_NODE] = cap
            self._nodes = nodes
        if what & K.GROW_ID_WINDOW:
            self._widen_id_window()
        elif what & K.GROW_HASH:
            self._ht = _rehashed(self._ht, int(state[K.S_OVERFLOW]))
        if what & K.GROW_LEVEL_MAP:
            self._lmap = _rehashed(self._lmap, int(state[K.S_LEVELS]))
        if what & K.GROW_LEVELS:
            old = self._lv
            lv = _touched((old.shape[0], 2 * old.shape[1]))
            lv[:, : old.shape[1]] = old
            self._lv = lv
        if what & K.GROW_TRADES:
            old = self._trades
            need = int(state[K.S_TRADES] + state[K.S_LIVE]) + 2
            trades = _touched((max(2 * old.shape[0], need), K.N_TRADE_FIELDS))
            trades[: old.shape[0]] = old
            self._trades = trades
        self._refresh_kernel_args()

    def _submit_one(
        self,
        instrument: int | str,
        side: int,
        kind: int,
        price_ticks: float,
        qty_lots: float,
        account: int,
        order_ref: int = 0,
    ) -> OrderResult:
        ins = self._lookup_instrument(instrument)
        first = self.n_trades
        ints = all(_is_int(x) for x in (price_ticks, qty_lots))
        if ints:
            cols = [
                np.array([x], dtype=_I64)
                for x in (ins, side, kind, price_ticks, qty_lots, account, order_ref)
            ]
            res = self.submit_batch(*cols)
        else:
            res = self.submit_batch(
                ins, side, kind, float(price_ticks), float(qty_lots), account, order_ref
            )
        return OrderResult(
            order_id=int(res.order_id[0]),
            status=OrderStatus(int(res.status[0])),
            filled_lots=int(res.filled_lots[0]),
            resting_lots=int(res.resting_lots[0]),
            fills=self.fills(first),
        )

    def submit_limit(
        self, instrument: int | str, side: int, price_ticks: int, qty_lots: int, account: int
    ) -> OrderResult:
        """Submit a good-till-cancelled limit order: it takes what crosses and rests the rest."""
        return self._submit_one(instrument, side, OrderKind.LIMIT, price_ticks, qty_lots, account)

    def submit_market(
        self, instrument: int | str, side: int, qty_lots: int, account: int
    ) -> OrderResult:
        """Submit a market order: it takes at any price and never rests."""
        return self._submit_one(instrument, side, OrderKind.MARKET, 0, qty_lots, account)

    def submit_ioc(
        self, instrument: int | str, side: int, price_ticks: int, qty_lots: int, account: int
    ) -> OrderResult:
        """Submit an immediate-or-cancel order: it takes up to its limit; the rest expires."""
        return self._submit_one(instrument, side, OrderKind.IOC, price_ticks, qty_lots, account)

    def submit_post_only(
        self, instrument: int | str, side: int, price_ticks: int, qty_lots: int, account: int
    ) -> OrderResult:
        """Submit a post-only order: it rests, or is rejected (``WOULD_CROSS``) if it crosses."""
        return self._submit_one(
            instrument, side, OrderKind.POST_ONLY, price_ticks, qty_lots, account
        )

    def cancel(self, instrument: int | str, order_id: int, account: int) -> OrderResult:
        """Cancel a resting order of ``account``; its escrow goes back to the account."""
        return self._submit_one(instrument, 1, OrderKind.CANCEL, 0, 0, account, order_id)

    def modify(
        self, instrument: int | str, order_id: int, account: int, price_ticks: int, qty_lots: int
    ) -> OrderResult:
        """Set a resting order's price and open quantity (see the module docstring for priority).

        Args:
            instrument: The order's instrument.
            order_id: The order.
            account: Its owner.
            price_ticks: New limit price.
            qty_lots: New open quantity (> 0; use :meth:`cancel` to remove an order).
        """
        return self._submit_one(
            instrument, 1, OrderKind.MODIFY, price_ticks, qty_lots, account, order_id
        )

    def cancel_all(self, account: int | np.ndarray, instrument: int | str | None = None) -> int:
        """Cancel every resting order of ``account`` (one id or an array of ids).

        Args:
            account: Ledger holder id, or an array of them.
            instrument: Only this instrument's book, or every book when ``None``.

        Returns:
            Number of orders cancelled.
        """
        pool = self._pool
        mask = pool[:, K.P_QTY] > 0
        accounts = np.asarray(account, dtype=_I64).reshape(-1)
        if accounts.shape[0] == 1:
            mask &= pool[:, K.P_ACCT] == accounts[0]
        else:
            mask &= np.isin(pool[:, K.P_ACCT], accounts)
        if instrument is not None:
            mask &= (pool[:, K.P_BOOK] >> 1) == self.instrument_index(instrument)
        slots = np.flatnonzero(mask)
        if slots.shape[0] == 0:
            return 0
        # Cancel in id order so that the outcome never depends on where orders sit in the pool.
        slots = slots[np.argsort(pool[slots, K.P_ID], kind="stable")]
        res = self.submit_batch(
            np.ascontiguousarray(pool[slots, K.P_BOOK] >> 1),
            np.ones(slots.shape[0], dtype=_I64),
            np.full(slots.shape[0], int(OrderKind.CANCEL), dtype=_I64),
            np.zeros(slots.shape[0], dtype=_I64),
            np.zeros(slots.shape[0], dtype=_I64),
            np.ascontiguousarray(pool[slots, K.P_ACCT]),
            np.ascontiguousarray(pool[slots, K.P_ID]),
        )
        return int(np.count_nonzero(res.status == OrderStatus.OK))

    # ================================================================ trade tape
    @property
    def n_trades(self) -> int:
        """Number of fills on the tape (a mark for :meth:`trade_arrays`)."""
        return int(self._state[K.S_TRADES])

    @property
    def n_live_orders(self) -> int:
        """Number of orders resting on all books."""
        return int(self._state[K.S_LIVE])

    def trade_arrays(self, start: int = 0) -> dict[str, np.ndarray]:
        """The fills from index ``start`` on, as int64 column arrays (copies).

        Keys: ``step, instrument`` (index), ``price_ticks, qty_lots, buyer, seller,
        aggressor_side, maker_order_id, taker_order_id``.
        """
        rows = self._trades[int(start) : self.n_trades]
        return {name: rows[:, col].copy() for name, col in _TRADE_COLUMNS}

    def fills(self, start: int = 0) -> tuple[Fill, ...]:
        """The fills from index ``start`` on, as :class:`Fill` objects."""
        rows = self._trades[int(start) : self.n_trades].tolist()
        ids = self._ids
        return tuple(
            Fill(
                r[K.T_STEP],
                ids[r[K.T_INSTRUMENT]],
                r[K.T_PRICE],
                r[K.T_QTY],
                r[K.T_BUYER],
                r[K.T_SELLER],
                r[K.T_AGGRESSOR],
                r[K.T_MAKER_ID],
                r[K.T_TAKER_ID],
            )
            for r in rows
        )

    def trades_frame(self, start: int = 0) -> pd.DataFrame:
        """The trade tape as a DataFrame, one row per fill, in execution order.

        Columns: ``step, instrument`` (id string), ``price`` (quote per base), ``price_ticks,
        qty`` (base), ``qty_lots, buyer, seller, aggressor_side, maker_order_id,
        taker_order_id``.
        """
        a = self.trade_arrays(start)
        ins = a["instrument"]
        return pd.DataFrame(
            {
                "step": a["step"],
                "instrument": pd.Series(self._ids[ins], dtype=object),
                "price": a["price_ticks"] * self._tick[ins],
                "price_ticks": a["price_ticks"],
                "qty": a["qty_lots"] * self._lot[ins],
                "qty_lots": a["qty_lots"],
                "buyer": a["buyer"],
                "seller": a["seller"],
                "aggressor_side": a["aggressor_side"],
                "maker_order_id": a["maker_order_id"],
                "taker_order_id": a["taker_order_id"],
            }
        )

    # ================================================================ book queries
    def _levels(self, ins: int, side: int) -> tuple[np.ndarray, np.ndarray]:
        """Prices and quantities of one side, best first."""
        b = 2 * ins + (0 if side > 0 else 1)
        n = int(self._nlv[b])
        levels = self._lv[b].reshape(-1, K.N_LEVEL_FIELDS)
        rows = levels[n - 1 :: -1] if n else levels[:0]
        keys = rows[:, K.L_KEY]
        return (keys if side > 0 else -keys), self._nodes[rows[:, K.L_NODE], K.N_QTY]

    def _best(self, ins: int, book_side: int) -> int | None:
        b = 2 * ins + book_side
        n = self._nlv[b]
        if n == 0:
            return None
        key = int(self._lv[b, K.N_LEVEL_FIELDS * (n - 1) + K.L_KEY])
        return key if book_side == 0 else -key

    def best_bid(self, instrument: int | str) -> int | None:
        """Best bid in ticks, ``None`` when there is no bid."""
        return self._best(self.instrument_index(instrument), 0)

    def best_ask(self, instrument: int | str) -> int | None:
        """Best ask in ticks, ``None`` when there is no ask."""
        return self._best(self.instrument_index(instrument), 1)

    def mid(self, instrument: int | str) -> float | None:
        """Mid in ticks, ``None`` when a side is empty."""
        ins = self.instrument_index(instrument)
        bid, ask = self._best(ins, 0), self._best(ins, 1)
        return None if bid is None or ask is None else (bid + ask) / 2

    def spread(self, instrument: int | str) -> int | None:
        """Best ask minus best bid in ticks, ``None`` when a side is empty."""
        ins = self.instrument_index(instrument)
        bid, ask = self._best(ins, 0), self._best(ins, 1)
        return None if bid is None or ask is None else ask - bid

    def mid_price(self, instrument_id: int | str) -> float | None:
        """Mid in quote per base, ``None`` when a side is empty."""
        ins = self.instrument_index(instrument_id)
        mid = self.mid(ins)
        return None if mid is None else mid * self.specs[ins].tick

    def last_price(self, instrument_id: int | str) -> float | None:
        """Price of the last trade in quote per base, ``None`` before the first trade."""
        ins = self.instrument_index(instrument_id)
        px = int(self._last_px[ins])
        return None if px == 0 else px * self.specs[ins].tick

    def last_price_ticks(self, instrument: int | str) -> int | None:
        """Price of the last trade in ticks, ``None`` before the first trade."""
        px = int(self._last_px[self.instrument_index(instrument)])
        return None if px == 0 else px

    def depth(self, instrument: int | str, pct: float) -> tuple[int, int]:
        """Lots resting within ``pct`` (0.01 is 1%) of the mid: ``(bid_lots, ask_lots)``.

        Bids priced at least ``mid * (1 - pct)`` and asks at most ``mid * (1 + pct)`` count;
        ``(0, 0)`` when the book has no mid.
        """
        ins = self.instrument_index(instrument)
        mid = self.mid(ins)
        if mid is None:
            return 0, 0
        bid_px, bid_qty = self._levels(ins, 1)
        ask_px, ask_qty = self._levels(ins, -1)
        bids = int(bid_qty[bid_px >= mid * (1 - pct)].sum())
        asks = int(ask_qty[ask_px <= mid * (1 + pct)].sum())
        return bids, asks

    def l2(self, instrument: int | str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The top ``n`` levels per side.

        Returns:
            ``(bids, asks)``, each a ``(k, 2)`` int64 array of ``[price_ticks, qty_lots]``
            rows, best first (``k <= n``).
        """
        ins = self.instrument_index(instrument)
        out = []
        for side in (1, -1):
            px, qty = self._levels(ins, side)
            out.append(np.stack([px[:n], qty[:n]], axis=1).astype(_I64))
        return out[0], out[1]

    def market_order_cost(
        self, instrument: int | str, side: int, qty_lots: int
    ) -> tuple[int, int, float | None]:
        """What a market order of ``qty_lots`` would get now, without changing the book.

        Walks the opposite side (ignoring self-trade prevention and the sender's funds).

        Returns:
            ``(filled_lots, quote_units, average_price)``: for a buy the quote it would pay
            including the taker fee, for a sell the quote it would receive net of the fee;
            the average execution price in quote per base (``None`` if nothing fills).
            Perp books charge no fee in the engine.
        """
        ins = self.instrument_index(instrument)
        spec = self.specs[ins]
        px, qty = self._levels(ins, -side)
        remaining = int(qty_lots)
        filled = 0
        tick_lots = 0  # sum of lots * price_ticks, exact in Python ints
        for p, q in zip(px.tolist(), qty.tolist(), strict=True):
            if remaining <= 0:
                break
            k = min(q, remaining)
            filled += k
            tick_lots += k * p
            remaining -= k
        notional = tick_lots * spec.quote_units_per_tick_lot
        rate = int(self._spec[ins, K.SP_TAKER_RATE])
        fee = -(-notional * rate // K.FEE_DENOM)
        cost = notional + fee if side > 0 else notional - fee
        avg = tick_lots / filled * spec.tick if filled else None
        return filled, cost, avg

    def book_snapshot(self, instrument: int | str) -> BookSnapshot:
        """Every resting order of a book, best level first, in time priority."""
        ins = self.instrument_index(instrument)
        pool = self._pool
        sides = []
        for book_side in (0, 1):
            b = 2 * ins + book_side
            lv = self._lv[b].reshape(-1, K.N_LEVEL_FIELDS)
            levels = []
            for j in range(int(self._nlv[b]) - 1, -1, -1):
                key = int(lv[j, K.L_KEY])
                orders = []
                s = int(self._nodes[lv[j, K.L_NODE], K.N_HEAD])
                while s != -1:
                    orders.append(
                        (int(pool[s, K.P_ID]), int(pool[s, K.P_ACCT]), int(pool[s, K.P_QTY]))
                    )
                    s = int(pool[s, K.P_NEXT])
                levels.append((key if book_side == 0 else -key, tuple(orders)))
            sides.append(tuple(levels))
        return BookSnapshot(bids=sides[0], asks=sides[1])

    def order(self, order_id: int) -> RestingOrder | None:
        """The live order with this id, ``None`` if it is not resting."""
        s = -1
        if _is_int(order_id) and 0 < order_id < 2**62:
            s = int(K.order_slot(self._idmap, self._ht, self._pool.reshape(-1), int(order_id)))
        if s < 0:
            return None
        row = self._pool[s]
        b = int(row[K.P_BOOK])
        return RestingOrder(
            order_id=int(row[K.P_ID]),
            instrument=str(self._ids[b >> 1]),
            side=1 if b % 2 == 0 else -1,
            price_ticks=int(row[K.P_PRICE]),
            qty_lots=int(row[K.P_QTY]),
            account=int(row[K.P_ACCT]),
            reserved_units=int(row[K.P_RESV]),
            post_only=bool(row[K.P_FLAGS] & K.FLAG_POST_ONLY),
        )

    def open_orders(self, account: int, instrument: int | str | None = None) -> np.ndarray:
        """Ids of the live orders of ``account`` (optionally on one instrument), ascending."""
        pool = self._pool
        mask = (pool[:, K.P_QTY] > 0) & (pool[:, K.P_ACCT] == account)
        if instrument is not None:
            mask &= (pool[:, K.P_BOOK] >> 1) == self.instrument_index(instrument)
        return np.sort(pool[mask, K.P_ID])

    def reserved(self) -> np.ndarray:
        """Units held in escrow for live orders, per ledger asset (the escrow's due balance)."""
        pool = self._pool
        live = pool[:, K.P_QTY] > 0
        b = pool[live, K.P_BOOK]
        ins = b >> 1
        asset = np.where(b % 2 == 0, self._spec[ins, K.SP_QUOTE], self._spec[ins, K.SP_BASE])
        out = np.zeros(self.ledger.n_assets, dtype=_I64)
        np.add.at(out, asset, pool[live, K.P_RESV])
        return out

    def snapshot(self) -> dict[str, object]:
        """Capture the books, the tape and the counters, for :meth:`restore`.

        Used to revert an atomic action (a flash loan that is not repaid undoes every trade
        made with the borrowed funds). Copies every array, so it costs O(engine size).
        """
        return {
            key: value.copy() if isinstance(value, np.ndarray) else copy.deepcopy(value)
            for key, value in self.__dict__.items()
            if key not in _NOT_SNAPSHOT
        }

    def restore(self, snap: dict[str, object]) -> None:
        """Return to the state captured by :meth:`snapshot` (the ledger restores itself)."""
        self.__dict__.update(
            {
                k: v.copy() if isinstance(v, np.ndarray) else copy.deepcopy(v)
                for k, v in snap.items()
            }
        )
        self._bind_meta_views()
        self._refresh_kernel_args()

    def check_invariants(self) -> None:
        """Verify the books and the escrow.

        Checks that levels are sorted and non-empty, FIFO links are consistent, every resting
        quantity is positive, level totals match their orders, time priority holds inside
        every level, no book is crossed, every reservation follows the reservation rule, and
        the escrow holder's balance of each asset equals the sum of the reservations.

        Raises:
            BookInvariantError: Naming the first violation.
        """
        sums = np.zeros(self.ledger.n_assets, dtype=_I64)
        code, b, detail = K.check_books(
            self._pool.reshape(-1),
            self._lv,
            self._nodes.reshape(-1),
            self._lmap,
            self._idmap,
            self._ht,
            self._meta,
            sums,
        )
        if code:
            where = f"book {self._ids[b >> 1]!r} {'bid' if b % 2 == 0 else 'ask'}" if b >= 0 else ""
            raise BookInvariantError(
                f"{_INVARIANT_MESSAGES[int(code)]} ({where}, detail {int(detail)})"
            )
        held = self.ledger.balances[self.escrow_holder]
        for asset in range(self.ledger.n_assets):
            if int(held[asset]) != int(sums[asset]):
                raise BookInvariantError(
                    f"escrow holds {int(held[asset])} of {self.ledger.assets[asset].symbol} "
                    f"but live orders reserve {int(sums[asset])}"
                )


#: Attributes a snapshot leaves alone: the shared ledger (it has its own snapshot), the
#: immutable specs, and what is rebuilt from the restored arrays (the kernel's argument
#: tuple and the views into ``_meta``).
_NOT_SNAPSHOT = frozenset(
    {"ledger", "specs", "_kernel_args", "_state", "_nlv", "_last_px", "_spec"}
)


def _rate_units(rate: float) -> int:
    """A fee rate in parts per 10^8, rounded up (the tolerance absorbs float representation)."""
    return max(0, math.ceil(rate * K.FEE_DENOM - 1e-6))
