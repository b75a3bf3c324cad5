"""Vectorised reads of a perp venue for populations: margin balances and withdrawable margin."""

import numpy as np
import pytest

from tests.protocols.test_perp import USDC, lots, make_world


def test_margin_balances_match_the_scalar_read_and_unknown_holders_read_zero():
    w = make_world(maker_fee=0.0, taker_fee=0.0)
    a, b = w.trader("a", 1000), w.trader("b", 1000)
    c = w.trader("c", 300)
    w.open(a, b, +1, 2000.0, lots(1))
    # Mark 1,950: a (long 1 ETH) has 1,000 - 50 = 950 USDC, b (short) 1,050, c 300.
    w.mark(1950.0, step=1)
    got = w.venue.margin_balances(np.array([a, b, c, 10_000, w.venue.insurance_holder]))
    assert got.tolist() == pytest.approx([950 * USDC, 1050 * USDC, 300 * USDC, 0.0, 0.0])
    for h, value in zip((a, b, c), got[:3], strict=True):
        assert value == pytest.approx(w.venue.margin_balance(h))
    # Without a mark a position adds no unrealised PnL: the wallets alone.
    w.mark(None, step=2)
    assert w.venue.margin_balances(np.array([a, b])).tolist() == [1000 * USDC, 1000 * USDC]


def test_withdrawable_units_is_exactly_what_withdraw_allows():
    w = make_world()
    a = w.trader("a", 500, wallet=1000)
    b = w.trader("b", 10_000)
    assert w.venue.withdrawable_units(a) == 500 * USDC
    assert w.venue.set_leverage(a, 0, 10).ok
    w.open(a, b, +1, 2000.0, lots(1))
    # As in test_deposit_withdraw...: mark 1,950, wallet 499, unrealised -50, initial
    # margin 195: free = 499 - 50 - 195 = 254 USDC.
    w.mark(1950.0, step=1)
    assert w.venue.withdrawable_units(a) == 254 * USDC
    assert not w.venue.withdraw(a, 254 * USDC + 1).ok
    assert w.venue.withdraw(a, 254 * USDC).ok
    assert w.venue.withdrawable_units(a) == 0
    # Unknown holders and accounts without a mark for a contract they hold: nothing.
    assert w.venue.withdrawable_units(10_000) == 0
    w.mark(None, step=2)
    assert w.venue.withdrawable_units(a) == 0
    w.check()
