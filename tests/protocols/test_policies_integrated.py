"""The integrated cross-protocol monitoring policy on a hand-built two-protocol account.

Pools P and Q lend USDC against WETH (oracle 1,000; threshold 0.85, bonus 5%) on one ledger.
Holder h: 1 WETH in P against 500 USDC (HF 1.7) and 1 WETH in Q against 800 USDC (HF 1.0625).
Holder g: 1 WETH in P against 700 USDC only (HF 1.2143). P runs ``integrated`` with threshold
1.55, min_protocols 2, early_close_factor 0.25, early_bonus 0.02.
"""

import math

import numpy as np
import pytest

from marginsim.config import (
    IntegratedPolicyConfig,
    LendingConfig,
    ReserveConfig,
    ScenarioError,
)
from marginsim.experiments.scenarios import load_scenario
from marginsim.ledger import AssetSpec, Ledger
from marginsim.model import MarginModel
from marginsim.protocols.lending import FixedPriceFeed, LendingPool, Refusal
from marginsim.protocols.policies import IntegratedLiquidation, make_policy

USDC = 10**6
WETH = 10**9


def reference_health(pools, holders):
    """Independent reference: per holder, a Python loop over exact per-account reads."""
    health, owed_in = [], []
    for h in holders:
        c = d = 0.0
        n = 0
        for pool in pools:
            a = pool.account_data(int(h))
            if a.debt_value > 0:
                c, d, n = c + a.collateral_value, d + a.debt_value, n + 1
        health.append(c / d if n else math.inf)
        owed_in.append(n)
    return np.array(health), np.array(owed_in)


def _config(policy=None):
    weth = ReserveConfig(
        price="eth",
        ltv=0.8,
        liquidation_threshold=0.85,
        liquidation_bonus=0.05,
        protocol_share=0.0,
        borrowable=False,
    )
    extra = {} if policy is None else {"liquidation_policy": policy}
    return LendingConfig(
        kind="lending", reserves={"USDC": ReserveConfig(price=1.0), "WETH": weth}, **extra
    )


@pytest.fixture
def net():
    cfg_p = _config(
        {"kind": "integrated", "threshold": 1.55, "early_close_factor": 0.25, "early_bonus": 0.02}
    )
    cfg_q = _config()
    decimals = {"USDC": 6, "WETH": 9}
    assets = [AssetSpec("USDC", 6), AssetSpec("WETH", 9)]
    assets += LendingPool.derived_assets("P", cfg_p, decimals)
    assets += LendingPool.derived_assets("Q", cfg_q, decimals)
    ledger = Ledger(assets)
    feed = FixedPriceFeed({"eth": 1000.0})
    P, Q = LendingPool(ledger, "P", cfg_p, feed), LendingPool(ledger, "Q", cfg_q, feed)
    policy = make_policy("P", cfg_p.liquidation_policy, 60.0)
    assert isinstance(policy, IntegratedLiquidation)
    P.attach_policy(policy)
    h, g, lp, liq = (ledger.add_holder(n) for n in ("h", "g", "lp", "liq"))
    usdc, weth = ledger.asset_id("USDC"), ledger.asset_id("WETH")
    ledger.mint(lp, usdc, 20_000 * USDC, "endowment")
    ledger.mint(liq, usdc, 10_000 * USDC, "endowment")
    ledger.mint(h, weth, 2 * WETH, "endowment")
    ledger.mint(g, weth, 1 * WETH, "endowment")
    for pool in (P, Q):
        assert pool.supply(lp, "USDC", 10_000 * USDC).ok
        assert pool.supply(h, "WETH", WETH).ok
    assert P.supply(g, "WETH", WETH).ok
    assert P.borrow(h, "USDC", 500 * USDC).ok
    assert Q.borrow(h, "USDC", 800 * USDC).ok
    assert P.borrow(g, "USDC", 700 * USDC).ok
    policy.bind_network(lambda holders: reference_health((P, Q), holders))
    yield P, Q, policy, {"h": h, "g": g, "liq": liq}
    ledger.check_conservation()


