"""DuckDB views over results folders, on a tiny hand-written results store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from marginsim.__main__ import cli
from marginsim.experiments.query import (
    FolderKind,
    QueryError,
    format_result,
    open_results,
    run_query,
    scan_results,
)


def _run(folder: Path, metrics: dict, events: dict[str, dict], summary: dict) -> Path:
    (folder / "events").mkdir(parents=True)
    pd.DataFrame(metrics).to_parquet(folder / "metrics.parquet", index=False)
    for name, table in events.items():
        pd.DataFrame(table).to_parquet(folder / "events" / f"{name}.parquet", index=False)
    (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return folder


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """results/exp/ with two runs: a (3 steps, liquidations) and b (2 steps, extra column)."""
    exp = tmp_path / "results" / "exp"
    _run(
        exp / "a-seed1-aaaa",
        {"step": [0, 1, 2], "mid_price": [100.0, 99.0, 97.0]},
        {
            "trades": {"step": [0, 2], "qty": [1.5, 2.0]},
            "liquidations": {"step": [2], "protocol": ["aave"], "debt_repaid": [5_000_000]},
        },
        {"scenario": "a", "seed": 1, "final_mid": 97.0, "liquidations": 1},
    )
    _run(
        exp / "b-seed2-bbbb",
        {"step": [0, 1], "mid_price": [200.0, 202.0], "leverage": [2.0, 2.5]},
        {"trades": {"step": [1], "qty": [0.25]}},
        {"scenario": "b", "seed": 2, "final_mid": None, "liquidations": 0},
    )
    # An unfinished run of the store: never part of any view.
    _run(exp / ".tmp-c-seed3-cccc-1234", {"step": [0], "mid_price": [1.0]}, {}, {})
    return exp


def test_a_run_folder_has_views_without_run_id(store):
    run = store / "a-seed1-aaaa"
    con = open_results(run)
    views = {row[0] for row in con.execute("show tables").fetchall()}
    assert views == {"metrics", "summary", "runs", "trades", "liquidations"}
    assert con.execute("select * from metrics order by step").fetchall() == [
        (0, 100.0),
        (1, 99.0),
        (2, 97.0),
    ]
    # 1.5 + 2.0 = 3.5 traded
    assert con.execute("select sum(qty) from trades").fetchone() == (3.5,)
    assert con.execute("select * from summary").fetchall() == [("a", 1, 97.0, 1)]
    assert scan_results(run).kind is FolderKind.RUN


def test_an_experiment_folder_unions_runs_with_a_run_id(store):
    con = open_results(store)
    rows = con.execute(
        "select run_id, count(*), sum(mid_price), count(leverage) from metrics "
        "group by run_id order by run_id"
    ).fetchall()
    # a: 100 + 99 + 97 = 296, no leverage column (NULL); b: 200 + 202 = 402, two leverages
    assert rows == [("a-seed1-aaaa", 3, 296.0, 0), ("b-seed2-bbbb", 2, 402.0, 2)]
    assert con.execute("select run_id, step, qty from trades order by run_id, step").fetchall() == [
        ("a-seed1-aaaa", 0, 1.5),
        ("a-seed1-aaaa", 2, 2.0),
        ("b-seed2-bbbb", 1, 0.25),
    ]
    # Only run a has a liquidations table.
    assert con.execute("select run_id, debt_repaid from liquidations").fetchall() == [
        ("a-seed1-aaaa", 5_000_000)
    ]
    summary = con.execute(
        "select run_id, scenario, final_mid, final_mid is null from summary order by run_id"
    ).fetchall()
    assert summary == [("a-seed1-aaaa", "a", 97.0, False), ("b-seed2-bbbb", "b", None, True)]
    assert [r[0] for r in con.execute("select run_id from runs order by 1").fetchall()] == [
        "a-seed1-aaaa",
        "b-seed2-bbbb",
    ]


def test_the_results_root_finds_runs_at_any_depth(store):
    frame = run_query(
        store.parent, "select run_id, max(step) as last from metrics group by 1 order by 1"
    )
    assert frame.to_dict("list") == {"run_id": ["a-seed1-aaaa", "b-seed2-bbbb"], "last": [2, 1]}


def test_a_sweep_folder_reads_its_summary_parquet(tmp_path, store):
    sweep = tmp_path / "sweep-x"
    (sweep / "runs").mkdir(parents=True)
    (sweep / "sweep.toml").write_text('name = "x"\n', encoding="utf-8")
    for name in ("a-seed1-aaaa", "b-seed2-bbbb"):
        (store / name).rename(sweep / "runs" / name)
    pd.DataFrame(
        {
            "point": [0, 1, 1],
            "replicate": [0, 0, 1],
            "status": ["ok", "ok", "failed"],
            "run_dir": ["runs/a-seed1-aaaa", "runs/b-seed2-bbbb", None],
            "protocols.aave.reserves.WETH.ltv": [0.7, 0.8, 0.8],
        }
    ).to_parquet(sweep / "summary.parquet", index=False)
    con = open_results(sweep)
    rows = con.execute(
        'select run_id, point, status, "protocols.aave.reserves.WETH.ltv" from summary '
        "order by point, replicate"
    ).fetchall()
    assert rows == [
        ("a-seed1-aaaa", 0, "ok", 0.7),
        ("b-seed2-bbbb", 1, "ok", 0.8),
        (None, 1, "failed", 0.8),
    ]
    # Join the sweep's parameters to each run's metrics through run_id: 296 / 3 and 402 / 2.
    joined = con.execute(
        'select s."protocols.aave.reserves.WETH.ltv", avg(m.mid_price) from metrics m '
        "join summary s using (run_id) group by 1 order by 1"
    ).fetchall()
    assert joined == [(0.7, pytest.approx(296.0 / 3)), (0.8, 201.0)]
    assert scan_results(sweep).kind is FolderKind.SWEEP


def test_missing_folder_no_runs_and_bad_sql_are_query_errors(tmp_path, store):
    with pytest.raises(QueryError, match="does not exist"):
        open_results(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QueryError, match="no run found"):
        open_results(tmp_path / "empty")
    with pytest.raises(QueryError, match="nosuchtable"):
        run_query(store, "select * from nosuchtable")
    with pytest.raises(QueryError, match="syntax error"):
        run_query(store, "selec 1")


def test_format_result_table_csv_and_json():
    frame = pd.DataFrame({"name": ["a", "bb"], "x": [1.5, math.nan], "n": [1, 20]})
    # Text left-aligned, numbers right-aligned, two spaces between columns.
    assert format_result(frame, "table") == (
        "name     x   n\na      1.5   1\nbb    NULL  20\n(2 rows)\n"
    )
    assert format_result(frame, "csv") == "name,x,n\na,1.5,1\nbb,,20\n"
    assert json.loads(format_result(frame, "json")) == [
        {"name": "a", "x": 1.5, "n": 1},
        {"name": "bb", "x": None, "n": 20},
    ]
    assert format_result(frame.iloc[:0], "table") == "name  x  n\n(0 rows)\n"
    assert (
        format_result(pd.DataFrame({"v": [1 / 3]}), "table")
        == "           v\n0.3333333333\n(1 row)\n"
    )
    with pytest.raises(ValueError, match="got 'xml'"):
        format_result(frame, "xml")


def test_cli_query_prints_and_exits_2_on_bad_input(tmp_path, store):
    sql = "select run_id, count(*) as n from trades group by 1 order by 1"
    ok = CliRunner().invoke(cli, ["query", str(store), sql, "--format", "csv"])
    assert ok.exit_code == 0, ok.output
    assert ok.output == "run_id,n\na-seed1-aaaa,2\nb-seed2-bbbb,1\n"
    table = CliRunner().invoke(cli, ["query", str(store), sql])
    assert table.output.splitlines() == [
        "run_id        n",
        "a-seed1-aaaa  2",
        "b-seed2-bbbb  1",
        "(2 rows)",
    ]
    bad_sql = CliRunner().invoke(cli, ["query", str(store), "select * from nosuchtable"])
    assert bad_sql.exit_code == 2
    assert "error: Catalog Error" in bad_sql.output and "nosuchtable" in bad_sql.output
    missing = CliRunner().invoke(cli, ["query", str(tmp_path / "nope"), "select 1"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
