"""Liquidation policies inside a lending pool: hand-computed slices, bonuses, pauses, terms."""

from fractions import Fraction

import numpy as np
import pytest

from marginsim.config import (
    CircuitBreakerPolicyConfig,
    DynamicMarginPolicyConfig,
    GradualPolicyConfig,
    LendingConfig,
    PredictivePolicyConfig,
    ReserveConfig,
)
from marginsim.protocols.lending import FixedPriceFeed, LendingPool, Refusal
from marginsim.protocols.policies import make_policy

USDC = 10**6
WETH = 10**9


@pytest.fixture
def make_pool():
    """Alice: 10 WETH supplied (threshold 0.8, bonus 5%), 15,000 USDC borrowed at ETH = 2,000.

    HF = 10 * 2,000 * 0.8 / 15,000 = 1.0667. Bob supplied 100,000 USDC; the liquidator holds
    50,000 USDC. Conservation is checked at teardown.
    """
    made = []

    def build(policy=None, borrow=15_000):
        kw = {} if policy is None else {"liquidation_policy": policy}
        cfg = LendingConfig(
            kind="lending",
            reserves={
                "USDC": ReserveConfig(price=1.0, ltv=0.75, liquidation_threshold=0.8),
                "WETH": ReserveConfig(
                    price="eth",
                    ltv=0.8,
                    liquidation_threshold=0.8,
                    liquidation_bonus=0.05,
                    protocol_share=0.1,
                ),
            },
            **kw,
        )
        feed = FixedPriceFeed({"eth": 2000.0})
        pool = LendingPool.standalone(cfg, {"USDC": 6, "WETH": 9}, feed, name="aave")
        pool.attach_policy(make_policy("aave", cfg.liquidation_policy, 60.0))
        ledger = pool.ledger
        h = {n: ledger.add_holder(n) for n in ("alice", "bob", "liquidator")}
        usdc, weth_id = ledger.asset_id("USDC"), ledger.asset_id("WETH")
        ledger.mint(h["alice"], weth_id, 10 * WETH, "endowment")
        ledger.mint(h["bob"], usdc, 100_000 * USDC, "endowment")
        ledger.mint(h["liquidator"], usdc, 50_000 * USDC, "endowment")
        assert pool.supply(h["bob"], "USDC", 100_000 * USDC).ok
        assert pool.supply(h["alice"], "WETH", 10 * WETH).ok
        assert pool.borrow(h["alice"], "USDC", borrow * USDC).ok
        made.append(pool)
        return pool, feed, h

    yield build
    for pool in made:
        pool.ledger.check_conservation()


def step(pool, feed, t, price):
    feed.prices["eth"] = price
    pool.step = t
    pool.update_policy(t)


def liquidate(pool, h, repay=50_000):
    return pool.liquidate(h["liquidator"], h["alice"], "USDC", "WETH", repay * USDC)


# ------------------------------------------------------------------------------ static
def test_static_policy_leaves_no_policy_attached(make_pool):
    pool, feed, h = make_pool()
    assert pool.policy is None
    step(pool, feed, 0, 1700.0)  # a no-op
    # HF = 13,600 / 15,000 = 0.9067 < 0.95: the whole debt at once, 15,000 * 1.05 / 1,700.
    res = liquidate(pool, h)
    assert res.ok and res.debt_repaid == 15_000 * USDC
    assert res.collateral_seized == 9_264_705_882


# ------------------------------------------------------------------------------ gradual
def test_gradual_twap_sells_equal_slices_one_per_step(make_pool):
    pool, feed, h = make_pool({"kind": "gradual", "slices": 4})
    step(pool, feed, 0, 1700.0)  # HF 0.9067: the schedule starts at step 0
    assert pool.policy.schedules[h["alice"]].start_step == 0
    # Slice 1 of 4: ceil(15,000 / 4) = 3,750 USDC (the static rule would allow all of it).
    # Seized: floor(3,750e6 * 1e9 * 1.05 / (1,700 * 1e6)) = floor(2,316,176,470.6) units.
    res = liquidate(pool, h)
    assert res.ok and res.debt_repaid == 3_750 * USDC
    assert res.collateral_seized == 2_316_176_470
    # The slice of this step is used up: a second call is refused and the scan leaves her out.
    again = liquidate(pool, h)
    assert not again.ok and again.code == Refusal.POLICY
    assert h["alice"] not in pool.liquidatable().holder.tolist()
    # Step 1: health re-checked: 7.68382353 WETH * 1,700 * 0.8 = 10,450 < 11,250 (HF 0.929);
    # slice 2: ceil(11,250 / 3) = 3,750, the same size.
    step(pool, feed, 1, 1700.0)
    assert h["alice"] in pool.liquidatable().holder.tolist()
    res = liquidate(pool, h, repay=1_000)  # a smaller call first, then the rest of the slice
    assert res.ok and res.debt_repaid == 1_000 * USDC
    res = liquidate(pool, h)
    assert res.ok and res.debt_repaid == 2_750 * USDC
    # Step 2: 5.36764706 WETH * 1,360 = 7,300 < 7,500 (HF 0.973): ceil(7,500 / 2) = 3,750.
    step(pool, feed, 2, 1700.0)
    res = liquidate(pool, h)
    assert res.ok and res.debt_repaid == 3_750 * USDC
    # Step 3: 3.0514 WETH * 1,360 = 4,150 > 3,750: healthy again, the schedule ends.
    step(pool, feed, 3, 1700.0)
    assert h["alice"] not in pool.policy.schedules
    assert liquidate(pool, h).code == Refusal.HEALTHY
    slices = [(r[0], r[3], r[4], r[5]) for r in pool.policy.rows]
    alice = h["alice"]
    assert slices == [
        (0, "slice", alice, 3_750 * USDC),
        (1, "slice", alice, 1_000 * USDC),
        (1, "slice", alice, 2_750 * USDC),
        (2, "slice", alice, 3_750 * USDC),
    ]


