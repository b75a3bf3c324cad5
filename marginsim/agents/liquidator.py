"""Liquidation bots and CDP keepers: individuals that compete to liquidate for a profit."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import mesa
import numpy as np

from marginsim.agents.base import OrderBatch, Trader
from marginsim.config import LiquidatorsConfig
from marginsim.market.engine import OrderKind

if TYPE_CHECKING:
    from marginsim.market.view import MarketView
    from marginsim.protocols.cdp import AuctionState
    from marginsim.protocols.lending import LiquidatableAccounts, ReserveInfo
    from marginsim.protocols.view import ProtocolsView

__all__ = ["BarkCall", "LiquidateCall", "Liquidator", "TakeCall"]


@dataclasses.dataclass(frozen=True)
class LiquidateCall:
    """Ask lending pool ``protocol`` to liquidate ``account`` (repay up to ``repay_units``).

    With ``flash`` the bot has no capital for it: the model flash-borrows ``repay_units`` of
    the debt asset from the same pool, liquidates, sells the collateral for the debt asset
    and repays the loan and its fee, all in one atomic action.
    """

    protocol: str
    account: int
    debt_symbol: str
    collateral_symbol: str
    repay_units: int
    flash: bool = False


@dataclasses.dataclass(frozen=True)
class BarkCall:
    """Ask CDP ``protocol`` to start the auction of ``account``'s unsafe vault."""

    protocol: str
    account: int


@dataclasses.dataclass(frozen=True)
class TakeCall:
    """Buy up to ``max_collateral_units`` from auction ``auction_id`` at <= ``max_price``."""

    protocol: str
    auction_id: int
    max_collateral_units: int
    max_price: float


Call = LiquidateCall | BarkCall | TakeCall

#: How many times a bot halves a liquidation that the book cannot absorb at a profit.
_SIZE_HALVINGS = 8


