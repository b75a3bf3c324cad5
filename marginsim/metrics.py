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
contagion_reach             protocols (lending, CDP, perp, bridge) with any bad debt so far
protocols_defaulted         protocols in default so far (see protocols.contagion)
systemic_loss               total bad debt of all protocols, unit of account
debtrank_<protocol>         DebtRank of each protocol on the exposure graph (last computed)
==========================  =========================================================
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
    "MetricsRecorder",
    "core_reporters",
    "hedger_hedge_ratio",
    "hedger_pnl",
    "hunter_pnl",
    "liquidation_map",
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

    Each protocol's liquidation prices are put on the reference axis by the relative move
    they need: an account liquidated when its protocol's price ``q0`` reaches ``q`` counts
    at ``reference * q / q0`` (protocols reading different oracles are assumed to move by
    the same fraction). At grid price ``p``:

    * ``long_debt(p)`` = sum of the debt values of long-side accounts (liquidated as the
      price falls) whose liquidation price is at or above ``p``;
    * ``short_debt(p)`` = the same for short-side accounts whose liquidation price is at or
      below ``p``.

    Both are cumulative (an account already liquidatable now counts at every grid price on
    its side); debt values are those at each account's liquidation price. A part without a
    current price is left out.

    Args:
        parts: Per-protocol scans (:class:`~marginsim.protocols.events.LiquidationPrices`).
        grid: Prices of the asset, quote per base.
        reference: The asset's price now on the map's axis.

    Returns:
        Columns ``price``, ``long_debt``, ``short_debt`` (float64), one row per grid price in
        the grid's order.
    """
    grid_arr = np.asarray(grid, dtype=np.float64).reshape(-1)
    prices, debts, sides = [], [], []
    for part in parts:
        q0 = part.current_price
        if not len(part) or not (math.isfinite(q0) and q0 > 0):
            continue
        prices.append(part.price * (reference / q0))
        debts.append(part.debt_value)
        sides.append(part.side)
    long_debt = np.zeros(grid_arr.shape[0])
    short_debt = np.zeros(grid_arr.shape[0])
    if prices:
        price = np.concatenate(prices)
        debt = np.concatenate(debts)
        side = np.concatenate(sides)
        ok = np.isfinite(debt)
        for sign, out in ((1, long_debt), (-1, short_debt)):
            sel = ok & (side == sign)
            order = np.argsort(price[sel], kind="stable")
            p_sorted = price[sel][order]
            cum = np.concatenate([[0.0], np.cumsum(debt[sel][order])])
            if sign > 0:  # accounts priced >= p
                out[:] = cum[-1] - cum[np.searchsorted(p_sorted, grid_arr, side="left")]
            else:  # accounts priced <= p
                out[:] = cum[np.searchsorted(p_sorted, grid_arr, side="right")]
    return pd.DataFrame({"price": grid_arr, "long_debt": long_debt, "short_debt": short_debt})


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
