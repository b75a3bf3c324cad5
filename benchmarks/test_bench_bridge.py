"""Speed of the wrapped-asset market: the sellers' decision and the bridge_failure scenario.

Reported, never asserted. The sellers decide in one vectorised call per step; the
population benchmark scales them to 100,000 accounts after the failure (every step some
sell). The scenario benchmark runs 120 steps of ``bridge_failure`` across the failure.
"""

from fractions import Fraction

import pytest

from marginsim.agents.wrapped_sellers import WrappedSellers
from marginsim.experiments.scenarios import load_scenario
from marginsim.model import MarginModel


@pytest.mark.parametrize("count", [1_000, 100_000])
def test_bench_wrapped_sellers_act(benchmark, count):
    sc = load_scenario("bridge_failure").with_overrides(
        {"run.steps": 3, "agents.wrapped_sellers.count": count}
    )
    model = MarginModel(sc)
    model.step()  # the makers have quoted: the books have bids
    sellers = next(t for t in model.traders if isinstance(t, WrappedSellers))
    sellers._backing = lambda: Fraction(1, 4)  # after a failure: the bid is far above 1/4
    batch = benchmark(sellers.act, model.view)
    benchmark.extra_info["orders"] = int(batch.qty_lots.shape[0])


def test_bench_bridge_failure_120_steps(benchmark):
    scenario = load_scenario("bridge_failure").with_overrides({"run.steps": 120})

    def run_steps():
        model = MarginModel(scenario)
        for _ in range(120):
            model.step()

    benchmark.pedantic(run_steps, rounds=3, iterations=1)
