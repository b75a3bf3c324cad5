"""Lending pool: health factors, liquidation scans, close factors, bonuses, bad debt."""

import math

import numpy as np
import pytest

from marginsim.config import LendingConfig, ReserveConfig
from marginsim.protocols.lending import RAY, FixedPriceFeed, LendingPool, Refusal

USDC = 10**6
WETH = 10**9


@pytest.fixture
def make_pool():
    """Alice: 10 WETH supplied, 16,000 USDC borrowed at ETH = 2,000 (exactly at her LTV).

    Bob supplied 100,000 USDC; the liquidator holds 50,000 USDC. Every ledger's conservation
    is checked at teardown.
    """
    made = []

    def build(pool_kw=None, weth=None, usdc=None):
        usdc_cfg = dict(price=1.0, ltv=0.75, liquidation_threshold=0.8)
        usdc_cfg.update(usdc or {})
        weth_cfg = dict(
            price="eth",
            ltv=0.8,
            liquidation_threshold=0.825,
            liquidation_bonus=0.05,
            protocol_share=0.1,
        )
        weth_cfg.update(weth or {})
        cfg = LendingConfig(
            kind="lending",
            reserves={
                "USDC": ReserveConfig(**usdc_cfg),
                "WETH": ReserveConfig(**weth_cfg),
            },
            **(pool_kw or {}),
        )
        feed = FixedPriceFeed({"eth": 2000.0})
        pool = LendingPool.standalone(cfg, {"USDC": 6, "WETH": 9}, feed, name="aave")
        ledger = pool.ledger
        h = {n: ledger.add_holder(n) for n in ("alice", "bob", "carol", "liquidator")}
        usdc, weth_id = ledger.asset_id("USDC"), ledger.asset_id("WETH")
        ledger.mint(h["alice"], weth_id, 10 * WETH, "endowment")
        ledger.mint(h["bob"], usdc, 100_000 * USDC, "endowment")
        ledger.mint(h["liquidator"], usdc, 50_000 * USDC, "endowment")
        assert pool.supply(h["bob"], "USDC", 100_000 * USDC).ok
        assert pool.supply(h["alice"], "WETH", 10 * WETH).ok
        assert pool.borrow(h["alice"], "USDC", 16_000 * USDC).ok
        made.append(pool)
        return pool, feed, h

    yield build
    for pool in made:
        pool.ledger.check_conservation()


def state(pool):
    ledger = pool.ledger
    return (ledger.balances.copy(), len(ledger.journal), pool.snapshot())


def assert_unchanged(pool, before):
    after = state(pool)
    assert np.array_equal(before[0], after[0])
    assert before[1:] == after[1:]


def bal(pool, holder, symbol):
    return pool.ledger.balance(holder, pool.ledger.asset_id(symbol))


# ------------------------------------------------------------------------------ health factor
def test_health_factor_scalar_and_vectorised(make_pool):
    pool, feed, h = make_pool()
    # HF = 10 WETH * 2,000 * 0.825 / 16,000 = 16,500 / 16,000.
    hf = pool.health_factors([h["alice"], h["bob"], h["carol"]])
    assert hf[0] == pytest.approx(1.03125, rel=1e-15)
    assert math.isinf(hf[1]) and math.isinf(hf[2])  # no debt
    assert pool.account_data(h["alice"]).health_factor == 1.03125
    feed.prices["eth"] = 1900.0
    # 19,000 * 0.825 / 16,000 = 15,675 / 16,000 = 0.9796875
    assert pool.health_factors([h["alice"]])[0] == pytest.approx(0.9796875, rel=1e-15)
    found = pool.liquidatable()
    assert len(found) == 1 and found.holder[0] == h["alice"]
    assert found.health_factor[0] == pytest.approx(0.9796875, rel=1e-15)
    assert found.debt_value[0] == pytest.approx(16_000) and found.collateral_value[0] == 19_000
    assert found.debt_asset[0] == pool.reserve("USDC").asset
    assert found.collateral_asset[0] == pool.reserve("WETH").asset


