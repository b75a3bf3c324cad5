"""Sweep designs, seeds and replay commands."""

from __future__ import annotations

import shlex

import numpy as np
import pytest

from marginsim.config import parse_override_value
from marginsim.experiments.scenarios import load_scenario
from marginsim.experiments.store import run_id
from marginsim.experiments.sweep import design_matrix, design_points, load_sweep, plan_sweep
from marginsim.model import MarginModel
from marginsim.rng import sweep_seed_sequence


def _spec(kind, parameters, **extra):
    data = {
        "name": "t",
        "base": "default",
        "overrides": {"run.steps": 5},
        "design": {"kind": kind, **extra.pop("design", {})},
        "parameters": parameters,
        **extra,
    }
    return load_sweep(data)


def test_grid_is_the_cartesian_product_last_parameter_fastest():
    spec = _spec(
        "grid",
        [
            {"path": "exogenous.volatility", "values": [0.5, 1.0]},
            {"path": "run.max_liquidation_rounds", "values": [1, 2, 3]},
        ],
    )
    # 2 x 3 = 6 points, the second parameter varying fastest.
    assert design_points(spec) == [
        {"exogenous.volatility": 0.5, "run.max_liquidation_rounds": 1},
        {"exogenous.volatility": 0.5, "run.max_liquidation_rounds": 2},
        {"exogenous.volatility": 0.5, "run.max_liquidation_rounds": 3},
        {"exogenous.volatility": 1.0, "run.max_liquidation_rounds": 1},
        {"exogenous.volatility": 1.0, "run.max_liquidation_rounds": 2},
        {"exogenous.volatility": 1.0, "run.max_liquidation_rounds": 3},
    ]


def test_zip_takes_the_kth_values_together():
    spec = _spec(
        "zip",
        [
            {"path": "exogenous.volatility", "values": [0.5, 1.0, 1.5]},
            {"path": "run.max_liquidation_rounds", "values": [1, 2, 3]},
        ],
    )
    assert design_points(spec) == [
        {"exogenous.volatility": 0.5, "run.max_liquidation_rounds": 1},
        {"exogenous.volatility": 1.0, "run.max_liquidation_rounds": 2},
        {"exogenous.volatility": 1.5, "run.max_liquidation_rounds": 3},
    ]


RANGES = [
    {"path": "exogenous.volatility", "low": 0.2, "high": 1.2},
    {"path": "exogenous.drift", "low": -0.5, "high": 0.5},
]


@pytest.mark.parametrize("kind", ["lhs", "sobol_sequence"])
def test_space_filling_designs_are_reproducible_and_inside_the_ranges(kind):
    spec = _spec(kind, RANGES, design={"points": 8}, master_seed=5)
    x = design_matrix(spec)
    assert x.shape == (8, 2)
    np.testing.assert_array_equal(
        x, design_matrix(_spec(kind, RANGES, design={"points": 8}, master_seed=5))
    )
    assert not np.array_equal(
        x, design_matrix(_spec(kind, RANGES, design={"points": 8}, master_seed=6))
    )
    assert ((x[:, 0] >= 0.2) & (x[:, 0] <= 1.2)).all()
    assert ((x[:, 1] >= -0.5) & (x[:, 1] <= 0.5)).all()
    if kind == "lhs":
        # A Latin hypercube puts exactly one point in each of the 8 strata of every axis.
        strata = np.floor((x - [0.2, -0.5]) / [1.0, 1.0] * 8).astype(int)
        for column in strata.T:
            assert sorted(column) == list(range(8))


def test_sobol_design_has_saltelli_size_and_morris_lies_on_the_level_grid():
    sobol = _spec("sobol", RANGES, design={"points": 8})
    # Saltelli without second order: N * (D + 2) = 8 * 4 rows.
    assert design_matrix(sobol).shape == (32, 2)
    morris = _spec("morris", RANGES, design={"points": 3, "levels": 4})
    x = design_matrix(morris)
    # 3 trajectories of D + 1 = 3 points; each value is low + k/3 * (high - low), k in 0..3.
    assert x.shape == (9, 2)
    k = (x[:, 0] - 0.2) / 1.0 * 3
    np.testing.assert_allclose(k, np.round(k), atol=1e-12)
    # Consecutive points of a trajectory differ in exactly one parameter.
    for t in range(3):
        steps = np.diff(x[3 * t : 3 * t + 3], axis=0)
        assert ((np.abs(steps) > 1e-12).sum(axis=1) == 1).all()


def test_integer_parameters_are_rounded():
    spec = _spec(
        "lhs",
        [{"path": "agents.noise.count", "low": 10, "high": 20, "integer": True}, RANGES[0]],
        design={"points": 5},
    )
    counts = [p["agents.noise.count"] for p in design_points(spec)]
    assert all(isinstance(c, int) and 10 <= c <= 20 for c in counts)


def test_replicate_seed_is_spawn_key_point_replicate():
    spec = _spec(
        "grid",
        [{"path": "exogenous.volatility", "values": [0.5, 1.0]}],
        replicates=3,
        master_seed=42,
    )
    plans = plan_sweep(spec)
    assert [(p.point, p.replicate) for p in plans] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (1, 1),
        (1, 2),
    ]
    plan = plans[4]  # point 1, replicate 1
    assert plan.scenario.run.seed == 42
    assert plan.scenario.run.spawn_key == (1, 1)
    model = MarginModel(plan.scenario)
    assert (model.streams.root.entropy, model.streams.root.spawn_key) == (42, (1, 1))
    # The same stream as passing SeedSequence(42, spawn_key=(1, 1)) explicitly.
    plain = plan.scenario.with_overrides({"run.spawn_key": []})
    explicit = MarginModel(plain, seed=sweep_seed_sequence(42, 1, 1))
    np.testing.assert_array_equal(model.index_path, explicit.index_path)
    assert not np.array_equal(model.index_path, MarginModel(plain).index_path)
    assert len({p.run_id for p in plans}) == 6


def test_no_spawn_key_means_the_plain_seed():
    scenario = load_scenario("default")
    assert scenario.run.spawn_key is None
    assert "spawn_key" not in scenario.to_toml()
    model = MarginModel(scenario.with_overrides({"run.steps": 5}))
    assert (model.streams.root.entropy, model.streams.root.spawn_key) == (scenario.run.seed, ())


def test_replay_command_rebuilds_the_same_scenario():
    spec = _spec(
        "lhs",
        [{"path": "exogenous.volatility", "low": 0.2, "high": 1.2}],
        design={"points": 3},
        replicates=2,
        master_seed=9,
    )
    for plan in plan_sweep(spec):
        argv = shlex.split(plan.replay)
        assert argv[:4] == ["marginsim", "run", "default", "--seed"]
        overrides = {"run.seed": int(argv[4])}
        for k, arg in enumerate(argv):
            if arg == "--set":
                key, _, value = argv[k + 1].partition("=")
                overrides[key] = parse_override_value(value)
        replayed = load_scenario("default").with_overrides(overrides)
        assert replayed == plan.scenario
        assert run_id(replayed) == plan.run_id


def test_shipped_example_sweeps_are_valid():
    from importlib import resources

    folder = resources.files("marginsim.experiments") / "sweeps"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".toml"))
    assert names == ["lending_sobol.toml", "quick.toml"]
    quick = load_sweep(str(folder / "quick.toml"))
    # 2 x 2 grid x 2 replicates.
    assert len(plan_sweep(quick)) == 8
    sobol = load_sweep(str(folder / "lending_sobol.toml"))
    # Saltelli: 16 * (3 + 2) points x 2 replicates.
    assert len(plan_sweep(sobol)) == 160
