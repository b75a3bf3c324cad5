"""Compiled (numba) kernels of the matching engine: the batch loop and its book structures.

Everything here works on plain int64 arrays owned by :class:`~marginsim.market.engine.
MatchingEngine`; nothing is allocated per order. The layout, chosen for speed (measured
figures in ``benchmarks/test_bench_engine.py``):

* Order pool ``pool[slot * NP + field]``: one 128-byte row per order (flat, so a row offset
  is a shift), the fields a cancel needs in its first cache line. Free slots form a singly
  linked list through ``P_NEXT``; resting orders form one doubly linked FIFO list per price
  level (``P_PREV``/``P_NEXT``), so a cancel unlinks in O(1).
* Levels. Book ``b = 2 * instrument + (0 bid | 1 ask)`` keeps ``lv[b]``, the vector of its
  non-empty levels as ``(key, node)`` pairs sorted by ``key`` ascending, with ``key = price``
  for bids and ``-price`` for asks: the best level is always the last one, so consuming or
  emptying it is O(1), and opening a level near the touch moves only the few in front of
  it. A level's FIFO head, tail and total live in ``nodes[node * NN + field]``; each order
  knows its node, so a cancel never searches. The level map ``lmap`` (hash table keyed by
  ``book << 41 | price``) finds the level of a new resting order in one probe; only a new
  level searches the vector (a few steps from the touch, then bisection). Any price in
  ``1..MAX_PRICE_TICKS`` works: there is no tick window to fall out of, and a sparse book
  costs nothing per empty tick.
* Order id -> slot: ids are sequential, so a direct-mapped window ``idmap[id & (W - 1)]``
  finds almost every order with one load (see ``order_slot``); orders still resting W ids
  after their own move to the overflow hash table ``ht``.
* Hash tables (``ht``, ``lmap``): open addressing, Fibonacci hashing, linear probing,
  backward-shift deletion, load at most 1/2; ``table[2 * j]`` is a key, ``table[2 * j + 1]``
  its value.
* ``state``: engine scalars, then per book level counts, per instrument last trade price,
  then the instrument specs, in one array so that a kernel call passes few arguments.
* Trades ``trades[t, field]``: the append-only tape.

The kernel never grows an array. Before each order it checks that one more resting order,
level, node, hash entry and enough trade rows fit; if not it stops *before touching
anything*, reports what to grow in ``state[S_GROW]`` and returns the index of the order it
stopped at. The engine grows the arrays from Python and calls again from that index.

Ledger tokens move only through :func:`marginsim.ledger.kernel_transfer`.
"""

from __future__ import annotations

import numba
import numpy as np

from marginsim.ledger import kernel_transfer

# ---------------------------------------------------------------- order kinds and statuses
K_LIMIT = 0
K_MARKET = 1
K_IOC = 2
K_POST_ONLY = 3
K_CANCEL = 4
K_MODIFY = 5

ST_OK = 0
ST_NON_POSITIVE_QTY = 1
ST_NON_POSITIVE_PRICE = 2
ST_OFF_TICK = 3
ST_OFF_LOT = 4
ST_PRICE_TOO_LARGE = 5
ST_QTY_TOO_LARGE = 6
ST_NOTIONAL_TOO_LARGE = 7
ST_UNKNOWN_INSTRUMENT = 8
ST_UNKNOWN_ACCOUNT = 9
ST_INSUFFICIENT_FUNDS = 10
ST_WOULD_CROSS = 11
ST_UNKNOWN_ORDER = 12
ST_NOT_OWNER = 13
ST_INVALID_SIDE = 14
ST_INVALID_KIND = 15
ST_SELF_TRADE = 16

STP_CANCEL_RESTING = 0
STP_CANCEL_INCOMING = 1
STP_CANCEL_BOTH = 2

# ---------------------------------------------------------------- limits
MAX_PRICE_TICKS = 1 << 40
MAX_QTY_LOTS = 1 << 40
#: Bound on q * p * quote_units_per_tick_lot: notional plus a fee below it fits in int64.
MAX_NOTIONAL_UNITS = 1 << 62
#: Fee rates are integers in parts per FEE_DENOM (1e-8 resolution).
FEE_DENOM = 100_000_000
#: Sentinels the Python wrapper writes for a non-integral price or quantity.
OFF_GRID = np.iinfo(np.int64).min

# ---------------------------------------------------------------- pool fields
# The first eight fields (one 64-byte cache line) are all a cancel reads.
P_NEXT = 0
P_PREV = 1
P_QTY = 2  # remaining lots; 0 marks a free slot
P_ACCT = 3
P_ID = 4
P_BOOK = 5
P_RESV = 6  # ledger units held in escrow for this order
P_NODE = 7  # level node of a resting order
P_PRICE = 8
P_FEE_U = 9  # exact cumulative fee of the order: whole units ...
P_FEE_R = 10  # ... plus P_FEE_R / FEE_DENOM
P_SEQ = 11  # time priority stamp: increases along every level's FIFO
P_FLAGS = 12
N_POOL_FIELDS = 13
#: Row width of the flat pool (a power of two, so a row offset is a shift).
NP = 16

FLAG_POST_ONLY = 1

