"""A plain-Python reference order book with the engine's rules, for differential tests.

Written for obviousness, not speed: per instrument, each side is a sorted list of prices
plus a deque of orders per price (cancelled orders are marked dead and skipped when they
reach the front), an id -> order dict, balances in a dict of Python ints, and fees kept as
exact rational numerators (Python big ints). It implements the rules of
``marginsim.market.engine`` (see its module docstring) one order at a time.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import math
from collections.abc import Sequence

from marginsim.market.engine import (
    MAX_NOTIONAL_UNITS,
    MAX_PRICE_TICKS,
    MAX_QTY_LOTS,
    BookSpec,
    OrderKind,
    SelfTradePolicy,
)
from marginsim.market.engine import OrderStatus as S

FEE_DENOM = 10**8
OFF_GRID = -(2**63)


def rate_units(rate: float) -> int:
    return max(0, math.ceil(rate * FEE_DENOM - 1e-6))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclasses.dataclass
class RefOrder:
    order_id: int
    ins: int
    side: int
    price: int
    qty: int
    acct: int
    post_only: bool
    fee_num: int = 0  # exact cumulative fee of the order times FEE_DENOM
    resv: int = 0
    live: bool = True


class RefSide:
    """One side of one book: sorted prices, a FIFO deque per price."""

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.prices: list[int] = []  # ascending
        self.queues: dict[int, collections.deque[RefOrder]] = {}
        self.live_count: dict[int, int] = {}

    def best(self) -> int | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.is_bid else self.prices[0]

    def add(self, order: RefOrder) -> None:
        p = order.price
        if p not in self.queues:
            bisect.insort(self.prices, p)
            self.queues[p] = collections.deque()
            self.live_count[p] = 0
        self.queues[p].append(order)
        self.live_count[p] += 1

    def drop(self, order: RefOrder) -> None:
        order.live = False
        p = order.price
        self.live_count[p] -= 1
        if self.live_count[p] == 0:
            del self.prices[bisect.bisect_left(self.prices, p)]
            del self.queues[p]
            del self.live_count[p]

    def head(self, price: int) -> RefOrder:
        q = self.queues[price]
        while not q[0].live:
            q.popleft()
        return q[0]

    def levels(self) -> list[tuple[int, list[RefOrder]]]:
        """Best first, each level's live orders in time priority."""
        prices = self.prices[::-1] if self.is_bid else self.prices
        return [(p, [o for o in self.queues[p] if o.live]) for p in prices]


