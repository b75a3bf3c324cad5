"""The crash scenario: a fast fall in the fundamental turns into a liquidation cascade."""

from marginsim.experiments.amplification import amplification, max_drawdown
from marginsim.experiments.scenarios import load_scenario


def test_crash_turns_into_a_cascade_that_takes_the_book_below_the_fundamental():
    result = amplification(load_scenario("crash"))
    run = result.with_leverage
    m = run.metrics.set_index("step")
    liq = run.events["liquidations"]
    # All four protocols liquidate, and only once the fall has started (step 240).
    assert set(liq["protocol"]) == {"aave", "thinlend", "maker", "perpx"}
    assert liq["step"].min() >= 240
    # Cascade rounds: steps whose forced sales made more accounts liquidatable in the same
    # step (a second liquidation round ran and liquidated something).
    cascade = m[m["liquidation_rounds"] >= 2]
    assert len(cascade) > 0 and cascade["liquidations"].sum() > 0
    # The book falls further than the fundamental it follows...
    assert max_drawdown(m["mid_price"]) > max_drawdown(m["index_price"]) == 0.25
    # ...and further than the same crash without the leveraged accounts.
    assert result.fall_with > result.fall_without
    assert len(result.without_leverage.events["liquidations"]) == 0
