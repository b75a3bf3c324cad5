"""The liquidation-designs study: its measures by hand, its overrides, and the quick run."""

import math

import numpy as np
import pandas as pd
import pytest

from marginsim.experiments.runner import run
from marginsim.experiments.scenarios import load_scenario
from marginsim.experiments.studies import get_study
from marginsim.experiments.studies.liquidation_designs import (
    METRICS,
    POLICIES,
    SWEEPS,
    _longest_run,
    policy_overrides,
    replicate_seed,
    run_measures,
)


def test_longest_cascade_counts_consecutive_steps():
    assert _longest_run([]) == 0
    assert _longest_run([5, 5, 6, 7, 9, 10, 30]) == 3  # 5-6-7
    assert _longest_run([1, 3, 5]) == 1


def test_replicate_seeds_come_from_the_spawned_seed_sequence():
    expected = int(
        np.random.SeedSequence(13, spawn_key=(2,)).generate_state(1, np.uint64)[0] >> np.uint64(1)
    )
    assert replicate_seed(13, 2) == expected
    assert len({replicate_seed(13, i) for i in range(5)}) == 5
    assert all(0 <= replicate_seed(13, i) < 2**63 for i in range(5))


def test_policy_overrides_reach_lending_pools_and_perp_venues_that_take_the_policy():
    crash = load_scenario("crash")
    dynamic = policy_overrides(crash, {"kind": "dynamic"})
    assert sorted(dynamic) == [
        "protocols.aave.liquidation_policy",
        "protocols.perpx.liquidation_policy",
        "protocols.thinlend.liquidation_policy",
    ]
    gradual = policy_overrides(crash, {"kind": "gradual"})  # perp venues keep static
    assert sorted(gradual) == [
        "protocols.aave.liquidation_policy",
        "protocols.thinlend.liquidation_policy",
    ]
    # Every policy of the study and every sweep value gives a valid scenario.
    for policy in POLICIES.values():
        crash.with_overrides(policy_overrides(crash, policy))
    for name, (parameter, values) in SWEEPS.items():
        for v in values:
            crash.with_overrides(policy_overrides(crash, POLICIES[name] | {parameter: v}))


def test_run_measures_by_hand():
    crash = load_scenario("crash")  # USDC 6 decimals, WETH 9; protocols aave, maker, perpx
    metrics = pd.DataFrame({"index_price": [2000.0, 1500.0], "mid_price": [2000.0, 1500.0]})
    liq = pd.DataFrame(
        {
            "step": [10, 11, 11, 40],
            "protocol": ["aave", "aave", "maker", "perpx"],
            "account": [7, 7, 8, 9],
            "debt_asset": ["USDC", "USDC", "DAI", "ETH-PERP"],
            "debt_repaid": [1_000 * 10**6, 500 * 10**6, 2_000 * 10**6, 3_000 * 10**6],
            "collateral_asset": ["WETH", "WETH", "WETH", "USDC"],
            "oracle_price": [1800.0, 1700.0, 1700.0, 1600.0],
            "protocol_fee": [10**7, 2 * 10**7, 100 * 10**6, 5 * 10**6],
            "bonus_value": [0.0, 0.0, 0.0, -25.0],
        }
    )
    bad = pd.DataFrame({"asset": ["USDC", "WETH"], "amount": [300 * 10**6, 10**8]})
    events = {"liquidations": liq, "bad_debt": bad}
    m = run_measures(crash, metrics, events, {"max_drawdown": 0.25})
    # Bad debt: 300 USDC + 0.1 WETH at the final index 1,500 = 450.
    assert m["bad_debt"] == pytest.approx(450.0)
    # Volume: 1,000 + 500 + 2,000 DAI + 3,000 USDC of perp notional.
    assert m["liquidation_volume"] == pytest.approx(6_500.0)
    assert m["accounts_liquidated"] == 3  # (aave, 7) once
    assert m["cascade_length"] == 2  # steps 10-11
    # Revenue: 0.01 WETH * 1,800 + 0.02 WETH * 1,700 + 100 DAI penalty - 25 paid by the fund.
    assert m["protocol_revenue"] == pytest.approx(18.0 + 34.0 + 100.0 - 25.0)
    assert m["max_drawdown"] == 0.25
    assert math.isnan(m["hunter_profit"])  # no hunter in this run


