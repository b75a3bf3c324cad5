"""Exogenous drivers: exact paths against plain-loop references, statistics, scripts, replay."""

import math

import numpy as np
import pandas as pd
import pytest

from marginsim.market.exogenous import (
    DRIVERS,
    GBM,
    SECONDS_PER_YEAR,
    Garch,
    JumpDiffusion,
    Replay,
    ScriptedPath,
    apply_fundamental_jumps,
    make_driver,
)

DAY = 86400.0


def rng(seed: int = 1) -> np.random.Generator:
    return np.random.default_rng(seed)


def log_returns(path: np.ndarray) -> np.ndarray:
    return np.diff(np.log(path))


# ----------------------------------------------------------------------------- GBM
def test_gbm_matches_a_plain_loop_reference():
    drift, vol, step = 0.1, 0.8, 60.0
    path = GBM(2000.0, drift=drift, volatility=vol).generate(500, step, rng(3))
    dt = step / (365 * 86400)
    z = rng(3).standard_normal(500)
    expected = [2000.0]
    log_s = math.log(2000.0)
    for k in range(500):
        log_s += (drift - vol * vol / 2) * dt + vol * math.sqrt(dt) * z[k]
        expected.append(math.exp(log_s))
    assert path.dtype == np.float64 and path.shape == (501,)
    assert path[0] == 2000.0
    np.testing.assert_allclose(path, expected, rtol=1e-11)


def test_gbm_without_volatility_grows_at_the_drift_exactly():
    path = GBM(100.0, drift=0.365, volatility=0.0).generate(4, DAY, rng())
    np.testing.assert_allclose(path, 100.0 * np.exp(0.001 * np.arange(5)), rtol=1e-14)


def test_gbm_log_return_variance_is_volatility_squared_dt():
    path = GBM(1.0, volatility=0.8).generate(200_000, DAY, rng(5))
    var = log_returns(path).var()
    # Relative standard error of a sample variance is sqrt(2/n) = 0.3%; allow 2%.
    assert var == pytest.approx(0.64 / 365, rel=0.02)


def test_gbm_with_zero_steps_is_just_the_initial_value():
    assert GBM(5.0).generate(0, 60.0, rng()).tolist() == [5.0]


def test_drivers_draw_only_from_the_given_generator():
    np.random.seed(123)
    untouched = np.random.random()
    np.random.seed(123)
    for model, params in [("gbm", {}), ("jump", {}), ("garch", {})]:
        make_driver(model, initial=1.0, **params).generate(100, 60.0, rng())
    assert np.random.random() == untouched


@pytest.mark.parametrize("model", ["gbm", "jump", "garch"])
def test_same_seed_same_path_other_seed_other_path(model):
    driver = make_driver(model, initial=2000.0)
    a = driver.generate(1000, 60.0, rng(9))
    b = driver.generate(1000, 60.0, rng(9))
    c = driver.generate(1000, 60.0, rng(10))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_gbm_validation_message_names_parameter_rule_and_value():
    with pytest.raises(ValueError) as err:
        GBM(2000.0, volatility=-0.1)
    assert str(err.value) == (
        "The 'volatility' parameter of GBM must be a finite float >= 0. Got -0.1 instead."
    )
    with pytest.raises(ValueError, match="'initial' parameter of GBM must be a finite float > 0"):
        GBM(0.0)
    with pytest.raises(ValueError, match="'drift' parameter of GBM"):
        GBM(1.0, drift=float("nan"))


def test_generate_validates_its_arguments():
    with pytest.raises(ValueError, match="'n_steps' parameter of GBM.generate must be an int"):
        GBM(1.0).generate(-1, 60.0, rng())
    with pytest.raises(ValueError, match="'step_seconds' parameter of GBM.generate"):
        GBM(1.0).generate(10, 0.0, rng())
    with pytest.raises(ValueError, match="'rng' parameter of GBM.generate must be a numpy"):
        GBM(1.0).generate(10, 60.0, None)


def test_extreme_parameters_that_overflow_are_reported():
    with pytest.raises(ValueError, match="non-positive or non-finite value"):
        GBM(1.0, drift=1e6, volatility=0.0).generate(10, 365 * DAY, rng())


