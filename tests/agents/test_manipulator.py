"""Unit tests of the oracle manipulator and the thin-book maker on the oracle_attack world."""

from __future__ import annotations

import numpy as np

from marginsim.experiments.scenarios import load_scenario
from marginsim.model import MarginModel


def _model(**agents_override):
    sc = load_scenario("oracle_attack")
    if agents_override:
        cfg = sc.agents.oracle_manipulator.model_copy(update=agents_override)
        sc = sc.model_copy(
            update={"agents": sc.agents.model_copy(update={"oracle_manipulator": cfg})}
        )
    return MarginModel(sc)


def test_thin_maker_quotes_a_fixed_ladder_and_pump_lots_is_exact():
    m = _model()
    m.step()
    man, view = m.manipulator, m.view
    ins = man.instrument
    # Best bid 1 * (1 - 0.005), best ask 1 * (1 + 0.005); levels of 1000 TKN, 0.25 apart.
    assert view.best_bid(ins) == 9950 and view.best_ask(ins) == 10050
    assert view.market_order_cost(ins, 1, 2**62)[0] == 16_000
    lots, cost = man.pump_lots(view)
    # The mid reaches 2.5 once the best ask is 4.005 (level 13): 12 full levels and the
    # few lots that float rounding of the bisection asks for.
    assert 12_000 <= lots <= 12_010
    assert cost == view.market_order_cost(ins, 1, lots)[1]
    assert man.estimated_profit(view, m.protocols_view, lots, cost) > 0


def test_attack_is_two_steps_and_borrows_at_the_pumped_oracle_price():
    m = _model()
    for _ in range(31):
        m.step()
    man = m.manipulator
    assert man.state == "pumped" and not man.rows
    assert m.oracles.price("tkn_mid") == 1.0  # the pump is not seen in its own step
    m.step()  # step 31: the oracle reads the pumped mid; supply and borrow
    assert man.state == "done"
    row = man.rows[0]
    assert (row["step"], row["borrow_step"]) == (30, 31)
    assert row["oracle_price"] == row["pumped_price"] >= 2.5
    bought = row["collateral_bought"]
    assert row["collateral_supplied"] == 200_000 + bought
    expected = np.floor(0.6 * (200_000 + bought) * row["oracle_price"] * 0.999 * 1e6) / 1e6
    assert abs(row["borrowed"] - expected) < 1e-5
    assert m.protocols_view.debt_units("victim", man.holder, "USDC") == round(row["borrowed"] * 1e6)


def test_no_attack_before_its_step_and_pnl_zero():
    m = _model()
    for _ in range(10):
        m.step()
    assert m.manipulator.state == "waiting"
    assert m.manipulator.pnl(m.view, m.protocols_view) == 0.0


def test_budget_too_small_means_no_attack():
    m = _model(budget=1000.0)
    for _ in range(35):
        m.step()
    assert m.manipulator.state == "waiting"
    assert m.event_tables()["oracle_attacks"].empty


def test_auto_timing_attacks_when_it_pays():
    m = _model(attack_step=-1)
    m.step()
    assert m.manipulator.state == "pumped"
    m.step()
    assert m.manipulator.rows[0]["step"] == 0
