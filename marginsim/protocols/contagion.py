"""Contagion monitor: per-step exposures, bad debt, defaults, DebtRank and clearing of a run.

The model owns one :class:`ContagionMonitor`. It only reads the protocols (the contagion
itself is mechanical: write-downs of liquidity indexes, stablecoin backing, bridge backing;
see :mod:`marginsim.protocols.network`) and keeps, for every protocol node (lending pools,
CDPs, perp venues, bridges):

* **bad debt** (cumulative, in the unit of account, valued at the price of the step in which
  it was recognised): lending write-offs, CDP bad debt, perp deficits (covered or not), and
  for a bridge the wrapped supply its lock no longer backs;
* **default**: the node cannot pay its creditors in full. Lending pool: its suppliers bore a
  loss (a liquidity index was written down); CDP: uncovered system debt; perp venue: bad debt
  the insurance fund did not pay; bridge: its lock was hit. ``default_step`` is the first step
  in that state and ``default_wave`` ranks the observations (after each shock and each
  liquidation call) in which nodes were first seen in default (1 = the first; a write-down
  and the liquidation it causes through the receipt token are two waves);
* **exposure matrix** ``A[u, v]``: the value of v's claim tokens (receipt tokens, stablecoin,
  wrapped asset) held in u's liquidity, i.e. posted as collateral in u, at u's own price;
* **equity** (the buffer before u's creditors lose): lending, the treasury's reserves plus
  the accounts' collateral above their debt (summed per account, never negative); CDP,
  collateral value minus debt plus surplus (at least 0); perp, the insurance fund; bridge, 0;
* **value** (DebtRank's economic weight): lending, supplied value; CDP, stablecoin debt;
  perp, insurance fund; bridge, wrapped supply value;
* **DebtRank** of every node (:func:`~marginsim.protocols.network.debtrank` with that node
  fully distressed) every ``network.debtrank_every`` steps;
* **Eisenberg-Noe clearing** of the obligations between protocols whenever a node defaults
  (:meth:`ContagionMonitor.clear`; mapping in its docstring), stored as ``network_clearing``
  rows with the wave in which each node defaults under the fictitious default algorithm.

Cross-protocol risk monitor: :meth:`ContagionMonitor.accounts_frame` (each holder's combined
health over the lending pools it uses) and :meth:`ContagionMonitor.collateral_frame` (every
protocol's exposure to each collateral asset, and the sum across protocols).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from marginsim.protocols.lending import RAY, LendingPool
from marginsim.protocols.network import (
    NODE_COLUMNS,
    NodeType,
    ProtocolNetwork,
    debtrank,
    eisenberg_noe,
)

if TYPE_CHECKING:
    from marginsim.ledger import Ledger
    from marginsim.protocols.bridge import Bridge
    from marginsim.protocols.cdp import CdpProtocol
    from marginsim.protocols.perp import PerpVenue

__all__ = ["CLEARING_COLUMNS", "ContagionMonitor"]

#: Columns of the ``network_clearing`` table: one row per node each time a default triggers
#: a clearing (values in the unit of account).
CLEARING_COLUMNS: dict[str, object] = {
    "step": np.int64,
    "node": object,
    "obligations": np.float64,
    "external_assets": np.float64,
    "payment": np.float64,
    "wave": np.int64,
}


def _fin(x: float | None) -> float:
    return 0.0 if x is None or not math.isfinite(x) else float(x)


class ContagionMonitor:
    """Reads the protocols of a run each step and keeps the network measures.

    Args:
        network: The run's network (nodes include every protocol and bridge).
        ledger: The ledger.
        lending: Lending pools by name.
        cdps: CDPs by name.
        perps: Perp venues by name.
        bridges: Bridges by name.
        debtrank_every: Steps between DebtRank computations.
        underlying_prices: Per bridge, the current price of its locked asset (values the
            unbacked wrapped supply when no pool prices the wrapped asset at the underlying's
            oracle times the backing, e.g. when pools read the wrapped asset's own book).

    Attributes:
        nodes: Protocol nodes in order: lending pools, CDPs, perp venues, bridges.
        bad_debt: Cumulative bad debt value per node.
        default_step: First step each defaulted node was in default.
        debtrank: Last DebtRank per node.
    """

    def __init__(
        self,
        network: ProtocolNetwork,
        ledger: Ledger,
        lending: Mapping[str, LendingPool],
        cdps: Mapping[str, CdpProtocol],
        perps: Mapping[str, PerpVenue],
        bridges: Mapping[str, Bridge],
        debtrank_every: int = 1,
        underlying_prices: Mapping[str, Callable[[], float | None]] | None = None,
    ) -> None:
        self.network = network
        self.ledger = ledger
        self.lending = dict(lending)
        self.cdps = dict(cdps)
        self.perps = dict(perps)
        self.bridges = dict(bridges)
        self.debtrank_every = int(debtrank_every)
        self.underlying_prices = dict(underlying_prices or {})
        self.nodes = [*self.lending, *self.cdps, *self.perps, *self.bridges]
        self._pos = {n: k for k, n in enumerate(self.nodes)}
        self.bad_debt = dict.fromkeys(self.nodes, 0.0)
        self.default_step: dict[str, int] = {}
        self.debtrank = dict.fromkeys(self.nodes, 0.0)
        self.peak_debtrank = dict.fromkeys(self.nodes, 0.0)
        self._seen_units: dict[tuple[str, str], int] = {}
        self._index_start: dict[tuple[str, str], int] = {}
        # Product of the write-down factors of each lending reserve: index / this = par.
        self._loss_factor: dict[tuple[str, str], Fraction] = {
            (n, s): Fraction(1) for n, p in self.lending.items() for s in p.symbols
        }
        self._cdp_seen = dict.fromkeys(self.cdps, 0)
        self._perp_seen = dict.fromkeys(self.perps, 0)
        self._clearing_rows: list[tuple[object, ...]] = []
        self._first_seen: dict[str, tuple[int, int]] = {}
        self._observations = 0
        #: Largest value of each collateral exposure seen (the network_edges weights).
        self.peak_exposure = np.zeros((len(self.nodes), len(self.nodes)))
        # Ledger asset id -> issuing node, for every claim token another protocol may hold.
        self.issuer_of_asset: dict[int, str] = {}
        for name, pool in self.lending.items():
            for res in pool.reserves:
                self.issuer_of_asset[res.receipt] = name
        for name, cdp in self.cdps.items():
            self.issuer_of_asset[cdp.stable_asset] = name
        for name, bridge in self.bridges.items():
            self.issuer_of_asset[bridge.wrapped] = name

    # ------------------------------------------------------------------------------- per step
    def begin_step(self) -> None:
        """Remember every liquidity index after accrual (later drops are write-downs)."""
        for name, pool in self.lending.items():
            for s in pool.symbols:
                self._index_start[name, s] = pool.liquidity_index_ray(s)

    def observe(self, step: int) -> None:
        """Note the protocols found in default now (after a shock or a liquidation call).

        The model calls this after the shocks of a step and after every liquidation call,
        so that defaults that follow each other within one step (a write-down, then the
        liquidations it causes through the receipt token) keep their order: waves rank the
        observations.
        """
        self._observations += 1
        for name in self._in_default():
            self._first_seen.setdefault(name, (step, self._observations))

    def _in_default(self) -> list[str]:
        out = []
        for name, pool in self.lending.items():
            for s in pool.symbols:
                start = self._index_start.get((name, s))
                if start is not None and pool.liquidity_index_ray(s) < start:
                    out.append(name)
                    break
        out += [n for n, c in self.cdps.items() if c._totals["system_debt"] > 0]
        out += [n for n, v in self.perps.items() if v._uncovered > 0]
        out += [n for n, b in self.bridges.items() if b.failed_step >= 0]
        return [n for n in out if n not in self.default_step]

    def settle(self, step: int) -> list[str]:
        """Update bad debt, defaults, DebtRank and (on a new default) the clearing.

        Returns:
            Nodes that defaulted in this step.
        """
        self.observe(step)
        newly = [n for n in self._first_seen if n not in self.default_step]
        for name, pool in self.lending.items():
            for res in pool.reserves:
                s = res.symbol
                units = pool.bad_debt_units(s)
                seen = self._seen_units.get((name, s), 0)
                if units > seen:
                    price = _fin(pool.reserve_price(s))
                    self.bad_debt[name] += (units - seen) / res.unit * price
                    self._seen_units[name, s] = units
                now = pool.liquidity_index_ray(s)
                start = self._index_start.get((name, s), now)
                if now < start:
                    self._loss_factor[name, s] *= Fraction(now, start)
        for name, cdp in self.cdps.items():
            totals = cdp._totals  # read-only: the CDP's own running totals
            unit = 10.0 ** self.ledger.assets[cdp.stable_asset].decimals
            bad = int(totals["bad_debt"])
            self.bad_debt[name] += (bad - self._cdp_seen[name]) / unit
            self._cdp_seen[name] = bad
        for name, venue in self.perps.items():
            # Liquidation shortfalls (covered by the insurance fund or not) and deficits the
            # fund paid: the venue's bad_debt rows, as lending pools count all written off.
            units = venue.bad_debt_units()
            self.bad_debt[name] += (units - self._perp_seen[name]) / float(venue.unit)
            self._perp_seen[name] = units
        for name, bridge in self.bridges.items():
            if bridge.failed_step >= 0:
                unit = 10.0 ** self.ledger.assets[bridge.wrapped].decimals
                unbacked = self.ledger.supply(bridge.wrapped) * (1 - bridge.backing()) / unit
                self.bad_debt[name] = float(unbacked) * self._wrapped_price(bridge)
        for name in newly:
            self.default_step[name] = step
        if newly:
            self.clear(step)
        if step % self.debtrank_every == 0:
            A = self.exposures()
            np.maximum(self.peak_exposure, A, out=self.peak_exposure)
            if not A.any():  # nobody is exposed to anybody: every DebtRank is 0
                self.debtrank = dict.fromkeys(self.nodes, 0.0)
                return newly
            E, V = self.equity(), self.values()
            for k, name in enumerate(self.nodes):
                self.debtrank[name] = debtrank(A, E, [k], V).debtrank
                self.peak_debtrank[name] = max(self.peak_debtrank[name], self.debtrank[name])
        return newly

    # ------------------------------------------------------------------------------- balance sheets
    def _wrapped_price(self, bridge: Bridge) -> float:
        """Underlying price of a bridge's wrapped asset.

        From the first pool that prices the wrapped asset at the underlying's oracle times the
        backing (its price over the backing); else from ``underlying_prices`` (a pool that
        prices the wrapped asset at its own book sees a traded discount, not the underlying);
        else 1.
        """
        symbol = self.ledger.assets[bridge.wrapped].symbol
        for pool in self.lending.values():
            if (
                symbol in pool.symbols
                and pool._exchange_rates.get(pool.reserve(symbol).index) == bridge.backing
            ):
                p = pool.reserve_price(symbol)
                b = float(bridge.backing())
                return _fin(p) / b if p is not None and b > 0 else 0.0
        if bridge.name in self.underlying_prices:
            return _fin(self.underlying_prices[bridge.name]())
        return 1.0

    def exposures(self) -> np.ndarray:
        """``A[u, v]``: value of v's claim tokens held in u's liquidity, at u's price."""
        n = len(self.nodes)
        A = np.zeros((n, n))
        for u, pool in self.lending.items():
            for res in pool.reserves:
                v = self.issuer_of_asset.get(res.asset)
                if v is None or v == u:
                    continue
                units = self.ledger.balance(pool.liquidity_holder, res.asset)
                A[self._pos[u], self._pos[v]] += (
                    units / res.unit * _fin(pool.reserve_price(res.symbol))
                )
        return A

    def equity(self) -> np.ndarray:
        """Each node's buffer before its creditors lose (see the module docstring)."""
        out = np.zeros(len(self.nodes))
        for name, pool in self.lending.items():
            _, debt, coll = pool.account_values()
            cushion = np.nansum(np.maximum(coll - debt, 0.0))
            reserves = 0.0
            for res in pool.reserves:
                t = self.ledger.balance(pool.treasury_holder, res.receipt)
                underlying = t * pool.liquidity_index_ray(res.symbol) // RAY
                reserves += underlying / res.unit * _fin(pool.reserve_price(res.symbol))
            out[self._pos[name]] = cushion + reserves
        for name, cdp in self.cdps.items():
            m = cdp.metrics()
            price = _fin(cdp.oracle_price())
            out[self._pos[name]] = max(0.0, m["collateral"] * price - m["debt"] + m["surplus"])
        for name, venue in self.perps.items():
            out[self._pos[name]] = venue._insurance_units / float(venue.unit)
        return out

    def values(self) -> np.ndarray:
        """Economic value of each node (DebtRank weights, see the module docstring)."""
        out = np.zeros(len(self.nodes))
        for name, pool in self.lending.items():
            total = 0.0
            for res in pool.reserves:
                units = pool.total_supplied_units(res.symbol)
                total += units / res.unit * _fin(pool.reserve_price(res.symbol))
            out[self._pos[name]] = total
        for name, cdp in self.cdps.items():
            out[self._pos[name]] = (
                cdp._totals["debt"] / 10.0 ** self.ledger.assets[cdp.stable_asset].decimals
            )
        for name, venue in self.perps.items():
            out[self._pos[name]] = venue._insurance_units / float(venue.unit)
        for name, bridge in self.bridges.items():
            unit = 10.0 ** self.ledger.assets[bridge.wrapped].decimals
            out[self._pos[name]] = (
                self.ledger.supply(bridge.wrapped) / unit * self._wrapped_price(bridge)
            )
        return out

    def clear(self, step: int) -> None:
        """Eisenberg-Noe clearing of the protocols' obligations to each other, now.

        Mapping of balance sheets to ``(L, e, b)`` (values in the unit of account, at this
        step's prices). Each borrower is **netted**: its collateral is neither an obligation
        of the protocol nor an asset of it; the loan counts as ``min(debt, collateral)``, what
        it recovers (repaid in full, or the collateral kept). So a borrower whose collateral
        is another protocol's token carries that protocol's loss through the collateral's
        current price, not through ``L`` (that channel is the mechanical write-down).

        * Lending pool w. Obligations: the **par** value (scaled balance x the liquidity
          index before any write-down x price) of its receipt tokens, except those held by
          its own borrowers and its own treasury. ``L[w, u]`` is the part held by protocol
          u's treasury (u deposited in w with its own money); the rest is external, ``b_w``.
          External assets: the liquidity of every reserve at its price minus, per borrower,
          ``max(collateral - debt, 0)`` (the collateral beyond the loan, which belongs to the
          borrower).
        * CDP c. Obligations: its stablecoin supply at par 1, less its own surplus; ``L[c,
          u]`` is the stablecoin in u's treasury. External assets: min(vault debt, vault
          collateral value) plus the surplus.
        * Bridge b. Obligations: the wrapped supply at the underlying's price (``L[b, u]``:
          held by u's treasury). External assets: the lock at that price.
        * Perp venues owe no protocol and are left out (obligations 0).

        The clearing vector and the wave of the fictitious default algorithm in which each
        node defaults are appended to the ``network_clearing`` rows.
        """
        n = len(self.nodes)
        L = np.zeros((n, n))
        b = np.zeros(n)
        e = np.zeros(n)
        treasuries = {pool.treasury_holder: u for u, pool in self.lending.items()}
        balances = self.ledger.balances
        for w, pool in self.lending.items():
            i = self._pos[w]
            ids, debt, coll = pool.account_values()
            borrowers = ids[debt > 0]
            for res in pool.reserves:
                price = _fin(pool.reserve_price(res.symbol))
                par = pool.liquidity_index_ray(res.symbol) / RAY
                par /= float(self._loss_factor[w, res.symbol])
                unit_par = par / res.unit * price
                owed = self.ledger.supply(res.receipt)
                owed -= int(balances[borrowers, res.receipt].sum())
                owed -= self.ledger.balance(pool.treasury_holder, res.receipt)
                for holder, u in treasuries.items():
                    units = self.ledger.balance(holder, res.receipt) if u != w else 0
                    if units:
                        L[i, self._pos[u]] += units * unit_par
                        owed -= units
                b[i] += max(owed, 0) * unit_par
                e[i] += pool.available_units(res.symbol) / res.unit * price
            excess = np.maximum(coll - debt, 0.0)[debt > 0]
            e[i] -= float(np.nansum(excess))
        for c, cdp in self.cdps.items():
            i = self._pos[c]
            unit = 10.0 ** self.ledger.assets[cdp.stable_asset].decimals
            owed = self.ledger.supply(cdp.stable_asset)
            owed -= self.ledger.balance(cdp.surplus_holder, cdp.stable_asset)
            for holder, u in treasuries.items():
                units = self.ledger.balance(holder, cdp.stable_asset)
                if units:
                    L[i, self._pos[u]] += units / unit
                    owed -= units
            b[i] += max(owed, 0) / unit
            m = cdp.metrics()
            e[i] += min(m["debt"], m["collateral"] * _fin(cdp.oracle_price())) + m["surplus"]
        for name, bridge in self.bridges.items():
            i = self._pos[name]
            unit = 10.0 ** self.ledger.assets[bridge.wrapped].decimals
            price = self._wrapped_price(bridge)
            owed = self.ledger.supply(bridge.wrapped)
            for holder, u in treasuries.items():
                units = self.ledger.balance(holder, bridge.wrapped)
                if units:
                    L[i, self._pos[u]] += units / unit * price
                    owed -= units
            b[i] += max(owed, 0) / unit * price
            e[i] += bridge.locked_units / unit * price
        np.fill_diagonal(L, 0.0)
        e = np.maximum(e, 0.0)
        result = eisenberg_noe(np.maximum(L, 0.0), e, np.maximum(b, 0.0))
        for k, name in enumerate(self.nodes):
            self._clearing_rows.append(
                (
                    step,
                    name,
                    float(result.obligations[k]),
                    float(e[k]),
                    float(result.payments[k]),
                    int(result.wave[k]),
                )
            )

    def _underlying_price(self, pool: LendingPool, symbol: str) -> float:
        """The price of a reserve (a claim token's own exchange rate included)."""
        return _fin(pool.reserve_price(symbol))

    # ------------------------------------------------------------------------------- measures
    def contagion_reach(self) -> int:
        """Protocol nodes with any bad debt."""
        return sum(1 for x in self.bad_debt.values() if x > 0)

    def protocols_defaulted(self) -> int:
        """Protocol nodes in default."""
        return len(self.default_step)

    def systemic_loss(self) -> float:
        """Total bad debt value of all protocol nodes."""
        return float(sum(self.bad_debt.values()))

    def default_waves(self) -> dict[str, int]:
        """Wave of each defaulted node (1 = the first).

        The rank of the observation (:meth:`observe`) in which it was first seen in default
        among the distinct ones: nodes seen together share a wave.
        """
        seen = {n: self._first_seen[n] for n in self.default_step}
        rank = {s: k + 1 for k, s in enumerate(sorted(set(seen.values())))}
        return {n: rank[s] for n, s in seen.items()}

    # ------------------------------------------------------------------------------- tables
    def nodes_frame(self) -> pd.DataFrame:
        """The ``network_nodes`` table: every network node, state at the end of the run.

        Columns :data:`~marginsim.protocols.network.NODE_COLUMNS` then ``default_wave`` (0
        when not in default). ``debtrank`` is the largest DebtRank the node had during the
        run (the per-step values are the metrics columns ``debtrank_<node>``). Books, AMM
        pools and oracles have no balance sheet here: bad debt 0, never in default,
        DebtRank 0.
        """
        waves = self.default_waves()
        rows = []
        for node in self.network.nodes:
            rows.append(
                (
                    node,
                    self.network.node_type(node).value,
                    float(self.bad_debt.get(node, 0.0)),
                    node in self.default_step,
                    int(self.default_step.get(node, -1)),
                    float(self.peak_debtrank.get(node, 0.0)),
                    int(waves.get(node, 0)),
                )
            )
        columns = {**NODE_COLUMNS, "default_wave": np.int64}
        return pd.DataFrame(rows, columns=list(columns)).astype(columns)

    def clearing_frame(self) -> pd.DataFrame:
        """The ``network_clearing`` table (:data:`CLEARING_COLUMNS`)."""
        return pd.DataFrame(self._clearing_rows, columns=list(CLEARING_COLUMNS)).astype(
            CLEARING_COLUMNS
        )

    def accounts_frame(self) -> pd.DataFrame:
        """Cross-protocol risk monitor, per holder with debt on at least one lending pool.

        Columns: ``holder``, ``protocols`` (how many pools it owes), ``debt_value``,
        ``collateral_value`` (sums over pools) and ``combined_health`` = collateral / debt
        over all its pools (unweighted by thresholds: how far the whole book of the holder
        is from insolvency, not any one pool's liquidation rule).
        """
        parts = []
        for pool in self.lending.values():
            ids, debt, coll = pool.account_values()
            keep = debt > 0
            parts.append(pd.DataFrame({"holder": ids[keep], "d": debt[keep], "c": coll[keep]}))
        if not parts or not any(len(p) for p in parts):
            return pd.DataFrame(
                {
                    "holder": pd.Series([], dtype=np.int64),
                    "protocols": pd.Series([], dtype=np.int64),
                    "debt_value": pd.Series([], dtype=np.float64),
                    "collateral_value": pd.Series([], dtype=np.float64),
                    "combined_health": pd.Series([], dtype=np.float64),
                }
            )
        df = pd.concat(parts, ignore_index=True)
        g = df.groupby("holder", sort=True)
        out = pd.DataFrame(
            {
                "protocols": g.size().astype(np.int64),
                "debt_value": g["d"].sum(),
                "collateral_value": g["c"].sum(),
            }
        ).reset_index()
        out["combined_health"] = out["collateral_value"] / out["debt_value"]
        return out

    def combined_health(self, holders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Combined health and number of pools owed of ``holders``, as :meth:`accounts_frame`.

        Vectorised (one scan of just these holders per pool, no frame): ``health = sum C_p /
        sum D_p`` over the pools ``p`` where the holder owes something (``inf`` for a holder
        who owes nothing; NaN when a price it needs is missing, where the frame's group sum
        would skip the missing value). The ``integrated`` liquidation policy reads it
        (:class:`marginsim.protocols.policies.IntegratedLiquidation`).

        Args:
            holders: Ledger holder ids.

        Returns:
            ``(health, pools_owed)``: float64 and int64 arrays aligned with ``holders``.
        """
        holders = np.asarray(holders, dtype=np.int64)
        debt_sum = np.zeros(holders.shape, dtype=np.float64)
        coll_sum = np.zeros(holders.shape, dtype=np.float64)
        owed_in = np.zeros(holders.shape, dtype=np.int64)
        for pool in self.lending.values():
            _, debt, coll = pool.account_values(holders)
            keep = debt > 0  # NaN debt (no price) is kept out, as accounts_frame does
            debt_sum[keep] += debt[keep]
            coll_sum[keep] += coll[keep]
            owed_in += keep
        with np.errstate(divide="ignore", invalid="ignore"):
            health = np.where(owed_in > 0, coll_sum / debt_sum, np.inf)
        return health, owed_in

    def collateral_frame(self) -> pd.DataFrame:
        """Integrated exposure of the protocols to each collateral asset.

        One row per (protocol, asset) with collateral posted in a lending pool
        (``value`` at the pool's price) or locked in a CDP's vaults, plus rows with
        protocol ``"*"`` summing each asset over all protocols.
        """
        rows = []
        for name, pool in self.lending.items():
            for res in pool.reserves:
                if res.liquidation_threshold <= 0:
                    continue
                units = pool.total_supplied_units(res.symbol)
                value = units / res.unit * _fin(pool.reserve_price(res.symbol))
                rows.append((name, res.symbol, value))
        for name, cdp in self.cdps.items():
            m = cdp.metrics()
            symbol = self.ledger.assets[cdp.collateral_asset].symbol
            rows.append((name, symbol, m["collateral"] * _fin(cdp.oracle_price())))
        df = pd.DataFrame(rows, columns=["protocol", "asset", "value"])
        if len(df):
            total = df.groupby("asset", sort=True)["value"].sum().reset_index()
            total.insert(0, "protocol", "*")
            df = pd.concat([df, total], ignore_index=True)
        return df.astype({"protocol": object, "asset": object, "value": np.float64})

    def node_type(self, name: str) -> NodeType:
        """Type of a protocol node."""
        return self.network.node_type(name)
