"""Vaults of the CDP protocol: deposits, draws, repayments, the stability fee, safety."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from marginsim.config import AuctionConfig, CdpConfig
from marginsim.ledger import AssetSpec, Ledger
from marginsim.protocols.cdp import SECONDS_PER_YEAR, CdpProtocol

WETH = 10**9  # units per WETH (9 decimals)
DAI = 10**6  # units per DAI (6 decimals)


class Feed:
    """A price feed the test sets by hand: oracle name -> price (None: no price yet)."""

    def __init__(self, **prices: float | None) -> None:
        self.prices = dict(prices)

    def price(self, ref: str | float) -> float | None:
        return float(ref) if isinstance(ref, float) else self.prices.get(ref)


@dataclasses.dataclass
class World:
    ledger: Ledger
    cdp: CdpProtocol
    feed: Feed
    alice: int
    bob: int
    carol: int


_WORLDS: list[World] = []


def make_world(eth: float | None = 2000.0, weth_each: int = 100, **cdp: object) -> World:
    ledger = Ledger([AssetSpec("WETH", 9), AssetSpec("DAI", 6)])
    params: dict[str, object] = {
        "kind": "cdp",
        "collateral": "WETH",
        "stablecoin": "DAI",
        "price": "eth",
        "liquidation_ratio": 1.5,
        "stability_fee": 0.0,
        "auction": AuctionConfig(),
    }
    params.update(cdp)
    feed = Feed(eth=eth)
    protocol = CdpProtocol(ledger, "maker", CdpConfig(**params), feed)
    holders = [ledger.add_holder(n) for n in ("alice", "bob", "carol")]
    for h in holders:
        ledger.mint(h, 0, weth_each * WETH, reason="endowment")
    world = World(ledger, protocol, feed, *holders)
    _WORLDS.append(world)
    return world


@pytest.fixture(autouse=True)
def _conservation_after_every_test():
    _WORLDS.clear()
    yield
    for world in _WORLDS:
        world.ledger.check_conservation()
        world.cdp.check_invariants()


def fingerprint(w: World) -> tuple:
    """Everything a refused action must leave untouched."""
    led = w.ledger
    return (
        led.balances.copy().tolist(),
        led.minted.tolist(),
        led.burned.tolist(),
        len(led.journal),
        w.cdp.vaults()[["holder", "collateral", "debt"]].to_dict("list"),
        w.cdp.auctions().to_csv(),
        w.cdp.totals(),
        w.cdp.rate,
        len(w.cdp.liquidations()),
        len(w.cdp.bad_debt()),
    )


def dai(w: World, holder: int) -> int:
    return w.ledger.balance(holder, w.cdp.stable_asset)


def weth(w: World, holder: int) -> int:
    return w.ledger.balance(holder, w.cdp.collateral_asset)


# ------------------------------------------------------------------------ construction
def test_registers_its_holders_and_takes_max_resets_from_config():
    w = make_world()
    names = [w.ledger.holder_name(h) for h in range(3)]
    assert names == ["maker:vaults", "maker:auctions", "maker:surplus"]
    assert w.cdp.max_resets == w.cdp.config.auction.max_resets == 3


def test_protocol_accounts_and_unknown_holders_are_programming_errors():
    w = make_world()
    with pytest.raises(ValueError, match="'maker:vaults' is an account of the protocol"):
        w.cdp.open_or_deposit(w.cdp.vaults_holder, 1)
    with pytest.raises(ValueError, match="unknown holder id 99"):
        w.cdp.draw(99, 1)


# ------------------------------------------------------------------------ vault actions
def test_deposit_and_draw_lock_collateral_and_mint_stablecoin():
    w = make_world()
    r = w.cdp.open_or_deposit(w.alice, 10 * WETH)
    assert (r.ok, r.amount_units, r.collateral_units, r.debt_units) == (
        True,
        10 * WETH,
        10 * WETH,
        0,
    )
    r = w.cdp.draw(w.alice, 10_000 * DAI)
    assert (r.ok, r.reason, r.debt_units) == (True, "", 10_000 * DAI)
    assert weth(w, w.alice) == 90 * WETH
    assert weth(w, w.cdp.vaults_holder) == 10 * WETH
    assert dai(w, w.alice) == 10_000 * DAI
    assert w.ledger.supply(w.cdp.stable_asset) == 10_000 * DAI
    assert w.ledger.journal[-1][3] == "vault draw"
    # 10 WETH * 2000 = 20,000 DAI of collateral for 10,000 DAI of debt: 2.0.
    v = w.cdp.vault(w.alice)
    assert (v.collateral_units, v.debt_units, v.collateralisation) == (10 * WETH, 10**10, 2.0)


def test_draw_is_refused_exactly_above_the_liquidation_ratio():
    w = make_world()
    w.cdp.open_or_deposit(w.alice, 10 * WETH)
    # Value 20,000 DAI = 2e10 units; the most debt is 2e10 / 1.5 = 13,333.333333 DAI:
    # 1.5 * 13_333_333_334 = 20_000_000_001 > 2e10 is refused, 13_333_333_333 is allowed.
    before = fingerprint(w)
    r = w.cdp.draw(w.alice, 13_333_333_334)
    assert not r.ok and "liquidation ratio" in r.reason and r.amount_units == 0
    assert fingerprint(w) == before
    assert w.cdp.draw(w.alice, 13_333_333_333).ok


def test_debt_ceiling_limits_new_debt_of_all_vaults_together():
    w = make_world(debt_ceiling=15_000.0)
    for h in (w.alice, w.bob):
        w.cdp.open_or_deposit(h, 10 * WETH)
    assert w.cdp.draw(w.alice, 10_000 * DAI).ok
    assert w.cdp.draw(w.bob, 5_000 * DAI).ok  # total 15,000 DAI: exactly the ceiling
    before = fingerprint(w)
    r = w.cdp.draw(w.bob, 1)
    assert not r.ok and "debt ceiling 15000000000 units" in r.reason
    assert fingerprint(w) == before
    w.cdp.repay(w.alice, 1 * DAI)
    assert w.cdp.draw(w.bob, 1 * DAI).ok


def test_a_ceiling_below_one_unit_allows_no_debt():
    w = make_world(debt_ceiling=1e-7)  # 0.1 of a DAI unit: rounded down to 0 units
    w.cdp.open_or_deposit(w.alice, 10 * WETH)
    assert "debt ceiling 0 units" in w.cdp.draw(w.alice, 1).reason


def test_withdraw_is_refused_below_the_liquidation_ratio():
    w = make_world()
    w.cdp.open_or_deposit(w.alice, 10 * WETH)
    w.cdp.draw(w.alice, 10_000 * DAI)
    # Debt 10,000 DAI needs 15,000 DAI of collateral = 7.5 WETH at 2000: 2.5 WETH may go.
    r = w.cdp.withdraw(w.alice, 2_500_000_000)
    assert r.ok and r.collateral_units == 7_500_000_000 and weth(w, w.alice) == 92_500_000_000
    assert w.cdp.vault(w.alice).collateralisation == 1.5
    before = fingerprint(w)
    r = w.cdp.withdraw(w.alice, 1)
    assert not r.ok and "below the liquidation ratio" in r.reason
    assert fingerprint(w) == before


def test_withdraw_without_debt_needs_no_price_and_cannot_exceed_the_vault():
    w = make_world(eth=None)
    w.cdp.open_or_deposit(w.alice, 3 * WETH)
    before = fingerprint(w)
    r = w.cdp.withdraw(w.alice, 3 * WETH + 1)
    assert not r.ok and "vault holds 3000000000" in r.reason
    assert fingerprint(w) == before
    assert w.cdp.withdraw(w.alice, 3 * WETH).ok
    assert weth(w, w.alice) == 100 * WETH and weth(w, w.cdp.vaults_holder) == 0


def test_without_a_price_draws_and_withdrawals_with_debt_are_refused():
    w = make_world()
    w.cdp.open_or_deposit(w.alice, 10 * WETH)
    w.cdp.draw(w.alice, 1_000 * DAI)
    w.feed.prices["eth"] = None
    before = fingerprint(w)
    assert w.cdp.draw(w.alice, 1).reason == "no price: cannot draw"
    assert "no price" in w.cdp.withdraw(w.alice, 1).reason
    assert "no price" in w.cdp.bark(w.alice).reason
    assert len(w.cdp.unsafe_vaults().holder) == 0
    assert fingerprint(w) == before
    assert w.cdp.repay(w.alice, 1 * DAI).ok  # repaying never needs a price


@pytest.mark.parametrize("bad", [float("nan"), 0.0, -5.0])
def test_an_unusable_price_counts_as_no_price(bad):
    w = make_world()
    w.cdp.open_or_deposit(w.alice, 10 * WETH)
    w.feed.prices["eth"] = bad
    assert w.cdp.oracle_price() is None
    assert not w.cdp.draw(w.alice, 1).ok


def test_fixed_price_config_is_used_without_the_feed():
    w = make_world(price=1.5)
    w.feed.prices.clear()
    w.cdp.open_or_deposit(w.alice, 1 * WETH)
    # 1 WETH at 1.5 DAI is worth 1.5 DAI: the most debt is exactly 1 DAI.
    assert w.cdp.draw(w.alice, 1 * DAI).ok
    assert not w.cdp.draw(w.alice, 1).ok


def test_repay_refuses_more_than_owed_and_repay_all_clears_the_debt():
    w = make_world()
    w.cdp.open_or_deposit(w.alice, 10 * WETH)
    w.cdp.draw(w.alice, 1_000 * DAI)
    before = fingerprint(w)
    r = w.cdp.repay(w.alice, 1_000 * DAI + 1)
    assert not r.ok and "exceeds the debt owed, 1000000000 units" in r.reason
    assert fingerprint(w) == before
    r = w.cdp.repay(w.alice, 400 * DAI)
    assert (r.ok, r.debt_units, dai(w, w.alice)) == (True, 600 * DAI, 600 * DAI)
    assert w.ledger.journal[-1][2:] == (-400 * DAI, "vault repayment")
    r = w.cdp.repay_all(w.alice)
    assert (r.ok, r.amount_units, r.debt_units) == (True, 600 * DAI, 0)
    assert w.ledger.supply(w.cdp.stable_asset) == 0
    assert w.cdp.repay_all(w.alice).reason == "nothing owed"
    assert w.cdp.withdraw(w.alice, 10 * WETH).ok


def test_repay_is_refused_when_the_wallet_is_short():
    w = make_world()
    w.cdp.open_or_deposit(w.alice, 10 * WETH)
    w.cdp.draw(w.alice, 1_000 * DAI)
    w.ledger.transfer(w.alice, w.bob, w.cdp.stable_asset, 700 * DAI)
    before = fingerprint(w)
    r = w.cdp.repay(w.alice, 500 * DAI)
    assert not r.ok and "wallet holds 300000000" in r.reason
    assert not w.cdp.repay_all(w.alice).ok
    assert fingerprint(w) == before


def test_refused_actions_change_nothing():
    w = make_world()
    w.cdp.open_or_deposit(w.alice, 10 * WETH)
    w.cdp.draw(w.alice, 5_000 * DAI)
    before = fingerprint(w)
    refused = [
        w.cdp.open_or_deposit(w.bob, 0),
        w.cdp.open_or_deposit(w.bob, -1),
        w.cdp.open_or_deposit(w.bob, 101 * WETH),  # more than the wallet
        w.cdp.draw(w.bob, 1),  # no vault
        w.cdp.draw(w.alice, 0),
        w.cdp.withdraw(w.bob, 1),
        w.cdp.repay(w.bob, 1),
        w.cdp.repay(w.alice, -3),
        w.cdp.repay_all(w.carol),
    ]
    assert all(not r.ok and r.reason and r.amount_units == 0 for r in refused)
    assert not w.cdp.bark(w.alice).ok  # safe
    assert not w.cdp.bark(w.bob).ok  # no vault
    assert not w.cdp.take(0, w.bob, 1, 1e9).ok  # no auction
    assert fingerprint(w) == before
    assert w.cdp.vault(w.bob).debt_units == 0 and len(w.cdp.vaults()) == 1


# ------------------------------------------------------------------------ explicit accounts
def test_open_position_locks_and_draws_or_raises_changing_nothing():
    w = make_world()
    r = w.cdp.open_position(w.alice, 10 * WETH, 12_000 * DAI)
    assert (r.collateral_units, r.debt_units, dai(w, w.alice)) == (
        10 * WETH,
        12_000 * DAI,
        12_000 * DAI,
    )
    before = fingerprint(w)
    # 1 WETH = 2,000 DAI for 1,500 DAI of debt: collateralisation 1.3333 < 1.5.
    with pytest.raises(ValueError, match=r"would be unsafe: collateralisation 1\.3333 < "):
        w.cdp.open_position(w.bob, 1 * WETH, 1_500 * DAI)
    with pytest.raises(ValueError, match="wallet holds"):
        w.cdp.open_position(w.bob, 200 * WETH, 1 * DAI)
    w.feed.prices["eth"] = None
    with pytest.raises(ValueError, match="no price"):
        w.cdp.open_position(w.bob, 1 * WETH, 1 * DAI)
    assert fingerprint(w) == before
    assert w.cdp.open_position(w.bob, 1 * WETH, 0).collateral_units == 1 * WETH


# ------------------------------------------------------------------------ stability fee
def test_stability_fee_compounds_per_step_like_an_independent_loop_and_closed_form():
    w = make_world(stability_fee=0.05)
    w.cdp.open_or_deposit(w.alice, 10 * WETH)
    w.cdp.draw(w.alice, 1_000 * DAI)
    # Per-step factor of one hour: g = 1.05 ** (3600 / 31_536_000) = 1.0000055696689545.
    g = 1.05 ** (3600 / SECONDS_PER_YEAR)
    rate, fees = 1.0, 0
    for step in range(1000):
        fees += w.cdp.accrue(step, 3600.0)
        rate *= g
        assert w.cdp.vault(w.alice).debt_units == math.ceil(1_000 * DAI * rate)
    # 1000 hours: 1.05 ** 0.1141552511 = 1.00558519280 -> 1,005.585192800 DAI, rounded up.
    debt = w.cdp.vault(w.alice).debt_units
    assert debt == 1_005_585_193
    assert abs(debt - 1e9 * 1.05 ** (1000 * 3600 / SECONDS_PER_YEAR)) <= 1
    # The fee is minted to the surplus as it accrues: supply equals debt exactly.
    assert fees == 5_585_193 == dai(w, w.cdp.surplus_holder)
    assert w.ledger.supply(w.cdp.stable_asset) == debt
    assert w.ledger.journal[-1][3] == "stability fee"


def test_fee_on_debt_drawn_later_compounds_from_the_draw():
    w = make_world(stability_fee=0.05)
    for h in (w.alice, w.bob):
        w.cdp.open_or_deposit(h, 10 * WETH)
    w.cdp.draw(w.alice, 1_000 * DAI)
    for step in range(500):
        w.cdp.accrue(step, 3600.0)
    w.cdp.draw(w.bob, 1_000 * DAI)
    for step in range(500, 1000):
        w.cdp.accrue(step, 3600.0)
    # Bob's debt grew over 500 hours only: 1e9 * 1.05 ** (500 * 3600 / 31_536_000)
    # = 1,002,788,707.95 units, rounded up.
    assert w.cdp.vault(w.bob).debt_units == 1_002_788_708
    assert w.cdp.vault(w.alice).debt_units == 1_005_585_193
    assert dai(w, w.cdp.surplus_holder) == 5_585_193 + 2_788_708


def test_accrual_is_once_per_step_and_catches_up_skipped_steps():
    w = make_world(stability_fee=0.0625)
    w.cdp.open_or_deposit(w.alice, 10 * WETH)
    w.cdp.draw(w.alice, 1_000 * DAI)
    year = float(SECONDS_PER_YEAR)
    assert w.cdp.accrue(0, year) == 62_500_000  # one year at 6.25%: 1,000 -> 1,062.5 DAI
    assert w.cdp.accrue(0, year) == 0  # the same step again: nothing
    # Steps 1 and 2 were skipped: step 3 compounds three years, 1062.5 * 1.0625**3.
    w.cdp.accrue(3, year)
    assert w.cdp.vault(w.alice).debt_units == math.ceil(1_000 * DAI * 1.0625**4)
    # 1000 * 1.0625**4 = 1,274.4293212890625 DAI exactly: rounded up to the next unit.
    assert w.cdp.vault(w.alice).debt_units == 1_274_429_322


def test_repaying_the_fee_needs_more_stablecoin_than_was_drawn():
    w = make_world(stability_fee=0.0625)
    w.cdp.open_or_deposit(w.alice, 10 * WETH)
    w.cdp.draw(w.alice, 1_000 * DAI)
    w.cdp.accrue(0, float(SECONDS_PER_YEAR))
    assert not w.cdp.repay_all(w.alice).ok  # owes 1,062.5 DAI, holds 1,000
    w.ledger.mint(w.bob, w.cdp.stable_asset, 62_500_000, reason="bought on the market")
    w.ledger.transfer(w.bob, w.alice, w.cdp.stable_asset, 62_500_000)
    assert w.cdp.repay_all(w.alice).amount_units == 1_062_500_000
    # All the DAI the protocol minted (1000 drawn + 62.5 fee) sits in the surplus now.
    assert dai(w, w.cdp.surplus_holder) == 62_500_000 == w.ledger.supply(w.cdp.stable_asset)


# ------------------------------------------------------------------------ safety
def test_collateralisation_and_the_unsafe_test_are_exact_at_the_boundary():
    w = make_world()
    w.cdp.open_position(w.alice, 10 * WETH, 10_000 * DAI)
    w.cdp.open_position(w.bob, 5 * WETH, 4_000 * DAI)
    w.cdp.open_position(w.carol, 1 * WETH, 0)
    frame = w.cdp.vaults()
    assert frame["collateralisation"].tolist() == [2.0, 2.5, math.inf]
    w.feed.prices["eth"] = 1400.0
    # Alice 14,000 / 10,000 = 1.4 < 1.5 unsafe; Bob 7,000 / 4,000 = 1.75 safe.
    holders, ratio, debt, coll = w.cdp.unsafe_vaults()
    assert holders.tolist() == [w.alice] and ratio.tolist() == [1.4]
    assert debt.tolist() == [10_000 * DAI] and coll.tolist() == [10 * WETH]
    w.feed.prices["eth"] = 1200.0  # Bob: 6,000 / 4,000 = 1.5 exactly: not below, safe
    assert w.cdp.unsafe_vaults().holder.tolist() == [w.alice]
    w.feed.prices["eth"] = 1199.0  # Bob: 5,995 / 4,000 = 1.49875: unsafe
    unsafe = w.cdp.unsafe_vaults()
    assert unsafe.holder.tolist() == [w.alice, w.bob]
    assert unsafe.collateralisation.tolist() == pytest.approx([1.199, 1.49875], rel=1e-15)


def test_metrics_are_human_units_with_documented_keys():
    w = make_world()
    w.cdp.open_position(w.alice, 10 * WETH, 10_000 * DAI)
    w.cdp.open_position(w.bob, 6 * WETH, 4_000 * DAI)
    w.feed.prices["eth"] = 1400.0
    m = w.cdp.metrics()
    assert m == {
        "debt": 14_000.0,
        "collateral": 16.0,
        "collateralisation": 16 * 1400 / 14_000,  # 1.6
        "unsafe_vaults": 1.0,  # alice at 1.4
        "active_auctions": 0.0,
        "auction_debt": 0.0,
        "surplus": 0.0,
        "system_debt": 0.0,
        "bad_debt": 0.0,
        "stablecoin_supply": 14_000.0,
        "rate": 1.0,
    }
    w.feed.prices["eth"] = None
    assert math.isnan(w.cdp.metrics()["collateralisation"])


def test_many_vaults_grow_the_arrays():
    w = make_world(weth_each=1)
    holders = w.ledger.add_holders("pop", 40)
    for k in range(40):
        w.ledger.mint(holders + k, 0, WETH, reason="endowment")
        w.cdp.open_position(holders + k, WETH, (k + 1) * 10 * DAI)
    w.feed.prices["eth"] = 500.0  # 500 / 1.5 = 333.33 DAI: vaults with more debt are unsafe
    unsafe = w.cdp.unsafe_vaults()
    assert unsafe.holder.tolist() == [holders + k for k in range(33, 40)]
    assert np.array_equal(unsafe.debt, (np.arange(34, 41) * 10 * DAI))


# ------------------------------------------------------------------------ atomicity
def test_snapshot_and_restore_undo_everything_done_since():
    w = make_world(stability_fee=0.05)
    w.cdp.open_position(w.alice, 10 * WETH, 10_000 * DAI)
    w.cdp.accrue(0, 3600.0)
    before, cdp_snap, ledger_snap = fingerprint(w), w.cdp.snapshot(), w.ledger.snapshot()
    w.cdp.open_position(w.bob, 10 * WETH, 1_000 * DAI)
    w.cdp.accrue(1, 3600.0)
    w.feed.prices["eth"] = 1000.0
    w.cdp.bark(w.alice, w.bob)
    w.cdp.take(0, w.bob, WETH, 2000.0)
    assert fingerprint(w) != before
    w.cdp.restore(cdp_snap)
    w.ledger.restore(ledger_snap)
    w.feed.prices["eth"] = 2000.0
    assert fingerprint(w) == before
    # The snapshot stays usable: the same actions give the same result again.
    w.cdp.accrue(1, 3600.0)
    assert w.cdp.vault(w.bob).debt_units == 0 and w.cdp.rate > 1.0
    assert len(w.cdp.vaults()) == 1 and isinstance(w.cdp.auctions(), pd.DataFrame)
