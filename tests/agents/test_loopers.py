"""Lending loopers: the arithmetic of one loop, the deleverage trigger, the three phases."""

from fractions import Fraction
from types import SimpleNamespace

import mesa
import numpy as np
import pytest

from marginsim.agents.loopers import LendingAction, LendingActions, LendingLoopers
from marginsim.config import LendingLoopersConfig, ScenarioError
from marginsim.experiments.scenarios import load_scenario
from marginsim.market.engine import OrderKind

USDC, WETH = 0, 1
UNITS = {USDC: 10**6, WETH: 10**9}
LOT_UNITS = 1_000_000  # 0.001 WETH


class FakeView:
    """Wallets by (holder, asset); one WETH/USDC book at ``price``, lot 0.001."""

    def __init__(self, wallets, price=2000.0):
        self.wallets = wallets
        self.price = price
        self.step = 0

    def balances(self, holders, asset):
        return np.array([self.wallets.get((int(h), asset), 0) for h in holders], dtype=np.int64)

    def base_units_per_lot(self, ins):
        return LOT_UNITS

    def lot(self, ins):
        return 0.001

    def quote_asset(self, ins):
        return USDC

    def asset_decimals(self, asset):
        return {USDC: 6, WETH: 9}[asset]

    def reference_price(self, ins):
        return self.price


class FakeProtocols:
    """One pool: WETH at ``price`` (ltv 0.8, threshold 0.825), USDC at 1; fixed positions."""

    def __init__(self, supplied, debt, hf, price=2000.0):
        self.supplied, self.debt, self.hf, self.price = supplied, debt, hf, price

    def reserve(self, pool, symbol):
        if symbol == "WETH":
            return SimpleNamespace(
                asset=WETH, unit=UNITS[WETH], ltv=Fraction(4, 5), liquidation_threshold=0.825
            )
        return SimpleNamespace(asset=USDC, unit=UNITS[USDC], ltv=Fraction(3, 4))

    def reserve_price(self, pool, symbol):
        return self.price if symbol == "WETH" else 1.0

    def supplied_amounts(self, pool, holders, symbol):
        return np.array([self.supplied[int(h)] for h in holders], dtype=np.float64)

    def debt_amounts(self, pool, holders, symbol):
        return np.array([self.debt[int(h)] for h in holders], dtype=np.float64)

    def health_factors(self, pool, holders):
        return np.array([self.hf[int(h)] for h in holders], dtype=np.float64)


def loopers(leverage, risk_buffer, count=1, **cfg):
    config = LendingLoopersConfig(
        count=count,
        pool="aave",
        leverage=leverage,
        risk_buffer=risk_buffer,
        loop_probability=1.0,
        **cfg,
    )
    return LendingLoopers(mesa.Model(), config, 0, 0, WETH, np.random.default_rng(0))


def rows(actions):
    return list(
        zip(
            [LendingAction(k) for k in actions.kind.tolist()],
            actions.holder.tolist(),
            actions.symbol.tolist(),
            actions.amount.tolist(),
            strict=True,
        )
    )


def test_loop_borrows_what_reaches_the_target_leverage():
    # 2 WETH supplied at 2,000 (4,000) against 1,000 USDC: equity 3,000. Target 1.5x means
    # collateral 4,500: borrow 500 USDC (within the LTV room 0.8 * 4,000 - 1,000).
    pop = loopers(leverage=1.5, risk_buffer=0.0)
    pop.entered[:] = True
    prot = FakeProtocols({0: 2 * UNITS[WETH]}, {0: 1000 * UNITS[USDC]}, {0: 3.3})
    view = FakeView({})
    assert rows(pop.plan_lending(view, prot)) == [(LendingAction.BORROW, 0, "USDC", 500_000_000)]
    # The borrowed USDC buys 500 / 2,000 = 0.25 WETH = 250 lots at market...
    view.wallets[(0, USDC)] = 500_000_000
    batch = pop.act(view)
    assert (batch.side.tolist(), batch.qty_lots.tolist(), batch.kind.tolist()) == (
        [1],
        [250],
        [int(OrderKind.MARKET)],
    )
    # ...which is supplied; what the buy left in the wallet repays debt.
    view.wallets.update({(0, WETH): 250 * LOT_UNITS, (0, USDC): 1_234})
    assert rows(pop.after_trades(view, prot)) == [
        (LendingAction.REPAY, 0, "USDC", 1_234),
        (LendingAction.SUPPLY, 0, "WETH", 250_000_000),
    ]


def test_first_loop_supplies_the_capital_and_borrows_up_to_the_ltv():
    # 1 WETH in the wallet; target 3x would need 4,000 USDC, the LTV allows 0.8 * 2,000
    # (less the 0.1% safety margin): 1,598.4 USDC.
    pop = loopers(leverage=3.0, risk_buffer=0.0)
    prot = FakeProtocols({0: 0}, {0: 0}, {0: np.inf})
    actions = pop.plan_lending(FakeView({(0, WETH): UNITS[WETH]}), prot)
    assert rows(actions) == [
        (LendingAction.SUPPLY, 0, "WETH", 1_000_000_000),
        (LendingAction.BORROW, 0, "USDC", 1_598_400_000),
    ]
    assert pop.entered.tolist() == [True]


