"""The ``liquidation-designs`` study: liquidation policies compared on three stress scenarios.

Every lending pool of a scenario gets the policy under test (perp venues too, for the policies
a perp venue takes: ``dynamic`` and ``circuit_breaker``; under the others they keep the static
rules). Each (scenario, policy) pair runs ``replicates`` times with replicate seeds
``SeedSequence(scenario seed, spawn_key=(i,))`` (DESIGN.md s. 3), so the policies meet the
same exogenous paths. A second part sweeps each policy's main parameter.

Measures of a run (all computed from its recorded frames; see docs/policies.md):

* ``bad_debt``: value of the ``bad_debt`` table (lending write-offs and CDP system debt).
* ``liquidation_volume``: value of debt repaid in liquidations (lending repays, CDP auction
  takes, perp notional closed).
* ``accounts_liquidated``: distinct (protocol, account) pairs with a liquidation.
* ``max_drawdown``: largest peak-to-trough fall of the primary book's mid.
* ``cascade_length``: longest run of consecutive steps that each had a liquidation.
* ``hunter_profit``: the liquidation hunter's trading profit (cash flow of its trades, less
  taker fees, plus its net base position at the final mid); NaN without a hunter.
* ``protocol_revenue``: lending treasuries' share of liquidation bonuses (valued at the
  oracle price), CDP penalties and perp insurance funds' net gain from liquidations.

Values are in the scenario's quote asset: the exogenous asset (WETH) at the final index,
every other asset of these scenarios (USDC, DAI) at par.
"""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from marginsim.config import Scenario

__all__ = [
    "METRICS",
    "POLICIES",
    "SCENARIOS",
    "SWEEPS",
    "liquidation_designs_study",
    "policy_overrides",
    "replicate_seed",
    "run_measures",
]

#: Scenarios the study stresses.
SCENARIOS = ("crash", "liquidation_hunt", "depeg")

#: Policies compared: name -> ``liquidation_policy`` table (defaults otherwise).
POLICIES: dict[str, dict[str, Any]] = {
    "static": {"kind": "static"},
    "dynamic": {"kind": "dynamic"},
    "gradual": {"kind": "gradual"},
    "gradual_dutch": {"kind": "gradual", "schedule": "dutch"},
    "predictive": {"kind": "predictive"},
    "circuit_breaker": {"kind": "circuit_breaker"},
}

#: Each policy's main parameter and the values the sweep gives it.
SWEEPS: dict[str, tuple[str, tuple[float, ...]]] = {
    "dynamic": ("max_multiplier", (1.2, 1.5, 1.8)),
    "gradual": ("slices", (2, 4, 8)),
    "predictive": ("trigger_probability", (0.2, 0.5, 0.8)),
    "circuit_breaker": ("threshold", (0.02, 0.05, 0.1)),
}

#: Measures of a run, with the label their figure uses.
METRICS: dict[str, str] = {
    "bad_debt": "bad debt (quote units)",
    "liquidation_volume": "liquidation volume (quote units)",
    "accounts_liquidated": "accounts liquidated",
    "max_drawdown": "max drawdown of the mid",
    "cascade_length": "longest cascade (steps)",
    "hunter_profit": "hunter's profit (quote units)",
    "protocol_revenue": "protocol revenue (quote units)",
}

_PERP_KINDS = ("static", "dynamic", "circuit_breaker")

#: ``--quick``: the crash cut after its fall (steps 240-270) with smaller populations.
_QUICK_CRASH = {
    "run.steps": 280,
    "agents.noise.count": 500,
    "agents.lending_loopers.count": 1000,
    "agents.perp_traders.count": 500,
}


def replicate_seed(master_seed: int, replicate: int) -> int:
    """Seed of replicate ``i``: from ``SeedSequence(master_seed, spawn_key=(i,))``."""
    state = np.random.SeedSequence(master_seed, spawn_key=(replicate,)).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))  # below 2**63, as run.seed requires


def policy_overrides(scenario: Scenario, policy: dict[str, Any]) -> dict[str, Any]:
    """Overrides that give every lending pool (and perp venue, where allowed) ``policy``."""
    out: dict[str, Any] = {}
    for name, proto in scenario.protocols.items():
        if proto.kind == "lending" or (proto.kind == "perp" and policy["kind"] in _PERP_KINDS):
            out[f"protocols.{name}.liquidation_policy"] = dict(policy)
    return out


