"""The model runs agents' lending and margin actions through the batch methods with the
outcome of the single calls made row by row (the rule it replaced)."""

import numpy as np
import pytest

from marginsim.agents.leveraged import PerpMarginAction, PerpMarginActions
from marginsim.agents.loopers import LendingAction, LendingActions
from marginsim.experiments.scenarios import load_scenario
from marginsim.model import MarginModel


def model_after(steps):
    scenario = load_scenario("default").with_overrides(
        {"agents.leveraged_traders.count": 300, "agents.lending_loopers.count": 300}
    )
    model = MarginModel(scenario)
    for _ in range(steps):
        model.step()
    return model


def reference_lending(model, actions):
    """The row-by-row rule: each row through the pool's single method, in order."""
    pool = model.lending[actions.pool]
    refused = 0
    for kind, holder, symbol, amount in zip(
        actions.kind.tolist(),
        actions.holder.tolist(),
        actions.symbol.tolist(),
        actions.amount.tolist(),
        strict=True,
    ):
        if kind == LendingAction.SUPPLY:
            ok = pool.supply(holder, symbol, amount).ok
        elif kind == LendingAction.WITHDRAW:
            ok = pool.withdraw(holder, symbol, amount).ok
        elif kind == LendingAction.BORROW:
            ok = pool.borrow(holder, symbol, amount).ok
        else:
            owed = pool.debt_units(holder, symbol)
            ok = pool.repay(holder, symbol, min(amount, owed)).ok if owed else False
        refused += not ok
    return refused


def reference_margin(model, actions):
    venue = model.perps[actions.venue]
    refused = 0
    for kind, holder, amount in zip(
        actions.kind.tolist(), actions.holder.tolist(), actions.amount.tolist(), strict=True
    ):
        if kind == PerpMarginAction.DEPOSIT:
            ok = venue.deposit(holder, amount).ok
        else:
            units = min(amount, venue.withdrawable_units(holder))
            ok = units > 0 and venue.withdraw(holder, units).ok
        refused += not ok
    return refused


def same_state(a, b):
    assert np.array_equal(a.ledger.balances, b.ledger.balances)
    assert a.ledger.journal == b.ledger.journal
    assert np.array_equal(a.lending["aave"].accounts, b.lending["aave"].accounts)
    pa, pb = a.perps["perpx"], b.perps["perpx"]
    assert np.array_equal(pa._slot, pb._slot) and np.array_equal(pa._wallet, pb._wallet)


@pytest.fixture(scope="module")
def twins():
    return model_after(30), model_after(30)


def test_lending_runs_with_repeated_holders_equal_row_by_row(twins):
    batch_model, single_model = twins
    pool = batch_model.lending["aave"]
    usdc = pool.reserve("USDC")
    indebted = [int(x) for x in pool.accounts if pool.debt_units(int(x), "USDC") > 0]
    h = np.array(indebted[:6], dtype=np.int64)
    assert h.size == 6
    for model in twins:  # wallets that can repay
        for x in h.tolist():
            model.ledger.mint(x, usdc.asset, 10**10, reason="test")
    owed = np.array([pool.debt_units(x, "USDC") for x in h.tolist()], dtype=np.int64)
    rng = np.random.default_rng(5)
    # Repays with a holder twice: the first leaves 5 units owed, so the second (asking
    # 1 USDC) repays min(1 USDC, 5) = 5 units, which needs the debt its first row left.
    # Then borrows (one far beyond borrowing power), withdrawals, supplies, full repays.
    parts = [
        LendingActions.build(
            "aave",
            LendingAction.REPAY,
            np.r_[h[:3], h[:3]],
            "USDC",
            np.r_[owed[:3] - 5, [10**6] * 3],
        ),
        LendingActions.build(
            "aave", LendingAction.BORROW, h, "USDC", rng.integers(1, 3_000_000_000, 6)
        ),
        LendingActions.build("aave", LendingAction.BORROW, h[:1], "USDC", 10**15),
        LendingActions.build("aave", LendingAction.WITHDRAW, np.r_[h[3:], h[3:]], "WETH", 10**17),
        LendingActions.build("aave", LendingAction.SUPPLY, h, "USDC", 1_000_000),
        LendingActions.build("aave", LendingAction.REPAY, h[::-1], "USDC", 10**12),
    ]
    actions = LendingActions.concat("aave", parts)
    got = batch_model._execute_lending(actions)
    want = reference_lending(single_model, actions)
    assert got == want
    assert 0 < want < len(actions)  # some rows executed, some refused
    same_state(batch_model, single_model)


def test_margin_runs_equal_row_by_row(twins):
    batch_model, single_model = twins
    venue = batch_model.perps["perpx"]
    h = batch_model.lending["aave"].accounts[:5]
    actions = PerpMarginActions.concat(
        "perpx",
        [
            PerpMarginActions.build("perpx", PerpMarginAction.DEPOSIT, h, 1_000_000),
            PerpMarginActions.build("perpx", PerpMarginAction.WITHDRAW, h[:2], 400_000),
            PerpMarginActions.build("perpx", PerpMarginAction.DEPOSIT, np.r_[h[:2], h[:2]], 10**13),
        ],
    )
    got = batch_model._execute_margin(actions)
    want = reference_margin(single_model, actions)
    assert got == want
    assert venue.ledger is batch_model.ledger
    same_state(batch_model, single_model)
