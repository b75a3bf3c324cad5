"""Network studies: the contagion window over average degree, and depeg contagion over k.

``contagion-window`` (:func:`contagion_window_study`) is a balance-sheet simulation in the
spirit of Gai and Kapadia (2010), cleared with the same Eisenberg-Noe and DebtRank code the
runs use (:mod:`marginsim.protocols.network`). ``n`` lending protocols each hold assets of 100:
a share ``theta`` are deposits in other protocols (interbank-style exposures along the edges
of a seeded random graph: protocol i deposited in j, so j owes i), the rest are external
assets (loans to outside borrowers). Each protocol's equity is ``gamma`` of its assets; its
external liabilities (outside depositors) make up the rest. One protocol, drawn at random,
loses all its external assets (an idiosyncratic loss, e.g. its borrowers' collateral
turning out worthless). The clearing vector then says who else defaults and in which wave.

For each average degree z in the sweep and each replicate: the graph, the exposure sizes
(each protocol's interbank assets split over its out-edges in proportion to lognormal
weights) and the shocked protocol are drawn from the replicate's ``network`` stream of
``SeedSequence(seed, spawn_key=(point, replicate))``, so any replicate can be replayed alone.

``depeg-contagion`` (:func:`depeg_contagion_study`) runs the ``depeg`` scenario with k
lending pools that accept the CDP stablecoin as collateral (k copies of its pool
``dailend``, each with the same four DAI-collateralised borrowers), for k = 0, 1, 2, ...: the
full agent-based model, so forced sales of DAI from every pool meet on the same thin book.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from marginsim.protocols.network import debtrank, eisenberg_noe, generate_topology
from marginsim.rng import RandomStreams

__all__ = [
    "WindowParams",
    "contagion_window",
    "contagion_window_study",
    "depeg_contagion",
    "depeg_contagion_study",
    "depeg_with_k_pools",
    "simulate_window_replicate",
]


# ===================================================================================== window
@dataclasses.dataclass(frozen=True)
class WindowParams:
    """Parameters of the contagion-window balance sheets.

    Attributes:
        n: Number of protocols.
        theta: Share of each protocol's assets deposited in other protocols.
        gamma: Equity as a share of assets.
        shock: Share of the shocked protocol's external assets lost.
        topology: Graph generator (see :func:`~marginsim.protocols.network.generate_topology`).
        exposure_sigma: Sigma of the lognormal weights that split a protocol's interbank assets
            over its out-edges (0: equal split).
    """

    n: int = 100
    theta: float = 0.2
    gamma: float = 0.04
    shock: float = 1.0
    topology: str = "erdos_renyi"
    exposure_sigma: float = 0.5


@dataclasses.dataclass(frozen=True)
class _Sheets:
    edges: list[tuple[int, int]]
    exposure: np.ndarray  # exposure[i, j]: i's deposit in j (j owes i)
    shocked: int
    liabilities: np.ndarray
    external_assets: np.ndarray  # after the shock
    external_liabilities: np.ndarray
    equity: np.ndarray


def _balance_sheets(params: WindowParams, avg_degree: float, rng: np.random.Generator) -> _Sheets:
    n, assets = params.n, 100.0
    edges = generate_topology(n, params.topology, avg_degree, rng)
    w = np.exp(params.exposure_sigma * rng.standard_normal(len(edges)))
    shocked = int(rng.integers(n))
    exposure = np.zeros((n, n))
    for (i, j), x in zip(edges, w, strict=True):
        exposure[i, j] = x
    row = exposure.sum(axis=1)
    has = row > 0
    exposure[has] *= (params.theta * assets / row[has])[:, None]
    liabilities = exposure.T.copy()  # L[j, i] = exposure[i, j]
    interbank_liabilities = liabilities.sum(axis=1)
    external_liabilities = np.maximum(assets * (1 - params.gamma) - interbank_liabilities, 0.0)
    e = assets - exposure.sum(axis=1)
    e[shocked] *= 1 - params.shock
    equity = np.maximum(assets - interbank_liabilities - external_liabilities, 0.0)
    return _Sheets(edges, exposure, shocked, liabilities, e, external_liabilities, equity)


def simulate_window_replicate(
    params: WindowParams, avg_degree: float, rng: np.random.Generator
) -> dict[str, float]:
    """One generated network, one shocked protocol, cleared.

    Returns:
        ``shocked``, ``edges``, ``defaults`` (protocols in default other than the shocked
        one), ``extent`` (that count / (n - 1)), ``spread`` (1 if any), ``waves`` (largest
        wave), ``systemic_loss`` (creditors' shortfall, all protocols, per unit of total
        assets) and ``debtrank`` (of the shocked protocol, on the deposit exposures with
        the initial equities).
    """
    sh = _balance_sheets(params, avg_degree, rng)
    result = eisenberg_noe(sh.liabilities, sh.external_assets, sh.external_liabilities)
    n = params.n
    defaults = int(result.defaulted.sum()) - int(result.defaulted[sh.shocked])
    return {
        "shocked": sh.shocked,
        "edges": len(sh.edges),
        "defaults": defaults,
        "extent": defaults / (n - 1),
        "spread": float(defaults > 0),
        "waves": int(result.wave.max()),
        "systemic_loss": float(result.losses.sum() / (n * 100.0)),
        "debtrank": debtrank(sh.exposure, sh.equity, [sh.shocked]).debtrank,
    }


def contagion_window(
    degrees: Sequence[float],
    replicates: int,
    seed: int = 0,
    params: WindowParams | None = None,
    progress: bool | None = False,
) -> pd.DataFrame:
    """Run :func:`simulate_window_replicate` over ``degrees`` x ``replicates``.

    Args:
        degrees: Average degrees to sweep.
        replicates: Replicates per degree.
        seed: Master seed; point k, replicate r uses ``SeedSequence(seed, spawn_key=(k,
            r))``'s ``network`` stream.
        params: Balance-sheet parameters.
        progress: Show a progress bar (``None``: only on a terminal).

    Returns:
        One row per replicate: ``avg_degree``, ``replicate`` and the keys of
        :func:`simulate_window_replicate`.
    """
    from tqdm.auto import tqdm

    params = params or WindowParams()
    rows = []
    disable = None if progress is None else not progress
    total = len(degrees) * replicates
    with tqdm(total=total, disable=disable, desc="contagion-window", unit="net") as bar:
        for k, z in enumerate(degrees):
            for r in range(replicates):
                ss = np.random.SeedSequence(seed, spawn_key=(k, r))
                rng = RandomStreams(ss).get("network")
                rows.append(
                    {"avg_degree": float(z), "replicate": r}
                    | simulate_window_replicate(params, float(z), rng)
                )
                bar.update(1)
    return pd.DataFrame(rows)


def _window_summary(table: pd.DataFrame) -> pd.DataFrame:
    g = table.groupby("avg_degree", sort=True)
    out = pd.DataFrame(
        {
            "replicates": g.size(),
            "frequency": g["spread"].mean(),
            "mean_extent": g["extent"].mean(),
            "extent_if_spread": g.apply(
                lambda d: d.loc[d["spread"] > 0, "extent"].mean(), include_groups=False
            ),
            "mean_waves": g["waves"].mean(),
            "mean_systemic_loss": g["systemic_loss"].mean(),
            "mean_debtrank": g["debtrank"].mean(),
        }
    ).reset_index()
    return out


def _plot_window(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(summary["avg_degree"], summary["frequency"], "o-", label="frequency of contagion")
    ax.plot(
        summary["avg_degree"],
        summary["extent_if_spread"],
        "s--",
        label="extent when it spreads (share of protocols)",
    )
    ax.set_xlabel("average degree (deposits per protocol)")
    ax.set_ylabel("share")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Contagion window: one protocol loses its external assets")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def contagion_window_study(
    out: Path, *, quick: bool, workers: int | None = None, progress: bool | None = None
) -> Path:
    """The ``contagion-window`` study (see the module docstring).

    Full: 100 protocols, degrees 0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 100 replicates each.
    Quick: 40 protocols, degrees 1, 4, 8, 10 replicates. Writes ``contagion_window.parquet``
    and ``.csv`` (one row per replicate), ``contagion_window_summary.parquet`` and ``.csv``
    (per degree: ``replicates``, ``frequency`` (share of replicates where at least one more
    protocol defaults), ``mean_extent``, ``extent_if_spread``, ``mean_waves``,
    ``mean_systemic_loss``, ``mean_debtrank``), ``contagion_window.png`` and
    ``example_network.png`` (one generated network at the middle degree, nodes coloured by
    their creditors' loss). Runs in this process (it takes seconds; ``workers`` unused).

    Returns:
        Path of ``contagion_window_summary.parquet``.
    """
    del workers
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if quick:
        params, degrees, reps = WindowParams(n=40), [1.0, 4.0, 8.0], 10
    else:
        params = WindowParams()
        degrees, reps = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0], 100
    table = contagion_window(degrees, reps, seed=0, params=params, progress=progress)
    summary = _window_summary(table)
    table.to_parquet(out / "contagion_window.parquet", index=False)
    table.to_csv(out / "contagion_window.csv", index=False)
    path = out / "contagion_window_summary.parquet"
    summary.to_parquet(path, index=False)
    summary.to_csv(out / "contagion_window_summary.csv", index=False)
    _plot_window(summary, out / "contagion_window.png")
    edges, nodes = _example_network(params, degrees[len(degrees) // 2])
    edges.to_parquet(out / "example_network_edges.parquet", index=False)
    nodes.to_parquet(out / "example_network_nodes.parquet", index=False)
    # The report's network drawing (imported here: matplotlib stays off the CLI's start).
    from marginsim.experiments.plots import plot_network

    plot_network(
        edges, nodes, out / "example_network.png", seed=1, title="contagion-window example"
    )
    return path


def _example_network(params: WindowParams, z: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Edge and node tables of one generated network (seed 1), cleared."""
    rng = RandomStreams(np.random.SeedSequence(1, spawn_key=(0, 0))).get("network")
    sh = _balance_sheets(params, z, rng)
    result = eisenberg_noe(sh.liabilities, sh.external_assets, sh.external_liabilities)
    names = [f"p{k}" for k in range(params.n)]
    edge_frame = pd.DataFrame(
        [(names[i], names[j], "collateral", float(sh.exposure[i, j])) for i, j in sh.edges],
        columns=["source", "target", "kind", "weight"],
    )
    node_frame = pd.DataFrame(
        {
            "node": names,
            "type": "lending",
            "bad_debt": result.losses,
            "defaulted": result.defaulted,
            "default_step": np.where(result.defaulted, 0, -1),
            "debtrank": [debtrank(sh.exposure, sh.equity, [k]).debtrank for k in range(params.n)],
            "default_wave": result.wave,
        }
    )
    return edge_frame, node_frame


# ===================================================================================== depeg
def depeg_with_k_pools(k: int, steps: int | None = None) -> Any:
    """The ``depeg`` scenario with ``k`` lending pools accepting DAI (copies of ``dailend``).

    Pool ``dailend_i`` (i = 0..k-1) has ``dailend``'s configuration and a copy of each of its
    explicit accounts (ids suffixed ``_i``); k = 0 leaves no lending pool at all (the CDP and
    its DAI holders only). Everything else, the seed included, is the scenario's.
    """
    from marginsim.config import Scenario
    from marginsim.experiments.scenarios import load_scenario

    base = load_scenario("depeg")
    data = base.model_dump(mode="json", by_alias=True, exclude_none=True)
    pool = data["protocols"].pop("dailend")
    accounts = [a for a in data["accounts"] if a.get("protocol") != "dailend"]
    pooled = [a for a in data["accounts"] if a.get("protocol") == "dailend"]
    for i in range(k):
        data["protocols"][f"dailend_{i}"] = pool
        for acc in pooled:
            accounts.append(acc | {"id": f"{acc['id']}_{i}", "protocol": f"dailend_{i}"})
    data["accounts"] = accounts
    data["name"] = f"depeg-k{k}"
    if steps is not None:
        data["run"]["steps"] = steps
    return Scenario(**data)


def _depeg_point(args: tuple[int, int | None]) -> dict[str, float]:
    from marginsim.experiments.runner import run

    k, steps = args
    result = run(depeg_with_k_pools(k, steps))
    m = result.metrics
    nodes = result.events["network_nodes"]
    lending = nodes[nodes["type"] == "lending"]
    liq = result.events["liquidations"]
    dai_mid = m["DAI-USDC_mid_price"] if "DAI-USDC_mid_price" in m else m["mid_price"]
    return {
        "k": k,
        "min_dai_mid": float(dai_mid.min()),
        "final_dai_mid": float(dai_mid.iloc[-1]),
        "lending_liquidations": int((liq["protocol"].str.startswith("dailend")).sum()),
        "lending_bad_debt": float(lending["bad_debt"].sum()),
        "lending_defaulted": int(lending["defaulted"].sum()),
        "contagion_reach": int(m["contagion_reach"].iloc[-1]),
        "protocols_defaulted": int(m["protocols_defaulted"].iloc[-1]),
        "systemic_loss": float(m["systemic_loss"].iloc[-1]),
        "max_debtrank_maker": float(m["debtrank_maker"].max()),
    }


def _map(
    fn: Callable[[Any], dict[str, float]],
    items: Iterable[Any],
    workers: int | None,
    progress: bool | None,
    desc: str,
) -> list[dict[str, float]]:
    from tqdm.auto import tqdm

    items = list(items)
    disable = None if progress is None else not progress
    if not workers or workers <= 1:
        return [fn(x) for x in tqdm(items, disable=disable, desc=desc)]
    # Mesa keeps models alive: one task per worker process, started fresh (spawn).
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, max_tasks_per_child=1
    ) as pool:
        return list(tqdm(pool.map(fn, items), total=len(items), disable=disable, desc=desc))


