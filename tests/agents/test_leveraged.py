"""Leveraged traders: liquidation-probability estimates, the decision rule, a model run."""

import math

import numpy as np
import pytest

from marginsim.agents.leveraged import (
    Choice,
    LeveragedTraders,
    PerpMarginAction,
    PerpMarginActions,
    barrier_hit_probability,
    choose,
    lending_liquidation_distance,
    liquidation_probability,
    perp_liquidation_distances,
)
from marginsim.config import ScenarioError
from marginsim.experiments.scenarios import load_scenario
from marginsim.model import MarginModel


def two_phi_minus(x: float) -> float:
    """Independent reference: 2 * Phi(-x) = erfc(x / sqrt(2))."""
    return math.erfc(x / math.sqrt(2.0))


# ------------------------------------------------------------------ the probability formula
def test_barrier_hit_probability_is_twice_the_normal_tail():
    # d = 0.1, sigma = 0.01 per step, h = 25 steps: sigma * sqrt(h) = 0.05, d / 0.05 = 2,
    # 2 * Phi(-2) = 0.0455002638963584.
    p = barrier_hit_probability(np.array([0.1, 0.0, -0.2, np.inf]), 0.01, 25.0)
    assert p[0] == pytest.approx(0.0455002638963584, rel=1e-12)
    assert p[0] == pytest.approx(two_phi_minus(2.0), rel=1e-12)
    # A barrier reached (d <= 0) is certain; no barrier (inf) is never hit.
    assert p[1:].tolist() == [1.0, 1.0, 0.0]


def test_barrier_hit_probability_grows_with_horizon_and_volatility():
    base = barrier_hit_probability(np.array([0.1]), 0.01, 25.0)[0]
    # Quadrupling h doubles sigma * sqrt(h): d / s = 1, 2 * Phi(-1) = 0.317310507862914.
    assert barrier_hit_probability(np.array([0.1]), 0.01, 100.0)[0] == pytest.approx(
        0.317310507862914, rel=1e-12
    )
    assert barrier_hit_probability(np.array([0.1]), 0.02, 25.0)[0] == pytest.approx(
        0.317310507862914, rel=1e-12
    )
    assert base < 0.317310507862914


def test_lending_distance_is_log_health_factor():
    # C = 2000, D = 800, lt = 0.8: HF = 0.8 * 2000 / 800 = 2, distance ln 2.
    d = lending_liquidation_distance(
        np.array([2000.0, 2000.0, 2000.0]), np.array([800, 0, 2000]), 0.8
    )
    assert d[0] == pytest.approx(math.log(2.0), rel=1e-15)
    assert d[1] == math.inf  # no debt, no barrier
    assert d[2] == pytest.approx(math.log(0.8))  # HF 0.8: already liquidatable (< 0)


def test_perp_distances_of_a_long_and_a_short():
    # n = +10000 at mark, M = 2000, m = 0.01: x = (1 - 0.2) / 0.99, down = -ln x
    # = 0.2130932154607082. n = -10000: x = (1 + 0.2) / 1.01, up = ln x = 0.1723712259407865.
    # A long with M >= n (x <= 0) has no barrier; a flat account has none either.
    down, up = perp_liquidation_distances(
        np.array([10000.0, -10000.0, 1000.0, 0.0]), np.array([2000.0, 2000.0, 1500.0, 50.0]), 0.01
    )
    assert down[0] == pytest.approx(0.2130932154607082, rel=1e-13)
    assert up[1] == pytest.approx(0.1723712259407865, rel=1e-13)
    assert down[1] == math.inf and up[0] == math.inf
    assert down[2] == math.inf and up[2] == math.inf
    assert down[3] == math.inf and up[3] == math.inf


def test_liquidation_probability_adds_the_two_sides_and_caps_at_one():
    # sigma * sqrt(h) = 0.05: d = 0.1 -> 2 Phi(-2) each side; d = 0 -> 1.
    p = liquidation_probability(np.array([0.1, 0.1, 0.0]), np.array([np.inf, 0.1, 0.1]), 0.01, 25.0)
    assert p[0] == pytest.approx(two_phi_minus(2.0), rel=1e-12)
    assert p[1] == pytest.approx(2 * two_phi_minus(2.0), rel=1e-12)
    assert p[2] == 1.0


