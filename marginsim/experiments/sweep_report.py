"""A sweep's figures and self-contained HTML report, made from its stored folder only.

:func:`build_sweep_report` reads ``sweep.toml`` and ``summary.parquet`` of a sweep folder and
writes into ``<folder>/report/``:

- ``metric_<metric>.png``: the metric against each varied parameter, one dot per replicate,
  the per-point mean as a line and its 5-95 % replicate range as error bars;
- ``heatmap_<metric>__<p1>__<p2>.png``: the per-point mean over pairs of parameters (range
  designs are binned into quintiles of each parameter);
- ``sensitivity_<metric>.png`` (``sobol`` and ``morris`` designs): index bar charts with
  confidence intervals, and ``sensitivity.csv``;
- ``aggregate.csv`` / ``aggregate.parquet``: :func:`marginsim.experiments.sweep_analysis.aggregate`;
- ``report.html``: all of it, figures embedded as base64, viewable offline.
"""

from __future__ import annotations

import base64
import html
import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd

from marginsim.experiments.sweep import SweepSpec
from marginsim.experiments.sweep_analysis import _spec, aggregate, numeric_metrics, sensitivity

__all__ = ["DEFAULT_METRICS", "build_sweep_report"]

#: Metrics plotted when the spec lists no ``report_metrics`` (those present are used; then
#: any other ``bad_debt*`` / ``liquidat*`` column).
DEFAULT_METRICS = (
    "max_drawdown",
    "liquidations",
    "bad_debt_events",
    "min_mid",
    "realised_vol_annual",
)

_MAX_METRICS = 6
_MAX_PAIRS = 3


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _report_metrics(summary: pd.DataFrame, spec: SweepSpec) -> list[str]:
    available = numeric_metrics(summary, spec)
    if spec.report_metrics:
        return [m for m in spec.report_metrics if m in available]
    chosen = [m for m in DEFAULT_METRICS if m in available]
    chosen += [
        m
        for m in available
        if m not in chosen and (m.startswith("bad_debt") or m.startswith("liquidat"))
    ]
    return chosen[:_MAX_METRICS]


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _metric_figure(
    ok: pd.DataFrame, agg: pd.DataFrame, spec: SweepSpec, metric: str, path: Path
) -> None:
    import matplotlib.pyplot as plt

    paths = spec.paths
    fig, axes = plt.subplots(1, len(paths), figsize=(4.2 * len(paths), 3.4), squeeze=False)
    for ax, param in zip(axes[0], paths, strict=True):
        if _is_numeric(ok[param]):
            ax.scatter(ok[param], ok[metric], s=10, alpha=0.4, label="replicates")
            if spec.design.kind in ("grid", "zip"):
                # Mean over replicates and the other parameters at each value of this one.
                means = agg.groupby(param)[f"{metric}_mean"].mean().sort_index()
                lo = agg.groupby(param)[f"{metric}_q05"].min().reindex(means.index)
                hi = agg.groupby(param)[f"{metric}_q95"].max().reindex(means.index)
                ax.errorbar(
                    means.index,
                    means.to_numpy(),
                    yerr=[means.to_numpy() - lo.to_numpy(), hi.to_numpy() - means.to_numpy()],
                    color="C1",
                    marker="o",
                    capsize=3,
                    label="mean, 5-95 %",
                )
        else:
            labels = [str(v) for v in ok[param]]
            order = list(dict.fromkeys(labels))
            pos = np.array([order.index(v) for v in labels])
            ax.scatter(pos, ok[metric], s=10, alpha=0.4)
            ax.set_xticks(range(len(order)), order, rotation=30)
        ax.set_xlabel(param)
        ax.set_ylabel(metric)
    if axes[0][0].get_legend_handles_labels()[0]:  # categorical axes have no labelled artists
        axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{metric} by parameter ({spec.name})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _binned(values: pd.Series, spec: SweepSpec) -> pd.Series:
    if spec.design.kind in ("grid", "zip") or not _is_numeric(values):
        return values.astype(str) if not _is_numeric(values) else values
    bins = pd.qcut(values, q=min(5, values.nunique()), duplicates="drop")
    return bins.apply(lambda b: f"{b.mid:.4g}").astype(str)


