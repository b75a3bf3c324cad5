"""Statistics over recorded frames: return statistics, cascade episodes, replicate aggregates.

Everything here reads frames a run already produced (``metrics``, event tables, a sweep's
summary table); nothing reads a model. Formulas are those of the GLOSSARY ("Return
statistics", "Market-wide measures") and are written out in ``docs/metrics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from marginsim.config import Scenario

__all__ = [
    "ACF_LAGS",
    "CASCADE_COLUMNS",
    "HILL_FRACTION",
    "autocorrelation",
    "bad_debt_values",
    "cascade_episodes",
    "excess_kurtosis",
    "hill_k",
    "hill_tail_index",
    "liquidated_debt_values",
    "log_returns",
    "quantile_suffix",
    "replicate_aggregates",
    "return_statistics",
    "skewness",
]

_NAN = float("nan")

#: Lags of the return autocorrelations :func:`return_statistics` reports (in steps).
ACF_LAGS: tuple[int, ...] = (1, 5, 10, 30, 60)

#: Share of the non-zero absolute returns the Hill estimator uses as its tail by default.
HILL_FRACTION = 0.05

#: Columns and dtypes of the ``cascades`` table.
CASCADE_COLUMNS: dict[str, str] = {
    "episode": "int64",
    "start_step": "int64",
    "end_step": "int64",
    "length_steps": "int64",
    "liquidations": "int64",
    "liquidated_debt_value": "float64",
    "price_impact": "float64",
}


# ----------------------------------------------------------------------- return statistics
def log_returns(prices: np.ndarray | Sequence[float] | pd.Series) -> np.ndarray:
    """Log returns ``ln(p_t / p_(t-1))`` of the finite, positive prices of a series.

    Missing prices (NaN, e.g. a book without a mid) and non-positive ones are dropped
    first, so a return may span a gap.
    """
    p = np.asarray(prices, dtype=np.float64).reshape(-1)
    p = p[np.isfinite(p) & (p > 0)]
    return np.diff(np.log(p)) if p.size > 1 else np.zeros(0)


def _central_moments(x: np.ndarray) -> tuple[float, float, float]:
    d = x - x.mean()
    return float(np.mean(d**2)), float(np.mean(d**3)), float(np.mean(d**4))


def excess_kurtosis(returns: np.ndarray) -> float:
    """Excess kurtosis ``m4 / m2**2 - 3`` with population (biased) central moments.

    Equals ``scipy.stats.kurtosis(r, fisher=True, bias=True)``; NaN with fewer than 2
    returns or zero variance.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return _NAN
    m2, _, m4 = _central_moments(r)
    return m4 / m2**2 - 3.0 if m2 > 0 else _NAN


def skewness(returns: np.ndarray) -> float:
    """Skewness ``m3 / m2**1.5`` with population central moments.

    Equals ``scipy.stats.skew(r, bias=True)``; NaN with fewer than 2 returns or zero
    variance.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return _NAN
    m2, m3, _ = _central_moments(r)
    return m3 / m2**1.5 if m2 > 0 else _NAN


def hill_k(n: int, fraction: float = HILL_FRACTION) -> int:
    """The default tail size of the Hill estimator.

    ``max(2, floor(fraction * n))``, capped at ``n - 1`` (the estimator needs the
    ``k + 1``-th largest value), and 0 when ``n < 2``.
    """
    return max(0, min(max(2, int(math.floor(fraction * n))), n - 1))


def hill_tail_index(values: np.ndarray, k: int | None = None) -> float:
    """Hill estimator of the tail index of positive values (GLOSSARY).

    With ``x_(1) >= x_(2) >= ...`` the values sorted in decreasing order,
    ``alpha = 1 / mean_{i=1..k}( ln(x_(i) / x_(k+1)) )``. Only positive finite values are
    used (a zero absolute return says nothing about the tail and has no logarithm).

    Args:
        values: The sample, e.g. absolute log returns.
        k: Order statistics in the tail; ``None`` uses :func:`hill_k` of the number of
            positive values (5% of them, at least 2).

    Returns:
        ``alpha``; NaN when fewer than ``k + 1`` positive values are left, ``k < 1``, or
        the ``k`` largest all equal ``x_(k+1)``.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x) & (x > 0)]
    if k is None:
        k = hill_k(x.size)
    if k < 1 or x.size < k + 1:
        return _NAN
    top = -np.sort(-x)[: k + 1]  # the k + 1 largest, decreasing
    mean_log = float(np.mean(np.log(top[:k] / top[k])))
    return 1.0 / mean_log if mean_log > 0 else _NAN