def _prices(scenario: Scenario, metrics: pd.DataFrame) -> tuple[float, set[str], dict[str, int]]:
    final_index = float(metrics["index_price"].iloc[-1])
    decimals = {a.symbol: a.decimals for a in scenario.assets}
    perp_ids = {i.id for i in scenario.instruments if i.kind == "perp"}
    for ins in scenario.instruments:  # a perp row's amounts are in its venue's settlement
        if ins.kind == "perp" and ins.venue in scenario.protocols:
            settlement = getattr(scenario.protocols[ins.venue], "settlement", "USDC")
            decimals[ins.id] = decimals.get(settlement, 6)
    return final_index, perp_ids, decimals


def _value(
    amounts: pd.Series, assets: pd.Series, scenario: Scenario, metrics: pd.DataFrame
) -> float:
    final_index, _, decimals = _prices(scenario, metrics)
    exo = scenario.exogenous.asset
    total = 0.0
    for asset, amount in zip(assets.tolist(), amounts.tolist(), strict=True):
        price = final_index if asset == exo else 1.0
        total += amount / 10 ** decimals.get(asset, 6) * price
    return total


def _longest_run(steps: Iterable[int]) -> int:
    best = run = 0
    last = None
    for s in sorted(set(steps)):
        run = run + 1 if last is not None and s == last + 1 else 1
        best = max(best, run)
        last = s
    return best


def _hunter_profit(
    scenario: Scenario, metrics: pd.DataFrame, events: dict[str, pd.DataFrame]
) -> float:
    attacks = events.get("hunter_attacks")
    if attacks is None:
        return math.nan
    names = events["holders"].set_index("holder")["name"]
    hunters = [h for h, n in names.items() if str(n).startswith("liquidation_hunter")]
    if not hunters:
        hunters = sorted(set(attacks["hunter"].tolist()))
    trades = events["trades"]
    fees = {ins.id: ins.taker_fee for ins in scenario.instruments}  # trades name the book
    mids = metrics["mid_price"].to_numpy(dtype=np.float64)
    final_mid = float(mids[np.isfinite(mids)][-1]) if np.isfinite(mids).any() else math.nan
    profit = 0.0
    for h in hunters:
        buys = trades[trades["buyer"] == h]
        sells = trades[trades["seller"] == h]
        cash = float((sells["price"] * sells["qty"]).sum() - (buys["price"] * buys["qty"]).sum())
        taker = pd.concat([buys[buys["aggressor_side"] > 0], sells[sells["aggressor_side"] < 0]])
        fee = float(
            (taker["price"] * taker["qty"] * taker["instrument"].map(fees).fillna(0.0)).sum()
        )
        base = float(buys["qty"].sum() - sells["qty"].sum())
        profit += cash - fee + base * final_mid
    return profit


def run_measures(
    scenario: Scenario,
    metrics: pd.DataFrame,
    events: dict[str, pd.DataFrame],
    summary: dict[str, Any],
) -> dict[str, float]:
    """The study's measures of one run (see the module docstring)."""
    liq = events["liquidations"]
    bad = events["bad_debt"]
    kinds = {name: p.kind for name, p in scenario.protocols.items()}
    final_index, perp_ids, decimals = _prices(scenario, metrics)
    kind = liq["protocol"].map(kinds)
    lending = liq[kind == "lending"]
    revenue = float(
        (
            lending["protocol_fee"]
            / lending["collateral_asset"].map(lambda a: 10 ** decimals.get(a, 6))
            * lending["oracle_price"]
        ).sum()
    )
    cdp = liq[kind == "cdp"]
    revenue += _value(cdp["protocol_fee"], cdp["debt_asset"], scenario, metrics)
    revenue += float(liq.loc[kind == "perp", "bonus_value"].sum())
    return {
        "bad_debt": _value(bad["amount"], bad["asset"], scenario, metrics),
        "liquidation_volume": _value(liq["debt_repaid"], liq["debt_asset"], scenario, metrics),
        "accounts_liquidated": float(len(liq[["protocol", "account"]].drop_duplicates())),
        "max_drawdown": float(summary["max_drawdown"]),
        "cascade_length": float(_longest_run(liq["step"].tolist())),
        "hunter_profit": _hunter_profit(scenario, metrics, events),
        "protocol_revenue": revenue,
        "policy_events": float(len(events.get("policy_events", ()))),
    }


