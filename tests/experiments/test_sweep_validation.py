"""Bad sweep files are refused before any run starts, naming the problem."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from marginsim.__main__ import cli
from marginsim.experiments.executors import DaskUnavailableError, make_executor
from marginsim.experiments.sweep import SweepError, load_sweep, plan_sweep

GOOD = """
name = "bad"
base = "default"
[overrides]
"run.steps" = 5
[design]
kind = "grid"
[[parameters]]
path = "exogenous.volatility"
values = [0.5, 1.0]
"""


def _refused(text, tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written
    return result.output


def test_unknown_parameter_path(tmp_path):
    out = _refused(GOOD.replace("exogenous.volatility", "exogenous.volatilty"), tmp_path)
    assert "parameters[0] (exogenous.volatilty)" in out
    assert "unknown field" in out


def test_empty_range_and_empty_values(tmp_path):
    ranged = GOOD.replace('kind = "grid"', 'kind = "lhs"\npoints = 4').replace(
        "values = [0.5, 1.0]", "low = 1.0\nhigh = 1.0"
    )
    assert "empty range: low must be < high; got [1.0, 1.0]" in _refused(ranged, tmp_path)
    empty = GOOD.replace("values = [0.5, 1.0]", "values = []")
    assert "parameters[0].values: empty" in _refused(empty, tmp_path)


def test_a_value_the_scenario_rejects_names_the_point(tmp_path):
    out = _refused(GOOD.replace("values = [0.5, 1.0]", "values = [0.5, -1.0]"), tmp_path)
    # Point 0 is fine; point 1 has a negative volatility.
    assert "point 1 (exogenous.volatility=-1.0)" in out
    assert "exogenous.volatility: Input should be greater than or equal to 0" in out


def test_spec_level_problems_are_listed_together():
    with pytest.raises(SweepError) as info:
        load_sweep(
            {
                "name": "x",
                "base": "default",
                "replicates": 0,
                "colour": "red",
                "design": {"kind": "sobol", "points": 6},
                "parameters": [{"path": "exogenous.volatility", "low": 0.1, "high": 0.2}],
            }
        )
    fields = {f for f, _ in info.value.problems}
    assert {"replicates", "colour"} <= fields
    message = str(info.value)
    assert "unknown key" in message
    # Cross-field rules are checked once the fields themselves are valid, all together.
    with pytest.raises(SweepError) as info:
        load_sweep(
            {
                "name": "x",
                "base": "default",
                "design": {"kind": "sobol", "points": 6},
                "parameters": [{"path": "exogenous.volatility", "low": 0.1, "high": 0.2}],
            }
        )
    assert info.value.problems == [
        ("design.points", "must be a power of 2 for 'sobol'; got 6"),
        ("parameters", "design 'sobol' needs at least 2 parameters"),
    ]


def test_zip_lists_of_unequal_length_and_unknown_base():
    with pytest.raises(SweepError, match="equal-length"):
        load_sweep(
            {
                "name": "x",
                "base": "default",
                "design": {"kind": "zip"},
                "parameters": [
                    {"path": "exogenous.volatility", "values": [0.1, 0.2]},
                    {"path": "exogenous.drift", "values": [0.0]},
                ],
            }
        )
    spec = load_sweep(
        {
            "name": "x",
            "base": "no-such-scenario",
            "parameters": [{"path": "run.steps", "values": [1]}],
        }
    )
    with pytest.raises(SweepError, match="neither a built-in scenario"):
        plan_sweep(spec)


def test_dask_missing_gives_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(DaskUnavailableError, match=r"pip install 'marginsim\[cluster\]'"):
        make_executor(2, "local")
    path = tmp_path / "sweep.toml"
    path.write_text(GOOD, encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["sweep", str(path), "--scheduler", "local", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2
    assert "marginsim[cluster]" in result.output


@pytest.mark.parametrize("key", [[-1], [2**32], [0] * 9])
def test_run_spawn_key_is_validated_and_named(key):
    from marginsim.config import ScenarioError
    from marginsim.experiments.scenarios import load_scenario

    with pytest.raises(ScenarioError) as info:
        load_scenario("default").with_overrides({"run.spawn_key": key})
    assert info.value.problems == [
        ("run.spawn_key", f"must be at most 8 integers in [0, 2**32); got {key}")
    ]


def test_builtin_sweeps_load_by_name_and_unknown_names_list_them(tmp_path, monkeypatch):
    from marginsim.experiments.sweep import builtin_sweeps, load_sweep

    monkeypatch.chdir(tmp_path)  # no file called "quick" here
    assert sorted(builtin_sweeps()) == ["lending_sobol", "quick"]
    spec = load_sweep("quick")
    assert spec.name == "quick" and spec.replicates == 2 and spec.base == "default"
    with pytest.raises(SweepError) as err:
        load_sweep("nosuch")
    assert "cannot read nosuch: No such file or directory" in str(err.value)
    assert "(built-in sweeps: lending_sobol, quick)" in str(err.value)


def test_sweep_list_names_each_shipped_example_with_its_description():
    listed = CliRunner().invoke(cli, ["sweep", "--list"])
    assert listed.exit_code == 0
    rows = [line.split(None, 1) for line in listed.output.splitlines()]
    assert [name for name, _ in rows] == ["lending_sobol", "quick"]
    assert rows[1][1].startswith(
        "Volatility against liquidation rounds on the default scenario (short runs)."
    )
