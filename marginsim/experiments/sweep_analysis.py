"""Statistics over a sweep's summary table: replicate aggregates and global sensitivity.

:func:`aggregate` reduces the replicates of every design point to mean, standard deviation
and quantiles of each numeric summary metric, plus the probability of any bad debt.
:func:`sensitivity` runs SALib's Sobol' or Morris analysis of one metric on a sweep whose
design is ``sobol`` or ``morris``. Both read only the stored summary table and spec.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from marginsim.experiments.stats import quantile_suffix, replicate_aggregates
from marginsim.experiments.sweep import SUMMARY_COLUMNS, SweepSpec, design_matrix, load_sweep

__all__ = ["QUANTILES", "aggregate", "numeric_metrics", "sensitivity"]

#: Quantiles reported per design point (0.95 is the tail risk measure, as a VaR level).
QUANTILES = (0.05, 0.5, 0.95)


def _spec(folder: Path) -> SweepSpec:
    return load_sweep(tomllib.loads((folder / "sweep.toml").read_text(encoding="utf-8")))


def numeric_metrics(summary: pd.DataFrame, spec: SweepSpec) -> list[str]:
    """Summary columns that are numbers and neither bookkeeping nor a varied parameter."""
    skip = set(SUMMARY_COLUMNS) | set(spec.paths) | {"steps"}
    return [
        c
        for c in summary.columns
        if c not in skip
        and pd.api.types.is_numeric_dtype(summary[c])
        and not pd.api.types.is_bool_dtype(summary[c])
    ]


def aggregate(
    summary: pd.DataFrame, spec: SweepSpec, metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """Replicate statistics per design point, from the successful runs.

    Columns: ``point``, the varied parameters, ``runs`` (successful replicates), and for
    each metric ``<metric>_mean``, ``_std`` (sample, ``ddof=1``; NaN for one replicate),
    ``_q05``, ``_q50``, ``_q95`` (linear interpolation between order statistics, numpy's
    default). For every metric whose name starts with ``bad_debt``, also
    ``p_any_<metric>``: the fraction of replicates where it is > 0.

    Args:
        summary: The sweep's summary table (:func:`marginsim.experiments.sweep.load_summary`).
        spec: The sweep's spec.
        metrics: Metrics to aggregate (default: :func:`numeric_metrics`).
    """
    metrics = list(metrics) if metrics is not None else numeric_metrics(summary, spec)
    ok = summary[summary["status"] == "ok"]
    # The statistics are marginsim.experiments.stats.replicate_aggregates'; this adds the
    # sweep's bookkeeping (point, parameters, p_any_*) and its column names (runs, _q05).
    stats = replicate_aggregates(
        ok,
        ["point"],
        columns=metrics,
        quantiles=QUANTILES,
        bad_debt=None,
        liquidation_volume=None,
    )
    renames = {"replicates": "runs"}
    for m in metrics:
        for q in QUANTILES:
            renames[f"{m}_q{quantile_suffix(q)}"] = f"{m}_q{round(q * 100):02d}"
    stats = stats.rename(columns=renames)
    params = ok.groupby("point", sort=True)[list(spec.paths)].first().reset_index()
    out = params.merge(stats, on="point", how="inner")
    for m in metrics:
        if m.startswith("bad_debt"):
            any_positive = (ok[m] > 0).astype(np.float64).where(ok[m].notna())
            share = any_positive.groupby(ok["point"], sort=True).mean()
            out[f"p_any_{m}"] = out["point"].map(share).astype(np.float64)
    columns = ["point", *spec.paths, "runs"]
    for m in metrics:
        columns += [f"{m}_mean", f"{m}_std", *(f"{m}_q{round(q * 100):02d}" for q in QUANTILES)]
        if m.startswith("bad_debt"):
            columns.append(f"p_any_{m}")
    return out[columns].astype({"point": np.int64, "runs": np.int64})


def sensitivity(
    folder: str | Path,
    metric: str,
    *,
    num_resamples: int = 100,
    conf_level: float = 0.95,
) -> pd.DataFrame:
    """Global sensitivity of one summary metric, from a ``sobol`` or ``morris`` sweep.

    The model output of a design point is the mean of ``metric`` over its replicates. The
    bootstrap that gives the confidence intervals is seeded from the sweep's master seed.

    Returns:
        One row per parameter. Sobol': ``S1``, ``S1_conf``, ``ST``, ``ST_conf`` (first-order
        and total indices with half-widths of their ``conf_level`` intervals). Morris:
        ``mu``, ``mu_star``, ``mu_star_conf``, ``sigma``.

    Raises:
        ValueError: If the design is neither ``sobol`` nor ``morris``, the metric is not a
            summary column, or a design point has no successful run.
    """
    folder = Path(folder)
    spec = _spec(folder)
    kind = spec.design.kind
    if kind not in ("sobol", "morris"):
        raise ValueError(f"sensitivity needs a 'sobol' or 'morris' design; this sweep is {kind!r}")
    summary = pd.read_parquet(folder / "summary.parquet")
    if metric not in summary.columns:
        raise ValueError(f"{metric!r} is not a column of the summary table")
    x = design_matrix(spec)
    ok = summary[summary["status"] == "ok"]
    y = ok.groupby("point")[metric].mean().reindex(range(len(x))).to_numpy(dtype=np.float64)
    missing = np.flatnonzero(~np.isfinite(y))
    if missing.size:
        raise ValueError(
            f"{missing.size} design point(s) have no finite {metric!r} "
            f"(first: point {int(missing[0])}); rerun the sweep to complete them"
        )
    problem = {
        "num_vars": len(spec.parameters),
        "names": spec.paths,
        "bounds": [[p.low, p.high] for p in spec.parameters],
    }
    seed = spec.master_seed % 2**32
    if kind == "sobol":
        from SALib.analyze import sobol

        res = sobol.analyze(
            problem,
            y,
            calc_second_order=spec.design.second_order,
            num_resamples=num_resamples,
            conf_level=conf_level,
            seed=seed,
        )
        keys = ("S1", "S1_conf", "ST", "ST_conf")
    else:
        from SALib.analyze import morris

        res = morris.analyze(
            problem,
            x,
            y,
            num_resamples=num_resamples,
            conf_level=conf_level,
            num_levels=spec.design.levels,
            seed=seed,
        )
        keys = ("mu", "mu_star", "mu_star_conf", "sigma")
    table = pd.DataFrame({k: np.asarray(res[k], dtype=np.float64) for k in keys})
    table.insert(0, "parameter", spec.paths)
    table.insert(1, "metric", metric)
    return table