# ---------------------------------------------------------------- level fields
# lv[book, k]: the sorted vector of a book's levels, (key, node).
L_KEY = 0
L_NODE = 1
N_LEVEL_FIELDS = 2
# nodes[node]: one price level's FIFO and total; free nodes are chained through N_HEAD.
N_HEAD = 0
N_TAIL = 1
N_QTY = 2
N_NODE_FIELDS = 4
NN = 4

# ---------------------------------------------------------------- instrument spec fields
SP_PERP = 0
SP_BASE = 1
SP_QUOTE = 2
SP_BASE_PER_LOT = 3
SP_QUOTE_PER_TICK_LOT = 4
SP_MAKER_RATE = 5
SP_TAKER_RATE = 6
SP_MAX_RATE = 7
SP_FEE_HOLDER = 8
N_SPEC_FIELDS = 9

# ---------------------------------------------------------------- trade fields
T_STEP = 0
T_INSTRUMENT = 1
T_PRICE = 2
T_QTY = 3
T_BUYER = 4
T_SELLER = 5
T_AGGRESSOR = 6
T_MAKER_ID = 7
T_TAKER_ID = 8
N_TRADE_FIELDS = 9

# ---------------------------------------------------------------- engine state scalars
S_NEXT_ID = 0
S_FREE = 1
S_LIVE = 2
S_TRADES = 3
S_SEQ = 4
S_STEP = 5
S_ESCROW = 6
S_HOLDERS = 7
S_STP = 8
S_GROW = 9
S_ERROR = 10
S_FREE_NODE = 11
S_LEVELS = 12  # open levels, all books
S_INSTRUMENTS = 13
S_OVERFLOW = 14  # orders mapped in the overflow hash table instead of the id window
S_MAX_WINDOW = 15  # the id window grows up to this size
N_STATE = 16
# state[N_STATE:] holds, per engine: level counts per book (2 * instruments), last trade
# price per instrument, then the instrument specs (N_SPEC_FIELDS each). One array, so that
# the kernel call passes few arguments.

GROW_POOL = 1
GROW_HASH = 2
GROW_LEVELS = 4
GROW_TRADES = 8
GROW_NODES = 16
GROW_LEVEL_MAP = 32
GROW_ID_WINDOW = 64

#: Key of a level in the level map: book and price in one int64 (prices are < 2**41).
LEVEL_KEY_SHIFT = 41

# Set in state[S_ERROR] when a transfer the rules guarantee is refused (a bug, never user
# input); the engine raises after the call.
ERR_TRANSFER = 1
ERR_UNFUNDED_LIMIT = 2

# Longest linear scan from the touch before a level search switches to bisection.
_LINEAR_SCAN = 16


# Sizes below which q * p * quote_units_per_tick_lot cannot exceed MAX_NOTIONAL_UNITS, so the
# common case needs no (slow) integer division.
_SMALL = 1 << 20
_SMALL_UNIT = 1 << 22


