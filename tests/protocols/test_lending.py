"""Lending pool: supply, withdraw, borrow, repay, accrual, metrics, state, presets."""

import math

import numpy as np
import pytest

from marginsim.config import LendingConfig, RateModelConfig, ReserveConfig
from marginsim.ledger import AssetSpec, Ledger
from marginsim.presets import LENDING_PRESETS
from marginsim.protocols.lending import (
    RAY,
    SECONDS_PER_YEAR,
    FixedPriceFeed,
    LendingPool,
    Refusal,
    kinked_borrow_rate,
)

USDC = 10**6  # units per USDC
WETH = 10**9  # units per WETH


def reserves(**overrides):
    usdc = dict(price=1.0, ltv=0.75, liquidation_threshold=0.8, reserve_factor=0.1)
    weth = dict(
        price="eth",
        ltv=0.8,
        liquidation_threshold=0.825,
        liquidation_bonus=0.05,
        protocol_share=0.1,
        reserve_factor=0.1,
    )
    usdc.update(overrides.pop("USDC", {}))
    weth.update(overrides.pop("WETH", {}))
    return {"USDC": ReserveConfig(**usdc), "WETH": ReserveConfig(**weth)}


@pytest.fixture
def make_pool():
    """Build pools on their own ledgers; every ledger's conservation is checked at teardown."""
    made = []

    def build(eth=2000.0, pool_kw=None, **reserve_overrides):
        cfg = LendingConfig(
            kind="lending", reserves=reserves(**reserve_overrides), **(pool_kw or {})
        )
        feed = FixedPriceFeed({"eth": eth})
        pool = LendingPool.standalone(cfg, {"USDC": 6, "WETH": 9}, feed, name="aave")
        ledger = pool.ledger
        holders = {n: ledger.add_holder(n) for n in ("alice", "bob", "carol", "liquidator")}
        ledger.mint(holders["alice"], ledger.asset_id("WETH"), 10 * WETH, "endowment")
        ledger.mint(holders["bob"], ledger.asset_id("USDC"), 100_000 * USDC, "endowment")
        ledger.mint(holders["carol"], ledger.asset_id("USDC"), 50_000 * USDC, "endowment")
        ledger.mint(holders["liquidator"], ledger.asset_id("USDC"), 50_000 * USDC, "endowment")
        made.append(pool)
        return pool, feed, holders

    yield build
    for pool in made:
        pool.ledger.check_conservation()


def state(pool):
    """Everything a refused action must leave unchanged."""
    ledger = pool.ledger
    return (
        ledger.balances.copy(),
        ledger.minted.copy(),
        ledger.burned.copy(),
        len(ledger.journal),
        pool.snapshot(),
    )


def assert_unchanged(pool, before):
    after = state(pool)
    assert np.array_equal(before[0], after[0])
    assert np.array_equal(before[1], after[1]) and np.array_equal(before[2], after[2])
    assert before[3] == after[3]
    assert before[4] == after[4]


# ------------------------------------------------------------------------------ construction
def test_derived_assets_are_receipt_and_debt_tokens_with_underlying_decimals():
    cfg = LendingConfig(kind="lending", reserves=reserves())
    specs = LendingPool.derived_assets("aave", cfg, {"USDC": 6, "WETH": 9})
    assert specs == [
        AssetSpec("aUSDC.aave", 6),
        AssetSpec("dUSDC.aave", 6),
        AssetSpec("aWETH.aave", 9),
        AssetSpec("dWETH.aave", 9),
    ]
    with pytest.raises(ValueError, match="'WETH'.*not an asset"):
        LendingPool.derived_assets("aave", cfg, {"USDC": 6})


def test_a_ledger_without_derived_assets_is_rejected_with_a_hint():
    cfg = LendingConfig(kind="lending", reserves=reserves())
    ledger = Ledger([AssetSpec("USDC", 6), AssetSpec("WETH", 9)])
    with pytest.raises(ValueError, match="aUSDC.aave.*derived_assets"):
        LendingPool(ledger, "aave", cfg, FixedPriceFeed())


