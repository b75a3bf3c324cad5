import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marginsim.ledger import (
    AssetSpec,
    ConservationError,
    InsufficientBalanceError,
    Ledger,
    LedgerError,
    kernel_transfer,
)


def make_ledger() -> tuple[Ledger, int, int]:
    ledger = Ledger([AssetSpec("USDC", 6), AssetSpec("WETH", 9)])
    return ledger, ledger.add_holder("alice"), ledger.add_holder("bob")


def test_transfer_moves_exact_amounts():
    ledger, alice, bob = make_ledger()
    ledger.mint(alice, 0, 5_000_000, "endowment")
    ledger.transfer(alice, bob, 0, 1_250_000)
    assert ledger.balance(alice, 0) == 3_750_000
    assert ledger.balance(bob, 0) == 1_250_000
    assert ledger.supply(0) == 5_000_000
    ledger.check_conservation()


def test_overdraft_is_refused_naming_holder_asset_balance_and_amount():
    ledger, alice, bob = make_ledger()
    ledger.mint(alice, 1, 10, "endowment")
    with pytest.raises(InsufficientBalanceError) as err:
        ledger.transfer(alice, bob, 1, 11)
    assert "'alice'" in str(err.value) and "WETH" in str(err.value)
    assert "balance 10" in str(err.value) and "amount 11" in str(err.value)
    assert ledger.balance(alice, 1) == 10 and ledger.balance(bob, 1) == 0


def test_negative_amounts_and_unknown_ids_are_refused():
    ledger, alice, bob = make_ledger()
    with pytest.raises(LedgerError, match="must be >= 0"):
        ledger.transfer(alice, bob, 0, -1)
    with pytest.raises(LedgerError, match="unknown holder id 7"):
        ledger.transfer(alice, 7, 0, 0)
    with pytest.raises(LedgerError, match="unknown asset 'DAI'"):
        ledger.asset_id("DAI")
    with pytest.raises(LedgerError, match="needs a reason"):
        ledger.mint(alice, 0, 1, "")


def test_burn_records_reason_and_reduces_supply():
    ledger, alice, _ = make_ledger()
    ledger.mint(alice, 0, 100, "endowment")
    ledger.burn(alice, 0, 40, "repaid stablecoin")
    assert ledger.supply(0) == 60
    assert ledger.journal == [(alice, 0, 100, "endowment"), (alice, 0, -40, "repaid stablecoin")]
    with pytest.raises(InsufficientBalanceError):
        ledger.burn(alice, 0, 61, "too much")
    ledger.check_conservation()


def test_holder_blocks_are_named_and_found():
    ledger, alice, bob = make_ledger()
    first = ledger.add_holders("noise", 1000)
    assert first == 2
    assert ledger.holder_name(first + 999) == "noise[999]"
    assert ledger.holder_id("noise[17]") == first + 17
    assert ledger.holder_name(bob) == "bob"
    names = ledger.holder_names()
    assert names[:4] == ["alice", "bob", "noise[0]", "noise[1]"] and len(names) == 1002
    with pytest.raises(LedgerError):
        ledger.holder_id("noise[1000]")
    with pytest.raises(LedgerError):
        ledger.add_holder("noise")


def test_growth_keeps_balances():
    ledger = Ledger([AssetSpec("USDC", 6)], capacity=1)
    a = ledger.add_holder("a")
    ledger.mint(a, 0, 123, "x")
    ledger.add_holders("many", 500)
    assert ledger.balance(a, 0) == 123
    assert ledger.n_holders == 501


def test_transfer_many_is_netted_and_atomic():
    ledger, alice, bob = make_ledger()
    ledger.mint(alice, 0, 100, "x")
    # bob pays on money he receives in the same batch: fine when netted
    ledger.transfer_many([alice, bob], [bob, alice], [0, 0], [100, 30])
    assert (ledger.balance(alice, 0), ledger.balance(bob, 0)) == (30, 70)
    before = ledger.balances.copy()
    with pytest.raises(InsufficientBalanceError, match="'alice'.*net outflow 41"):
        ledger.transfer_many([alice, bob], [bob, alice], 0, [71, 30])
    np.testing.assert_array_equal(ledger.balances, before)


