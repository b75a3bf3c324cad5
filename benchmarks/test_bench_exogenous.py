"""Speed of path generation (10^6 steps) and of AMM swaps; reported, never asserted."""

import numpy as np
import pytest

from marginsim.ledger import AssetSpec, Ledger
from marginsim.market.amm import ConstantProductPool
from marginsim.market.exogenous import make_driver

N_STEPS = 1_000_000


@pytest.mark.parametrize("model", ["gbm", "jump", "garch"])
def test_bench_generate_a_million_steps(benchmark, model):
    driver = make_driver(model, initial=2000.0)
    driver.generate(10, 60.0, np.random.default_rng(0))  # compile outside the timing
    path = benchmark(lambda: driver.generate(N_STEPS, 60.0, np.random.default_rng(0)))
    assert path.shape == (N_STEPS + 1,)


def test_bench_amm_swaps(benchmark):
    ledger = Ledger([AssetSpec("WETH", 9), AssetSpec("USDC", 6), AssetSpec("LP", 9)])
    pool = ConstantProductPool(ledger, "amm", 0, 1, 2, ledger.add_holder("amm"))
    trader = ledger.add_holder("trader")
    ledger.mint(trader, 0, 10**15, "seed")
    ledger.mint(trader, 1, 10**15, "seed")
    pool.add_liquidity(trader, 5_000 * 10**9, 10_000_000 * 10**6)

    def swaps():
        for k in range(1000):
            pool.swap(trader, 1 if k % 2 else -1, 10**9 if k % 2 == 0 else 2_000 * 10**6)

    benchmark(swaps)
    ledger.check_conservation()