# ------------------------------------------------------------------ the decision rule
def test_choose_on_a_tiny_population():
    """Seven accounts, each placed by hand where one choice must win.

    Common: sigma = 0.01, h = 25 (sigma sqrt(h) = 0.05), lt = 0.8, m = 0.01, f = 0.5.
    Score J = mu * n' / E - p' / tau, E = C - D + M.

    0 flat, mu = +0.02, tau = 1, add b = 500, a = +1500: after the add D = M = 500,
      n = 1500, E = 2000; gain 0.02 * 1500 / 2000 = 0.015; lending distance ln 3.2,
      perp -ln((1 - 1/3) / 0.99) = 0.395: p ~ 3e-15. J_add ~ 0.015 > J_hold = 0: ADD.
    1 as 0 but a = +5000 (10x): perp distance -ln(0.9 / 0.99) = 0.0953, p = 2 Phi(-1.906)
      = 0.0566238; gain 0.05; J_add = 0.05 - 0.0566 < 0 = J_hold: HOLD.
    2 as 1 with tau = 2: J_add = 0.05 - 0.0283 > 0: ADD (tolerance scales the penalty).
    3 long n = 3000, M = D = 1000, C = 2000 (E = 2000), mu = -0.01, not early: hold gain
      -0.015; close gain 0 with the same p (not early): CLOSE beats reduce (-0.0075).
    4 long n = 10000, M = D = 1200, C = 2000 (E = 2000), mu = +0.001, early, l = 3:
      hold: gain 0.005, perp distance -ln(0.88 / 0.99) = 0.11778, p = 0.0184898,
      J = -0.0135. Reduce: n' = 5000, w = max(0, 1200 - 5000 / 3) = 0, M' = 1200,
      perp distance 0.264, p ~ 1e-7; J = 0.0025. Close: J = 0. REDUCE.
    5 as 4 but not early: reduce and close keep p = 0.0185: J_red = -0.016,
      J_close = -0.0185, J_hold = -0.0135: HOLD (rides towards liquidation).
    6 equity <= 0 (C = 1000, D = 1500, M = 0): HOLD whatever the scores.
    """
    n_acc = 7
    mu = np.array([0.02, 0.02, 0.02, -0.01, 0.001, 0.001, 0.05])
    tol = np.array([1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0])
    early = np.array([False, False, False, False, True, False, True])
    c = np.array([2000.0, 2000.0, 2000.0, 2000.0, 2000.0, 2000.0, 1000.0])
    d = np.array([0.0, 0.0, 0.0, 1000.0, 1200.0, 1200.0, 1500.0])
    m = np.array([0.0, 0.0, 0.0, 1000.0, 1200.0, 1200.0, 0.0])
    n = np.array([0.0, 0.0, 0.0, 3000.0, 10000.0, 10000.0, 0.0])
    add_debt = np.array([500.0, 500.0, 500.0, 0.0, 0.0, 0.0, 100.0])
    add_notional = np.array([1500.0, 5000.0, 5000.0, 0.0, 0.0, 0.0, 300.0])
    lev = 3.0
    withdraw = np.maximum(m - np.abs(n) * 0.5 / lev, 0.0)
    got = choose(
        mu=mu,
        sigma=0.01,
        horizon=np.full(n_acc, 25.0),
        tolerance=tol,
        early=early,
        collateral_value=c,
        debt_value=d,
        margin=m,
        notional=n,
        liquidation_threshold=0.8,
        maintenance_rate=0.01,
        add_debt=add_debt,
        add_notional=add_notional,
        reduce_fraction=0.5,
        reduce_withdraw=withdraw,
        trading_cost=0.0,
    )
    expected = [
        Choice.ADD,
        Choice.HOLD,
        Choice.ADD,
        Choice.CLOSE,
        Choice.REDUCE,
        Choice.HOLD,
        Choice.HOLD,
    ]
    assert got.tolist() == [int(x) for x in expected]
    # The hand figures the docstring relies on, from the independent reference.
    assert two_phi_minus(-math.log(0.9 / 0.99) / 0.05) == pytest.approx(0.0566237958666085)
    assert two_phi_minus(-math.log(0.88 / 0.99) / 0.05) == pytest.approx(0.0184897969679278)


