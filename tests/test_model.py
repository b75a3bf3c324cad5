"""The model loop: phase order, invariants on every built-in scenario, the default scenario."""

import numpy as np
import pandas as pd
import pytest

from marginsim.agents.loopers import LendingLoopers
from marginsim.config import Scenario
from marginsim.experiments.runner import run
from marginsim.experiments.scenarios import builtin_scenarios, load_scenario
from marginsim.model import MarginModel


def test_step_runs_the_seven_phases_in_order(monkeypatch):
    calls = []
    names = ["exogenous", "oracles", "accrual", "agents", "liquidations", "settlement", "record"]
    for name in names:
        original = getattr(MarginModel, f"phase_{name}")

        def wrapped(self, _original=original, _name=name):
            calls.append(_name)
            _original(self)

        monkeypatch.setattr(MarginModel, f"phase_{name}", wrapped)
    model = MarginModel(load_scenario("default").with_overrides({"run.steps": 2}))
    model.step()
    model.step()
    assert calls == names * 2
    assert model.steps == 2 and model.step_index == 1


@pytest.mark.parametrize("name", sorted(builtin_scenarios()))
def test_conservation_holds_after_every_step_of_every_builtin(name):
    scenario = load_scenario(name)
    # Every step is checked (InvariantViolation would raise); the test also re-checks here.
    model = MarginModel(scenario, check_invariants=True)
    model.run()
    model.ledger.check_conservation()
    assert model.step_index == scenario.run.steps - 1


def test_model_rng_is_seeded_from_the_schedule_stream():
    a = MarginModel(load_scenario("default"))
    b = MarginModel(load_scenario("default"))
    assert a.random.random() == b.random.random()
    assert a.rng.random() == b.rng.random()


def test_index_path_starts_at_initial_and_has_steps_plus_one_values():
    model = MarginModel(load_scenario("default").with_overrides({"run.steps": 50}))
    assert model.index_path.shape == (51,)
    assert model.index_path[0] == 2000.0


def test_fundamental_jump_moves_the_index_in_its_step():
    base = load_scenario("default").with_overrides({"run.steps": 20, "agents.noise.count": 0})
    jumped = base.with_overrides(
        {"shocks": [{"step": 5, "kind": "fundamental_jump", "size": -0.2}]}
    )
    a = MarginModel(base).index_path
    b = MarginModel(jumped).index_path
    np.testing.assert_array_equal(a[:6], b[:6])
    np.testing.assert_allclose(b[6:], a[6:] * 0.8, rtol=1e-12)


def test_default_scenario_does_what_it_is_for():
    """A calm day: the book tracks the index; the noon sell order dents the price, and
    informed traders and makers pull it back."""
    result = run(load_scenario("default"))
    m = result.metrics.set_index("step")
    assert len(m) == 1440 and (m.index.to_numpy() == np.arange(1440)).all()
    # The book stays close to the outside price on a calm day.
    assert m["basis_bps"].abs().median() < 10
    # Five spot and three perp makers; on a calm day at most one pauses at a time.
    assert m["makers_quoting"].median() == 8 and m["makers_quoting"].min() >= 7
    # The 250 WETH market sell at step 720 fills in full below the mid and dents it...
    shock = result.events["shocks"].iloc[0]
    assert (shock["kind"], shock["step"], shock["filled"]) == ("sell_order", 720, 250.0)
    assert shock["avg_price"] < shock["mid_before"]
    assert shock["mid_after"] / shock["mid_before"] - 1 < -0.001
    assert m.loc[720, "depth_bid_1pct"] < 0.8 * m.loc[719, "depth_bid_1pct"]
    # ...and ten minutes later informed traders and makers have closed the gap.
    assert abs(m.loc[730, "basis_bps"]) < 10
    assert result.summary["trades"] > 10_000


def test_empty_market_runs_and_reports_missing_prices():
    scenario = Scenario.from_toml_str("""
name = "empty"
[run]
steps = 3
[[instruments]]
id = "WETH-USDC"
base = "WETH"
quote = "USDC"
tick = 0.01
lot = 0.001
[oracles.mid]
kind = "mid"
source = "WETH-USDC"
""")
    result = run(scenario)
    assert result.metrics["mid_price"].isna().all()
    assert result.metrics["oracle_mid"].isna().all()  # no price yet, reported as missing
    assert result.summary["trades"] == 0