def test_an_account_healthy_here_but_weak_across_the_network_is_deleveraged_early(net):
    P, Q, policy, who = net
    h, g, liq = who["h"], who["g"], who["liq"]
    assert P.health_factors([h, g]).tolist() == pytest.approx([1.7, 850 / 700], rel=1e-15)
    # h: H = (1,000 + 1,000) / (500 + 800) = 1.5385 < 1.55, owes in 2 pools: at risk.
    # g: H = 1,000 / 700 = 1.4286 < 1.55 but owes in 1 pool only: not at risk.
    assert policy.at_risk(np.array([h, g])).tolist() == [True, False]
    assert P.liquidatable().holder.tolist() == [h]
    q = P.liquidation_quote(h, "USDC", "WETH")
    # ceil(500e6 * 0.25) = 125e6 at the early bonus 2%; quoting records nothing.
    assert (q.refusal, q.max_repay_units, float(q.bonus), q.early) == (None, 125 * USDC, 0.02, True)
    r = P.liquidate(liq, h, "USDC", "WETH", 10**12)
    # 125e6 repaid; seized floor(125e6 * 1e9 * 1.02 / (1,000 * 1e6)) = 127,500,000 WETH units.
    assert r.ok and (r.debt_repaid, r.collateral_seized) == (125 * USDC, 127_500_000)
    assert policy.rows == [(0, "P", "integrated", "early", h, 125e6)]
    # Once per step: a second early call in the same step is refused.
    again = P.liquidate(liq, h, "USDC", "WETH", 10**12)
    assert not again.ok and again.code == Refusal.POLICY
    assert len(P.liquidatable()) == 0
    # Now H = (872.5 + 1,000) / (375 + 800) = 1.5936 >= 1.55: not at risk, next step too.
    P.step = 1
    assert policy.at_risk(np.array([h])).tolist() == [False]
    assert len(P.liquidatable()) == 0
    assert P.liquidation_quote(h, "USDC", "WETH").refusal.startswith(f"account {h} is healthy")


def test_q_alone_never_sees_the_integrated_view_and_unhealthy_accounts_keep_static_terms(net):
    P, Q, policy, who = net
    h = who["h"]
    assert len(Q.liquidatable()) == 0  # Q has no policy: HF 1.0625 is fine there
    # The price falls to 800: h's HF in P = 800 * 0.85 / 500 = 1.36 (early again: H = 1.231),
    # g's = 680 / 700 = 0.971 < 1: static terms (close factor 50%, reserve bonus 5%).
    P.prices.prices["eth"] = 800.0
    q = P.liquidation_quote(who["g"], "USDC", "WETH")
    assert (q.max_repay_units, float(q.bonus), q.early) == (350 * USDC, 0.05, False)
    assert sorted(P.liquidatable().holder.tolist()) == sorted([h, who["g"]])


def test_without_a_network_the_policy_is_static_and_its_source_is_not_state(net):
    P, Q, policy, who = net
    state = policy.snapshot_state()
    assert "_source" not in state  # a flash-loan snapshot must not deep-copy the model
    policy.restore_state(state)
    assert policy.at_risk(np.array([who["h"]])).tolist() == [True]  # still bound
    policy._source = None
    assert len(P.liquidatable()) == 0
    assert P.liquidation_quote(who["h"], "USDC", "WETH").refusal is not None


def test_config_is_validated_with_the_dotted_field():
    with pytest.raises(ValueError, match="threshold"):
        IntegratedPolicyConfig(kind="integrated", threshold=0.0)
    with pytest.raises(ValueError, match="min_protocols"):
        IntegratedPolicyConfig(kind="integrated", min_protocols=0)
    sc = load_scenario("contagion")
    with pytest.raises(ScenarioError) as err:
        sc.with_overrides(
            {
                "protocols.midlend.liquidation_policy.kind": "integrated",
                "protocols.midlend.liquidation_policy.early_close_factor": 1.5,
            }
        )
    assert err.value.problems == [
        (
            "protocols.midlend.liquidation_policy.early_close_factor",
            "Input should be less than or equal to 1; got 1.5",
        )
    ]
    # A perp venue takes no integrated policy (lending only).
    with pytest.raises(ScenarioError) as err:
        load_scenario("perp_crash").with_overrides(
            {"protocols.perpx.liquidation_policy.kind": "integrated"}
        )
    assert err.value.problems[0][0] == "protocols.perpx.liquidation_policy"


def test_the_model_binds_the_contagion_monitor_and_it_matches_the_accounts_frame():
    sc = load_scenario("contagion").with_overrides(
        {"protocols.midlend.liquidation_policy.kind": "integrated"}
    )
    model = MarginModel(sc)
    policy = model.lending["midlend"].policy
    assert isinstance(policy, IntegratedLiquidation)
    for _ in range(61):  # through the bridge failure and the cascade at step 60
        model.step()
        frame = model.contagion.accounts_frame()
        health, owed_in = model.contagion.combined_health(frame["holder"].to_numpy())
        np.testing.assert_array_equal(health, frame["combined_health"].to_numpy())
        np.testing.assert_array_equal(owed_in, frame["protocols"].to_numpy())
    ref_h, ref_n = reference_health(
        model.lending.values(), np.arange(model.ledger.n_holders, dtype=np.int64)
    )
    got_h, got_n = model.contagion.combined_health(
        np.arange(model.ledger.n_holders, dtype=np.int64)
    )
    np.testing.assert_array_equal(got_n, ref_n)
    np.testing.assert_allclose(got_h, ref_h, rtol=1e-12)
    assert policy.at_risk(np.arange(model.ledger.n_holders)).sum() == int(
        ((ref_n >= 2) & (ref_h < 1.1)).sum()
    )