def _job(task: dict[str, Any]) -> dict[str, Any]:
    """One run of the study (module level so that worker processes can import it)."""
    from marginsim.experiments.runner import run

    scenario: Scenario = task.pop("scenario")
    result = run(scenario)
    return (
        task
        | {"seed": scenario.run.seed}
        | run_measures(result.scenario, result.metrics, result.events, result.summary)
    )


def _execute(
    tasks: list[dict[str, Any]], workers: int | None, progress: bool | None, desc: str
) -> pd.DataFrame:
    from tqdm.auto import tqdm

    disable = None if progress is None else not progress
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(tasks), disable=disable, desc=desc, unit="run") as bar:
        if workers is not None and workers > 1:
            with concurrent.futures.ProcessPoolExecutor(
                max_workers=workers, max_tasks_per_child=1
            ) as pool:
                for row in pool.map(_job, tasks):
                    rows.append(row)
                    bar.update(1)
        else:
            for task in tasks:
                rows.append(_job(dict(task)))
                bar.update(1)
    return pd.DataFrame(rows)


def _base_scenarios(quick: bool) -> dict[str, Scenario]:
    from marginsim.experiments.scenarios import load_scenario

    out = {name: load_scenario(name) for name in SCENARIOS}
    if quick:  # the crash's fall is steps 240-270; the other two are short already
        out["crash"] = out["crash"].with_overrides(_QUICK_CRASH)
    return out


def _tasks(
    scenario: Scenario,
    name: str,
    policy_name: str,
    policy: dict[str, Any],
    replicates: int,
    **extra: Any,
) -> list[dict[str, Any]]:
    variant = scenario.with_overrides(policy_overrides(scenario, policy))
    return [
        {
            "scenario": variant.with_overrides({"run.seed": replicate_seed(scenario.run.seed, i)}),
            "scenario_name": name,
            "policy": policy_name,
            "replicate": i,
            **extra,
        }
        for i in range(replicates)
    ]


def _write(frame: pd.DataFrame, out: Path, stem: str) -> None:
    frame.to_parquet(out / f"{stem}.parquet", index=False)
    frame.to_csv(out / f"{stem}.csv", index=False)