def test_liquidatable_picks_the_largest_debt_and_collateral_of_each_account(make_pool):
    pool, feed, h = make_pool()
    ledger = pool.ledger
    carol = h["carol"]
    ledger.mint(carol, ledger.asset_id("USDC"), 30_000 * USDC, "endowment")
    ledger.mint(carol, ledger.asset_id("WETH"), WETH, "endowment")
    assert pool.supply(carol, "USDC", 30_000 * USDC).ok
    assert pool.supply(carol, "WETH", WETH).ok
    assert pool.borrow(carol, "WETH", 5 * WETH).ok  # 10,000 value at 2,000
    assert pool.borrow(carol, "USDC", 14_000 * USDC).ok  # borrowing power 24,000
    feed.prices["eth"] = 3_000.0  # Carol: debt 15,000 + 14,000 vs 24,000 + 2,475 adjusted
    found = pool.liquidatable()
    assert list(found.holder) == [carol]
    assert found.debt_asset[0] == pool.reserve("WETH").asset  # 15,000 > 14,000
    assert found.collateral_asset[0] == pool.reserve("USDC").asset  # 30,000 > 3,000
    # (30,000 * 0.8 + 3,000 * 0.825) / (15,000 + 14,000)
    assert found.health_factor[0] == pytest.approx(26_475 / 29_000, rel=1e-12)


def test_missing_price_blocks_borrowing_and_liquidation(make_pool):
    pool, feed, h = make_pool()
    feed.prices["eth"] = None
    assert np.isnan(pool.health_factors([h["alice"]])[0])
    assert math.isnan(pool.account_data(h["alice"]).health_factor)
    assert pool.metrics()["accounts_hf_below_1"] == 0
    assert len(pool.liquidatable()) == 0
    before = state(pool)
    r = pool.liquidate(h["liquidator"], h["alice"], "USDC", "WETH", 8_000 * USDC)
    assert not r.ok and r.code == Refusal.NO_PRICE
    assert pool.borrow(h["alice"], "USDC", 1).code == Refusal.NO_PRICE
    feed.prices["eth"] = float("nan")  # a broken feed counts as no price
    assert pool.borrow(h["alice"], "USDC", 1).code == Refusal.NO_PRICE
    assert_unchanged(pool, before)


def test_a_healthy_account_cannot_be_liquidated_and_hf_1_is_healthy(make_pool):
    pool, feed, h = make_pool()
    before = state(pool)
    r = pool.liquidate(h["liquidator"], h["alice"], "USDC", "WETH", 8_000 * USDC)
    assert not r.ok and r.code == Refusal.HEALTHY and r.reason.endswith(">= 1")
    assert r.health_factor == 1.03125
    assert_unchanged(pool, before)
    # Interest brings the debt to exactly 16,000 * 33/32 = 16,500 USDC = the liquidation
    # value (10 WETH * 2,000 * 0.825): HF is exactly 1, still healthy (the check is exact).
    pool._borrow_index[0] = RAY * 33 // 32
    assert pool.debt_units(h["alice"], "USDC") == 16_500 * USDC
    r = pool.liquidate(h["liquidator"], h["alice"], "USDC", "WETH", 8_000 * USDC)
    assert r.code == Refusal.HEALTHY and r.health_factor == 1.0
    pool._borrow_index[0] += 1  # one ray more: 16,500.000001 owed, HF just below 1
    r = pool.liquidate(h["liquidator"], h["alice"], "USDC", "WETH", 8_000 * USDC)
    assert r.ok and r.debt_repaid == 8_000 * USDC


def test_liquidation_refusals_change_nothing(make_pool):
    pool, feed, h = make_pool()
    feed.prices["eth"] = 1900.0
    cases = [
        (h["liquidator"], h["alice"], "DAI", "WETH", 1, Refusal.UNKNOWN_ASSET),
        (h["liquidator"], h["alice"], "USDC", "WETH", 0, Refusal.BAD_AMOUNT),
        (h["liquidator"], 99_999, "USDC", "WETH", 1, Refusal.UNKNOWN_ACCOUNT),
        (h["liquidator"], h["alice"], "WETH", "WETH", 1, Refusal.NO_DEBT),
        (h["liquidator"], h["alice"], "USDC", "USDC", 1, Refusal.NO_COLLATERAL),
        (h["carol"], h["alice"], "USDC", "WETH", 1_000 * USDC, Refusal.INSUFFICIENT_BALANCE),
        (h["liquidator"], h["bob"], "USDC", "USDC", 1, Refusal.NO_DEBT),
    ]
    for liquidator, account, debt, coll, amount, code in cases:
        before = state(pool)
        r = pool.liquidate(liquidator, account, debt, coll, amount)
        assert not r.ok and r.code == code, (debt, coll, r)
        assert_unchanged(pool, before)
    assert len(pool.liquidations_frame()) == 0