class ReferenceBook:
    """The engine's rules, one order at a time, in plain Python.

    Args:
        specs: The instruments.
        balances: ``{(holder, asset): units}``; copied.
        n_holders: Valid accounts are ``0..n_holders - 1`` except the escrow.
        escrow: Escrow holder.
        stp: Self-trade prevention policy.
    """

    def __init__(
        self,
        specs: Sequence[BookSpec],
        balances: dict[tuple[int, int], int],
        n_holders: int,
        escrow: int,
        stp: int = SelfTradePolicy.CANCEL_RESTING,
    ) -> None:
        self.specs = list(specs)
        self.bal = collections.defaultdict(int, balances)
        self.n_holders = n_holders
        self.escrow = escrow
        self.stp = int(stp)
        self.sides = [(RefSide(True), RefSide(False)) for _ in self.specs]
        self.orders: dict[int, RefOrder] = {}
        self.next_id = 1
        self.step = 0
        self.trades: list[tuple[int, ...]] = []
        self.maker_rate = [0 if s.is_perp else rate_units(s.maker_fee) for s in self.specs]
        self.taker_rate = [0 if s.is_perp else rate_units(s.taker_fee) for s in self.specs]

    # ------------------------------------------------------------------ ledger
    def move(self, src: int, dst: int, asset: int, amount: int) -> None:
        assert amount >= 0 and self.bal[(src, asset)] >= amount, "overdraft in reference"
        self.bal[(src, asset)] -= amount
        self.bal[(dst, asset)] += amount

    def fee_increase(self, fee_num: int, notional: int, rate: int) -> int:
        """Increase of the rounded-up fee when ``notional`` at ``rate`` is added."""
        return ceil_div(fee_num + notional * rate, FEE_DENOM) - ceil_div(fee_num, FEE_DENOM)

    def need(self, o: RefOrder) -> int:
        """Escrow a resting spot order can still need."""
        spec = self.specs[o.ins]
        if o.side < 0:
            return o.qty * spec.base_units_per_lot
        x = o.qty * o.price * spec.quote_units_per_tick_lot
        return x + self.fee_increase(o.fee_num, x, self.maker_rate[o.ins])

    def asset_of(self, o: RefOrder) -> int:
        spec = self.specs[o.ins]
        return spec.quote_asset if o.side > 0 else spec.base_asset

    # ------------------------------------------------------------------ book helpers
    def own(self, o: RefOrder) -> RefSide:
        return self.sides[o.ins][0 if o.side > 0 else 1]

    def remove(self, o: RefOrder) -> None:
        """Cancel a resting order: off the book, escrow back."""
        self.own(o).drop(o)
        if o.resv:
            self.move(self.escrow, o.acct, self.asset_of(o), o.resv)
            o.resv = 0
        del self.orders[o.order_id]

    def rest(self, o: RefOrder) -> None:
        o.live = True
        self.own(o).add(o)
        self.orders[o.order_id] = o
        if not self.specs[o.ins].is_perp:
            o.resv = self.need(o)
            self.move(o.acct, self.escrow, self.asset_of(o), o.resv)

    def crosses(self, ins: int, side: int, limit: int) -> tuple[bool, int]:
        opp = self.sides[ins][1 if side > 0 else 0]
        best = opp.best()
        if best is None:
            return False, 0
        return (best <= limit if side > 0 else best >= limit), best

    # ------------------------------------------------------------------ matching
    def take(
        self, ins: int, side: int, limit: int, qty: int, acct: int, oid: int, fee_num: int
    ) -> tuple[int, int, int]:
        """Returns (filled, fee_num, stop) with stop 0 done, 1 self-trade, 2 out of funds."""
        spec = self.specs[ins]
        opp = self.sides[ins][1 if side > 0 else 0]
        rem, filled = qty, 0
        while rem > 0:
            best = opp.best()
            if best is None or (best > limit if side > 0 else best < limit):
                break
            maker = opp.head(best)
            if maker.acct == acct:
                if self.stp == SelfTradePolicy.CANCEL_INCOMING:
                    return filled, fee_num, 1
                self.remove(maker)
                if self.stp == SelfTradePolicy.CANCEL_BOTH:
                    return filled, fee_num, 1
                continue
            k = min(rem, maker.qty)
            if not spec.is_perp:
                unit = best * spec.quote_units_per_tick_lot
                t_rate, m_rate = self.taker_rate[ins], self.maker_rate[ins]

                def cost(j: int, unit: int = unit, fee_num: int = fee_num, t_rate: int = t_rate):
                    return j * unit + self.fee_increase(fee_num, j * unit, t_rate)

                if side > 0:
                    have = self.bal[(acct, spec.quote_asset)]
                    lo, hi = 0, k  # largest j in [0, k] with cost(j) <= have
                    while lo < hi:
                        mid = (lo + hi + 1) // 2
                        if cost(mid) <= have:
                            lo = mid
                        else:
                            hi = mid - 1
                    if lo == 0:
                        return filled, fee_num, 2
                    k = lo
                n = k * unit
                ft = self.fee_increase(fee_num, n, t_rate)
                fee_num += n * t_rate
                fm = self.fee_increase(maker.fee_num, n, m_rate)
                maker.fee_num += n * m_rate
                base = k * spec.base_units_per_lot
                # The buyer pays notional + its fee, the seller gets notional - its fee; a
                # resting order pays out of escrow.
                if side > 0:
                    self.move(acct, maker.acct, spec.quote_asset, n)
                    self.move(acct, spec.fee_holder, spec.quote_asset, ft)
                    self.move(maker.acct, spec.fee_holder, spec.quote_asset, fm)
                    self.move(self.escrow, acct, spec.base_asset, base)
                    maker.resv -= base
                else:
                    self.move(self.escrow, acct, spec.quote_asset, n)
                    self.move(self.escrow, spec.fee_holder, spec.quote_asset, fm)
                    self.move(acct, spec.fee_holder, spec.quote_asset, ft)
                    self.move(acct, maker.acct, spec.base_asset, base)
                    maker.resv -= n + fm
            buyer, seller = (acct, maker.acct) if side > 0 else (maker.acct, acct)
            self.trades.append((self.step, ins, best, k, buyer, seller, side, maker.order_id, oid))
            maker.qty -= k
            rem -= k
            filled += k
            if maker.qty == 0:
                assert maker.resv == 0
                self.remove(maker)
        return filled, fee_num, 0

    # ------------------------------------------------------------------ validation
    @staticmethod
    def check_size(qty: int, price: int, uptl: int, priced: bool) -> int:
        if qty == OFF_GRID:
            return S.OFF_LOT
        if qty <= 0:
            return S.NON_POSITIVE_QTY
        if qty > MAX_QTY_LOTS:
            return S.QTY_TOO_LARGE
        if priced:
            if price == OFF_GRID:
                return S.OFF_TICK
            if price <= 0:
                return S.NON_POSITIVE_PRICE
            if price > MAX_PRICE_TICKS:
                return S.PRICE_TOO_LARGE
            if qty * price * uptl > MAX_NOTIONAL_UNITS:
                return S.NOTIONAL_TOO_LARGE
        return S.OK

    # ------------------------------------------------------------------ entry point
    def submit(
        self, ins: int, side: int, kind: int, price: int, qty: int, acct: int, ref: int = 0
    ) -> tuple[int, int, int, int]:
        """One instruction; returns (order_id, status, filled_lots, resting_lots)."""
        if not 0 <= ins < len(self.specs):
            return 0, S.UNKNOWN_INSTRUMENT, 0, 0
        if not 0 <= acct < self.n_holders or acct == self.escrow:
            return 0, S.UNKNOWN_ACCOUNT, 0, 0
        if kind == OrderKind.CANCEL:
            o = self.orders.get(ref)
            if o is None or o.ins != ins:
                return 0, S.UNKNOWN_ORDER, 0, 0
            if o.acct != acct:
                return 0, S.NOT_OWNER, 0, 0
            self.remove(o)
            return ref, S.OK, 0, 0
        if kind == OrderKind.MODIFY:
            return self.modify(ins, acct, ref, price, qty)
        if kind in (OrderKind.LIMIT, OrderKind.MARKET, OrderKind.IOC, OrderKind.POST_ONLY):
            return self.new_order(ins, side, kind, price, qty, acct)
        return 0, S.INVALID_KIND, 0, 0

    def new_order(
        self, ins: int, side: int, kind: int, price: int, qty: int, acct: int
    ) -> tuple[int, int, int, int]:
        spec = self.specs[ins]
        if side not in (1, -1):
            return 0, S.INVALID_SIDE, 0, 0
        priced = kind != OrderKind.MARKET
        st = self.check_size(qty, price, spec.quote_units_per_tick_lot, priced)
        if st != S.OK:
            return 0, st, 0, 0
        limit = price if priced else (MAX_PRICE_TICKS + 1 if side > 0 else 0)
        crosses, best = self.crosses(ins, side, limit)
        if kind == OrderKind.POST_ONLY and crosses:
            return 0, S.WOULD_CROSS, 0, 0
        rests = kind in (OrderKind.LIMIT, OrderKind.POST_ONLY)
        take_qty = qty
        if not spec.is_perp:
            if side > 0:
                have = self.bal[(acct, spec.quote_asset)]
                if rests:
                    x = qty * price * spec.quote_units_per_tick_lot
                    rate = self.maker_rate[ins]
                    if crosses:
                        rate = max(rate, self.taker_rate[ins])
                    if have < x + ceil_div(x * rate, FEE_DENOM):
                        return 0, S.INSUFFICIENT_FUNDS, 0, 0
                elif crosses:
                    unit = best * spec.quote_units_per_tick_lot
                    if unit + ceil_div(unit * self.taker_rate[ins], FEE_DENOM) > have:
                        return 0, S.INSUFFICIENT_FUNDS, 0, 0
            else:
                lots = self.bal[(acct, spec.base_asset)] // spec.base_units_per_lot
                if rests and lots < qty:
                    return 0, S.INSUFFICIENT_FUNDS, 0, 0
                if not rests and crosses:
                    if lots == 0:
                        return 0, S.INSUFFICIENT_FUNDS, 0, 0
                    take_qty = min(qty, lots)
        oid = self.next_id
        self.next_id += 1
        filled, fee_num, stop = 0, 0, 0
        if crosses:
            filled, fee_num, stop = self.take(ins, side, limit, take_qty, acct, oid, 0)
        status = S.SELF_TRADE if stop == 1 else S.OK
        rem = qty - filled
        if not rests or rem == 0 or stop:
            return oid, status, filled, 0
        o = RefOrder(oid, ins, side, price, rem, acct, kind == OrderKind.POST_ONLY, fee_num)
        self.rest(o)
        return oid, status, filled, rem

    def modify(
        self, ins: int, acct: int, ref: int, price: int, qty: int
    ) -> tuple[int, int, int, int]:
        spec = self.specs[ins]
        o = self.orders.get(ref)
        if o is None or o.ins != ins:
            return 0, S.UNKNOWN_ORDER, 0, 0
        if o.acct != acct:
            return 0, S.NOT_OWNER, 0, 0
        st = self.check_size(qty, price, spec.quote_units_per_tick_lot, True)
        if st != S.OK:
            return 0, st, 0, 0
        if price == o.price and qty <= o.qty:
            o.qty = qty
            if not spec.is_perp:
                need = self.need(o)
                self.move(self.escrow, acct, self.asset_of(o), o.resv - need)
                o.resv = need
            return ref, S.OK, 0, qty
        crosses, _ = self.crosses(ins, o.side, price)
        if crosses and o.post_only:
            return 0, S.WOULD_CROSS, 0, 0
        if not spec.is_perp:
            avail = self.bal[(acct, self.asset_of(o))] + o.resv
            if o.side > 0:
                x = qty * price * spec.quote_units_per_tick_lot
                rate = self.maker_rate[ins]
                if crosses:
                    rate = max(rate, self.taker_rate[ins])
                if avail < x + self.fee_increase(o.fee_num, x, rate):
                    return 0, S.INSUFFICIENT_FUNDS, 0, 0
            elif avail // spec.base_units_per_lot < qty:
                return 0, S.INSUFFICIENT_FUNDS, 0, 0
        self.remove(o)
        filled, stop = 0, 0
        fee_num = o.fee_num
        if crosses:
            filled, fee_num, stop = self.take(ins, o.side, price, qty, acct, ref, fee_num)
        status = S.SELF_TRADE if stop == 1 else S.OK
        rem = qty - filled
        if rem == 0 or stop:
            return ref, status, filled, 0
        # Re-enter at the back: a fresh queue entry with the same id (the old one is dead).
        new = RefOrder(ref, ins, o.side, price, rem, acct, o.post_only, fee_num)
        self.rest(new)
        return ref, status, filled, rem

    # ------------------------------------------------------------------ views
    def snapshot(self, ins: int) -> tuple[tuple, tuple]:
        """Same shape as ``MatchingEngine.book_snapshot``: (bids, asks)."""
        out = []
        for side in self.sides[ins]:
            out.append(
                tuple(
                    (p, tuple((o.order_id, o.acct, o.qty) for o in orders))
                    for p, orders in side.levels()
                )
            )
        return out[0], out[1]

    def reserved(self, asset: int) -> int:
        return sum(o.resv for o in self.orders.values() if self.asset_of(o) == asset)