def autocorrelation(x: np.ndarray, lag: int) -> float:
    """Sample autocorrelation at ``lag``: ``sum_t (x_t - m)(x_(t+lag) - m) / sum_t (x_t - m)^2``.

    ``m`` is the mean of the whole series and the denominator sums over all of it (the usual
    estimator, as ``statsmodels.tsa.stattools.acf``). NaN when ``lag`` is not below the
    length, or the series is constant.
    """
    v = np.asarray(x, dtype=np.float64).reshape(-1)
    if lag < 0 or lag >= v.size:
        return _NAN
    d = v - v.mean()
    denom = float(np.dot(d, d))
    if not denom > 0:
        return _NAN
    return float(np.dot(d[: v.size - lag], d[lag:])) / denom


def return_statistics(
    prices: np.ndarray | Sequence[float] | pd.Series,
    lags: Sequence[int] = ACF_LAGS,
    hill_tail: int | None = None,
) -> dict[str, float]:
    """Stylized facts of a price series from its log returns (:func:`log_returns`).

    Keys: ``n_returns``, ``mean``, ``std`` (population), ``skew``, ``excess_kurtosis``,
    ``hill_alpha`` (of ``|r|``, :func:`hill_tail_index`) and ``hill_k`` (the tail size
    used), then ``acf_r_<L>`` and ``acf_abs_r_<L>`` for each lag: the autocorrelation of the
    returns and of their absolute values (volatility clustering shows as slowly decaying
    ``acf_abs_r``).

    Args:
        prices: The series, e.g. ``metrics["mid_price"]``.
        lags: Autocorrelation lags in steps.
        hill_tail: Tail size of the Hill estimator (``None``: :func:`hill_k`).
    """
    r = log_returns(prices)
    a = np.abs(r)
    positive = int(np.count_nonzero(a > 0))
    k = hill_k(positive) if hill_tail is None else int(hill_tail)
    out: dict[str, float] = {
        "n_returns": float(r.size),
        "mean": float(r.mean()) if r.size else _NAN,
        "std": float(r.std()) if r.size else _NAN,
        "skew": skewness(r),
        "excess_kurtosis": excess_kurtosis(r),
        "hill_alpha": hill_tail_index(a, k),
        "hill_k": float(k),
    }
    for lag in lags:
        out[f"acf_r_{lag}"] = autocorrelation(r, lag)
        out[f"acf_abs_r_{lag}"] = autocorrelation(a, lag)
    return out


# ----------------------------------------------------------------------- valuing event rows
def _decimals(scenario: Scenario) -> dict[str, int]:
    """Decimals of every ledger asset, and of each perp contract's settlement asset."""
    dec = {a.symbol: a.decimals for a in scenario.assets}
    for ins in scenario.instruments:
        venue = scenario.protocols.get(ins.venue) if ins.kind == "perp" and ins.venue else None
        settlement = getattr(venue, "settlement", ins.quote)
        dec.setdefault(ins.id, dec.get(settlement, 0))
    return dec


def _asset_prices(
    assets: pd.Series, steps: pd.Series, scenario: Scenario, metrics: pd.DataFrame
) -> np.ndarray:
    """Quote price of each row's asset.

    The exogenous asset at the primary mid of the row's step (the index when the mid is
    missing), every other asset at 1 (stablecoins, perp settlement).
    """
    price = np.ones(len(assets))
    exo = assets.to_numpy() == scenario.exogenous.asset
    if exo.any():
        mid = metrics.set_index("step")["mid_price"]
        index = metrics.set_index("step")["index_price"]
        ref = mid.where(np.isfinite(mid), index)
        price[exo] = ref.reindex(steps.to_numpy()[exo]).to_numpy()
    return price


def liquidated_debt_values(
    liquidations: pd.DataFrame, scenario: Scenario, metrics: pd.DataFrame
) -> np.ndarray:
    """Quote value of the debt each row of the ``liquidations`` table repaid or closed.

    ``debt_repaid`` (smallest units of ``debt_asset``; for a perp row the notional closed in
    settlement units) divided by ``10**decimals`` and valued with :func:`_asset_prices`
    (the exogenous asset at the primary mid of the row's step, everything else at 1).
    """
    if liquidations.empty:
        return np.zeros(0)
    dec = _decimals(scenario)
    scale = np.array([10.0 ** -dec.get(a, 0) for a in liquidations["debt_asset"]])
    price = _asset_prices(liquidations["debt_asset"], liquidations["step"], scenario, metrics)
    return liquidations["debt_repaid"].to_numpy(dtype=np.float64) * scale * price


