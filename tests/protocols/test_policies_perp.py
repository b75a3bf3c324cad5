"""Liquidation policies of a perp venue: dynamic maintenance margin and the circuit breaker."""

import pytest

from marginsim.config import (
    CircuitBreakerPolicyConfig,
    DynamicMarginPolicyConfig,
    PerpConfig,
)
from marginsim.market.engine import OrderKind
from marginsim.protocols.policies import make_policy
from tests.protocols.test_perp import TIERS, USDC, long_10x, make_world


@pytest.fixture
def worlds():
    made = []

    def build(policy):
        w = make_world()
        w.venue.attach_policy(make_policy("perp", policy, 60.0))
        w.venue.update_policy(0)  # the first mark, 2,000
        made.append(w)
        return w

    yield build
    for w in made:
        w.check()


def test_dynamic_margin_scales_the_maintenance_margin(worlds):
    w = worlds(DynamicMarginPolicyConfig(kind="dynamic", max_step=0.5, max_multiplier=1.5))
    a, mm = long_10x(w)  # wallet 1,990 after the taker fee
    # Mark 1,810: margin balance 1,990 - 1,900 = 90 > static maintenance 18,100 * 0.4% = 72.4.
    w.mark(1810.0, step=1)
    assert w.venue.liquidatable().account.size == 0
    # The 9.5% fall pushes the forecast far up: m = 1 + 0.5 (the largest step and the bound).
    w.venue.update_policy(1)
    assert w.venue.policy.requirement_scale == 1.5
    assert w.venue.tiers.rates[:2] == (0.004 * 1.5, 0.005 * 1.5)
    # Maintenance 18,100 * 0.6% = 108.6 > 90: liquidatable now.
    found = w.venue.liquidatable()
    assert found.account.tolist() == [a]
    assert found.maintenance[0] == pytest.approx(108.6 * USDC)
    assert w.venue.maintenance_margin(a) == pytest.approx(108.6 * USDC)
    w.submit(1, OrderKind.LIMIT, 1806.0, 1000, mm, check=False)  # a bid for the engine's sale
    orders, settled = w.liquidate()
    assert settled == 1


def test_circuit_breaker_pauses_the_liquidation_engine(worlds):
    w = worlds(CircuitBreakerPolicyConfig(kind="circuit_breaker", threshold=0.05, pause_steps=2))
    a, mm = long_10x(w)
    w.mark(1805.0, step=1)  # -9.75%: below maintenance (40 < 72.2) and the breaker trips
    w.venue.update_policy(1)
    assert w.venue.liquidatable().account.tolist() == [a]  # still below maintenance
    orders, settled = w.liquidate()
    assert len(orders) == 0 and settled == 0 and orders.liquidated_accounts.size == 0
    w.mark(1805.0, step=2)
    w.venue.update_policy(2)
    assert len(w.liquidate()[0]) == 0
    w.mark(1805.0, step=3)
    w.venue.update_policy(3)
    w.submit(1, OrderKind.LIMIT, 1806.0, 1000, mm, check=False)
    orders, settled = w.liquidate()
    assert orders.liquidated_accounts.tolist() == [a] and settled == 1
    assert [(r[0], r[3]) for r in w.venue.policy.rows] == [(1, "pause"), (3, "resume")]


def test_perp_venues_reject_lending_only_policies():
    with pytest.raises(ValueError, match="does not match any of the expected tags"):
        PerpConfig(kind="perp", index_oracle="eth", liquidation_policy={"kind": "gradual"})
    with pytest.raises(ValueError, match="maintenance rate below its initial margin rate"):
        PerpConfig(
            kind="perp",
            index_oracle="eth",
            tiers=TIERS,
            liquidation_policy={"kind": "dynamic", "max_multiplier": 2.5},
        )
