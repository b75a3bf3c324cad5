"""End to end: in the basis scenario, basis arbitrageurs pull the perp mid to the spot mid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from marginsim.agents.basis import BasisArbitrageur
from marginsim.experiments.scenarios import builtin_scenarios, load_scenario
from marginsim.model import MarginModel


def _run(arbitrageurs: int | None) -> tuple[MarginModel, pd.DataFrame]:
    scenario = load_scenario("basis")
    if arbitrageurs is not None:
        scenario = scenario.with_overrides({"agents.basis_arbitrageurs.count": arbitrageurs})
    model = MarginModel(scenario, check_invariants=True)
    model.run()
    return model, model.metrics_frame()


def _basis(frame: pd.DataFrame) -> pd.Series:
    """Perp mid over spot mid minus 1, as the arbitrageurs read it (NaN when a book is
    one-sided)."""
    return frame["ETH-PERP_mid_price"] / frame["mid_price"] - 1.0


@pytest.fixture(scope="module")
def runs():
    return _run(None), _run(0)


def test_basis_is_listed_with_its_description():
    assert builtin_scenarios()["basis"].startswith("Basis arbitrage on a calm day")


def test_arbitrageurs_make_the_mean_absolute_basis_much_smaller(runs):
    (with_model, with_arbs), (_, without) = runs
    b_with, b_without = _basis(with_arbs), _basis(without)
    # Both books are two-sided in most steps, so the means are over most of the run.
    assert b_with.notna().mean() > 0.85 and b_without.notna().mean() > 0.85
    mean_with = float(np.nanmean(np.abs(b_with)))
    mean_without = float(np.nanmean(np.abs(b_without)))
    # Seed 11: about 31 bps without them, about 7 bps with them.
    assert mean_without > 15e-4
    assert mean_with < 0.5 * mean_without
    # The arbitrageurs traded: some hold a perp position against their spot.
    arbs = [t for t in with_model.traders if isinstance(t, BasisArbitrageur)]
    assert len(arbs) == 5
    positions = [
        int(with_model.protocols_view.perp_positions("perpx", np.array([a.holder]), a.perp)[0])
        for a in arbs
    ]
    assert any(p != 0 for p in positions)


def test_same_exogenous_path_with_and_without_arbitrageurs(runs):
    # The comparison is fair: the outside price is the same path in both runs.
    (_, with_arbs), (_, without) = runs
    pd.testing.assert_series_equal(with_arbs["index_price"], without["index_price"])
