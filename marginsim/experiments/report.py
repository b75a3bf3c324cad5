"""The HTML report of a stored run (or, delegated, of a sweep): ``build_report(folder)``.

A run's report is one self-contained file, ``report.html`` in the run folder: every figure
of :data:`marginsim.experiments.plots.FIGURES` embedded as a base64 PNG (or a note saying why
the run has none), the summary, headline metrics, liquidations and bad debt by protocol,
the largest cascades, the protocol network's nodes, the manifest, every output file with its
row count, and the scenario TOML. It reads the stored files only, so it can be rebuilt at
any time with ``marginsim report RESULTS_DIR``, and the same stored files give the same
report, byte for byte (no build time is written; networkx layouts are seeded).

Stable HTML ids, for readers and tests: ``fig-<id>`` (a ``<figure>`` holding
``<img id="img-<id>" alt="<id>" src="data:image/png;base64,...">``), ``skip-<id>`` (the note
of a skipped figure), ``table-<name>`` for the tables (:data:`TABLES`), ``scenario-toml``.
"""

from __future__ import annotations

import base64
import html
import importlib
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from marginsim.experiments.plots import StoredRun, draw_figures

__all__ = ["TABLES", "ReportError", "ReportUnavailable", "build_report", "build_run_report"]

TABLES: tuple[str, ...] = (
    "summary",
    "metrics",
    "liquidations",
    "bad_debt",
    "cascades",
    "network",
    "files",
    "manifest",
)
"""Ids (``table-<name>``) of the tables a run report always holds, in order."""

_SCHEMA_DOC = "docs/outputs.md"


class ReportError(Exception):
    """The folder is not something a report can be built for (the message says why)."""


class ReportUnavailable(RuntimeError):
    """The report needs a part of marginsim that is not installed (sweep reports)."""