def test_collateral_without_threshold_cannot_be_seized(make_pool):
    pool, feed, h = make_pool(usdc={"ltv": 0.0, "liquidation_threshold": 0.0})
    feed.prices["eth"] = 1900.0
    before = state(pool)
    r = pool.liquidate(h["liquidator"], h["alice"], "USDC", "USDC", 1)
    assert r.code == Refusal.NOT_COLLATERAL
    assert_unchanged(pool, before)


# ------------------------------------------------------------------------------ close factor
def test_close_factor_limits_a_liquidation_to_half_the_debt(make_pool):
    pool, feed, h = make_pool()
    alice, liq = h["alice"], h["liquidator"]
    feed.prices["eth"] = 1900.0  # HF 0.9796875: between 0.95 and 1 -> 50% close factor
    r = pool.liquidate(liq, alice, "USDC", "WETH", 10_000 * USDC)  # asks for more than 50%
    assert r.ok and r.health_factor == 0.9796875
    # Repay 8,000 USDC (half of 16,000). Seize 8,000 * 1.05 / 1,900 WETH
    # = 4.421052631578... -> 4,421,052,631 units (rounded down).
    assert r.debt_repaid == 8_000 * USDC
    assert r.collateral_seized == 4_421_052_631
    # Bonus part = seized * 0.05 / 1.05 = 210,526,315.76 units; the protocol's 10% of it
    # is 21,052,631.58 -> 21,052,632 units (rounded up, for the protocol).
    assert r.protocol_fee == 21_052_632
    assert r.liquidator_received == 4_421_052_631 - 21_052_632 == 4_399_999_999
    assert not r.received_receipt and r.bad_debt == 0
    assert bal(pool, liq, "USDC") == 42_000 * USDC
    assert bal(pool, liq, "WETH") == 4_399_999_999
    assert pool.debt_units(alice, "USDC") == 8_000 * USDC
    assert pool.supplied_units(alice, "WETH") == 10 * WETH - 4_421_052_631
    # The protocol fee stays supplied, as the treasury's receipt tokens.
    assert pool.supplied_units(pool.treasury_holder, "WETH") == 21_052_632
    assert pool.available_units("WETH") == 10 * WETH - 4_399_999_999
    assert pool.ledger.journal[-2][2:] == (-8_000 * USDC, "liquidation")  # debt burned
    row = pool.liquidations_frame().iloc[0]
    assert row.account == alice and row.liquidator == liq
    assert (row.debt_asset, row.debt_repaid) == ("USDC", 8_000 * USDC)
    assert (row.collateral_asset, row.collateral_seized) == ("WETH", 4_421_052_631)
    assert row.oracle_price == 1900.0 and row.protocol_fee == 21_052_632 and row.bad_debt == 0
    # Bonus value: 4.421052631 WETH * 1,900 - 8,000 = 399.9999989 USDC
    assert row.bonus_value == pytest.approx(4.421052631 * 1900 - 8000, abs=1e-9)
    # Now healthy again: 5.578947369 WETH * 1,900 * 0.825 / 8,000 = 1.0931...
    assert pool.health_factors([alice])[0] == pytest.approx(
        5.578947369 * 1900 * 0.825 / 8000, rel=1e-12
    )
    assert pool.liquidate(liq, alice, "USDC", "WETH", USDC).code == Refusal.HEALTHY


def test_below_095_the_whole_debt_may_be_repaid(make_pool):
    pool, feed, h = make_pool()
    alice, liq = h["alice"], h["liquidator"]
    feed.prices["eth"] = 1700.0  # HF = 14,025 / 16,000 = 0.8765625 < 0.95 -> 100%
    r = pool.liquidate(liq, alice, "USDC", "WETH", 20_000 * USDC)
    assert r.ok and r.debt_repaid == 16_000 * USDC
    # Seize 16,000 * 1.05 / 1,700 = 9.882352941176... WETH -> 9,882,352,941 units.
    assert r.collateral_seized == 9_882_352_941
    # Fee: ceil(9,882,352,941 / 21 * 0.1) = ceil(47,058,823.53) = 47,058,824.
    assert r.protocol_fee == 47_058_824
    assert r.liquidator_received == 9_835_294_117
    assert pool.debt_units(alice, "USDC") == 0
    assert pool.ledger.balance(alice, pool.reserve("USDC").debt) == 0
    assert pool.supplied_units(alice, "WETH") == 117_647_059
    assert r.bad_debt == 0 and len(pool.bad_debt_frame()) == 0


