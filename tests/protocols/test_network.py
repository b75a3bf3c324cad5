"""Protocol network: graph building, seeded generators, Eisenberg-Noe clearing, DebtRank."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marginsim.experiments.scenarios import load_scenario
from marginsim.protocols.network import (
    EdgeKind,
    NodeType,
    ProtocolNetwork,
    debtrank,
    debtrank_all,
    eisenberg_noe,
    generate_topology,
)


# ------------------------------------------------------------------------------ Eisenberg-Noe
def test_eisenberg_noe_chain_defaults_in_three_waves():
    # A owes B 10, B owes C 10, C owes outside creditors 9; outside assets 4, 3, 1.
    # Round 1 (everyone pays in full): A has 4 < 10 -> wave 1; B has 3 + 10 = 13 >= 10;
    #   C has 1 + 10 = 11 >= 9.  Re-solve: p_A = 4.
    # Round 2: B has 3 + 4 = 7 < 10 -> wave 2; C still receives 10. Re-solve: p_B = 3 + 4 = 7.
    # Round 3: C has 1 + 7 = 8 < 9 -> wave 3; p_C = 8.
    # Round 4: no new defaulter. Equity is 0 for all three; the outside creditors lose 1.
    L = np.array([[0.0, 10.0, 0.0], [0.0, 0.0, 10.0], [0.0, 0.0, 0.0]])
    r = eisenberg_noe(L, np.array([4.0, 3.0, 1.0]), np.array([0.0, 0.0, 9.0]))
    assert r.payments.tolist() == [4.0, 7.0, 8.0]
    assert r.obligations.tolist() == [10.0, 10.0, 9.0]
    assert r.wave.tolist() == [1, 2, 3]
    assert r.defaulted.tolist() == [True, True, True]
    assert r.rounds == 4
    assert r.losses.tolist() == [6.0, 3.0, 1.0]
    assert r.equity == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)


def test_eisenberg_noe_chain_stops_where_a_node_can_absorb_the_loss():
    # Same chain with C owing only 6 outside: C has 1 + 7 = 8 >= 6 and keeps equity 2.
    L = np.array([[0.0, 10.0, 0.0], [0.0, 0.0, 10.0], [0.0, 0.0, 0.0]])
    r = eisenberg_noe(L, np.array([4.0, 3.0, 1.0]), np.array([0.0, 0.0, 6.0]))
    assert r.payments.tolist() == [4.0, 7.0, 6.0]
    assert r.wave.tolist() == [1, 2, 0]
    assert r.equity.tolist() == pytest.approx([0.0, 0.0, 2.0])
    assert r.rounds == 3


def test_eisenberg_noe_cycle_solves_the_feedback_between_defaulters():
    # A owes B 10 and outsiders 10 (Pi_AB = 0.5); B owes A 10 (Pi_BA = 1); e = (5, 2).
    # Round 1: A has 5 + 10 = 15 < 20 -> wave 1; B has 2 + 0.5 * 20 = 12 >= 10.
    #   Re-solve: p_A = 5 + p_B = 15.
    # Round 2: B has 2 + 0.5 * 15 = 9.5 < 10 -> wave 2. Re-solve both:
    #   p_A = 5 + p_B, p_B = 2 + 0.5 p_A  =>  p_A = 14, p_B = 9.
    L = np.array([[0.0, 10.0], [10.0, 0.0]])
    r = eisenberg_noe(L, np.array([5.0, 2.0]), np.array([10.0, 0.0]))
    assert r.payments == pytest.approx([14.0, 9.0], abs=1e-12)
    assert r.wave.tolist() == [1, 2]
    assert r.rounds == 3


def test_eisenberg_noe_rejects_bad_input():
    with pytest.raises(ValueError, match="2x2"):
        eisenberg_noe(np.zeros((3, 3)), np.zeros(2))
    with pytest.raises(ValueError, match=">= 0"):
        eisenberg_noe(np.array([[0.0, -1.0], [0.0, 0.0]]), np.zeros(2))


# ------------------------------------------------------------------------------ DebtRank
def _three():
    # A[i, j]: i's exposure to j. Equity 10 each.
    # impact of 0 on 1 = min(1, 5/10) = 0.5; of 1 on 2 = min(1, 20/10) = 1;
    # of 0 on 2 = min(1, 2/10) = 0.2.
    A = np.zeros((3, 3))
    A[1, 0], A[2, 1], A[2, 0] = 5.0, 20.0, 2.0
    return A, np.array([10.0, 10.0, 10.0])


def test_debtrank_by_hand():
    A, E = _three()
    # Round 1: D = {0}: h = [1, 0.5, 0.2]; 0 becomes inactive, 1 and 2 distressed.
    # Round 2: D = {1, 2}: h_2 = 0.2 + 1 * 0.5 = 0.7, h_1 unchanged (2 impacts nobody).
    # Final h = [1, 0.5, 0.7]; R = (1 + 0.5 + 0.7) / 3 - 1/3 = 0.4.
    r = debtrank(A, E, [0])
    assert r.distress.tolist() == pytest.approx([1.0, 0.5, 0.7])
    assert r.debtrank == pytest.approx(0.4)
    assert r.rounds == 2
    # Value weights [2, 1, 1] -> [0.5, 0.25, 0.25]: R = 0.25 * 0.5 + 0.25 * 0.7 = 0.3.
    assert debtrank(A, E, [0], np.array([2.0, 1.0, 1.0])).debtrank == pytest.approx(0.3)
    # Node 1 alone: h_2 = 1 -> R = 2/3 - 1/3; node 2 impacts nobody -> 0.
    assert debtrank_all(A, E).tolist() == pytest.approx([0.4, 1 / 3, 0.0])


def test_debtrank_passes_distress_on_only_once_around_a_cycle():
    # Two nodes fully exposed to each other; node 0 starts at psi = 0.5.
    # Round 1: h_1 = 0.5 (and h_0 stays 0.5); 0 inactive, 1 distressed.
    # Round 2: h_0 = 0.5 + 1 * 0.5 = 1.0 but 0 is inactive and does not pass it on.
    # R = (1.0 + 0.5) / 2 - 0.5 / 2 = 0.5.
    A = np.array([[0.0, 10.0], [10.0, 0.0]])
    r = debtrank(A, np.array([10.0, 10.0]), {0: 0.5})
    assert r.distress.tolist() == [1.0, 0.5]
    assert r.debtrank == pytest.approx(0.5)


# ------------------------------------------------------------------------------ generators
@pytest.mark.parametrize("topology", ["erdos_renyi", "scale_free", "core_periphery"])
def test_same_seed_same_graph(topology):
    def edges(seed):
        return generate_topology(30, topology, 3.0, np.random.default_rng(seed))

    assert edges(5) == edges(5)
    assert edges(5) != edges(6)
    assert all(u != v for u, v in edges(5))


def test_erdos_renyi_hits_the_target_degree_and_core_is_complete():
    edges = generate_topology(400, "erdos_renyi", 4.0, np.random.default_rng(1))
    # Expected 4 per node; the mean over 400 nodes has sd sqrt(4 * (1 - 1/399) / 400) = 0.1.
    assert abs(len(edges) / 400 - 4.0) < 0.5
    cp = set(generate_topology(20, "core_periphery", 5.0, np.random.default_rng(2)))
    core = {(i, j) for i in range(4) for j in range(4) if i != j}  # 0.2 * 20 = 4 core nodes
    assert core <= cp
    assert not any(u >= 4 and v >= 4 for u, v in cp)  # periphery nodes never linked
    # Barabasi-Albert with m = 2 on 30 nodes has m * (n - m) = 56 links.
    assert len(generate_topology(30, "scale_free", 2.0, np.random.default_rng(3))) == 56


def test_generator_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown topology"):
        generate_topology(5, "ring", 1.0, rng)
    with pytest.raises(ValueError, match="avg_degree"):
        generate_topology(5, "erdos_renyi", 5.0, rng)


def test_generated_network_carries_weights_in_its_edge_table():
    net = ProtocolNetwork.generated(
        4, "core_periphery", 3.0, np.random.default_rng(0), weights=None, core_share=0.5
    )
    frame = net.edges_frame()
    assert list(frame.columns) == ["source", "target", "kind", "weight"]
    assert set(frame["kind"]) == {"collateral"}
    assert net.exposure_matrix().sum() == len(frame)


# ------------------------------------------------------------------------------ from a scenario
def test_depeg_scenario_implies_its_edges():
    net = ProtocolNetwork.from_scenario(load_scenario("depeg"))
    rows = {(e.source, e.target, e.kind) for e in net.edges()}
    assert rows == {
        # dailend accepts maker's stablecoin, prices it from the DAI-USDC mid and its
        # liquidators sell the seized DAI there.
        ("dailend", "maker", EdgeKind.COLLATERAL),
        ("dailend", "DAI-USDC", EdgeKind.ORACLE),
        ("dailend", "DAI-USDC", EdgeKind.LIQUIDITY),
        # maker's auctions sell WETH on the WETH-USDC book.
        ("maker", "WETH-USDC", EdgeKind.LIQUIDITY),
    }
    assert net.node_type("maker") is NodeType.CDP
    assert net.nodes_of_type("lending") == ["dailend"]


def test_add_edge_checks_its_ends():
    net = ProtocolNetwork()
    net.add_node("a", "lending")
    with pytest.raises(ValueError, match="unknown node 'b'"):
        net.add_edge("a", "b", "collateral")
    with pytest.raises(ValueError, match="two different nodes"):
        net.add_edge("a", "a", "oracle")


def test_contagion_scenario_graph_has_bridge_receipt_and_explicit_edges():
    sc = load_scenario("contagion")
    data = sc.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["network"]["edges"] = [{"from": "edgelend", "to": "corelend", "kind": "oracle"}]
    from marginsim.config import Scenario

    net = ProtocolNetwork.from_scenario(Scenario(**data))
    rows = {(e.source, e.target, e.kind.value, e.asset) for e in net.edges()}
    assert rows == {
        ("corelend", "portal", "collateral", "wWETH"),
        ("midlend", "corelend", "collateral", "aUSDC.corelend"),
        ("edgelend", "midlend", "collateral", "aUSDC.midlend"),
        ("edgelend", "corelend", "oracle", None),
    }
    assert net.node_type("portal") is NodeType.BRIDGE


def test_shared_accounts_edges_are_explicit_and_coexist_with_collateral():
    from marginsim.config import Scenario

    data = load_scenario("depeg").model_dump(mode="json", by_alias=True, exclude_none=True)
    # Shared accounts are declared as explicit edges (an account uses one protocol).
    data["network"]["edges"] = [
        {"from": "dailend", "to": "maker", "kind": "shared_accounts", "weight": 2.0}
    ]
    net = ProtocolNetwork.from_scenario(Scenario(**data))
    shared = net.edges("shared_accounts")
    assert [(e.source, e.target, e.weight) for e in shared] == [("dailend", "maker", 2.0)]
    # Both kinds between the same pair coexist; the collateral weight is the graph weight.
    assert set(net.graph.edges["dailend", "maker"]["kinds"]) == {
        EdgeKind.COLLATERAL,
        EdgeKind.SHARED_ACCOUNTS,
    }


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 6).flatmap(
        lambda n: st.tuples(
            st.lists(st.floats(0, 50), min_size=n * n, max_size=n * n),
            st.lists(st.floats(0, 50), min_size=n, max_size=n),
            st.lists(st.floats(0, 50), min_size=n, max_size=n),
        )
    )
)
def test_clearing_vector_is_a_fixed_point(data):
    flat, e, b = data
    n = len(e)
    L = np.array(flat).reshape(n, n)
    np.fill_diagonal(L, 0.0)
    r = eisenberg_noe(L, np.array(e), np.array(b))
    pbar = r.obligations
    with np.errstate(invalid="ignore", divide="ignore"):
        Pi = np.where(pbar[:, None] > 0, L / pbar[:, None], 0.0)
    # p = min(pbar, e + Pi^T p), 0 <= p <= pbar; defaulters are those paying less; a node's
    # wave is positive exactly when it defaulted.
    assert np.all(r.payments >= -1e-9) and np.all(r.payments <= pbar + 1e-9)
    assert r.payments == pytest.approx(np.minimum(pbar, np.array(e) + Pi.T @ r.payments), abs=1e-6)
    assert np.array_equal(r.wave > 0, r.defaulted)
    assert np.all(r.payments[~r.defaulted] == pbar[~r.defaulted])