# ----------------------------------------------------------------------------- jumps
def test_jump_diffusion_matches_a_plain_loop_reference():
    d = JumpDiffusion(
        100.0, drift=0.05, volatility=0.6, jump_intensity=2000.0, jump_mean=-0.03, jump_std=0.02
    )
    n, step = 300, 3600.0
    path = d.generate(n, step, rng(4))
    dt = step / (365 * 86400)
    g = rng(4)
    z, counts, zj = g.standard_normal(n), g.poisson(2000.0 * dt, n), g.standard_normal(n)
    assert counts.sum() > 10  # the reference exercises jumps
    kappa = math.exp(-0.03 + 0.02**2 / 2) - 1
    log_s, expected = math.log(100.0), [100.0]
    for k in range(n):
        jump = counts[k] * -0.03 + math.sqrt(counts[k]) * 0.02 * zj[k]
        log_s += (0.05 - 0.18 - 2000.0 * kappa) * dt + 0.6 * math.sqrt(dt) * z[k] + jump
        expected.append(math.exp(log_s))
    np.testing.assert_allclose(path, expected, rtol=1e-11)


def test_jump_diffusion_without_jumps_is_the_gbm_path():
    a = JumpDiffusion(100.0, drift=0.1, volatility=0.5, jump_intensity=0.0).generate(
        1000, 60.0, rng(2)
    )
    b = GBM(100.0, drift=0.1, volatility=0.5).generate(1000, 60.0, rng(2))
    np.testing.assert_allclose(a, b, rtol=1e-14)


def test_jump_counts_are_poisson_with_the_intensity():
    # No diffusion and fixed jump sizes: each step's log return reveals its jump count.
    d = JumpDiffusion(1.0, volatility=0.0, jump_intensity=365.0, jump_mean=-0.1, jump_std=0.0)
    r = log_returns(d.generate(100_000, DAY, rng(8)))
    counts = (r + 365.0 * d.kappa / 365) / -0.1
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-6)
    # Poisson(1): mean 1 and variance 1; standard errors 0.003 and 0.005.
    assert counts.mean() == pytest.approx(1.0, abs=0.02)
    assert counts.var() == pytest.approx(1.0, abs=0.03)


def test_jump_drift_is_compensated():
    # E[log return] = (drift - vol^2/2 - lambda*kappa) dt + lambda*jump_mean*dt. Without the
    # compensator the mean would be lower by 12 * kappa / 365 = 1.45e-3 (10 standard errors).
    d = JumpDiffusion(
        1.0, drift=0.0, volatility=0.8, jump_intensity=12.0, jump_mean=-0.05, jump_std=0.1
    )
    r = log_returns(d.generate(100_000, DAY, rng(6)))
    expected = (-0.32 - 12 * d.kappa + 12 * -0.05) / 365
    assert d.kappa == pytest.approx(math.exp(-0.045) - 1, rel=1e-15)
    assert r.mean() == pytest.approx(expected, abs=6e-4)


# ----------------------------------------------------------------------------- GARCH
def test_garch_matches_a_plain_loop_reference():
    g = Garch(50.0, drift=0.2, volatility=0.7, alpha=0.1, beta=0.85)
    n, step = 400, 60.0
    path = g.generate(n, step, rng(12))
    dt = step / (365 * 86400)
    z = rng(12).standard_normal(n)
    omega = 0.05 * 0.49 * dt
    h, log_s, expected = 0.49 * dt, math.log(50.0), [50.0]
    for k in range(n):
        eps = math.sqrt(h) * z[k]
        log_s += 0.2 * dt - h / 2 + eps
        expected.append(math.exp(log_s))
        h = omega + 0.1 * eps * eps + 0.85 * h
    assert g.omega(dt) == pytest.approx(omega, rel=1e-15)
    np.testing.assert_allclose(path, expected, rtol=1e-11)


def test_garch_unconditional_variance_and_volatility_clustering():
    r = log_returns(
        Garch(1.0, volatility=0.8, alpha=0.08, beta=0.9).generate(400_000, DAY, rng(21))
    )
    assert r.var() == pytest.approx(0.64 / 365, rel=0.1)
    r_gbm = log_returns(GBM(1.0, volatility=0.8).generate(400_000, DAY, rng(21)))

    def acf1(x):
        x = np.abs(x) - np.abs(x).mean()
        return float((x[1:] * x[:-1]).mean() / x.var())

    assert acf1(r) > 0.08  # clustering (about 0.15 for these parameters)
    assert abs(acf1(r_gbm)) < 0.01


def test_garch_without_volatility_is_the_drift_alone():
    path = Garch(10.0, drift=0.365, volatility=0.0).generate(3, DAY, rng())
    np.testing.assert_allclose(path, 10.0 * np.exp(0.001 * np.arange(4)), rtol=1e-14)