def test_compound_style_close_factor_never_opens_the_whole_debt(make_pool):
    pool, feed, h = make_pool(pool_kw={"full_close_below_hf": 0.0})
    feed.prices["eth"] = 1700.0  # HF 0.8765625: Aave would allow 100%, Compound 50%
    r = pool.liquidate(h["liquidator"], h["alice"], "USDC", "WETH", 20_000 * USDC)
    assert r.ok and r.debt_repaid == 8_000 * USDC


def test_protocol_share_of_the_bonus_goes_to_the_treasury(make_pool):
    pool, feed, h = make_pool(weth={"protocol_share": 0.5, "liquidation_bonus": 0.1})
    feed.prices["eth"] = 1900.0  # HF 0.9796875, 50%
    r = pool.liquidate(h["liquidator"], h["alice"], "USDC", "WETH", 8_000 * USDC)
    # Seize 8,000 * 1.1 / 1,900 = 4.631578947368... -> 4,631,578,947 units; bonus part
    # 4,631,578,947 / 11 = 421,052,631.54; half of it: 210,526,315.77 -> 210,526,316.
    assert r.collateral_seized == 4_631_578_947
    assert r.protocol_fee == 210_526_316
    assert r.liquidator_received == 4_631_578_947 - 210_526_316
    assert pool.supplied_units(pool.treasury_holder, "WETH") == 210_526_316
    assert pool.metrics()["WETH_reserves"] == 0.210526316


def test_liquidator_receives_receipt_tokens_when_liquidity_is_short(make_pool):
    pool, feed, h = make_pool()
    ledger = pool.ledger
    carol = h["carol"]
    ledger.mint(carol, ledger.asset_id("USDC"), 40_000 * USDC, "endowment")
    assert pool.supply(carol, "USDC", 40_000 * USDC).ok
    assert pool.borrow(carol, "WETH", 7 * WETH).ok  # leaves 3 WETH in the pool
    feed.prices["eth"] = 1900.0
    r = pool.liquidate(h["liquidator"], h["alice"], "USDC", "WETH", 8_000 * USDC)
    assert r.ok and r.received_receipt  # 4.4 WETH due, 3 available
    assert bal(pool, h["liquidator"], "WETH") == 0
    assert bal(pool, h["liquidator"], "aWETH.aave") == 4_399_999_999
    assert bal(pool, pool.treasury_holder, "aWETH.aave") == 21_052_632
    assert pool.available_units("WETH") == 3 * WETH
    assert h["liquidator"] in pool.accounts


def test_liquidator_may_ask_for_receipt_tokens(make_pool):
    pool, feed, h = make_pool()
    feed.prices["eth"] = 1900.0
    r = pool.liquidate(
        h["liquidator"], h["alice"], "USDC", "WETH", 8_000 * USDC, receive_receipt=True
    )
    assert r.ok and r.received_receipt
    assert bal(pool, h["liquidator"], "aWETH.aave") == 4_399_999_999
    assert pool.available_units("WETH") == 10 * WETH  # nothing withdrawn
    assert pool.liquidations_frame().iloc[0].received_receipt


