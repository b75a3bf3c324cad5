"""Engine snapshots: restore undoes books, tape and counters exactly."""

import numpy as np

from marginsim.ledger import AssetSpec, Ledger
from marginsim.market.engine import BookSpec, MatchingEngine


def world():
    ledger = Ledger([AssetSpec("USDC", 6), AssetSpec("WETH", 9)])
    escrow, fees = ledger.add_holder("escrow"), ledger.add_holder("fees")
    spec = BookSpec("WETH-USDC", "spot", 1, 0, 10**6, 10, 0.01, 0.001, 0.0, 0.0005, fees)
    engine = MatchingEngine(ledger, [spec], escrow_holder=escrow)
    a, b = ledger.add_holder("a"), ledger.add_holder("b")
    for h in (a, b):
        ledger.mint(h, 0, 10**12, "t")
        ledger.mint(h, 1, 10**12, "t")
    return ledger, engine, a, b


def test_restore_undoes_trades_and_resting_orders_and_later_orders_match_a_fresh_run():
    ledger, engine, a, b = world()
    engine.submit_limit(0, 1, 200_000, 5_000, a)
    engine.submit_limit(0, -1, 200_100, 5_000, a)
    snap, ledger_snap = engine.snapshot(), ledger.snapshot()
    before = (engine.book_snapshot(0), engine.n_trades, ledger.balances.copy())
    engine.submit_market(0, -1, 3_000, b)
    engine.submit_limit(0, 1, 200_050, 7_000, b)
    engine.cancel(0, 1, a)
    assert engine.n_trades == 1
    engine.restore(snap)
    ledger.restore(ledger_snap)
    assert engine.book_snapshot(0) == before[0] and engine.n_trades == before[1] == 0
    np.testing.assert_array_equal(ledger.balances, before[2])
    engine.check_invariants()
    # The same orders after the restore give the same ids and fills as the first time.
    r1 = engine.submit_market(0, -1, 3_000, b)
    assert r1.order_id == 3 and r1.filled_lots == 3_000
    assert engine.trades_frame()["price_ticks"].tolist() == [200_000]
    ledger.check_conservation()
