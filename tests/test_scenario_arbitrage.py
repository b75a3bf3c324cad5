"""The `arbitrage` scenario does what it is for: arbitrageurs tie an AMM pool to the book."""

import numpy as np
import pytest

from marginsim.experiments.runner import run
from marginsim.experiments.scenarios import load_scenario

POOL = "uni-WETH-USDC"
PRICE = f"amm_{POOL}_price"


def gap_bps(metrics):
    return (metrics[PRICE] / metrics["mid_price"] - 1).abs() * 1e4


@pytest.fixture(scope="module")
def result():
    return run(load_scenario("arbitrage"), check_invariants=True)


def test_arbitrageurs_keep_the_pool_within_its_fee_band_of_the_book(result):
    """Pool fee 30 bp + taker fee 5 bp: with arbitrageurs the pool stays in that band on
    median; without them nobody swaps and the pool sits at 2000 while the index wanders."""
    with_arbs = gap_bps(result.metrics)
    assert with_arbs.median() < 35
    assert with_arbs.quantile(0.95) < 60
    stale = run(load_scenario("arbitrage").with_overrides({"agents.arbitrageurs.count": 0}))
    assert (stale.metrics[PRICE] == 2000.0).all()
    assert stale.events["swaps"].empty
    assert gap_bps(stale.metrics).median() > 5 * with_arbs.median()


def test_arbitrageurs_swap_and_end_richer_at_the_final_mid(result):
    events, mid = result.events, result.summary["final_mid"]
    swaps = events["swaps"]
    assert len(swaps) > 50 and (swaps["pool"] == POOL).all()
    names = events["holders"].set_index("holder")["name"]
    arbs = names[names.str.startswith("arbitrageur[")].index
    assert len(arbs) == 3 and set(swaps["holder"]) <= set(arbs)
    trades, fee = events["trades"], 0.0005  # arbitrageurs only take (IOC), at the taker fee
    for h in arbs:
        s = swaps[swaps["holder"] == h]
        buy, sell = s[s["side"] > 0], s[s["side"] < 0]
        d_base = (buy["amount_out"].sum() - sell["amount_in"].sum()) / 1e9
        d_quote = (sell["amount_out"].sum() - buy["amount_in"].sum()) / 1e6
        bought, sold = trades[trades["buyer"] == h], trades[trades["seller"] == h]
        d_base += bought["qty"].sum() - sold["qty"].sum()
        d_quote += (sold["price"] * sold["qty"]).sum() * (1 - fee)
        d_quote -= (bought["price"] * bought["qty"]).sum() * (1 + fee)
        # Every round trip filled both legs in full: the base holding is unchanged...
        assert d_base == pytest.approx(0.0, abs=1e-9)
        # ...and each one earned quote, so the arbitrageur ends with more value.
        assert d_base * mid + d_quote > 0
    assert np.isfinite(mid)