def test_lending_cascade_scenario_does_what_it_is_for():
    """The 30% fall liquidates borrowers on every protocol, worst health first, and the
    forced sales of seized WETH push the book below the outside index."""
    result = run(load_scenario("lending_cascade"), check_invariants=True)
    m = result.metrics.set_index("step")
    liq = result.events["liquidations"]
    assert set(liq["protocol"]) == {"aave", "thinlend", "maker"}
    holders = result.events["holders"].set_index("holder")["name"]
    # Nothing is liquidated before the fall starts (step 120) and every liquidation
    # counted per step is in the table.
    assert liq["step"].min() > 120
    assert int(m["liquidations"].sum()) == len(liq)
    # On the pool priced by the index feed, accounts fall in order of their initial health.
    aave = liq[liq["protocol"] == "aave"].drop_duplicates("account")
    first = [holders[a] for a in aave["account"]]
    assert first[:4] == ["account:aave-0", "account:aave-1", "account:aave-2", "account:aave-3"]
    # Seized collateral sold at market: in steps with liquidations the book trades below
    # the index, in the other steps of the fall it does not.
    falling = m.loc[121:480]
    with_liq = falling.loc[falling["liquidations"] > 0, "basis_bps"]
    without = falling.loc[falling["liquidations"] == 0, "basis_bps"]
    assert with_liq.median() < -5 < without.median()
    # Debt repaid by liquidators left the protocols' books: aave's debt value fell by more
    # than the fall alone explains (USDC debt does not move with the WETH price).
    assert m.loc[719, "aave_debt_value"] < 0.8 * m.loc[0, "aave_debt_value"]
    # Every auction ended (raised in full or exhausted with recorded bad debt).
    auctions = result.events["auctions"]
    assert len(auctions) == len(set(liq.loc[liq["protocol"] == "maker", "account"]))
    assert set(auctions["status"]) <= {"raised", "exhausted", "expired"}
    short = auctions.loc[auctions["shortfall"] > 0, "shortfall"].sum()
    bad = result.events["bad_debt"]
    assert bad.loc[bad["protocol"] == "maker", "amount"].sum() == short


def test_population_size_does_not_change_other_agents_streams():
    """Adding noise traders changes neither the index path nor the makers' first quotes,
    nor the fundamental traders' drawn parameters (DESIGN.md section 3)."""
    base = load_scenario("default").with_overrides({"run.steps": 1})
    more = base.with_overrides({"agents.noise.count": 5000})
    a, b = MarginModel(base), MarginModel(more)
    np.testing.assert_array_equal(a.index_path, b.index_path)
    fa, fb = a.traders[1], b.traders[1]
    np.testing.assert_array_equal(fa.threshold, fb.threshold)
    a.view.step = b.view.step = 0
    qa, qb = a.market_makers[0].act(a.view), b.market_makers[0].act(b.view)
    np.testing.assert_array_equal(qa.price_ticks, qb.price_ticks)
    np.testing.assert_array_equal(qa.qty_lots, qb.qty_lots)


def test_liquidity_withdrawal_shock_shrinks_maker_quotes_for_its_duration():
    scenario = load_scenario("default").with_overrides(
        {
            "run.steps": 12,
            "agents.noise.count": 0,
            "agents.fundamental.count": 0,
            "agents.market_makers.count": 1,
            "agents.perp_market_makers.count": 0,
            "agents.perp_traders.count": 0,
            "agents.lending_loopers.count": 0,
            "agents.arbitrageurs.count": 0,
            "agents.hedgers.count": 0,
            "shocks": [
                {"step": 5, "kind": "liquidity_withdrawal", "size": 0.75, "duration_steps": 3}
            ],
        }
    )
    model = MarginModel(scenario)
    depth = []
    for _ in range(12):
        model.step()
        bid, ask = model.engine.depth(model.primary_instrument, 0.05)
        depth.append(bid + ask)
    # One maker, 8 levels x 4 WETH per side = 32 WETH = 32,000 lots a side; a quarter of
    # that while the shock lasts (steps 5, 6 and 7), the full ladder before and after.
    full, quarter = 2 * 32_000, 2 * 8_000
    assert depth[:5] == [full] * 5
    assert depth[5:8] == [quarter] * 3
    assert depth[8:] == [full] * 4
    assert model.event_tables()["shocks"]["kind"].tolist() == ["liquidity_withdrawal"]


