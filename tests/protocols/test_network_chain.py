"""Mechanical contagion along a chain of three lending pools through receipt tokens.

Pool C lends USDC against WETH; pool B accepts C's receipt token aUSDC.C as collateral; pool A
accepts B's receipt token aUSDC.B. Bad debt at C writes down C's liquidity index, so B's
borrower's collateral is worth less and becomes liquidatable; liquidating it leaves bad debt
at B, which writes down B's index, and A's borrower becomes liquidatable in turn.
"""

from fractions import Fraction

import pytest

from marginsim.config import LendingConfig, ReserveConfig
from marginsim.ledger import AssetSpec, Ledger
from marginsim.protocols.lending import RAY, FixedPriceFeed, LendingPool

USDC = 10**6
WETH = 10**9


def _collateral(price: float | str) -> ReserveConfig:
    return ReserveConfig(
        price=price,
        ltv=0.8,
        liquidation_threshold=0.85,
        liquidation_bonus=0.05,
        protocol_share=0.0,
        borrowable=False,
    )


def _usdc() -> ReserveConfig:
    return ReserveConfig(price=1.0)


@pytest.fixture
def chain():
    configs = {
        "C": LendingConfig(kind="lending", reserves={"USDC": _usdc(), "WETH": _collateral("eth")}),
        "B": LendingConfig(kind="lending", reserves={"USDC": _usdc(), "aUSDC.C": _collateral(1.0)}),
        "A": LendingConfig(kind="lending", reserves={"USDC": _usdc(), "aUSDC.B": _collateral(1.0)}),
    }
    decimals = {"USDC": 6, "WETH": 9, "aUSDC.C": 6, "aUSDC.B": 6}
    assets = [AssetSpec("USDC", 6), AssetSpec("WETH", 9)]
    for name, cfg in configs.items():
        assets += LendingPool.derived_assets(name, cfg, decimals)
    ledger = Ledger(assets)
    feed = FixedPriceFeed({"eth": 1000.0})
    pools = {name: LendingPool(ledger, name, cfg, feed) for name, cfg in configs.items()}
    C, B, A = pools["C"], pools["B"], pools["A"]
    # The receipt tokens are priced at the underlying's price times the issuer's index.
    B.set_exchange_rate("aUSDC.C", lambda: Fraction(C.liquidity_index_ray("USDC"), RAY))
    A.set_exchange_rate("aUSDC.B", lambda: Fraction(B.liquidity_index_ray("USDC"), RAY))
    h = {n: ledger.add_holder(n) for n in ("x", "y", "z", "s", "liq")}
    usdc, weth = ledger.asset_id("USDC"), ledger.asset_id("WETH")
    ledger.mint(h["x"], weth, 1 * WETH, "endowment")
    for who in ("y", "z", "s"):
        ledger.mint(h[who], usdc, 1000 * USDC, "endowment")
    ledger.mint(h["liq"], usdc, 10_000 * USDC, "endowment")
    # y: 1,000 USDC into C, the aUSDC.C into B, borrows 800 USDC from B (z's supply).
    # z: 1,000 USDC into B, the aUSDC.B into A, borrows 800 USDC from A (s's supply).
    # x: 1 WETH into C at 1,000, borrows 800 USDC from C (y's supply).
    assert C.supply(h["y"], "USDC", 1000 * USDC).ok
    assert B.supply(h["z"], "USDC", 1000 * USDC).ok
    assert A.supply(h["s"], "USDC", 1000 * USDC).ok
    assert B.supply(h["y"], "aUSDC.C", 1000 * USDC).ok
    assert A.supply(h["z"], "aUSDC.B", 1000 * USDC).ok
    assert C.supply(h["x"], "WETH", 1 * WETH).ok
    for pool, who in ((C, "x"), (B, "y"), (A, "z")):
        assert pool.borrow(h[who], "USDC", 800 * USDC).ok
    yield pools, feed, h
    ledger.check_conservation()


def test_bad_debt_travels_down_the_chain_through_receipt_tokens(chain):
    pools, feed, h = chain
    C, B, A = pools["C"], pools["B"], pools["A"]
    # Before: every account's HF = 1,000 * 0.85 / 800 = 1.0625.
    for pool, who in ((C, "x"), (B, "y"), (A, "z")):
        assert pool.health_factors([h[who]])[0] == pytest.approx(1.0625, rel=1e-15)

    feed.prices["eth"] = 500.0
    # x: 500 * 0.85 / 800 = 0.53125; B and A see nothing yet.
    assert C.liquidatable().holder.tolist() == [h["x"]]
    assert len(B.liquidatable()) == 0 and len(A.liquidatable()) == 0

    r = C.liquidate(h["liq"], h["x"], "USDC", "WETH", 800 * USDC)
    assert r.ok
    # HF < 0.95: all debt may be repaid, but 1 WETH only covers
    # ceil(1e9 * 500 / 1.05 / 1e3) = ceil(476,190,476.19) = 476,190,477 USDC units.
    # The rest, 800e6 - 476,190,477 = 323,809,523, is bad debt borne by C's suppliers
    # (no treasury tokens): the index falls by ceil(323,809,523 * RAY / 1e9 scaled) =
    # 323,809,523e18 ray, to 676,190,477e18 ray.
    assert C.liquidity_index_ray("USDC") == RAY - 323_809_523 * 10**18
    assert C.bad_debt_frame()["borne_by_suppliers"].tolist() == [323_809_523]

    # y's 1,000e6 aUSDC.C are now worth 676,190,477 units of USDC; HF = 676.190477 * 0.85 /
    # 800 = 0.71845238..., below 1: B's borrower is liquidatable through the receipt token.
    hf_y = B.health_factors([h["y"]])[0]
    assert hf_y == pytest.approx(676.190477 * 0.85 / 800, rel=1e-12)
    assert B.liquidatable().holder.tolist() == [h["y"]]
    assert len(A.liquidatable()) == 0

    r = B.liquidate(h["liq"], h["y"], "USDC", "aUSDC.C", 800 * USDC)
    assert r.ok
    # The collateral (1,000e6 aUSDC.C at 0.676190477) covers ceil(676,190,477 / 1.05) =
    # ceil(643,990,930.48) = 643,990,931 of debt; 800e6 - 643,990,931 = 156,009,069 is bad
    # debt at B, borne by its USDC suppliers (z's 1,000e6 scaled aUSDC.B, held by A).
    assert B.bad_debt_frame()["borne_by_suppliers"].tolist() == [156_009_069]
    assert B.liquidity_index_ray("USDC") == RAY - 156_009_069 * 10**18
    # z: 843.990931 * 0.85 / 800 = 0.89674036...: A's borrower is liquidatable in turn.
    hf_z = A.health_factors([h["z"]])[0]
    assert hf_z == pytest.approx(843.990931 * 0.85 / 800, rel=1e-12)
    assert A.liquidatable().holder.tolist() == [h["z"]]
    # The liquidator received the seized receipt token of C from B (it holds C's claim now).
    assert B.ledger.balance(h["liq"], B.ledger.asset_id("aUSDC.C")) == 1000 * USDC


def test_without_the_exchange_rate_the_receipt_token_is_valued_at_face(chain):
    pools, feed, h = chain
    C, B = pools["C"], pools["B"]
    B._exchange_rates.clear()
    feed.prices["eth"] = 500.0
    assert C.liquidate(h["liq"], h["x"], "USDC", "WETH", 800 * USDC).ok
    # The price hook is what carries the loss: without it B still sees HF = 1.0625.
    assert B.health_factors([h["y"]])[0] == pytest.approx(1.0625, rel=1e-15)
