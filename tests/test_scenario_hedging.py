"""End to end: the hedging scenario does what it is for."""

from __future__ import annotations

import numpy as np
import pytest

from marginsim.experiments.scenarios import load_scenario
from marginsim.model import MarginModel

CRASH = 360


@pytest.fixture(scope="module")
def hedged():
    model = MarginModel(load_scenario("hedging"), check_invariants=True)
    model.run()
    return model, model.metrics_frame().set_index("step")


def test_the_hedge_ratio_rises_with_margin_debt_over_the_build_up(hedged):
    _, m = hedged
    build = m.loc[: CRASH - 1]
    ratio, debt = build["hedger_hedge_ratio"], build["perpx_margin_debt"]
    assert ratio.notna().all()
    # Debt builds up from nearly nothing; the hedge follows it.
    assert debt.loc[240] > 20 * debt.loc[0]
    assert ratio.loc[240] > ratio.loc[0] + 0.5
    assert np.corrcoef(ratio.to_numpy(), debt.to_numpy())[0, 1] > 0.95
    # When the crash has cleared the debt, the hedge comes back down.
    assert m.loc[CRASH + 1, "hedger_hedge_ratio"] < ratio.loc[CRASH - 1] - 0.3


def test_the_hedgers_lose_less_than_an_unhedged_holder(hedged):
    model, m = hedged
    spot = sum(h.config.spot_holdings for h in model.hedgers)
    mark = m["perpx_ETH-PERP_mark"]
    # Through the crash step: spot alone loses spot * (mark after - mark before).
    unhedged_crash = spot * (mark.loc[CRASH] - mark.loc[CRASH - 1])
    hedged_crash = m.loc[CRASH, "hedger_pnl"] - m.loc[CRASH - 1, "hedger_pnl"]
    assert unhedged_crash < -30_000
    assert hedged_crash > 0.5 * unhedged_crash
    # Over the whole run, from each hedger's starting mark to the last mark.
    last = mark.iloc[-1]
    unhedged = sum(h.config.spot_holdings * (last - h.start_mark) for h in model.hedgers)
    assert unhedged < 0
    assert m["hedger_pnl"].iloc[-1] > 0.5 * unhedged
    # The index path agrees with the mark on the size of the fall.
    assert model.index_path[-1] < 0.9 * model.index_path[0]


def test_the_hedgers_hold_their_spot_and_short_the_perp(hedged):
    model, _ = hedged
    venue = model.perps["perpx"]
    for h in model.hedgers:
        spot = model.view.balances(np.array([h.holder]), h.base_asset)[0]
        assert spot == round(h.config.spot_holdings * 10**9)
        assert venue.position_sizes(np.array([h.holder]), h.instrument)[0] < 0


def test_conservation_holds(hedged):
    model, m = hedged
    model.ledger.check_conservation()
    assert m.index.max() == model.scenario.run.steps - 1
    assert (m["perpx_ETH-PERP_open_interest_long"] == m["perpx_ETH-PERP_open_interest_short"]).all()