def test_effective_target_keeps_the_health_factor_above_one_plus_twice_the_buffer():
    pop = loopers(leverage=4.0, risk_buffer=0.15)
    # h = 1.3: lt * L / (L - 1) = 1.3 at L = 1.3 / (1.3 - 0.825) = 2.7368...
    np.testing.assert_allclose(pop.target_leverage(0.825), [1.3 / 0.475], rtol=1e-15)
    assert loopers(leverage=4.0, risk_buffer=0.0).target_leverage(0.825).tolist() == [4.0]


def test_deleverage_triggers_below_one_plus_buffer_only_with_a_buffer():
    # Three accounts with 10 WETH (20,000) against 15,000 USDC: health factor 1.1.
    # 0: buffer 0.15 -> 1.1 < 1.15: withdraw. The target (h = 1.3) would withdraw 6,315.79,
    #    the pool allows 20,000 - 15,000 / 0.8 = 1,250 (less 0.1%): 1,248.75 = 0.624375 WETH.
    # 1: buffer 0.05 -> 1.1 >= 1.05: no deleverage (and no LTV room to loop).
    # 2: buffer 0 -> never deleverages early, even at a health factor of 0.99.
    pop = loopers(leverage=4.0, risk_buffer=0.0, count=3)
    pop.risk_buffer = np.array([0.15, 0.05, 0.0])
    pop.entered[:] = True
    coll, debt = 10 * UNITS[WETH], 15_000 * UNITS[USDC]
    prot = FakeProtocols({0: coll, 1: coll, 2: coll}, {0: debt, 1: debt, 2: debt}, {})
    prot.hf = {0: 1.1, 1: 1.1, 2: 0.99}
    view = FakeView({})
    assert rows(pop.plan_lending(view, prot)) == [(LendingAction.WITHDRAW, 0, "WETH", 624_375_000)]
    # It sells what it withdrew at market (624 lots) and repays with the proceeds.
    view.wallets[(0, WETH)] = 624_375_000
    batch = pop.act(view)
    assert (batch.side.tolist(), batch.qty_lots.tolist(), batch.account.tolist()) == (
        [-1],
        [624],
        [0],
    )
    view.wallets.update({(0, WETH): 375_000, (0, USDC): 1_247_000_000})
    assert rows(pop.after_trades(view, prot)) == [
        (LendingAction.REPAY, 0, "USDC", 1_247_000_000),
        (LendingAction.SUPPLY, 0, "WETH", 375_000),
    ]


def test_liquidated_account_reenters_only_with_wallet_funds():
    pop = loopers(leverage=2.0, risk_buffer=0.0, count=2, reentry_probability=1.0)
    pop.entered[:] = True
    prot = FakeProtocols({0: 0, 1: 0}, {0: 0, 1: 0}, {0: np.inf, 1: np.inf})
    actions = pop.plan_lending(FakeView({(1, WETH): UNITS[WETH] // 2}), prot)
    assert [r[:2] for r in rows(actions)] == [
        (LendingAction.SUPPLY, 1),
        (LendingAction.BORROW, 1),
    ]
    assert pop.reentries == 1


def test_lending_actions_concat_keeps_order_and_empty_is_empty():
    a = LendingActions.build("p", LendingAction.SUPPLY, np.array([3, 4]), "WETH", np.array([1, 2]))
    b = LendingActions.build("p", LendingAction.BORROW, np.array([5]), "USDC", 7)
    both = LendingActions.concat("p", [a, LendingActions.empty("p"), b])
    assert rows(both) == [
        (LendingAction.SUPPLY, 3, "WETH", 1),
        (LendingAction.SUPPLY, 4, "WETH", 2),
        (LendingAction.BORROW, 5, "USDC", 7),
    ]
    assert len(LendingActions.empty("p")) == 0


@pytest.mark.parametrize(
    ("override", "field", "message"),
    [
        ({"pool": "nope"}, "pool", "unknown protocol 'nope'"),
        ({"debt": "DAI"}, "debt", "'DAI' is not a reserve of 'aave'"),
        ({"leverage": 5.0}, "leverage", "below 1 / (1 - ltv) = 5"),
        (
            {"leverage": {"dist": "lognormal", "median": 3.0, "sigma": 0.4, "max": 8.0}},
            "leverage",
            "reaches 8",
        ),
        ({"instrument": "BTC-USDC"}, "instrument", "must be a spot book of WETH/USDC"),
    ],
)
def test_scenario_rejects_inconsistent_looper_sections(override, field, message):
    overrides = {f"agents.lending_loopers.{k}": v for k, v in override.items()}
    with pytest.raises(ScenarioError) as err:
        load_scenario("looping").with_overrides(overrides)
    problems = dict(err.value.problems)
    assert message in problems[f"agents.lending_loopers.{field}"]


def test_scenario_rejects_a_pool_that_is_not_a_lending_pool():
    scenario = load_scenario("lending_cascade")
    with pytest.raises(ScenarioError) as err:
        scenario.with_overrides(
            {"agents.lending_loopers.count": 10, "agents.lending_loopers.pool": "maker"}
        )
    assert dict(err.value.problems)["agents.lending_loopers.pool"] == (
        "must name a lending protocol; lending protocols are ['aave', 'thinlend'], got 'maker'"
    )