def test_gradual_dutch_bonus_rises_from_the_first_unhealthy_step(make_pool):
    pool, feed, h = make_pool(
        {
            "kind": "gradual",
            "slices": 4,
            "schedule": "dutch",
            "start_bonus": 0.0,
            "bonus_step": 0.01,
        }
    )
    step(pool, feed, 0, 1700.0)  # first seen unhealthy at step 0; nobody liquidates
    step(pool, feed, 1, 1700.0)
    step(pool, feed, 2, 1700.0)
    # Step 2: bonus 0 + 0.01 * 2 = 2%: 3,750e6 * 1e9 * 1.02 / (1,700e6) = 2,250,000,000 units.
    res = liquidate(pool, h)
    assert res.ok and res.debt_repaid == 3_750 * USDC
    assert res.collateral_seized == 2_250_000_000
    # The protocol's share of the bonus part: ceil(2.25e9 * 0.02 / 1.02 * 0.1) = 4,411,765.
    assert res.protocol_fee == 4_411_765
    assert pool.policy.bonus(20, 0, Fraction("0.05")) == Fraction("0.05")  # capped


# ------------------------------------------------------------------------------ predictive
def test_predictive_liquidates_a_healthy_account_early_smaller_and_cheaper(make_pool):
    pool, feed, h = make_pool(
        {"kind": "predictive", "trigger_probability": 0.5, "horizon_steps": 10}, borrow=15_600
    )
    step(pool, feed, 0, 2000.0)
    # HF = 16,000 / 15,600 = 1.0256. Forecast sigma = 0.05 over 10 steps: the trigger is
    # h* = exp(0.05 * Phi^-1(0.75)) = exp(0.0337245) = 1.0342996 > 1.0256.
    pool.policy.forecaster.variance = 0.05**2 / 10
    assert pool.policy.trigger_health() == pytest.approx(1.0342996, rel=1e-7)
    found = pool.liquidatable()
    assert found.holder.tolist() == [h["alice"]]
    # Early: at most ceil(15,600 * 0.1) = 1,560 USDC at a 1% bonus:
    # seized floor(1,560e6 * 1e9 * 1.01 / 2,000e6) = 787,800,000 units (0.7878 WETH), of
    # which the treasury gets ceil(787.8e6 * 0.01 / 1.01 * 0.1) = 780,000.
    res = liquidate(pool, h)
    assert res.ok and res.debt_repaid == 1_560 * USDC
    assert res.collateral_seized == 787_800_000
    assert res.protocol_fee == 780_000
    # Once per step: refused and no longer listed until the next step.
    assert liquidate(pool, h).code == Refusal.POLICY
    assert pool.liquidatable().holder.size == 0
    # With a calm forecast the same account is healthy and not at risk: refused.
    step(pool, feed, 1, 2000.0)
    pool.policy.forecaster.variance = 1e-10
    assert pool.liquidatable().holder.size == 0
    assert liquidate(pool, h).code == Refusal.POLICY
    assert [(r[3], r[5]) for r in pool.policy.rows] == [("early", 1_560 * USDC)]