def _heatmap(ok: pd.DataFrame, spec: SweepSpec, metric: str, a: str, b: str, path: Path) -> bool:
    import matplotlib.pyplot as plt

    frame = pd.DataFrame({a: _binned(ok[a], spec), b: _binned(ok[b], spec), metric: ok[metric]})
    table = frame.pivot_table(index=a, columns=b, values=metric, aggfunc="mean", observed=True)
    if table.shape[0] < 2 or table.shape[1] < 2:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    image = ax.imshow(table.to_numpy(dtype=float), origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], rotation=30)
    ax.set_yticks(range(table.shape[0]), [str(i) for i in table.index])
    ax.set_xlabel(b)
    ax.set_ylabel(a)
    fig.colorbar(image, ax=ax, label=f"mean {metric}")
    ax.set_title(f"{metric}: mean over replicates")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _sensitivity_figure(table: pd.DataFrame, kind: str, metric: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(table)), 3.4))
    x = np.arange(len(table))
    if kind == "sobol":
        ax.bar(x - 0.2, table["S1"], 0.4, yerr=table["S1_conf"], capsize=3, label="first order S1")
        ax.bar(x + 0.2, table["ST"], 0.4, yerr=table["ST_conf"], capsize=3, label="total ST")
    else:
        ax.bar(x - 0.2, table["mu_star"], 0.4, yerr=table["mu_star_conf"], capsize=3, label="mu*")
        ax.bar(x + 0.2, table["sigma"], 0.4, label="sigma")
    ax.set_xticks(x, table["parameter"], rotation=20, fontsize=7)
    ax.set_title(f"sensitivity of {metric} ({kind})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.name)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{name}">'
        f"<figcaption>{name}</figcaption></figure>"
    )


def _table_html(frame: pd.DataFrame, max_rows: int = 60) -> str:
    shown = frame.head(max_rows)
    note = f"<p>first {max_rows} of {len(frame)} rows</p>" if len(frame) > max_rows else ""
    return shown.to_html(index=False, float_format=lambda v: f"{v:.6g}", na_rep="", border=0) + note


def build_sweep_report(folder: str | Path) -> Path:
    """Write the figures, tables and ``report.html`` of a sweep folder; return the HTML's path.

    Args:
        folder: A sweep folder (``OUT/<name>/``) with ``sweep.toml`` and ``summary.parquet``.

    Raises:
        FileNotFoundError: If the folder has no summary table.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    folder = Path(folder)
    spec = _spec(folder)
    summary = pd.read_parquet(folder / "summary.parquet")
    out = folder / "report"
    out.mkdir(exist_ok=True)
    ok = summary[summary["status"] == "ok"]
    metrics = _report_metrics(summary, spec)
    agg = aggregate(summary, spec, metrics)
    agg.to_parquet(out / "aggregate.parquet", index=False)
    agg.to_csv(out / "aggregate.csv", index=False)
    figures: list[Path] = []
    sens_tables: list[pd.DataFrame] = []
    if len(ok):
        for metric in metrics:
            path = out / f"metric_{_slug(metric)}.png"
            _metric_figure(ok, agg, spec, metric, path)
            figures.append(path)
            for a, b in itertools.islice(itertools.combinations(spec.paths, 2), _MAX_PAIRS):
                path = out / f"heatmap_{_slug(metric)}__{_slug(a)}__{_slug(b)}.png"
                if _heatmap(ok, spec, metric, a, b, path):
                    figures.append(path)
            if spec.design.kind in ("sobol", "morris"):
                try:
                    table = sensitivity(folder, metric)
                except ValueError:
                    continue  # incomplete sweep or constant metric: no indices to show
                sens_tables.append(table)
                path = out / f"sensitivity_{_slug(metric)}.png"
                _sensitivity_figure(table, spec.design.kind, metric, path)
                figures.append(path)
    if sens_tables:
        pd.concat(sens_tables).to_csv(out / "sensitivity.csv", index=False)
    counts = summary["status"].value_counts().reindex(["ok", "failed", "pending"], fill_value=0)
    failures = summary[summary["status"] == "failed"][["point", "replicate", "run_id", "error"]]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>sweep {html.escape(spec.name)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;font-size:12px}td,th{padding:2px 6px;"
        "border-bottom:1px solid #ddd}img{max-width:100%}pre{background:#f6f6f6;padding:1em}"
        "</style></head><body>",
        f"<h1>Sweep {html.escape(spec.name)}</h1>",
        f"<p>{html.escape(spec.description)}</p>",
        f"<p>{len(summary)} runs: {counts['ok']} ok, {counts['failed']} failed, "
        f"{counts['pending']} pending. Design {spec.design.kind}, {spec.replicates} "
        f"replicate(s) per point, master seed {spec.master_seed}.</p>",
        "<h2>Figures</h2>",
        *[_img(p) for p in figures],
        "<h2>Per-point statistics over replicates</h2>",
        _table_html(agg),
    ]
    if sens_tables:
        parts += ["<h2>Sensitivity indices</h2>", _table_html(pd.concat(sens_tables))]
    if len(failures):
        parts += [
            "<h2>Failed runs</h2>",
            _table_html(failures),
            "<p>Tracebacks: <code>failures/&lt;run_id&gt;.json</code></p>",
        ]
    parts += [
        "<h2>Sweep spec (resolved)</h2>",
        f"<pre>{html.escape((folder / 'sweep.toml').read_text(encoding='utf-8'))}</pre>",
        "</body></html>",
    ]
    report = out / "report.html"
    report.write_text("\n".join(parts), encoding="utf-8")
    return report
