"""Switching liquidation policy changes nothing in a seeded run until the policy first acts."""

import pandas as pd
import pytest

from marginsim.experiments.runner import run
from marginsim.experiments.scenarios import load_scenario

LENDING_POLICIES = {
    "dynamic": {"kind": "dynamic"},
    "gradual": {"kind": "gradual", "slices": 4},
    "dutch": {"kind": "gradual", "schedule": "dutch"},
    "predictive": {"kind": "predictive"},
    "circuit_breaker": {"kind": "circuit_breaker"},
}


def _compare(static, other):
    """Assert identical frames before the first policy event; return that step."""
    events = other.events["policy_events"]
    assert len(events), "the policy never acted: the test would prove nothing"
    first = int(events["step"].min())
    assert 0 < first < len(static.metrics)
    before = slice(0, first)
    pd.testing.assert_frame_equal(
        static.metrics.iloc[before].reset_index(drop=True),
        other.metrics.iloc[before].reset_index(drop=True),
    )
    for table in ("liquidations", "trades", "bad_debt"):
        a, b = static.events[table], other.events[table]
        pd.testing.assert_frame_equal(
            a[a["step"] < first].reset_index(drop=True),
            b[b["step"] < first].reset_index(drop=True),
        )
    # ... and the policy did change the run from then on.
    assert not static.metrics.equals(other.metrics)
    return first


@pytest.fixture(scope="module")
def hunt():
    scenario = load_scenario("liquidation_hunt")
    return scenario, run(scenario)


@pytest.mark.parametrize("name", list(LENDING_POLICIES))
def test_lending_policy_changes_nothing_before_it_acts(hunt, name):
    scenario, static = hunt
    assert "policy_events" not in static.events  # static: no policy, no table
    other = run(
        scenario.with_overrides({"protocols.thinlend.liquidation_policy": LENDING_POLICIES[name]})
    )
    _compare(static, other)


@pytest.mark.parametrize(
    "policy",
    [
        {"kind": "dynamic", "reference_volatility": 1.5},
        {"kind": "circuit_breaker", "threshold": 0.05},
    ],
    ids=["dynamic", "circuit_breaker"],
)
def test_perp_policy_changes_nothing_before_it_acts(policy):
    scenario = load_scenario("perp_crash").with_overrides({"run.steps": 400})
    static = run(scenario)
    venue = next(n for n, p in scenario.protocols.items() if p.kind == "perp")
    other = run(scenario.with_overrides({f"protocols.{venue}.liquidation_policy": policy}))
    first = _compare(static, other)
    assert first >= 300  # only the crash at step 360 (or its run-up) makes it act
