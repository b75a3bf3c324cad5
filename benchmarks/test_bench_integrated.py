"""Speed of the integrated policy's reads and of a bot's quoted liquidation (pytest-benchmark).

Reported, never asserted. Two pools with 100,000 accounts each, the same holders in both (the
case the ``integrated`` policy is for): ``ContagionMonitor.combined_health`` of every holder (one
scan per pool) and the pool's ``liquidatable()`` under ``integrated``, which reads it for the
healthy accounts at each scan; and one ``liquidation_quote`` (exact, one account), the read a
bot adds per candidate.
"""

import numpy as np
import pytest

from marginsim.config import LendingConfig, ReserveConfig
from marginsim.ledger import AssetSpec, Ledger
from marginsim.protocols.contagion import ContagionMonitor
from marginsim.protocols.lending import FixedPriceFeed, LendingPool
from marginsim.protocols.network import ProtocolNetwork
from marginsim.protocols.policies import make_policy

N = 100_000
WETH = 10**9


@pytest.fixture(scope="module")
def world():
    reserves = {
        "USDC": ReserveConfig(price=1.0, ltv=0.75, liquidation_threshold=0.8),
        "WETH": ReserveConfig(price="eth", ltv=0.8, liquidation_threshold=0.825),
    }
    cfg_p = LendingConfig(
        kind="lending",
        reserves=reserves,
        liquidation_policy={"kind": "integrated", "threshold": 1.3},
    )
    cfg_q = LendingConfig(kind="lending", reserves=reserves)
    decimals = {"USDC": 6, "WETH": 9}
    assets = [AssetSpec("USDC", 6), AssetSpec("WETH", 9)]
    assets += LendingPool.derived_assets("P", cfg_p, decimals)
    assets += LendingPool.derived_assets("Q", cfg_q, decimals)
    ledger = Ledger(assets)
    feed = FixedPriceFeed({"eth": 2000.0})
    pools = {"P": LendingPool(ledger, "P", cfg_p, feed), "Q": LendingPool(ledger, "Q", cfg_q, feed)}
    first = ledger.add_holders("acct", N)
    source = ledger.add_holder("setup")
    holders = np.arange(first, first + N, dtype=np.int64)
    rng = np.random.default_rng(7)
    for name, pool in pools.items():
        collateral = rng.integers(WETH // 10, 100 * WETH, N)
        debt = (collateral * 2 * rng.uniform(0.3, 0.8, N)).astype(np.int64)
        for symbol, amounts in ((f"aWETH.{name}", collateral), (f"dUSDC.{name}", debt)):
            asset = ledger.asset_id(symbol)
            ledger.mint(source, asset, int(amounts.sum()), reason="benchmark setup")
            ledger.transfer_many(np.full(N, source), holders, asset, amounts)
        pool.register_accounts(holders)
    network = ProtocolNetwork()
    for name in pools:
        network.add_node(name, "lending")
    monitor = ContagionMonitor(network, ledger, pools, {}, {}, {})
    policy = make_policy("P", cfg_p.liquidation_policy, 60.0)
    policy.bind_network(monitor.combined_health)
    pools["P"].attach_policy(policy)
    pools["P"].liquidatable()  # compile (or load the cached kernels) outside the timing
    return pools, monitor, holders


def test_bench_combined_health_2_pools_100k_holders(benchmark, world):
    pools, monitor, holders = world
    health, owed_in = benchmark(monitor.combined_health, holders)
    assert np.all(owed_in == 2) and np.all(np.isfinite(health))


def test_bench_integrated_liquidatable_100k(benchmark, world):
    pools, monitor, holders = world
    found = benchmark(pools["P"].liquidatable)
    benchmark.extra_info["listed"] = len(found)


def test_bench_liquidation_quote_one_account(benchmark, world):
    pools, monitor, holders = world
    benchmark(pools["P"].liquidation_quote, int(holders[0]), "USDC", "WETH")