def _summary_table(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    grouped = runs.groupby(["scenario_name", "policy"], sort=False)[metric]
    table = grouped.agg(["mean", "std", "min", "max", "count"]).reset_index()
    return table.rename(columns={"scenario_name": "scenario", "count": "runs"})


def _bar_figure(table: pd.DataFrame, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(dict.fromkeys(table["policy"]))
    scenarios = list(dict.fromkeys(table["scenario"]))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(len(scenarios), 1)
    x = np.arange(len(policies))
    for j, sc in enumerate(scenarios):
        part = table[table["scenario"] == sc].set_index("policy").reindex(policies)
        ax.bar(
            x + (j - (len(scenarios) - 1) / 2) * width,
            part["mean"].to_numpy(dtype=float),
            width,
            yerr=part["std"].fillna(0.0).to_numpy(dtype=float),
            label=sc,
            capsize=2,
        )
    ax.set_xticks(x, policies, rotation=20)
    ax.set_ylabel(METRICS[metric])
    ax.set_title(f"{METRICS[metric]} by liquidation policy (mean and s.d. over replicates)")
    ax.legend(title="scenario")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sweep_figure(sweep: pd.DataFrame, policy: str, parameter: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = sweep[sweep["policy"] == policy]
    shown = ["bad_debt", "liquidation_volume", "max_drawdown", "accounts_liquidated"]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.6))
    for ax, metric in zip(axes, shown, strict=True):
        for sc, rows in part.groupby("scenario_name", sort=False):
            mean = rows.groupby("value")[metric].mean()
            ax.plot(mean.index, mean.to_numpy(), marker="o", label=sc)
        ax.set_xlabel(parameter)
        ax.set_title(METRICS[metric], fontsize=9)
    axes[0].legend(title="scenario", fontsize=8)
    fig.suptitle(f"{policy}: sweep of {parameter}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def liquidation_designs_study(
    out: Path, *, quick: bool, workers: int | None = None, progress: bool | None = None
) -> Path:
    """Run the ``liquidation-designs`` study and write its tables, figures and report.

    Full: the three scenarios at their own length, 5 replicates per (scenario, policy), and
    the sweep of :data:`SWEEPS` on every scenario with 3 replicates. ``quick``: 1 replicate,
    ``crash`` cut to 280 steps (its fall is steps 240-270) with 500 noise traders, 1,000
    loopers and 500 perp traders, and the sweep on ``liquidation_hunt`` only with the lowest
    and highest value.

    Writes into ``out``: ``runs.parquet``/``.csv`` (one row per run: ``scenario_name``,
    ``policy``, ``replicate``, ``seed`` and the measures), ``table_<metric>.parquet``/``.csv``
    and ``fig_<metric>.png`` per measure (mean, s.d., min, max and runs per scenario and
    policy), ``sweep.parquet``/``.csv`` (``scenario_name``, ``policy``, ``parameter``,
    ``value``, ``replicate``, ``seed``, measures), ``sweep_<policy>.png`` and
    ``report.md``, which it returns.

    Args:
        out: Output folder (created if missing).
        quick: Run the small version.
        workers: Processes to run in (``None`` or 1: this process).
        progress: Progress bars (``None``: only on a terminal).

    Returns:
        Path of ``report.md``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bases = _base_scenarios(quick)
    replicates = 1 if quick else 5
    tasks = [
        task
        for name, scenario in bases.items()
        for policy_name, policy in POLICIES.items()
        for task in _tasks(scenario, name, policy_name, policy, replicates)
    ]
    runs = _execute(tasks, workers, progress, "liquidation-designs")
    _write(runs, out, "runs")
    tables = {}
    for metric in METRICS:
        tables[metric] = _summary_table(runs, metric)
        _write(tables[metric], out, f"table_{metric}")
        _bar_figure(tables[metric], metric, out / f"fig_{metric}.png")

    sweep_scenarios = {"liquidation_hunt": bases["liquidation_hunt"]} if quick else bases
    sweep_tasks = []
    for policy_name, (parameter, values) in SWEEPS.items():
        chosen = (values[0], values[-1]) if quick else values
        for value in chosen:
            policy = POLICIES[policy_name] | {parameter: value}
            for name, scenario in sweep_scenarios.items():
                sweep_tasks += _tasks(
                    scenario,
                    name,
                    policy_name,
                    policy,
                    1 if quick else 3,
                    parameter=parameter,
                    value=float(value),
                )
    sweep = _execute(sweep_tasks, workers, progress, "liquidation-designs sweep")
    _write(sweep, out, "sweep")
    for policy_name, (parameter, _) in SWEEPS.items():
        _sweep_figure(sweep, policy_name, parameter, out / f"sweep_{policy_name}.png")
    return _report(out, runs, tables, sweep, quick)


def _report(
    out: Path, runs: pd.DataFrame, tables: dict[str, pd.DataFrame], sweep: pd.DataFrame, quick: bool
) -> Path:
    lines = [
        f"# liquidation-designs{' (quick)' if quick else ''}",
        "",
        f"{len(runs)} comparison runs and {len(sweep)} sweep runs. Measures and policies: "
        "docs/policies.md. Mean over replicates (s.d. in the tables' `std` column).",
        "",
    ]
    for metric, table in tables.items():
        pivot = table.pivot(index="policy", columns="scenario", values="mean")
        pivot = pivot.reindex([p for p in POLICIES if p in pivot.index])
        lines += [
            f"## {METRICS[metric]}",
            "",
            _markdown(pivot),
            "",
            f"![{metric}](fig_{metric}.png)",
            "",
        ]
    lines += ["## Sweeps of each policy's main parameter", ""]
    for policy_name, (parameter, _) in SWEEPS.items():
        part = sweep[sweep["policy"] == policy_name]
        mean = part.groupby(["scenario_name", "value"])[
            ["bad_debt", "liquidation_volume", "max_drawdown", "accounts_liquidated"]
        ].mean()
        lines += [
            f"### {policy_name}: {parameter}",
            "",
            _markdown(mean.reset_index()),
            "",
            f"![{policy_name}](sweep_{policy_name}.png)",
            "",
        ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _markdown(frame: pd.DataFrame) -> str:
    frame = frame.reset_index() if frame.index.name is not None else frame
    cols = [str(c) for c in frame.columns]
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for values in frame.itertuples(index=False):
        cells = [f"{v:,.4g}" if isinstance(v, float) else str(v) for v in values]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
