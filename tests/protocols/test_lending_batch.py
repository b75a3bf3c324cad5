"""Batch lending actions equal the sequence of single actions they replace.

The reference implementation is the pool's own single methods: two pools built identically
run the same rows, one through ``*_many`` and one through ``supply``/``borrow``/``withdraw``/
``repay`` called in row order; every row's result (ok, code, reason, units, scaled tokens),
every balance, the supplies, the journal and the pool's own state must be equal.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginsim.config import LendingConfig, RateModelConfig, ReserveConfig
from marginsim.protocols.lending import RAY, FixedPriceFeed, LendingPool, Refusal

USDC = 10**6
WETH = 10**9
USERS = 5
KINDS = ("supply", "borrow", "withdraw", "repay")


@dataclasses.dataclass
class _Breaker:
    """A policy stand-in that pauses borrowing (only ``blocks_borrowing`` is read by borrows)."""

    paused: bool
    calls: int = 0

    def blocks_borrowing(self, step):
        self.calls += 1
        return self.paused

    def snapshot_state(self):
        return {"paused": self.paused}


def build(setup):
    """A pool with USERS accounts in a random but reproducible state."""
    rate = RateModelConfig(base=0.5, slope1=2.0, slope2=20.0, optimal=0.8)
    cfg = LendingConfig(
        kind="lending",
        reserves={
            "USDC": ReserveConfig(
                price=1.0,
                ltv=0.75,
                liquidation_threshold=0.8,
                rate=rate,
                borrow_cap=setup["borrow_cap"],
                # The cap leaves ``supply_room`` above the genesis supply (None: no cap).
                supply_cap=(
                    0.0
                    if setup["supply_room"] is None
                    else setup["usdc_liquidity"] + setup["supply_room"]
                ),
                initial_supply=setup["usdc_liquidity"],
            ),
            "WETH": ReserveConfig(
                price="eth",
                ltv=setup["ltv"],
                liquidation_threshold=max(setup["ltv"], 0.825),
                rate=rate,
                borrowable=setup["weth_borrowable"],
            ),
        },
    )
    feed = FixedPriceFeed({"eth": 2000.0})
    pool = LendingPool.standalone(cfg, {"USDC": 6, "WETH": 9}, feed, name="aave")
    ledger = pool.ledger
    users = [ledger.add_holder(f"u{i}") for i in range(USERS)]
    for h, (weth, usdc, supply, borrow) in zip(users, setup["accounts"], strict=True):
        ledger.mint(h, ledger.asset_id("WETH"), weth, "endowment")
        ledger.mint(h, ledger.asset_id("USDC"), usdc, "endowment")
        if supply:
            pool.supply(h, "WETH", min(supply, weth))
        if borrow:
            pool.borrow(h, "USDC", borrow)
    for k in range(setup["accrual_steps"]):
        pool.accrue(k, 86_400.0 * 7)  # a week a step: indexes far from 1, rounding matters
    feed.prices["eth"] = setup["eth_after"]
    if setup["breaker"] is not None:
        pool.policy = _Breaker(setup["breaker"])
    return pool, users


def snapshot(pool):
    ledger = pool.ledger
    return (
        ledger.balances.copy(),
        ledger.minted.copy(),
        ledger.burned.copy(),
        list(ledger.journal),
        pool.snapshot(),
        pool.accounts,
    )


def assert_same_state(a, b):
    sa, sb = snapshot(a), snapshot(b)
    assert np.array_equal(sa[0], sb[0])
    assert np.array_equal(sa[1], sb[1]) and np.array_equal(sa[2], sb[2])
    assert sa[3] == sb[3]
    assert sa[4] == sb[4]
    assert np.array_equal(sa[5], sb[5])


def run_both(setup, kind, symbol, rows):
    batch_pool, users = build(setup)
    single_pool, _ = build(setup)
    # Row holders: 0..USERS-1 pick a user; the rest are ids a single call refuses.
    others = [batch_pool.liquidity_holder, batch_pool.treasury_holder, 10**6, -1]
    ids = [(users + others)[c] for c, _ in rows]
    amounts = [a for _, a in rows]
    got = getattr(batch_pool, f"{kind}_many")(
        np.array(ids, dtype=np.int64), symbol, np.array(amounts, dtype=np.int64)
    )
    single = getattr(single_pool, kind)
    want = [single(h, symbol, a) for h, a in zip(ids, amounts, strict=True)]
    assert got.results() == want
    assert got.refused == sum(not r.ok for r in want)
    assert_same_state(batch_pool, single_pool)
    if setup["breaker"] is not None:
        assert batch_pool.policy.calls == single_pool.policy.calls
    batch_pool.ledger.check_conservation()
    return got


accounts = st.tuples(
    st.integers(0, 20 * WETH),  # WETH in the wallet
    st.integers(0, 60_000 * USDC),  # USDC in the wallet
    st.integers(0, 20 * WETH),  # WETH supplied at setup
    st.integers(0, 30_000 * USDC),  # USDC borrowed at setup (refused when too much)
)
setups = st.fixed_dictionaries(
    {
        "accounts": st.lists(accounts, min_size=USERS, max_size=USERS),
        "accrual_steps": st.integers(0, 3),
        "eth_after": st.sampled_from([2000.0, 1234.5678, 1500.1, 3333.33, None, 0.0]),
        "ltv": st.sampled_from([0.0, 0.5, 0.8]),
        "borrow_cap": st.sampled_from([0.0, 20_000.0, 200_000.0]),
        "supply_room": st.sampled_from([None, 100.0, 60_000.0]),
        "usdc_liquidity": st.sampled_from([0.0, 15_000.0, 1_000_000.0]),
        "weth_borrowable": st.booleans(),
        "breaker": st.sampled_from([None, False, True]),
    }
)
amount = st.one_of(
    st.integers(-2, 3),  # non-positive and dust amounts
    st.integers(1, 5 * WETH),
    st.integers(1, 40_000 * USDC),
    st.just(2**62),
)
rows = st.lists(st.tuples(st.integers(0, USERS + 3), amount), min_size=1, max_size=12)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    setup=setups,
    kind=st.sampled_from(KINDS),
    symbol=st.sampled_from(["USDC", "WETH"]),
    batch=rows,
)
def test_batch_equals_sequence_of_single_calls(setup, kind, symbol, batch):
    run_both(setup, kind, symbol, batch)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setup=setups, kind=st.sampled_from(KINDS), batch=rows)
def test_unknown_reserve_is_refused_row_by_row(setup, kind, batch):
    got = run_both(setup, kind, "DAI", batch)
    assert set(got.code) == {Refusal.UNKNOWN_ASSET} or set(got.code) == {
        Refusal.UNKNOWN_ASSET,
        Refusal.BAD_AMOUNT,
    }


SETUP = {
    "accounts": [(10 * WETH, 0, 10 * WETH, 0)] * USERS,
    "accrual_steps": 0,
    "eth_after": 2000.0,
    "ltv": 0.8,
    "borrow_cap": 0.0,
    "supply_room": None,
    "usdc_liquidity": 1_000_000.0,
    "weth_borrowable": True,
    "breaker": None,
}


def test_borrow_at_exactly_the_borrowing_power_passes_and_one_unit_more_is_refused():
    # 10 WETH at 2000 with LTV 0.8: borrowing power 10 * 2000 * 0.8 = 16,000 USDC exactly
    # (indexes at 1 ray). Row 0 borrows 16,000 USDC: debt value equals the power, allowed.
    # Row 1 (another account) asks 16,000.000001 USDC: one unit above, refused. Row 2 is the
    # first account again, asking one more unit: it sees row 0's debt and is refused.
    got = run_both(
        SETUP,
        "borrow",
        "USDC",
        [(0, 16_000 * USDC), (1, 16_000 * USDC + 1), (0, 1)],
    )
    assert got.ok.tolist() == [True, False, False]
    assert got.code[1] == got.code[2] == Refusal.BORROWING_POWER
    assert got.scaled[0] == 16_000 * USDC  # scaled = ceil(amount * RAY / RAY)


def test_liquidity_runs_out_in_row_order():
    # 15,000 USDC of liquidity; three accounts ask 6,000 each: the first two get it
    # (12,000), the third finds 3,000 left and is refused; a fourth asking 3,000 passes.
    setup = {**SETUP, "usdc_liquidity": 15_000.0}
    got = run_both(
        setup,
        "borrow",
        "USDC",
        [(0, 6_000 * USDC), (1, 6_000 * USDC), (2, 6_000 * USDC), (3, 3_000 * USDC)],
    )
    assert got.ok.tolist() == [True, True, False, True]
    assert got.code[2] == Refusal.INSUFFICIENT_LIQUIDITY
    assert got.reason[2] == f"borrow: {3_000 * USDC} USDC units available, amount {6_000 * USDC}"


def test_repay_rounds_the_burn_down():
    # One account borrows 1,000 USDC, then the borrow index grows (a week at a high rate).
    # Repaying 1 unit burns floor(1 * RAY / index) scaled tokens: 0 when index > 1 ray, so
    # the single call refuses it (BAD_AMOUNT), and so must the batch.
    setup = {
        **SETUP,
        "accounts": [(10 * WETH, 5 * USDC, 10 * WETH, 1_000 * USDC)] * USERS,
        "accrual_steps": 1,
    }
    pool, _ = build(setup)
    assert pool.borrow_index_ray("USDC") > RAY
    got = run_both(setup, "repay", "USDC", [(0, 1), (1, 2 * USDC)])
    assert got.code[0] == Refusal.BAD_AMOUNT
    assert got.ok[1]


@pytest.mark.parametrize("kind", KINDS)
def test_empty_batch_changes_nothing(kind):
    got = run_both(SETUP, kind, "USDC", [])
    assert len(got) == 0 and got.refused == 0


def test_full_repay_burns_all_scaled_debt():
    # After a week of interest the borrow index I is above 1 ray and owed = ceil(s * I / RAY)
    # for s scaled units. Repaying exactly what is owed must burn all s (nothing left owed),
    # in the batch as in the single call; a partial repay of owed - 1 burns
    # floor((owed - 1) * RAY / I) < s.
    setup = {
        **SETUP,
        "accounts": [(10 * WETH, 500 * USDC, 10 * WETH, 1_000 * USDC)] * USERS,
        "accrual_steps": 1,
    }
    pool, users = build(setup)
    owed = [pool.debt_units(h, "USDC") for h in users[:3]]
    got = run_both(setup, "repay", "USDC", [(0, owed[0]), (1, owed[1] - 1), (2, owed[2])])
    assert got.ok.all()
    s = pool.ledger.balance(users[0], pool.reserve("USDC").debt)
    index = pool.borrow_index_ray("USDC")
    assert got.scaled.tolist() == [s, (owed[1] - 1) * RAY // index, s]
    assert got.scaled[1] < s


def test_supply_cap_counts_earlier_rows():
    # Cap = genesis 15,000 + 100 USDC of room. Row 0 supplies 60 USDC (total 15,060, under
    # the cap), row 1 another 60 (15,120 > 15,100): refused; row 2 supplies 40 (15,100 =
    # the cap): accepted.
    setup = {
        **SETUP,
        "accounts": [(0, 1_000 * USDC, 0, 0)] * USERS,
        "usdc_liquidity": 15_000.0,
        "supply_room": 100.0,
    }
    got = run_both(setup, "supply", "USDC", [(0, 60 * USDC), (1, 60 * USDC), (2, 40 * USDC)])
    assert got.ok.tolist() == [True, False, True]
    assert got.code[1] == Refusal.SUPPLY_CAP
    assert (
        got.reason[1] == f"supply: USDC supply would be {15_120 * USDC} units, cap {15_100 * USDC}"
    )


def test_borrow_cap_counts_earlier_rows():
    # Borrow cap 20,000 USDC, indexes at 1 ray. Rows of 12,000 and 9,000 USDC: the first
    # leaves 12,000 borrowed; the second would make 21,000 > 20,000 and is refused; a third
    # of 8,000 makes exactly 20,000 and passes.
    setup = {**SETUP, "borrow_cap": 20_000.0}
    got = run_both(
        setup, "borrow", "USDC", [(0, 12_000 * USDC), (1, 9_000 * USDC), (2, 8_000 * USDC)]
    )
    assert got.ok.tolist() == [True, False, True]
    assert got.code[1] == Refusal.BORROW_CAP


def test_rows_above_the_starting_liquidity_see_the_liquidity_left_at_their_turn():
    # 15,000 USDC available. Row 0 takes 6,000 (9,000 left); row 1 asks 20,000: refused,
    # "9,000 available"; row 2 takes 6,000 (3,000 left); row 3 asks 20,000: refused, "3,000
    # available"; row 4 takes the last 3,000.
    setup = {**SETUP, "usdc_liquidity": 15_000.0}
    got = run_both(
        setup,
        "borrow",
        "USDC",
        [
            (0, 6_000 * USDC),
            (1, 20_000 * USDC),
            (2, 6_000 * USDC),
            (3, 20_000 * USDC),
            (4, 3_000 * USDC),
        ],
    )
    assert got.ok.tolist() == [True, False, True, False, True]
    assert got.reason[1] == f"borrow: {9_000 * USDC} USDC units available, amount {20_000 * USDC}"
    assert got.reason[3] == f"borrow: {3_000 * USDC} USDC units available, amount {20_000 * USDC}"
    # Asking exactly all of the liquidity is allowed (within a borrowing power of 16,000).
    assert run_both(setup, "borrow", "USDC", [(0, 15_000 * USDC)]).ok.tolist() == [True]
