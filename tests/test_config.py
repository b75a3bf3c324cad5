import pytest
from pydantic import ValidationError

from marginsim.config import Scenario, ScenarioError, parse_override_value
from marginsim.experiments.scenarios import builtin_scenarios, load_scenario

MINIMAL = """
name = "t"
[[instruments]]
id = "WETH-USDC"
base = "WETH"
quote = "USDC"
tick = 0.01
lot = 0.001
"""


def problems(text: str) -> dict[str, str]:
    with pytest.raises(ScenarioError) as err:
        Scenario.from_toml_str(text, "t.toml")
    return dict(err.value.problems)


@pytest.mark.parametrize("name", sorted(builtin_scenarios()))
def test_builtin_scenarios_round_trip_through_toml(name):
    scenario = load_scenario(name)
    assert Scenario.from_toml_str(scenario.to_toml()) == scenario


def test_defaults_are_written_out():
    text = Scenario.from_toml_str(MINIMAL).to_toml()
    assert "max_liquidation_rounds = 5" in text
    assert "taker_fee = 0.0005" in text


def test_scenario_is_immutable():
    scenario = Scenario.from_toml_str(MINIMAL)
    with pytest.raises(ValidationError, match="frozen"):
        scenario.run.seed = 3


def test_every_error_names_field_rule_and_value_at_once():
    found = problems("""
[run]
seed = -1
steps = 0
stepz = 3
[agents.noise]
count = "many"
""")
    assert found["run.seed"] == "Input should be greater than or equal to 0; got -1"
    assert found["run.steps"] == "Input should be greater than or equal to 1; got 0"
    assert found["run.stepz"] == "unknown field (not part of the scenario format)"
    assert "got 'many'" in found["agents.noise.count"]


def test_cross_references_are_checked_together():
    found = problems(
        MINIMAL
        + """
[[instruments]]
id = "X"
base = "WETH"
quote = "USDT"
tick = 0.01
lot = 0.001
[oracles.eth]
kind = "mid"
source = "nope"
[[shocks]]
step = 5000
kind = "fundamental_jump"
size = -0.2
"""
    )
    assert found["instruments[1].quote"] == "unknown asset 'USDT'; assets are ['USDC', 'WETH']"
    assert found["oracles.eth.source"].startswith("unknown source 'nope'")
    assert "shocks[0].step" not in found  # a shock after the end just never fires


def test_tick_and_lot_must_be_whole_ledger_units():
    found = problems(MINIMAL.replace("lot = 0.001", "lot = 0.0000000001"))
    assert "instruments[0].lot" in found
    found = problems(MINIMAL.replace("tick = 0.01", "tick = 0.0001"))
    assert "tick * lot must be a whole number of USDC ledger units" in found["instruments[0].tick"]


def test_duplicate_ids_are_reported():
    found = problems(MINIMAL + MINIMAL.split('name = "t"')[1])
    assert found["instruments[1].id"] == "must be unique; 'WETH-USDC' repeats"


def test_toml_syntax_error_is_a_scenario_error():
    found = problems("[run\nseed=1")
    assert found["<toml>"].startswith("not valid TOML")