def test_pool_registers_its_accounts_and_supplies_genesis_liquidity():
    cfg = LendingConfig(kind="lending", reserves=reserves(USDC={"initial_supply": 2500.5}))
    pool = LendingPool.standalone(cfg, {"USDC": 6, "WETH": 9}, FixedPriceFeed(), name="aave")
    ledger = pool.ledger
    assert ledger.holder_name(pool.liquidity_holder) == "aave:liquidity"
    assert ledger.holder_name(pool.treasury_holder) == "aave:treasury"
    # 2500.5 USDC = 2_500_500_000 units, minted to the genesis holder and supplied.
    assert pool.available_units("USDC") == 2_500_500_000
    assert pool.supplied_units(pool.genesis_holder, "USDC") == 2_500_500_000
    assert ledger.journal[0][2:] == (2_500_500_000, "genesis supply")
    ledger.check_conservation()


def test_genesis_supply_above_the_cap_is_a_clear_error():
    cfg = LendingConfig(
        kind="lending", reserves=reserves(USDC={"initial_supply": 10.0, "supply_cap": 5.0})
    )
    with pytest.raises(ValueError, match="initial_supply.*exceeds the supply cap"):
        LendingPool.standalone(cfg, {"USDC": 6, "WETH": 9}, FixedPriceFeed(), name="aave")


# ------------------------------------------------------------------------------ supply, withdraw
def test_supply_moves_underlying_to_liquidity_and_mints_scaled_receipts(make_pool):
    pool, _, h = make_pool()
    r = pool.supply(h["bob"], "USDC", 1_000 * USDC)
    assert r.ok and r.amount == 1_000 * USDC and r.scaled == 1_000 * USDC  # index 1
    ledger = pool.ledger
    assert ledger.balance(h["bob"], ledger.asset_id("USDC")) == 99_000 * USDC
    assert ledger.balance(pool.liquidity_holder, ledger.asset_id("USDC")) == 1_000 * USDC
    assert ledger.balance(h["bob"], ledger.asset_id("aUSDC.aave")) == 1_000 * USDC
    assert ledger.journal[-1][2:] == (1_000 * USDC, "supply")
    assert h["bob"] in pool.accounts


def test_supply_at_a_higher_index_mints_rounded_down(make_pool):
    pool, _, h = make_pool()
    pool._liquidity_index[0] = 3 * RAY  # one scaled unit worth 3 units
    r = pool.supply(h["bob"], "USDC", 10)
    # 10 / 3 = 3.33 scaled units -> 3 minted: the 0.33 stays with the pool.
    assert r.scaled == 3
    assert pool.supplied_units(h["bob"], "USDC") == 9
    # Withdrawing 8 units burns ceil(8 / 3) = 3 scaled units.
    w = pool.withdraw(h["bob"], "USDC", 8)
    assert w.ok and w.scaled == 3


def test_supply_cap_and_bad_inputs_are_refused_and_change_nothing(make_pool):
    pool, _, h = make_pool(USDC={"supply_cap": 1_000.0})
    cases = [
        (h["bob"], "USDC", 1_000 * USDC + 1, Refusal.SUPPLY_CAP),
        (h["bob"], "DAI", 1, Refusal.UNKNOWN_ASSET),
        (h["bob"], "USDC", 0, Refusal.BAD_AMOUNT),
        (h["bob"], "USDC", -5, Refusal.BAD_AMOUNT),
        (h["bob"], "USDC", 1.5, Refusal.BAD_AMOUNT),
        (10_000, "USDC", 1, Refusal.UNKNOWN_ACCOUNT),
        (pool.liquidity_holder, "USDC", 1, Refusal.UNKNOWN_ACCOUNT),
        (h["alice"], "USDC", 1, Refusal.INSUFFICIENT_BALANCE),
    ]
    for holder, symbol, amount, code in cases:
        before = state(pool)
        r = pool.supply(holder, symbol, amount)
        assert not r.ok and r.code == code, (holder, symbol, amount, r)
        assert r.reason
        assert_unchanged(pool, before)
    assert pool.supply(h["bob"], "USDC", 1_000 * USDC).ok  # exactly at the cap