def test_garch_needs_alpha_plus_beta_below_one():
    with pytest.raises(ValueError, match=r"alpha \+ beta < 1.*Got alpha=0.1, beta=0.9 instead"):
        Garch(1.0, alpha=0.1, beta=0.9)
    with pytest.raises(ValueError, match="'alpha' parameter of Garch"):
        Garch(1.0, alpha=-0.1)


# ----------------------------------------------------------------------------- scripted
def test_scripted_values_start_at_step_one_and_hold_after_the_list():
    path = ScriptedPath(100.0, values=[101.0, 99.5, 98.0]).generate(6, 60.0)
    assert path.tolist() == [100.0, 101.0, 99.5, 98.0, 98.0, 98.0, 98.0]


def test_scripted_values_longer_than_the_run_are_cut():
    assert ScriptedPath(1.0, values=[2.0, 3.0, 4.0]).generate(2, 60.0).tolist() == [1.0, 2.0, 3.0]


def test_segments_move_geometrically_and_end_exactly():
    path = ScriptedPath(
        100.0, segments=[{"steps": 2, "change": -0.19}, {"steps": 2.0, "change": 0.21}]
    ).generate(6, 60.0)
    # 100 -> 90 -> 81 (x0.9 per step), then 81 -> 89.1 -> 98.01 (x1.1 per step), then hold.
    assert path.tolist() == pytest.approx([100.0, 90.0, 81.0, 89.1, 98.01, 98.01, 98.01], rel=1e-14)


def test_a_45_percent_fall_over_a_day_of_minutes():
    path = ScriptedPath(2000.0, segments=[{"steps": 1440, "change": -0.45}]).generate(1500, 60.0)
    assert path[1440] == pytest.approx(1100.0, rel=1e-14)
    assert path[720] == pytest.approx(2000.0 * math.sqrt(0.55), rel=1e-13)
    assert (np.diff(path[:1441]) < 0).all() and (path[1440:] == path[1440]).all()
    r = log_returns(path[:1441])
    np.testing.assert_allclose(r, math.log(0.55) / 1440, rtol=1e-9)  # linear in log price


def test_segments_beyond_the_run_are_cut():
    path = ScriptedPath(100.0, segments=[{"steps": 4, "change": 0.4641}]).generate(2, 60.0)
    assert path.tolist() == pytest.approx([100.0, 110.0, 121.0], rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of the 'values' and 'segments'"),
        ({"values": [1.0], "segments": [{"steps": 1, "change": 0.1}]}, "exactly one"),
        ({"values": []}, "'values' parameter of ScriptedPath must be a non-empty list"),
        ({"values": [1.0, 0.0]}, r"finite floats > 0. Got 'values\[1\] = 0.0' instead"),
        ({"values": "123"}, "'values' parameter"),
        ({"segments": []}, "'segments' parameter of ScriptedPath must be a non-empty list"),
        ({"segments": [{"steps": 0, "change": 0.1}]}, r"'segments\[0\]'"),
        ({"segments": [{"steps": 1.5, "change": 0.1}]}, r"'segments\[0\]'"),
        (
            {"segments": [{"steps": 1, "change": 0.1}, {"steps": 1, "change": -1.0}]},
            r"'segments\[1\]' parameter of ScriptedPath must be a dict",
        ),
        ({"segments": [{"steps": 1, "change": 0.1, "extra": 1}]}, r"'segments\[0\]'"),
    ],
)
def test_scripted_path_rejects_bad_scripts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScriptedPath(100.0, **kwargs)


# ----------------------------------------------------------------------------- replay
@pytest.fixture
def price_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": np.arange(6),
            "price": [10.0, 11.0, 12.0, 13.0, 14.0, 15.0],
            "bad": [1.0, 2.0, np.nan, -1.0, 5.0, 6.0],
            "name": list("abcdef"),
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_replay_reads_rows_from_start_row_scaled(tmp_path, price_frame, suffix):
    path = tmp_path / f"prices{suffix}"
    if suffix == ".csv":
        price_frame.to_csv(path, index=False)
    else:
        price_frame.to_parquet(path)
    replay = Replay(path, start_row=2, scale=2.0)
    assert replay.n_rows == 6
    assert replay.generate(3, 60.0).tolist() == [24.0, 26.0, 28.0, 30.0]
    assert Replay(str(path)).generate(0, 60.0).tolist() == [10.0]


def test_replay_with_too_few_rows_names_both_numbers(tmp_path, price_frame):
    path = tmp_path / "p.csv"
    price_frame.to_csv(path, index=False)
    with pytest.raises(
        ValueError,
        match=r"has 4 rows from start_row 2 \(6 rows in all\), but a "
        r"run of 5 steps needs n_steps \+ 1 = 6",
    ):
        Replay(path, start_row=2).generate(5, 60.0)