class Liquidator(Trader):
    """One liquidation bot, also a keeper of every CDP.

    In each liquidation round :meth:`plan` yields calls one at a time and reads the protocols
    again between them, so it always acts on the state its previous call left:

    1. Lending pools: the accounts each pool lists as liquidatable (health factor below 1,
       or what its liquidation policy adds), largest debt first; a pool whose policy pauses
       liquidations is skipped. For each, it reads the pool's current terms
       (:meth:`ProtocolsView.liquidation_quote`: the most this call may repay under the close
       factor and the policy, e.g. a gradual slice or an early share, and the bonus) and
       offers to repay as much of the largest debt as those terms and its wallet allow,
       halved until what the seized collateral is worth is at least ``(1 + min_profit)``
       times the value repaid (so a thin book gets smaller liquidations, not none). Worth
       means: sold on the shared book at the current depth; for another pool's receipt
       token, redeemed at the issuer (as the model does) and the underlying sold on its book
       (or taken as cash when it is the debt asset), the part the issuer's liquidity cannot
       pay held at exchange rate x underlying price; for a bridge's wrapped asset without a
       book, held at the pool's backing-based price. A bot without the debt asset and with
       ``uses_flash_loans`` borrows it from the pool for one atomic action instead, which
       must also pay the flash-loan fee and sell everything it seized for the debt asset.
    2. CDPs: it starts the auction of every unsafe vault (``bark``), then buys from running
       auctions whose price is at least ``min_profit`` below what the collateral fetches on
       the book, paying with the stablecoin in its wallet.

    After each success :meth:`after` returns the market order that sells the seized
    collateral on the book (``sell_collateral``), which moves the price the next accounts'
    health depends on: that is how a cascade propagates. With ``sell_over_steps > 1`` the
    bot instead sells it in equal slices in its next agents phases (:meth:`act`), which
    spreads the price impact over time (and leaves it holding inventory through the fall).
    What no book trades (a wrapped asset, a redeemed stablecoin) it keeps and counts in
    :attr:`held_units`.

    Args:
        model: The model.
        config: The bots' scenario section.
        holder: This bot's ledger holder id.
    """

    def __init__(self, model: mesa.Model, config: LiquidatorsConfig, holder: int) -> None:
        super().__init__(model)
        self.config = config
        self.holder = holder
        self.liquidations = 0
        self.takes = 0
        #: Priority fee per call, ledger units of the gas asset (set by the model).
        self.gas_bid_units = 0
        #: Collateral being sold gradually: [asset, units left, steps left] per liquidation.
        self.tranches: list[list[int]] = []
        #: Seized units kept because no book trades the asset, by ledger asset id.
        self.held_units: dict[int, int] = {}

    def act(self, view: MarketView) -> OrderBatch:
        """This step's slices of the collateral it sells gradually (``sell_over_steps``)."""
        orders = []
        for tranche in self.tranches:
            asset, left, steps_left = tranche
            units = left if steps_left <= 1 else left // steps_left
            tranche[1], tranche[2] = left - units, steps_left - 1
            orders.append(self._market_sale(view, asset, units))
        self.tranches = [t for t in self.tranches if t[1] > 0 and t[2] > 0]
        return OrderBatch.concat(orders)

    def _wallet(self, view: MarketView, asset: int) -> int:
        return int(view.balances(np.array([self.holder]), asset)[0])

    def _sale_value(self, view: MarketView, asset: int, units: int) -> float | None:
        """Quote (human units) a market sale of ``units`` of ``asset`` would fetch now."""
        ins = view.spot_instrument(asset)
        if ins is None:
            return None
        lots = units // view.base_units_per_lot(ins)
        filled, quote_units, _ = view.market_order_cost(ins, -1, lots)
        if filled < lots or lots == 0:
            return None  # the book cannot absorb it: no liquidation on that expectation
        return quote_units / 10 ** view.asset_decimals(view.quote_asset(ins))

    def plan(self, view: MarketView, protocols: ProtocolsView) -> Iterator[Call]:
        """Yield this round's calls, lazily, reading fresh state before each."""
        budget = self.config.max_actions_per_round
        for pool in protocols.lending_names:
            if protocols.liquidations_paused(pool):
                continue  # a circuit breaker refuses every call: do not scan or spend gas
            accounts = protocols.liquidatable(pool)
            order = np.argsort(-accounts.debt_value, kind="stable")
            for i in order[: self.config.max_candidates]:
                if budget == 0:
                    return
                call = self._lending_call(view, protocols, pool, accounts, int(i))
                if call is not None:
                    budget -= 1
                    yield call
        for cdp in protocols.cdp_names:
            for account in protocols.unsafe_vaults(cdp).holder.tolist():
                if budget == 0:
                    return
                budget -= 1
                yield BarkCall(cdp, int(account))
            for auction in protocols.active_auctions(cdp):
                if budget == 0:
                    return
                call = self._take_call(view, protocols, cdp, auction)
                if call is not None:
                    budget -= 1
                    yield call

    def _lending_call(
        self,
        view: MarketView,
        protocols: ProtocolsView,
        pool: str,
        accounts: LiquidatableAccounts,
        i: int,
    ) -> LiquidateCall | None:
        collateral_asset = int(accounts.collateral_asset[i])
        if collateral_asset < 0:
            return None
        account = int(accounts.holder[i])
        debt_symbol = protocols.asset_symbol(pool, int(accounts.debt_asset[i]))
        collateral_symbol = protocols.asset_symbol(pool, collateral_asset)
        # The pool's current terms (its liquidation policy's): refused, paused, or the most
        # this call may repay (a gradual slice, an early share) and the bonus it pays.
        quote = protocols.liquidation_quote(pool, account, debt_symbol, collateral_symbol)
        if not quote.allowed:
            return None
        debt = protocols.reserve(pool, debt_symbol)
        collateral = protocols.reserve(pool, collateral_symbol)
        owed = protocols.debt_units(pool, account, debt_symbol)
        share = protocols.max_repay_share(pool, float(accounts.health_factor[i]))
        # The bot rounds the close-factor share down; the policy's cap is exact.
        allowed = min(math.floor(owed * share), quote.max_repay_units)
        repay = min(self._wallet(view, debt.asset), allowed)
        p_debt = protocols.reserve_price(pool, debt_symbol)
        p_coll = protocols.reserve_price(pool, collateral_symbol)
        if not p_debt or not p_coll:
            return None
        cost = 1.0  # what one unit repaid costs the bot (more with a flash-loan fee)
        flash = False
        fee = protocols.flash_loan_fee(pool) if self.config.uses_flash_loans else None
        if repay <= 0 and fee is not None and allowed > 0:
            # No capital: borrow the debt asset for one atomic action. The loan is repaid
            # from the sale, so the collateral (or the underlying its receipt token redeems
            # for) must sell for the debt asset itself.
            sold = protocols.redemption(collateral.asset, 1 << 62).asset
            if sold != debt.asset and view.spot_instrument(sold, debt.asset) is None:
                return None
            repay = min(allowed, protocols.available_units(pool, debt_symbol))
            cost, flash = 1.0 + fee, True
        if repay <= 0:
            return None
        if not self.config.sell_collateral:  # a flash loan is repaid only from the sale
            return (
                None
                if flash
                else LiquidateCall(pool, account, debt_symbol, collateral_symbol, repay)
            )
        # Size the repay to what the book can absorb at a profit: halve it until what the
        # collateral received is worth covers the repay value. The bot receives the repay
        # value times (1 + bonus), less the protocol's share of the bonus part.
        bonus = float(quote.bonus)
        received = 1 + bonus * (1 - float(collateral.protocol_share))
        for _ in range(_SIZE_HALVINGS):
            repay_value = repay / debt.unit * p_debt
            seized_units = math.floor(repay_value * received / p_coll * collateral.unit)
            proceeds = self._seized_value(
                view, protocols, collateral.asset, seized_units, p_coll, collateral.unit, debt
            )
            if flash and proceeds is not None and proceeds[1] > 0:
                proceeds = None  # a flash loan cannot be repaid from what the bot holds
            if proceeds is not None and sum(proceeds) >= repay_value * cost * (
                1 + self.config.min_profit
            ):
                return LiquidateCall(pool, account, debt_symbol, collateral_symbol, repay, flash)
            repay //= 2
            if repay <= 0:
                break
        return None

    def _seized_value(
        self,
        view: MarketView,
        protocols: ProtocolsView,
        asset: int,
        units: int,
        price: float,
        unit: int,
        debt: ReserveInfo,
    ) -> tuple[float, float] | None:
        """``(sale proceeds, value held)`` of ``units`` of seized ``asset`` (human units).

        * Another pool's receipt token is redeemed at its issuer first (as the model does);
          the underlying is sold on its book, or is the debt asset itself (cash at its price);
          what the issuer's liquidity cannot pay is held, at exchange rate x underlying price.
        * A bridge's wrapped asset is sold on its book when one exists, else held at the
          pool's backing-based price (oracle x backing).
        * Anything else must sell on its book.

        ``None`` when the book cannot absorb the sale (or a needed price is missing).
        """
        if view.spot_instrument(asset) is None and protocols.is_wrapped(asset):
            return 0.0, units / unit * price
        out = protocols.redemption(asset, units)
        if not math.isfinite(out.kept_value):
            return None
        if out.asset != asset and out.units == 0:  # nothing redeemable now: all held
            return 0.0, out.kept_value
        if out.asset == debt.asset and out.asset != asset and out.price:
            return out.units / debt.unit * out.price, out.kept_value
        if view.spot_instrument(out.asset) is None and protocols.is_wrapped(out.asset):
            p = out.price if out.asset != asset else price
            if not p:
                return None
            return 0.0, out.kept_value + out.units / 10 ** view.asset_decimals(out.asset) * p
        proceeds = self._sale_value(view, out.asset, out.units)
        return None if proceeds is None else (proceeds, out.kept_value)

    def _take_call(
        self, view: MarketView, protocols: ProtocolsView, cdp: str, auction: AuctionState
    ) -> TakeCall | None:
        if auction.needs_reset or auction.lot_units <= 0:
            return None
        collateral_asset, stable_asset = protocols.cdp_assets(cdp)
        cash = self._wallet(view, stable_asset)
        price = float(auction.price)
        if cash <= 0 or price <= 0:
            return None
        stable_unit = 10 ** view.asset_decimals(stable_asset)
        coll_unit = 10 ** view.asset_decimals(collateral_asset)
        affordable = math.floor(cash / stable_unit / price * coll_unit)
        units = min(int(auction.lot_units), affordable)
        if units <= 0:
            return None
        if self.config.sell_collateral:
            proceeds = self._sale_value(view, collateral_asset, units)
            cost = units / coll_unit * price
            if proceeds is None or proceeds < cost * (1 + self.config.min_profit):
                return None
        return TakeCall(cdp, int(auction.auction_id), units, price)

    def after(self, view: MarketView, asset: int, units: int, at_once: bool = False) -> OrderBatch:
        """What to sell now of ``units`` of seized ``asset``.

        Everything at market with ``sell_over_steps = 1`` (or ``at_once``, as a flash loan
        needs); otherwise nothing now, and equal slices in the next ``sell_over_steps``
        agents phases (:meth:`act`). Empty when the bot keeps collateral.
        """
        if not self.config.sell_collateral or units <= 0:
            return OrderBatch.empty()
        if view.spot_instrument(asset) is None:
            # No book trades it (a wrapped asset, a redeemed stablecoin): the bot holds it.
            self.held_units[int(asset)] = self.held_units.get(int(asset), 0) + int(units)
            return OrderBatch.empty()
        if self.config.sell_over_steps > 1 and not at_once:
            self.tranches.append([asset, int(units), self.config.sell_over_steps])
            return OrderBatch.empty()
        return self._market_sale(view, asset, units)

    def _market_sale(self, view: MarketView, asset: int, units: int) -> OrderBatch:
        ins = view.spot_instrument(asset)
        if ins is None:
            return OrderBatch.empty()
        lots = units // view.base_units_per_lot(ins)
        if lots <= 0:
            return OrderBatch.empty()
        return OrderBatch.build(ins, -1, int(OrderKind.MARKET), 0, lots, self.holder)
