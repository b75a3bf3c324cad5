"""Liquidation policies' hooks over 200,000 lending accounts (pytest-benchmark; `make bench`)."""

import numpy as np
import pytest

from marginsim.config import LendingConfig, ReserveConfig
from marginsim.experiments.runner import run
from marginsim.experiments.scenarios import load_scenario
from marginsim.protocols.lending import FixedPriceFeed, LendingPool
from marginsim.protocols.policies import make_policy

N_ACCOUNTS = 200_000
WETH = 10**9

POLICIES = {
    "static": {"kind": "static"},
    "dynamic": {"kind": "dynamic"},
    "gradual": {"kind": "gradual"},
    "predictive": {"kind": "predictive"},
    "circuit_breaker": {"kind": "circuit_breaker"},
}


def _pool(policy):
    """200k accounts, WETH collateral, USDC debt at 50-85% of the collateral value (7% below 1)."""
    cfg = LendingConfig(
        kind="lending",
        reserves={
            "USDC": ReserveConfig(price=1.0, ltv=0.75, liquidation_threshold=0.8),
            "WETH": ReserveConfig(price="eth", ltv=0.8, liquidation_threshold=0.825),
        },
        liquidation_policy=policy,
    )
    feed = FixedPriceFeed({"eth": 2000.0})
    pool = LendingPool.standalone(cfg, {"USDC": 6, "WETH": 9}, feed, name="aave")
    pool.attach_policy(make_policy("aave", cfg.liquidation_policy, 60.0))
    ledger = pool.ledger
    first = ledger.add_holders("acct", N_ACCOUNTS)
    source = ledger.add_holder("setup")
    holders = np.arange(first, first + N_ACCOUNTS, dtype=np.int64)
    rng = np.random.default_rng(7)
    collateral = rng.integers(WETH // 10, 100 * WETH, N_ACCOUNTS)
    debt = (collateral * 2 * rng.uniform(0.5, 0.85, N_ACCOUNTS)).astype(np.int64)
    for symbol, amounts in (("aWETH.aave", collateral), ("dUSDC.aave", debt)):
        asset = ledger.asset_id(symbol)
        ledger.mint(source, asset, int(amounts.sum()), reason="benchmark setup")
        ledger.transfer_many(np.full(N_ACCOUNTS, source), holders, asset, amounts)
    pool.register_accounts(holders)
    pool.update_policy(0)
    pool.liquidatable()  # compile (or load the cached kernels) outside the timing
    return pool, feed


@pytest.mark.parametrize("name", list(POLICIES))
def test_update_policy_and_scan_200k_accounts(benchmark, name):
    """Phase 2 hook plus one liquidatable() scan, as every liquidation round starts."""
    pool, feed = _pool(POLICIES[name])
    state = {"t": 0}

    def step():
        state["t"] += 1
        feed.prices["eth"] = 2000.0 * (1.0 + 0.001 * (state["t"] % 3))
        pool.step = state["t"]
        pool.update_policy(state["t"])
        return pool.liquidatable()

    found = benchmark(step)
    assert len(found) > 0.03 * N_ACCOUNTS  # about 7% are below HF 1 at every price here


@pytest.mark.parametrize("name", list(POLICIES))
def test_liquidation_hunt_run(benchmark, name):
    """A whole liquidation_hunt run (240 steps) under each policy."""
    scenario = load_scenario("liquidation_hunt").with_overrides(
        {"protocols.thinlend.liquidation_policy": POLICIES[name]}
    )
    result = benchmark.pedantic(run, args=(scenario,), rounds=3, iterations=1)
    assert result.summary["liquidations"] > 0
