"""The HTML report: every figure embedded and every table present, for synthetic runs and
for a short run of each built-in scenario; the CLI's report command and run's --no-report."""

from __future__ import annotations

import base64
import json
import sys
import types
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from marginsim.__main__ import cli
from marginsim.experiments.plots import FIGURES
from marginsim.experiments.report import (
    TABLES,
    ReportError,
    ReportUnavailable,
    build_report,
)
from marginsim.experiments.runner import run
from marginsim.experiments.scenarios import builtin_scenarios, load_scenario
from marginsim.experiments.store import write_run

PNG = b"\x89PNG\r\n\x1a\n"


class _Report(HTMLParser):
    """Collects images, skip notes, tables (as rows of cell texts) and the scenario block."""

    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, dict[str, str]] = {}
        self.skipped: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.pre: dict[str, str] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._skip: str | None = None
        self._pre: str | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images[a["id"]] = a
        elif tag == "table":
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "p" and a.get("class") == "skipped":
            self._skip = a["id"]
            self.skipped[self._skip] = ""
        elif tag == "pre":
            self._pre = a["id"]
            self.pre[self._pre] = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "p":
            self._skip = None
        elif tag == "pre":
            self._pre = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._skip is not None:
            self.skipped[self._skip] += data
        if self._pre is not None:
            self.pre[self._pre] += data


def parse(path: Path) -> _Report:
    parser = _Report()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def embedded_png(report: _Report, fig_id: str) -> bytes:
    img = report.images[f"img-{fig_id}"]
    assert img["alt"] == fig_id
    prefix = "data:image/png;base64,"
    assert img["src"].startswith(prefix)
    return base64.b64decode(img["src"][len(prefix) :], validate=True)


def check_complete(report: _Report) -> None:
    """Every figure is embedded as a PNG or skipped with a note; every table is present."""
    for spec in FIGURES:
        if f"img-{spec.id}" in report.images:
            assert embedded_png(report, spec.id).startswith(PNG), spec.id
            assert f"skip-{spec.id}" not in report.skipped
        else:
            assert report.skipped[f"skip-{spec.id}"].startswith("Figure skipped: "), spec.id
    for table in TABLES:
        assert f"table-{table}" in report.tables, table


def test_report_of_a_run_with_every_table_embeds_every_figure(synthetic_run):
    path = build_report(synthetic_run)
    assert path == synthetic_run / "report.html"
    report = parse(path)
    check_complete(report)
    assert report.skipped == {}
    assert sorted(report.images) == sorted(f"img-{s.id}" for s in FIGURES)
    # Bad debt by asset in human units: 2.5 + 1.5 = 4 USDC, covered 2.0, uncovered 0.5 + 1.5.
    assert report.tables["table-bad_debt"] == [
        ["protocol", "asset", "events", "amount", "covered", "uncovered"],
        ["aave", "USDC", "2", "4", "2", "2"],
    ]
    # Liquidation rows by step: 60 x5, 61 x3, 62, 70 x2, 90; the first 8 are aave's
    # (steps 60-61, accounts 0..7 mod 7: 7 distinct), the last 4 perpx's (steps 62-90,
    # accounts 1..4); bonus 50 each.
    assert report.tables["table-liquidations"][1:] == [
        ["aave", "8", "7", "60", "61", "400"],
        ["perpx", "4", "4", "62", "90", "200"],
    ]
    # Headline metrics: first, min, max, last; the synthetic leverage runs 2 -> 3 linearly and
    # margin debt is 1e6 + 5e5 + 0 at the start and 2e6 + 5e5 + 3e6 at the end.
    metrics = {row[0]: row[1:] for row in report.tables["table-metrics"][1:]}
    assert metrics["leverage"] == ["2", "2", "3", "3"]
    assert metrics["margin_debt"] == ["1,500,000", "1,500,000", "5,500,000", "5,500,000"]
    assert "aave_debt_value" not in metrics  # the margin_debt metric replaces the fallback
    # Largest cascades first.
    assert [row[4] for row in report.tables["table-cascades"][1:]] == ["9", "2", "1"]
    assert report.tables["table-network"][1][:4] == ["aave", "lending", "4", "True"]
    files = {row[0]: row for row in report.tables["table-files"][1:]}
    assert files["events/cascades.parquet"][2] == "3"  # rows
    assert files["metrics.parquet"][2] == "120"
    summary = dict(row for row in report.tables["table-summary"][1:])
    assert summary["liquidations"] == "12" and summary["final_mid"] == "–"
    assert 'name = "synthetic"' in report.pre["scenario-toml"]
    # A pure function of the stored files: rebuilt, byte for byte the same.
    first = path.read_bytes()
    assert build_report(synthetic_run).read_bytes() == first


