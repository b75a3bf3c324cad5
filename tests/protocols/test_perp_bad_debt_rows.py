"""A perp venue's bad debt is recorded row by row and agrees with the network's count."""

import numpy as np

import marginsim


def test_perp_bad_debt_rows_match_shortfalls_deficits_and_the_network_node():
    result = marginsim.run(marginsim.load_scenario("perp_crash"))
    rows = result.events["bad_debt"].query("protocol == 'perpx'")
    liquidations = result.events["liquidations"].query("protocol == 'perpx'")
    shortfalls = liquidations[liquidations["bad_debt"] > 0]
    deficits = result.metrics["perpx_deficits_covered"].iloc[-1]  # settlement human units
    # Every shortfall is one row, with the same account, step and amount (settlement units).
    assert len(shortfalls) == 3 and deficits == 0  # this scenario: shortfalls only
    assert len(rows) == len(shortfalls)
    first = rows
    np.testing.assert_array_equal(first["amount"], shortfalls["bad_debt"])
    np.testing.assert_array_equal(first["account"], shortfalls["account"])
    np.testing.assert_array_equal(first["step"], shortfalls["step"])
    assert (rows["covered"] + rows["uncovered"] == rows["amount"]).all()
    assert (rows["asset"] == "USDC").all()
    node = result.events["network_nodes"].set_index("node").loc["perpx"]
    assert node["bad_debt"] == rows["amount"].sum() / 1e6
    assert result.summary["bad_debt_value"] == rows["amount"].sum() / 1e6