def depeg_contagion(
    ks: Sequence[int],
    steps: int | None = None,
    workers: int | None = None,
    progress: bool | None = False,
) -> pd.DataFrame:
    """Run :func:`depeg_with_k_pools` for each k; one row per k (see the study)."""
    rows = _map(_depeg_point, [(int(k), steps) for k in ks], workers, progress, "depeg-contagion")
    return pd.DataFrame(rows).sort_values("k", ignore_index=True)


def depeg_contagion_study(
    out: Path, *, quick: bool, workers: int | None = None, progress: bool | None = None
) -> Path:
    """The ``depeg-contagion`` study: the ``depeg`` scenario with k = 0..4 DAI-accepting pools.

    Quick: k = 0, 2 over 300 steps (the crash starts at step 60). Writes
    ``depeg_contagion.parquet`` / ``.csv`` (per k: ``min_dai_mid``, ``final_dai_mid``,
    ``lending_liquidations``, ``lending_bad_debt``, ``lending_defaulted``,
    ``contagion_reach``, ``protocols_defaulted``, ``systemic_loss``, ``max_debtrank_maker``)
    and ``depeg_contagion.png``.

    Returns:
        Path of ``depeg_contagion.parquet``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks, steps = ([0, 2], 300) if quick else ([0, 1, 2, 3, 4], None)
    table = depeg_contagion(ks, steps, workers, progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "depeg_contagion.parquet"
    table.to_parquet(path, index=False)
    table.to_csv(out / "depeg_contagion.csv", index=False)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(table["k"], table["min_dai_mid"], "o-")
    ax1.set_xlabel("lending pools accepting DAI (k)")
    ax1.set_ylabel("lowest DAI-USDC mid")
    ax2.bar(table["k"], table["lending_liquidations"])
    ax2.set_xlabel("lending pools accepting DAI (k)")
    ax2.set_ylabel("liquidations in the DAI pools")
    fig.suptitle("Depeg contagion: more protocols accepting the stablecoin")
    fig.tight_layout()
    fig.savefig(out / "depeg_contagion.png", dpi=120)
    plt.close(fig)
    return path
