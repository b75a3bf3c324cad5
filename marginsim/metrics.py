"""Per-step measures read from a model's state, and the recorder that collects them.

Each metric is a named module-level function of the model (picklable, as Mesa's
DataCollector reporters are) returning a float; ``NaN`` means "not defined this step" (for
instance the mid of a book with an empty side). Recording only reads: no metric changes the
model. Statistics over recorded frames (replicate aggregates, tail measures) belong to
``marginsim.experiments``.

Columns of ``metrics.parquet`` (one row per step, ``step`` counting from 0):

==========================  =========================================================
column                      meaning
==========================  =========================================================
step                        step index, 0-based
index_price                 exogenous index (fundamental value) after the step
mid_price                   mid of the primary book (first spot instrument), quote/base
best_bid, best_ask          best prices of the primary book (NaN when a side is empty)
spread_bps                  (ask - bid) / mid in basis points
last_price                  last trade price on the primary book
basis_bps                   (mid - index) / index in basis points
trades                      number of fills this step, all books
volume_base                 base traded this step on the primary book, human units
volume_quote                quote traded this step on the primary book, human units
depth_bid_1pct              base resting within 1% below the mid, human units
depth_ask_1pct              base resting within 1% above the mid, human units
makers_quoting              market makers that posted quotes this step
oracle_<name>               each oracle's published price (NaN before its first)
<instrument>_mid_price      mid of every other book (perp contracts, second spot pairs)
amm_<id>_price              each AMM pool's price, quote/base
liquidation_rounds          liquidation rounds run this step
liquidations                liquidations and auction takes this step, all rounds
liquidation_calls           liquidation-bot calls included this step (limited by run.block_space)
hunter_pnl                  liquidation hunters' P&L, quote human units (only with hunters):
                            holdings valued at the mid minus the initial holdings at the mid
hedger_hedge_ratio          mean hedge ratio the hedgers chose this step (only with hedgers;
                            see marginsim.agents.hedger.hedge_ratio)
hedger_pnl                  hedgers' P&L, quote human units (only with hedgers): spot at the
                            perp mark plus venue margin balance at mark, minus the same at start
<pool>_<key>                each lending pool's metrics (see LendingPool.metrics)
<cdp>_<key>                 each CDP's metrics (see CdpProtocol.metrics)
<venue>_<key>               each perp venue's metrics (see PerpVenue.metrics)
margin_debt[_<kind>]        margin debt, total and by kind (lending, cdp, perp), value
leverage[_p50|_p90|_p99]    aggregate leverage and its distribution across accounts
wamm                        notional-weighted maintenance rate, all leveraged accounts
distance_to_liquidation_*   debt-weighted p10 and p50 of the move that liquidates
depth_{bid,ask}_{2,5}pct    base resting within 2% and 5% of the mid, human units
liquidatable_debt_5pct      debt liquidatable by a 5% move either way, value
leverage_to_depth           that debt over the quote resting within 5% of the mid
<protocol>_tvl              value locked in each protocol
contagion_reach             protocols (lending, CDP, perp, bridge) with any bad debt so far
protocols_defaulted         protocols in default so far (see protocols.contagion)
systemic_loss               total bad debt of all protocols, unit of account
debtrank_<protocol>         DebtRank of each protocol on the exposure graph (last computed)
==========================  =========================================================

The market-wide columns (from ``margin_debt`` on) are :func:`market_wide_metrics`; their
formulas, units and NaN rules are in ``docs/metrics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Sequence

    from marginsim.model import MarginModel
    from marginsim.protocols.events import LiquidationPrices

__all__ = [
    "LiquidationMapRecorder",
    "LiquidationRounds",
    "MetricsRecorder",
    "account_leverage",
    "aggregate_leverage",
    "book_depth",
    "liquidatable_debt",
    "liquidation_distances",
    "market_wide_metrics",
    "wamm",
    "weighted_quantile",
    "weighted_quantiles",
    "core_reporters",
    "hedger_hedge_ratio",
    "hedger_pnl",
    "hunter_pnl",
    "liquidation_map",
    "liquidation_map_arrays",
    "liquidation_map_from_prices",
]

Reporter = Callable[["MarginModel"], float]
_NAN = float("nan")


def _or_nan(x: float | int | None) -> float:
    return _NAN if x is None else float(x)


def index_price(model: MarginModel) -> float:
    """The exogenous index after the step."""
    return model.index_price


def mid_price(model: MarginModel) -> float:
    """Mid price of the primary book."""
    return _or_nan(model.engine.mid_price(model.primary_instrument_id))


def best_bid(model: MarginModel) -> float:
    """Best bid of the primary book, quote per base."""
    bid = model.engine.best_bid(model.primary_instrument)
    return _NAN if bid is None else bid * model.engine.specs[model.primary_instrument].tick


def best_ask(model: MarginModel) -> float:
    """Best ask of the primary book, quote per base."""
    ask = model.engine.best_ask(model.primary_instrument)
    return _NAN if ask is None else ask * model.engine.specs[model.primary_instrument].tick


def spread_bps(model: MarginModel) -> float:
    """Relative spread of the primary book in basis points."""
    bid, ask = best_bid(model), best_ask(model)
    return 2e4 * (ask - bid) / (ask + bid)


def last_price(model: MarginModel) -> float:
    """Last trade price of the primary book."""
    return _or_nan(model.engine.last_price(model.primary_instrument_id))


def basis_bps(model: MarginModel) -> float:
    """Book mid against the index, in basis points."""
    return 1e4 * (mid_price(model) - model.index_price) / model.index_price


def trades(model: MarginModel) -> float:
    """Fills this step, all books."""
    return float(model.engine.n_trades - model.trades_at_step_start)


def _step_fills(model: MarginModel) -> tuple[np.ndarray, np.ndarray]:
    arrays = model.engine.trade_arrays(model.trades_at_step_start)
    on_primary = arrays["instrument"] == model.primary_instrument
    return arrays["price_ticks"][on_primary], arrays["qty_lots"][on_primary]


def volume_base(model: MarginModel) -> float:
    """Base traded this step on the primary book, human units."""
    _, qty = _step_fills(model)
    return float(qty.sum()) * model.engine.specs[model.primary_instrument].lot


def volume_quote(model: MarginModel) -> float:
    """Quote traded this step on the primary book, human units."""
    price, qty = _step_fills(model)
    spec = model.engine.specs[model.primary_instrument]
    return float((price * qty).sum()) * spec.tick * spec.lot


def depth_bid_1pct(model: MarginModel) -> float:
    """Base resting within 1% below the mid."""
    bid, _ = model.engine.depth(model.primary_instrument, 0.01)
    return float(bid) * model.engine.specs[model.primary_instrument].lot


def depth_ask_1pct(model: MarginModel) -> float:
    """Base resting within 1% above the mid."""
    _, ask = model.engine.depth(model.primary_instrument, 0.01)
    return float(ask) * model.engine.specs[model.primary_instrument].lot


def makers_quoting(model: MarginModel) -> float:
    """Market makers that posted quotes this step."""
    return float(sum(not m.withdrawn for m in model.market_makers))


def liquidation_rounds(model: MarginModel) -> float:
    """Liquidation rounds run this step."""
    return float(model.liquidation_rounds)


def liquidations(model: MarginModel) -> float:
    """Liquidations and auction takes this step."""
    return float(model.liquidations_this_step)


def liquidation_calls(model: MarginModel) -> float:
    """Liquidation-bot calls included this step (all rounds)."""
    return float(model.liquidation_calls)


def hedger_hedge_ratio(model: MarginModel) -> float:
    """Mean hedge ratio the hedgers chose at their last activation (see ``Hedger``)."""
    return float(np.mean([h.ratio for h in model.hedgers]))


def hedger_pnl(model: MarginModel) -> float:
    """P&L of the hedgers, quote human units (see ``Hedger.pnl``)."""
    return float(sum(h.pnl(model.view) for h in model.hedgers))


def hunter_pnl(model: MarginModel) -> float:
    """P&L of the liquidation hunters, quote human units (see ``LiquidationHunter.pnl``)."""
    return float(sum(h.pnl(model.view) for h in model.hunters))


# ----------------------------------------------------------------------- liquidation map
def liquidation_map_from_prices(
    parts: Sequence[LiquidationPrices], grid: np.ndarray | Sequence[float], reference: float
) -> pd.DataFrame:
    """Debt that becomes liquidatable if the price moved to each grid price.

    A DataFrame of :func:`liquidation_map_arrays` (see there for the columns).
    """
    return pd.DataFrame(liquidation_map_arrays(parts, grid, reference))


def liquidation_map_arrays(
    parts: Sequence[LiquidationPrices], grid: np.ndarray | Sequence[float], reference: float
) -> dict[str, np.ndarray]:
    """Debt and collateral that become liquidatable if the price moved to each grid price.

    Each protocol's liquidation prices are put on the reference axis by the relative move
    they need: an account liquidated when its protocol's price ``q0`` reaches ``q`` counts
    at ``reference * q / q0`` (protocols reading different oracles are assumed to move by
    the same fraction). At grid price ``p``:

    * ``long_debt(p)`` = sum of the debt values of long-side accounts (liquidated as the
      price falls) whose liquidation price is at or above ``p``;
    * ``short_debt(p)`` = the same for short-side accounts whose liquidation price is at or
      below ``p``.

    Both are cumulative (an account already liquidatable now counts at every grid price on
    its side); debt values are those at each account's liquidation price. ``long_collateral``
    and ``short_collateral`` sum the same accounts' collateral values at their liquidation
    prices (:attr:`LiquidationPrices.collateral_value`; NaN when a part does not report
    collateral). A part without a current price is left out.

    Args:
        parts: Per-protocol scans (:class:`~marginsim.protocols.events.LiquidationPrices`).
        grid: Prices of the asset, quote per base.
        reference: The asset's price now on the map's axis.

    Returns:
        Arrays ``price``, ``long_debt``, ``short_debt``, ``long_collateral``,
        ``short_collateral`` (float64), one entry per grid price in the grid's order.
    """
    grid_arr = np.asarray(grid, dtype=np.float64).reshape(-1)
    prices, debts, colls, sides = [], [], [], []
    for part in parts:
        q0 = part.current_price
        if not len(part) or not (math.isfinite(q0) and q0 > 0):
            continue
        prices.append(part.price * (reference / q0))
        debts.append(part.debt_value)
        # A part without collateral makes the collateral columns NaN rather than too small.
        coll = part.collateral_value
        colls.append(np.full(len(part), np.nan) if coll is None else coll)
        sides.append(part.side)
    n = grid_arr.shape[0]
    out = {
        k: np.zeros(n) for k in ("long_debt", "short_debt", "long_collateral", "short_collateral")
    }
    if prices:
        price = np.concatenate(prices)
        debt = np.concatenate(debts)
        coll = np.concatenate(colls)
        side = np.concatenate(sides)
        ok = np.isfinite(debt)
        for sign, name in ((1, "long"), (-1, "short")):
            sel = ok & (side == sign)
            order = np.argsort(price[sel], kind="stable")
            p_sorted = price[sel][order]
            if sign > 0:  # accounts priced >= p
                cut = np.searchsorted(p_sorted, grid_arr, side="left")
            else:  # accounts priced <= p
                cut = np.searchsorted(p_sorted, grid_arr, side="right")
            for what, values in (("debt", debt), ("collateral", coll)):
                cum = np.concatenate([[0.0], np.cumsum(values[sel][order])])
                out[f"{name}_{what}"][:] = cum[-1] - cum[cut] if sign > 0 else cum[cut]
    return {"price": grid_arr, **out}


def liquidation_map(model: MarginModel, grid: np.ndarray | Sequence[float]) -> pd.DataFrame:
    """The liquidation map of the exogenous asset (e.g. WETH) at the model's current state.

    Every lending pool with a reserve of the asset, every CDP taking it as collateral and
    every perp contract on it contribute (see :meth:`LendingPool.liquidation_prices`,
    :meth:`CdpProtocol.liquidation_prices`, :meth:`PerpVenue.liquidation_prices`). The
    reference price is the primary book's mid (last trade, then index, when it has none);
    see :func:`liquidation_map_from_prices` for the columns.
    """
    asset = model.scenario.exogenous.asset
    if model.primary_instrument >= 0:
        reference = model.view.reference_price(model.primary_instrument)
    else:
        reference = model.index_price
    return model.protocols_view.liquidation_map(asset, grid, reference)


# ----------------------------------------------------------------- market-wide measures
#: Relative moves of the depth columns and of the liquidatable-debt window.
DEPTH_PCTS: tuple[float, ...] = (0.02, 0.05)
#: Quantiles of the per-account leverage distribution (columns ``leverage_p50`` ...).
LEVERAGE_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)
#: Debt-weighted quantiles of the distance to liquidation (``distance_to_liquidation_p10``).
DISTANCE_QUANTILES: tuple[float, ...] = (0.1, 0.5)
#: Half-width of the price window of ``liquidatable_debt_5pct`` and ``leverage_to_depth``.
LIQUIDATABLE_MOVE = 0.05


def weighted_quantiles(
    values: np.ndarray, weights: np.ndarray | None, qs: Sequence[float]
) -> list[float]:
    """Weighted empirical quantiles: per q, the smallest value with weight share >= q below.

    The inverted-CDF definition (no interpolation), so that every answer is one of the
    values and can be read off a sorted table by hand: with values sorted ascending and
    ``W_j`` the cumulative weight up to the j-th, the q-quantile is the first value with
    ``W_j >= q * W_total``. NaN values and entries with a weight <= 0 (or NaN) are dropped;
    ``inf`` is a value like any other. One sort serves every q.

    Args:
        values: Values.
        weights: Weights aligned with ``values``; ``None`` weighs every value 1.
        qs: Quantiles in [0, 1].

    Returns:
        One quantile per q; NaN when no entry with positive weight is left.
    """
    v = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(v)
    if weights is None:
        v = v[keep]
        if v.size == 0:
            return [_NAN for _ in qs]
        # The same definition; numpy selects without a full sort.
        return [float(x) for x in np.quantile(v, qs, method="inverted_cdf")]
    w = np.asarray(weights, dtype=np.float64)
    keep &= w > 0
    v, w = v[keep], w[keep]
    if v.size == 0:
        return [_NAN for _ in qs]
    order = np.argsort(v)  # ties hold equal values: their order does not change the answer
    v = v[order]
    cum = np.cumsum(w[order])
    # A relative tolerance keeps q = 0.5 of two equal weights on the first value despite
    # float rounding in the cumulative sum.
    idx = np.searchsorted(cum, np.asarray(qs, dtype=np.float64) * cum[-1] * (1 - 1e-12))
    return [float(v[min(int(i), v.size - 1)]) for i in idx]


def weighted_quantile(values: np.ndarray, weights: np.ndarray | None, q: float) -> float:
    """One weighted empirical quantile (see :func:`weighted_quantiles`)."""
    return weighted_quantiles(values, weights, [q])[0]


def account_leverage(notional: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """Per-account leverage ``notional / equity``; ``inf`` where equity <= 0 (underwater)."""
    notional = np.asarray(notional, dtype=np.float64)
    equity = np.asarray(equity, dtype=np.float64)
    out = np.full(notional.shape, np.inf)
    positive = equity > 0
    out[positive] = notional[positive] / equity[positive]
    return out


def aggregate_leverage(notional: np.ndarray, equity: np.ndarray) -> float:
    """Total notional over total equity of the accounts; NaN when total equity is <= 0."""
    total_equity = float(np.sum(equity))
    if not total_equity > 0:
        return _NAN
    return float(np.sum(notional)) / total_equity


def wamm(notional: np.ndarray, maintenance: np.ndarray) -> float:
    """Notional-weighted maintenance rate ``sum(maintenance) / sum(notional)`` (NaN: none).

    ``maintenance`` is each account's ``notional * mm_rate`` in value, so the ratio is the
    GLOSSARY's ``sum(notional_i * mm_rate_i) / sum(notional_i)``.
    """
    total = float(np.sum(notional))
    return float(np.sum(maintenance)) / total if total > 0 else _NAN


def liquidation_distances(parts: Sequence[LiquidationPrices]) -> tuple[np.ndarray, np.ndarray]:
    """Distance to liquidation of every account in ``parts``, with its debt as weight.

    The distance is the relative move of the protocol's own price that liquidates the
    account: ``1 - p_liq / p_now`` for a long (the fall needed), ``p_liq / p_now - 1`` for a
    short (the rise needed), ``0`` for an account that is already liquidatable. The weight
    is the debt value at the liquidation price (as in the liquidation map). Parts without a
    current price are left out, and so are accounts that no price liquidates (they are not
    in the scans).

    Returns:
        ``(distance, debt)`` float64 arrays.
    """
    dist, weight = [np.zeros(0)], [np.zeros(0)]
    for part in parts:
        q0 = part.current_price
        if not len(part) or not (math.isfinite(q0) and q0 > 0):
            continue
        ratio = part.price / q0
        d = np.where(part.side > 0, 1.0 - ratio, ratio - 1.0)
        dist.append(np.maximum(d, 0.0))  # -inf (listed at inf) becomes 0 as well
        weight.append(part.debt_value)
    return np.concatenate(dist), np.concatenate(weight)


def liquidatable_debt(parts: Sequence[LiquidationPrices], move: float) -> float:
    """Debt that becomes liquidatable if the price moves by ``move`` (relative) either way.

    The liquidation map's ``long_debt`` at ``reference * (1 - move)`` plus its
    ``short_debt`` at ``reference * (1 + move)`` (:func:`liquidation_map_from_prices`),
    computed without building the map: long accounts whose liquidation price is at or
    above ``(1 - move)`` times their protocol's current price, short accounts at or below
    ``(1 + move)`` times it. Already liquidatable accounts count.
    """
    total = 0.0
    for part in parts:
        q0 = part.current_price
        if not len(part) or not (math.isfinite(q0) and q0 > 0):
            continue
        hit = np.where(part.side > 0, part.price >= q0 * (1 - move), part.price <= q0 * (1 + move))
        debt = part.debt_value
        total += float(debt[hit & np.isfinite(debt)].sum())
    return total


def book_depth(
    model: MarginModel, pcts: Sequence[float] = DEPTH_PCTS
) -> dict[float, tuple[float, float, float, float]]:
    """Depth of the primary book within each relative move of its mid.

    Bids priced at least ``mid * (1 - pct)`` and asks at most ``mid * (1 + pct)`` count, as
    in :meth:`MatchingEngine.depth`.

    Returns:
        ``pct -> (bid_base, ask_base, bid_quote, ask_quote)`` in human units; NaN without a
        primary book, zeros when the book has no mid.
    """
    nan4 = (_NAN, _NAN, _NAN, _NAN)
    if model.primary_instrument < 0:
        return {p: nan4 for p in pcts}
    engine = model.engine
    ins = model.primary_instrument
    spec = engine.specs[ins]
    mid = engine.mid(ins)
    if mid is None:
        return {p: (0.0, 0.0, 0.0, 0.0) for p in pcts}
    bids, asks = engine.l2(ins, np.iinfo(np.int64).max)
    out = {}
    for pct in pcts:
        b = bids[bids[:, 0] >= mid * (1 - pct)]
        a = asks[asks[:, 0] <= mid * (1 + pct)]
        out[pct] = (
            float(b[:, 1].sum()) * spec.lot,
            float(a[:, 1].sum()) * spec.lot,
            float((b[:, 0] * b[:, 1]).sum()) * spec.tick * spec.lot,
            float((a[:, 0] * a[:, 1]).sum()) * spec.tick * spec.lot,
        )
    return out


def _reference_price(model: MarginModel) -> float:
    """The exogenous asset's price on the liquidation map's axis (see :func:`liquidation_map`)."""
    if model.primary_instrument >= 0:
        return model.view.reference_price(model.primary_instrument)
    return model.index_price


def market_wide_metrics(model: MarginModel) -> dict[str, float]:
    """The market-wide measures of one step (GLOSSARY "Market-wide measures").

    One vectorised read per protocol (:meth:`ProtocolsView.account_exposures`, the
    exogenous asset's :meth:`ProtocolsView.liquidation_prices`, one read of the primary
    book). Every account of every protocol counts once (a holder with positions in two
    protocols is two accounts). Columns, quote human units unless said otherwise:

    * ``margin_debt_lending``, ``margin_debt_cdp``, ``margin_debt_perp``: the sum of the
      accounts' debt by protocol kind (lending debt value, vault debt, perp ``max(0,
      notional - margin balance)``); ``margin_debt`` their sum.
    * ``leverage``: total notional / total equity of the leveraged accounts (NaN when total
      equity is <= 0 or there is none); ``leverage_p50/p90/p99``: quantiles (inverted CDF,
      each account one observation, ``inf`` for equity <= 0) of ``notional / equity``.
    * ``wamm``: ``sum(notional_i * mm_rate_i) / sum(notional_i)`` over the same accounts
      (lending ``mm_rate = 1 - liquidation threshold``, CDP ``1 - 1 / liquidation_ratio``,
      perp the tier's maintenance rate).
    * ``distance_to_liquidation_p10``, ``_p50``: debt-weighted quantiles of
      :func:`liquidation_distances` for the exogenous asset (fractions, e.g. 0.08 = an 8%
      move); NaN without accounts at risk.
    * ``depth_bid_2pct`` ... ``depth_ask_5pct``: base resting within 2% and 5% of the
      primary mid (see :func:`book_depth`).
    * ``liquidatable_debt_5pct``: debt liquidatable if the price moves 5% either way: the
      map's ``long_debt`` at ``0.95 * reference`` plus ``short_debt`` at ``1.05 *
      reference`` (accounts already liquidatable included).
    * ``leverage_to_depth``: ``liquidatable_debt_5pct`` / quote resting within 5% of the
      primary mid, both sides (NaN when that depth is 0).
    * ``<protocol>_tvl``: :meth:`ProtocolsView.total_value_locked`.
    """
    pv = model.protocols_view
    out: dict[str, float] = {}
    by_kind: dict[str, float] = {"lending": 0.0, "cdp": 0.0, "perp": 0.0}
    notional, equity, maintenance = [np.zeros(0)], [np.zeros(0)], [np.zeros(0)]
    for kind, _, exp in pv.account_exposures():
        by_kind[kind] += float(exp.debt.sum())
        notional.append(exp.notional)
        equity.append(exp.equity)
        maintenance.append(exp.maintenance)
    out["margin_debt"] = sum(by_kind.values())
    for kind, value in by_kind.items():
        out[f"margin_debt_{kind}"] = value
    n_all = np.concatenate(notional)
    e_all = np.concatenate(equity)
    out["leverage"] = aggregate_leverage(n_all, e_all)
    lev = account_leverage(n_all, e_all)
    lev_q = weighted_quantiles(lev, None, LEVERAGE_QUANTILES)
    for q, value in zip(LEVERAGE_QUANTILES, lev_q, strict=True):
        out[f"leverage_p{round(q * 100)}"] = value
    out["wamm"] = wamm(n_all, np.concatenate(maintenance))
    parts = pv.liquidation_prices(model.scenario.exogenous.asset)
    dist, debt = liquidation_distances(parts)
    dist_q = weighted_quantiles(dist, debt, DISTANCE_QUANTILES)
    for q, value in zip(DISTANCE_QUANTILES, dist_q, strict=True):
        out[f"distance_to_liquidation_p{round(q * 100)}"] = value
    depth = book_depth(model, DEPTH_PCTS)
    for pct in DEPTH_PCTS:
        bid, ask, _, _ = depth[pct]
        out[f"depth_bid_{round(pct * 100)}pct"] = bid
        out[f"depth_ask_{round(pct * 100)}pct"] = ask
    at_risk = liquidatable_debt(parts, LIQUIDATABLE_MOVE)
    out["liquidatable_debt_5pct"] = at_risk
    if LIQUIDATABLE_MOVE in depth:
        _, _, bid_q, ask_q = depth[LIQUIDATABLE_MOVE]
    else:
        _, _, bid_q, ask_q = book_depth(model, (LIQUIDATABLE_MOVE,))[LIQUIDATABLE_MOVE]
    quote_depth = bid_q + ask_q
    out["leverage_to_depth"] = at_risk / quote_depth if quote_depth > 0 else _NAN
    for name, value in pv.total_value_locked().items():
        out[f"{name}_tvl"] = value
    return out


class LiquidationMapRecorder:
    """Records the liquidation map every ``every`` steps into the ``liquidation_map`` table.

    The grid is ``reference * linspace(1 - half_width, 1 + half_width, points)`` around the
    reference price of :func:`liquidation_map` at the recording step; rows hold ``step``,
    the grid ``price`` and the map's four columns (see :func:`liquidation_map_from_prices`).

    Args:
        every: Record at steps ``0, every, 2 * every, ...``; 0 records nothing.
        half_width: Relative half-width of the grid (0.3: from -30% to +30%).
        points: Grid prices per recording.
    """

    COLUMNS: dict[str, str] = {
        "step": "int64",
        "price": "float64",
        "long_debt": "float64",
        "short_debt": "float64",
        "long_collateral": "float64",
        "short_collateral": "float64",
    }

    def __init__(self, every: int, half_width: float, points: int) -> None:
        self.every = int(every)
        self.offsets = np.linspace(1.0 - half_width, 1.0 + half_width, int(points))
        # Arrays per recording; the frame is built once at the end (a DataFrame per
        # recording would cost more than the map itself).
        self._maps: list[dict[str, np.ndarray]] = []

    def record(self, model: MarginModel, step: int) -> None:
        """Append the map of ``step`` if it is a recording step."""
        if self.every <= 0 or step % self.every:
            return
        reference = _reference_price(model)
        if not (math.isfinite(reference) and reference > 0):
            return
        parts = model.protocols_view.liquidation_prices(model.scenario.exogenous.asset)
        arrays = liquidation_map_arrays(parts, reference * self.offsets, reference)
        arrays["step"] = np.full(self.offsets.shape[0], step, dtype=np.int64)
        self._maps.append(arrays)

    def frame(self) -> pd.DataFrame:
        """The recorded maps, one row per step and grid price (typed even when empty)."""
        return pd.DataFrame(
            {
                k: np.concatenate([m[k] for m in self._maps]) if self._maps else np.zeros(0)
                for k in self.COLUMNS
            }
        ).astype(self.COLUMNS)


class LiquidationRounds:
    """Which liquidation round of its step each row of the ``liquidations`` table came from.

    The model calls :meth:`mark` at the start of every round with the protocols' row counts
    (:attr:`liquidation_count`); rows appended after that mark belong to that round. Rounds
    count from 0 within a step; a row written outside the liquidation phase gets ``-1``.
    """

    def __init__(self) -> None:
        self._marks: dict[str, tuple[list[int], list[int], list[int]]] = {}

    def mark(self, protocols: dict[str, object], step: int, round_index: int) -> None:
        """Note where round ``round_index`` of ``step`` starts in every protocol's rows."""
        for name, protocol in protocols.items():
            counts, steps, rounds = self._marks.setdefault(name, ([], [], []))
            counts.append(int(protocol.liquidation_count))  # type: ignore[attr-defined]
            steps.append(step)
            rounds.append(round_index)

    def rounds(self, name: str, frame: pd.DataFrame) -> np.ndarray:
        """The ``round`` column for the ``liquidations`` rows of protocol ``name``, in order."""
        n = len(frame)
        if name not in self._marks or n == 0:
            return np.full(n, -1, dtype=np.int64)
        counts, steps, rounds = (np.asarray(x, dtype=np.int64) for x in self._marks[name])
        # The last mark at or before each row index (marks are non-decreasing in count).
        i = np.searchsorted(counts, np.arange(n), side="right") - 1
        ok = i >= 0
        out = np.full(n, -1, dtype=np.int64)
        same_step = ok & (steps[np.maximum(i, 0)] == frame["step"].to_numpy())
        out[same_step] = rounds[i[same_step]]
        return out


def core_reporters() -> dict[str, Reporter]:
    """The metrics every run records, in column order."""
    return {
        "index_price": index_price,
        "mid_price": mid_price,
        "best_bid": best_bid,
        "best_ask": best_ask,
        "spread_bps": spread_bps,
        "last_price": last_price,
        "basis_bps": basis_bps,
        "trades": trades,
        "volume_base": volume_base,
        "volume_quote": volume_quote,
        "depth_bid_1pct": depth_bid_1pct,
        "depth_ask_1pct": depth_ask_1pct,
        "makers_quoting": makers_quoting,
        "liquidation_rounds": liquidation_rounds,
        "liquidations": liquidations,
        "liquidation_calls": liquidation_calls,
    }


def manipulator_pnl(model: MarginModel) -> float:
    """The oracle manipulator's P&L at its oracle-free reference price (debt asset)."""
    manipulator = model.manipulator
    return manipulator.pnl(model.view, model.protocols_view) if manipulator else _NAN


class _OraclePrice:
    """Reporter of one oracle's price (a class, not a lambda, so it pickles)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, model: MarginModel) -> float:
        return _or_nan(model.oracles.price(self.name))


class _BookMid:
    """Reporter of the mid of one more book (the primary book has its own columns)."""

    def __init__(self, instrument_id: str) -> None:
        self.instrument_id = instrument_id

    def __call__(self, model: MarginModel) -> float:
        return _or_nan(model.engine.mid_price(self.instrument_id))


class _AmmPrice:
    """Reporter of one AMM pool's price."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, model: MarginModel) -> float:
        return _or_nan(model.amms[self.index].mid_price())


class _ProtocolMetrics:
    """Group reporter: every metric of one protocol, prefixed with its name."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name

    def __call__(self, model: MarginModel) -> dict[str, float]:
        venue = {"lending": model.lending, "cdp": model.cdps, "perp": model.perps}[self.kind][
            self.name
        ]
        return {f"{self.name}_{k}": float(v) for k, v in venue.metrics().items()}


GroupReporter = Callable[["MarginModel"], dict[str, float]]


class MetricsRecorder:
    """Collects one row of metrics per step into column lists; reading only.

    Args:
        reporters: Column name to reporter function.
        groups: Reporters that return several named columns at once (a protocol's metrics);
            their columns are fixed by the keys of their first answer.
    """

    def __init__(
        self, reporters: dict[str, Reporter], groups: list[GroupReporter] | None = None
    ) -> None:
        self.reporters = dict(reporters)
        self.groups = list(groups or [])
        self.columns: dict[str, list[float]] = {"step": []}
        self.columns.update({name: [] for name in self.reporters})

    @classmethod
    def for_model(cls, model: MarginModel) -> MetricsRecorder:
        """The core metrics plus one column per oracle and per AMM pool of ``model``."""
        reporters = core_reporters()
        for name in model.oracles.names:
            reporters[f"oracle_{name}"] = _OraclePrice(name)
        for spec in model.engine.specs:
            if spec.instrument_id != model.primary_instrument_id:
                reporters[f"{spec.instrument_id}_mid_price"] = _BookMid(spec.instrument_id)
        for i, pool in enumerate(model.amms):
            reporters[f"amm_{pool.pool_id}_price"] = _AmmPrice(i)
        if getattr(model, "manipulator", None) is not None:
            reporters["manipulator_pnl"] = manipulator_pnl
        if getattr(model, "hunters", None):
            reporters["hunter_pnl"] = hunter_pnl
        if getattr(model, "hedgers", None):
            reporters["hedger_hedge_ratio"] = hedger_hedge_ratio
            reporters["hedger_pnl"] = hedger_pnl
        groups: list[GroupReporter] = [_ProtocolMetrics("lending", n) for n in model.lending]
        groups += [_ProtocolMetrics("cdp", n) for n in model.cdps]
        groups += [_ProtocolMetrics("perp", n) for n in model.perps]
        groups.append(market_wide_metrics)
        if getattr(model, "contagion", None) is not None:
            groups.append(_NetworkMetrics())
        recorder = cls(reporters, groups)
        for group in groups:
            recorder.columns.update({name: [] for name in group(model)})
        return recorder

    def record(self, model: MarginModel, step: int) -> None:
        """Append the row of ``step``."""
        self.columns["step"].append(step)
        for name, reporter in self.reporters.items():
            value = reporter(model)
            self.columns[name].append(value if math.isfinite(value) else _NAN)
        for group in self.groups:
            for name, value in group(model).items():
                self.columns[name].append(value if math.isfinite(value) else _NAN)

    def frame(self) -> pd.DataFrame:
        """The recorded rows as a DataFrame (``step`` int64, metrics float64)."""
        df = pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in self.columns.items()})
        df["step"] = df["step"].astype(np.int64)
        return df


# ------------------------------------------------------------------------------- network block
class _NetworkMetrics:
    """Group reporter of the protocol network (see marginsim.protocols.contagion)."""

    def __call__(self, model: MarginModel) -> dict[str, float]:
        monitor = model.contagion
        out = {
            "contagion_reach": float(monitor.contagion_reach()),
            "protocols_defaulted": float(monitor.protocols_defaulted()),
            "systemic_loss": monitor.systemic_loss(),
        }
        out.update({f"debtrank_{n}": float(v) for n, v in monitor.debtrank.items()})
        return out
