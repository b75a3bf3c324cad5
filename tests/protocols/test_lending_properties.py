"""Lending pool invariants over random action sequences (hypothesis)."""

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from marginsim.config import LendingConfig, RateModelConfig, ReserveConfig
from marginsim.protocols.lending import (
    RAY,
    ActionResult,
    FixedPriceFeed,
    FlashLoanResult,
    LendingPool,
    LiquidationResult,
)

USDC = 10**6
WETH = 10**9
SYMBOLS = ("USDC", "WETH")
USERS = 4
DEBT_DECREASES = {"repay", "liquidation", "bad debt write-off"}

# Mostly a fraction of what the action could use (so that most actions go through and
# positions reach liquidation), sometimes a raw number of units (mostly refused).
amounts = st.one_of(
    st.tuples(st.just("frac"), st.floats(0.01, 1.05)),
    st.tuples(st.just("frac"), st.just(1.0)),
    st.tuples(st.just("raw"), st.integers(-5, 10**12)),
)
user = st.integers(0, USERS - 1)
symbol = st.sampled_from(SYMBOLS)
PRICES = [None, 400.0, 900.0, 1500.0, 1900.0, 2000.0, 3000.0, 6000.0]
STRATEGIES = {
    "supply": lambda: st.tuples(st.just("supply"), user, symbol, amounts),
    "withdraw": lambda: st.tuples(st.just("withdraw"), user, symbol, amounts),
    "borrow": lambda: st.tuples(st.just("borrow"), user, symbol, amounts),
    "repay": lambda: st.tuples(st.just("repay"), user, symbol, amounts),
    "repay_max": lambda: st.tuples(st.just("repay_max"), user, symbol),
    "transfer": lambda: st.tuples(st.just("transfer"), user, user, symbol, amounts),
    "price": lambda: st.tuples(st.just("price"), st.sampled_from(PRICES)),
    "accrue": lambda: st.tuples(
        st.just("accrue"), st.sampled_from([60.0, 3_600.0, 30 * 86_400.0, 365 * 86_400.0])
    ),
    "liquidate": lambda: st.tuples(
        st.just("liquidate"), user, symbol, symbol, amounts, st.booleans()
    ),
    "liquidate_scan": lambda: st.tuples(st.just("liquidate_scan"), amounts, st.booleans()),
    "settle": lambda: st.tuples(st.just("settle")),
    "flash": lambda: st.tuples(
        st.just("flash"), user, symbol, amounts, st.sampled_from(["repay", "raise", "steal"])
    ),
}
# Borrowing, price moves and liquidation bots are drawn more often than the rest, so that
# sequences reach unhealthy accounts, liquidations and bad debt.
WEIGHTS = {"borrow": 4, "price": 3, "liquidate_scan": 4, "accrue": 2}
actions = st.one_of([STRATEGIES[k]() for k in STRATEGIES for _ in range(WEIGHTS.get(k, 1))])


def build():
    cfg = LendingConfig(
        kind="lending",
        reserves={
            "USDC": ReserveConfig(
                price=1.0,
                ltv=0.75,
                liquidation_threshold=0.8,
                liquidation_bonus=0.05,
                reserve_factor=0.1,
                initial_supply=5_000.0,
            ),
            "WETH": ReserveConfig(
                price="eth",
                ltv=0.8,
                liquidation_threshold=0.825,
                liquidation_bonus=0.08,
                protocol_share=0.3,
                reserve_factor=0.2,
                rate=RateModelConfig(base=0.02, slope1=0.05, slope2=3.0, optimal=0.45),
            ),
        },
    )
    feed = FixedPriceFeed({"eth": 2000.0})
    pool = LendingPool.standalone(cfg, {"USDC": 6, "WETH": 9}, feed, name="p")
    ledger = pool.ledger
    users = [ledger.add_holder(f"user{i}") for i in range(USERS)]
    liquidator = ledger.add_holder("liquidator")
    market = ledger.add_holder("market")
    for h in [*users, liquidator, market]:
        ledger.mint(h, ledger.asset_id("USDC"), 30_000 * USDC, "endowment")
        ledger.mint(h, ledger.asset_id("WETH"), 15 * WETH, "endowment")
    # Two USDC lenders and two WETH lenders to start with.
    lenders = [("USDC", 20_000 * USDC)] * 2 + [("WETH", 10 * WETH)] * 2
    for i, (sym, amount) in enumerate(lenders):
        assert pool.supply(users[i], sym, amount).ok
    return pool, feed, users, liquidator, market


