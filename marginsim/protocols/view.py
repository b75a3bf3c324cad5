"""The read-only view of the protocols that agents decide from."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from marginsim.metrics import liquidation_map_from_prices

if TYPE_CHECKING:
    import pandas as pd

    from marginsim.protocols.cdp import AuctionState, CdpProtocol, UnsafeVaults
    from marginsim.protocols.events import AccountExposures, LiquidationPrices
    from marginsim.protocols.lending import LendingPool, LiquidatableAccounts, ReserveInfo
    from marginsim.protocols.perp import PerpVenue
    from marginsim.protocols.policies import LiquidationQuote

__all__ = ["ProtocolsView", "Redemption"]

#: Scale of the liquidity indexes (27 decimals, as Aave's ray); equal to lending.RAY.
_RAY = 10**27


@dataclasses.dataclass(frozen=True)
class Redemption:
    """What seized claim tokens turn into when redeemed at their issuers now (a preview).

    Attributes:
        asset: Ledger id of what the holder ends up with to sell (the underlying at the end
            of a chain of receipt tokens; the asset itself when it is no receipt token).
        units: Units of ``asset``.
        price: Price of one human unit of ``asset`` (the last issuer's price; ``None`` when
            ``asset`` is not a redeemed underlying, or it has no price).
        kept_value: Value (quote human units) of the claim tokens the issuers' liquidity cannot
            pay now: they stay with the holder, valued at exchange rate x underlying price.
    """

    asset: int
    units: int
    price: float | None = None
    kept_value: float = 0.0


class ProtocolsView:
    """Query-only access to the lending pools and CDPs of a run.

    Agents (liquidation bots, keepers) scan with it and act by returning calls that the model
    routes; holding the view gives no way to change a protocol.

    Args:
        lending: Lending pools by name.
        cdps: CDP protocols by name.
        perps: Perp venues by name.
        perp_bases: Base asset symbol of each perp contract (engine instrument index), for
            the liquidation map.
    """

    def __init__(
        self,
        lending: dict[str, LendingPool],
        cdps: dict[str, CdpProtocol],
        perps: dict[str, PerpVenue] | None = None,
        perp_bases: Mapping[int, str] | None = None,
    ) -> None:
        self._lending = lending
        self._cdps = cdps
        self._perps = perps or {}
        self._perp_bases = dict(perp_bases or {})
        self._receipts: dict[int, tuple[str, str]] = {}
        self._wrapped: frozenset[int] = frozenset()

    def set_claims(
        self, receipts: Mapping[int, tuple[str, str]], wrapped: Iterable[int] = ()
    ) -> None:
        """Tell the view which ledger assets are claims on another protocol (model set-up).

        Args:
            receipts: Ledger id of a pool's receipt token -> ``(issuing pool, underlying
                symbol)`` (the model's ``receipt_of_asset``).
            wrapped: Ledger ids of bridges' wrapped assets.
        """
        self._receipts = dict(receipts)
        self._wrapped = frozenset(int(a) for a in wrapped)

    @property
    def lending_names(self) -> tuple[str, ...]:
        """Names of the lending pools, in scenario order."""
        return tuple(self._lending)

    @property
    def cdp_names(self) -> tuple[str, ...]:
        """Names of the CDP protocols, in scenario order."""
        return tuple(self._cdps)

    # ---------------------------------------------------------------- lending
    def liquidatable(self, pool: str) -> LiquidatableAccounts:
        """Accounts of ``pool`` with a health factor below 1 (one vectorised scan)."""
        return self._lending[pool].liquidatable()

    def reserve(self, pool: str, symbol: str) -> ReserveInfo:
        """Parameters and ledger ids of one reserve."""
        return self._lending[pool].reserve(symbol)

    def debt_units(self, pool: str, holder: int, symbol: str) -> int:
        """Debt of ``holder`` in ``symbol``, smallest units."""
        return self._lending[pool].debt_units(holder, symbol)

    def reserve_price(self, pool: str, symbol: str) -> float | None:
        """The price ``pool`` values ``symbol`` at now (``None``: no price).

        For a claim reserve (another pool's receipt token, a bridge's wrapped asset) it is
        the oracle price times the exchange rate, as in the pool's health factors.
        """
        return self._lending[pool].reserve_price(symbol)

    def health_factors(self, pool: str, holders: np.ndarray) -> np.ndarray:
        """Health factors of many accounts of ``pool`` in one vectorised scan.

        inf without debt, NaN when an asset held has no price (float64 array).
        """
        return self._lending[pool].health_factors(holders)

    def supplied_amounts(self, pool: str, holders: np.ndarray, symbol: str) -> np.ndarray:
        """Underlying units of ``symbol`` each holder has supplied to ``pool`` (float64).

        One vectorised read of the receipt balances at the current liquidity index, rounded
        down; exact up to float64 precision (use :meth:`LendingPool.supplied_units` for the
        exact integer of one holder).
        """
        p = self._lending[pool]
        res = p.reserve(symbol)
        scaled = p.ledger.balances[np.asarray(holders, dtype=np.int64), res.receipt]
        return np.floor(scaled * p.liquidity_index(symbol))

    def debt_amounts(self, pool: str, holders: np.ndarray, symbol: str) -> np.ndarray:
        """Units of ``symbol`` each holder owes ``pool`` (float64, rounded up).

        One vectorised read of the debt-token balances at the current borrow index; exact up
        to float64 precision (:meth:`debt_units` is the exact integer of one holder).
        """
        p = self._lending[pool]
        res = p.reserve(symbol)
        scaled = p.ledger.balances[np.asarray(holders, dtype=np.int64), res.debt]
        return np.ceil(scaled * p.borrow_index(symbol))

    def max_repay_share(self, pool: str, health_factor: float) -> float:
        """Share of one debt a liquidator may repay at ``health_factor`` (close factor)."""
        cfg = self._lending[pool].config
        if health_factor < cfg.full_close_below_hf:
            return 1.0
        return cfg.close_factor

    def liquidation_quote(
        self, pool: str, account: int, debt_symbol: str, collateral_symbol: str
    ) -> LiquidationQuote:
        """The terms ``pool`` would give a liquidation of ``account`` now (its policy's).

        Most repayable this call (close factor and the policy's cap: a gradual slice, an
        early share), the bonus, whether it is an early liquidation, or why it would be
        refused (``paused`` under a circuit breaker). See
        :meth:`marginsim.protocols.lending.LendingPool.liquidation_quote`.
        """
        return self._lending[pool].liquidation_quote(account, debt_symbol, collateral_symbol)

    def liquidations_paused(self, pool: str) -> bool:
        """Whether ``pool``'s liquidation policy pauses liquidations in this step."""
        p = self._lending[pool]
        return p.policy is not None and p.policy.paused(p.step)

    def is_wrapped(self, asset: int) -> bool:
        """Whether ledger ``asset`` is a bridge's wrapped asset."""
        return int(asset) in self._wrapped

    def redemption(self, asset: int, units: int) -> Redemption:
        """Preview what ``units`` of ``asset`` become when redeemed at their issuers now.

        Follows chains of receipt tokens as the model's claim redemption does: at each issuer
        the holder withdraws ``min(units x liquidity index, the issuer's available
        liquidity)`` of the underlying; what liquidity cannot pay stays a claim, valued at
        its exchange rate x the underlying's price (``kept_value``). Nothing changes.
        """
        asset, units = int(asset), int(units)
        price: float | None = None
        kept = 0.0
        while asset in self._receipts and units > 0:
            issuer, underlying = self._receipts[asset]
            pool = self._lending[issuer]
            res = pool.reserve(underlying)
            worth = units * pool.liquidity_index_ray(underlying) // _RAY
            amount = min(worth, pool.available_units(underlying))
            p = pool.reserve_price(underlying)
            unit_price = math.nan if p is None else p
            if amount <= 0:
                return Redemption(asset, 0, None, kept + worth / res.unit * unit_price)
            kept += (worth - amount) / res.unit * unit_price
            asset, units, price = res.asset, amount, p
        return Redemption(asset, units, price, kept)

    def flash_loan_fee(self, pool: str) -> float | None:
        """Flash-loan fee rate of ``pool``; ``None`` when it offers no flash loans."""
        cfg = self._lending[pool].config
        return cfg.flash_loan_fee if cfg.flash_loans else None

    def available_units(self, pool: str, symbol: str) -> int:
        """Liquidity of ``symbol`` that ``pool`` can lend now, smallest units."""
        return self._lending[pool].available_units(symbol)

    def asset_symbol(self, pool: str, asset: int) -> str:
        """Reserve symbol of a ledger asset id in ``pool``."""
        return self._lending[pool].ledger.assets[asset].symbol

    # ---------------------------------------------------------------- CDPs
    def unsafe_vaults(self, cdp: str) -> UnsafeVaults:
        """Vaults of ``cdp`` below the liquidation ratio."""
        return self._cdps[cdp].unsafe_vaults()

    def active_auctions(self, cdp: str) -> list[AuctionState]:
        """Running collateral auctions of ``cdp``, oldest first."""
        return self._cdps[cdp].active_auctions()

    def cdp_assets(self, cdp: str) -> tuple[int, int]:
        """Ledger ids of ``(collateral, stablecoin)`` of ``cdp``."""
        c = self._cdps[cdp]
        return c.collateral_asset, c.stable_asset

    def cdp_price(self, cdp: str) -> float | None:
        """The collateral price ``cdp`` reads now."""
        return self._cdps[cdp].oracle_price()

    def cdp_backing(self, cdp: str) -> tuple[int, int]:
        """``(system debt, stablecoin supply)`` of ``cdp`` now, stablecoin units.

        System debt is the uncovered bad debt (stablecoin in circulation that no collateral
        or surplus backs); the supply is the ledger supply of the stablecoin.
        """
        c = self._cdps[cdp]
        return int(c.totals()["system_debt"]), int(c.ledger.supply(c.stable_asset))

    # ---------------------------------------------------------------- perp venues
    def perp_positions(self, venue: str, holders: np.ndarray, instrument: int) -> np.ndarray:
        """Signed position sizes (lots) of ``holders`` in a perp contract."""
        return self._perps[venue].position_sizes(holders, instrument)

    def perp_mark(self, venue: str, instrument: int) -> float | None:
        """Mark price of a perp contract (``None`` before the venue has an index)."""
        mark = self._perps[venue].mark_price(instrument)
        return None if mark is None or not mark > 0 else float(mark)

    def perp_funding_rate(self, venue: str, instrument: int) -> float:
        """Rate of the last funding payment of a perp contract (0 before the first)."""
        return self._perps[venue].last_funding_rate(instrument)

    def perp_margin_debt(self, venue: str) -> float:
        """Aggregate margin debt of a perp venue, settlement human units.

        Sum over positions of max(0, notional - margin balance), as the venue's
        ``margin_debt`` metric (one vectorised scan of its accounts).
        """
        return float(self._perps[venue].metrics()["margin_debt"])

    def perp_margin_balance(self, venue: str, holder: int) -> float:
        """Margin balance of one account at mark, settlement human units.

        Wallet + isolated margin + unrealised PnL (0 for an account the venue does not know).
        """
        v = self._perps[venue]
        return v.margin_balance(holder) / float(v.unit)

    def perp_margin_balances(self, venue: str, holders: np.ndarray) -> np.ndarray:
        """Margin balances of many accounts at mark, settlement human units (float64).

        Wallet + isolated margin + unrealised PnL, 0 for accounts the venue does not know
        (one vectorised read).
        """
        v = self._perps[venue]
        return v.margin_balances(holders) / float(v.unit)

    def perp_maintenance_rate(self, venue: str) -> float:
        """Maintenance rate of the first (smallest-notional) margin tier of a perp venue."""
        return float(self._perps[venue].tiers.rates[0])

    def perp_settlement(self, venue: str) -> int:
        """Ledger asset id of a perp venue's settlement asset."""
        return int(self._perps[venue].settlement)

    # ---------------------------------------------------------------- liquidation map
    def liquidation_prices(self, symbol: str) -> list[LiquidationPrices]:
        """Per-protocol liquidation prices of ``symbol``, one scan per protocol.

        Lending pools with a ``symbol`` reserve, CDPs taking it as collateral and perp
        contracts on it (each a read-only vectorised scan).
        """
        out = [p.liquidation_prices(symbol) for p in self._lending.values() if symbol in p.symbols]
        for cdp in self._cdps.values():
            if cdp.config.collateral == symbol:
                out.append(cdp.liquidation_prices())
        for venue in self._perps.values():
            for instrument in venue.instruments.tolist():
                if self._perp_bases.get(int(instrument)) == symbol:
                    out.append(venue.liquidation_prices(int(instrument)))
        return out

    def liquidation_map(
        self, symbol: str, grid: np.ndarray | Sequence[float], reference: float
    ) -> pd.DataFrame:
        """The public liquidation map of ``symbol`` on ``grid``.

        Columns price, long_debt, short_debt, long_collateral, short_collateral;
        ``reference`` is the price now on the grid's axis (see
        :func:`marginsim.metrics.liquidation_map_from_prices`).
        """
        return liquidation_map_from_prices(self.liquidation_prices(symbol), grid, reference)

    # ---------------------------------------------------------------- market-wide measures
    def account_exposures(self) -> list[tuple[str, str, AccountExposures]]:
        """Leveraged accounts of every protocol: ``(kind, name, exposures)`` per protocol.

        ``kind`` is ``lending``, ``cdp`` or ``perp``; protocols in scenario order within a
        kind (see :meth:`LendingPool.account_exposures`,
        :meth:`CdpProtocol.account_exposures`, :meth:`PerpVenue.account_exposures`).
        """
        out = [("lending", n, p.account_exposures()) for n, p in self._lending.items()]
        out += [("cdp", n, c.account_exposures()) for n, c in self._cdps.items()]
        out += [("perp", n, v.account_exposures()) for n, v in self._perps.items()]
        return out

    def total_value_locked(self) -> dict[str, float]:
        """Value locked in each protocol now, quote human units, by protocol name.

        A lending pool: every supplied asset at the pool's price (its ``supplied_value``;
        NaN when a supplied asset has no price). A CDP: the collateral locked in vaults at
        the oracle price (NaN without one). A perp venue: settlement tokens it holds as
        margin plus its insurance fund (stablecoin at 1).
        """
        out: dict[str, float] = {}
        for name, pool in self._lending.items():
            total = 0.0
            for res in pool.reserves:
                units = pool.total_supplied_units(res.symbol)
                if units:
                    price = pool.prices.price(res.price_ref)
                    total += units / res.unit * (float("nan") if price is None else price)
            out[name] = total
        for name, cdp in self._cdps.items():
            price = cdp.oracle_price()
            ink = cdp.locked_collateral
            out[name] = float("nan") if price is None else ink * price
        for name, venue in self._perps.items():
            held = venue.ledger.balance(venue.margin_holder, venue.settlement)
            held += venue.ledger.balance(venue.insurance_holder, venue.settlement)
            out[name] = held / float(venue.unit)
        return out