# ------------------------------------------------------------------------------ breaker
def test_circuit_breaker_pauses_liquidations_and_optionally_borrows(make_pool):
    pool, feed, h = make_pool(
        {
            "kind": "circuit_breaker",
            "threshold": 0.1,
            "window_steps": 5,
            "pause_steps": 2,
            "pause_borrowing": True,
        }
    )
    step(pool, feed, 0, 2000.0)
    step(pool, feed, 1, 1700.0)  # -15% within the window: paused in steps 1 and 2
    assert pool.liquidatable().holder.size == 0
    res = liquidate(pool, h)
    assert not res.ok and res.code == Refusal.POLICY
    assert pool.borrow(h["bob"], "USDC", 1 * USDC).code == Refusal.POLICY
    pool.policy.config = pool.policy.config.model_copy(update={"pause_borrowing": False})
    assert pool.borrow(h["bob"], "USDC", 1 * USDC).ok  # without it, only liquidations pause
    step(pool, feed, 2, 1600.0)  # bad debt risk grows: still paused
    assert liquidate(pool, h).code == Refusal.POLICY
    step(pool, feed, 3, 1600.0)
    # Resumed: HF = 12,800 / 15,000 = 0.853: the whole debt, 15,000 * 1.05 / 1,600.
    assert pool.liquidatable().holder.tolist() == [h["alice"]]
    res = liquidate(pool, h)
    assert res.ok and res.collateral_seized == 9_843_750_000
    assert [(r[0], r[3]) for r in pool.policy.rows] == [(1, "pause"), (3, "resume")]


# ------------------------------------------------------------------------------ dynamic
def test_dynamic_margin_scales_thresholds_and_ltv(make_pool):
    cfg = {"kind": "dynamic", "max_step": 0.1, "max_multiplier": 1.5}
    pool, feed, h = make_pool(cfg)
    step(pool, feed, 0, 2000.0)
    assert pool.reserve("WETH").liquidation_threshold == Fraction("0.8")
    step(pool, feed, 1, 1900.0)  # a 5% fall: the target is far above 1.5, m = 1.1
    assert pool.policy.requirement_scale == 1.1
    weth = pool.reserve("WETH")
    assert weth.liquidation_threshold == Fraction(repr(0.8 / 1.1))
    assert weth.ltv == Fraction(repr(0.8 / 1.1))
    assert pool.reserve("USDC").ltv == Fraction(repr(0.75 / 1.1))
    # HF = 10 * 1,900 * (0.8 / 1.1) / 15,000 = 0.9212 (static: 1.0133).
    hf = pool.health_factors(np.array([h["alice"]]))[0]
    assert hf == pytest.approx(19_000 * 0.8 / 1.1 / 15_000, rel=1e-12)
    assert pool.liquidatable().holder.tolist() == [h["alice"]]
    assert liquidate(pool, h).ok
    # The multiplier falls back once the forecast calms down (80+ steps at 0.94 decay).
    for t in range(2, 200):
        step(pool, feed, t, 1900.0)
    assert pool.policy.requirement_scale == pytest.approx(1.0)
    assert pool.reserve("WETH").liquidation_threshold == Fraction(
        repr(0.8 / pool.policy.requirement_scale)
    )


def test_flash_loan_failure_restores_the_policy_state(make_pool):
    pool, feed, h = make_pool({"kind": "gradual", "slices": 4})
    step(pool, feed, 0, 1700.0)

    def fail():
        assert liquidate(pool, h).ok
        raise RuntimeError("the sale failed")

    loan = pool.flash_loan(h["liquidator"], "USDC", 1 * USDC, fail)
    assert not loan.ok
    assert pool.policy.rows == []
    # The reverted slice does not count: the whole first slice is still available.
    assert liquidate(pool, h).debt_repaid == 3_750 * USDC


def test_policy_config_errors_name_the_field():
    with pytest.raises(ValueError, match="min_multiplier must keep every liquidation threshold"):
        LendingConfig(
            kind="lending",
            reserves={"WETH": ReserveConfig(price="eth", ltv=0.8, liquidation_threshold=0.9)},
            liquidation_policy=DynamicMarginPolicyConfig(kind="dynamic", min_multiplier=0.8),
        )
    with pytest.raises(ValueError, match="none"):
        LendingConfig(
            kind="lending",
            reserves={"USDC": ReserveConfig(price=1.0)},
            liquidation_policy=CircuitBreakerPolicyConfig(kind="circuit_breaker"),
        )
    with pytest.raises(ValueError, match="garch_alpha \\+ garch_beta must be < 1"):
        PredictivePolicyConfig(kind="predictive", garch_alpha=0.5, garch_beta=0.5)
    with pytest.raises(ValueError, match="slices"):
        GradualPolicyConfig(kind="gradual", slices=0)


def test_scenario_override_errors_name_the_dotted_policy_field():
    from marginsim.config import ScenarioError
    from marginsim.experiments.scenarios import load_scenario

    hunt = load_scenario("liquidation_hunt")
    with pytest.raises(ScenarioError) as err:
        hunt.with_overrides(
            {
                "protocols.thinlend.liquidation_policy.kind": "gradual",
                "protocols.thinlend.liquidation_policy.slices": 0,
            }
        )
    # The union's tag ("gradual") is not part of the path the user sees.
    assert err.value.problems == [
        (
            "protocols.thinlend.liquidation_policy.slices",
            "Input should be greater than or equal to 1; got 0",
        )
    ]