def test_withdraw_is_limited_by_borrowing_power(make_pool):
    pool, _, h = make_pool()
    assert pool.supply(h["bob"], "USDC", 100_000 * USDC).ok
    assert pool.supply(h["alice"], "WETH", 10 * WETH).ok
    assert pool.borrow(h["alice"], "USDC", 12_000 * USDC).ok
    # Debt 12,000 needs collateral 12,000 / 0.8 / 2,000 = 7.5 WETH: 2.5 WETH may go.
    before = state(pool)
    r = pool.withdraw(h["alice"], "WETH", 2_500_000_001)
    assert not r.ok and r.code == Refusal.BORROWING_POWER
    assert_unchanged(pool, before)
    r = pool.withdraw(h["alice"], "WETH", 2_500_000_000)
    assert r.ok and r.scaled == 2_500_000_000
    assert pool.supplied_units(h["alice"], "WETH") == 7_500_000_000


def test_withdraw_refusals(make_pool):
    pool, feed, h = make_pool()
    assert pool.supply(h["bob"], "USDC", 20_000 * USDC).ok
    assert pool.supply(h["alice"], "WETH", 10 * WETH).ok
    assert pool.borrow(h["alice"], "USDC", 10_000 * USDC).ok
    before = state(pool)
    r = pool.withdraw(h["bob"], "USDC", 20_000 * USDC + 1)
    assert r.code == Refusal.EXCEEDS_SUPPLY
    r = pool.withdraw(h["bob"], "USDC", 10_000 * USDC + 1)  # only 10,000 left in the pool
    assert r.code == Refusal.INSUFFICIENT_LIQUIDITY
    feed.prices["eth"] = None
    r = pool.withdraw(h["alice"], "WETH", 1)
    assert r.code == Refusal.NO_PRICE
    assert_unchanged(pool, before)
    # Bob has no debt: his withdrawal needs no price.
    assert pool.withdraw(h["bob"], "USDC", 10_000 * USDC).ok


# ------------------------------------------------------------------------------ borrow, repay
def test_borrow_up_to_borrowing_power_exactly(make_pool):
    pool, _, h = make_pool()
    assert pool.supply(h["bob"], "USDC", 100_000 * USDC).ok
    assert pool.supply(h["alice"], "WETH", 10 * WETH).ok
    # Borrowing power = 10 WETH * 2,000 * 0.8 = 16,000 USDC.
    before = state(pool)
    r = pool.borrow(h["alice"], "USDC", 16_000 * USDC + 1)
    assert r.code == Refusal.BORROWING_POWER
    assert_unchanged(pool, before)
    r = pool.borrow(h["alice"], "USDC", 16_000 * USDC)
    assert r.ok and r.scaled == 16_000 * USDC
    ledger = pool.ledger
    assert ledger.balance(h["alice"], ledger.asset_id("USDC")) == 16_000 * USDC
    assert ledger.balance(h["alice"], ledger.asset_id("dUSDC.aave")) == 16_000 * USDC
    assert ledger.journal[-1][2:] == (16_000 * USDC, "borrow")
    data = pool.account_data(h["alice"])
    assert data.borrowing_power == 16_000 and data.debt_value == 16_000
    assert data.health_factor == pytest.approx(16_500 / 16_000, rel=1e-15)


def test_borrow_refusals_change_nothing(make_pool):
    pool, feed, h = make_pool(USDC={"borrow_cap": 5_000.0}, WETH={"borrowable": False})
    assert pool.supply(h["bob"], "USDC", 4_000 * USDC).ok
    assert pool.supply(h["carol"], "USDC", 2_000 * USDC).ok
    assert pool.supply(h["alice"], "WETH", 10 * WETH).ok
    cases = [
        (h["alice"], "WETH", 1, Refusal.NOT_BORROWABLE),
        (h["alice"], "USDC", 6_000 * USDC + 1, Refusal.INSUFFICIENT_LIQUIDITY),
        (h["alice"], "USDC", 5_000 * USDC + 1, Refusal.BORROW_CAP),
        (h["liquidator"], "USDC", 1, Refusal.BORROWING_POWER),  # no collateral at all
        (h["alice"], "BTC", 1, Refusal.UNKNOWN_ASSET),
        (h["alice"], "USDC", 0, Refusal.BAD_AMOUNT),
        (-1, "USDC", 1, Refusal.UNKNOWN_ACCOUNT),
        (pool.treasury_holder, "USDC", 1, Refusal.UNKNOWN_ACCOUNT),
    ]
    for holder, symbol, amount, code in cases:
        before = state(pool)
        r = pool.borrow(holder, symbol, amount)
        assert not r.ok and r.code == code, (symbol, amount, r)
        assert_unchanged(pool, before)
    feed.prices["eth"] = None
    before = state(pool)
    assert pool.borrow(h["alice"], "USDC", 1).code == Refusal.NO_PRICE
    assert_unchanged(pool, before)
    feed.prices["eth"] = 2000.0
    assert pool.borrow(h["alice"], "USDC", 5_000 * USDC).ok  # exactly at the cap


