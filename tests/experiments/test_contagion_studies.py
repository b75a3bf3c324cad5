"""The network studies: contagion-window and depeg-contagion (quick versions)."""

import numpy as np
import pandas as pd
import pytest

from marginsim.experiments.studies import get_study
from marginsim.experiments.studies.contagion import (
    WindowParams,
    contagion_window,
    depeg_with_k_pools,
    simulate_window_replicate,
)
from marginsim.rng import RandomStreams


def test_window_replicate_against_a_hand_cleared_star():
    # n = 3, theta = 0.2, gamma = 0.04, full shock, equal split (sigma 0). With average degree
    # 2 = n - 1 every ordered pair is an edge, so each protocol deposits 10 in each other one:
    # L = 10 off the diagonal, external assets 80 (0 for the shocked one), external
    # liabilities 96 - 20 = 76, pbar = 96.
    # Round 1: the shocked node s has 0 + 10 + 10 = 20 < 96 -> wave 1; re-solved, p_s = 20
    # (Pi[s, j] = 10/96 of it to each other node).
    # Round 2: each other node has 80 + 10 + 20 * 10/96 = 92.083 < 96 -> wave 2; with all
    # three in default: p_o = 80 + (10/96)(p_o + p_s), p_s = (10/96)(2 p_o) ->
    # p_o (1 - 10/96 - 200/9216) = 80 -> p_o = 91.5194..., p_s = 20 p_o / 96 = 19.0665...
    params = WindowParams(n=3, exposure_sigma=0.0)
    rng = RandomStreams(np.random.SeedSequence(0, spawn_key=(0, 0))).get("network")
    stats = simulate_window_replicate(params, 2.0, rng)
    assert stats["edges"] == 6
    assert stats["defaults"] == 2 and stats["extent"] == 1.0 and stats["waves"] == 2
    p_o = 80 / (1 - 10 / 96 - 200 / 9216)
    p_s = 20 * p_o / 96
    assert stats["systemic_loss"] == pytest.approx((3 * 96 - 2 * p_o - p_s) / 300, rel=1e-12)


def test_window_is_reproducible_and_replayable_alone():
    table = contagion_window([1.0, 4.0], 3, seed=5, params=WindowParams(n=20))
    again = contagion_window([1.0, 4.0], 3, seed=5, params=WindowParams(n=20))
    pd.testing.assert_frame_equal(table, again)
    # Point 1, replicate 2 alone gives the same row.
    rng = RandomStreams(np.random.SeedSequence(5, spawn_key=(1, 2))).get("network")
    alone = simulate_window_replicate(WindowParams(n=20), 4.0, rng)
    row = table[(table["avg_degree"] == 4.0) & (table["replicate"] == 2)].iloc[0]
    assert {k: row[k] for k in alone} == pytest.approx(alone)


def test_contagion_window_quick_study_writes_its_outputs(tmp_path):
    path = get_study("contagion-window").load()(tmp_path, quick=True, workers=None, progress=False)
    summary = pd.read_parquet(path)
    assert summary["avg_degree"].tolist() == [1.0, 4.0, 8.0]
    assert summary["replicates"].tolist() == [10, 10, 10]
    table = pd.read_parquet(tmp_path / "contagion_window.parquet")
    assert summary["frequency"].tolist() == pytest.approx(
        table.groupby("avg_degree")["spread"].mean().tolist()
    )
    for name in ("contagion_window.png", "example_network.png", "contagion_window.csv"):
        assert (tmp_path / name).stat().st_size > 0
    edges = pd.read_parquet(tmp_path / "example_network_edges.parquet")
    assert list(edges.columns) == ["source", "target", "kind", "weight"]


def test_depeg_with_k_pools_copies_the_pool_and_its_accounts():
    sc = depeg_with_k_pools(2, steps=10)
    lending = [n for n, p in sc.protocols.items() if p.kind == "lending"]
    assert lending == ["dailend_0", "dailend_1"]
    ids = [a.id for a in sc.accounts if a.protocol in lending]
    assert ids == [f"dai-{j}_{i}" for i in range(2) for j in range(4)]
    assert not [n for n, p in depeg_with_k_pools(0).protocols.items() if p.kind == "lending"]


def test_depeg_contagion_quick_study(tmp_path):
    path = get_study("depeg-contagion").load()(tmp_path, quick=True, workers=None, progress=False)
    table = pd.read_parquet(path)
    assert table["k"].tolist() == [0, 2]
    # Without a DAI-accepting pool nothing is liquidated there and the maker has nobody
    # exposed to it (DebtRank 0); with two pools their DAI borrowers are liquidated.
    assert table.loc[0, "lending_liquidations"] == 0
    assert table.loc[0, "max_debtrank_maker"] == 0.0
    assert table.loc[1, "lending_liquidations"] > 0
    assert table.loc[1, "max_debtrank_maker"] > 0.0
    assert (tmp_path / "depeg_contagion.png").stat().st_size > 0
