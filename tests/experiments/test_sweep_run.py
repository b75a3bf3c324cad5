"""Running sweeps: identical tables on every executor, failures recorded, resume after a kill."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from marginsim.experiments.executors import LocalExecutor, RemoteError, WorkerDiedError
from marginsim.experiments.sweep import SUMMARY_COLUMNS, load_summary, run_sweep

REPO = Path(__file__).resolve().parents[2]

SMALL = """
name = "small"
base = "default"
replicates = 2
master_seed = 3
[overrides]
"run.steps" = 20
[design]
kind = "grid"
[[parameters]]
path = "exogenous.volatility"
values = [0.4, 1.6]
[[parameters]]
path = "run.max_liquidation_rounds"
values = [1, 4]
"""


def _spec_file(tmp_path: Path, text: str = SMALL) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_local_executor_runs_calls_in_fresh_processes_and_survives_a_dead_worker():
    executor = LocalExecutor(workers=2)
    try:
        pids = [executor.submit(os.getpid) for _ in range(3)]
        dead = executor.submit(os._exit, 3)  # the worker dies without answering
        raising = executor.submit(int, "x")
        ok = executor.submit(pow, 2, 10)
        assert len({f.result(timeout=60) for f in pids}) == 3  # one process per call
        assert os.getpid() not in {f.result() for f in pids}
        with pytest.raises(WorkerDiedError, match="exit code 3"):
            dead.result(timeout=60)
        with pytest.raises(RemoteError, match="invalid literal") as info:
            raising.result(timeout=60)
        assert "Traceback" in info.value.remote_traceback
        assert ok.result(timeout=60) == 1024
    finally:
        executor.shutdown()


def test_same_table_with_one_worker_two_workers_and_dask(tmp_path):
    spec = _spec_file(tmp_path)
    one = run_sweep(spec, tmp_path / "w1", workers=1, progress=False)
    two = run_sweep(spec, tmp_path / "w2", workers=2, progress=False)
    pytest.importorskip("distributed")
    dask = run_sweep(spec, tmp_path / "dask", scheduler="local", workers=2, progress=False)
    assert (one.computed, one.skipped, one.failed) == (8, 0, 0)
    table = one.summary
    assert list(table.columns[: len(SUMMARY_COLUMNS)]) == list(SUMMARY_COLUMNS)
    assert list(table[["point", "replicate"]].itertuples(index=False, name=None)) == [
        (p, r) for p in range(4) for r in range(2)
    ]
    assert (table["status"] == "ok").all()
    pd.testing.assert_frame_equal(table, two.summary)
    pd.testing.assert_frame_equal(table, dask.summary)
    pd.testing.assert_frame_equal(table, load_summary(tmp_path / "dask" / "small"))
    # Replicates of a point differ (own seeds), and the table is queryable with DuckDB.
    path = tmp_path / "w1" / "small" / "summary.parquet"
    rows = duckdb.sql(
        f"select point, count(*) n, count(distinct final_index) k from '{path}' group by point "
        "order by point"
    ).fetchall()
    assert rows == [(0, 2, 2), (1, 2, 2), (2, 2, 2), (3, 2, 2)]
    run_dir = tmp_path / "w1" / "small" / table["run_dir"][0]
    assert (run_dir / "metrics.parquet").exists()
    assert (
        json.loads((run_dir / "summary.json").read_text())["final_index"] == table["final_index"][0]
    )
    again = run_sweep(spec, tmp_path / "w1", workers=2, progress=False)
    assert (again.computed, again.skipped) == (0, 8)
    pd.testing.assert_frame_equal(table, again.summary)


def test_a_failing_design_point_is_recorded_and_the_others_complete(tmp_path):
    prices = tmp_path / "prices.csv"
    prices.write_text("price\n" + "\n".join(str(2000 + k) for k in range(40)) + "\n")
    spec = _spec_file(
        tmp_path,
        f"""