def test_repay_partial_exact_and_max(make_pool):
    pool, _, h = make_pool()
    assert pool.supply(h["bob"], "USDC", 100_000 * USDC).ok
    assert pool.supply(h["alice"], "WETH", 10 * WETH).ok
    assert pool.borrow(h["alice"], "USDC", 1_000 * USDC).ok
    pool._borrow_index[0] = RAY * 3 // 2  # debt grew by 50%: owes 1,500 USDC
    assert pool.debt_units(h["alice"], "USDC") == 1_500 * USDC
    before = state(pool)
    r = pool.repay(h["carol"], "USDC", 1_500 * USDC + 1, on_behalf_of=h["alice"])
    assert r.code == Refusal.EXCEEDS_DEBT
    assert pool.repay(h["alice"], "USDC", 1, on_behalf_of=h["bob"]).code == Refusal.NO_DEBT
    assert_unchanged(pool, before)
    # 301 units at index 1.5 burn floor(301 / 1.5) = 200 scaled units (rounded down).
    r = pool.repay(h["carol"], "USDC", 301, on_behalf_of=h["alice"])
    assert r.ok and r.scaled == 200
    assert pool.debt_units(h["alice"], "USDC") == 1_500 * USDC - 300
    r = pool.repay_max(h["carol"], "USDC", on_behalf_of=h["alice"])
    assert r.ok and r.amount == 1_500 * USDC - 300
    assert pool.ledger.balance(h["alice"], pool.reserve("USDC").debt) == 0
    assert pool.ledger.journal[-1][3] == "repay"
    assert pool.repay_max(h["carol"], "USDC", on_behalf_of=h["alice"]).code == Refusal.NO_DEBT


def test_receipt_transfer_checks_borrowing_power(make_pool):
    pool, _, h = make_pool()
    assert pool.supply(h["bob"], "USDC", 100_000 * USDC).ok
    assert pool.supply(h["alice"], "WETH", 10 * WETH).ok
    assert pool.borrow(h["alice"], "USDC", 12_000 * USDC).ok
    before = state(pool)
    r = pool.transfer_receipt(h["alice"], h["carol"], "WETH", 2_500_000_001)
    assert r.code == Refusal.BORROWING_POWER
    assert_unchanged(pool, before)
    r = pool.transfer_receipt(h["alice"], h["carol"], "WETH", 2_500_000_000)
    assert r.ok and pool.supplied_units(h["carol"], "WETH") == 2_500_000_000
    assert h["carol"] in pool.accounts


def test_open_position_places_collateral_and_debt_or_refuses_atomically(make_pool):
    pool, _, h = make_pool()
    assert pool.supply(h["bob"], "USDC", 100_000 * USDC).ok
    alice = h["alice"]
    before = state(pool)
    with pytest.raises(ValueError, match="exceeds borrowing power"):
        pool.open_position(alice, {"WETH": 10 * WETH}, {"USDC": 16_000 * USDC + 1})
    with pytest.raises(ValueError, match="wallet holds"):
        pool.open_position(alice, {"WETH": 11 * WETH}, {})
    with pytest.raises(ValueError, match="no reserve 'DAI'"):
        pool.open_position(alice, {"WETH": WETH}, {"DAI": 1})
    assert_unchanged(pool, before)
    # Beyond the LTV (16,000) but healthy (liquidation value 16,500): allowed on request.
    with pytest.raises(ValueError, match="exceeds borrowing power"):
        pool.open_position(alice, {"WETH": 10 * WETH}, {"USDC": 16_400 * USDC})
    pool.open_position(alice, {"WETH": 10 * WETH}, {"USDC": 16_400 * USDC}, enforce_ltv=False)
    assert pool.debt_units(alice, "USDC") == 16_400 * USDC
    assert pool.supplied_units(alice, "WETH") == 10 * WETH
    assert pool.health_factors([alice])[0] == pytest.approx(16_500 / 16_400, rel=1e-15)