def test_choose_reduces_with_a_withdrawal_when_the_lending_leg_is_the_danger():
    """An early account whose health factor is near 1 reduces and repays.

    C = 2000, D = 1900, lt = 0.8: HF = 1600 / 1900 = 0.842 < 1: already liquidatable,
    p = 1 in every state keeping D = 1900. Long n = 3000, M = 1900 (E = 2000), mu = 0.001,
    l = 3. Reduce: n' = 1500, w = 1900 - 1500 / 3 = 1400, D' = 500, M' = 500: HF = 3.2,
    perp distance -ln((1 - 1/3) / 0.99) = 0.395 (p ~ 3e-15); gain 0.001 * 1500 / 2000
    = 0.00075: J_red ~ 0.00075. Close: J = 0 (D' = 0). Hold: 0.0015 - 1 < 0. REDUCE.
    """
    got = choose(
        mu=np.array([0.001]),
        sigma=0.01,
        horizon=np.array([25.0]),
        tolerance=np.array([1.0]),
        early=np.array([True]),
        collateral_value=np.array([2000.0]),
        debt_value=np.array([1900.0]),
        margin=np.array([1900.0]),
        notional=np.array([3000.0]),
        liquidation_threshold=0.8,
        maintenance_rate=0.01,
        add_debt=np.array([0.0]),
        add_notional=np.array([0.0]),
        reduce_fraction=0.5,
        reduce_withdraw=np.array([1400.0]),
        trading_cost=0.0,
    )
    assert got.tolist() == [int(Choice.REDUCE)]


def test_trading_cost_makes_a_weak_signal_not_worth_a_trade():
    """One long account (n = 3000, M = D = 1000, C = 2000: E = 2000) whose signal turned
    (mu = -0.01), and one flat account offered an add (b = 500, a = +1500, mu = +0.002).
    Risk is negligible for both (lending distance ln 1.6, perp -ln((1 - 1/3)/0.99)).

    Cost k = 0.02: close costs 0.02 * 3000 / 2000 = 0.03 against a hold of -0.015: HOLD;
      the add gains 0.002 * 1500 / 2000 = 0.0015 and costs 0.02 * 1500 / 2000 = 0.015: HOLD.
    Cost k = 0.005: close costs 0.0075 < 0.015: CLOSE; the add still costs 0.00375 > 0.0015:
      HOLD.
    Cost k = 0.0005: close; the add costs 0.000375 < 0.0015: ADD.
    """

    def run(cost):
        return choose(
            mu=np.array([-0.01, 0.002]),
            sigma=0.01,
            horizon=np.array([25.0, 25.0]),
            tolerance=np.array([1.0, 1.0]),
            early=np.array([False, False]),
            collateral_value=np.array([2000.0, 2000.0]),
            debt_value=np.array([1000.0, 0.0]),
            margin=np.array([1000.0, 0.0]),
            notional=np.array([3000.0, 0.0]),
            liquidation_threshold=0.8,
            maintenance_rate=0.01,
            add_debt=np.array([0.0, 500.0]),
            add_notional=np.array([0.0, 1500.0]),
            reduce_fraction=0.5,
            reduce_withdraw=np.array([0.0, 0.0]),
            trading_cost=cost,
        ).tolist()

    assert run(0.02) == [Choice.HOLD, Choice.HOLD]
    assert run(0.005) == [Choice.CLOSE, Choice.HOLD]
    assert run(0.0005) == [Choice.CLOSE, Choice.ADD]


def test_margin_actions_concat_keeps_order():
    a = PerpMarginActions.build("v", PerpMarginAction.DEPOSIT, np.array([3, 1]), np.array([5, 6]))
    b = PerpMarginActions.build("v", PerpMarginAction.WITHDRAW, np.array([2]), np.array([7]))
    both = PerpMarginActions.concat("v", [a, PerpMarginActions.empty("v"), b])
    assert both.holder.tolist() == [3, 1, 2]
    assert both.kind.tolist() == [0, 0, 1]
    assert both.amount.tolist() == [5, 6, 7]
    assert len(PerpMarginActions.concat("v", [])) == 0