def test_replay_names_the_row_of_a_nan_or_non_positive_price(tmp_path, price_frame):
    path = tmp_path / "p.parquet"
    price_frame.to_parquet(path)
    with pytest.raises(
        ValueError,
        match=r"column 'bad': the price at data row 2 \(0-based\) is "
        r"nan",
    ):
        Replay(path, column="bad").generate(3, 60.0)
    with pytest.raises(ValueError, match="data row 3 .* is -1.0"):
        Replay(path, column="bad", start_row=3).generate(1, 60.0)
    assert Replay(path, column="bad").generate(1, 60.0).tolist() == [1.0, 2.0]


def test_replay_missing_file_and_column_errors(tmp_path, price_frame):
    with pytest.raises(ValueError, match="must be an existing file.*no such file"):
        Replay(tmp_path / "missing.csv")
    path = tmp_path / "p.csv"
    price_frame.to_csv(path, index=False)
    with pytest.raises(ValueError) as err:
        Replay(path, column="close")
    assert "no column 'close'" in str(err.value)
    assert "['time', 'price', 'bad', 'name']" in str(err.value)
    with pytest.raises(ValueError, match="column 'name' must be numeric"):
        Replay(path, column="name")
    other = tmp_path / "p.txt"
    other.write_text("price\n1\n")
    with pytest.raises(ValueError, match="must name a CSV"):
        Replay(other)
    with pytest.raises(ValueError, match="'scale' parameter of Replay must be a finite float > 0"):
        Replay(path, scale=0.0)
    with pytest.raises(ValueError, match="'start_row' parameter of Replay must be an int >= 0"):
        Replay(path, start_row=-1)


# ----------------------------------------------------------------------------- factory
def test_make_driver_builds_each_model(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("price\n1\n2\n")
    built = {
        "gbm": make_driver("gbm", initial=1.0, drift=0.1, volatility=0.2),
        "jump": make_driver("jump", initial=1.0, jump_intensity=3.0),
        "garch": make_driver("garch", initial=1.0, alpha=0.05, beta=0.9),
        "path": make_driver("path", initial=1.0, values=[2.0]),
        "replay": make_driver("replay", path=str(csv)),
    }
    assert {m: type(d) for m, d in built.items()} == DRIVERS
    assert built["gbm"].drift == 0.1 and built["jump"].jump_intensity == 3.0
    assert built["replay"].generate(1, 60.0).tolist() == [1.0, 2.0]


def test_make_driver_rejects_unknown_models_and_parameters():
    with pytest.raises(ValueError) as err:
        make_driver("heston", initial=1.0)
    assert str(err.value) == (
        "The 'model' parameter of make_driver must be one of ['garch', 'gbm', 'jump', 'path', "
        "'replay']. Got 'heston' instead."
    )
    with pytest.raises(
        ValueError,
        match=r"GBM \(model 'gbm'\) does not take the parameter\(s\) "
        r"\['alpha'\]; it takes \['initial', 'drift', "
        r"'volatility'\]",
    ):
        make_driver("gbm", initial=1.0, alpha=0.1)


def test_seconds_per_year_is_a_365_day_year():
    assert SECONDS_PER_YEAR == 31_536_000


# ----------------------------------------------------------------------------- shocks
def test_fundamental_jumps_compose_from_their_step_on():
    path = np.array([100.0, 100.0, 100.0, 100.0, 100.0, 100.0])
    out = apply_fundamental_jumps(path, [2, 4, 4], [-0.1, -0.1, 0.5])
    np.testing.assert_allclose(out, [100.0, 100.0, 90.0, 90.0, 121.5, 121.5], rtol=1e-15)
    assert (path == 100.0).all()  # the input is not modified
    np.testing.assert_array_equal(apply_fundamental_jumps(path, [], []), path)


def test_fundamental_jumps_validate_inputs():
    path = np.ones(5)
    with pytest.raises(ValueError, match="as many sizes as steps"):
        apply_fundamental_jumps(path, [1], [])
    with pytest.raises(ValueError, match=r"'steps\[0\]' parameter .* must be an int in \[0, 4\]"):
        apply_fundamental_jumps(path, [5], [0.1])
    with pytest.raises(ValueError, match=r"'sizes\[0\]' parameter .* must be a float > -1"):
        apply_fundamental_jumps(path, [1], [-1.0])
