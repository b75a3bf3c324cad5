"""End-to-end: the oracle_attack scenario, with the thin book's mid oracle and with a TWAP."""

from __future__ import annotations

import pytest

from marginsim.experiments.scenarios import load_scenario
from marginsim.model import MarginModel


def _run(kind: str):
    sc = load_scenario("oracle_attack")
    oracle = sc.oracles["tkn_mid"].model_copy(update={"kind": kind, "window_steps": 30})
    sc = sc.model_copy(update={"oracles": {"tkn_mid": oracle}})
    m = MarginModel(sc, check_invariants=True)
    m.run()
    return m.metrics_frame(), m.event_tables()


@pytest.fixture(scope="module")
def mid_run():
    return _run("mid")


@pytest.fixture(scope="module")
def twap_run():
    return _run("twap")


def test_mid_oracle_attack_leaves_bad_debt_and_profits(mid_run):
    metrics, events = mid_run
    attacks = events["oracle_attacks"]
    assert len(attacks) == 1
    row = attacks.iloc[0]
    assert row["pumped_price"] >= 2.5 and row["oracle_price"] >= 2.5
    assert row["borrowed"] > 300_000
    assert (events["bad_debt"]["protocol"] == "victim").any()
    assert metrics["victim_USDC_bad_debt"].iloc[-1] > 100_000
    assert metrics["manipulator_pnl"].iloc[-1] > 50_000
    assert metrics["TKN-USDC_mid_price"].iloc[-1] == pytest.approx(1.0, abs=0.01)


def test_twap_oracle_makes_the_same_attack_borrow_less_and_lose(mid_run, twap_run):
    metrics, events = twap_run
    row = events["oracle_attacks"].iloc[0]
    assert row["oracle_price"] < 1.1
    assert row["borrowed"] < 0.5 * mid_run[1]["oracle_attacks"].iloc[0]["borrowed"]
    assert events["bad_debt"].empty
    assert metrics["manipulator_pnl"].iloc[-1] < 0