def bad_debt_values(bad_debt: pd.DataFrame, scenario: Scenario, metrics: pd.DataFrame) -> float:
    """Total quote value of recorded bad debt.

    The ``bad_debt`` table (lending write-offs, CDP auction shortfalls; ``amount`` valued
    as in :func:`liquidated_debt_values`) plus the last value of every perp venue's
    ``<venue>_uncovered_bad_debt`` column (the shortfall its insurance fund did not pay).
    """
    total = 0.0
    if not bad_debt.empty:
        dec = _decimals(scenario)
        scale = np.array([10.0 ** -dec.get(a, 0) for a in bad_debt["asset"]])
        price = _asset_prices(bad_debt["asset"], bad_debt["step"], scenario, metrics)
        total += float(np.nansum(bad_debt["amount"].to_numpy(dtype=np.float64) * scale * price))
    for name, protocol in scenario.protocols.items():
        col = f"{name}_uncovered_bad_debt"
        if getattr(protocol, "kind", None) == "perp" and col in metrics and len(metrics):
            last = float(metrics[col].iloc[-1])
            total += last if math.isfinite(last) else 0.0
    return total


# ----------------------------------------------------------------------- cascades
def cascade_episodes(
    metrics: pd.DataFrame,
    liquidations: pd.DataFrame | None = None,
    debt_values: np.ndarray | None = None,
) -> pd.DataFrame:
    """Cascade episodes: maximal runs of consecutive steps with at least one liquidation.

    Per episode (numbered from 0 in time order): ``start_step``, ``end_step`` (inclusive),
    ``length_steps``, ``liquidations`` (sum of the ``liquidations`` metric over its steps),
    ``liquidated_debt_value`` (sum of ``debt_values`` of the ``liquidations`` rows whose
    step lies in it; 0 without them) and ``price_impact``: the relative fall of the primary
    mid from the step before the episode to the lowest mid within it,
    ``(mid_before - min(mid)) / mid_before`` (negative when the mid only rose; NaN for an
    episode that starts at the first recorded step or without a mid).

    Args:
        metrics: The run's metrics frame (``step``, ``liquidations``, ``mid_price``).
        liquidations: The ``liquidations`` table (only its ``step`` column is read).
        debt_values: Quote value of each of its rows (:func:`liquidated_debt_values`).

    Returns:
        The ``cascades`` table, columns :data:`CASCADE_COLUMNS`.
    """
    steps = metrics["step"].to_numpy(dtype=np.int64)
    count = np.nan_to_num(metrics["liquidations"].to_numpy(dtype=np.float64))
    mid = metrics["mid_price"].to_numpy(dtype=np.float64)
    active = count > 0
    # Episode boundaries: where ``active`` switches, and where recorded steps are not
    # consecutive (a gap breaks a run).
    edges = np.flatnonzero(np.diff(np.concatenate([[False], active, [False]]).astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2] - 1  # row positions, inclusive
    rows = []
    if liquidations is not None and debt_values is not None and len(liquidations):
        liq_steps = liquidations["step"].to_numpy(dtype=np.int64)
        vals = np.asarray(debt_values, dtype=np.float64)
    else:
        liq_steps, vals = np.zeros(0, dtype=np.int64), np.zeros(0)
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        # Split a run of active rows where the steps themselves are not consecutive.
        cut = [s, *(np.flatnonzero(np.diff(steps[s : e + 1]) != 1) + s + 1).tolist(), e + 1]
        for a, b in zip(cut[:-1], cut[1:], strict=True):
            start_step, end_step = int(steps[a]), int(steps[b - 1])
            before = mid[a - 1] if a > 0 and steps[a - 1] == start_step - 1 else _NAN
            low = np.nanmin(mid[a:b]) if np.isfinite(mid[a:b]).any() else _NAN
            impact = (before - low) / before if before > 0 else _NAN
            in_episode = (liq_steps >= start_step) & (liq_steps <= end_step)
            rows.append(
                (
                    len(rows),
                    start_step,
                    end_step,
                    end_step - start_step + 1,
                    int(count[a:b].sum()),
                    float(np.nansum(vals[in_episode])),
                    float(impact),
                )
            )
    return pd.DataFrame(rows, columns=list(CASCADE_COLUMNS)).astype(CASCADE_COLUMNS)


# ----------------------------------------------------------------------- replicates
def replicate_aggregates(
    summary: pd.DataFrame,
    keys: Sequence[str],
    columns: Sequence[str] | None = None,
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    bad_debt: str | None = "bad_debt_value",
    liquidation_volume: str | None = "liquidation_volume",
) -> pd.DataFrame:
    """Aggregate replicate runs per group of parameter values (used by sweeps).

    Per group of ``keys`` (e.g. the varied parameters' columns of a sweep's
    ``summary.parquet``): ``replicates`` (rows in the group), then for each numeric
    ``column`` its ``<column>_mean``, ``<column>_std`` (sample standard deviation,
    ``ddof=1``; NaN with fewer than two values) and ``<column>_q<100q>`` (quantiles with
    linear interpolation between order statistics, numpy's default), and the risk measures of the
    GLOSSARY: ``var95_bad_debt`` (95th percentile of ``bad_debt`` across the replicates),
    ``liquidations_at_risk95`` (95th percentile of ``liquidation_volume``) and
    ``p_bad_debt`` (share of replicates with bad debt > 0). NaN values are ignored; a
    column that is all NaN in a group gives NaN.

    Args:
        summary: One row per run.
        keys: Group columns.
        columns: Numeric columns to aggregate (``None``: every numeric column not in
            ``keys``, ``seed`` and ``replicate`` excluded).
        quantiles: Quantiles reported per column.
        bad_debt: Column holding each run's total bad debt value (``None``: no
            ``var95_bad_debt`` and ``p_bad_debt``).
        liquidation_volume: Column holding each run's liquidated value (``None``: no
            ``liquidations_at_risk95``).

    Returns:
        One row per group, the key columns first, sorted by the keys.

    Raises:
        KeyError: If a key, a requested column, or the bad-debt or liquidation column is
            missing.
    """
    keys = list(keys)
    risk = [c for c in (bad_debt, liquidation_volume) if c is not None]
    missing = [c for c in [*keys, *risk] if c not in summary.columns]
    if columns is not None:
        missing += [c for c in columns if c not in summary.columns]
    if missing:
        raise KeyError(f"summary has no column(s) {missing}; it has {list(summary.columns)}")
    if columns is None:
        skip = {*keys, "seed", "replicate"}
        columns = [
            c
            for c in summary.columns
            if c not in skip
            and pd.api.types.is_numeric_dtype(summary[c])
            and not pd.api.types.is_bool_dtype(summary[c])
        ]
    rows = []
    grouped = summary.groupby(keys, sort=True, dropna=False) if keys else [((), summary)]
    for key, group in grouped:
        key_tuple = key if isinstance(key, tuple) else (key,)
        row: dict[str, object] = dict(zip(keys, key_tuple, strict=True))
        row["replicates"] = len(group)
        for col in columns:
            x = group[col].to_numpy(dtype=np.float64)
            x = x[~np.isnan(x)]
            row[f"{col}_mean"] = float(x.mean()) if x.size else _NAN
            row[f"{col}_std"] = float(x.std(ddof=1)) if x.size > 1 else _NAN
            for q in quantiles:
                row[f"{col}_q{quantile_suffix(q)}"] = float(np.quantile(x, q)) if x.size else _NAN
        if bad_debt is not None:
            bd = group[bad_debt].to_numpy(dtype=np.float64)
            bd = bd[~np.isnan(bd)]
            row["var95_bad_debt"] = float(np.quantile(bd, 0.95)) if bd.size else _NAN
            row["p_bad_debt"] = float(np.mean(bd > 0)) if bd.size else _NAN
        if liquidation_volume is not None:
            lv = group[liquidation_volume].to_numpy(dtype=np.float64)
            lv = lv[~np.isnan(lv)]
            row["liquidations_at_risk95"] = float(np.quantile(lv, 0.95)) if lv.size else _NAN
        rows.append(row)
    return pd.DataFrame(rows)


def quantile_suffix(q: float) -> str:
    """Column suffix of a quantile: 0.05 -> ``5``, 0.5 -> ``50``, 0.975 -> ``97.5``."""
    p = round(q * 100, 6)
    return str(int(p)) if p == int(p) else str(p)
