"""Unit tests of the wrapped-asset sellers and the wrapped book's makers (bridge_failure)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from marginsim.agents.market_maker import MarketMaker
from marginsim.agents.wrapped_sellers import WrappedSellers
from marginsim.config import ScenarioError
from marginsim.experiments.scenarios import load_scenario
from marginsim.market.engine import OrderKind
from marginsim.model import MarginModel


class _View:
    """A market view stub: fixed books and wallets."""

    def __init__(self, wrapped_bid: int | None, underlying_mid: float | None) -> None:
        self._bid = wrapped_bid
        self._mid = underlying_mid

    def mid_price(self, instrument: int) -> float | None:
        return self._mid

    def best_bid(self, instrument: int) -> int | None:
        return self._bid

    def tick(self, instrument: int) -> float:
        return 0.01

    def balances(self, holders: np.ndarray, asset: int) -> np.ndarray:
        return np.full(holders.shape[0], 6 * 10**9, dtype=np.int64)  # 6 wWETH each

    def base_units_per_lot(self, instrument: int) -> int:
        return 10**6  # lot 0.001 of a 9-decimal asset


def _model(steps: int = 2) -> MarginModel:
    return MarginModel(load_scenario("bridge_failure").with_overrides({"run.steps": steps}))


def _sellers(m: MarginModel) -> WrappedSellers:
    return next(t for t in m.traders if isinstance(t, WrappedSellers))


def test_sellers_and_makers_are_built_with_bridged_wrapped_asset():
    m = _model()
    s = _sellers(m)
    wweth = m.ledger.asset_id("wWETH")
    assert s.count == 300 and s.wrapped_asset == wweth
    assert s.instrument == m.instrument_index["wWETH-USDC"]
    assert s.underlying_instrument == m.instrument_index["WETH-USDC"]
    assert (m.view.balances(s.holders, wweth) == 6 * 10**9).all()
    makers = [k for k in m.market_makers if k.instrument == s.instrument]
    assert len(makers) == 2 and all(type(k) is MarketMaker for k in makers)
    # Every wrapped unit is bridged before step 0: the lock holds the whole supply.
    # 300 sellers x 6 + 2 makers x 1,000 + accounts 500 + 400 + 300 = 5,000 wWETH.
    bridge = m.bridges["portal"]
    assert m.ledger.supply(wweth) == 5_000 * 10**9 == bridge.locked_units
    assert bridge.backing() == 1


def test_sell_decision_compares_the_bid_with_mid_times_backing():
    m = _model()
    s = _sellers(m)
    s._backing = lambda: Fraction(1)
    # bid 2000.00 vs backing value 2000 x 1: not above, no sale.
    assert not s.sells(_View(200_000, 2000.0))
    assert s.backing_value == 2000.0
    # bid 2000.01 > 2000: sell (a premium over the underlying is sold down).
    assert s.sells(_View(200_001, 2000.0))
    # After a failure, backing 1/4: value 500; a bid of 1,000 is far above it.
    s._backing = lambda: Fraction(1, 4)
    assert s.sells(_View(100_000, 2000.0)) and s.backing_value == 500.0
    assert not s.sells(_View(50_000, 2000.0))  # 500.00 is not above 500
    assert not s.sells(_View(None, 2000.0))  # no bid
    assert not s.sells(_View(100_000, None))  # no underlying mid


def test_min_edge_raises_the_selling_bar():
    sc = load_scenario("bridge_failure").with_overrides(
        {"run.steps": 2, "agents.wrapped_sellers.min_edge": 0.1}
    )
    s = _sellers(MarginModel(sc))
    s._backing = lambda: Fraction(1, 4)
    assert not s.sells(_View(55_000, 2000.0))  # 550 = 500 x 1.1, not above
    assert s.sells(_View(55_001, 2000.0))


def test_act_sells_a_share_of_the_wallet_at_market():
    m = _model()
    s = _sellers(m)
    s._backing = lambda: Fraction(1, 4)
    batch = s.act(_View(150_000, 2000.0))  # type: ignore[arg-type]
    n = batch.qty_lots.shape[0]
    assert 10 < n < 55  # order_probability 0.1 of 300: about 30
    assert (batch.side == -1).all() and (batch.kind == int(OrderKind.MARKET)).all()
    assert (batch.qty_lots == 1_500).all()  # 25% of 6 wWETH = 1.5 wWETH = 1,500 lots of 0.001
    assert np.isin(batch.account, s.holders).all()
    assert s.orders_sent == n
    # Below the backing value nobody sells, but the stream is drawn all the same.
    state = s.stream.bit_generator.state["state"]["state"]
    assert s.act(_View(40_000, 2000.0)).qty_lots.shape[0] == 0  # type: ignore[arg-type]
    assert s.stream.bit_generator.state["state"]["state"] != state


def test_unknown_bridge_is_refused_at_construction():
    with pytest.raises(ScenarioError, match="agents.wrapped_sellers.bridge: no bridge 'nope'"):
        load_scenario("bridge_failure").with_overrides({"agents.wrapped_sellers.bridge": "nope"})


def test_sellers_need_a_book_of_the_wrapped_asset():
    with pytest.raises(
        ScenarioError,
        match="agents.wrapped_sellers.instrument: needs a spot book of wWETH, got 'WETH-USDC'",
    ):
        load_scenario("bridge_failure").with_overrides(
            {"agents.wrapped_sellers.instrument": "WETH-USDC"}
        )
    with pytest.raises(ScenarioError, match="underlying_instrument: needs a spot book of WETH"):
        load_scenario("bridge_failure").with_overrides(
            {"agents.wrapped_sellers.underlying_instrument": "wWETH-USDC"}
        )


def test_wrapped_makers_need_a_known_instrument():
    with pytest.raises(
        ScenarioError, match="agents.wrapped_makers.instrument: required when count > 0"
    ):
        load_scenario("bridge_failure").with_overrides({"agents.wrapped_makers.instrument": None})
    with pytest.raises(ScenarioError, match="unknown spot instrument 'X-USDC'"):
        load_scenario("bridge_failure").with_overrides(
            {"agents.wrapped_makers.instrument": "X-USDC"}
        )


def test_cli_reports_a_bad_wrapped_sellers_option_with_exit_2(tmp_path):
    from click.testing import CliRunner

    from marginsim.__main__ import cli

    text = (
        load_scenario("bridge_failure")
        .with_overrides({"agents.wrapped_sellers.sell_share": 1.0})
        .to_toml()
        .replace("sell_share = 1.0", "sell_share = 1.5")
    )
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "agents.wrapped_sellers.sell_share" in result.output