def units(pool, kind, holder, sym, spec):
    """Turn an amount spec into units: a fraction of the relevant limit, or raw units."""
    how, x = spec
    if how == "raw":
        return x
    res = pool.reserve(sym)
    ledger = pool.ledger
    if kind == "supply":
        limit = ledger.balance(holder, res.asset)
    elif kind in ("withdraw", "transfer"):
        limit = pool.supplied_units(holder, sym)
    elif kind == "borrow":
        data = pool.account_data(holder)
        price = pool.prices.price(res.price_ref)
        if price is None or data.borrowing_power != data.borrowing_power:
            return 1_000
        limit = max(0.0, data.borrowing_power - data.debt_value) / price * res.unit
    elif kind in ("repay", "liquidate"):
        limit = pool.debt_units(holder, sym)
    else:  # flash
        limit = pool.available_units(sym)
    return max(1, int(limit * x))


def state(pool):
    ledger = pool.ledger
    return (
        ledger.balances.copy(),
        ledger.minted.copy(),
        ledger.burned.copy(),
        len(ledger.journal),
        pool.snapshot(),
    )


def run(pool, feed, users, liquidator, market, action):
    kind = action[0]
    ledger = pool.ledger
    if kind in ("supply", "withdraw", "borrow", "repay"):
        _, who, sym, spec = action
        amount = units(pool, kind, users[who], sym, spec)
        return getattr(pool, kind)(users[who], sym, amount)
    if kind == "repay_max":
        return pool.repay_max(users[action[1]], action[2])
    if kind == "transfer":
        _, who, to, sym, spec = action
        amount = units(pool, kind, users[who], sym, spec)
        return pool.transfer_receipt(users[who], users[to], sym, amount)
    if kind == "price":
        feed.prices["eth"] = action[1]
        return None
    if kind == "accrue":
        pool.accrue(pool.step + 1, action[1])
        return None
    if kind == "liquidate":
        _, who, debt, coll, spec, receipt = action
        amount = units(pool, kind, users[who], debt, spec)
        return pool.liquidate(liquidator, users[who], debt, coll, amount, receipt)
    if kind == "liquidate_scan":  # what a liquidation bot does: scan, pick the largest
        _, spec, receipt = action
        found = pool.liquidatable()
        if len(found) == 0:
            return None
        account = int(found.holder[0])
        debt = ledger.assets[int(found.debt_asset[0])].symbol
        coll_id = int(found.collateral_asset[0])
        coll = ledger.assets[coll_id].symbol if coll_id >= 0 else debt
        amount = units(pool, "liquidate", account, debt, spec)
        return pool.liquidate(liquidator, account, debt, coll, amount, receipt)
    if kind == "settle":
        pool.settle(pool.step)
        return None
    _, who, sym, spec, behaviour = action
    holder, asset = users[who], ledger.asset_id(sym)
    amount = units(pool, "flash", holder, sym, spec)

    def act():
        if behaviour == "raise":
            pool.supply(holder, sym, max(1, amount // 2))
            raise ValueError("failed trade")
        if behaviour == "steal":
            ledger.transfer(holder, market, asset, ledger.balance(holder, asset))

    return pool.flash_loan(holder, sym, amount, act)


def debt_journal_ok(pool, start):
    """Debt tokens move only by borrow (up) and repay / liquidation / bad debt (down)."""
    debt_ids = {r.debt for r in pool.reserves}
    for _, asset, signed, reason in pool.ledger.journal[start:]:
        if asset in debt_ids:
            assert (signed > 0 and reason == "borrow") or (
                signed < 0 and reason in DEBT_DECREASES
            ), (signed, reason)


def solvent(pool):
    """Liquidity plus debt covers every receipt token (exact, in ray units)."""
    for res in pool.reserves:
        claims = pool.ledger.supply(res.receipt) * pool.liquidity_index_ray(res.symbol)
        debt = pool.ledger.supply(res.debt) * pool.borrow_index_ray(res.symbol)
        assets = pool.available_units(res.symbol) * RAY + debt
        assert assets + RAY >= claims, (res.symbol, assets, claims)


FULL = ("frac", 1.0)
# A sequence that surely reaches every path: borrowing to the limit both ways, a crash with
# liquidations (underlying and receipts) and bad debt, a squeeze the other way, interest,
# settlement and the three kinds of flash loan.
STORY = [
    ("borrow", 2, "USDC", FULL),
    ("borrow", 3, "USDC", ("frac", 0.9)),
    ("borrow", 0, "WETH", FULL),
    ("price", 900.0),
    ("liquidate_scan", FULL, False),
    ("liquidate_scan", ("frac", 0.5), True),
    ("liquidate_scan", FULL, False),
    ("settle",),
    ("price", 6000.0),
    ("accrue", 365 * 86_400.0),
    ("liquidate_scan", FULL, False),
    ("liquidate_scan", FULL, True),
    ("price", None),
    ("liquidate", 0, "WETH", "USDC", FULL, False),
    ("flash", 1, "USDC", ("frac", 0.5), "repay"),
    ("flash", 1, "USDC", FULL, "raise"),
    ("flash", 1, "WETH", FULL, "steal"),
    ("repay_max", 0, "WETH"),
    ("withdraw", 1, "USDC", FULL),
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, min_size=5, max_size=50))
@example(STORY)
def test_random_action_sequences_keep_the_invariants(sequence):
    pool, feed, users, liquidator, market = build()
    ledger = pool.ledger
    borrow_index = [pool.borrow_index_ray(s) for s in SYMBOLS]
    for action in sequence:
        before = state(pool)
        journal_start = len(ledger.journal)
        result = run(pool, feed, users, liquidator, market, action)

        ledger.check_conservation()  # exact sums and no negative balance
        debt_journal_ok(pool, journal_start)
        solvent(pool)
        now = [pool.borrow_index_ray(s) for s in SYMBOLS]
        assert all(b >= a for a, b in zip(borrow_index, now, strict=True))
        borrow_index = now

        refused = isinstance(result, ActionResult | LiquidationResult) and not result.ok
        failed_flash = isinstance(result, FlashLoanResult) and not result.ok
        if refused or failed_flash:
            after = state(pool)
            assert np.array_equal(before[0], after[0]), action
            assert np.array_equal(before[1], after[1]) and np.array_equal(before[2], after[2])
            assert before[3] == after[3]
            if failed_flash:  # a failed loan leaves its row, nothing else
                assert after[4].n_flash_loans in (
                    before[4].n_flash_loans,
                    before[4].n_flash_loans + 1,
                )
                assert after[4].liquidity_index == before[4].liquidity_index
                assert after[4].n_accounts == before[4].n_accounts
            else:
                assert before[4] == after[4], action

    # Every write-off is recorded: one journal line per bad-debt row, same accounts.
    write_offs = [e for e in ledger.journal if e[3] == "bad debt write-off"]
    rows = pool.bad_debt_frame()
    assert len(write_offs) == len(rows)
    assert [e[0] for e in write_offs] == list(rows.account)
    metrics = pool.metrics()
    for res in pool.reserves:
        units = rows.loc[rows.asset == res.symbol, "amount"].sum()
        assert round(metrics[f"{res.symbol}_bad_debt"] * res.unit) == units