def test_perp_crash_scenario_does_what_it_is_for():
    """The 12% jump liquidates leveraged perp positions through the venue's own engine;
    positions net to zero, funding is paid and every table is consistent."""
    result = run(load_scenario("perp_crash"), check_invariants=True)
    m = result.metrics.set_index("step")
    liq = result.events["liquidations"]
    assert set(liq["protocol"]) == {"perpx"}
    # Nothing is liquidated in the calm before the jump; a wave at the jump step.
    assert liq["step"].min() == 360
    assert (liq["step"] == 360).sum() > 50
    assert int(m["liquidations"].sum()) == len(liq)
    # Open interest collapses at the jump: liquidated longs leave the book.
    oi = m["perpx_ETH-PERP_open_interest_long"]
    assert oi.loc[360] < 0.5 * oi.loc[359]
    # Longs and shorts always balance, and the venue's mark follows its index through it.
    assert (m["perpx_ETH-PERP_open_interest_long"] == m["perpx_ETH-PERP_open_interest_short"]).all()
    assert abs(m.loc[360, "perpx_ETH-PERP_mark"] / m.loc[360, "index_price"] - 1) < 0.01
    # Funding every 240 steps nets to (payers - receivers) >= 0 kept by the venue.
    funding = result.events["funding"]
    assert funding["step"].tolist() == [239, 479, 719]
    assert (funding["paid"] >= funding["received"]).all()
    # What the book could not absorb was auto-deleveraged at bankruptcy prices.
    adl = result.events["adl"]
    assert (adl["step"] == 360).sum() > 0 and (adl["price"] > 0).all()


