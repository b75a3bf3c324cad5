"""Running one scenario: ``run(scenario) -> RunResult``."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from marginsim.config import Scenario
from marginsim.experiments.stats import (
    bad_debt_values,
    cascade_episodes,
    excess_kurtosis,
    hill_tail_index,
    liquidated_debt_values,
)
from marginsim.model import MarginModel

__all__ = [
    "PROTOCOL_TYPES",
    "RunResult",
    "add_derived_tables",
    "network_summary",
    "run",
    "summarize",
]


@dataclasses.dataclass(frozen=True)
class RunResult:
    """Everything a run produced.

    Attributes:
        scenario: The scenario that ran (with the seed actually used in ``run.seed``).
        metrics: One row per step, ``step`` first (see :mod:`marginsim.metrics`).
        events: Event tables by name: those of :meth:`MarginModel.event_tables` plus the
            derived ``cascades`` table (:func:`add_derived_tables`).
        summary: Headline numbers of the run (see :func:`summarize`).
        wall_seconds: Wall time of the run (kept out of ``summary`` so that the summary is
            a pure function of the scenario).
    """

    scenario: Scenario
    metrics: pd.DataFrame
    events: dict[str, pd.DataFrame]
    summary: dict[str, float | int | str]
    wall_seconds: float


def run(
    scenario: Scenario,
    *,
    seed: int | None = None,
    check_invariants: bool = False,
    progress: bool | None = False,
) -> RunResult:
    """Run a scenario to the end.

    Args:
        scenario: The scenario.
        seed: Replaces ``scenario.run.seed`` (the returned scenario records it).
        check_invariants: Check ledger conservation and book invariants after every step;
            raises :class:`marginsim.model.InvariantViolation` on the first failure.
        progress: Show a progress bar (``None``: only when stderr is a terminal).

    Returns:
        The run's :class:`RunResult`.

    Examples:
        >>> import marginsim
        >>> result = marginsim.run(marginsim.load_scenario("default").with_overrides(
        ...     {"run.steps": 10}))
        >>> int(result.metrics["step"].iloc[-1])
        9
    """
    if seed is not None:
        scenario = scenario.with_overrides({"run.seed": int(seed)})
    started = time.perf_counter()
    model = MarginModel(scenario, check_invariants=check_invariants)
    steps = scenario.run.steps
    disable = None if progress is None else not progress  # tqdm: None = only on a terminal
    with tqdm(total=steps, disable=disable, unit="step", desc=scenario.name, leave=False) as bar:
        for _ in range(steps):
            model.step()
            bar.update(1)
    metrics = model.metrics_frame()
    events = add_derived_tables(scenario, metrics, model.event_tables())
    wall = time.perf_counter() - started
    return RunResult(scenario, metrics, events, summarize(scenario, metrics, events), wall)


def add_derived_tables(
    scenario: Scenario, metrics: pd.DataFrame, events: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """The event tables plus the tables derived from the recorded frames.

    ``cascades``: cascade episodes (:func:`marginsim.experiments.stats.cascade_episodes`),
    their liquidated debt valued by :func:`~marginsim.experiments.stats.liquidated_debt_values`.
    """
    out = dict(events)
    liquidations = events["liquidations"]
    values = liquidated_debt_values(liquidations, scenario, metrics)
    out["cascades"] = cascade_episodes(metrics, liquidations, values)
    return out


def _max_drawdown(prices: np.ndarray) -> float:
    prices = prices[np.isfinite(prices)]
    if prices.size == 0:
        return math.nan
    peak = np.maximum.accumulate(prices)
    return float(np.max(1.0 - prices / peak))


def summarize(
    scenario: Scenario, metrics: pd.DataFrame, events: dict[str, pd.DataFrame]
) -> dict[str, float | int | str]:
    """Headline numbers of a run, all derived from its recorded frames.

    Keys: ``scenario``, ``seed``, ``steps``, ``final_index``, ``final_mid``, ``min_mid``,
    ``max_drawdown`` (largest peak-to-trough fall of the mid, as a fraction),
    ``realised_vol_annual`` (of the mid's log returns), ``mean_spread_bps``,
    ``max_abs_basis_bps``, ``trades``, ``volume_base``, ``volume_quote``, ``shocks``,
    ``liquidation_rounds``, ``liquidations`` (lending liquidations and CDP auction takes),
    ``bad_debt_events`` (rows of the ``bad_debt`` table), ``bad_debt_value`` (total bad debt
    in quote, :func:`~marginsim.experiments.stats.bad_debt_values`),
    ``liquidation_volume`` (quote value of the debt liquidated,
    :func:`~marginsim.experiments.stats.liquidated_debt_values`), ``max_margin_debt`` and
    ``max_leverage`` (largest per-step ``margin_debt`` and ``leverage``), ``cascades``
    (episodes in the ``cascades`` table) and ``longest_cascade`` (steps; 0 without one),
    ``return_kurtosis`` (excess kurtosis of the mid's log returns) and ``hill_index`` (Hill
    tail index of their absolute values, 5% tail; see :mod:`marginsim.experiments.stats`).

    Network keys (from the ``network_nodes`` table, :func:`network_summary`):
    ``protocols_with_bad_debt``, ``protocols_defaulted``, ``systemic_loss``,
    ``max_debtrank``, ``max_debtrank_protocol`` and ``default_order``.
    """
    mid = metrics["mid_price"].to_numpy()
    finite = mid[np.isfinite(mid)]
    returns = np.diff(np.log(finite)) if finite.size > 1 else np.zeros(0)
    cascades = events.get("cascades")
    if cascades is None:  # events straight from MarginModel.event_tables()
        cascades = add_derived_tables(scenario, metrics, events)["cascades"]
    per_year = 365 * 86400 / scenario.run.step_seconds

    def _f(x: float) -> float:
        return float(x) if math.isfinite(x) else math.nan

    return {
        "scenario": scenario.name,
        "seed": scenario.run.seed,
        "steps": int(len(metrics)),
        "final_index": _f(metrics["index_price"].iloc[-1]),
        "final_mid": _f(mid[-1]),
        "min_mid": _f(finite.min()) if finite.size else math.nan,
        "max_drawdown": _max_drawdown(mid),
        "realised_vol_annual": _f(returns.std() * math.sqrt(per_year))
        if returns.size > 1
        else math.nan,
        "mean_spread_bps": _f(metrics["spread_bps"].mean()),
        "max_abs_basis_bps": _f(metrics["basis_bps"].abs().max()),
        "trades": int(len(events["trades"])),
        "volume_base": _f(metrics["volume_base"].sum()),
        "volume_quote": _f(metrics["volume_quote"].sum()),
        "shocks": int(len(events["shocks"])),
        "liquidation_rounds": int(metrics["liquidation_rounds"].sum()),
        "liquidations": int(len(events["liquidations"])),
        "bad_debt_events": int(len(events["bad_debt"])),
        "bad_debt_value": _f(bad_debt_values(events["bad_debt"], scenario, metrics)),
        "liquidation_volume": _f(
            float(liquidated_debt_values(events["liquidations"], scenario, metrics).sum())
        ),
        "max_margin_debt": _column_max(metrics, "margin_debt"),
        "max_leverage": _column_max(metrics, "leverage"),
        "cascades": int(len(cascades)),
        "longest_cascade": int(cascades["length_steps"].max()) if len(cascades) else 0,
        "return_kurtosis": _f(excess_kurtosis(returns)),
        "hill_index": _f(hill_tail_index(np.abs(returns))),
        **network_summary(events.get("network_nodes")),
    }


#: Node types of the protocol network that are protocols (the others are venues).
PROTOCOL_TYPES = ("lending", "cdp", "perp", "bridge")


def network_summary(nodes: pd.DataFrame | None) -> dict[str, float | int | str]:
    """Run-level measures of the protocol network, from its ``network_nodes`` table.

    Only protocol nodes (types in :data:`PROTOCOL_TYPES`) count; books, AMM pools and
    oracles carry no balance sheet.

    Returns:
        ``protocols_with_bad_debt`` (protocols with bad debt > 0), ``protocols_defaulted``,
        ``systemic_loss`` (their bad debt summed, unit of account), ``max_debtrank`` (the
        largest DebtRank any protocol reached during the run; 0 without protocols),
        ``max_debtrank_protocol`` (the protocol that reached it, the first by name on a tie;
        ``""`` when every DebtRank is 0) and ``default_order`` (defaulted protocols joined by
        ``">"`` in the order they defaulted: by default wave, then step, then name, so
        protocols of one wave are listed by name; ``""`` when none defaulted).
    """
    empty: dict[str, float | int | str] = {
        "protocols_with_bad_debt": 0,
        "protocols_defaulted": 0,
        "systemic_loss": 0.0,
        "max_debtrank": 0.0,
        "max_debtrank_protocol": "",
        "default_order": "",
    }
    if nodes is None or nodes.empty:
        return empty
    p = nodes[nodes["type"].isin(PROTOCOL_TYPES)]
    if p.empty:
        return empty
    defaulted = p[p["defaulted"].astype(bool)]
    order = defaulted.sort_values(["default_wave", "default_step", "node"], kind="stable")
    ranked = p.sort_values(["debtrank", "node"], ascending=[False, True], kind="stable")
    top = ranked.iloc[0]
    max_dr = float(top["debtrank"])
    return {
        "protocols_with_bad_debt": int((p["bad_debt"] > 0).sum()),
        "protocols_defaulted": int(len(defaulted)),
        "systemic_loss": float(p["bad_debt"].sum()),
        "max_debtrank": max_dr,
        "max_debtrank_protocol": str(top["node"]) if max_dr > 0 else "",
        "default_order": ">".join(str(n) for n in order["node"]),
    }


def _column_max(metrics: pd.DataFrame, column: str) -> float:
    """Largest finite value of a metrics column (NaN when it is missing or all NaN)."""
    if column not in metrics:
        return math.nan
    x = metrics[column].to_numpy(dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.max()) if x.size else math.nan
