"""Perp venue under random trading, marks, funding and liquidations: invariants always hold."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginsim.config import MarginTierConfig, PerpConfig
from marginsim.ledger import AssetSpec, Ledger
from marginsim.market.engine import BookSpec, MatchingEngine, OrderKind
from marginsim.protocols.lending import FixedPriceFeed
from marginsim.protocols.perp import PerpContract, PerpVenue

USDC = 10**6
TICK, LOT, QUTL = 0.01, 0.01, 100
TIERS = [
    MarginTierConfig(max_notional=5_000, maintenance_rate=0.01, max_leverage=50),
    MarginTierConfig(max_notional=20_000, maintenance_rate=0.02, max_leverage=20),
    MarginTierConfig(max_notional=0, maintenance_rate=0.05, max_leverage=10),
]


def build(fund: float, adl: bool):
    ledger = Ledger([AssetSpec("USDC", 6)])
    escrow = ledger.add_holder("escrow")
    engine_fees = ledger.add_holder("engine-fees")
    specs = [
        BookSpec("ETH-PERP", "perp", -1, 0, 1, QUTL, TICK, LOT, 0.0002, 0.0005, engine_fees),
        BookSpec("ETH-PERP-B", "perp", -1, 0, 1, 1000, TICK, 0.1, 0.0, 0.0007, engine_fees),
    ]
    engine = MatchingEngine(ledger, specs, escrow_holder=escrow)
    feed = FixedPriceFeed({"eth": 2000.0})
    cfg = PerpConfig(
        kind="perp",
        index_oracle="eth",
        insurance_fund=fund,
        tiers=TIERS,
        funding_interval_steps=3,
        mark_smoothing_steps=2,
        adl=adl,
    )
    venue = PerpVenue(
        ledger, "perp", cfg, [PerpContract(k, s) for k, s in enumerate(specs)], feed, engine
    )
    return ledger, engine, venue, feed


def check(ledger, engine, venue):
    venue.check_invariants()
    ledger.check_conservation()
    engine.check_invariants()
    assert not venue.positions_sum().any()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), fund=st.sampled_from([0.0, 30.0, 1000.0]), adl=st.booleans())
def test_random_trading_keeps_every_invariant(data, fund, adl):
    ledger, engine, venue, feed = build(fund, adl)
    traders = []
    for j in range(5):
        h = ledger.add_holder(f"t{j}")
        ledger.mint(h, 0, 5_000 * USDC, "test")
        if j >= 3:
            assert venue.set_margin_mode(h, "isolated").ok
        if j % 2:
            assert venue.set_leverage(h, 0, data.draw(st.sampled_from([2, 10, 25]))).ok
        amount = data.draw(st.integers(50, 3_000)) * USDC
        assert venue.deposit(h, amount).ok
        traders.append(h)
    mm = ledger.add_holder("mm")
    ledger.mint(mm, 0, 10_000_000 * USDC, "test")
    assert venue.deposit(mm, 10_000_000 * USDC).ok
    index = 2000.0
    for step in range(data.draw(st.integers(2, 9))):
        engine.step = step
        index = round(index * (1 + data.draw(st.floats(-0.06, 0.06))), 2)
        feed.prices["eth"] = None if data.draw(st.integers(0, 15)) == 0 else index
        # The maker requotes around the index (thin or missing sides happen).
        engine.cancel_all(mm)
        for ins in (0, 1):
            for side in (1, -1):
                if data.draw(st.booleans()):
                    spread = data.draw(st.floats(0.0005, 0.03))
                    price = round(index * (1 - side * spread) / TICK)
                    engine.submit_limit(ins, side, price, data.draw(st.integers(1, 300)), mm)
        venue.update_mark(step)
        venue.accrue(step, 60.0)
        check(ledger, engine, venue)
        for _ in range(data.draw(st.integers(0, 6))):
            who = data.draw(st.sampled_from(traders))
            ins = data.draw(st.integers(0, 1))
            side = data.draw(st.sampled_from([1, -1]))
            kind = data.draw(st.sampled_from([OrderKind.LIMIT, OrderKind.MARKET, OrderKind.IOC]))
            price = max(1, round(index * (1 + data.draw(st.floats(-0.03, 0.03))) / TICK))
            qty = data.draw(st.integers(1, 400))
            ok, _ = venue.check_orders(ins, side, int(kind), price, qty, who)
            if ok[0]:
                start = engine.n_trades
                engine.submit_batch(ins, side, int(kind), price, qty, who)
                venue.apply_tape(engine.trade_arrays(start))
            check(ledger, engine, venue)
        if data.draw(st.booleans()):
            who = data.draw(st.sampled_from(traders))
            venue.withdraw(who, data.draw(st.integers(1, 2_000)) * USDC)  # may be refused
            check(ledger, engine, venue)
        for _ in range(2):  # liquidation rounds
            orders = venue.begin_liquidations(step)
            for acct in orders.liquidated_accounts.tolist():
                engine.cancel_all(acct)
            start = engine.n_trades
            if len(orders):
                engine.submit_batch(
                    orders.instrument,
                    orders.side,
                    orders.kind,
                    orders.price_ticks,
                    orders.qty_lots,
                    orders.account,
                )
            venue.apply_tape(engine.trade_arrays(start))
            venue.finish_liquidations(step)
            check(ledger, engine, venue)
            if adl:
                # Everything taken over is closed within the round.
                assert venue.metrics()["uncovered_bad_debt"] >= 0
        metrics = venue.metrics()
        assert np.isfinite(metrics["insurance_fund"]) and metrics["insurance_fund"] >= 0
        funding = venue.funding_frame()
        assert (funding["paid"] >= funding["received"]).all()
