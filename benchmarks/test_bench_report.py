"""Report build time of full-length built-in runs, and a DuckDB query over their store.

Each scenario is run once at its full length and stored (setup, not timed); then
``build_report`` (every figure drawn from the stored files, PNG-encoded and embedded) and
a query over the stored run are timed. ``extra_info`` records the run's own wall time, so
the report's cost can be read as a share of the run's.
"""

import functools

import pytest

from marginsim.experiments.query import run_query
from marginsim.experiments.report import build_report
from marginsim.experiments.runner import run
from marginsim.experiments.scenarios import load_scenario
from marginsim.experiments.store import write_run


@functools.cache
def _stored(name: str, root: str) -> tuple[str, float]:
    result = run(load_scenario(name))
    return str(write_run(result, root)), result.wall_seconds


@pytest.mark.parametrize("name", ["default", "lending_cascade", "perp_crash", "liquidation_hunt"])
def test_bench_report(benchmark, tmp_path_factory, name):
    folder, run_seconds = _stored(name, str(tmp_path_factory.getbasetemp() / "bench-report"))
    path = benchmark.pedantic(build_report, args=(folder,), rounds=3, iterations=1)
    benchmark.extra_info["run_seconds"] = round(run_seconds, 3)
    benchmark.extra_info["report_kb"] = round(path.stat().st_size / 1024, 1)
    assert path.name == "report.html"


def test_bench_query_trades_by_step(benchmark, tmp_path_factory):
    folder, _ = _stored("default", str(tmp_path_factory.getbasetemp() / "bench-report"))
    sql = "select step, count(*) as n, sum(qty) as qty from trades group by step order by step"
    frame = benchmark.pedantic(run_query, args=(folder, sql), rounds=5, iterations=1)
    benchmark.extra_info["rows"] = len(frame)
    assert frame["n"].sum() > 0
