"""Constant-product pool: hand-computed swaps and liquidity, refusals, invariants, reference."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marginsim.ledger import AssetSpec, InsufficientBalanceError, Ledger
from marginsim.market.amm import ConstantProductPool, SwapStatus

BASE, QUOTE, LP = 0, 1, 2


def make_pool(base=1000, quote=2_000_000, fee_ppm=3000, decimals=(0, 0)):
    """A pool seeded by holder 'lp' with ``base``/``quote``, and a funded trader 'alice'."""
    ledger = Ledger(
        [AssetSpec("WETH", decimals[0]), AssetSpec("USDC", decimals[1]), AssetSpec("LP-amm", 9)]
    )
    pool = ConstantProductPool(
        ledger, "amm", BASE, QUOTE, LP, ledger.add_holder("amm"), fee_ppm=fee_ppm
    )
    lp, alice = ledger.add_holder("lp"), ledger.add_holder("alice")
    if base or quote:
        ledger.mint(lp, BASE, base, "seed")
        ledger.mint(lp, QUOTE, quote, "seed")
        pool.add_liquidity(lp, base, quote)
    ledger.mint(alice, BASE, 10**6, "endowment")
    ledger.mint(alice, QUOTE, 10**9, "endowment")
    return ledger, pool, lp, alice


# ----------------------------------------------------------------------------- swaps
def test_sell_base_exact_v2_output():
    ledger, pool, _, alice = make_pool()
    # in_with_fee = 10 * 997_000 = 9_970_000
    # out = 9_970_000 * 2_000_000 // (1000 * 10^6 + 9_970_000)
    #     = 19_940_000_000_000 // 1_009_970_000 = 19_743 (remainder 162_290_000)
    result = pool.swap(alice, -1, 10)
    assert result.ok and (result.amount_in, result.amount_out) == (10, 19_743)
    assert result.price == 1974.3
    assert pool.reserves == (1010, 2_000_000 - 19_743)
    # Without the fee the pool would have paid 10 * 2_000_000 // 1010 = 19_801: the 58-unit
    # difference stays in the pool for its liquidity providers.
    assert 10 * 2_000_000 // 1010 - 19_743 == 58
    assert ledger.balance(alice, QUOTE) == 10**9 + 19_743
    assert ledger.balance(alice, BASE) == 10**6 - 10
    ledger.check_conservation()


def test_buy_base_exact_v2_output():
    ledger, pool, _, alice = make_pool()
    # in_with_fee = 100_000 * 997_000 = 99_700_000_000
    # out = 99_700_000_000 * 1000 // (2_000_000 * 10^6 + 99_700_000_000)
    #     = 99_700_000_000_000 // 2_099_700_000_000 = 47
    assert pool.quote_out(1, 100_000) == 47
    result = pool.swap(alice, 1, 100_000)
    assert (result.status, result.amount_in, result.amount_out) == (SwapStatus.OK, 100_000, 47)
    assert pool.reserves == (953, 2_100_000)
    # 1 quote unit buys nothing: floor(997_000 * 1000 / (2 * 10^12 + 997_000)) = 0.
    assert pool.quote_out(1, 1) == 0
    ledger.check_conservation()


def test_amount_in_for_is_the_least_input_that_pays_the_output():
    _, pool, _, _ = make_pool()
    # ceil(47 * 2_000_000 * 10^6 / (997_000 * (1000 - 47))) = ceil(98_932.7...) = 98_933
    assert pool.amount_in_for(1, 47) == 98_933
    assert pool.quote_out(1, 98_933) == 47 and pool.quote_out(1, 98_932) == 46
    assert pool.amount_in_for(-1, 19_743) == 10 and pool.quote_out(-1, 9) < 19_743
    assert pool.amount_in_for(1, 0) == 0
    with pytest.raises(ValueError, match="cannot pay out 1000 units: the output reserve is 1000"):
        pool.amount_in_for(1, 1000)
    with pytest.raises(ValueError, match="'amount_out' parameter"):
        pool.amount_in_for(1, -1)


def test_market_order_cost_mirrors_the_book_interface():
    _, pool, _, _ = make_pool()
    assert pool.market_order_cost(1, 47) == (47, 98_933, 98_933 / 47)
    assert pool.market_order_cost(-1, 10) == (10, 19_743, 1974.3)
    assert pool.market_order_cost(1, 1000) == (0, 0, None)  # the whole reserve: impossible
    assert pool.market_order_cost(1, 0) == (0, 0, None)
    assert pool.reserves == (1000, 2_000_000)  # quotes change nothing


def test_zero_fee_pool_keeps_k_up_to_rounding():
    _, pool, _, alice = make_pool(fee_ppm=0)
    # out = 10 * 2_000_000 // 1010 = 19_801 (19_801.98...)
    assert pool.swap(alice, -1, 10).amount_out == 19_801
    assert pool.k == 1010 * (2_000_000 - 19_801) >= 1000 * 2_000_000


def test_mid_price_is_in_human_units():
    ledger, pool, lp, alice = make_pool(
        base=5000 * 10**9, quote=10_000_000 * 10**6, decimals=(9, 6)
    )
    assert pool.mid_price() == 2000.0
    filled, quote_units, avg = pool.market_order_cost(1, 10**9)  # buy 1 WETH
    # ceil(10^9 * 10^13 * 10^6 / (997_000 * (5 * 10^12 - 10^9)))
    expected = -(-(10**9 * 10**13 * 10**6) // (997_000 * (5 * 10**12 - 10**9)))
    # = ceil(2_006_419_338.9...): about 2000 * 5000 / 4999 / 0.997 USDC
    assert (filled, quote_units) == (10**9, expected) and quote_units == 2_006_419_339
    assert avg == 2006.419339
    ledger.mint(alice, QUOTE, quote_units, "endowment")
    result = pool.swap(alice, 1, quote_units)
    assert result.amount_out == 10**9 and result.price == 2006.419339
    assert pool.mid_price() == pytest.approx((10_000_000 + 2006.419339) / 4999, rel=1e-15)


def test_k_never_decreases_over_a_sequence_of_swaps():
    ledger, pool, _, alice = make_pool()
    ks = [pool.k]
    for side, amount in [
        (-1, 10),
        (1, 100_000),
        (-1, 1),
        (1, 2_000),
        (-1, 500),
        (1, 3),
        (1, 5_000_000),
        (-1, 7),
    ]:
        result = pool.swap(alice, side, amount)
        assert result.ok or result.status is SwapStatus.ZERO_OUTPUT
        ks.append(pool.k)
        ledger.check_conservation()
    assert all(b >= a for a, b in zip(ks, ks[1:], strict=False))
    assert ks[-1] > ks[0]


def test_swaps_are_recorded_with_the_step_the_model_sets():
    _, pool, _, alice = make_pool()
    assert pool.swaps_frame().empty and pool.last_price() is None
    pool.step = 3
    pool.swap(alice, -1, 10)
    pool.swap(alice, 1, 1)  # refused (zero output): not recorded
    pool.step = 4
    # Reserves are now 1010 / 1_980_257: out = 99_700_000_000 * 1010 // (1_980_257 * 10^6 +
    # 99_700_000_000) = 100_697_000_000_000 // 2_079_957_000_000 = 48
    pool.swap(alice, 1, 100_000)
    frame = pool.swaps_frame()
    assert frame.to_dict("list") == {
        "step": [3, 4],
        "pool": ["amm", "amm"],
        "holder": [alice, alice],
        "side": [-1, 1],
        "amount_in": [10, 100_000],
        "amount_out": [19_743, 48],
        "price": [1974.3, 100_000 / 48],
    }
    assert [str(t) for t in frame.dtypes] == [
        "int64",
        "object",
        "int64",
        "int64",
        "int64",
        "int64",
        "float64",
    ]
    assert pool.last_price() == 100_000 / 48


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "side, amount, min_out, status, quoted",
    [
        (-1, 0, 0, SwapStatus.NON_POSITIVE_AMOUNT, 0),
        (-1, -5, 0, SwapStatus.NON_POSITIVE_AMOUNT, 0),
        (1, 1, 0, SwapStatus.ZERO_OUTPUT, 0),
        (-1, 10, 19_744, SwapStatus.BELOW_MIN_OUT, 19_743),
        # 1_000_001 * 997_000 * 2_000_000 // (1000 * 10^6 + 1_000_001 * 997_000) = 1_997_995
        (-1, 10**6 + 1, 0, SwapStatus.INSUFFICIENT_BALANCE, 1_997_995),
    ],
)
def test_refused_swaps_move_nothing(side, amount, min_out, status, quoted):
    ledger, pool, _, alice = make_pool()
    before = ledger.balances.copy()
    result = pool.swap(alice, side, amount, min_out=min_out)
    assert result.status is status and not result.ok
    assert (result.amount_in, result.amount_out, result.price) == (0, 0, None)
    assert result.quoted_out == quoted
    assert result.reason
    np.testing.assert_array_equal(ledger.balances, before)
    assert pool.swaps_frame().empty


def test_refusal_reasons_name_the_numbers():
    _, pool, _, alice = make_pool()
    assert "has 1000000, needs 1000001" in pool.swap(alice, -1, 10**6 + 1).reason
    assert pool.swap(alice, -1, 10, min_out=19_744).reason == (
        "output 19743 is below min_out 19744"
    )


def test_an_empty_pool_refuses_swaps_and_has_no_price():
    ledger, pool, _, alice = make_pool(base=0, quote=0)
    result = pool.swap(alice, -1, 10)
    assert result.status is SwapStatus.EMPTY_POOL
    assert pool.mid_price() is None and pool.quote_out(-1, 10) == 0
    assert pool.market_order_cost(-1, 10) == (0, 0, None)
    with pytest.raises(ValueError, match="cannot pay out"):
        pool.amount_in_for(1, 1)


def test_bad_swap_arguments_raise():
    _, pool, _, alice = make_pool()
    with pytest.raises(ValueError, match=r"'side' parameter .* must be \+1 \(buy base\) or -1"):
        pool.swap(alice, 0, 10)
    with pytest.raises(ValueError, match="'min_out' parameter"):
        pool.swap(alice, 1, 10, min_out=-1)
    with pytest.raises(ValueError, match="'holder' parameter"):
        pool.swap(pool.pool_holder, 1, 10)


# ----------------------------------------------------------------------------- liquidity
def test_liquidity_add_and_remove_exact_numbers():
    ledger, pool, lp, _ = make_pool()
    assert ledger.balance(lp, LP) == 44_721 == pool.total_shares  # isqrt(2 * 10^9)
    bob = ledger.add_holder("bob")
    ledger.mint(bob, BASE, 100, "endowment")
    ledger.mint(bob, QUOTE, 300_000, "endowment")
    # shares = min(100 * 44_721 // 1000, 300_000 * 44_721 // 2_000_000) = min(4472, 6708)
    # bob pays ceil(4472 * 1000 / 44_721) = 100 and ceil(4472 * 2_000_000 / 44_721) = 199_996
    assert pool.quote_add_liquidity(100, 300_000) == (4472, 100, 199_996)
    assert pool.add_liquidity(bob, 100, 300_000) == 4472
    assert (ledger.balance(bob, BASE), ledger.balance(bob, QUOTE)) == (0, 100_004)
    assert pool.reserves == (1100, 2_199_996) and pool.total_shares == 49_193
    # out = (4472 * 1100 // 49_193, 4472 * 2_199_996 // 49_193) = (99, 199_995)
    assert pool.remove_liquidity(bob, 4472) == (99, 199_995)
    assert ledger.balance(bob, LP) == 0 and pool.total_shares == 44_721
    assert pool.reserves == (1001, 2_000_001)  # the round trip's rounding stays in the pool
    ledger.check_conservation()
    assert ledger.journal[-1] == (bob, LP, -4472, "LP shares of amm redeemed")


def test_the_last_provider_takes_everything_including_fees():
    ledger, pool, lp, alice = make_pool()
    pool.swap(alice, -1, 10)
    pool.swap(alice, 1, 19_743)  # back the other way
    base, quote = pool.reserves
    assert pool.remove_liquidity(lp, 44_721) == (base, quote)
    assert pool.reserves == (0, 0) and pool.mid_price() is None
    assert base * quote > 1000 * 2_000_000  # the fees accrued to the provider
    # An emptied pool starts over with the first-deposit rule.
    assert pool.add_liquidity(lp, 4, 9) == 6
    ledger.check_conservation()


def test_failed_liquidity_operations_move_nothing():
    ledger, pool, lp, alice = make_pool()
    before = ledger.balances.copy()
    poor = ledger.add_holder("poor")
    ledger.mint(poor, BASE, 100, "endowment")  # no quote at all
    before = ledger.balances.copy()
    with pytest.raises(InsufficientBalanceError, match="has 0 units of USDC, needs 199996"):
        pool.add_liquidity(poor, 100, 300_000)
    with pytest.raises(ValueError, match="would mint no share"):
        pool.add_liquidity(alice, 10, 1)  # 1 * 44_721 // 2_000_000 = 0 shares
    with pytest.raises(ValueError, match="'base_units' parameter .* an int > 0"):
        pool.add_liquidity(alice, 0, 10)
    with pytest.raises(InsufficientBalanceError, match="has 44721 shares"):
        pool.remove_liquidity(lp, 44_722)
    with pytest.raises(ValueError, match="would pay out 0 base and 44 quote units"):
        pool.remove_liquidity(lp, 1)  # (1 * 1000 // 44_721, 1 * 2_000_000 // 44_721)
    np.testing.assert_array_equal(ledger.balances, before)


def test_constructor_validates_parameters():
    ledger = Ledger([AssetSpec("A", 0), AssetSpec("B", 0), AssetSpec("L", 0)])
    holder = ledger.add_holder("pool")
    with pytest.raises(ValueError) as err:
        ConstantProductPool(ledger, "p", 0, 1, 2, holder, fee_ppm=1_000_000)
    assert str(err.value) == (
        "The 'fee_ppm' parameter of ConstantProductPool must be an int in "
        "[0, 1000000). Got 1000000 instead."
    )
    with pytest.raises(ValueError, match="three different assets"):
        ConstantProductPool(ledger, "p", 0, 1, 1, holder)
    with pytest.raises(ValueError, match=r"'lp_asset' parameter .* asset id in \[0, 2\]"):
        ConstantProductPool(ledger, "p", 0, 1, 3, holder)
    with pytest.raises(ValueError, match="'pool_holder' parameter"):
        ConstantProductPool(ledger, "p", 0, 1, 2, 5)
    with pytest.raises(ValueError, match="'pool_id' parameter"):
        ConstantProductPool(ledger, "", 0, 1, 2, holder)


# ----------------------------------------------------------------------------- properties
def exact_reference_out(amount_in, reserve_in, reserve_out, fee_ppm):
    """The v2 formula in exact rationals, written independently of the pool.

    (A float64 version is off by more than one unit near 1e15, where its spacing is 0.125.)
    """
    from fractions import Fraction

    effective = amount_in * (1 - Fraction(fee_ppm, 10**6))
    return effective * reserve_out / (reserve_in + effective)


@settings(max_examples=300, deadline=None)
@given(
    reserve_in=st.integers(1, 10**15),
    reserve_out=st.integers(1, 10**15),
    amount_in=st.integers(1, 10**15),
    fee_ppm=st.sampled_from([0, 500, 3000, 10_000, 99_999]),
)
def test_output_is_within_one_unit_of_an_exact_reference(
    reserve_in, reserve_out, amount_in, fee_ppm
):
    ledger, pool, _, _ = make_pool(base=0, quote=0, fee_ppm=fee_ppm)
    ledger.mint(pool.pool_holder, QUOTE, reserve_in, "reserves")
    ledger.mint(pool.pool_holder, BASE, reserve_out, "reserves")
    out = pool.quote_out(1, amount_in)
    reference = exact_reference_out(amount_in, reserve_in, reserve_out, fee_ppm)
    assert abs(out - reference) <= 1
    # The exact value is the floor of the rational formula, and it never reaches the reserve.
    g = 1_000_000 - fee_ppm
    exact = Fraction(amount_in * g * reserve_out, reserve_in * 1_000_000 + amount_in * g)
    assert out == exact.__floor__() and out < reserve_out
    if 0 < out:
        needed = pool.amount_in_for(1, out)
        assert needed <= amount_in and pool.quote_out(1, needed) >= out
        assert pool.quote_out(1, needed - 1) < out


operation = st.one_of(
    st.tuples(st.just("swap"), st.sampled_from([1, -1]), st.floats(0.0, 3.0)),
    st.tuples(st.just("add"), st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
    st.tuples(st.just("remove"), st.floats(0.0, 1.0), st.just(0.0)),
)


@settings(max_examples=150, deadline=None)
@given(
    fee_ppm=st.sampled_from([0, 3000, 50_000]),
    ops=st.lists(operation, min_size=1, max_size=25),
)
def test_random_operation_sequences_keep_k_and_value_per_share(fee_ppm, ops):
    ledger, pool, lp, alice = make_pool(base=10**6, quote=2 * 10**9, fee_ppm=fee_ppm)
    ledger.mint(lp, BASE, 10**6, "endowment")
    ledger.mint(lp, QUOTE, 2 * 10**9, "endowment")
    for op, a, b in ops:
        k_before, shares_before = pool.k, pool.total_shares
        if op == "swap":
            asset_in = QUOTE if a > 0 else BASE
            pool.swap(alice, a, int(b * ledger.balance(alice, asset_in) / 10))
            assert pool.k >= k_before  # swaps never decrease k
        elif op == "add":
            try:
                pool.add_liquidity(
                    lp, int(a * ledger.balance(lp, BASE)), int(b * ledger.balance(lp, QUOTE))
                )
            except ValueError:
                pass  # too small to mint a share: refused, checked below like any step
        else:
            try:
                pool.remove_liquidity(lp, int(a * ledger.balance(lp, LP)))
            except ValueError:
                pass
        # Value per share, k / shares^2, never decreases: every rounding favours the pool.
        assert pool.k * shares_before**2 >= k_before * pool.total_shares**2
        ledger.check_conservation()
        base, quote = pool.reserves
        assert pool.total_shares == 0 or (base > 0 and quote > 0)