def test_hunter_profit_from_its_trades():
    scenario = load_scenario("liquidation_hunt")
    result = run(scenario)
    m = run_measures(scenario, result.metrics, result.events, result.summary)
    names = result.events["holders"].set_index("holder")["name"]
    hunter = next(h for h, n in names.items() if n.startswith("liquidation_hunter"))
    t = result.events["trades"]
    fee = scenario.instruments[0].taker_fee
    cash = 0.0
    base = 0.0
    for row in t[(t["buyer"] == hunter) | (t["seller"] == hunter)].itertuples():
        sign = 1 if row.buyer == hunter else -1
        aggressor = (row.aggressor_side > 0) == (sign > 0)
        cash += -sign * row.price * row.qty - (fee * row.price * row.qty if aggressor else 0.0)
        base += sign * row.qty
    final_mid = result.metrics["mid_price"].dropna().iloc[-1]
    assert m["hunter_profit"] == pytest.approx(cash + base * final_mid, rel=1e-9)
    assert m["accounts_liquidated"] == len(
        result.events["liquidations"][["protocol", "account"]].drop_duplicates()
    )


def test_quick_study_writes_every_table_and_figure(tmp_path):
    report = get_study("liquidation-designs").load()(
        tmp_path, quick=True, workers=1, progress=False
    )
    assert report == tmp_path / "report.md"
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    assert len(runs) == 3 * len(POLICIES)  # one replicate per scenario and policy
    assert set(runs["scenario_name"]) == {"crash", "liquidation_hunt", "depeg"}
    for metric in METRICS:
        table = pd.read_parquet(tmp_path / f"table_{metric}.parquet")
        assert len(table) == 3 * len(POLICIES)
        assert (tmp_path / f"fig_{metric}.png").stat().st_size > 0
    sweep = pd.read_parquet(tmp_path / "sweep.parquet")
    assert len(sweep) == 2 * len(SWEEPS)  # lowest and highest value, liquidation_hunt
    for name in SWEEPS:
        assert (tmp_path / f"sweep_{name}.png").stat().st_size > 0
    # Static rows are plain runs of the scenario with the replicate's seed.
    row = runs[(runs["scenario_name"] == "liquidation_hunt") & (runs["policy"] == "static")].iloc[0]
    scenario = load_scenario("liquidation_hunt")
    assert row["seed"] == replicate_seed(scenario.run.seed, 0)
    again = run(scenario, seed=int(row["seed"]))
    assert row["max_drawdown"] == again.summary["max_drawdown"]
    assert row["policy_events"] == 0
    # The breaker acted in the hunt (it is what the policy is for) and the hunter lost.
    breaker = runs[
        (runs["scenario_name"] == "liquidation_hunt") & (runs["policy"] == "circuit_breaker")
    ]
    assert breaker["policy_events"].iloc[0] > 0
    assert "## bad debt" in report.read_text()


def test_runs_in_worker_processes_match_runs_in_this_process():
    from marginsim.experiments.studies.liquidation_designs import _execute, _tasks

    hunt = load_scenario("liquidation_hunt").with_overrides({"run.steps": 40})
    tasks = _tasks(hunt, "liquidation_hunt", "gradual", POLICIES["gradual"], 2)
    here = _execute([dict(t) for t in tasks], None, False, "test")
    there = _execute([dict(t) for t in tasks], 2, False, "test")
    pd.testing.assert_frame_equal(here, there)
    assert here["seed"].tolist() == [replicate_seed(hunt.run.seed, i) for i in range(2)]
