"""Whole-run speed of the built-in scenarios (steps per second of simulated market)."""

import pytest

from marginsim.experiments.runner import run
from marginsim.experiments.scenarios import load_scenario


@pytest.mark.parametrize("name", ["default", "lending_cascade", "perp_crash"])
def test_bench_builtin_scenario(benchmark, name):
    scenario = load_scenario(name)
    result = benchmark.pedantic(run, args=(scenario,), rounds=3, iterations=1, warmup_rounds=1)
    steps = scenario.run.steps
    benchmark.extra_info["steps"] = steps
    benchmark.extra_info["steps_per_s"] = steps / benchmark.stats.stats.min
    assert len(result.metrics) == steps


def test_bench_crash_with_10k_leveraged_accounts(benchmark):
    """Issue 6's speed target: a day of one-minute steps with 10,000 leveraged accounts,
    20 market makers, 5 liquidation bots and 4 protocols (target: under 10 s)."""
    scenario = load_scenario("crash").with_overrides(
        {
            "run.steps": 1440,
            "agents.lending_loopers.count": 10_000,
            "agents.perp_traders.count": 0,
            "agents.market_makers.count": 20,
            "agents.liquidators.count": 5,
        }
    )
    result = benchmark.pedantic(run, args=(scenario,), rounds=1, iterations=1)
    benchmark.extra_info["accounts"] = 10_000
    assert len(result.metrics) == 1440