# ------------------------------------------------------------------ in the model
def _scenario(**extra):
    overrides = {
        "run.steps": 40,
        "agents.noise.count": 200,
        "agents.perp_traders.count": 0,
        "agents.lending_loopers.count": 0,
        "agents.leveraged_traders.count": 60,
        "agents.leveraged_traders.pool": "aave",
        "agents.leveraged_traders.decision_probability": 1.0,
    }
    overrides.update({f"agents.leveraged_traders.{k}": v for k, v in extra.items()})
    return load_scenario("default").with_overrides(overrides)


def _population(model):
    return next(t for t in model.traders if isinstance(t, LeveragedTraders))


def test_first_add_borrows_deposits_and_opens_what_the_rule_says():
    """Step 0: each adding account borrows b = floor(f * beta * ltv * C) (USDC units),
    deposits all of it on the venue and opens floor(l * b / mark / lot) lots."""
    model = MarginModel(_scenario(), check_invariants=True)
    pop = _population(model)
    pv = model.protocols_view
    res_c = pv.reserve("aave", "WETH")
    model.step()
    # Oracles and marks move only in phase 2, so after the step they read what the
    # population saw.
    mark = pv.perp_mark("perpx", pop.instrument)
    p_c = pv.reserve_price("aave", "WETH")
    assert pop.marks[-1] == mark
    added = np.flatnonzero(pop.last_choice == Choice.ADD)
    assert added.size > 10
    h = pop.holders[added]
    capital = model.scenario.agents.leveraged_traders.capital  # WETH each, supplied at step 0
    assert capital == 2.0
    c_val = capital * p_c
    b_units = np.floor(0.25 * pop.borrow_ratio[added] * float(res_c.ltv) * c_val * 1e6)
    debt = pv.debt_amounts("aave", h, "USDC")
    assert np.array_equal(debt, b_units)
    # Everything borrowed went to the venue; the wallet holds no USDC.
    assert model.view.balances(h, model.ledger.asset_id("USDC")).tolist() == [0] * h.size
    lots = np.floor(pop.perp_leverage[added] * (b_units / 1e6) / mark / 0.001).astype(np.int64)
    size = pv.perp_positions("perpx", h, pop.instrument)
    side = np.sign(size)
    assert np.array_equal(np.abs(size), lots)
    assert set(side.tolist()) <= {-1, 1}
    # The others held: no debt, no position.
    others = pop.holders[pop.last_choice == Choice.HOLD]
    assert pv.debt_amounts("aave", others, "USDC").sum() == 0
    assert np.all(pv.perp_positions("perpx", others, pop.instrument) == 0)


def test_run_creates_debt_on_both_venues_and_closes_repay_it():
    model = MarginModel(_scenario(), check_invariants=True)
    pop = _population(model)
    pv = model.protocols_view
    usdc = model.ledger.asset_id("USDC")
    closes_checked = 0
    for _ in range(model.scenario.run.steps):
        model.step()
        # A close that the book filled leaves no position and no margin on the venue, and
        # its margin went to the debt: either the debt is repaid in full or the wallet kept
        # no USDC. (A market order on a thin book may fill only in part.)
        closed = pop.holders[pop.last_choice == Choice.CLOSE]
        flat = pv.perp_positions("perpx", closed, pop.instrument) == 0
        assert flat.sum() >= 0.8 * closed.size
        closed = closed[flat]
        if closed.size:
            assert np.all(pv.perp_margin_balances("perpx", closed) < 1e-6)
            debt = pv.debt_amounts("aave", closed, "USDC")
            wallet = model.view.balances(closed, usdc)
            assert np.all((debt == 0) | (wallet == 0))
            closes_checked += closed.size
    assert closes_checked > 10
    h = pop.holders
    debt = pv.debt_amounts("aave", h, "USDC")
    size = pv.perp_positions("perpx", h, pop.instrument)
    # Lending debt and perp positions: the cross-protocol link is in place.
    assert (debt > 0).sum() > 20
    assert (size != 0).sum() > 20
    # Every open position is funded by lending debt (its margin came from the loan).
    assert np.all(debt[size != 0] > 0)
    assert pop.choices[Choice.ADD] > 0


