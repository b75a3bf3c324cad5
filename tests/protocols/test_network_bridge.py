"""Bridge: delayed mint, backing, failure; receipt-token and bridge config validation."""

from fractions import Fraction

import pytest

from marginsim.config import BridgeConfig, Scenario, ScenarioError
from marginsim.experiments.scenarios import load_scenario
from marginsim.ledger import AssetSpec, Ledger
from marginsim.protocols.bridge import Bridge

WETH = 10**9


@pytest.fixture
def bridge():
    ledger = Ledger([AssetSpec("WETH", 9), AssetSpec("wWETH", 9)])
    b = Bridge(ledger, BridgeConfig(name="portal", asset="WETH", wrapped="wWETH", delay_steps=3))
    alice = ledger.add_holder("alice")
    ledger.mint(alice, b.asset, 10 * WETH, "endowment")
    yield b, ledger, alice
    ledger.check_conservation()


def test_deposit_is_minted_after_the_delay(bridge):
    b, ledger, alice = bridge
    assert b.deposit(alice, 4 * WETH, step=5)
    assert ledger.balance(alice, b.asset) == 6 * WETH
    assert b.locked_units == 4 * WETH
    for step in (5, 6, 7):  # released at 5 + 3 = 8, not before
        assert b.tick(step) == 0
    assert ledger.balance(alice, b.wrapped) == 0
    assert b.tick(8) == 4 * WETH
    assert ledger.balance(alice, b.wrapped) == 4 * WETH
    assert b.backing() == 1
    assert not b.deposit(alice, 7 * WETH, step=9)  # only 6 left: refused, nothing moves
    assert ledger.balance(alice, b.asset) == 6 * WETH


def test_failure_moves_the_lock_and_lowers_the_backing(bridge):
    b, ledger, alice = bridge
    b.genesis(alice, 8 * WETH)  # 8 locked, 8 wrapped
    assert b.deposit(alice, 2 * WETH, step=0)  # 10 locked, 2 pending
    # 25% of 10 = 2.5 WETH lost; free lock = 7.5 - 2 pending = 5.5 per 8 wrapped.
    assert b.fail(0.25, step=1) == 2_500_000_000
    assert ledger.balance(b.exploiter_holder, b.asset) == 2_500_000_000
    assert b.backing() == Fraction(55, 80)
    assert b.tick(10) == 0  # a failed bridge mints nothing more
    assert not b.deposit(alice, 1, step=11)
    assert b.events_frame()["event"].tolist() == ["deposit", "failure"]


def _contagion() -> dict:
    return load_scenario("contagion").model_dump(mode="json", by_alias=True, exclude_none=True)


def test_a_pool_cannot_accept_its_own_receipt_token():
    data = _contagion()
    data["protocols"]["midlend"]["reserves"]["aUSDC.midlend"] = {"price": 1.0}
    with pytest.raises(ScenarioError) as err:
        Scenario(**data)
    assert (
        "protocols.midlend.reserves.aUSDC.midlend",
        "a pool cannot accept its own receipt token",
    ) in err.value.problems


def test_bridge_and_bridge_shock_are_checked():
    data = _contagion()
    data["network"]["bridges"].append({"name": "leaky", "asset": "WETH", "wrapped": "USDC"})
    data["shocks"].append({"step": 1, "kind": "bridge_failure", "bridge": "nowhere", "size": 0.5})
    with pytest.raises(ScenarioError) as err:
        Scenario(**data)
    fields = dict(err.value.problems)
    assert fields["network.bridges[1].wrapped"] == "must have the decimals of WETH (9), got 6"
    assert fields["shocks[1].bridge"] == "unknown bridge 'nowhere'; bridges are ['portal', 'leaky']"
    data["shocks"][-1]["size"] = 1.5
    expected = r"shocks\[1\]: a bridge_failure shock needs .bridge. and a size in \(0, 1\]"
    with pytest.raises(ScenarioError, match=expected):
        Scenario(**data)


def test_receipt_token_decimals_follow_the_underlying():
    sc = load_scenario("contagion")
    assert sc.asset_decimals("aUSDC.corelend") == 6
    assert sc.receipt_tokens()["aUSDC.midlend"] == ("midlend", "USDC")


def test_a_list_item_failing_its_own_check_is_reported_not_retried_forever():
    # A sell_order shock without an instrument fails inside the list item: the second,
    # repaired validation pass has nothing to drop and must not recurse.
    with pytest.raises(ScenarioError) as err:
        Scenario(shocks=[{"step": 1, "kind": "sell_order", "size": 1.0}])
    assert err.value.problems == [
        ("shocks[0]", "a sell_order shock needs 'instrument' and a non-zero 'size'")
    ]
