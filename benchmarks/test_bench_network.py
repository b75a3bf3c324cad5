"""Speed of the network measures: DebtRank, Eisenberg-Noe clearing, the contagion monitor.

Reported, never asserted. DebtRank of every node of a 100-protocol Erdos-Renyi network
(degree 4) is what a per-step ``debtrank_<protocol>`` column would cost at that size; the
clearing is the fictitious default algorithm on the same network after one protocol's
loss; the model step compares the ``contagion`` scenario's step with and without the
monitor's DebtRank (``network.debtrank_every`` large).
"""

import numpy as np
import pytest

from marginsim.experiments.scenarios import load_scenario
from marginsim.experiments.studies.contagion import WindowParams, _balance_sheets
from marginsim.model import MarginModel
from marginsim.protocols.network import debtrank_all, eisenberg_noe


@pytest.fixture(scope="module")
def sheets():
    rng = np.random.default_rng(0)
    return _balance_sheets(WindowParams(n=100), 4.0, rng)


def test_bench_debtrank_all_100_nodes(benchmark, sheets):
    out = benchmark(debtrank_all, sheets.exposure, sheets.equity)
    assert out.shape == (100,)


def test_bench_eisenberg_noe_100_nodes(benchmark, sheets):
    result = benchmark(
        eisenberg_noe, sheets.liabilities, sheets.external_assets, sheets.external_liabilities
    )
    benchmark.extra_info["rounds"] = result.rounds


@pytest.mark.parametrize("every", [1, 1_000_000])
def test_bench_contagion_scenario_steps(benchmark, every):
    scenario = load_scenario("contagion").with_overrides(
        {"run.steps": 200, "network.debtrank_every": every}
    )

    def run_steps():
        model = MarginModel(scenario)
        for _ in range(50):
            model.step()

    benchmark.pedantic(run_steps, rounds=3, iterations=1)
