"""Batch margin deposits equal the sequence of single deposits they replace.

Reference: ``PerpVenue.deposit`` called in row order on a second, identically built venue.
"""

import dataclasses
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginsim.config import MarginTierConfig, PerpConfig
from marginsim.ledger import AssetSpec, Ledger
from marginsim.market.engine import BookSpec, MatchingEngine
from marginsim.protocols.lending import FixedPriceFeed
from marginsim.protocols.perp import PerpContract, PerpVenue

USDC = 10**6
USERS = 6


def build(wallets, registered):
    """A venue with USERS holders; ``registered`` of them already hold a margin account."""
    ledger = Ledger([AssetSpec("USDC", 6)])
    escrow = ledger.add_holder("escrow")
    fees = ledger.add_holder("engine-fees")
    spec = BookSpec("ETH-PERP", "perp", -1, 0, 1, 100, 0.01, 0.01, 0.0002, 0.0005, fees)
    engine = MatchingEngine(ledger, [spec], escrow_holder=escrow)
    config = PerpConfig(
        kind="perp",
        index_oracle="eth",
        insurance_fund=1000.0,
        tiers=[MarginTierConfig(max_notional=0, maintenance_rate=0.05, max_leverage=10)],
    )
    venue = PerpVenue(
        ledger, "perp", config, [PerpContract(0, spec)], FixedPriceFeed({"eth": 2000.0}), engine
    )
    users = [ledger.add_holder(f"u{i}") for i in range(USERS)]
    for h, w in zip(users, wallets, strict=True):
        ledger.mint(h, 0, w, "test")
    for k in registered:
        venue.deposit(users[k], 1)  # registers (when the wallet holds a unit)
    return venue, users


def state(venue):
    snap = venue.snapshot()
    out = [venue.ledger.balances.copy(), list(venue.ledger.journal)]
    for field in dataclasses.fields(snap):
        x = getattr(snap, field.name)
        if isinstance(x, tuple) and x and isinstance(x[0], np.ndarray):
            out.extend(x)
        else:
            out.append(x)
    return out


def assert_same(a, b):
    for x, y in zip(state(a), state(b), strict=True):
        if isinstance(x, np.ndarray):
            assert np.array_equal(x, y, equal_nan=True)
        elif isinstance(x, float) and math.isnan(x):
            assert math.isnan(y)
        else:
            assert x == y


def run_both(wallets, registered, rows):
    batch_venue, users = build(wallets, registered)
    single_venue, _ = build(wallets, registered)
    # Choices 0..USERS-1 are users; the others are ids a single deposit refuses.
    others = [batch_venue.margin_holder, batch_venue.insurance_holder, 10**6, -1]
    ids = [(users + others)[c] for c, _ in rows]
    units = [u for _, u in rows]
    got = batch_venue.deposit_many(np.array(ids, dtype=np.int64), np.array(units, dtype=np.int64))
    want = [single_venue.deposit(h, u).ok for h, u in zip(ids, units, strict=True)]
    assert got.tolist() == want
    assert_same(batch_venue, single_venue)
    batch_venue.ledger.check_conservation()
    return got


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    wallets=st.lists(st.integers(0, 1_000 * USDC), min_size=USERS, max_size=USERS),
    registered=st.lists(st.integers(0, USERS - 1), max_size=3),
    rows=st.lists(
        st.tuples(
            st.integers(0, USERS + 3),
            st.one_of(st.integers(-1, 2), st.integers(1, 1_200 * USDC)),
        ),
        max_size=10,
    ),
)
def test_deposit_many_equals_single_deposits(wallets, registered, rows):
    run_both(wallets, registered, rows)


def test_accounts_register_in_row_order_and_short_wallets_are_refused():
    # Wallets: u0 100, u1 5, u2 100 USDC. Rows deposit 50 for u2, 10 for u1 (refused: 5 held),
    # 50 for u0: u2 gets margin slot 0 and u0 slot 1 (row order, not id order).
    venue, users = build([100 * USDC, 5 * USDC, 100 * USDC] + [0] * (USERS - 3), [])
    ok = venue.deposit_many(
        np.array([users[2], users[1], users[0]]), np.array([50 * USDC, 10 * USDC, 50 * USDC])
    )
    assert ok.tolist() == [True, False, True]
    assert venue._slot[users[2]] == 0 and venue._slot[users[0]] == 1
    assert venue.ledger.balance(users[1], 0) == 5 * USDC
    assert venue.ledger.balance(venue.margin_holder, 0) == 100 * USDC
    run_both(
        [100 * USDC, 5 * USDC, 100 * USDC] + [0] * (USERS - 3),
        [],
        [(2, 50 * USDC), (1, 10 * USDC), (0, 50 * USDC)],
    )
