"""Property-based test: random order sequences keep every book and ledger invariant.

A hypothesis state machine sends limit, market, IOC, post-only, cancel, modify and
cancel-all instructions from four accounts with limited funds to one spot book (with fees)
and one perp book. After every step: no book is crossed, every resting quantity is
positive, levels keep price-time priority (each order's time stamp is tracked by the test
itself), base and quote are conserved through the ledger, escrow holds exactly the sum of the
per-order reservations, and engine and reference book agree on results, books and balances.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from marginsim.ledger import AssetSpec, Ledger
from marginsim.market.engine import (
    BookSnapshot,
    BookSpec,
    MatchingEngine,
    OrderKind,
    OrderStatus,
    SelfTradePolicy,
)
from tests.market.reference_book import ReferenceBook

sides = st.sampled_from([1, -1])
prices = st.integers(min_value=97, max_value=103)
qtys = st.integers(min_value=1, max_value=6)
instruments = st.sampled_from([0, 0, 0, 1])


class EngineMachine(RuleBasedStateMachine):
    """Engine and reference in lockstep, with an independent priority model."""

    @initialize(
        stp=st.sampled_from(list(SelfTradePolicy)),
        quote=st.integers(min_value=2_000, max_value=60_000),
        base_lots=st.integers(min_value=2, max_value=30),
    )
    def setup(self, stp: SelfTradePolicy, quote: int, base_lots: int) -> None:
        ledger = Ledger([AssetSpec("USDC", 6), AssetSpec("WETH", 9)])
        self.escrow = ledger.add_holder("engine:escrow")
        fees = ledger.add_holder("fees")
        self.accounts = [ledger.add_holder(f"a{k}") for k in range(4)]
        for k, h in enumerate(self.accounts):
            # Unequal wallets, so funding limits bind for some accounts and not others.
            ledger.mint(h, 0, quote * (k + 1), "test endowment")
            ledger.mint(h, 1, base_lots * 100 * (k + 1), "test endowment")
        specs = [
            BookSpec("WETH-USDC", "spot", 1, 0, 100, 10, 0.01, 0.01, 0.001, 0.0025, fees),
            BookSpec("ETH-PERP", "perp", -1, 0, 1, 1, 0.01, 0.01, 0.0, 0.0, fees),
        ]
        self.ledger = ledger
        # Tiny capacities and id window: growth and the overflow table are exercised.
        self.engine = MatchingEngine(
            ledger,
            specs,
            self.escrow,
            self_trade_policy=stp,
            order_capacity=1,
            level_capacity=1,
            trade_capacity=1,
            id_window=4,
            max_id_window=8,
        )
        balances = {
            (h, a): int(ledger.balances[h, a]) for h in range(ledger.n_holders) for a in range(2)
        }
        self.ref = ReferenceBook(specs, balances, ledger.n_holders, self.escrow, stp)
        self.ids: list[int] = []
        self.stamp: dict[int, int] = {}  # order id -> arrival stamp (time priority)
        self.clock = 0

    # ------------------------------------------------------------------ helpers
    def submit(self, ins, side, kind, price, qty, acct, ref=0) -> tuple[int, int, int, int]:
        old = self.engine.order(ref) if kind == OrderKind.MODIFY else None
        res = self.engine.submit_batch([ins], [side], [kind], [price], [qty], [acct], [ref])
        got = tuple(int(a[0]) for a in res)
        want = tuple(int(x) for x in self.ref.submit(ins, side, kind, price, qty, acct, ref))
        assert got == want, (kind, got, want)
        oid, status, _, resting = got
        if status in (OrderStatus.OK, OrderStatus.SELF_TRADE):
            if kind in (OrderKind.LIMIT, OrderKind.POST_ONLY, OrderKind.MARKET, OrderKind.IOC):
                self.ids.append(oid)
                if resting:
                    self.clock += 1
                    self.stamp[oid] = self.clock
            elif kind == OrderKind.MODIFY and resting:
                assert old is not None
                if price != old.price_ticks or qty > old.qty_lots:  # re-entered at the back
                    self.clock += 1
                    self.stamp[oid] = self.clock
        return got

    def pick_account(self, data) -> int:
        return data.draw(st.sampled_from(self.accounts))

    def pick_order(self, data) -> int:
        """Mostly a live order (that is where bugs hide), sometimes any id ever given."""
        live = [oid for oid in self.ids if self.engine.order(oid) is not None]
        if live and data.draw(st.integers(0, 9)) > 0:
            return data.draw(st.sampled_from(live))
        return data.draw(st.sampled_from(self.ids)) if self.ids else 1

    # ------------------------------------------------------------------ rules
    @rule(ins=instruments, side=sides, price=prices, qty=qtys, data=st.data())
    def limit(self, ins, side, price, qty, data):
        self.submit(ins, side, OrderKind.LIMIT, price, qty, self.pick_account(data))

    @rule(ins=instruments, side=sides, price=prices, qty=qtys, data=st.data())
    def post_only(self, ins, side, price, qty, data):
        self.submit(ins, side, OrderKind.POST_ONLY, price, qty, self.pick_account(data))

    @rule(ins=instruments, side=sides, price=prices, qty=qtys, data=st.data())
    def ioc(self, ins, side, price, qty, data):
        self.submit(ins, side, OrderKind.IOC, price, qty, self.pick_account(data))

    @rule(ins=instruments, side=sides, qty=st.integers(min_value=1, max_value=15), data=st.data())
    def market(self, ins, side, qty, data):
        self.submit(ins, side, OrderKind.MARKET, 0, qty, self.pick_account(data))

    @rule(data=st.data(), owner=st.booleans())
    def cancel(self, data, owner):
        oid = self.pick_order(data)
        order = self.engine.order(oid)
        acct = order.account if order and owner else self.pick_account(data)
        ins = self.engine.instrument_index(order.instrument) if order else 0
        self.submit(ins, 1, OrderKind.CANCEL, 0, 0, acct, oid)

    @rule(
        data=st.data(),
        price=prices,
        qty=st.integers(min_value=0, max_value=8),
        same_price=st.booleans(),
        qty_change=st.sampled_from([None, -1, 0, 1]),
    )
    def modify(self, data, price, qty, same_price, qty_change):
        oid = self.pick_order(data)
        order = self.engine.order(oid)
        acct, ins = self.accounts[0], 0
        if order is not None:
            acct, ins = order.account, self.engine.instrument_index(order.instrument)
            if same_price:
                price = order.price_ticks
            if qty_change is not None:  # just below, at or just above the open quantity
                qty = max(1, order.qty_lots + qty_change)
        self.submit(ins, 1, OrderKind.MODIFY, price, qty, acct, oid)

    @rule(data=st.data(), qty=qtys)
    def join_queue(self, data, qty):
        """Rest behind an existing level, so that levels hold queues of several orders."""
        levels = []
        for k in range(len(self.engine.specs)):
            snap = self.engine.book_snapshot(k)
            levels += [(k, 1, p) for p, _ in snap.bids] + [(k, -1, p) for p, _ in snap.asks]
        if levels:
            ins, side, price = data.draw(st.sampled_from(levels))
            self.submit(ins, side, OrderKind.LIMIT, price, qty, self.pick_account(data))

    @rule(data=st.data(), qty_change=st.sampled_from([-1, 0, 0, 1]), new_price=prices)
    def requote_queue_head(self, data, qty_change, new_price):
        """Modify the first order of a level: where a priority bug would show."""
        heads = []
        for k in range(len(self.engine.specs)):
            snap = self.engine.book_snapshot(k)
            heads += [(k, p, orders[0]) for p, orders in snap.bids + snap.asks]
        if not heads:
            return
        ins, price, (oid, acct, qty) = data.draw(st.sampled_from(heads))
        if data.draw(st.integers(0, 3)) == 0:
            price = new_price
        self.submit(ins, 1, OrderKind.MODIFY, price, max(1, qty + qty_change), acct, oid)

    @rule(data=st.data())
    def cancel_all(self, data):
        acct = self.pick_account(data)
        # The reference has no cancel-all: cancel the account's orders one by one, in id order.
        targets = sorted(oid for oid, o in self.ref.orders.items() if o.acct == acct)
        for oid in targets:
            self.ref.submit(self.ref.orders[oid].ins, 1, OrderKind.CANCEL, 0, 0, acct, oid)
        assert self.engine.cancel_all(acct) == len(targets)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def books_are_sound(self):
        e = self.engine
        for k in range(len(e.specs)):
            snap = e.book_snapshot(k)
            if snap.bids and snap.asks:
                assert snap.bids[0][0] < snap.asks[0][0], "crossed book"
            for side_levels, better in (
                (snap.bids, lambda a, b: a > b),
                (snap.asks, lambda a, b: a < b),
            ):
                for (p1, _), (p2, _) in zip(side_levels, side_levels[1:], strict=False):
                    assert better(p1, p2), "levels out of price order"
                for _, orders in side_levels:
                    assert orders, "empty level"
                    assert all(q > 0 for _, _, q in orders), "non-positive resting quantity"
                    stamps = [self.stamp[oid] for oid, _, _ in orders]
                    assert stamps == sorted(stamps), "time priority violated"
            assert snap == BookSnapshot(*self.ref.snapshot(k))
        e.check_invariants()

    @invariant()
    def tokens_are_conserved_and_escrow_matches_reservations(self):
        self.ledger.check_conservation()
        reserved = self.engine.reserved()
        for asset in range(2):
            held = self.ledger.balance(self.escrow, asset)
            assert held == reserved[asset] == self.ref.reserved(asset)
            for h in range(self.ledger.n_holders):
                assert self.ledger.balance(h, asset) == self.ref.bal[(h, asset)]
        tape = self.engine.trade_arrays()
        assert self.engine.n_trades == len(self.ref.trades)
        if self.ref.trades:
            assert tape["taker_order_id"][-1] == self.ref.trades[-1][8]


TestEngineStateMachine = EngineMachine.TestCase
TestEngineStateMachine.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
