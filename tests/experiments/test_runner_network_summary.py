"""Network keys of a run's summary (runner.network_summary), by hand and end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from marginsim.experiments.runner import network_summary, run
from marginsim.experiments.scenarios import load_scenario
from marginsim.experiments.store import write_run


def _nodes(rows: list[tuple]) -> pd.DataFrame:
    cols = ["node", "type", "bad_debt", "defaulted", "default_step", "debtrank", "default_wave"]
    return pd.DataFrame(rows, columns=cols)


def test_by_hand_counts_only_protocols_and_orders_defaults_by_wave():
    nodes = _nodes(
        [
            ("b", "lending", 100.0, True, 5, 0.2, 2),
            ("a", "lending", 50.0, True, 5, 0.3, 2),  # same wave as b: listed by name
            ("c", "cdp", 0.0, False, -1, 0.3, 0),  # ties a's DebtRank: a comes first by name
            ("p", "perp", 25.0, False, -1, 0.0, 0),  # bad debt covered by nobody, no default
            ("x", "bridge", 400.0, True, 3, 0.1, 1),
            ("book", "book", 999.0, True, 1, 0.9, 1),  # venues never count
        ]
    )
    s = network_summary(nodes)
    assert s == {
        "protocols_with_bad_debt": 4,  # b, a, p, x
        "protocols_defaulted": 3,  # b, a, x
        "systemic_loss": 575.0,  # 100 + 50 + 0 + 25 + 400
        "max_debtrank": 0.3,
        "max_debtrank_protocol": "a",
        "default_order": "x>a>b",  # wave 1, then wave 2 by name
    }


def test_without_network_nodes_or_protocols_everything_is_zero():
    zero = {
        "protocols_with_bad_debt": 0,
        "protocols_defaulted": 0,
        "systemic_loss": 0.0,
        "max_debtrank": 0.0,
        "max_debtrank_protocol": "",
        "default_order": "",
    }
    assert network_summary(None) == zero
    assert network_summary(_nodes([("book", "book", 0.0, False, -1, 0.0, 0)])) == zero
    # Protocols that never lost anything: DebtRank 0 names no protocol.
    assert network_summary(_nodes([("a", "lending", 0.0, False, -1, 0.0, 0)])) == zero


@pytest.fixture(scope="module")
def contagion():
    return run(load_scenario("contagion"))


def test_contagion_chain_summary(contagion, tmp_path):
    s = contagion.summary
    nodes = contagion.events["network_nodes"].set_index("node")
    # The bridge fails (wave 1), then corelend, midlend, edgelend write down in turn.
    assert s["default_order"] == "portal>corelend>midlend>edgelend"
    assert s["protocols_defaulted"] == 4
    assert s["protocols_with_bad_debt"] == 4
    # Same number as the per-step metric at the end of the run and the nodes' sum.
    assert s["systemic_loss"] == pytest.approx(contagion.metrics["systemic_loss"].iloc[-1])
    protocols = ["corelend", "midlend", "edgelend", "portal"]
    assert s["systemic_loss"] == pytest.approx(nodes.loc[protocols, "bad_debt"].sum())
    assert s["max_debtrank_protocol"] == "portal"  # everything rests on the bridge
    assert s["max_debtrank"] == nodes.loc[protocols, "debtrank"].max() > 0.5
    folder = write_run(contagion, tmp_path, experiment="t")
    stored = json.loads((folder / "summary.json").read_text())
    assert stored["default_order"] == "portal>corelend>midlend>edgelend"
    assert stored["protocols_defaulted"] == 4


def test_run_without_defaults_has_empty_order():
    r = run(load_scenario("contagion").with_overrides({"run.steps": 30}))  # shock at step 60
    assert r.summary["default_order"] == ""
    assert r.summary["protocols_defaulted"] == 0
    assert r.summary["systemic_loss"] == 0.0