def test_liquidators_without_capital_liquidate_with_flash_loans():
    scenario = load_scenario("lending_cascade").with_overrides(
        {
            "run.steps": 400,
            "agents.liquidators.capital": {"DAI": 1_000_000.0},
            "agents.liquidators.uses_flash_loans": True,
        }
    )
    model = MarginModel(scenario, check_invariants=True)
    model.run()
    events = model.event_tables()
    liq = events["liquidations"]
    loans = events["flash_loans"]
    lending = liq[liq["protocol"].isin(["aave", "thinlend"])]
    repaid = loans[loans["repaid"]]
    assert len(repaid) > 0
    # Each repaid loan paid for one liquidation of the same pool, step and size...
    rows = set(zip(lending["step"], lending["protocol"], lending["debt_repaid"], strict=True))
    assert set(zip(repaid["step"], repaid["protocol"], repaid["amount"], strict=True)) <= rows
    # ...the first liquidation had to be one (the bots start without any USDC)...
    first = lending.iloc[0]
    assert (first["step"], first["protocol"], first["debt_repaid"]) in set(
        zip(repaid["step"], repaid["protocol"], repaid["amount"], strict=True)
    )
    # ...and the pool charged its fee, rounded up.
    fee_bp = {"aave": 5, "thinlend": 9}
    for row in repaid.itertuples():
        assert row.fee == -(-row.amount * fee_bp[row.protocol] // 10_000)
    # The bots end with USDC they never had: the liquidation profit.
    usdc = model.ledger.asset_id("USDC")
    assert sum(model.ledger.balance(b.holder, usdc) for b in model.liquidators) > 0


def test_looping_scenario_does_what_it_is_for():
    """Loopers build margin debt by recursive borrowing; the 20% jump at step 300 makes them
    deleverage and get liquidated, their forced sales push the book below the index, and
    the run conserves every balance and is reproducible."""
    scenario = load_scenario("looping")
    model = MarginModel(scenario, check_invariants=True)
    (loopers,) = [t for t in model.traders if isinstance(t, LendingLoopers)]
    for _ in range(300):
        model.step()
    before = (loopers.loops, loopers.deleverages)
    model.run()
    m = model.metrics_frame().set_index("step")
    events = model.event_tables()
    # Build-up: margin debt rises step after step while the loopers loop.
    debt = m["aave_debt_value"]
    assert debt.loc[0] < debt.loc[50] < debt.loc[100] < debt.loc[200] < debt.loc[299]
    assert debt.loc[299] > 50 * debt.loc[0] and debt.loc[299] > 5e6
    assert before[0] > 3000  # most accounts looped several times before the jump
    # After the jump: early deleveraging and liquidations of looper accounts only.
    assert loopers.deleverages - before[1] > 500
    liq = events["liquidations"]
    names = events["holders"].set_index("holder")["name"]
    assert liq["step"].min() >= 300
    looper_liq = liq["account"].map(names).str.startswith("lending_loopers[")
    assert looper_liq.all() and looper_liq.sum() > 100
    assert int(m["liquidations"].sum()) == len(liq)
    assert debt.loc[599] < 0.8 * debt.loc[299]
    # The forced sales push the book below the (already fallen) outside price.
    crash = m.loc[300:310]
    assert (crash["mid_price"] / crash["index_price"]).min() < 0.985
    # Reproducible: the same scenario and seed give the same run.
    again = MarginModel(scenario)
    again.run()
    pd.testing.assert_frame_equal(again.metrics_frame(), model.metrics_frame())
    pd.testing.assert_frame_equal(again.event_tables()["liquidations"], liq)


def test_adding_loopers_does_not_change_the_makers_first_quotes():
    base = load_scenario("looping").with_overrides({"run.steps": 1})
    none = base.with_overrides({"agents.lending_loopers.count": 0})
    a, b = MarginModel(none), MarginModel(base)
    np.testing.assert_array_equal(a.index_path, b.index_path)
    a.view.step = b.view.step = 0
    qa, qb = a.market_makers[0].act(a.view), b.market_makers[0].act(b.view)
    np.testing.assert_array_equal(qa.price_ticks, qb.price_ticks)
    np.testing.assert_array_equal(qa.qty_lots, qb.qty_lots)


def test_block_space_includes_the_highest_gas_bids_and_charges_them():
    scenario = load_scenario("lending_cascade").with_overrides(
        {
            "run.steps": 260,
            "run.block_space": 1,
            "agents.liquidators.gas_bid": {"dist": "uniform", "low": 1.0, "high": 100.0},
        }
    )
    model = MarginModel(scenario, check_invariants=True)
    model.run()
    bids = {bot.holder: bot.gas_bid_units for bot in model.liquidators}
    top = max(bids, key=bids.get)
    liq = model.event_tables()["liquidations"]
    assert len(liq) > 0
    # With room for one call a round, the highest bidder wins every liquidation it wants.
    assert set(liq["liquidator"]) == {top}
    usdc = model.ledger.asset_id("USDC")
    paid = model.ledger.balance(model.block_producer, usdc)
    assert paid > 0 and paid % bids[top] == 0
    m = model.metrics_frame()
    assert (m["liquidation_calls"] <= m["liquidation_rounds"] + 1).all()


def test_keeper_failure_scenario_does_what_it_is_for():
    """Congested block space and keepers short of DAI: auctions sell far below market or
    expire unsold, and their shortfall becomes system debt."""
    result = run(load_scenario("keeper_failure"), check_invariants=True)
    m = result.metrics.set_index("step")
    takes = result.events["liquidations"]
    assert len(takes) > 0 and set(takes["protocol"]) == {"maker"}
    paid = (takes["debt_repaid"] + takes["protocol_fee"]) / 1e6  # DAI, 6 decimals
    price = paid / (takes["collateral_seized"] / 1e9)  # DAI per WETH, 9 decimals
    market = m.loc[takes["step"], "mid_price"].to_numpy()
    assert (price.to_numpy() < 0.8 * market).all()  # every sale at least 20% below market
    auctions = result.events["auctions"]
    assert len(auctions) == 8 and (auctions["shortfall"] > 0).all()
    assert set(auctions["status"]) <= {"expired", "exhausted"}
    bad = result.events["bad_debt"]
    assert bad["amount"].sum() == auctions["shortfall"].sum()
    assert m["maker_system_debt"].iloc[-1] > 1_000_000  # DAI left without backing
    assert (m["liquidation_calls"] <= m["liquidation_rounds"] + 1).all()  # one call a round
