"""End-to-end: the `contagion` scenario carries a bridge failure down three pools."""

import numpy as np
import pandas as pd
import pytest

from marginsim.experiments.runner import run
from marginsim.experiments.scenarios import load_scenario


@pytest.fixture(scope="module")
def result():
    return run(load_scenario("contagion"), check_invariants=True)


def test_the_loss_travels_bridge_to_corelend_to_midlend_to_edgelend(result):
    nodes = result.events["network_nodes"].set_index("node")
    # 1,000 wWETH were bridged at genesis (two accounts x 500); 75% of the lock is lost.
    events = result.events["bridge_events"]
    assert events[["step", "event", "amount"]].values.tolist() == [[60, "failure", 750 * 10**9]]
    protocols = ["portal", "corelend", "midlend", "edgelend"]
    assert nodes.loc[protocols, "defaulted"].tolist() == [True] * 4
    assert nodes.loc[protocols, "default_step"].tolist() == [60] * 4
    # Each default is caused by the one before it: four waves in order.
    assert nodes.loc[protocols, "default_wave"].tolist() == [1, 2, 3, 4]
    assert (nodes.loc[protocols, "bad_debt"] > 0).all()
    assert nodes.loc[["WETH-USDC", "chainlink_eth"], "defaulted"].tolist() == [False, False]
    bad = result.events["bad_debt"]
    assert bad["protocol"].tolist() == ["corelend", "corelend", "midlend", "edgelend"]
    assert set(bad["step"]) == {60}


def test_network_columns_and_tables(result):
    m = result.metrics.set_index("step")
    assert m.loc[59, ["contagion_reach", "protocols_defaulted", "systemic_loss"]].tolist() == [
        0.0,
        0.0,
        0.0,
    ]
    assert m.loc[60, "contagion_reach"] == 4.0 and m.loc[60, "protocols_defaulted"] == 4.0
    nodes = result.events["network_nodes"]
    assert m.loc[239, "systemic_loss"] == pytest.approx(nodes["bad_debt"].sum(), rel=1e-12)
    # Before the failure the bridge is the most systemic node: everything hangs on it.
    before = m.loc[59, [f"debtrank_{n}" for n in ("portal", "corelend", "midlend", "edgelend")]]
    assert before.tolist() == sorted(before.tolist(), reverse=True)
    assert before["debtrank_edgelend"] == 0.0  # nobody is exposed to edgelend
    edges = result.events["network_edges"]
    collateral = edges[edges["kind"] == "collateral"]
    assert collateral[["source", "target"]].values.tolist() == [
        ["corelend", "portal"],
        ["midlend", "corelend"],
        ["edgelend", "midlend"],
    ]
    # Peak collateral along each edge: 1,000 wWETH at ~2,000; 2M and 1M of receipt tokens.
    assert collateral["weight"].tolist() == pytest.approx([2.0e6, 2.0e6, 1.0e6], rel=0.01)
    clearing = result.events["network_clearing"]
    assert set(clearing["step"]) == {60}


def test_without_the_bridge_failure_nothing_defaults():
    calm = run(load_scenario("contagion").with_overrides({"shocks": [], "run.steps": 80}))
    assert len(calm.events["bad_debt"]) == 0
    assert not calm.events["network_nodes"]["defaulted"].any()
    assert np.all(calm.metrics["systemic_loss"] == 0.0)


def test_same_seed_same_network_outputs(result, tmp_path):
    again = run(load_scenario("contagion"), check_invariants=True)
    for table in ("network_edges", "network_nodes", "network_clearing", "bridge_events"):
        pd.testing.assert_frame_equal(result.events[table], again.events[table])
    pd.testing.assert_frame_equal(result.metrics, again.metrics)
    # The drawing reads only those tables.
    from marginsim.experiments.plots import plot_network

    path = plot_network(
        result.events["network_edges"], result.events["network_nodes"], tmp_path / "net.png"
    )
    assert path.stat().st_size > 0