def test_same_seed_same_decisions():
    a = MarginModel(_scenario(**{"decision_probability": 0.3}))
    b = MarginModel(_scenario(**{"decision_probability": 0.3}))
    for _ in range(10):
        a.step()
        b.step()
    assert np.array_equal(_population(a).choices, _population(b).choices)
    h = _population(a).holders
    assert np.array_equal(
        a.protocols_view.debt_amounts("aave", h, "USDC"),
        b.protocols_view.debt_amounts("aave", h, "USDC"),
    )


@pytest.mark.parametrize(
    ("override", "field", "message"),
    [
        ({"pool": "maker"}, "pool", "must name a lending protocol"),
        ({"debt": "DAI"}, "debt", "'DAI' is not a reserve of 'aave'"),
        ({"perp_instrument": "WETH-USDC"}, "perp_instrument", "must be a perp instrument"),
    ],
)
def test_scenario_rejects_inconsistent_sections(override, field, message):
    overrides = {"agents.leveraged_traders.count": 5, "agents.leveraged_traders.pool": "aave"}
    overrides.update({f"agents.leveraged_traders.{k}": v for k, v in override.items()})
    with pytest.raises(ScenarioError) as err:
        load_scenario("default").with_overrides(overrides)
    assert message in dict(err.value.problems)[f"agents.leveraged_traders.{field}"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("borrow_ratio", {"dist": "uniform", "low": 0.5, "high": 1.5}, "reaches 1.5"),
        ("risk_tolerance", 0.0, "values > 0"),
        ("perp_leverage", {"dist": "normal", "mean": 3.0, "std": 1.0}, "set a min"),
        ("add_fraction", 0.0, "greater than 0"),
    ],
)
def test_config_rejects_parameters_outside_their_range(field, value, message):
    with pytest.raises(ScenarioError) as err:
        load_scenario("default").with_overrides({f"agents.leveraged_traders.{field}": value})
    assert message in dict(err.value.problems)[f"agents.leveraged_traders.{field}"]


def test_config_accepts_distributions_inside_their_range():
    # A lognormal tolerance is > 0 without a min; a normal leverage with min 1 is >= 1.
    sc = load_scenario("default").with_overrides(
        {
            "agents.leveraged_traders.risk_tolerance": {"dist": "lognormal", "median": 0.5},
            "agents.leveraged_traders.perp_leverage": {
                "dist": "normal",
                "mean": 3.0,
                "std": 1.0,
                "min": 1.0,
            },
            "agents.leveraged_traders.borrow_ratio": 1.0,
        }
    )
    assert sc.agents.leveraged_traders.borrow_ratio.value == 1.0


def _crash_liquidated(early_share: float) -> tuple[int, int, set[str]]:
    """Accounts of the population liquidated in a lighter crash run, with reduces chosen."""
    scenario = load_scenario("crash").with_overrides(
        {
            "run.seed": 11,
            "run.steps": 300,
            "agents.noise.count": 500,
            "agents.lending_loopers.count": 500,
            "agents.perp_traders.count": 300,
            "agents.leveraged_traders.count": 300,
            "agents.leveraged_traders.pool": "aave",
            "agents.leveraged_traders.decision_probability": 0.3,
            "agents.leveraged_traders.early_deleverage_share": early_share,
        }
    )
    model = MarginModel(scenario)
    model.run()
    pop = _population(model)
    liq = model.event_tables()["liquidations"]
    mine = liq[liq["account"].isin(set(pop.holders.tolist()))]
    return mine["account"].nunique(), int(pop.choices[Choice.REDUCE]), set(mine["protocol"])


def test_early_deleverage_flag_cuts_liquidations_in_a_crash():
    # Same seed, same draws: only the flag differs. Without it no account ever reduces (the
    # rule gives it no reason to) and 55 accounts are liquidated; with it, accounts near a
    # barrier reduce and 20 are.
    none_liquidated, none_reduces, venues = _crash_liquidated(0.0)
    all_liquidated, all_reduces, _ = _crash_liquidated(1.0)
    assert none_reduces == 0 and all_reduces > 20
    assert none_liquidated > 30
    assert all_liquidated < 0.6 * none_liquidated
    # The crash reaches these accounts on the lending pool (their collateral falls).
    assert "aave" in venues
