"""End to end: the liquidation_hunt scenario does what it is for."""

from __future__ import annotations

import numpy as np
import pytest

from marginsim.experiments.runner import run
from marginsim.experiments.scenarios import load_scenario


@pytest.fixture(scope="module")
def hunted():
    return run(load_scenario("liquidation_hunt"), check_invariants=True)


def test_the_hunter_attacks_and_liquidations_follow(hunted):
    attacks = hunted.events["hunter_attacks"]
    liq = hunted.events["liquidations"]
    assert len(attacks) >= 1
    first = int(attacks["step"].min())
    # Nothing is liquidated before the first attack; the attack is followed by
    # liquidations in its own step or the next few.
    assert liq.empty or int(liq["step"].min()) > first - 1
    assert ((liq["step"] >= first) & (liq["step"] <= first + 3)).any()
    # The attack targeted the cluster a few percent below the start, with millions of debt.
    row = attacks.iloc[0]
    assert 1900 < row["target_price"] < row["mid_before"]
    assert row["cluster_debt"] > 1_000_000
    assert row["size_sold"] > 0
    assert row["estimated_gain"] > row["estimated_cost"]
    holders = hunted.events["holders"].set_index("holder")["name"]
    assert holders[int(row["hunter"])] == "liquidation_hunter[0]"
    assert {holders[a] for a in liq["account"]} & {f"account:hunt-{k}" for k in range(8)}


def test_the_hunter_pnl_is_recorded_every_step(hunted):
    m = hunted.metrics
    assert "hunter_pnl" in m.columns
    pnl = m["hunter_pnl"].to_numpy()
    assert pnl.shape[0] == load_scenario("liquidation_hunt").run.steps
    assert np.isfinite(pnl).all()
    first = int(hunted.events["hunter_attacks"]["step"].min())
    assert (pnl[:first] == 0).all()  # nothing traded before the attack
    assert (pnl[first:] != 0).any()


def test_without_the_hunter_fewer_liquidations_happen(hunted):
    calm = run(
        load_scenario("liquidation_hunt").with_overrides({"agents.liquidation_hunter.count": 0})
    )
    assert "hunter_attacks" not in calm.events
    assert "hunter_pnl" not in calm.metrics.columns
    assert len(calm.events["liquidations"]) < len(hunted.events["liquidations"])
    assert calm.metrics["mid_price"].min() > hunted.metrics["mid_price"].min()
