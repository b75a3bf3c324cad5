"""Perp venue scans over 100,000 accounts (pytest-benchmark; run with `make bench`)."""

import numpy as np
import pytest

from marginsim.config import PerpConfig
from marginsim.ledger import AssetSpec, Ledger
from marginsim.market.engine import BookSpec, MatchingEngine, OrderKind
from marginsim.protocols.lending import FixedPriceFeed
from marginsim.protocols.perp import PerpContract, PerpVenue

N_ACCOUNTS = 100_000
USDC = 10**6


@pytest.fixture(scope="module")
def big_venue():
    """100k cross/isolated accounts, long or short 0.01-2 ETH at 2,000 with 2x-60x leverage.

    The mark then moves to 1,960, which puts the most leveraged longs below maintenance.
    """
    ledger = Ledger([AssetSpec("USDC", 6)])
    escrow, fees = ledger.add_holder("escrow"), ledger.add_holder("engine-fees")
    spec = BookSpec("ETH-PERP", "perp", -1, 0, 1, 100, 0.01, 0.01, 0.0002, 0.0005, fees)
    engine = MatchingEngine(ledger, [spec], escrow_holder=escrow, trade_capacity=1 << 18)
    feed = FixedPriceFeed({"eth": 2000.0})
    venue = PerpVenue(
        ledger,
        "perp",
        PerpConfig(kind="perp", index_oracle="eth"),
        [PerpContract(0, spec)],
        feed,
        engine,
    )
    rng = np.random.default_rng(7)
    first = ledger.add_holders("acct", N_ACCOUNTS)
    holders = np.arange(first, first + N_ACCOUNTS, dtype=np.int64)
    mm = ledger.add_holder("mm")
    qty = rng.integers(1, 200, N_ACCOUNTS)  # lots of 0.01 ETH
    leverage = rng.uniform(2, 60, N_ACCOUNTS)
    margin = np.ceil(qty * 0.01 * 2000 / leverage * USDC + qty * 100).astype(np.int64)
    ledger.mint(mm, 0, 10**9 * USDC, "benchmark setup")
    ledger.transfer_many(np.full(N_ACCOUNTS, mm), holders, 0, margin)
    venue.register_accounts(holders)
    for j, h in enumerate(holders.tolist()):
        if j % 4 == 3:
            venue.set_margin_mode(h, "isolated")
        venue.deposit(h, int(margin[j]))
    venue.deposit(mm, 10**8 * USDC)
    venue.update_mark(0)
    side = np.where(rng.random(N_ACCOUNTS) < 0.5, 1, -1)
    total = int(qty.sum())
    engine.submit_limit(0, -1, 200_000, total, mm)
    engine.submit_limit(0, 1, 200_000 - 1, total, mm)
    start = engine.n_trades
    engine.submit_batch(
        np.zeros(N_ACCOUNTS, dtype=np.int64),
        side.astype(np.int64),
        np.full(N_ACCOUNTS, int(OrderKind.MARKET), dtype=np.int64),
        np.zeros(N_ACCOUNTS, dtype=np.int64),
        qty.astype(np.int64),
        holders,
    )
    venue.apply_tape(engine.trade_arrays(start))
    engine.cancel_all(mm)
    feed.prices["eth"] = 1960.0
    venue.update_mark(1)
    venue.liquidatable()  # compile (or load the cached kernels) outside the timing
    orders = (
        np.zeros(N_ACCOUNTS, dtype=np.int64),
        np.where(rng.random(N_ACCOUNTS) < 0.5, 1, -1).astype(np.int64),
        np.full(N_ACCOUNTS, int(OrderKind.LIMIT), dtype=np.int64),
        np.full(N_ACCOUNTS, 196_000, dtype=np.int64),
        rng.integers(1, 100, N_ACCOUNTS).astype(np.int64),
        holders,
    )
    venue.check_orders(*orders)
    return venue, orders


def test_liquidatable_100k_accounts(benchmark, big_venue):
    venue, _ = big_venue
    found = benchmark(venue.liquidatable)
    assert 0 < len(found) < N_ACCOUNTS // 4
    assert np.all(found.margin_balance < found.maintenance)


def test_check_orders_100k_orders(benchmark, big_venue):
    venue, orders = big_venue
    ok, reason = benchmark(venue.check_orders, *orders)
    assert ok.shape == (N_ACCOUNTS,) and 0 < ok.sum() < N_ACCOUNTS


def test_metrics_100k_accounts(benchmark, big_venue):
    venue, _ = big_venue
    metrics = benchmark(venue.metrics)
    assert metrics["ETH-PERP_open_interest_long"] > 0
