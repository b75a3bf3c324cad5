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
