"""Liquidation policies on their own: volatility forecasts, requirement rule, trigger, breaker."""

import math

import numpy as np
import pytest

from marginsim.config import (
    CircuitBreakerPolicyConfig,
    DynamicMarginPolicyConfig,
    GradualPolicyConfig,
    PredictivePolicyConfig,
    StaticPolicyConfig,
)
from marginsim.protocols.policies import (
    CircuitBreaker,
    DynamicMargin,
    GradualLiquidation,
    PredictiveLiquidation,
    VolatilityForecaster,
    crossing_probability,
    ewma_variance,
    garch_variance,
    make_policy,
    step_multiplier,
)

PRICES = [100.0, 101.0, 99.0, 102.0]
R = [math.log(101 / 100), math.log(99 / 101), math.log(102 / 99)]
V0 = 1e-4


# ------------------------------------------------------------------------------ forecasts
def test_ewma_forecast_matches_the_unrolled_recursion():
    f = VolatilityForecaster("ewma", V0, ewma_lambda=0.9)
    for p in PRICES:
        f.observe(p)
    # Unrolled: v3 = lam^3 v0 + (1 - lam) (lam^2 r1^2 + lam r2^2 + r3^2), with
    # r1 = ln 1.01 = 0.00995033, r2 = ln(99/101) = -0.02000067, r3 = ln(102/99) = 0.02985296:
    # 0.729e-4 + 0.1 * (0.81 * 9.9009e-5 + 0.9 * 4.00027e-4 + 8.91199e-4) = 2.06042e-4.
    expected = 0.9**3 * V0 + 0.1 * (0.81 * R[0] ** 2 + 0.9 * R[1] ** 2 + R[2] ** 2)
    assert f.variance == pytest.approx(expected, rel=1e-14)
    assert f.variance == pytest.approx(2.06042e-4, rel=1e-5)
    # A random walk's variance over k steps.
    assert f.horizon_variance(5) == pytest.approx(5 * expected, rel=1e-14)
    assert ewma_variance(2.0, 3.0, 0.5) == 0.5 * 2.0 + 0.5 * 9.0


def test_garch_forecast_uses_variance_targeting_and_reverts():
    f = VolatilityForecaster("garch", V0, garch_alpha=0.1, garch_beta=0.8)
    assert f.omega == pytest.approx(0.1 * V0, rel=1e-15)  # (1 - 0.1 - 0.8) * v_ref
    for p in PRICES[:3]:
        f.observe(p)
    # v1 = 1e-5 + 0.1 * 9.9009e-5 + 0.8 * 1e-4 = 9.99009e-5;
    # v2 = 1e-5 + 0.1 * 4.00027e-4 + 0.8 * 9.99009e-5 = 1.299234e-4.
    v1 = 1e-5 + 0.1 * R[0] ** 2 + 0.8 * V0
    v2 = 1e-5 + 0.1 * R[1] ** 2 + 0.8 * v1
    assert f.variance == pytest.approx(v2, rel=1e-14)
    assert f.variance == pytest.approx(1.299234e-4, rel=1e-6)
    assert garch_variance(2.0, 3.0, 0.5, 0.1, 0.8) == 0.5 + 0.9 + 1.6
    # Over 3 steps: sum_i (v_ref + 0.9^i (v2 - v_ref)) for i = 0, 1, 2.
    expected = sum(V0 + 0.9**i * (v2 - V0) for i in range(3))
    assert f.horizon_variance(3) == pytest.approx(expected, rel=1e-14)


def test_forecaster_skips_missing_prices():
    f = VolatilityForecaster("ewma", V0, ewma_lambda=0.9)
    for p in (100.0, None, math.nan, -1.0, 101.0):
        f.observe(p)
    # One return, 100 -> 101, the invalid prices ignored.
    assert f.variance == pytest.approx(0.9 * V0 + 0.1 * R[0] ** 2, rel=1e-14)
    assert f.last_price == 101.0


# ------------------------------------------------------------------------------ requirement
def test_step_multiplier_bounds_and_max_step():
    assert step_multiplier(1.0, 3.0, 1.0, 1.5, 0.1) == 1.1  # capped by the step
    assert step_multiplier(1.45, 3.0, 1.0, 1.5, 0.1) == 1.5  # capped by the bound
    assert step_multiplier(1.3, 0.2, 1.0, 1.5, 0.1) == pytest.approx(1.2)  # falls by <= 0.1
    assert step_multiplier(1.05, 0.2, 1.0, 1.5, 0.1) == 1.0  # to the lower bound
    assert step_multiplier(1.2, 1.25, 1.0, 1.5, 0.1) == 1.25  # within one step: the target


