"""Amplification: how much leverage deepens a price fall, measured by running twice."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from marginsim.config import Scenario
from marginsim.experiments.runner import RunResult, run

__all__ = [
    "Amplification",
    "amplification",
    "amplification_study",
    "deleveraged",
    "max_drawdown",
]

#: Agent populations that hold leveraged positions (removed by :func:`deleveraged`).
LEVERAGED_POPULATIONS = ("perp_traders", "lending_loopers")


@dataclasses.dataclass(frozen=True)
class Amplification:
    """The same scenario and seed with and without its leveraged accounts.

    Attributes:
        column: The metrics column whose fall is measured.
        fall_with: Largest peak-to-trough fall of ``column`` with the leveraged accounts.
        fall_without: The same without them.
        excess: ``fall_with - fall_without`` (positive: leverage deepened the fall).
        ratio: ``fall_with / fall_without`` (``inf`` when the fall without is 0).
        liquidations_with: Liquidations in the run with leverage.
        with_leverage: The run with the leveraged accounts.
        without_leverage: The run without them.
    """

    column: str
    fall_with: float
    fall_without: float
    excess: float
    ratio: float
    liquidations_with: int
    with_leverage: RunResult
    without_leverage: RunResult


def max_drawdown(series: pd.Series) -> float:
    """Largest peak-to-trough fall of a price series, as a fraction (NaNs skipped)."""
    prices = series.to_numpy(dtype=np.float64)
    prices = prices[np.isfinite(prices)]
    if prices.size == 0:
        return math.nan
    return float(np.max(1.0 - prices / np.maximum.accumulate(prices)))


def deleveraged(scenario: Scenario) -> Scenario:
    """The scenario without leveraged accounts, everything else (seed included) unchanged.

    Explicit accounts with protocol positions are dropped (wallet-only accounts stay) and
    every leveraged population is set to zero accounts.
    """
    overrides: dict[str, object] = {
        "accounts": [
            a.model_dump(mode="json", exclude_none=True)
            for a in scenario.accounts
            if a.protocol is None
        ],
    }
    for name in LEVERAGED_POPULATIONS:
        if hasattr(scenario.agents, name):
            overrides[f"agents.{name}.count"] = 0
    return scenario.with_overrides(overrides)


def amplification(scenario: Scenario, column: str = "mid_price") -> Amplification:
    """Run ``scenario`` and :func:`deleveraged` ``scenario`` and compare their price falls.

    Both runs use the same seed, so the exogenous path, the shocks and every other agent's
    stream are the same (DESIGN.md section 3); the difference in the fall of ``column`` is
    what the leveraged accounts' forced selling added.

    Args:
        scenario: A scenario with leveraged accounts.
        column: The metrics column to measure (``mid_price`` is the primary spot book;
            ``<venue>_<contract>_mark`` measures a perp contract).

    Returns:
        The comparison, with both runs.

    Raises:
        KeyError: If ``column`` is not a metrics column.
    """
    with_leverage = run(scenario)
    without_leverage = run(deleveraged(scenario))
    for result in (with_leverage, without_leverage):
        if column not in result.metrics.columns:
            raise KeyError(
                f"no metrics column {column!r}; columns are {list(result.metrics.columns)}"
            )
    fall_with = max_drawdown(with_leverage.metrics[column])
    fall_without = max_drawdown(without_leverage.metrics[column])
    ratio = fall_with / fall_without if fall_without > 0 else math.inf
    return Amplification(
        column=column,
        fall_with=fall_with,
        fall_without=fall_without,
        excess=fall_with - fall_without,
        ratio=ratio,
        liquidations_with=len(with_leverage.events["liquidations"]),
        with_leverage=with_leverage,
        without_leverage=without_leverage,
    )


def amplification_study(
    out: Path, *, quick: bool, workers: int | None = None, progress: bool | None = None
) -> Path:
    """The ``amplification`` study: :func:`amplification` of ``crash`` over several seeds.

    Writes ``amplification.parquet`` and ``amplification.csv`` into ``out``, one row per
    seed with the columns ``seed``, ``fall_with``, ``fall_without``, ``excess``, ``ratio``
    and ``liquidations_with`` (see :class:`Amplification`), and returns the Parquet path.
    The full study uses seeds 0-9 and the scenario's 480 steps; ``quick`` uses seeds 0-1 and
    300 steps (the shock starts at step 240). Runs execute one after the other in this
    process (``workers`` is accepted for the common study signature and not used).

    Args:
        out: Output folder (created if missing).
        quick: Run the small version.
        workers: Unused (see above).
        progress: Show a progress bar over the seeds (``None``: only on a terminal).

    Returns:
        Path of ``amplification.parquet``.
    """
    from tqdm.auto import tqdm

    from marginsim.experiments.scenarios import load_scenario

    del workers
    scenario = load_scenario("crash")
    if quick:
        scenario = scenario.with_overrides({"run.steps": 300})
    seeds = range(2) if quick else range(10)
    rows = []
    disable = None if progress is None else not progress
    for seed in tqdm(seeds, disable=disable, desc="amplification", unit="seed"):
        result = amplification(scenario.with_overrides({"run.seed": seed}))
        rows.append(
            {
                "seed": seed,
                "fall_with": result.fall_with,
                "fall_without": result.fall_without,
                "excess": result.excess,
                "ratio": result.ratio,
                "liquidations_with": result.liquidations_with,
            }
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "amplification.csv", index=False)
    path = out / "amplification.parquet"
    table.to_parquet(path, index=False)
    return path