name = "failing"
base = "default"
replicates = 2
[overrides]
"run.steps" = 10
"exogenous.model" = "replay"
"exogenous.file" = "{prices}"
[design]
kind = "zip"
[[parameters]]
path = "exogenous.column"
values = ["price", "no_such_column", "price"]
""",
    )
    outcome = run_sweep(spec, tmp_path / "out", workers=2, progress=False)
    table = outcome.summary
    assert outcome.failed == 2
    assert list(table["status"]) == ["ok", "ok", "failed", "failed", "ok", "ok"]
    failed = table[table["status"] == "failed"]
    assert failed["error"].str.contains("no_such_column").all()
    assert failed["run_dir"].isna().all() and failed["final_index"].isna().all()
    record = json.loads(
        (tmp_path / "out" / "failing" / "failures" / f"{failed['run_id'].iloc[0]}.json").read_text()
    )
    assert record["parameters"] == {"exogenous.column": "no_such_column"}
    assert record["point"] == 1 and record["replicate"] == 0
    assert "Traceback (most recent call last)" in record["traceback"]
    assert "no_such_column" in record["traceback"]
    # Completed runs are stored; a rerun retries only the failed ones.
    again = run_sweep(spec, tmp_path / "out", workers=2, progress=False)
    assert (again.computed, again.skipped, again.failed) == (2, 4, 2)
    # The command exits 1 when runs failed, after writing the summary and the report.
    from click.testing import CliRunner

    from marginsim.__main__ import cli

    result = CliRunner().invoke(cli, ["sweep", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "2 computed, 4 already stored, 2 failed" in result.output
    assert "2 run(s) failed" in result.output
    assert (tmp_path / "out" / "failing" / "report" / "report.html").exists()


def _sweep_cmd(spec: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "marginsim",
        "sweep",
        str(spec),
        "--workers",
        "2",
        "--out",
        str(out),
        "--no-progress",
        "--no-report",
    ]


def _stored(folder: Path) -> dict[str, float]:
    runs = folder / "runs"
    if not runs.exists():
        return {}
    return {
        p.name: p.stat().st_mtime_ns
        for p in runs.iterdir()
        if not p.name.startswith(".") and (p / "summary.json").exists()
    }


def _interrupt(spec: Path, out: Path, env: dict, sig: int, expect_code: int) -> dict[str, float]:
    before = len(_stored(out / "small"))
    proc = subprocess.Popen(
        _sweep_cmd(spec, out),
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while len(_stored(out / "small")) < before + 2 and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == expect_code, err
    if sig == signal.SIGINT:
        assert "run the same command again" in err
        try:  # leave nothing of the group behind for the next attempt
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    stored = _stored(out / "small")
    assert before + 2 <= len(stored) < 12, "the sweep must be interrupted part-way"
    return stored


def test_killed_driver_loses_no_run_and_the_rerun_computes_only_the_missing(tmp_path):
    text = SMALL.replace("replicates = 2", "replicates = 3").replace(
        '"run.steps" = 20', '"run.steps" = 40'
    )
    spec = _spec_file(tmp_path, text)  # 12 runs
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "out"
    # Ctrl-C first: SIGINT to the foreground process group, as a terminal sends it.
    stored_int = _interrupt(spec, out, env, signal.SIGINT, expect_code=130)
    # Then kill -9 of the driver, its fork server and its workers.
    stored = _interrupt(spec, out, env, signal.SIGKILL, expect_code=-signal.SIGKILL)
    assert set(stored_int) <= set(stored)
    assert {k: stored[k] for k in stored_int} == stored_int
    rerun = subprocess.run(
        _sweep_cmd(spec, out), env=env, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"{12 - len(stored)} computed, {len(stored)} already stored, 0 failed" in rerun.stdout
    after = _stored(out / "small")
    assert len(after) == 12
    assert {k: after[k] for k in stored} == stored  # finished runs were not recomputed
    assert not list((out / "small" / "runs").glob(".tmp-*"))
    whole = run_sweep(spec, tmp_path / "whole", workers=2, progress=False)
    pd.testing.assert_frame_equal(load_summary(out / "small"), whole.summary)


def test_execute_run_in_process_releases_its_model_and_collects_warnings(tmp_path):
    from mesa import Agent

    from marginsim.experiments.sweep import RunTask, execute_run, load_sweep, plan_sweep
    from marginsim.model import MarginModel

    spec = load_sweep(
        {
            "name": "inproc",
            "base": "default",
            "keep_runs": "summary",
            "overrides": {"run.steps": 5},
            "parameters": [{"path": "exogenous.volatility", "values": [0.5]}],
        }
    )
    plan = plan_sweep(spec)[0]
    outcome = execute_run(RunTask(plan.scenario, str(tmp_path), "summary"))
    assert outcome["status"] == "ok"
    # A long-lived worker (Dask) must not keep the finished model in Mesa's registry.
    assert not [m for m in Agent._ids if isinstance(m, MarginModel) and m.scenario is plan.scenario]
    # The default scenario's shock at step 720 cannot fire in 5 steps: said once, collected.
    assert any("will not fire" in w for w in outcome["warnings"])
    # keep_runs = "summary": only the small files are kept.
    folder = tmp_path / "runs" / plan.run_id
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json",
        "scenario.toml",
        "summary.json",
    ]


class _KillOneRun(LocalExecutor):
    """A local executor whose worker for one chosen run dies (os._exit) instead of running."""

    def __init__(self, victim_run_id: str) -> None:
        super().__init__(workers=2)
        self.victim = victim_run_id

    def submit(self, fn, /, *args, **kwargs):
        if args and getattr(args[0], "scenario", None) is not None:
            from marginsim.experiments.store import run_id

            if run_id(args[0].scenario) == self.victim:
                return super().submit(os._exit, 9)
        return super().submit(fn, *args, **kwargs)


def test_a_killed_worker_fails_only_its_run(tmp_path):
    from marginsim.experiments.sweep import load_sweep, plan_sweep

    spec = load_sweep(_spec_file(tmp_path))
    victim = plan_sweep(spec)[3].run_id  # point 1, replicate 1
    executor = _KillOneRun(victim)
    try:
        outcome = run_sweep(spec, tmp_path / "out", executor=executor, progress=False)
    finally:
        executor.shutdown()
    table = outcome.summary
    assert list(table["status"]) == ["ok"] * 3 + ["failed"] + ["ok"] * 4
    assert re.fullmatch(
        r"WorkerDiedError: worker process \d+ ended with exit code 9", table["error"][3]
    )
    record = json.loads((tmp_path / "out" / "small" / "failures" / f"{victim}.json").read_text())
    assert record["parameters"] == {"exogenous.volatility": 0.4, "run.max_liquidation_rounds": 4}
    # Running again (normal executor) computes that one run and clears its failure record.
    again = run_sweep(spec, tmp_path / "out", workers=2, progress=False)
    assert (again.computed, again.skipped, again.failed) == (1, 7, 0)
    assert not (tmp_path / "out" / "small" / "failures" / f"{victim}.json").exists()