def build_report(folder: str | Path) -> Path:
    """Build the HTML report of a run folder or of a sweep folder.

    A sweep folder (holding ``sweep.toml``) is handed to
    ``marginsim.experiments.sweep_report.build_sweep_report``.

    Args:
        folder: A run folder (holding ``metrics.parquet``) or a sweep folder.

    Returns:
        The path of the written report.

    Raises:
        ReportError: If the folder does not exist or is neither a run nor a sweep folder.
        ReportUnavailable: If it is a sweep folder but sweep reports are not available.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ReportError(f"results folder {str(root)!r} does not exist or is not a folder")
    if (root / "sweep.toml").is_file():
        try:
            module = importlib.import_module("marginsim.experiments.sweep_report")
        except ModuleNotFoundError as exc:
            if exc.name not in ("marginsim.experiments.sweep_report",):
                raise
            raise ReportUnavailable(
                f"{root} is a sweep folder, but sweep reports are not available in this "
                "installation (marginsim.experiments.sweep_report is missing)"
            ) from exc
        return Path(module.build_sweep_report(root))
    if (root / "metrics.parquet").is_file():
        return build_run_report(root)
    runs = sorted(p.parent.name for p in root.glob("*/metrics.parquet"))
    hint = (
        f"; it holds {len(runs)} run folder(s), e.g. {root / runs[0]}: report one of them"
        if runs
        else ""
    )
    raise ReportError(
        f"{str(root)!r} is neither a run folder (with metrics.parquet) nor a sweep folder "
        f"(with sweep.toml){hint}"
    )


# -- HTML helpers --------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        # Money-sized numbers with thousands separators, small ones with 6 significant digits.
        if math.isinf(value) or (value != 0 and (abs(value) >= 1e15 or abs(value) < 1e-3)):
            return f"{value:.4g}"
        if abs(value) >= 1e6:
            return f"{value:,.0f}"
        return f"{value:,.2f}" if abs(value) >= 1000 else f"{value:.6g}"
    if hasattr(value, "item"):
        return _fmt(value.item())
    return _esc(value)


def _table(table_id: str, header: Sequence[str], rows: Iterable[Sequence[Any]], empty: str) -> str:
    rows = list(rows)
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    if not rows:
        body = f'<tr><td colspan="{len(header)}" class="empty">{_esc(empty)}</td></tr>'
    else:
        body = "".join(
            "<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows
        )
    return (
        f'<table id="table-{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def _decimals(run: StoredRun) -> dict[str, int]:
    return {str(a.get("symbol")): int(a.get("decimals", 0)) for a in run.scenario.get("assets", [])}


# -- the sections --------------------------------------------------------------------------


def _summary_rows(run: StoredRun) -> list[tuple[str, Any]]:
    return list(run.summary.items())


def _liquidation_rows(run: StoredRun) -> list[tuple[Any, ...]]:
    table = run.table("liquidations")
    if table is None or table.empty:
        return []
    rows = []
    for protocol, group in table.groupby("protocol", sort=True):
        rows.append(
            (
                protocol,
                len(group),
                group["account"].nunique() if "account" in group else math.nan,
                int(group["step"].min()),
                int(group["step"].max()),
                float(group["bonus_value"].sum()) if "bonus_value" in group else math.nan,
            )
        )
    return rows


def _bad_debt_rows(run: StoredRun) -> list[tuple[Any, ...]]:
    table = run.table("bad_debt")
    if table is None or table.empty:
        return []
    decimals = _decimals(run)
    rows = []
    for (protocol, asset), group in table.groupby(["protocol", "asset"], sort=True):
        scale = 10.0 ** decimals.get(str(asset), 0)
        rows.append(
            (
                protocol,
                asset,
                len(group),
                float(group["amount"].sum()) / scale,
                float(group["covered"].sum()) / scale if "covered" in group else math.nan,
                float(group["uncovered"].sum()) / scale if "uncovered" in group else math.nan,
            )
        )
    return rows


_CASCADE_COLUMNS = (
    "episode",
    "start_step",
    "end_step",
    "length_steps",
    "liquidations",
    "liquidated_debt_value",
    "price_impact",
)


def _cascade_section(run: StoredRun) -> str:
    table = run.table("cascades")
    if table is None:
        return _table(
            "cascades",
            ["note"],
            [],
            "the run has no cascades table (recorded by newer marginsim versions)",
        )
    columns = [c for c in _CASCADE_COLUMNS if c in table.columns]
    top = table
    if "liquidations" in table.columns:
        keys = ["liquidations"] + (["episode"] if "episode" in table.columns else [])
        top = table.sort_values(keys, ascending=[False] + [True] * (len(keys) - 1), kind="stable")
    top = top.head(10)
    return _table(
        "cascades",
        columns,
        top[columns].itertuples(index=False, name=None),
        "no cascade episodes (no liquidations)",
    )


def _network_section(run: StoredRun) -> str:
    table = run.table("network_nodes")
    if table is None:
        return _table(
            "network",
            ["note"],
            [],
            "the run has no network_nodes table (recorded by newer marginsim versions)",
        )
    columns = list(table.columns)
    return _table("network", columns, table.itertuples(index=False, name=None), "no nodes")


def _file_rows(run: StoredRun) -> list[tuple[Any, ...]]:
    import pyarrow.parquet as pq

    rows = []
    for path in sorted(run.folder.rglob("*")):
        if not path.is_file() or path.name == "report.html" or "figures" in path.parts[-2:-1]:
            continue
        rel = path.relative_to(run.folder).as_posix()
        n_rows: Any = math.nan
        if path.suffix == ".parquet":
            n_rows = int(pq.ParquetFile(path).metadata.num_rows)
        anchor = "metrics.parquet" if rel == "metrics.parquet" else rel
        rows.append((rel, path.stat().st_size, n_rows, f"{_SCHEMA_DOC} ({anchor})"))
    return rows


_KEY_METRICS = (
    "index_price",
    "mid_price",
    "spread_bps",
    "basis_bps",
    "depth_bid_1pct",
    "depth_ask_1pct",
    "depth_bid_5pct",
    "depth_ask_5pct",
    "margin_debt",
    "leverage",
    "leverage_p99",
    "wamm",
    "distance_to_liquidation_p10",
    "liquidatable_debt_5pct",
    "leverage_to_depth",
    "protocols_defaulted",
    "systemic_loss",
)


def _metric_rows(run: StoredRun) -> list[tuple[Any, ...]]:
    """First, lowest, highest and last value of the headline per-step metrics present.

    Runs without the ``margin_debt`` metric list each protocol's debt column instead
    (``<pool>_debt_value``, ``<cdp>_debt``, ``<venue>_margin_debt``).
    """
    m = run.metrics
    names = [c for c in _KEY_METRICS if c in m.columns]
    if "margin_debt" not in m.columns:
        names += [
            *(f"{p}_debt_value" for p in run.protocols("lending")),
            *(f"{p}_debt" for p in run.protocols("cdp")),
            *(f"{p}_margin_debt" for p in run.protocols("perp")),
        ]
    rows = []
    for name in names:
        if name not in m.columns:
            continue
        values = pd.to_numeric(m[name], errors="coerce").astype(float)
        finite = values[np.isfinite(values)]
        if finite.empty:
            rows.append((name, math.nan, math.nan, math.nan, math.nan))
            continue
        rows.append(
            (
                name,
                float(finite.iloc[0]),
                float(finite.min()),
                float(finite.max()),
                float(finite.iloc[-1]),
            )
        )
    return rows


def _manifest_rows(run: StoredRun) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in run.manifest.items():
        if isinstance(value, dict):
            rows.extend((f"{key}.{k}", v) for k, v in value.items())
        else:
            rows.append((key, value))
    return rows


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
td.empty { color: #777; font-style: italic; text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
p.skipped { color: #8a5a00; background: #fff6e0; padding: 0.4em 0.8em; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""


def build_run_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the self-contained HTML report of one stored run.

    Args:
        folder: The run folder.
        out: The file to write; defaults to ``<folder>/report.html``.

    Returns:
        The path of the written report.

    Raises:
        ReportError: If the folder is not a run folder.
    """
    try:
        run = StoredRun(folder)
    except FileNotFoundError as exc:
        raise ReportError(str(exc)) from exc
    target = Path(out) if out is not None else run.folder / "report.html"
    figures = draw_figures(run)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>marginsim report: {_esc(run.name)} ({_esc(run.folder.name)})</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>marginsim report: {_esc(run.name)}</h1>",
        f"<p>Run <code>{_esc(run.folder.name)}</code>, seed {_esc(run.seed)}, "
        f"{_fmt(len(run.metrics))} steps, recorded {_esc(run.manifest.get('created_utc', '?'))}; "
        f"report built from the stored files in <code>{_esc(run.folder)}</code>.</p>",
    ]
    description = run.scenario.get("description")
    if description:
        parts.append(f'<p class="description">{_esc(description)}</p>')
    parts.append("<h2>Summary</h2>")
    parts.append(_table("summary", ["key", "value"], _summary_rows(run), "no summary.json"))
    parts.append("<h2>Headline metrics</h2>")
    parts.append(
        "<p>First, lowest, highest and last finite value over the run's steps "
        "(<code>metrics.parquet</code>).</p>"
    )
    parts.append(
        _table(
            "metrics",
            ["metric", "first", "min", "max", "last"],
            _metric_rows(run),
            "none of the headline metrics recorded",
        )
    )
    parts.append("<h2>Figures</h2>")
    drawn = [f for f in figures if f.png is not None]
    parts.append(
        f"<p>{len(drawn)} of {len(figures)} figures drawn"
        + ("; the others are skipped below with the reason." if len(drawn) < len(figures) else ".")
        + "</p>"
    )
    for fig in figures:
        spec = fig.spec
        parts.append(f'<h3 id="heading-{spec.id}">{_esc(spec.title)}</h3>')
        if fig.png is None:
            parts.append(
                f'<p class="skipped" id="skip-{spec.id}">Figure skipped: {_esc(fig.note)}</p>'
            )
            continue
        data = base64.b64encode(fig.png).decode("ascii")
        parts.append(
            f'<figure id="fig-{spec.id}"><img id="img-{spec.id}" alt="{spec.id}" '
            f'src="data:image/png;base64,{data}"><figcaption>{_esc(spec.title)} '
            f"(<code>{spec.id}</code>)</figcaption></figure>"
        )
    parts.append("<h2>Liquidations by protocol</h2>")
    parts.append(
        _table(
            "liquidations",
            ["protocol", "liquidations", "accounts", "first step", "last step", "bonus value"],
            _liquidation_rows(run),
            "no liquidations",
        )
    )
    parts.append("<h2>Bad debt by protocol</h2>")
    parts.append(
        _table(
            "bad_debt",
            ["protocol", "asset", "events", "amount", "covered", "uncovered"],
            _bad_debt_rows(run),
            "no bad debt",
        )
    )
    parts.append("<h2>Largest cascades</h2>")
    parts.append(_cascade_section(run))
    parts.append("<h2>Protocol network</h2>")
    parts.append(_network_section(run))
    parts.append("<h2>Output files</h2>")
    parts.append(
        f"<p>Every file of the run folder; the schema of each is in <code>{_SCHEMA_DOC}</code> "
        "of the marginsim repository. Query them with <code>marginsim query "
        f'{_esc(run.folder)} "select ..."</code>.</p>'
    )
    parts.append(_table("files", ["file", "bytes", "rows", "schema"], _file_rows(run), "none"))
    parts.append("<h2>Manifest</h2>")
    parts.append(_table("manifest", ["key", "value"], _manifest_rows(run), "no manifest.json"))
    parts.append("<h2>Scenario</h2>")
    parts.append(f'<pre id="scenario-toml">{_esc(run.scenario_text)}</pre>')
    parts.append("</body></html>")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    tmp.replace(target)
    return target
