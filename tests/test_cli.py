import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from marginsim.__main__ import cli
from marginsim.model import MarginModel

SHORT = ["--steps", "20", "--no-progress"]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_run_writes_results_and_prints_summary(tmp_path):
    result = invoke("run", "default", *SHORT, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "default: 20 steps, seed 7" in result.output
    folder = Path(result.output.strip().splitlines()[-1].removeprefix("results: "))
    assert folder.parent == tmp_path / "default"
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert names == [
        "events/adl.parquet",
        "events/auctions.parquet",
        "events/bad_debt.parquet",
        "events/cascades.parquet",
        "events/flash_loans.parquet",
        "events/funding.parquet",
        "events/holders.parquet",
        "events/liquidation_map.parquet",
        "events/liquidations.parquet",
        "events/mints.parquet",
        "events/network_accounts.parquet",
        "events/network_clearing.parquet",
        "events/network_collateral.parquet",
        "events/network_edges.parquet",
        "events/network_nodes.parquet",
        "events/shocks.parquet",
        "events/swaps.parquet",
        "events/trades.parquet",
        "manifest.json",
        "metrics.parquet",
        "report.html",
        "scenario.toml",
        "summary.json",
    ]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["seed"] == 7
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["libraries"]["mesa"] == "3.3.1"
    assert not list((tmp_path / "default").glob(".tmp-*"))


def test_seed_and_set_are_applied(tmp_path):
    result = invoke(
        "run",
        "default",
        *SHORT,
        "--seed",
        "3",
        "--set",
        "agents.noise.count=50",
        "--out",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    folder = Path(result.output.strip().splitlines()[-1].removeprefix("results: "))
    text = (folder / "scenario.toml").read_text()
    assert "seed = 3" in text and "count = 50" in text


def test_scenarios_lists_builtins():
    result = invoke("scenarios")
    assert result.exit_code == 0
    lines = dict(line.split(maxsplit=1) for line in result.output.splitlines())
    assert lines["default"].startswith("A calm day")
    assert lines["lending_cascade"].startswith("A 30% fall over six hours")


def test_validate_ok_and_show(tmp_path):
    assert invoke("validate", "default").output == "ok: default (1440 steps, seed 7)\n"
    shown = invoke("validate", "default", "--show", "--set", "run.steps=9").output
    assert "steps = 9" in shown


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "nope"], "'nope' is neither a built-in scenario"),
        (
            ["run", "default", "--set", "run.steps"],
            "--set expects dotted.key=value, got 'run.steps'",
        ),
        (
            ["run", "default", "--set", "run.steps=-4"],
            "run.steps: Input should be greater than or equal to 1; got -4",
        ),
        (["run", "default", "--set", "agents.noise.cuont=4"], "agents.noise.cuont: unknown field"),
        (["validate", "default", "--set", "instruments.X.tick=1"], "no item with id or symbol 'X'"),
        (["run", "default", "--steps", "0"], "Invalid value for '--steps'"),
    ],
)
def test_bad_input_exits_2_with_a_message_naming_the_problem(args, needle):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output


def test_bad_scenario_file_exits_2_naming_the_field(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[run]\nsteps = "ten"\n[[instruments]]\nid = "A"\n')
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    assert "run.steps: Input should be a valid integer" in result.output
    assert "instruments[0].base: Field required" in result.output
    assert str(path) in result.output


def test_missing_file_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "neither a built-in scenario" in result.output


def test_internal_failure_exits_1_and_saves_traceback(tmp_path, monkeypatch):
    def broken(self):
        raise RuntimeError("boom in agents")

    monkeypatch.setattr(MarginModel, "phase_agents", broken)
    result = CliRunner().invoke(cli, ["run", "default", *SHORT, "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "run failed: boom in agents" in result.output
    traces = list((tmp_path / "default").glob("*.traceback.txt"))
    assert len(traces) == 1 and "RuntimeError: boom in agents" in traces[0].read_text()


def test_check_invariants_fails_the_run_on_the_first_violation(tmp_path, monkeypatch):
    original = MarginModel.phase_agents

    def leaky(self):
        original(self)
        if self.step_index == 4:  # a bug that creates one USDC unit out of nothing
            self.ledger.kernel_balances()[self.escrow_holder + 1, 0] += 1

    monkeypatch.setattr(MarginModel, "phase_agents", leaky)
    result = CliRunner().invoke(
        cli, ["run", "default", *SHORT, "--check-invariants", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "invariant violated: invariant violated after step 4" in result.output
    assert "conservation violated for USDC: holders sum to" in result.output
    clean = CliRunner().invoke(cli, ["run", "default", *SHORT, "--out", str(tmp_path)])
    assert clean.exit_code == 0  # without the flag the run is not checked


def test_python_dash_m_entry_point_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "marginsim", "run", "nope"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_unhealthy_initial_account_exits_2_naming_it(tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "lending_cascade",
            *SHORT,
            "--out",
            str(tmp_path),
            "--set",
            "accounts.aave-0.debt.USDC=700000.0",
        ],
    )
    assert result.exit_code == 2
    assert "accounts[0]:" in result.output and "health factor" in result.output
    assert "Traceback" not in result.output


def test_validate_builds_the_run_and_reports_an_unhealthy_account():
    result = CliRunner().invoke(
        cli, ["validate", "lending_cascade", "--set", "accounts.aave-0.debt.USDC=700000.0"]
    )
    assert result.exit_code == 2 and "accounts[0]:" in result.output


def test_replay_of_a_missing_or_short_file_exits_2(tmp_path):
    prices = tmp_path / "prices.csv"
    prices.write_text("price\n2000\n2001\n2002\n")
    base = [
        "run",
        "default",
        "--no-progress",
        "--out",
        str(tmp_path),
        "--set",
        'exogenous.model="replay"',
    ]
    missing = CliRunner().invoke(cli, [*base, "--set", f'exogenous.file="{tmp_path}/nope.csv"'])
    assert missing.exit_code == 2 and "exogenous:" in missing.output
    short = CliRunner().invoke(cli, [*base, "--steps", "10", "--set", f'exogenous.file="{prices}"'])
    assert short.exit_code == 2 and "exogenous:" in short.output
    ok = CliRunner().invoke(cli, [*base, "--steps", "2", "--set", f'exogenous.file="{prices}"'])
    assert ok.exit_code == 0, ok.output


def test_study_list_and_unknown_study(tmp_path):
    from click.testing import CliRunner

    from marginsim.__main__ import cli

    listed = CliRunner().invoke(cli, ["study", "--list"])
    assert listed.exit_code == 0
    # One line per study: its name, padded to the longest name, then its description.
    rows = {line.split()[0]: line for line in listed.output.splitlines()}
    assert list(rows) == [
        "amplification",
        "contagion-window",
        "depeg-contagion",
        "liquidation-designs",
    ]
    assert rows["amplification"].split(None, 1)[1].startswith("How much")
    assert rows["liquidation-designs"].split(None, 1)[1].startswith("Which liquidation policy")
    unknown = CliRunner().invoke(cli, ["study", "nope", "--out", str(tmp_path)])
    assert unknown.exit_code == 2
    assert "unknown study 'nope'; built-in studies: amplification" in unknown.output
