"""Lending pool scans over 1,000,000 accounts (pytest-benchmark; run with `make bench`)."""

import numpy as np
import pytest

from marginsim.config import LendingConfig, ReserveConfig
from marginsim.protocols.lending import FixedPriceFeed, LendingPool

N_ACCOUNTS = 1_000_000
WETH = 10**9


@pytest.fixture(scope="module")
def big_pool():
    """1M accounts with WETH collateral and USDC debt at 50-85% of the collateral value."""
    cfg = LendingConfig(
        kind="lending",
        reserves={
            "USDC": ReserveConfig(price=1.0, ltv=0.75, liquidation_threshold=0.8),
            "WETH": ReserveConfig(price="eth", ltv=0.8, liquidation_threshold=0.825),
        },
    )
    pool = LendingPool.standalone(
        cfg, {"USDC": 6, "WETH": 9}, FixedPriceFeed({"eth": 2000.0}), name="aave"
    )
    ledger = pool.ledger
    first = ledger.add_holders("acct", N_ACCOUNTS)
    source = ledger.add_holder("setup")
    holders = np.arange(first, first + N_ACCOUNTS, dtype=np.int64)
    rng = np.random.default_rng(7)
    collateral = rng.integers(WETH // 10, 100 * WETH, N_ACCOUNTS)  # scaled aWETH units
    # USDC units: WETH units * 2,000 USD / 1,000 (9 vs 6 decimals) * loan-to-value
    debt = (collateral * 2 * rng.uniform(0.5, 0.85, N_ACCOUNTS)).astype(np.int64)
    for symbol, amounts in (("aWETH.aave", collateral), ("dUSDC.aave", debt)):
        asset = ledger.asset_id(symbol)
        ledger.mint(source, asset, int(amounts.sum()), reason="benchmark setup")
        ledger.transfer_many(np.full(N_ACCOUNTS, source), holders, asset, amounts)
    pool.register_accounts(holders)
    pool.liquidatable()  # compile (or load the cached kernels) outside the timing
    pool.settle(0)
    return pool


def test_liquidatable_1m_accounts(benchmark, big_pool):
    found = benchmark(big_pool.liquidatable)
    # HF = 0.825 / LTV with LTV uniform in [0.5, 0.85]: about 7% are below 1.
    assert 0.05 * N_ACCOUNTS < len(found) < 0.09 * N_ACCOUNTS
    assert np.all(found.health_factor < 1.0)


def test_health_factors_1m_accounts(benchmark, big_pool):
    hf = benchmark(big_pool.health_factors)
    assert hf.shape == (N_ACCOUNTS,) and np.all(hf > 0.9)


def test_metrics_1m_accounts(benchmark, big_pool):
    metrics = benchmark(big_pool.metrics)
    assert metrics["accounts_with_debt"] == N_ACCOUNTS


def test_settle_1m_accounts(benchmark, big_pool):
    written_off = benchmark(big_pool.settle, 1)
    assert written_off == 0