# ------------------------------------------------------------------------------ bad debt
def test_collateral_runs_out_and_the_rest_is_bad_debt(make_pool):
    pool, feed, h = make_pool()
    alice, bob, liq = h["alice"], h["bob"], h["liquidator"]
    ledger = pool.ledger
    # The treasury holds 1,000 USDC of reserves (receipt tokens handed over by Bob).
    ledger.transfer(bob, pool.treasury_holder, ledger.asset_id("aUSDC.aave"), 1_000 * USDC)
    feed.prices["eth"] = 1500.0  # HF = 12,375 / 16,000 = 0.7734 -> 100% close factor
    r = pool.liquidate(liq, alice, "USDC", "WETH", 16_000 * USDC)
    assert r.ok
    # 16,000 USDC would seize 16,000 * 1.05 / 1,500 = 11.2 WETH > 10 held: all 10 WETH
    # are seized and the repay shrinks to 10 * 1,500 / 1.05 = 14,285.714285714 USDC,
    # rounded up to 14,285,714,286 units (the liquidator pays the extra fraction).
    assert r.collateral_seized == 10 * WETH
    assert r.debt_repaid == 14_285_714_286
    assert r.protocol_fee == 47_619_048  # ceil(10e9 / 21 * 0.1)
    assert r.liquidator_received == 9_952_380_952
    # Left: 16,000,000,000 - 14,285,714,286 = 1,714,285,714 units of debt, no collateral.
    assert r.bad_debt == 1_714_285_714
    assert pool.ledger.balance(alice, pool.reserve("USDC").debt) == 0
    assert pool.ledger.journal[-2][2:] == (-1_714_285_714, "bad debt write-off")
    # Reserves absorb 1,000 USDC first (treasury receipts burned) ...
    assert pool.ledger.journal[-1][2:] == (-1_000 * USDC, "bad debt covered by reserves")
    assert pool.supplied_units(pool.treasury_holder, "USDC") == 0
    # ... suppliers bear 714,285,714 units through the liquidity index: Bob's 99,000 USDC
    # of scaled supply lose ceil(714,285,714 * 1e27 / 99e9) ray of index each.
    cut = -(-714_285_714 * RAY // 99_000_000_000)
    assert cut == 7_215_007_212_121_212_121_212_122
    assert pool.liquidity_index_ray("USDC") == RAY - cut
    assert pool.supplied_units(bob, "USDC") == 98_285_714_285  # 99,000 - 714.285714 - dust
    rows = pool.bad_debt_frame()
    assert rows.to_dict("records") == [
        {
            "step": 0,
            "protocol": "aave",
            "account": alice,
            "asset": "USDC",
            "amount": 1_714_285_714,
            "covered_by_reserves": 1_000 * USDC,
            "borne_by_suppliers": 714_285_714,
        },
    ]
    assert pool.liquidations_frame().iloc[0].bad_debt == 1_714_285_714
    m = pool.metrics()
    assert m["USDC_bad_debt"] == 1_714.285714 and m["USDC_reserves"] == 0
    # The pool stays solvent: liquidity + debt covers every receipt token.
    assert pool.available_units("USDC") == 100_000 * USDC - 16_000 * USDC + 14_285_714_286
    assert pool.available_units("USDC") >= pool.total_supplied_units("USDC")


def test_settle_writes_off_debt_left_without_collateral(make_pool):
    pool, feed, h = make_pool()
    alice, bob = h["alice"], h["bob"]
    ledger = pool.ledger
    # Collateral moved away with a plain ledger transfer (bypassing the pool's checks).
    ledger.transfer(alice, h["carol"], ledger.asset_id("aWETH.aave"), 10 * WETH)
    pool.register_accounts(np.arange(ledger.n_holders))
    assert pool.settle(7) == 1
    rows = pool.bad_debt_frame()
    assert list(rows.account) == [alice] and list(rows.step) == [7]
    # No reserves: suppliers bear all 16,000 USDC; Bob's 100,000 are worth 84,000 now.
    assert rows.iloc[0].covered_by_reserves == 0
    assert rows.iloc[0].borne_by_suppliers == 16_000 * USDC
    # The cut is exactly 0.16 ray per scaled unit here (16,000 / 100,000): no rounding.
    assert pool.liquidity_index_ray("USDC") == RAY * 84 // 100
    assert pool.supplied_units(bob, "USDC") == 84_000 * USDC
    assert pool.settle(8) == 0  # nothing left to write off


def test_settle_needs_no_price_and_skips_accounts_with_collateral(make_pool):
    pool, feed, h = make_pool()
    feed.prices["eth"] = None
    assert pool.settle(1) == 0
    assert len(pool.bad_debt_frame()) == 0


def test_parallel_and_serial_scans_agree(make_pool, monkeypatch):
    import marginsim.protocols.lending as lending

    pool, feed, h = make_pool()
    feed.prices["eth"] = 1900.0
    serial, serial_hf = pool.liquidatable(), pool.health_factors()
    monkeypatch.setattr(lending, "PARALLEL_SCAN_MIN_ACCOUNTS", 0)
    parallel, parallel_hf = pool.liquidatable(), pool.health_factors()
    for field in (
        "holder",
        "health_factor",
        "debt_value",
        "collateral_value",
        "debt_asset",
        "collateral_asset",
    ):
        np.testing.assert_array_equal(getattr(serial, field), getattr(parallel, field))
    np.testing.assert_array_equal(serial_hf, parallel_hf)
    assert len(parallel) == 1