def test_missing_file_is_a_scenario_error(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read"):
        Scenario.from_toml(tmp_path / "nope.toml")


def test_overrides_return_a_new_validated_scenario():
    base = Scenario.from_toml_str(MINIMAL)
    changed = base.with_overrides(
        {
            "run.seed": 11,
            "instruments.WETH-USDC.taker_fee": 0.001,
            "instruments.0.tick": 0.1,
            "oracles.feed.kind": "index",
        }
    )
    assert changed.run.seed == 11 and base.run.seed == 7
    assert changed.instruments[0].taker_fee == 0.001
    assert changed.instruments[0].tick == 0.1
    assert changed.oracles["feed"].kind == "index"


def test_overrides_are_validated_like_the_file():
    base = Scenario.from_toml_str(MINIMAL)
    with pytest.raises(ScenarioError) as err:
        base.with_overrides(
            {"run.sed": 1, "agents.noise.order_probability": 1.5, "instruments.BTC-USDC.tick": 1.0}
        )
    found = dict(err.value.problems)
    assert found["run.sed"] == "unknown field (not part of the scenario format)"
    assert "less than or equal to 1; got 1.5" in found["agents.noise.order_probability"]
    assert found["instruments.BTC-USDC.tick"] == "no item with id or symbol 'BTC-USDC'"


def test_parse_override_value():
    assert parse_override_value("0.8") == 0.8
    assert parse_override_value("7") == 7
    assert parse_override_value("true") is True
    assert parse_override_value("[1, 2]") == [1, 2]
    assert parse_override_value("gbm") == "gbm"
    assert parse_override_value('"7"') == "7"


def test_replay_file_is_resolved_against_the_scenario_folder(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(MINIMAL + '[exogenous]\nmodel = "replay"\nfile = "prices.csv"\n')
    scenario = Scenario.from_toml(path)
    assert scenario.exogenous.file == str(tmp_path / "prices.csv")


def test_unknown_builtin_name_is_a_scenario_error():
    with pytest.raises(ScenarioError, match="'nope' is neither a built-in scenario"):
        load_scenario("nope")


def test_perp_venue_defaults_and_tier_rules():
    scenario = Scenario.from_toml_str(
        MINIMAL + '[oracles.eth]\nkind = "index"\n[protocols.perpx]\nkind = "perp"\n'
        'index_oracle = "eth"\n'
    )
    tiers = scenario.protocols["perpx"].tiers
    assert [t.max_leverage for t in tiers] == [125, 100, 50, 20, 10, 5, 4, 3, 2, 1]
    assert Scenario.from_toml_str(scenario.to_toml()) == scenario
    with pytest.raises(ScenarioError) as err:
        scenario.with_overrides(
            {
                "protocols.perpx.tiers": [
                    {"max_notional": 10.0, "maintenance_rate": 0.1, "max_leverage": 20},
                ],
                "protocols.perpx.index_oracle": "nope",
            }
        )
    found = dict(err.value.problems)
    assert "the last tier 0 (unbounded); got [10.0]" in found["protocols.perpx.tiers"]


def test_lending_preset_fills_omitted_fields_and_scenario_values_win():
    scenario = Scenario.from_toml_str(
        MINIMAL + '[oracles.eth]\nkind = "index"\n[protocols.comp]\nkind = "lending"\n'
        'preset = "compound-v2"\n[protocols.comp.reserves.WETH]\nprice = "eth"\n'
        "[protocols.comp.reserves.USDC]\nprice = 1.0\nreserve_factor = 0.5\n"
    )
    comp = scenario.protocols["comp"]
    assert (comp.flash_loans, comp.close_factor, comp.full_close_below_hf) == (False, 0.5, 0.0)
    assert comp.reserves["WETH"].ltv == 0.825 and comp.reserves["WETH"].liquidation_bonus == 0.08
    assert comp.reserves["USDC"].reserve_factor == 0.5  # given in the scenario: wins
    assert comp.reserves["USDC"].rate.slope2 == 0.218
    assert Scenario.from_toml_str(scenario.to_toml()) == scenario


def test_field_errors_and_cross_reference_errors_are_reported_together():
    found = problems(
        MINIMAL.replace('quote = "USDC"', 'quote = "USDT"')
        + """
[run]
seed = -1
stepz = 3
[oracles.eth]
kind = "mid"
source = "nope"
"""
    )
    assert list(found) == [
        "run.seed",
        "run.stepz",
        "instruments[0].quote",
        "oracles.eth.source",
    ]


def test_a_table_failing_its_own_check_is_not_echoed_by_the_cross_reference_pass():
    # ltv above the threshold fails the WETH reserve's own check; the accounts that post WETH
    # on aave must not then be reported as using an unknown reserve.
    scenario = load_scenario("lending_cascade")
    with pytest.raises(ScenarioError) as err:
        scenario.with_overrides({"protocols.aave.reserves.WETH.ltv": 0.9, "run.stepz": 3})
    assert err.value.problems == [
        ("run.stepz", "unknown field (not part of the scenario format)"),
        (
            "protocols.aave.reserves.WETH",
            "liquidation_threshold must be >= ltv, got 0.825 < 0.9",
        ),
    ]
    # A cross-reference problem elsewhere is still found in the same pass.
    with pytest.raises(ScenarioError) as err:
        scenario.with_overrides(
            {
                "protocols.aave.reserves.WETH.ltv": 0.9,
                "agents.lending_loopers.count": 5,
                "agents.lending_loopers.pool": "nope",
            }
        )
    fields = [field for field, _ in err.value.problems]
    assert fields == ["protocols.aave.reserves.WETH", "agents.lending_loopers.pool"]