def test_dynamic_margin_rises_by_max_step_to_the_bound_and_records_each_change():
    cfg = DynamicMarginPolicyConfig(
        kind="dynamic", reference_volatility=0.8, max_step=0.1, max_multiplier=1.3
    )
    policy = DynamicMargin("aave", 60.0, cfg)
    # v_ref = 0.8^2 * 60 / 31,536,000 = 1.21766e-6 per step.
    assert policy.forecaster.reference_variance == pytest.approx(0.64 * 60 / 31_536_000)
    policy.observe(0, 2000.0)  # first price: no return, forecast = v_ref, target 1
    assert policy.requirement_scale == 1.0 and policy.rows == []
    # A 5% fall: v = 0.94 v_ref + 0.06 ln(0.95)^2 = 1.5901e-4, ratio sqrt(v / v_ref) = 11.4.
    policy.observe(1, 1900.0)
    assert policy.target() == pytest.approx(
        math.sqrt((0.94 * 1.21766e-6 + 0.06 * 0.0026310) / 1.21766e-6), rel=1e-4
    )
    assert policy.requirement_scale == 1.1
    policy.observe(2, 1900.0)
    policy.observe(3, 1900.0)
    assert policy.requirement_scale == 1.3  # 1.2, then the bound 1.3
    policy.observe(4, 1900.0)
    assert [(r[0], r[3], r[5]) for r in policy.rows] == [
        (1, "requirement", 1.1),
        (2, "requirement", pytest.approx(1.2)),
        (3, "requirement", 1.3),
    ]


def test_dynamic_margin_with_calm_prices_never_acts():
    policy = DynamicMargin("aave", 60.0, DynamicMarginPolicyConfig(kind="dynamic"))
    for t in range(100):
        policy.observe(t, 2000.0)  # no move: the forecast decays below v_ref, target < 1
    assert policy.requirement_scale == 1.0 and policy.rows == []


# ------------------------------------------------------------------------------ predictive
def test_crossing_probability_reflection_principle():
    # HF = e^0.1 and sigma sqrt(k) = 0.1: P = 2 Phi(-1) = 0.31731050786291415.
    p = crossing_probability(np.array([math.exp(0.1), 1.0, 0.8, np.inf, np.nan]), 0.05, 4)
    assert p[0] == pytest.approx(0.31731050786291415, rel=1e-12)
    assert p.tolist()[1:] == [1.0, 1.0, 0.0, 0.0]


def test_predictive_trigger_health_inverts_the_crossing_probability():
    cfg = PredictivePolicyConfig(
        kind="predictive", trigger_probability=0.31731050786291415, horizon_steps=4
    )
    policy = PredictiveLiquidation("aave", 60.0, cfg)
    policy.forecaster.variance = 0.05**2  # sigma = 0.05 per step, sigma sqrt(4) = 0.1
    assert policy.trigger_health() == pytest.approx(math.exp(0.1), rel=1e-9)
    holders = np.array([1, 2, 3, 4])
    hf = np.array([0.99, 1.05, 1.2, np.inf])
    mask = policy.liquidatable_mask(0, holders, hf, hf < 1.0)
    assert mask.tolist() == [True, True, False, False]  # e^0.1 = 1.105


# ------------------------------------------------------------------------------ breaker
def test_circuit_breaker_pauses_for_n_steps_and_restarts_its_window():
    cfg = CircuitBreakerPolicyConfig(
        kind="circuit_breaker", threshold=0.05, window_steps=3, pause_steps=4
    )
    cb = CircuitBreaker("aave", 60.0, cfg)
    # 100 -> 97 -> 96 -> 95.5: the largest move over the last 3 steps is 4.5% (no trip);
    # 94 is 6% below 100, which left the 3-step window, and 3.1% below 97: no trip.
    for t, p in enumerate([100.0, 97.0, 96.0, 95.5, 94.0]):
        cb.observe(t, p)
        assert not cb.paused(t)
    cb.observe(5, 90.0)  # 90 / 96 - 1 = -6.25% within the window: trips
    assert [cb.paused(t) for t in range(5, 10)] == [True, True, True, True, False]
    assert cb.pauses == [(5, 9, pytest.approx(0.0625))]
    for t in range(6, 9):
        cb.observe(t, 50.0)  # ignored during the pause
    cb.observe(9, 80.0)  # resumes; a fresh window has only this price: no trip
    assert not cb.paused(9)
    cb.observe(10, 79.0)
    assert not cb.paused(10)
    assert [(r[0], r[3]) for r in cb.rows] == [(5, "pause"), (9, "resume")]
    flagged = np.array([True, False])
    assert cb.liquidatable_mask(6, np.array([1, 2]), np.array([0.9, 1.1]), flagged).tolist() == [
        False,
        False,
    ]
    assert cb.terms(6, 1, 0.9, "USDC", 10, 0).refusal is not None
    assert cb.terms(9, 1, 0.9, "USDC", 10, 0).refusal is None


def test_make_policy_kinds():
    assert make_policy("p", StaticPolicyConfig(), 60.0) is None
    assert isinstance(
        make_policy("p", GradualPolicyConfig(kind="gradual"), 60.0), GradualLiquidation
    )
    assert isinstance(
        make_policy("p", DynamicMarginPolicyConfig(kind="dynamic"), 60.0), DynamicMargin
    )
