"""Invariants of the CDP protocol over random action sequences (hypothesis)."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginsim.config import AuctionConfig, CdpConfig
from marginsim.ledger import AssetSpec, Ledger
from marginsim.protocols.cdp import CdpProtocol

WETH = 10**9
DAI = 10**6
USERS = 3
KEEPERS = 2
KEEPER_DAI = 50_000 * DAI
# Each user starts with a vault of 10 WETH and this debt (collateralisation 1.67, 2.22 and
# 3.33 at 2000), so that price moves make vaults unsafe and auctions common.
INITIAL_DEBT = (12_000 * DAI, 9_000 * DAI, 6_000 * DAI)


class Feed:
    def __init__(self) -> None:
        self.eth: float | None = 2000.0

    def price(self, ref: str | float) -> float | None:
        return float(ref) if isinstance(ref, float) else self.eth


@dataclasses.dataclass
class Tally:
    """What the test saw happen, counted from the results alone."""

    drawn: int = 0
    repaid: int = 0
    fees: int = 0
    raised: int = 0
    bad: int = 0


def build() -> tuple[Ledger, CdpProtocol, Feed, list[int], list[int]]:
    """Three users with vaults, two keepers holding stablecoin bought elsewhere."""
    ledger = Ledger([AssetSpec("WETH", 9), AssetSpec("DAI", 6)])
    feed = Feed()
    cfg = CdpConfig(
        kind="cdp",
        collateral="WETH",
        stablecoin="DAI",
        price="eth",
        liquidation_ratio=1.5,
        stability_fee=0.05,
        debt_ceiling=60_000.0,
        auction=AuctionConfig(
            start_multiplier=1.2,
            step_decay=0.9,
            reset_after_steps=2,
            reset_below=0.5,
            penalty=0.13,
            max_resets=1,
        ),
    )
    cdp = CdpProtocol(ledger, "maker", cfg, feed)
    users = [ledger.add_holder(f"user{i}") for i in range(USERS)]
    keepers = [ledger.add_holder(f"keeper{i}") for i in range(KEEPERS)]
    for u in users:
        ledger.mint(u, 0, 100 * WETH, reason="endowment")
    for k in keepers:
        ledger.mint(k, 1, KEEPER_DAI, reason="keeper endowment")
    for u, debt in zip(users, INITIAL_DEBT, strict=True):
        cdp.open_position(u, 10 * WETH, debt)
    return ledger, cdp, feed, users, keepers


def amount(whole: int) -> st.SearchStrategy[int]:
    """Round amounts (exact boundaries) mixed with arbitrary unit counts."""
    return st.integers(0, 30).map(lambda k: k * whole // 10) | st.integers(0, 3 * whole)


user = st.integers(0, USERS - 1)
keeper = st.integers(0, KEEPERS - 1)
PARAMS = {
    "deposit": st.tuples(st.just("deposit"), user, amount(10 * WETH)),
    "withdraw": st.tuples(st.just("withdraw"), user, amount(10 * WETH)),
    "draw": st.tuples(st.just("draw"), user, amount(10_000 * DAI)),
    "repay": st.tuples(st.just("repay"), user, amount(5_000 * DAI)),
    "repay_all": st.tuples(st.just("repay_all"), user),
    "give": st.tuples(st.just("give"), user, user, amount(1_000 * DAI)),
    "price": st.tuples(
        st.just("price"), st.sampled_from([None, 700.0, 1100.0, 1350.0, 1700.0, 2000.0])
    ),
    "advance": st.tuples(st.just("advance"), st.integers(1, 4)),
    # A keeper barks, often right after the price moved (the move is applied first).
    "bark": st.tuples(st.just("bark"), user, keeper, st.sampled_from([None, 700.0, 1100.0])),
    "take": st.tuples(
        st.just("take"),
        st.integers(-1, 4),  # a running auction by position; -1: an id that does not exist
        keeper,
        amount(10 * WETH),
        st.sampled_from([500.0, 1000.0, 1500.0, 3000.0]),
    ),
}
# Kinds are drawn with repetition as weights, so that sequences often reach liquidations.
KINDS = ["deposit", "withdraw", "draw", "draw", "repay", "repay_all", "give"]
KINDS += ["price"] * 3 + ["advance"] * 3 + ["bark"] * 3 + ["take"] * 5
ACTION = st.sampled_from(KINDS).flatmap(PARAMS.__getitem__)


def state(ledger: Ledger, cdp: CdpProtocol, users: list[int]) -> tuple:
    """Everything a refused action must leave untouched."""
    return (
        ledger.balances.tolist(),
        ledger.minted.tolist(),
        ledger.burned.tolist(),
        len(ledger.journal),
        [(cdp.vault(u).collateral_units, cdp.vault(u).debt_units) for u in users],
        [dataclasses.astuple(a) for a in cdp.active_auctions()],
        cdp.totals(),
        cdp.rate,
    )


def run(actions, ledger, cdp, feed, users, keepers, tally: Tally, clock: list[int]) -> None:
    """Apply actions, checking the invariants after each one."""
    for action in actions:
        kind = action[0]
        before = state(ledger, cdp, users)
        ok = True
        if kind == "deposit":
            ok = cdp.open_or_deposit(users[action[1]], action[2]).ok
        elif kind == "withdraw":
            ok = cdp.withdraw(users[action[1]], action[2]).ok
        elif kind == "draw":
            r = cdp.draw(users[action[1]], action[2])
            ok, tally.drawn = r.ok, tally.drawn + r.amount_units
        elif kind == "repay":
            r = cdp.repay(users[action[1]], action[2])
            ok, tally.repaid = r.ok, tally.repaid + r.amount_units
        elif kind == "repay_all":
            r = cdp.repay_all(users[action[1]])
            ok, tally.repaid = r.ok, tally.repaid + r.amount_units
        elif kind == "give":
            src, dst = users[action[1]], users[action[2]]
            units = min(action[3], ledger.balance(src, 1))
            ledger.transfer(src, dst, 1, units)
        elif kind == "price":
            feed.eth = action[1]
        elif kind == "advance":  # the model's order: accrual, then the auction clock
            clock[0] += action[1]
            tally.fees += cdp.accrue(clock[0], 30 * 86_400.0)
            for auction_id in cdp.tick(clock[0]).expired:
                tally.bad += cdp.auction(auction_id).shortfall_units
        elif kind == "bark":
            if action[3] is not None:
                feed.eth = action[3]
                before = state(ledger, cdp, users)
            ok = cdp.bark(users[action[1]], keepers[action[2]]).ok
        elif kind == "take":
            running = cdp.active_auctions()
            target = 99 if action[1] < 0 or not running else running[action[1] % len(running)]
            target = target if isinstance(target, int) else target.auction_id
            r = cdp.take(target, keepers[action[2]], action[3], action[4])
            ok = r.ok
            tally.raised += r.debt_repaid_units
            tally.bad += r.shortfall_units
            if ok:
                assert r.paid_units == r.debt_repaid_units + r.penalty_units
                assert r.collateral_units > 0 and r.price <= action[4]
        if not ok:
            assert state(ledger, cdp, users) == before, f"refused {action} changed state"
        check(ledger, cdp, users, keepers, tally)


def check(ledger, cdp, users, keepers, tally: Tally) -> None:
    ledger.check_conservation()  # exact sums and no negative balance
    cdp.check_invariants()
    vault_debt = sum(cdp.vault(u).debt_units for u in users)
    auctions = cdp.active_auctions()
    auction_debt = sum(a.debt_units for a in auctions)
    # Debt never disappears: what was drawn, plus fees, minus what was repaid or raised at
    # auction, is in a vault, in a running auction, or recorded as bad debt.
    assert vault_debt + auction_debt + tally.bad == (
        tally.drawn + tally.fees - tally.repaid - tally.raised
    )
    # Every stablecoin unit the protocol created is matched by debt or by system debt.
    protocol_supply = ledger.supply(1) - KEEPERS * KEEPER_DAI
    assert protocol_supply == vault_debt + auction_debt + cdp.totals()["system_debt"]
    assert ledger.balance(cdp.vaults_holder, 0) == sum(cdp.vault(u).collateral_units for u in users)
    assert ledger.balance(cdp.auctions_holder, 0) == sum(a.lot_units for a in auctions)
    assert ledger.supply(0) == USERS * 100 * WETH
    assert all(a.tab_units >= a.debt_units >= 0 for a in auctions)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTION, min_size=10, max_size=50))
def test_random_actions_keep_conservation_and_never_lose_debt(actions):
    ledger, cdp, feed, users, keepers = build()
    run(actions, ledger, cdp, feed, users, keepers, Tally(drawn=sum(INITIAL_DEBT)), [0])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTION, max_size=20), st.lists(ACTION, max_size=20))
def test_restore_undoes_any_sequence_of_actions(prefix, suffix):
    ledger, cdp, feed, users, keepers = build()
    tally, clock = Tally(drawn=sum(INITIAL_DEBT)), [0]
    run(prefix, ledger, cdp, feed, users, keepers, tally, clock)
    price = feed.eth
    before = (state(ledger, cdp, users), cdp.auctions().to_csv())
    cdp_snap, ledger_snap = cdp.snapshot(), ledger.snapshot()
    run(suffix, ledger, cdp, feed, users, keepers, Tally(**dataclasses.asdict(tally)), clock)
    cdp.restore(cdp_snap)
    ledger.restore(ledger_snap)
    feed.eth = price
    assert (state(ledger, cdp, users), cdp.auctions().to_csv()) == before
    check(ledger, cdp, users, keepers, tally)
