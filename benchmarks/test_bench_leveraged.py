"""Speed of the leveraged-trader population (lending loan posted as perp margin)."""

import pytest

from marginsim.experiments.runner import run
from marginsim.experiments.scenarios import load_scenario


@pytest.mark.parametrize("accounts", [1_000, 10_000])
def test_bench_default_day_with_leveraged_traders(benchmark, accounts):
    """A simulated day of the default scenario with ``accounts`` leveraged traders."""
    scenario = load_scenario("default").with_overrides({"agents.leveraged_traders.count": accounts})
    result = benchmark.pedantic(run, args=(scenario,), rounds=1, iterations=1)
    benchmark.extra_info["accounts"] = accounts
    benchmark.extra_info["steps"] = scenario.run.steps
    assert len(result.metrics) == scenario.run.steps