def test_balances_view_is_read_only():
    ledger, alice, _ = make_ledger()
    with pytest.raises(ValueError):
        ledger.balances[alice, 0] = 5


def test_conservation_check_detects_tampering():
    ledger, alice, _ = make_ledger()
    ledger.mint(alice, 0, 100, "x")
    ledger.kernel_balances()[alice, 0] += 1  # what a faulty kernel would do
    with pytest.raises(ConservationError, match="USDC: holders sum to 101, minted - burned = 100"):
        ledger.check_conservation()


def test_conservation_sum_is_exact_near_int64_limits():
    ledger = Ledger([AssetSpec("X", 0)])
    holders = ledger.add_holders("h", 3)
    big = 2**62
    ledger.mint(holders, 0, big, "x")
    ledger.mint(holders + 1, 0, big - 1, "x")
    ledger.check_conservation()
    with pytest.raises(LedgerError, match="overflow"):
        ledger.mint(holders + 2, 0, big, "x")


def test_kernel_transfer_refuses_overdraft():
    ledger, alice, bob = make_ledger()
    ledger.mint(alice, 0, 10, "x")
    bal = ledger.kernel_balances()
    assert not kernel_transfer(bal, alice, bob, 0, 11)
    assert kernel_transfer(bal, alice, bob, 0, 10)
    assert (ledger.balance(alice, 0), ledger.balance(bob, 0)) == (0, 10)
    ledger.check_conservation()


ops = st.lists(
    st.tuples(
        st.sampled_from(["mint", "burn", "transfer", "many"]),
        st.integers(0, 4),
        st.integers(0, 4),
        st.integers(0, 1),
        st.integers(0, 10**12),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_property_conservation_and_no_negative_balance(operations):
    ledger = Ledger([AssetSpec("USDC", 6), AssetSpec("WETH", 9)])
    first = ledger.add_holders("h", 5)
    shadow = np.zeros((5, 2), dtype=object)  # independent model in Python integers
    for op, a, b, asset, amount in operations:
        try:
            if op == "mint":
                ledger.mint(first + a, asset, amount, "p")
                shadow[a, asset] += amount
            elif op == "burn":
                ledger.burn(first + a, asset, amount, "p")
                shadow[a, asset] -= amount
            elif op == "transfer":
                ledger.transfer(first + a, first + b, asset, amount)
                shadow[a, asset] -= amount
                shadow[b, asset] += amount
            else:
                ledger.transfer_many(
                    [first + a, first + b], [first + b, first + a], asset, [amount, amount // 3]
                )
                shadow[a, asset] += amount // 3 - amount
                shadow[b, asset] += amount - amount // 3
        except InsufficientBalanceError:
            pass
        ledger.check_conservation()
        assert (ledger.balances >= 0).all()
        assert [[int(x) for x in row] for row in ledger.balances] == shadow.tolist()


def test_snapshot_restore_undoes_everything_since():
    ledger, alice, bob = make_ledger()
    ledger.mint(alice, 0, 100, "x")
    snap = ledger.snapshot()
    ledger.transfer(alice, bob, 0, 60)
    ledger.mint(bob, 1, 5, "flash")
    carol = ledger.add_holder("carol")
    ledger.transfer(bob, carol, 1, 5)
    ledger.restore(snap)
    assert [ledger.balance(h, a) for h in (alice, bob, carol) for a in (0, 1)] == [
        100,
        0,
        0,
        0,
        0,
        0,
    ]
    assert ledger.supply(1) == 0 and len(ledger.journal) == 1
    ledger.check_conservation()


def test_mint_block_endows_consecutive_holders_with_one_journal_line():
    ledger, alice, _ = make_ledger()
    first = ledger.add_holders("pop", 1000)
    ledger.mint_block(first, 1000, 0, 25, "initial endowment")
    assert ledger.balances[first : first + 1000, 0].tolist() == [25] * 1000
    assert ledger.balance(alice, 0) == 0 and ledger.supply(0) == 25_000
    assert ledger.journal == [(first, 0, 25_000, "initial endowment (1000 holders)")]
    with pytest.raises(LedgerError, match="unknown holder id 1002"):
        ledger.mint_block(first, 1001, 0, 1, "x")
    ledger.check_conservation()
