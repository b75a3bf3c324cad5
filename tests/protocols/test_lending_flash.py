"""Lending pool: flash loans, their fee and the revert of everything a failed one did."""

import numpy as np
import pytest

from marginsim.config import LendingConfig, ReserveConfig
from marginsim.protocols.lending import FixedPriceFeed, LendingPool, Refusal

USDC = 10**6
WETH = 10**9


class Counter:
    """A stand-in for a participant (matching engine, AMM pool) with snapshot/restore."""

    def __init__(self):
        self.value = 0

    def snapshot(self):
        return self.value

    def restore(self, snap):
        self.value = snap


@pytest.fixture
def setup():
    cfg = LendingConfig(
        kind="lending",
        flash_loan_fee=0.0005,
        reserves={
            "USDC": ReserveConfig(price=1.0, ltv=0.75, liquidation_threshold=0.8),
            "WETH": ReserveConfig(price="eth", ltv=0.8, liquidation_threshold=0.825),
        },
    )
    pool = LendingPool.standalone(
        cfg, {"USDC": 6, "WETH": 9}, FixedPriceFeed({"eth": 2000.0}), name="aave"
    )
    ledger = pool.ledger
    h = {n: ledger.add_holder(n) for n in ("bob", "trader", "market")}
    usdc = ledger.asset_id("USDC")
    ledger.mint(h["bob"], usdc, 100_000 * USDC, "endowment")
    ledger.mint(h["trader"], usdc, 1_000 * USDC, "endowment")
    ledger.mint(h["market"], usdc, 1_000 * USDC, "endowment")
    ledger.mint(h["trader"], ledger.asset_id("WETH"), 5 * WETH, "endowment")
    assert pool.supply(h["bob"], "USDC", 100_000 * USDC).ok
    yield pool, h
    ledger.check_conservation()


def full_state(pool):
    ledger = pool.ledger
    return (
        ledger.balances.copy(),
        ledger.minted.copy(),
        ledger.burned.copy(),
        list(ledger.journal),
    )


def test_a_repaid_flash_loan_pays_its_fee_to_the_treasury(setup):
    pool, h = setup
    ledger = pool.ledger
    usdc = ledger.asset_id("USDC")
    trader, market = h["trader"], h["market"]
    amount = 50_000 * USDC + 1
    seen = []

    def arbitrage():
        seen.append(ledger.balance(trader, usdc))
        ledger.transfer(market, trader, usdc, 100 * USDC)  # the profit of the trade

    r = pool.flash_loan(trader, "USDC", amount, arbitrage)
    # fee = ceil(50,000,000,001 * 0.0005) = ceil(25,000,000.0005) = 25,000,001 units
    assert r.ok and r.repaid and r.fee == 25_000_001
    assert seen == [1_000 * USDC + amount]  # the action held the loan
    assert ledger.balance(trader, usdc) == 1_100 * USDC - 25_000_001
    assert pool.available_units("USDC") == 100_000 * USDC + 25_000_001
    assert pool.supplied_units(pool.treasury_holder, "USDC") == 25_000_001
    assert ledger.journal[-1][2:] == (25_000_001, "flash loan fee")
    frame = pool.flash_loans_frame()
    assert frame.to_dict("records") == [
        {
            "step": 0,
            "protocol": "aave",
            "holder": trader,
            "asset": "USDC",
            "amount": amount,
            "fee": 25_000_001,
            "repaid": True,
        },
    ]


def test_a_raising_action_reverts_ledger_pool_and_participants(setup):
    pool, h = setup
    ledger = pool.ledger
    trader = h["trader"]
    engine = Counter()
    pool.step = 12
    before = full_state(pool)
    snap = pool.snapshot()
    newcomer = ledger.add_holder("newcomer")

    def attack():
        # Use the loan inside the pool and elsewhere, then fail.
        assert pool.supply(trader, "WETH", 5 * WETH).ok
        assert pool.borrow(trader, "USDC", 5_000 * USDC).ok
        assert pool.supply(newcomer, "USDC", 0).code == Refusal.BAD_AMOUNT
        pool.register_accounts([newcomer])
        pool.accrue(12, 3_600.0)
        engine.value += 7
        raise RuntimeError("price moved")

    r = pool.flash_loan(trader, "USDC", 80_000 * USDC, attack, participants=[engine])
    assert not r.ok and not r.repaid and r.code == Refusal.ACTION_FAILED
    assert "RuntimeError: price moved" in r.reason
    after = full_state(pool)
    for b, a in zip(before[:3], after[:3], strict=True):
        np.testing.assert_array_equal(b[: a.shape[0]], a[: b.shape[0]])
    assert np.all(after[0][before[0].shape[0] :] == 0)  # the newcomer's row: zero balances
    assert before[3] == after[3]  # journal restored
    restored = pool.snapshot()
    assert restored.liquidity_index == snap.liquidity_index
    assert restored.borrow_index == snap.borrow_index
    assert restored.n_accounts == snap.n_accounts and newcomer not in pool.accounts
    assert engine.value == 0
    rows = pool.flash_loans_frame()
    assert rows.to_dict("records") == [
        {
            "step": 12,
            "protocol": "aave",
            "holder": trader,
            "asset": "USDC",
            "amount": 80_000 * USDC,
            "fee": 40_000_000,
            "repaid": False,
        },
    ]


def test_an_unrepaid_flash_loan_is_reverted(setup):
    pool, h = setup
    ledger = pool.ledger
    usdc = ledger.asset_id("USDC")
    trader, market = h["trader"], h["market"]
    before = full_state(pool)

    def lose_it():
        ledger.transfer(trader, market, usdc, 10_000 * USDC)

    r = pool.flash_loan(trader, "USDC", 10_000 * USDC, lose_it)
    assert not r.ok and r.code == Refusal.NOT_REPAID
    after = full_state(pool)
    np.testing.assert_array_equal(before[0], after[0])
    assert before[3] == after[3]
    assert list(pool.flash_loans_frame().repaid) == [False]
    # Enough to repay the principal but not the fee is also a failure.
    # The trader keeps the 2,000 lent but gives away its own 1,000: the fee of 1 USDC is
    # missing.
    r = pool.flash_loan(
        trader, "USDC", 2_000 * USDC, lambda: ledger.transfer(trader, market, usdc, 1_000 * USDC)
    )
    assert r.code == Refusal.NOT_REPAID and r.fee == 1 * USDC


def test_a_flash_loan_above_liquidity_is_refused(setup):
    pool, h = setup
    before = full_state(pool)
    called = []
    r = pool.flash_loan(h["trader"], "USDC", 100_000 * USDC + 1, lambda: called.append(1))
    assert r.code == Refusal.INSUFFICIENT_LIQUIDITY and not called
    assert pool.flash_loan(h["trader"], "DAI", 1, lambda: None).code == Refusal.UNKNOWN_ASSET
    np.testing.assert_array_equal(before[0], full_state(pool)[0])
    assert len(pool.flash_loans_frame()) == 0


def test_flash_loans_come_only_from_borrowable_reserves():
    cfg = LendingConfig(
        kind="lending",
        reserves={"WETH": ReserveConfig(price=2000.0, borrowable=False, initial_supply=10.0)},
    )
    pool = LendingPool.standalone(cfg, {"WETH": 9}, FixedPriceFeed(), name="aave")
    trader = pool.ledger.add_holder("trader")
    called = []
    r = pool.flash_loan(trader, "WETH", WETH, lambda: called.append(1))
    assert r.code == Refusal.NOT_BORROWABLE and not called
    assert pool.available_units("WETH") == 10 * WETH
    pool.ledger.check_conservation()
