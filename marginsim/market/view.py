"""The read-only view of the market that agents decide from."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping

    from marginsim.ledger import Ledger
    from marginsim.market.amm import ConstantProductPool
    from marginsim.market.engine import MatchingEngine
    from marginsim.market.oracle import OracleSet

__all__ = ["MarketView"]


class MarketView:
    """What an agent may see: book queries, the index, oracle prices and balances.

    It exposes queries only, so an agent holding a view cannot change a venue or a balance;
    agents act by returning orders (DESIGN.md section 4, phase 4).

    Args:
        engine: The shared matching engine.
        ledger: The ledger (read through its read-only ``balances`` view).
        oracles: The oracles protocols read.
        index_path: The exogenous index path, one value per step.
        amms: The AMM pools by id (read through quote methods only).
    """

    def __init__(
        self,
        engine: MatchingEngine,
        ledger: Ledger,
        oracles: OracleSet,
        index_path: np.ndarray,
        amms: Mapping[str, ConstantProductPool] | None = None,
    ) -> None:
        self._engine = engine
        self._amms = dict(amms or {})
        self._ledger = ledger
        self._oracles = oracles
        self._index_path = index_path
        #: The step being run (0-based); the model sets it before the step's phases run.
        self.step = 0

    # ---------------------------------------------------------------- the outside world
    @property
    def index_price(self) -> float:
        """The exogenous index after this step's exogenous phase (path value ``step + 1``)."""
        return float(self._index_path[self.step + 1])

    def index_history(self, window: int) -> np.ndarray:
        """The last ``window`` index values up to and including the current one."""
        end = self.step + 2
        return self._index_path[max(0, end - window) : end]

    def oracle_price(self, name: str) -> float | None:
        """An oracle's published price, ``None`` when it has none yet."""
        return self._oracles.price(name)

    # ---------------------------------------------------------------- books
    def tick(self, instrument: int) -> float:
        """Tick size (quote per base) of an instrument."""
        return self._engine.specs[instrument].tick

    def lot(self, instrument: int) -> float:
        """Lot size (base) of an instrument."""
        return self._engine.specs[instrument].lot

    def best_bid(self, instrument: int) -> int | None:
        """Best bid in ticks, ``None`` when the bid side is empty."""
        return self._engine.best_bid(instrument)

    def best_ask(self, instrument: int) -> int | None:
        """Best ask in ticks, ``None`` when the ask side is empty."""
        return self._engine.best_ask(instrument)

    def mid_price(self, instrument: int) -> float | None:
        """Book mid in quote per base, ``None`` when a side is empty."""
        return self._engine.mid_price(self._engine.specs[instrument].instrument_id)

    def last_price(self, instrument: int) -> float | None:
        """Last trade price in quote per base, ``None`` before the first trade."""
        return self._engine.last_price(self._engine.specs[instrument].instrument_id)

    def spot_instrument(self, base_asset: int, quote_asset: int | None = None) -> int | None:
        """First spot book trading ``base_asset`` (against ``quote_asset`` if given)."""
        for k, spec in enumerate(self._engine.specs):
            if (
                spec.kind == "spot"
                and spec.base_asset == base_asset
                and (quote_asset is None or spec.quote_asset == quote_asset)
            ):
                return k
        return None

    def base_units_per_lot(self, instrument: int) -> int:
        """Ledger units of base in one lot."""
        return self._engine.specs[instrument].base_units_per_lot

    def quote_asset(self, instrument: int) -> int:
        """Ledger id of the quote asset of an instrument."""
        return self._engine.specs[instrument].quote_asset

    def market_order_cost(
        self, instrument: int, side: int, qty_lots: int
    ) -> tuple[int, int, float | None]:
        """``(filled_lots, quote_units, average_price)`` of a market order, book unchanged."""
        return self._engine.market_order_cost(instrument, side, qty_lots)

    def l2(self, instrument: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` levels per side, ``(bids, asks)`` of ``[price_ticks, qty_lots]`` rows."""
        return self._engine.l2(instrument, n)

    def reference_price(self, instrument: int) -> float:
        """Mid if the book has both sides, else last trade, else the index."""
        for price in (self.mid_price(instrument), self.last_price(instrument)):
            if price is not None:
                return price
        return self.index_price

    # ---------------------------------------------------------------- balances
    def asset_decimals(self, asset: int) -> int:
        """Decimals of a ledger asset id."""
        return self._ledger.assets[asset].decimals

    def balances(self, holders: np.ndarray, asset: int) -> np.ndarray:
        """Balances of many holders in one asset (ledger units), as a copy."""
        return self._ledger.balances[holders, asset].copy()

    # ---------------------------------------------------------------- AMM pools
    def amm_reserves(self, pool: str) -> tuple[int, int]:
        """``(base_units, quote_units)`` reserves of an AMM pool."""
        return self._amms[pool].reserves

    def amm_fee_ppm(self, pool: str) -> int:
        """Swap fee of an AMM pool, parts per million of the input."""
        return self._amms[pool].fee_ppm

    def amm_mid_price(self, pool: str) -> float | None:
        """Marginal price of an AMM pool (fee excluded), quote per base; ``None`` if empty."""
        return self._amms[pool].mid_price()

    def amm_quote_out(self, pool: str, side: int, amount_in: int) -> int:
        """Units a swap would pay out now (see ``ConstantProductPool.quote_out``)."""
        return self._amms[pool].quote_out(side, amount_in)

    def amm_amount_in_for(self, pool: str, side: int, amount_out: int) -> int:
        """Least input paying out ``amount_out`` (see ``ConstantProductPool.amount_in_for``)."""
        return self._amms[pool].amount_in_for(side, amount_out)