def test_open_position_refuses_an_unhealthy_position_even_without_the_ltv_rule(make_pool):
    pool, _, h = make_pool()
    assert pool.supply(h["bob"], "USDC", 100_000 * USDC).ok
    before = state(pool)
    with pytest.raises(ValueError, match="health factor < 1"):
        pool.open_position(
            h["alice"], {"WETH": 10 * WETH}, {"USDC": 16_501 * USDC}, enforce_ltv=False
        )
    assert_unchanged(pool, before)


# ------------------------------------------------------------------------------ interest
def test_kinked_borrow_rate_matches_the_glossary_formula():
    rate = RateModelConfig(base=0.01, slope1=0.04, slope2=0.75, optimal=0.8)
    assert kinked_borrow_rate(rate, 0.0) == 0.01
    assert kinked_borrow_rate(rate, 0.4) == pytest.approx(0.01 + 0.04 * 0.5)  # 0.03
    assert kinked_borrow_rate(rate, 0.8) == pytest.approx(0.05)
    assert kinked_borrow_rate(rate, 0.9) == pytest.approx(0.05 + 0.75 * 0.5)  # 0.425
    assert kinked_borrow_rate(rate, 1.0) == pytest.approx(0.80)


def test_constant_rate_accrual_matches_closed_form_compounding(make_pool):
    # A flat 5% borrow rate (no slopes): after n steps of dt seconds the borrow index is
    # exactly (1 + 0.05 dt / year)^n, the GLOSSARY's per-step compounding.
    flat = {"rate": RateModelConfig(base=0.05, slope1=0.0, slope2=0.0)}
    pool, _, h = make_pool(USDC=flat)
    assert pool.supply(h["bob"], "USDC", 100_000 * USDC).ok
    assert pool.supply(h["alice"], "WETH", 10 * WETH).ok
    assert pool.borrow(h["alice"], "USDC", 16_000 * USDC).ok
    n, dt = 5_000, 60.0
    for step in range(n):
        pool.accrue(step, dt)
    expected = (1.0 + 0.05 * dt / SECONDS_PER_YEAR) ** n
    assert pool.borrow_index("USDC") == pytest.approx(expected, rel=1e-12)
    assert abs(pool.debt_units(h["alice"], "USDC") - 16_000 * USDC * expected) <= 1
    assert pool.step == n - 1


def test_kinked_accrual_matches_an_independent_reference_loop(make_pool):
    pool, _, h = make_pool()  # USDC: base 0, slope1 0.04, slope2 0.75, kink 0.8, RF 0.1
    assert pool.supply(h["bob"], "USDC", 20_000 * USDC).ok
    assert pool.supply(h["alice"], "WETH", 10 * WETH).ok
    assert pool.borrow(h["alice"], "USDC", 16_500 * USDC - 500 * USDC).ok  # U = 0.8
    n, dt, year = 2_000, 3_600.0, 365 * 86_400
    # Reference: the GLOSSARY formulas in plain floats.
    scaled_supply, scaled_debt, li, bi, treasury = 20_000e6, 16_000e6, 1.0, 1.0, 0.0
    for _ in range(n):
        u = scaled_debt * bi / (scaled_supply * li)
        rb = 0.04 * u / 0.8 if u <= 0.8 else 0.04 + 0.75 * (u - 0.8) / 0.2
        rs = rb * u * (1 - 0.1)
        new_bi, new_li = bi * (1 + rb * dt / year), li * (1 + rs * dt / year)
        minted = math.floor(0.1 * scaled_debt * (new_bi - bi) / new_li)
        treasury += minted
        scaled_supply += minted
        bi, li = new_bi, new_li
    for step in range(n):
        pool.accrue(step, dt)
    assert pool.borrow_index("USDC") == pytest.approx(bi, rel=1e-12)
    assert pool.liquidity_index("USDC") == pytest.approx(li, rel=1e-12)
    ledger = pool.ledger
    treasury_scaled = ledger.balance(pool.treasury_holder, pool.reserve("USDC").receipt)
    assert abs(treasury_scaled - treasury) <= n  # at most one unit of rounding per step
    # Interest splits exactly: suppliers + treasury claims = liquidity + debt, up to rounding
    # dust that always favours the pool.
    claims = pool.total_supplied_units("USDC")
    assets = pool.available_units("USDC") + pool.total_borrowed_units("USDC")
    assert 0 <= assets - claims <= 2 * n
    assert pool.utilisation("USDC") > 0.8  # debt compounds faster than supply