def test_report_of_a_run_without_the_newer_tables_notes_what_is_missing(legacy_run):
    report = parse(build_report(legacy_run))
    check_complete(report)
    assert report.skipped == {
        "skip-liquidation_heatmap": "Figure skipped: the run has no liquidation_map table",
        "skip-network": "Figure skipped: the run has no network_nodes / network_edges tables",
    }
    assert report.tables["table-cascades"][1] == [
        "the run has no cascades table (recorded by newer marginsim versions)"
    ]
    # Without the margin_debt metric, each protocol's debt column: aave 1e6 -> 2e6 linearly.
    metrics = {row[0]: row[1:] for row in report.tables["table-metrics"][1:]}
    assert metrics["aave_debt_value"] == ["1,000,000", "1,000,000", "2,000,000", "2,000,000"]
    assert metrics["maker_debt"] == ["500,000.00"] * 4
    assert "margin_debt" not in metrics


def _stored_debt_on_map(folder: Path) -> bool:
    path = folder / "events" / "liquidation_map.parquet"
    if not path.exists():
        return False
    table = pd.read_parquet(path)
    return bool(((table["long_debt"] + table["short_debt"]) > 0).any())


# Short runs keep the whole set fast; 40 steps give 39 returns, enough for every figure
# that the scenario's recorded data supports.
@pytest.mark.parametrize("name", sorted(builtin_scenarios()))
def test_report_of_each_builtin_scenario(tmp_path, name):
    scenario = load_scenario(name).with_overrides({"run.steps": 40})
    folder = write_run(run(scenario), tmp_path)
    report = parse(build_report(folder))
    check_complete(report)
    # What every run records is always drawn. The others exactly when the stored files hold
    # their data: margin debt when there is a protocol (or the margin_debt metric), funding
    # and open interest with a perp venue, cascade sizes after a liquidation, the heatmap
    # when a liquidation map with some debt is stored, the network with its tables.
    for fig_id in ("price", "depth", "returns"):
        assert f"img-{fig_id}" in report.images, fig_id
    metrics = pd.read_parquet(folder / "metrics.parquet")
    kinds = {p.kind for p in scenario.protocols.values()}
    expected = {
        "margin_debt": bool(kinds) or "margin_debt" in metrics.columns,
        "funding_open_interest": "perp" in kinds,
        "cascade_sizes": json.loads((folder / "summary.json").read_text())["liquidations"] > 0,
        "liquidation_heatmap": _stored_debt_on_map(folder),
        "network": (folder / "events" / "network_nodes.parquet").exists()
        and len(pd.read_parquet(folder / "events" / "network_nodes.parquet")) > 0,
    }
    for fig_id, drawn in expected.items():
        assert (f"img-{fig_id}" in report.images) == drawn, fig_id
    assert f'name = "{name}"' in report.pre["scenario-toml"]


def test_sweep_folders_are_delegated_to_sweep_report(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.toml").write_text('name = "s"\n', encoding="utf-8")
    fake = types.ModuleType("marginsim.experiments.sweep_report")
    fake.build_sweep_report = lambda folder: Path(folder) / "sweep.html"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "marginsim.experiments.sweep_report", fake)
    assert build_report(sweep) == sweep / "sweep.html"
    # Without the module: a clear error, and exit 1 from the CLI (not bad input).
    monkeypatch.setitem(sys.modules, "marginsim.experiments.sweep_report", None)
    with pytest.raises(ReportUnavailable, match="sweep_report is missing"):
        build_report(sweep)
    result = CliRunner().invoke(cli, ["report", str(sweep)])
    assert result.exit_code == 1 and "sweep reports are not available" in result.output


def test_report_of_a_missing_or_unknown_folder_is_bad_input(tmp_path, synthetic_run):
    with pytest.raises(ReportError, match="does not exist"):
        build_report(tmp_path / "nope")
    # The experiment folder holding the run: not reportable, with a hint to the run.
    with pytest.raises(ReportError, match="holds 1 run folder"):
        build_report(synthetic_run.parent)
    missing = CliRunner().invoke(cli, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    ok = CliRunner().invoke(cli, ["report", str(synthetic_run)])
    assert ok.exit_code == 0
    assert ok.output.startswith(f"report: {synthetic_run / 'report.html'} (")


def test_cli_run_builds_the_report_unless_told_not_to(tmp_path):
    args = ["run", "lending_cascade", "--steps", "15", "--no-progress", "--out", str(tmp_path)]
    built = CliRunner().invoke(cli, args)
    assert built.exit_code == 0, built.output
    lines = built.output.strip().splitlines()
    folder = Path(lines[-1].removeprefix("results: "))
    assert lines[-2].startswith(f"report: {folder / 'report.html'} (")
    check_complete(parse(folder / "report.html"))
    skipped = CliRunner().invoke(cli, [*args, "--no-report", "--seed", "3"])
    folder = Path(skipped.output.strip().splitlines()[-1].removeprefix("results: "))
    assert "report:" not in skipped.output and not (folder / "report.html").exists()