# ================================================================ scalar helpers
# Helpers take scalars or a single array: numba then emits no reference counting in the hot
# loop (a helper taking several arrays and branching costs tens of ns per call in atomic
# increments, which is why the batch loop below is one function).
@numba.njit(cache=True, error_model="numpy")
def fee_add(units, rem, notional, rate):  # pragma: no cover - compiled
    """Add ``notional * rate / FEE_DENOM`` exactly to the fee accumulator ``(units, rem)``."""
    if rate == 0:
        return units, rem
    units += (notional // FEE_DENOM) * rate
    rem += (notional % FEE_DENOM) * rate
    units += rem // FEE_DENOM
    return units, rem % FEE_DENOM


@numba.njit(cache=True, error_model="numpy")
def fee_charged(units, rem):  # pragma: no cover - compiled
    """The fee charged for an exact accumulated fee: rounded up to a whole unit."""
    return units + (1 if rem > 0 else 0)


@numba.njit(cache=True, error_model="numpy")
def buy_cost(k, unit_notional, fu, fr, rate):  # pragma: no cover - compiled
    """Quote a taker buy of ``k`` lots costs: notional plus the increase of its rounded fee."""
    n = k * unit_notional
    u2, r2 = fee_add(fu, fr, n, rate)
    return n + fee_charged(u2, r2) - fee_charged(fu, fr)


@numba.njit(cache=True, error_model="numpy")
def check_size(qty, price, uptl, priced):  # pragma: no cover - compiled
    """Validation status of a quantity and (when ``priced``) a limit price."""
    if qty == OFF_GRID:
        return ST_OFF_LOT
    if qty <= 0:
        return ST_NON_POSITIVE_QTY
    if qty > MAX_QTY_LOTS:
        return ST_QTY_TOO_LARGE
    if priced:
        if price == OFF_GRID:
            return ST_OFF_TICK
        if price <= 0:
            return ST_NON_POSITIVE_PRICE
        if price > MAX_PRICE_TICKS:
            return ST_PRICE_TOO_LARGE
        if (qty | price) >= _SMALL or uptl >= _SMALL_UNIT:
            # Nested floor division: floor(floor(M / p) / u) == floor(M / (p * u)).
            if qty > MAX_NOTIONAL_UNITS // price // uptl:
                return ST_NOTIONAL_TOO_LARGE
    return ST_OK


# ================================================================ id -> slot hash table
# Fibonacci hashing (2**64 / golden ratio, as a signed int64). Sequential ids must be
# scattered: with the identity hash, a block of live ids meets the block of ids one table
# length later, and linear probing then walks the whole block on every insert.
_FIB = -7046029254386353131


@numba.njit(cache=True, error_model="numpy")
def _home(key, mask):  # pragma: no cover - compiled
    return ((key * _FIB) >> 29) & mask


@numba.njit(cache=True, error_model="numpy")
def ht_find(ht, key):  # pragma: no cover - compiled
    """Slot of order id ``key``, or -1."""
    mask = (ht.shape[0] >> 1) - 1
    j = _home(key, mask)
    while True:
        k = ht[2 * (j)]
        if k == key:
            return ht[2 * (j) + 1]
        if k == 0:
            return -1
        j = (j + 1) & mask


@numba.njit(cache=True, error_model="numpy")
def ht_insert(ht, key, slot):  # pragma: no cover - compiled
    """Map order id ``key`` to ``slot`` (the key must be absent and the table not full)."""
    mask = (ht.shape[0] >> 1) - 1
    j = _home(key, mask)
    while ht[2 * (j)] != 0:
        j = (j + 1) & mask
    ht[2 * (j)] = key
    ht[2 * (j) + 1] = slot


@numba.njit(cache=True, error_model="numpy")
def ht_delete(ht, key):  # pragma: no cover - compiled
    """Forget order id ``key`` (backward-shift deletion, so there are no tombstones)."""
    mask = (ht.shape[0] >> 1) - 1
    i = _home(key, mask)
    while ht[2 * (i)] != key:
        if ht[2 * (i)] == 0:
            return
        i = (i + 1) & mask
    # Knuth 6.4, algorithm R: pull later entries of the probe run into the hole.
    while True:
        ht[2 * (i)] = 0
        j = i
        while True:
            j = (j + 1) & mask
            kj = ht[2 * (j)]
            if kj == 0:
                return
            h = _home(kj, mask)
            # Entry j may fill the hole at i only if its home is not cyclically in (i, j].
            if i <= j:
                stays = i < h <= j
            else:
                stays = h > i or h <= j
            if not stays:
                ht[2 * (i)] = kj
                ht[2 * (i) + 1] = ht[2 * (j) + 1]
                i = j
                break


@numba.njit(cache=True, error_model="numpy")
def ht_insert_many(ht, keys, values):  # pragma: no cover - compiled
    """Insert ``keys[i] -> values[i]`` into a table with room for them."""
    for i in range(keys.shape[0]):
        ht_insert(ht, keys[i], values[i])


@numba.njit(cache=True, error_model="numpy")
def ht_rehash(old, new):  # pragma: no cover - compiled
    """Insert every entry of hash table ``old`` into the empty table ``new``."""
    for j in range(old.shape[0] >> 1):
        if old[2 * j] != 0:
            ht_insert(new, old[2 * j], old[2 * j + 1])


# ================================================================ id -> slot
# Orders are found by id through a direct-mapped window ``idmap[id & (W - 1)] = slot``:
# ids are sequential, so inserting is a sequential write and finding is one load plus a
# check of the slot's id. An order still resting when its cell is needed again W ids later
# is moved to the overflow hash table ``ht``, which every lookup that misses falls back to.
@numba.njit(cache=True, error_model="numpy")
def order_slot(idmap, ht, pool, oid):  # pragma: no cover - compiled
    """Slot of live order ``oid``, or -1.

    It takes three arrays, so the batch loop spells the lookup out instead of calling it
    (see the note on helpers); Python queries and the invariant check use it.
    """
    c = idmap[oid & (idmap.shape[0] - 1)]
    if c >= 0 and pool[c * NP + P_ID] == oid:
        return c
    return ht_find(ht, oid)


# ================================================================ the batch loop
@numba.njit(cache=True, error_model="numpy")
def process_batch(
    b_ins,
    b_side,
    b_kind,
    b_price,
    b_qty,
    b_acct,
    b_ref,
    out,
    start,
    pool,
    lv,
    nodes,
    lmap,
    idmap,
    ht,
    state,
    trades,
    balance,
):  # pragma: no cover - compiled
    """Process orders ``start..`` of a batch in order; return the index it stopped at.

    ``out[0..3, i]`` receive order id, status, filled lots and resting lots of order ``i``.
    The loop stops early, before touching order ``i``, when a capacity could be exceeded;
    ``state[S_GROW]`` then says which arrays to grow.

    One function on purpose: the counters live in local variables and no helper receives
    more than one array (see the note on helpers above).
    """
    n = b_ins.shape[0]
    if (
        b_side.shape[0] != n
        or b_kind.shape[0] != n
        or b_price.shape[0] != n
        or b_qty.shape[0] != n
        or b_acct.shape[0] != n
        or b_ref.shape[0] != n
        or out.shape[1] != n
    ):
        return -1
    nb = state[S_INSTRUMENTS]
    o_nlv = N_STATE
    o_last = N_STATE + 2 * nb
    o_spec = N_STATE + 3 * nb
    cap_levels = lv.shape[1] >> 1
    cap_trades = trades.shape[0]
    ht_size = ht.shape[0] >> 1
    wmask = idmap.shape[0] - 1
    # When a quarter of the window's size lives in the overflow table, the live ids span
    # more than the window: ask for a larger one (up to the engine's maximum).
    can_widen = idmap.shape[0] < state[S_MAX_WINDOW]
    n_over = state[S_OVERFLOW]
    lmap_size = lmap.shape[0] >> 1
    n_levels = state[S_LEVELS]
    escrow = state[S_ESCROW]
    n_holders = state[S_HOLDERS]
    stp = state[S_STP]
    step = state[S_STEP]
    next_id = state[S_NEXT_ID]
    free = state[S_FREE]
    free_node = state[S_FREE_NODE]
    live = state[S_LIVE]
    n_tr = state[S_TRADES]
    seq = state[S_SEQ]
    err = state[S_ERROR]
    grow = 0
    i = start
    while i < n:
        ins = b_ins[i]
        valid_ins = ins >= 0 and ins < nb
        # ---------------------------------------------------------- room for this order
        if free < 0:
            grow |= GROW_POOL
        if free_node < 0:
            grow |= GROW_NODES
        if 2 * (n_over + 1) > ht_size:
            grow |= GROW_HASH
        if can_widen and 4 * (n_over + 1) > idmap.shape[0]:
            grow |= GROW_ID_WINDOW
        if 2 * (n_levels + 1) > lmap_size:
            grow |= GROW_LEVEL_MAP
        if n_tr + live + 1 > cap_trades:
            grow |= GROW_TRADES
        if valid_ins and (
            state[o_nlv + 2 * ins] >= cap_levels or state[o_nlv + 2 * ins + 1] >= cap_levels
        ):
            grow |= GROW_LEVELS
        if grow != 0:
            break
        acct = b_acct[i]
        kind = b_kind[i]
        st = ST_OK
        if not valid_ins:
            st = ST_UNKNOWN_INSTRUMENT
        elif acct < 0 or acct >= n_holders or acct == escrow:
            st = ST_UNKNOWN_ACCOUNT
        elif kind < K_LIMIT or kind > K_MODIFY:
            st = ST_INVALID_KIND
        if st != ST_OK:
            out[0, i] = 0
            out[1, i] = st
            out[2, i] = 0
            out[3, i] = 0
            i += 1
            continue
        so = o_spec + ins * N_SPEC_FIELDS
        perp = state[so + SP_PERP] != 0
        base = state[so + SP_BASE]
        quote = state[so + SP_QUOTE]
        bupl = state[so + SP_BASE_PER_LOT]
        uptl = state[so + SP_QUOTE_PER_TICK_LOT]
        maker_rate = state[so + SP_MAKER_RATE]
        taker_rate = state[so + SP_TAKER_RATE]
        fee_holder = state[so + SP_FEE_HOLDER]
        s = -1  # pool slot of the order being cancelled, modified or entered
        oid = 0
        side = 0
        price = 0
        qty = 0
        limit_px = 0
        take_qty = 0
        rests = False
        crosses = False
        flags = 0
        fu = 0  # the order's exact cumulative fee (units, remainder)
        fr = 0
        if kind == K_CANCEL or kind == K_MODIFY:
            # ====================================================== cancel / modify
            ref = b_ref[i]
            if ref > 0:
                s = idmap[ref & wmask]
                if s < 0 or pool[s * NP + P_ID] != ref:
                    s = ht_find(ht, ref) if n_over > 0 else -1
            if s < 0 or (pool[s * NP + P_BOOK] >> 1) != ins:
                st = ST_UNKNOWN_ORDER
            elif pool[s * NP + P_ACCT] != acct:
                st = ST_NOT_OWNER
            elif kind == K_MODIFY:
                st = check_size(b_qty[i], b_price[i], uptl, True)
            if st != ST_OK:
                out[0, i] = 0
                out[1, i] = st
                out[2, i] = 0
                out[3, i] = 0
                i += 1
                continue
            b = pool[s * NP + P_BOOK]
            side = 1 if (b & 1) == 0 else -1
            old_qty = pool[s * NP + P_QTY]
            resv = pool[s * NP + P_RESV]
            resv_asset = quote if side > 0 else base
            nd = pool[s * NP + P_NODE]
            if kind == K_MODIFY:
                old_px = pool[s * NP + P_PRICE]
                price = b_price[i]
                qty = b_qty[i]
                fu = pool[s * NP + P_FEE_U]
                fr = pool[s * NP + P_FEE_R]
                if price == old_px and qty <= old_qty:
                    # Same price, not larger: shrink in place, keep time priority.
                    nodes[nd * NN + N_QTY] -= old_qty - qty
                    pool[s * NP + P_QTY] = qty
                    if not perp:
                        if side > 0:
                            x = qty * price * uptl
                            u1, r1 = fee_add(fu, fr, x, maker_rate)
                            need = x + fee_charged(u1, r1) - fee_charged(fu, fr)
                        else:
                            need = qty * bupl
                        if not kernel_transfer(balance, escrow, acct, resv_asset, resv - need):
                            err = ERR_TRANSFER
                        pool[s * NP + P_RESV] = need
                    out[0, i] = ref
                    out[1, i] = ST_OK
                    out[2, i] = 0
                    out[3, i] = qty
                    i += 1
                    continue
                # Otherwise cancel and re-enter at the back; check first that it can.
                limit_px = price
                ob = 2 * ins + (1 if side > 0 else 0)
                nob = state[o_nlv + ob]
                if nob > 0:
                    key = lv[ob, 2 * (nob - 1) + L_KEY]
                    crosses = -key <= price if side > 0 else key >= price
                flags = pool[s * NP + P_FLAGS]
                if crosses and (flags & FLAG_POST_ONLY) != 0:
                    st = ST_WOULD_CROSS
                elif not perp:
                    avail = balance[acct, resv_asset] + resv
                    if side > 0:
                        x = qty * price * uptl
                        rate = state[so + SP_MAX_RATE] if crosses else maker_rate
                        u1, r1 = fee_add(fu, fr, x, rate)
                        if avail < x + fee_charged(u1, r1) - fee_charged(fu, fr):
                            st = ST_INSUFFICIENT_FUNDS
                    elif avail // bupl < qty:
                        st = ST_INSUFFICIENT_FUNDS
                if st != ST_OK:
                    out[0, i] = 0
                    out[1, i] = st
                    out[2, i] = 0
                    out[3, i] = 0
                    i += 1
                    continue
            # Take the order off its level and give its escrow back.
            prv = pool[s * NP + P_PREV]
            nxt = pool[s * NP + P_NEXT]
            if prv == -1:
                nodes[nd * NN + N_HEAD] = nxt
            else:
                pool[prv * NP + P_NEXT] = nxt
            if nxt == -1:
                nodes[nd * NN + N_TAIL] = prv
            else:
                pool[nxt * NP + P_PREV] = prv
            nodes[nd * NN + N_QTY] -= old_qty
            if nxt == -1 and prv == -1:
                # The level is empty: find it from the touch (a few steps, then bisect) and
                # close it. Written out here, not as a helper: see the note on helpers.
                old_px = pool[s * NP + P_PRICE]
                key = old_px if side > 0 else -old_px
                nl = state[o_nlv + b]
                pos = nl - 1
                steps = 0
                while lv[b, 2 * (pos) + L_KEY] > key:
                    pos -= 1
                    steps += 1
                    if steps == _LINEAR_SCAN:
                        lo = -1
                        hi = pos + 1
                        while hi - lo > 1:
                            mid = (lo + hi) >> 1
                            if lv[b, 2 * (mid) + L_KEY] <= key:
                                lo = mid
                            else:
                                hi = mid
                        pos = lo
                        break
                for j in range(pos, nl - 1):
                    lv[b, 2 * (j) + L_KEY] = lv[b, 2 * (j + 1) + L_KEY]
                    lv[b, 2 * (j) + L_NODE] = lv[b, 2 * (j + 1) + L_NODE]
                state[o_nlv + b] = nl - 1
                ht_delete(lmap, (b << LEVEL_KEY_SHIFT) | old_px)
                n_levels -= 1
                nodes[nd * NN + N_HEAD] = free_node
                free_node = nd
            if resv > 0:
                if not kernel_transfer(balance, escrow, acct, resv_asset, resv):
                    err = ERR_TRANSFER
                pool[s * NP + P_RESV] = 0
            if kind == K_CANCEL:
                if idmap[ref & wmask] == s:
                    idmap[ref & wmask] = -1
                else:
                    ht_delete(ht, ref)
                    n_over -= 1
                pool[s * NP + P_QTY] = 0
                pool[s * NP + P_NEXT] = free
                free = s
                live -= 1
                out[0, i] = ref
                out[1, i] = ST_OK
                out[2, i] = 0
                out[3, i] = 0
                i += 1
                continue
            oid = ref
            take_qty = qty
            rests = True
        else:
            # ====================================================== new order
            side = b_side[i]
            price = b_price[i]
            qty = b_qty[i]
            if side != 1 and side != -1:
                st = ST_INVALID_SIDE
            else:
                st = check_size(qty, price, uptl, kind != K_MARKET)
            if st == ST_OK:
                if kind == K_MARKET:
                    limit_px = MAX_PRICE_TICKS + 1 if side > 0 else 0
                else:
                    limit_px = price
                ob = 2 * ins + (1 if side > 0 else 0)
                nob = state[o_nlv + ob]
                best = 0
                if nob > 0:
                    key = lv[ob, 2 * (nob - 1) + L_KEY]
                    best = -key if side > 0 else key
                    crosses = best <= limit_px if side > 0 else best >= limit_px
                rests = kind == K_LIMIT or kind == K_POST_ONLY
                take_qty = qty
                if kind == K_POST_ONLY and crosses:
                    st = ST_WOULD_CROSS
                elif not perp:
                    if side > 0:
                        have = balance[acct, quote]
                        if rests:
                            # Fundable at its limit with the larger fee rate if it can take,
                            # with the maker rate if it can only rest.
                            x = qty * price * uptl
                            rate = state[so + SP_MAX_RATE] if crosses else maker_rate
                            u1, r1 = fee_add(0, 0, x, rate)
                            if have < x + fee_charged(u1, r1):
                                st = ST_INSUFFICIENT_FUNDS
                        elif crosses and buy_cost(1, best * uptl, 0, 0, taker_rate) > have:
                            st = ST_INSUFFICIENT_FUNDS
                    else:
                        lots = balance[acct, base] // bupl
                        if rests:
                            if lots < qty:
                                st = ST_INSUFFICIENT_FUNDS
                        elif crosses:
                            if lots == 0:
                                st = ST_INSUFFICIENT_FUNDS
                            elif lots < qty:
                                take_qty = lots
            if st != ST_OK:
                out[0, i] = 0
                out[1, i] = st
                out[2, i] = 0
                out[3, i] = 0
                i += 1
                continue
            oid = next_id
            next_id += 1
            flags = FLAG_POST_ONLY if kind == K_POST_ONLY else 0
        # ========================================================== take liquidity
        # stop: 0 done, 1 self-trade prevention cancelled the incoming order, 2 a market/IOC
        # buy cannot pay for the next lot.
        stop = 0
        filled = 0
        if crosses:
            ob = 2 * ins + (1 if side > 0 else 0)
            while filled < take_qty and stop == 0:
                nl = state[o_nlv + ob]
                if nl == 0:
                    break
                key = lv[ob, 2 * (nl - 1) + L_KEY]  # the best level is the last one
                px = -key if side > 0 else key
                if (side > 0 and px > limit_px) or (side < 0 and px < limit_px):
                    break
                nd = lv[ob, 2 * (nl - 1) + L_NODE]
                m = nodes[nd * NN + N_HEAD]
                while m != -1 and filled < take_qty:
                    m_acct = pool[m * NP + P_ACCT]
                    mq = pool[m * NP + P_QTY]
                    if m_acct == acct:
                        # Self-trade prevention.
                        if stp == STP_CANCEL_INCOMING:
                            stop = 1
                            break
                        if stp == STP_CANCEL_BOTH:
                            stop = 1
                        m_resv = pool[m * NP + P_RESV]
                        if m_resv > 0:
                            if not kernel_transfer(
                                balance, escrow, m_acct, base if side > 0 else quote, m_resv
                            ):
                                err = ERR_TRANSFER
                            pool[m * NP + P_RESV] = 0
                        nodes[nd * NN + N_QTY] -= mq
                    else:
                        k = take_qty - filled
                        if mq < k:
                            k = mq
                        if not perp:
                            un = px * uptl
                            notional = k * un
                            tu, tr = fee_add(fu, fr, notional, taker_rate)
                            ft = fee_charged(tu, tr) - fee_charged(fu, fr)
                            if side > 0:
                                have = balance[acct, quote]
                                if notional + ft > have:
                                    # Cap the buy at its quote balance (binds only for market
                                    # and IOC orders: limit buys were funded in full up front).
                                    if rests:
                                        err = ERR_UNFUNDED_LIMIT
                                    est = have / (un * (1.0 + taker_rate / FEE_DENOM))
                                    k2 = k if est >= k else int(est) + 2
                                    if k2 > k:
                                        k2 = k
                                    while k2 > 0 and buy_cost(k2, un, fu, fr, taker_rate) > have:
                                        k2 -= 1
                                    while (
                                        k2 < k and buy_cost(k2 + 1, un, fu, fr, taker_rate) <= have
                                    ):
                                        k2 += 1
                                    if k2 == 0:
                                        stop = 2
                                        break
                                    k = k2
                                    notional = k * un
                                    tu, tr = fee_add(fu, fr, notional, taker_rate)
                                    ft = fee_charged(tu, tr) - fee_charged(fu, fr)
                            fu = tu
                            fr = tr
                            mu0 = pool[m * NP + P_FEE_U]
                            mr0 = pool[m * NP + P_FEE_R]
                            mu, mr = fee_add(mu0, mr0, notional, maker_rate)
                            fm = fee_charged(mu, mr) - fee_charged(mu0, mr0)
                            pool[m * NP + P_FEE_U] = mu
                            pool[m * NP + P_FEE_R] = mr
                            ok = True
                            if side > 0:
                                # Quote from the taker's wallet, base out of the maker's escrow.
                                ok &= kernel_transfer(balance, acct, m_acct, quote, notional - fm)
                                ok &= kernel_transfer(balance, acct, fee_holder, quote, fm + ft)
                                ok &= kernel_transfer(balance, escrow, acct, base, k * bupl)
                                pool[m * NP + P_RESV] -= k * bupl
                            else:
                                # Quote and the maker's fee out of escrow, base from the taker.
                                ok &= kernel_transfer(balance, escrow, acct, quote, notional - ft)
                                ok &= kernel_transfer(balance, escrow, fee_holder, quote, fm + ft)
                                ok &= kernel_transfer(balance, acct, m_acct, base, k * bupl)
                                pool[m * NP + P_RESV] -= notional + fm
                            if not ok:
                                err = ERR_TRANSFER
                        trades[n_tr, T_STEP] = step
                        trades[n_tr, T_INSTRUMENT] = ins
                        trades[n_tr, T_PRICE] = px
                        trades[n_tr, T_QTY] = k
                        trades[n_tr, T_BUYER] = acct if side > 0 else m_acct
                        trades[n_tr, T_SELLER] = m_acct if side > 0 else acct
                        trades[n_tr, T_AGGRESSOR] = side
                        trades[n_tr, T_MAKER_ID] = pool[m * NP + P_ID]
                        trades[n_tr, T_TAKER_ID] = oid
                        n_tr += 1
                        state[o_last + ins] = px
                        filled += k
                        pool[m * NP + P_QTY] = mq - k
                        nodes[nd * NN + N_QTY] -= k
                        if mq > k:
                            break  # the maker stays, partly filled; the taker is done
                        if pool[m * NP + P_RESV] != 0:
                            err = ERR_TRANSFER  # a filled order's escrow is exactly spent
                    # The head order leaves the book (filled, or cancelled by STP).
                    nxt = pool[m * NP + P_NEXT]
                    if nxt == -1:
                        # The best level is empty: drop it (it is the last one).
                        state[o_nlv + ob] = nl - 1
                        ht_delete(lmap, (ob << LEVEL_KEY_SHIFT) | px)
                        n_levels -= 1
                        nodes[nd * NN + N_HEAD] = free_node
                        free_node = nd
                    else:
                        nodes[nd * NN + N_HEAD] = nxt
                        pool[nxt * NP + P_PREV] = -1
                    m_id = pool[m * NP + P_ID]
                    if idmap[m_id & wmask] == m:
                        idmap[m_id & wmask] = -1
                    else:
                        ht_delete(ht, m_id)
                        n_over -= 1
                    pool[m * NP + P_QTY] = 0
                    pool[m * NP + P_NEXT] = free
                    free = m
                    live -= 1
                    m = nxt
                    if stop != 0:
                        break
        # ========================================================== rest the remainder
        rem = qty - filled
        resting = 0
        if rests and rem > 0 and stop == 0:
            b = 2 * ins + (0 if side > 0 else 1)
            if s < 0:
                s = free
                free = pool[s * NP + P_NEXT]
                live += 1
                pool[s * NP + P_ACCT] = acct
                pool[s * NP + P_ID] = oid
                pool[s * NP + P_BOOK] = b
                pool[s * NP + P_FLAGS] = flags
                c = oid & wmask
                old = idmap[c]
                if old >= 0:
                    # Still resting W ids later: its mapping moves to the overflow table.
                    ht_insert(ht, pool[old * NP + P_ID], old)
                    n_over += 1
                idmap[c] = s
            pool[s * NP + P_QTY] = rem
            pool[s * NP + P_PRICE] = price
            pool[s * NP + P_FEE_U] = fu
            pool[s * NP + P_FEE_R] = fr
            pool[s * NP + P_SEQ] = seq
            seq += 1
            # Its level: one probe of the level map; only a new level needs the sorted
            # vector searched (from the touch: a few steps, then bisect) and shifted.
            lkey = (b << LEVEL_KEY_SHIFT) | price
            nd = ht_find(lmap, lkey)
            if nd < 0:
                key = price if side > 0 else -price
                nl = state[o_nlv + b]
                pos = nl - 1
                steps = 0
                while pos >= 0 and lv[b, 2 * (pos) + L_KEY] > key:
                    pos -= 1
                    steps += 1
                    if steps == _LINEAR_SCAN:
                        lo = -1
                        hi = pos + 1
                        while hi - lo > 1:
                            mid = (lo + hi) >> 1
                            if lv[b, 2 * (mid) + L_KEY] <= key:
                                lo = mid
                            else:
                                hi = mid
                        pos = lo
                        break
                pos += 1
                nd = free_node
                free_node = nodes[nd * NN + N_HEAD]
                nodes[nd * NN + N_HEAD] = -1
                nodes[nd * NN + N_TAIL] = -1
                nodes[nd * NN + N_QTY] = 0
                for j in range(nl, pos, -1):
                    lv[b, 2 * (j) + L_KEY] = lv[b, 2 * (j - 1) + L_KEY]
                    lv[b, 2 * (j) + L_NODE] = lv[b, 2 * (j - 1) + L_NODE]
                lv[b, 2 * (pos) + L_KEY] = key
                lv[b, 2 * (pos) + L_NODE] = nd
                state[o_nlv + b] = nl + 1
                ht_insert(lmap, lkey, nd)
                n_levels += 1
            pool[s * NP + P_NODE] = nd
            tail = nodes[nd * NN + N_TAIL]
            pool[s * NP + P_PREV] = tail
            pool[s * NP + P_NEXT] = -1
            if tail == -1:
                nodes[nd * NN + N_HEAD] = s
            else:
                pool[tail * NP + P_NEXT] = s
            nodes[nd * NN + N_TAIL] = s
            nodes[nd * NN + N_QTY] += rem
            need = 0
            if not perp:
                if side > 0:
                    x = rem * price * uptl
                    u1, r1 = fee_add(fu, fr, x, maker_rate)
                    need = x + fee_charged(u1, r1) - fee_charged(fu, fr)
                    asset = quote
                else:
                    need = rem * bupl
                    asset = base
                if not kernel_transfer(balance, acct, escrow, asset, need):
                    err = ERR_TRANSFER
            pool[s * NP + P_RESV] = need
            resting = rem
        elif s >= 0:
            # A modified order that did not come back to the book.
            if idmap[oid & wmask] == s:
                idmap[oid & wmask] = -1
            else:
                ht_delete(ht, oid)
                n_over -= 1
            pool[s * NP + P_QTY] = 0
            pool[s * NP + P_NEXT] = free
            free = s
            live -= 1
        out[0, i] = oid
        out[1, i] = ST_SELF_TRADE if stop == 1 else ST_OK
        out[2, i] = filled
        out[3, i] = resting
        i += 1
    state[S_NEXT_ID] = next_id
    state[S_FREE] = free
    state[S_FREE_NODE] = free_node
    state[S_LEVELS] = n_levels
    state[S_OVERFLOW] = n_over
    state[S_LIVE] = live
    state[S_TRADES] = n_tr
    state[S_SEQ] = seq
    state[S_GROW] = grow
    state[S_ERROR] = err
    return i


# ================================================================ invariants
@numba.njit(cache=True, error_model="numpy")
def check_books(pool, lv, nodes, lmap, idmap, ht, state, escrow_sums):  # pragma: no cover
    """Verify the book structures; return ``(code, book, detail)`` with code 0 when sound.

    Also adds each resting order's reservation to ``escrow_sums[asset]``.

    Codes: 1 levels not strictly sorted, 2 empty level, 3 broken FIFO links, 4 non-positive
    resting quantity, 5 level quantity differs from its orders, 6 time priority violated,
    7 order in the wrong book or at the wrong price, 8 hash table does not find an order,
    9 live order count differs, 10 crossed book, 11 reservation differs from the rule,
    12 level map does not find a level, 13 level count differs.
    """
    nb = state[S_INSTRUMENTS]
    o_nlv = N_STATE
    o_spec = N_STATE + 3 * nb
    live = 0
    levels = 0
    for b in range(2 * nb):
        ins = b >> 1
        so = o_spec + ins * N_SPEC_FIELDS
        n = state[o_nlv + b]
        for j in range(n):
            if j > 0 and lv[b, 2 * (j - 1) + L_KEY] >= lv[b, 2 * (j) + L_KEY]:
                return 1, b, j
            nd = lv[b, 2 * (j) + L_NODE]
            s = nodes[nd * NN + N_HEAD]
            if s == -1:
                return 2, b, j
            price = lv[b, 2 * (j) + L_KEY] if (b & 1) == 0 else -lv[b, 2 * (j) + L_KEY]
            if ht_find(lmap, (b << LEVEL_KEY_SHIFT) | price) != nd:
                return 12, b, price
            levels += 1
            total = 0
            prev = -1
            last_seq = -1
            while s != -1:
                oid = pool[s * NP + P_ID]
                qty = pool[s * NP + P_QTY]
                if pool[s * NP + P_PREV] != prev:
                    return 3, b, oid
                if qty <= 0:
                    return 4, b, oid
                if pool[s * NP + P_SEQ] <= last_seq:
                    return 6, b, oid
                if (
                    pool[s * NP + P_BOOK] != b
                    or pool[s * NP + P_PRICE] != price
                    or pool[s * NP + P_NODE] != nd
                ):
                    return 7, b, oid
                if order_slot(idmap, ht, pool, oid) != s:
                    return 8, b, oid
                need = 0
                if state[so + SP_PERP] == 0:
                    if (b & 1) == 0:
                        x = qty * price * state[so + SP_QUOTE_PER_TICK_LOT]
                        fu = pool[s * NP + P_FEE_U]
                        fr = pool[s * NP + P_FEE_R]
                        u1, r1 = fee_add(fu, fr, x, state[so + SP_MAKER_RATE])
                        need = x + fee_charged(u1, r1) - fee_charged(fu, fr)
                        escrow_sums[state[so + SP_QUOTE]] += need
                    else:
                        need = qty * state[so + SP_BASE_PER_LOT]
                        escrow_sums[state[so + SP_BASE]] += need
                if pool[s * NP + P_RESV] != need:
                    return 11, b, oid
                last_seq = pool[s * NP + P_SEQ]
                total += qty
                live += 1
                prev = s
                s = pool[s * NP + P_NEXT]
            if nodes[nd * NN + N_TAIL] != prev:
                return 3, b, j
            if total != nodes[nd * NN + N_QTY]:
                return 5, b, j
    for ins in range(nb):
        n_bid = state[o_nlv + 2 * ins]
        n_ask = state[o_nlv + 2 * ins + 1]
        if n_bid > 0 and n_ask > 0:
            if lv[2 * ins, 2 * (n_bid - 1) + L_KEY] >= -lv[2 * ins + 1, 2 * (n_ask - 1) + L_KEY]:
                return 10, 2 * ins, 0
    if live != state[S_LIVE]:
        return 9, -1, live
    if levels != state[S_LEVELS]:
        return 13, -1, levels
    return 0, -1, 0