def test_accrue_rejects_a_bad_step_length(make_pool):
    pool, _, _ = make_pool()
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="step_seconds"):
            pool.accrue(0, bad)


# ------------------------------------------------------------------------------ metrics, state
def test_metrics_report_every_reserve_and_the_pool_totals(make_pool):
    pool, feed, h = make_pool()
    assert pool.supply(h["bob"], "USDC", 20_000 * USDC).ok
    assert pool.supply(h["alice"], "WETH", 10 * WETH).ok
    assert pool.borrow(h["alice"], "USDC", 16_000 * USDC).ok
    m = pool.metrics()
    for s in ("USDC", "WETH"):
        for key in (
            "supplied",
            "supplied_value",
            "borrowed",
            "borrowed_value",
            "available",
            "utilisation",
            "borrow_rate",
            "supply_rate",
            "reserves",
            "bad_debt",
            "liquidity_index",
            "borrow_index",
            "price",
        ):
            assert f"{s}_{key}" in m
    assert m["USDC_supplied"] == 20_000 and m["USDC_borrowed"] == 16_000
    assert m["USDC_utilisation"] == 0.8
    assert m["USDC_borrow_rate"] == pytest.approx(0.04)
    assert m["USDC_supply_rate"] == pytest.approx(0.04 * 0.8 * 0.9)
    assert m["WETH_supplied_value"] == 20_000
    assert m["debt_value"] == 16_000
    assert m["accounts_with_debt"] == 1
    # HF = 16,500 / 16,000 = 1.03: below 1.1, not below 1.
    assert m["accounts_hf_below_1"] == 0 and m["accounts_hf_below_1_1"] == 1
    feed.prices["eth"] = None
    m = pool.metrics()
    assert math.isnan(m["WETH_price"]) and m["accounts_hf_below_1_1"] == 0


def test_snapshot_restore_returns_the_pool_state(make_pool):
    pool, _, h = make_pool()
    assert pool.supply(h["bob"], "USDC", 20_000 * USDC).ok
    snap = pool.snapshot()
    pool.register_accounts([h["carol"], h["liquidator"]])
    pool.accrue(5, 3_600.0)
    pool._bad_debt_rows.append(("x",))
    pool.restore(snap)
    assert pool.snapshot() == snap
    assert list(pool.accounts) == [h["bob"]]
    pool.register_accounts([h["carol"]])  # re-registration works after a restore
    assert list(pool.accounts) == [h["bob"], h["carol"]]


def test_register_accounts_is_vectorised_and_idempotent(make_pool):
    pool, _, h = make_pool()
    first = pool.ledger.add_holders("pop", 5_000)
    pool.register_accounts(np.arange(first, first + 5_000))
    pool.register_accounts([first, first + 1, h["bob"]])
    accounts = pool.accounts
    assert accounts.shape == (5_001,) and len(set(accounts.tolist())) == 5_001
    with pytest.raises(ValueError, match="holder ids"):
        pool.register_accounts([10**9])
    assert np.all(np.isinf(pool.health_factors()))


# ------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("preset", sorted(LENDING_PRESETS))
def test_presets_are_valid_lending_configs(preset):
    data = dict(LENDING_PRESETS[preset])
    data["reserves"] = {s: dict(r, price=1.0) for s, r in data["reserves"].items()}
    cfg = LendingConfig(kind="lending", **data)
    assert set(cfg.reserves) == {"WETH", "USDC"}
    for reserve in cfg.reserves.values():
        assert 0 < reserve.ltv <= reserve.liquidation_threshold < 1
    if preset == "compound-v2":
        assert cfg.full_close_below_hf == 0.0
        # 2.8% of the seized collateral, as a share of the 8% bonus part.
        assert cfg.reserves["WETH"].protocol_share == pytest.approx(0.028 * 1.08 / 0.08)
        # JumpRateModelV2 of cUSDC: 4% at the kink, 4% + 1.09 * 0.2 at full utilisation.
        usdc_rate = cfg.reserves["USDC"].rate
        assert kinked_borrow_rate(usdc_rate, 1.0) == pytest.approx(0.04 + 1.09 * 0.2)
